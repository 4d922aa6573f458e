import CFuse3
import CLinux
import Glibc
import KernelSync
import Logging
import Synchronization
import SystemPackage

/// Serves a ``ProcTree`` on a FUSE mount through libfuse's low-level API.
///
/// The server runs its own request loop rather than `fuse_session_loop_mt`: each worker polls
/// the (nonblocking) `/dev/fuse` descriptor together with a stop event. So ``stop(timeout:)``
/// ends the workers at once whatever the kernel is doing, and a signal never has to wait for a
/// request to arrive (libfuse issue 997). When the kernel ends the session (`fusermount3 -u`,
/// `umount`), the workers see `ENODEV` and the server reports it through `onSessionEnd`.
///
/// Life cycle, all from one thread: ``init(tree:arguments:readMode:logger:)``, ``mount(at:)``,
/// ``serve(threads:onSessionEnd:)``, then to end ``shutDown(timeout:)``, which is
/// ``detach(timeout:)``, ``stop(timeout:)`` and ``unmount()`` in that order.
public final class FuseServer: @unchecked Sendable {
    // @unchecked: `session` is a C pointer, which Swift cannot prove Sendable. Workers use it
    // only through libfuse's thread-safe calls (receive, process, notify); creation, mount,
    // unmount and destruction happen on the owning thread, before the workers start or after
    // ``stop(timeout:)`` has joined them.
    private let session: OpaquePointer
    private let replies: FuseReplies
    private var fileSystem: ProcFileSystem { replies.fileSystem }
    private let logger: Logger
    private let stopEvent: Int32
    private let workers = Mutex<[KernelThread]>([])
    private let stopping = Atomic<Bool>(false)
    private let sessionEnded = Atomic<Bool>(false)
    private let sessionEnd = WaitQueue()
    private let mountpoint = Mutex<FilePath?>(nil)
    /// The mount's device (`major:minor`), by which it is found when its path has changed.
    private let device = Mutex<String?>(nil)
    private let notifyFailureLogged = Atomic<Bool>(false)
    /// Open while notifications may be written to the session's device: ``unmount()`` closes
    /// and drains it before it closes the device, so that a change announced by another thread
    /// then cannot write into a descriptor number that the process has since reused.
    private let notifying = RundownGate()

    /// Creates the libfuse session.
    ///
    /// - Parameters:
    ///   - arguments: libfuse's command-line arguments without the program name, for example
    ///     `["-o", "fsname=schedfs", "-d"]`; libfuse rejects the ones it does not know.
    ///   - readMode: how the kernel reads files (see ``ReadMode``); the page-cache mode is used
    ///     only where the kernel offers it.
    /// - Throws: ``FuseServerError/session(_:)`` with what libfuse said.
    ///   - takingOver: for a server of a mount that a ``FuseKeeper`` holds: the keeper's
    ///     ``CarriedState``. The server then takes the connection over with
    ///     ``takeOver(connection:mountpoint:)`` rather than mounting, and answers for what
    ///     the servers before it gave the kernel.
    public init(
        tree: ProcTree, arguments: [String], readMode: ReadMode = .directIO, logger: Logger,
        takingOver carried: CarriedState? = nil
    ) throws(FuseServerError) {
        let fileSystem = ProcFileSystem(
            tree: tree, requestedMode: readMode, logger: logger,
            takingOver: carried.map { ($0, $0.nextGeneration()) })
        let replies = FuseReplies(fileSystem: fileSystem, logger: logger)
        let created = try Self.newSession(
            arguments: arguments, operations: FuseOperations.table,
            userData: Unmanaged.passUnretained(replies).toOpaque(), logger: logger)
        let stopEvent = eventfd(0, Int32(EFD_CLOEXEC))
        guard stopEvent >= 0 else {
            fuse_session_destroy(created)
            throw .system("eventfd", Errno(rawValue: errno))
        }
        self.session = created
        self.replies = replies
        self.logger = logger
        self.stopEvent = stopEvent
        let observing = tree.observe(
            as: ObjectIdentifier(self),
            added: { [weak self] entry in self?.added(entry) },
            changed: { [weak self] entry in self?.announce(entry) },
            removed: { [weak self] entry in self?.forget(entry) })
        // One server per tree: a second one would take the first one's notices.
        guard observing else { throw .treeServedAlready }
    }

    /// Checks that libfuse takes `arguments`, as ``init(tree:arguments:readMode:logger:)``
    /// would, without mounting: a command can then refuse a bad option before it starts.
    ///
    /// - Throws: ``FuseServerError/session(_:)`` with what libfuse said.
    public static func check(arguments: [String], logger: Logger) throws(FuseServerError) {
        fuse_session_destroy(try newSession(arguments: arguments, operations: fuse_lowlevel_ops(), userData: nil, logger: logger))
    }

    /// A libfuse session for `arguments`, with what libfuse said if it refused them.
    static func newSession(
        arguments: [String], operations: fuse_lowlevel_ops, userData: UnsafeMutableRawPointer?, logger: Logger
    ) throws(FuseServerError) -> OpaquePointer {
        var operations = operations
        var fuseArguments = fuse_args(argc: 0, argv: nil, allocated: 0)
        for argument in ["procfs"] + arguments {
            fuse_opt_add_arg(&fuseArguments, argument)
        }
        defer { fuse_opt_free_args(&fuseArguments) }
        let (created, said) = LibfuseLog.collecting(restoring: logger) {
            fuse_session_new(&fuseArguments, &operations, MemoryLayout<fuse_lowlevel_ops>.size, userData)
        }
        guard let created else { throw .session(said.joined(separator: "; ")) }
        return created
    }

    deinit {
        fileSystem.tree.stopObserving(as: ObjectIdentifier(self))
        fileSystem.pollers.forgetAll().forEach { $0.release() }
        // A task still to answer a read would reply into a freed session: leave it then.
        replies.awaitedReplies.close()
        if replies.awaitedReplies.drain(timeout: .seconds(1)) == 0 {
            fuse_session_destroy(session)
        } else {
            logger.error("a read of an async text never returned; the session is left allocated")
        }
        close(stopEvent)
    }

    /// Mounts the file system at `mountpoint`; its bytes need not be UTF-8. A relative path, or
    /// one through a symbolic link, is resolved first, so that the mount is found where the
    /// kernel lists it.
    ///
    /// - Throws: ``FuseServerError/mount(_:_:)`` with what libfuse or fusermount3 said.
    public func mount(at given: FilePath) throws(FuseServerError) {
        let mountpoint = try Self.mount(session, at: given, logger: logger)
        self.mountpoint.withLock { $0 = mountpoint }
        device.withLock { $0 = MountTable.fuseMount(at: mountpoint)?.device }
        let descriptor = fuse_session_fd(session)
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
    }

    /// Mounts `session` at `given`, resolved first, with what libfuse or fusermount3 said
    /// should it fail; returns the path resolved.
    static func mount(_ session: OpaquePointer, at given: FilePath, logger: Logger) throws(FuseServerError) -> FilePath {
        let mountpoint = given.withPlatformString { realpath($0, nil) }.map { resolved in
            defer { free(resolved) }
            return FilePath(platformString: resolved)
        } ?? given
        let ((result, said), written) = StandardErrorCapture.capturing {
            LibfuseLog.collecting(restoring: logger) { mountpoint.withPlatformString { fuse_session_mount(session, $0) } }
        }
        guard result == 0 else { throw .mount(given.description, (said + written).joined(separator: "; ")) }
        // Nothing written meanwhile is lost: pass it on where it was going.
        if !written.isEmpty {
            let text = Array((written.joined(separator: "\n") + "\n").utf8)
            _ = text.withUnsafeBytes { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
        return mountpoint
    }

    /// Takes over `descriptor`, the connection of the mount at `mountpoint` that a
    /// ``FuseKeeper`` made and holds, instead of mounting: libfuse is given the kernel's `INIT`
    /// that the keeper kept, as if the kernel sent it now. (The kernel sends it once per
    /// mount; it takes the reply of the first server only, and ignores the others', which
    /// make the same choices from the same offer.) Then call
    /// ``serve(threads:onSessionEnd:)`` and ``resumeTakenOver()``.
    ///
    /// - Throws: ``FuseServerError/mount(_:_:)`` if the descriptor is not open, or no keeper's
    ///   state was given.
    public func takeOver(connection descriptor: Int32, mountpoint: FilePath) throws(FuseServerError) {
        guard let carried = fileSystem.carried, !carried.initRequest.isEmpty else {
            throw .mount(mountpoint.description, "no INIT request was kept for this connection")
        }
        guard fuse_session_mount(session, "/dev/fd/\(descriptor)") == 0 else {
            throw .mount(mountpoint.description, "cannot take over /dev/fd/\(descriptor)")
        }
        self.mountpoint.withLock { $0 = mountpoint }
        device.withLock { $0 = MountTable.fuseMount(at: mountpoint)?.device }
        let request = carried.initRequest
        request.withUnsafeBytes { cfuse3_process_request(session, $0.baseAddress, $0.count) }
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
    }

    /// Whether this server takes a connection over from another that served it before (it is
    /// not the first that a ``FuseKeeper``'s state has counted).
    public var takesOverFromAnother: Bool { fileSystem.openFiles.base >> ProcFileSystem.serverShift > 1 }

    /// What ``resumeTakenOver()`` did.
    public struct Resumed: Sendable {
        /// Whether the kernel sends again the requests the last server read and never answered
        /// (`FUSE_NOTIFY_RESEND`, Linux 6.9 and later); if not, their callers wait for ever.
        public let resent: Bool
        /// Pollers woken, that the last server left asleep.
        public let pollersWoken: Int
        /// Entries the kernel still holds, which this server now answers for.
        public let entriesHeld: Int
    }

    /// Once serving a connection taken over (``takeOver(connection:mountpoint:)``, then
    /// ``serve(threads:onSessionEnd:)``): has the kernel send again what the last server read
    /// and never answered, wakes the pollers it left asleep, so that they poll this server,
    /// and finds which of the tree's entries the kernel holds (asking it to drop their
    /// attributes, which it then asks this server for).
    public func resumeTakenOver() -> Resumed {
        let descriptor = fuse_session_fd(session)
        let resent = cfuse3_notify_resend(descriptor) == 0
        let polled = fileSystem.carried?.polledHandles ?? []
        for handle in polled { _ = cfuse3_notify_poll(descriptor, handle) }
        var held = 0
        if notifying.enter() {
            defer { notifying.leave() }
            for entry in fileSystem.tree.allEntries where entry.inode != ProcTree.rootInode {
                _ = fileSystem.adopt(entry)
                // Attributes only: dropping pages could wait on a READ only this thread would answer.
                if fuse_lowlevel_notify_inval_inode(session, entry.inode, -1, 0) == -ENOENT {
                    fileSystem.forget(node: entry.inode, lookups: .max)
                } else {
                    held += 1
                }
            }
        }
        return Resumed(resent: resent, pollersWoken: polled.count, entriesHeld: held)
    }

    /// Starts `threads` workers that answer requests until ``stop(timeout:)`` or the end of the
    /// session; `onSessionEnd` runs once if the kernel ends the session first.
    public func serve(threads: Int, onSessionEnd: @escaping @Sendable () -> Void) throws {
        for number in 1...max(threads, 1) {
            let worker = try KernelThread(name: "procfs/\(number)") { [self] in
                serveRequests()
                if !stopping.load(ordering: .acquiring),
                    !sessionEnded.exchange(true, ordering: .acquiringAndReleasing)
                {
                    sessionEnd.wakeUp()
                    onSessionEnd()
                }
            }
            workers.withLock { $0.append(worker) }
        }
    }

    /// Checks that the kernel took the connection: it answered libfuse's reply to its `INIT`
    /// (some options, `max_read=4` among them, make the kernel refuse it, and then every access
    /// fails with `ECONNREFUSED`), and the mount's root answers a `stat`. Call it after
    /// ``serve(threads:onSessionEnd:)`` and before saying that the mount is ready.
    ///
    /// - Throws: ``FuseServerError/refused(_:_:)`` with what the `stat` got.
    public func confirmServing() throws(FuseServerError) {
        // Where the mount is now: its parent may have been renamed since it was made.
        guard let path = currentMountpoint ?? mountpoint.withLock({ $0 }) else { throw .refused("", .invalidArgument) }
        var attributes = stat()
        guard path.withPlatformString({ stat($0, &attributes) }) == 0 else { throw .refused(path.description, Errno(rawValue: errno)) }
    }

    /// Whether the kernel has ended the session (the file system was unmounted from outside).
    public var hasSessionEnded: Bool { sessionEnded.load(ordering: .acquiring) }

    /// Detaches the mount from the file tree (a lazy unmount) while the workers go on serving,
    /// and waits at most `timeout` for the kernel to end the session, which it does once the
    /// last file open on the mount is closed. New opens fail with `ENOENT` at once; reads of
    /// files already open finish. Stopping the workers first instead would abort the requests
    /// in flight, and their callers would get `ECONNABORTED`.
    ///
    /// A user without the privilege that `umount2` needs detaches through fusermount3
    /// (`fusermount3 -u -z`), as for any FUSE mount of theirs.
    ///
    /// - Returns: whether the session has ended; `false` if a file stayed open, or if the mount
    ///   could not be detached, in which case ``unmount()`` ends it.
    public func detach(timeout: Duration) -> Bool {
        if hasSessionEnded { return true }
        guard let path = currentMountpoint else { return false }
        let detached = path.withPlatformString { umount2($0, Int32(MNT_DETACH)) } == 0
            || (errno == EPERM && Fusermount.detach(path))
        guard detached else { return false }
        return sessionEnd.wait(timeout: timeout) { hasSessionEnded }
    }

    /// Where the file system is mounted now: found by its device, so a renamed parent
    /// directory does not lose it; `nil` once it is unmounted.
    public var currentMountpoint: FilePath? {
        if let device = device.withLock({ $0 }) { return MountTable.mount(of: device)?.mountpoint }
        return mountpoint.withLock { $0 }.flatMap { MountTable.fuseMount(at: $0)?.mountpoint }
    }

    /// Stops the workers and waits at most `timeout` for them to finish their requests.
    ///
    /// - Returns: `false` if a worker was still busy when the time was up.
    public func stop(timeout: Duration) -> Bool {
        stopping.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(stopEvent, &one, MemoryLayout<UInt64>.size)
        let deadline = ContinuousClock.now + timeout
        let joined = workers.withLock { $0 }.allSatisfy { worker in
            worker.join(timeout: max(deadline - ContinuousClock.now, .zero))
        }
        // Each worker's body holds the server; forgetting the finished workers lets it go.
        if joined { workers.withLock { $0.removeAll() } }
        // Reads of async texts still awaited are answered before the session goes.
        replies.awaitedReplies.close()
        let awaited = replies.awaitedReplies.drain(timeout: max(deadline - ContinuousClock.now, .zero))
        if awaited > 0 { logger.error("\(awaited) read(s) of async texts were still waiting at the timeout") }
        return joined && awaited == 0
    }

    /// What ``shutDown(timeout:)`` managed.
    public struct Shutdown: Sendable {
        /// Whether the session ended before the workers stopped (see ``detach(timeout:)``);
        /// if not, closing the device aborted the connection.
        public let detached: Bool
        /// Whether every worker finished its request in time (see ``stop(timeout:)``).
        public let stopped: Bool
    }

    /// Ends serving in the one order that loses no request: ``detach(timeout:)`` while the
    /// workers still serve, then ``stop(timeout:)``, then ``unmount()``; each wait is bounded
    /// by `timeout`.
    public func shutDown(timeout: Duration) -> Shutdown {
        let detached = detach(timeout: timeout)
        let stopped = stop(timeout: timeout)
        unmount()
        return Shutdown(detached: detached, stopped: stopped)
    }

    /// Unmounts if still mounted; call after ``stop(timeout:)``. Closing the device first aborts
    /// the connection, so a process that still holds a file open gets `ENOTCONN`, not a hang;
    /// ``detach(timeout:)`` before stopping avoids even that where it can.
    public func unmount() {
        notifying.close()
        if notifying.drain(timeout: .seconds(1)) > 0 {
            logger.warning("a notification to the kernel was still being written after 1 s; unmounting anyway")
        }
        // libfuse unmounts the path it mounted on; if that has moved, unmount where it is now.
        if let path = currentMountpoint, path != mountpoint.withLock({ $0 }) {
            _ = path.withPlatformString { umount2($0, Int32(MNT_DETACH)) }
        }
        fuse_session_unmount(session)
    }

    /// Tells the kernel and the pollers of a change (see
    /// ``ProcFileSystem/noticesOfChange(to:)``); then the pollers wake, and a re-read finds the
    /// new text.
    private func announce(_ entry: ProcEntry) {
        guard notifying.enter() else { return }
        defer { notifying.leave() }
        send(fileSystem.noticesOfChange(to: entry), about: entry)
        fileSystem.notifyPollers(of: entry)
    }

    /// A directory added changes its parent's link count, which the kernel caches.
    private func added(_ entry: ProcEntry) {
        guard notifying.enter() else { return }
        defer { notifying.leave() }
        send(fileSystem.noticesOfAddition(of: entry), about: entry)
    }

    /// Has the kernel forget a removed entry (see ``ProcFileSystem/noticesOfRemoval(of:)``);
    /// pollers wake to `POLLERR|POLLHUP`.
    private func forget(_ entry: ProcEntry) {
        guard notifying.enter() else { return }
        defer { notifying.leave() }
        send(fileSystem.noticesOfRemoval(of: entry), about: entry)
        fileSystem.notifyPollers(of: entry)
    }

    /// Writes `notices` to the kernel, logging a failure once.
    private func send(_ notices: [ProcFileSystem.KernelNotice], about entry: ProcEntry) {
        for notice in notices {
            switch notice {
            case .attributes(let inode):
                report(fuse_lowlevel_notify_inval_inode(session, inode, -1, 0), "invalidate", entry)
            case .attributesAndContents(let inode):
                report(fuse_lowlevel_notify_inval_inode(session, inode, 0, 0), "refresh parent of", entry)
            case .name(let parent, let name):
                report(fuse_lowlevel_notify_inval_entry(session, parent, name, name.utf8.count), "forget name of", entry)
            }
        }
    }

    /// Logs a failed notification once. `ENOENT` (the kernel holds nothing to drop) is normal,
    /// and so are `ENODEV`/`ENOTCONN`/`EBADF` while the mount goes away.
    private func report(_ result: Int32, _ action: String, _ entry: ProcEntry) {
        guard result != 0, ![ENOENT, ENODEV, ENOTCONN, EBADF].contains(-result) else { return }
        if !notifyFailureLogged.exchange(true, ordering: .relaxed) {
            logger.warning("cannot \(action) \(entry.name) in the kernel: \(Errno(rawValue: -result)); further failures are not logged")
        }
    }

    private func serveRequests() {
        var buffer = fuse_buf()
        defer { free(buffer.mem) }
        var fds = [
            pollfd(fd: fuse_session_fd(session), events: Int16(POLLIN), revents: 0),
            pollfd(fd: stopEvent, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            // Idle until a request, the end of the session, or stop(): each makes a descriptor ready.
            do {
                _ = try retryingOnInterrupt { poll(&fds, nfds_t(fds.count), -1) }
            } catch {
                logger.error("poll on /dev/fuse: \(error)")
                return
            }
            if fds[1].revents != 0 { return }
            let received = fuse_session_receive_buf(session, &buffer)
            if received == -EINTR || received == -EAGAIN { continue }
            if received == 0 { return }  // ENODEV: the kernel ended the session.
            if received < 0 {
                logger.error("reading /dev/fuse: \(Errno(rawValue: -received))")
                return
            }
            fuse_session_process_buf(session, &buffer)
        }
    }
}

/// The server could not be set up.
public enum FuseServerError: Error, CustomStringConvertible {
    /// libfuse refused the arguments; what it said.
    case session(String)
    /// Mounting on the path failed; what libfuse or fusermount3 said.
    case mount(String, String)
    /// A system call failed, with its errno.
    case system(String, Errno)
    /// The mount at the path did not answer, with the errno its root's `stat` got.
    case refused(String, Errno)
    /// Another server serves the tree already; a tree is served by one server at a time.
    case treeServedAlready

    public var description: String {
        switch self {
        case .session(let said): said.isEmpty ? "libfuse refused the options" : said
        case .mount(let path, let said): said.isEmpty ? "cannot mount on \(path)" : "cannot mount on \(path): \(said)"
        case .refused(let path, let error) where error == .connectionRefused:
            "the kernel refused the connection of the mount on \(path) (\(error)): "
                + "it could not use what libfuse answered to its INIT; an option such as max_read may be out of its range"
        case .refused(let path, let error): "the mount on \(path) does not answer: \(error)"
        case .system(let call, let error): "\(call): \(error)"
        case .treeServedAlready: "the tree is served already: a tree is served by one server at a time"
        }
    }
}
