import CFuse3
import CLinux
import Glibc
import KernelSync
import Logging
import Synchronization
import SystemPackage

/// One FUSE session that serves a `ProcTree`, from mount to unmount, through libfuse's
/// low-level API: every program that serves a tree (``ProcFSService``, ``ProcMount``, schedfs)
/// runs its mount's life through this one type.
///
/// Its life, from one thread: ``init(tree:options:readMode:logger:)``, then
/// ``start(at:threads:onSessionEnd:)``, which mounts (with the reason for a failure, as
/// libfuse or fusermount3 gave it), starts the request threads (`RequestWorkers`) and
/// checks that the kernel took the connection; then, to end, ``shutDown(timeout:)``: it
/// removes the tree's entries, waiting for the callbacks inside them, detaches the mount while
/// the threads still serve, stops them and unmounts. What a tree's change must tell the kernel
/// leaves by one road, the `TreeNotifier`.
public final class FuseServer: @unchecked Sendable {
    // @unchecked: `session` is a C pointer, which Swift cannot prove Sendable. The workers use
    // it only through libfuse's thread-safe calls (receive, process, notify); creation, mount,
    // unmount and destruction happen on the owning thread, before the workers start or after
    // they have been joined.
    private let session: OpaquePointer
    private let replies: FuseReplies
    private var fileSystem: ProcFileSystem { replies.fileSystem }
    private let logger: Logger
    private let workers: RequestWorkers
    private let mountpoint = Mutex<FilePath?>(nil)
    /// The mount point's directory, locked from before the mount to after the unmount.
    private let claim = Mutex<FileDescriptor?>(nil)
    /// The mount's device (`major:minor`), by which it is found when its path has changed.
    private let device = Mutex<String?>(nil)
    /// Tells the kernel and the pollers of the tree's changes; ``unmount()`` closes it before
    /// it closes the device.
    private let notifier: TreeNotifier

    /// How long stopping waits, at each of its steps: for the callbacks inside the tree's
    /// entries, for the files open on the mount to close, and for the request threads.
    public static let stopTimeout: Duration = .seconds(1)

    /// Creates the libfuse session.
    ///
    /// - Parameters:
    ///   - tree: the tree to serve; a tree is served by one server at a time.
    ///   - options: mount options beside `default_permissions`, which is always on (the kernel
    ///     enforces each entry's mode and owner, as in procfs); where two set the same thing,
    ///     the later one wins.
    ///   - readMode: how the kernel reads files (see ``ReadMode``); the page-cache mode is used
    ///     only where the kernel offers it.
    ///   - logger: where the server logs, libfuse's own messages included.
    /// - Throws: ``FuseServerError/session(_:)`` with what libfuse said;
    ///   ``FuseServerError/treeServedAlready`` if another server serves the tree.
    public convenience init(
        tree: ProcTree, options: [MountOption], readMode: ReadMode = .directIO, logger: Logger
    ) throws(FuseServerError) {
        try self.init(tree: tree, options: options, readMode: readMode, logger: logger, takingOver: nil)
    }

    /// Creates the libfuse session of a server of a mount that a ``FuseKeeper`` holds, given the
    /// keeper's ``CarriedState`` (`takingOver`): the server then takes the connection over
    /// rather than mounting, and answers for what the servers before it gave the kernel.
    package init(
        tree: ProcTree, options: [MountOption], readMode: ReadMode, logger: Logger, takingOver carried: CarriedState?
    ) throws(FuseServerError) {
        let fileSystem = ProcFileSystem(
            tree: tree, requestedMode: readMode, logger: logger,
            takingOver: carried.map { ($0, $0.countServer()) })
        let replies = FuseReplies(fileSystem: fileSystem, logger: logger)
        let created = try Self.newSession(
            options: options, operations: FuseOperations.table,
            userData: Unmanaged.passUnretained(replies).toOpaque(), logger: logger)
        do {
            workers = try RequestWorkers(
                session: created, requestsRead: carried?.value(named: CarriedState.requestsReadName), logger: logger)
            notifier = try TreeNotifier(fileSystem: fileSystem, channel: SessionNotices(session: created), logger: logger)
        } catch {
            fuse_session_destroy(created)
            throw error
        }
        self.session = created
        self.replies = replies
        self.logger = logger
    }

    /// Checks that libfuse takes `options`, as ``init(tree:options:readMode:logger:)``
    /// would, without mounting: a command can then refuse a bad option before it starts.
    ///
    /// - Throws: ``FuseServerError/session(_:)`` with what libfuse said.
    public static func check(options: [MountOption], logger: Logger) throws(FuseServerError) {
        fuse_session_destroy(try newSession(options: options, operations: fuse_lowlevel_ops(), userData: nil, logger: logger))
    }

    /// A libfuse session for `options`, with what libfuse said if it refused them.
    static func newSession(
        options: [MountOption], operations: fuse_lowlevel_ops, userData: UnsafeMutableRawPointer?, logger: Logger
    ) throws(FuseServerError) -> OpaquePointer {
        var operations = operations
        var fuseArguments = fuse_args(argc: 0, argv: nil, allocated: 0)
        for argument in ["procfs"] + MountOption.arguments(for: options) {
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
        // Still held if the server was never shut down (its mount went from outside).
        try? claim.withLock { $0 }?.close()
        _ = notifier.close(timeout: .zero)
        fileSystem.pollers.forgetAll().forEach { $0.release() }
        // A task still to answer a read, or a request thread still in a callback, would reply
        // into a freed session: leave it then.
        replies.awaitedReplies.close()
        if replies.awaitedReplies.drain(timeout: Self.stopTimeout) > 0 {
            logger.error("a read of an async text never returned; the session is left allocated")
        } else if !workers.noneRunning {
            logger.error("a request thread is still in a callback; the session is left allocated")
        } else {
            fuse_session_destroy(session)
        }
    }

    /// Mounts the file system at `mountpoint`, starts `threads` request threads, and checks that
    /// the kernel took the connection; then it serves until ``shutDown(timeout:)`` or the end
    /// of the session, after which `onSessionEnd` runs once. The path's bytes need not be
    /// UTF-8; a relative path, or one through a directory that is a symbolic link, is resolved
    /// first, so that the mount is found where the kernel lists it.
    ///
    /// Before it mounts, it checks the directory as schedfs does, and holds an exclusive
    /// `flock` on it until it unmounts: of two servers started on one directory, one mounts and
    /// the other is refused, whatever program each is. (So it opens the directory, which must
    /// be readable by the user who mounts.)
    ///
    /// - Throws: ``MountpointError`` when the path is missing, not a directory, a symbolic
    ///   link, or a FUSE mount already (live, or dead with its server gone), or when another
    ///   server is mounting on it; ``FuseServerError/mount(_:_:)`` with what libfuse or
    ///   fusermount3 said; ``FuseServerError/refused(_:_:)`` if the kernel refused the
    ///   connection; `JoinableThreadError` if a request thread cannot start. Nothing is left
    ///   mounted then.
    public func start(at mountpoint: FilePath, threads: Int, onSessionEnd: @escaping @Sendable () -> Void) throws {
        let checked = try Mountpoint(checking: mountpoint)
        let claim = try checked.claim()
        do {
            connected(at: try Self.mount(session, at: checked.path, logger: logger))
        } catch {
            try? claim.close()
            throw error
        }
        self.claim.withLock { $0 = claim }
        do {
            try workers.start(threads, onSessionEnd: onSessionEnd)
            try confirmServing()
        } catch {
            // The tree stays as it was given: only what this call made is undone.
            _ = endServing(timeout: Self.stopTimeout)
            throw error
        }
    }

    /// Records where the session's connection is mounted, and makes its device nonblocking
    /// for the request loop; for a mount of its own and one taken over alike.
    private func connected(at mountpoint: FilePath) {
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

    /// Takes over `connection`, the connection of the mount at `mountpoint` that a
    /// ``FuseKeeper`` made and holds, instead of mounting; then call
    /// ``resumeServing(threads:onSessionEnd:)``. The connection is closed on exec from then on.
    ///
    /// libfuse is given the kernel's `INIT` that the keeper kept, as if the kernel sent it now.
    /// (The kernel sends it once per mount; it takes the reply of the first server only, and
    /// ignores the others', which make the same choices from the same offer.)
    ///
    /// - Throws: ``FuseServerError/mount(_:_:)`` if the descriptor is not open, or no keeper's
    ///   state was given.
    package func takeOver(connection: FileDescriptor, mountpoint: FilePath) throws(FuseServerError) {
        guard let carried = fileSystem.succession?.carried, !carried.initRequest.isEmpty else {
            throw .mount(mountpoint.description, "no INIT request was kept for this connection")
        }
        // Inherited without close-on-exec: a child the program that embeds the server starts
        // must not hold the connection (libfuse uses this descriptor as it is).
        _ = fcntl(connection.rawValue, F_SETFD, FD_CLOEXEC)
        guard fuse_session_mount(session, "/dev/fd/\(connection.rawValue)") == 0 else {
            throw .mount(mountpoint.description, "cannot take over /dev/fd/\(connection.rawValue)")
        }
        let request = carried.initRequest
        request.withUnsafeBytes { cfuse3_process_request(session, $0.baseAddress, $0.count) }
        connected(at: mountpoint)
    }

    /// Serves a connection taken over (``takeOver(connection:mountpoint:)``) as
    /// ``start(at:threads:onSessionEnd:)`` serves a mount of its own. Once serving, it has the
    /// kernel send again what the last server read and never answered, wakes the pollers that
    /// server left asleep, so that they poll this one, and finds which of the tree's entries
    /// the kernel holds (asking it to drop their attributes, which it then asks this server for).
    ///
    /// - Throws: as ``start(at:threads:onSessionEnd:)``, but the mount is the keeper's, and
    ///   stays.
    package func resumeServing(threads: Int, onSessionEnd: @escaping @Sendable () -> Void) throws -> Resumed {
        guard let carried = fileSystem.succession?.carried else { throw FuseServerError.mount("", "no connection was taken over") }
        do {
            // The server before this one has stopped: the numbers it gave are all recorded.
            fileSystem.succession?.numberTree()
            try workers.start(threads, onSessionEnd: onSessionEnd)
            let resumed = resume(carried)
            try confirmServing()
            return resumed
        } catch {
            _ = stop(timeout: Self.stopTimeout)
            throw error
        }
    }

    /// Whether this server takes a connection over from another that served it before (it is
    /// not the first that a ``FuseKeeper``'s state has counted).
    package var takesOverFromAnother: Bool { fileSystem.succession?.followsAnother ?? false }

    /// What a server that took a connection over found to resume.
    package struct Resumed: Sendable {
        /// Whether the kernel sends again the requests the last server read and never answered
        /// (`FUSE_NOTIFY_RESEND`, Linux 6.9 and later); if not, their callers wait for ever.
        package let resent: Bool
        /// Pollers woken, that the last server left asleep.
        package let pollersWoken: Int
        /// Entries the kernel still holds, which this server now answers for.
        package let entriesHeld: Int
        /// Entries the kernel held whose paths this server's tree lacks: dropped from the
        /// kernel as removed ones are.
        package let entriesDropped: Int
    }

    /// Resends, wakes and adopts what the last server of the mount left (see
    /// ``resumeServing(threads:onSessionEnd:)``).
    private func resume(_ carried: CarriedState) -> Resumed {
        let descriptor = fuse_session_fd(session)
        let resent = cfuse3_notify_resend(descriptor) == 0
        let polled = carried.polledHandles
        for handle in polled { _ = cfuse3_notify_poll(descriptor, handle) }
        let tree = fileSystem.tree
        // The entries of dynamic directories are made when the directories are looked in: make
        // them now, so that those the kernel holds have their numbers before the rest is dropped.
        var directories = [tree.root]
        while let directory = directories.popLast() {
            tree.refresh(directory)
            directories += tree.children(of: directory).filter { $0.kind == .directory }
        }
        let entries = tree.allEntries
        let dropped = fileSystem.succession?.dropped(live: Set(entries.map(\.inode))) ?? []
        for gone in dropped {
            // As for an entry removed: the kernel forgets the name, and asks again for the
            // attributes of what it holds, which this server does not know (a file open on it
            // reads EIO).
            _ = notifier.send(.name(parent: gone.parent, name: gone.name))
            _ = notifier.send(.attributes(gone.inode))
            fileSystem.succession?.paths?.erase(gone.inode)
        }
        var held = 0
        for entry in entries where entry.inode != ProcTree.rootInode {
            _ = fileSystem.adopt(entry)
            // Attributes only: dropping pages could wait on a READ only this thread would answer.
            guard let told = notifier.send(.attributes(entry.inode)) else { break }
            if told == -ENOENT {
                // The kernel holds no such node; but a LOOKUP on another thread may have given
                // it one since, which only a count above 0 shows: that node stays.
                fileSystem.nodes.forgetUnlessLookedUp(entry.inode)
            } else {
                held += 1
            }
        }
        return Resumed(resent: resent, pollersWoken: polled.count, entriesHeld: held, entriesDropped: dropped.count)
    }

    /// Checks that the kernel took the connection: it answered libfuse's reply to its `INIT`
    /// (some options, `max_read=4` among them, make the kernel refuse it, and then every access
    /// fails with `ECONNREFUSED`), and the mount's root answers a `stat`.
    private func confirmServing() throws(FuseServerError) {
        // Where the mount is now: its parent may have been renamed since it was made.
        guard let path = currentMountpoint ?? mountpoint.withLock({ $0 }) else { throw .refused("", .invalidArgument) }
        var attributes = stat()
        guard path.withPlatformString({ stat($0, &attributes) }) == 0 else { throw .refused(path.description, Errno(rawValue: errno)) }
    }

    /// Whether the kernel has ended the session (the file system was unmounted from outside).
    public var hasSessionEnded: Bool { workers.hasSessionEnded }

    /// Where the file system is mounted now: found by its device, so a renamed parent
    /// directory does not lose it; `nil` once it is unmounted.
    public var currentMountpoint: FilePath? {
        if let device = device.withLock({ $0 }) { return MountTable.mount(of: device)?.mountpoint }
        return mountpoint.withLock { $0 }.flatMap { MountTable.fuseMount(at: $0)?.mountpoint }
    }

    /// What ``shutDown(timeout:)`` managed.
    public struct Shutdown: Sendable {
        /// Callbacks still inside the tree's entries when the time was up; 0 when all left.
        public let callbacksLeft: Int
        /// Whether the session ended before the workers stopped: the mount was detached and
        /// every file on it closed in time. If not, closing the device aborted the connection.
        public let detached: Bool
        /// Whether every request thread, and every read of an async text, finished in time.
        public let stopped: Bool
    }

    /// Ends serving in the one order that loses no request and leaves no callback running,
    /// each step bounded by `timeout`: unless the kernel has ended the session, it removes the
    /// tree's entries, waiting for the callbacks already inside them (procfs's rundown); then
    /// it detaches the mount while the workers still serve, stops them, and unmounts.
    /// Readers racing it get whole texts, `ENOENT` or `EIO`, never a hang.
    public func shutDown(timeout: Duration = stopTimeout) -> Shutdown {
        var left = 0
        if !hasSessionEnded {
            // One bound for them all: each removal waits only for what is left of it.
            let deadline = ContinuousClock.now + timeout
            for entry in fileSystem.tree.children() {
                do {
                    try fileSystem.tree.remove(entry, timeout: max(deadline - ContinuousClock.now, .zero))
                } catch {
                    logger.warning("stopping: \(error)")
                    left += 1
                }
            }
        }
        let (detached, stopped) = endServing(timeout: timeout)
        return Shutdown(callbacksLeft: left, detached: detached, stopped: stopped)
    }

    /// Detaches, stops and unmounts, each step bounded by `timeout`; the tree stays as it is.
    private func endServing(timeout: Duration) -> (detached: Bool, stopped: Bool) {
        let detached = detach(timeout: timeout)
        let stopped = stop(timeout: timeout)
        unmount()
        return (detached, stopped)
    }

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
    private func detach(timeout: Duration) -> Bool {
        if hasSessionEnded { return true }
        guard let path = currentMountpoint else { return false }
        let detached = path.withPlatformString { umount2($0, Int32(MNT_DETACH)) } == 0
            || (errno == EPERM && Fusermount.detach(path))
        guard detached else { return false }
        return workers.awaitSessionEnd(timeout: timeout)
    }

    /// Stops the workers and waits at most `timeout` for them to finish their requests, and for
    /// the reads of async texts still awaited to be answered; the mount stays as it is, for
    /// another server to take over.
    ///
    /// - Returns: `false` if a worker or a read was still busy when the time was up.
    package func stop(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        let joined = workers.stop(timeout: timeout)
        // Reads of async texts still awaited are answered before the session goes.
        replies.awaitedReplies.close()
        let awaited = replies.awaitedReplies.drain(timeout: max(deadline - ContinuousClock.now, .zero))
        if awaited > 0 { logger.error("\(awaited) read(s) of async texts were still waiting at the timeout") }
        return joined && awaited == 0
    }

    /// Unmounts if still mounted; call after ``stop(timeout:)``. Closing the device first aborts
    /// the connection, so a process that still holds a file open gets `ENOTCONN`, not a hang;
    /// ``detach(timeout:)`` before stopping avoids even that where it can.
    private func unmount() {
        if notifier.close(timeout: Self.stopTimeout) > 0 {
            logger.warning("a notification to the kernel was still being written after \(Self.stopTimeout); unmounting anyway")
        }
        // libfuse unmounts the path it mounted on; if that has moved, unmount where it is now.
        if let path = currentMountpoint, path != mountpoint.withLock({ $0 }) {
            _ = path.withPlatformString { umount2($0, Int32(MNT_DETACH)) }
        }
        fuse_session_unmount(session)
        try? claim.withLock { claim in
            defer { claim = nil }
            try claim?.close()
        }
    }
}

/// libfuse's notifications on a session's device.
struct SessionNotices: KernelNoticeChannel, @unchecked Sendable {
    // @unchecked: `session` is a C pointer. libfuse's notify calls are safe from any thread, and
    // the ``TreeNotifier`` that sends through this stops sending before the device is closed.
    let session: OpaquePointer

    func send(_ notice: ProcFileSystem.KernelNotice) -> Int32 {
        switch notice {
        case .attributes(let inode): fuse_lowlevel_notify_inval_inode(session, inode, -1, 0)
        case .attributesAndContents(let inode): fuse_lowlevel_notify_inval_inode(session, inode, 0, 0)
        case .name(let parent, let name): fuse_lowlevel_notify_inval_entry(session, parent, name, name.utf8.count)
        }
    }
}

/// The server could not be set up, or could not stop cleanly.
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
    /// The server has stopped serving.
    case stopped
    /// The server did not serve within the time given.
    case notServing(Duration)
    /// A request thread was still busy (in a callback) after the time given, when stopping.
    case stillBusy(Duration)
    /// The mount at the path was still there after stopping.
    case stillMounted(String)

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
        case .stopped: "the server has stopped serving the tree"
        case .notServing(let waited): "the tree was not served within \(waited)"
        case .stillBusy(let waited): "a request thread was still busy after \(waited)"
        case .stillMounted(let path): "the mount on \(path) was still there after stopping"
        }
    }
}
