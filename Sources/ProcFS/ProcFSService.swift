import Glibc
import KernelSync
import Logging
import ServiceLifecycle
import Synchronization
import SystemPackage
import UnixSignals

/// Serves a `ProcTree` on a FUSE mount as a swift-service-lifecycle `Service`, so a Swift
/// server runs it beside its other services, and the `ServiceGroup` owns the signals:
///
/// ```swift
/// let tree = ProcTree()
/// try tree.register("requests") { "\(requests.load(ordering: .relaxed))\n" }
/// let procfs = ProcFSService(tree: tree, mountpoint: "/run/myserver", logger: logger)
/// let group = ServiceGroup(
///     services: [procfs, server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
/// try await group.run()
/// ```
///
/// ``run()`` mounts, serves, and returns when the file system is unmounted from outside
/// (`fusermount3 -u`, `umount`), or on graceful shutdown. On graceful shutdown it removes the
/// tree's entries, waiting for the callbacks already inside them (procfs's rundown), then
/// detaches the mount while it still serves (through fusermount3 for an ordinary user), stops
/// serving and unmounts: readers racing it get whole texts, `ENOENT` or `EIO`, never a hang.
///
/// A `ServiceGroup` shuts its services down in the reverse of their order, so list this
/// service before the services that add to the tree: they stop first, and it empties the tree
/// after them. A tree is served by one server at a time.
public struct ProcFSService: Service {
    /// The options a service mounts with unless told otherwise: fusermount3 unmounts if the
    /// process dies without unmounting, and `/proc/mounts` shows the source as `procfs`.
    public static let defaultOptions: [MountOption] = [.autoUnmount, .fsName("procfs")]

    private let tree: ProcTree
    private let mountpoint: FilePath
    private let options: [MountOption]
    private let readMode: ReadMode
    private let threads: Int
    private let logger: Logger
    private let state = ServingState()
    /// For a server of a kept mount, what it takes over.
    private let kept: KeptMount?
    /// For a server of a kept mount: what starts and stops the work that changes kept values.
    private let turn: Turn

    /// The work a server of a kept mount starts when its turn to serve comes, and stops when it
    /// hands the mount over; let go of once the service stops, since a `ServiceGroup` may keep
    /// its services until after the process has begun to exit, and what the work holds must go
    /// before (LeakSanitizer takes what is freed then for leaked).
    private final class Turn: Sendable {
        private let work: Mutex<(begin: @Sendable () throws -> Void, end: @Sendable () -> Void)?>

        init(begin: @escaping @Sendable () throws -> Void = {}, end: @escaping @Sendable () -> Void = {}) {
            work = Mutex((begin, end))
        }

        func begin() throws { try work.withLock { $0?.begin }?() }

        func end() { work.withLock { $0?.end }?() }

        func finish() { work.withLock { $0 = nil } }
    }

    /// Prepares the service; nothing is mounted until ``run()``.
    ///
    /// - Parameters:
    ///   - tree: the tree to serve; a tree is served by one server at a time.
    ///   - mountpoint: an existing directory; its bytes need not be UTF-8.
    ///   - options: mount options added to `defaults`; where one sets what a default sets
    ///     (`.fsName`, say), it wins. `default_permissions` is always on.
    ///   - defaults: the options `options` are added to: ``defaultOptions`` unless given; `[]`
    ///     mounts with `options` alone (no `auto_unmount`, so no fusermount3 process waits
    ///     beside the program).
    ///   - readMode: how the kernel reads files (see ``ReadMode``).
    ///   - threads: how many threads answer requests.
    ///   - logger: where the service logs, libfuse's own messages included.
    public init(
        tree: ProcTree, mountpoint: FilePath, options: [MountOption] = [], defaults: [MountOption] = defaultOptions,
        readMode: ReadMode = .directIO, threads: Int = 2, logger: Logger
    ) {
        self.tree = tree
        self.mountpoint = mountpoint
        self.options = defaults + options
        self.readMode = readMode
        self.threads = threads
        self.logger = logger
        self.kept = nil
        self.turn = Turn()
    }

    /// Prepares a server of a mount that a keeper holds (see ``ProcFSKeeper``): ``run()``
    /// takes the mount over instead of mounting, and goes on from where the last server left
    /// it. When the keeper asks for an upgrade, a server of the binary now on disk takes the
    /// mount over and this process exits at once; on graceful shutdown it stops as any
    /// service does, and the keeper exits after it.
    ///
    /// - Parameters:
    ///   - tree: the tree to serve. Build it the same way in every server: each path keeps the
    ///     inode number the kernel knows it by, whatever the order.
    ///   - kept: what ``ProcFSKeeper/keepOrTakeOver(mountpoint:options:defaults:hangTimeout:logger:)``
    ///     returned; its options and mount point are the mount's.
    ///   - readMode: how the kernel reads files (see ``ReadMode``).
    ///   - threads: how many threads answer requests.
    ///   - logger: where the service logs.
    ///   - beginTurn: starts the work that changes the kept values (``KeptMount/value(named:)``),
    ///     when this server's turn to serve has come (for an upgrade, once the server it
    ///     replaces has stopped, so that the two never count at once) and before it answers a
    ///     request; what it throws ends ``run()``.
    ///   - endTurn: stops that work when this server hands the mount to the next, before the
    ///     process exits, so that the next goes on from exactly where it stopped.
    public init(
        tree: ProcTree, continuing kept: KeptMount, readMode: ReadMode = .directIO, threads: Int = 2, logger: Logger,
        beginTurn: @escaping @Sendable () throws -> Void = {}, endTurn: @escaping @Sendable () -> Void = {}
    ) {
        self.tree = tree
        self.mountpoint = kept.mountpoint
        self.options = kept.options
        self.readMode = readMode
        self.threads = threads
        self.logger = logger
        self.kept = kept
        self.turn = Turn(begin: beginTurn, end: endTurn)
    }

    /// Mounts and serves until the file system is unmounted or the service group shuts down
    /// gracefully (or the task is cancelled), then stops as the type's documentation says.
    ///
    /// - Throws: ``MountpointError`` when the mount point is missing, not a directory, a
    ///   symbolic link, a FUSE mount already, or being mounted by another server at this moment
    ///   (one server holds a directory at a time); ``FuseServerError`` when it cannot mount, when the kernel
    ///   refuses the connection, or when another server serves the tree; `JoinableThreadError`
    ///   when a request thread cannot start. Nothing is left mounted then. Once it has served,
    ///   ``FuseServerError/stillBusy(_:)`` or ``FuseServerError/stillMounted(_:)`` when it could
    ///   not stop cleanly (the log says what to do).
    public func run() async throws {
        let (ended, end) = AsyncStream<Void>.makeStream()
        let server: FuseServer
        // A kept mount's keeper asks its server to hand over with SIGUSR1: caught before the
        // server says it is ready.
        let handover = kept == nil ? nil : await UnixSignalsSequence(trapping: .sigusr1)
        do {
            // Mounting and stopping wait on the kernel and on fusermount3: off the tasks' threads.
            server = try await runBlocking { [tree, mountpoint, options, readMode, threads, logger, kept, turn] in
                if let kept {
                    return try Self.takeOver(kept, tree: tree, readMode: readMode, threads: threads, turn: turn, logger: logger) {
                        end.finish()
                    }
                }
                let server = try FuseServer(tree: tree, options: options, readMode: readMode, logger: logger)
                try server.start(at: mountpoint, threads: threads) { end.finish() }
                return server
            }
        } catch {
            kept?.readiness.failed("\(error)")
            state.ended(error)
            turn.finish()
            throw error
        }
        defer { turn.finish() }
        let handing = handover.map { signals in
            Task { [server, turn, logger] in
                for await _ in signals { Self.handOver(server, turn: turn, logger: logger) }
            }
        }
        kept?.readiness.ready()
        state.serving()
        logger.info("serving on \(mountpoint)")
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                for await _ in ended {}
            } onGracefulShutdown: {
                end.finish()
            }
        } onCancel: {
            end.finish()
        }
        state.ended(FuseServerError.stopped)
        // Ended, not only cancelled: it lets go of what it holds (the server, the turn's work)
        // before the process may exit; LeakSanitizer takes what a task holds then for leaked.
        handing?.cancel()
        await handing?.value
        try await runBlocking { [logger] in
            let stopped = server.shutDown()
            if !stopped.detached { logger.warning("stopping: could not detach the mount cleanly (files stayed open); aborting the connection") }
            if !stopped.stopped { logger.error("stopping: a request thread was still busy after \(FuseServer.stopTimeout)") }
            let left = server.currentMountpoint
            if let left { logger.error("stopping: the mount on \(left) is still there; clear it with: fusermount3 -u \(left)") }
            if !stopped.stopped { throw FuseServerError.stillBusy(FuseServer.stopTimeout) }
            if let left { throw FuseServerError.stillMounted(left.description) }
        }
        logger.info("stopped serving on \(mountpoint)")
    }

    /// Takes the kept mount over and serves it, once the server it replaces (if any) has
    /// stopped: a server started for an upgrade waits, ready, for the keeper's word.
    private static func takeOver(
        _ kept: KeptMount, tree: ProcTree, readMode: ReadMode, threads: Int, turn: Turn, logger: Logger,
        onSessionEnd: @escaping @Sendable () -> Void
    ) throws -> FuseServer {
        let server = try FuseServer(tree: tree, options: kept.options, readMode: readMode, logger: logger, takingOver: kept.carried)
        try server.takeOver(connection: kept.connection, mountpoint: kept.mountpoint)
        kept.waitForTurn()
        try turn.begin()
        let resumed = try server.resumeServing(threads: threads, onSessionEnd: onSessionEnd)
        if server.takesOverFromAnother {
            logger.info(
                "took the mount over: \(resumed.entriesHeld) entries held by the kernel (\(resumed.entriesDropped) dropped), \(resumed.pollersWoken) pollers woken, unanswered requests \(resumed.resent ? "sent again" : "lost (the kernel has no FUSE_NOTIFY_RESEND)")")
        }
        return server
    }

    /// Leaves the mount to the next server, which the keeper has started and which waits:
    /// stops the turn's work, stops taking requests once those in hand are answered, and ends
    /// the process at once, leaving the mount and the tree as they are (the keeper waits for it).
    private static func handOver(_ server: FuseServer, turn: Turn, logger: Logger) {
        turn.end()
        if !server.stop(timeout: FuseServer.stopTimeout) {
            logger.error("handover: a request thread was still busy after \(FuseServer.stopTimeout)")
        }
        logger.info("handing the mount over to the next server")
        // Gone at once, as the keeper waits for it (readers wait meanwhile): every log line is
        // written, and an exit under a sanitizer would take about a second to tear down.
        kill(getpid(), SIGKILL)
    }

    /// Waits at most `timeout` until ``run()`` serves the tree: the mount is made and the
    /// kernel answers on it, so a read of the mount from now on reaches the tree (as go-fuse's
    /// `WaitMount`). Call it while ``run()`` runs or is about to, as below.
    ///
    /// ```swift
    /// async let served: Void = group.run()
    /// try await procfs.waitUntilServing()
    /// print("serving on /run/myserver")
    /// try await served
    /// ```
    ///
    /// - Throws: what ``run()`` threw if it could not serve; ``FuseServerError/stopped`` once it
    ///   has stopped serving; ``FuseServerError/notServing(_:)`` if it did not serve in time;
    ///   `CancellationError` if the waiting task is cancelled.
    public func waitUntilServing(timeout: Duration = .seconds(10)) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { waits in
            waits.addTask { [state] in
                try await state.wait()
                return true
            }
            waits.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            defer { waits.cancelAll() }
            guard try await waits.next() == true else { throw FuseServerError.notServing(timeout) }
        }
    }
}
