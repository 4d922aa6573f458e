import CLinux
import Glibc
import KernelSync
import Logging
import ProcFS
import ProcFSMetrics
import Sched
import ServiceLifecycle
import SystemPackage
import TaskQueue
import UnixSignals

/// Everything the command line decided.
struct Configuration {
    /// Where to mount.
    var mountpoint: Mountpoint
    /// The source given by the mount helper (`mount -t fuse.schedfs SOURCE DIR`), shown as the fsname.
    var source: String?
    /// The `-o` options.
    var options: MountOptions
    /// The `-o` arguments as given, for the keeper to give its servers.
    var rawOptions: [String]
    /// Set in a server: the keeper's connection and state, inherited by number.
    var takeOver: (connection: Int32, state: Int32)?
    /// Set in a server whose keeper runs in the foreground: log to stderr, as it does.
    var logsToStandardError: Bool
    /// Set in a server that replaces one still serving: it waits, ready, for a byte here.
    var goDescriptor: Int32?
    /// The binary the keeper starts its servers from, as named when it was started.
    var executable: String
    /// Set in the child that `Background` started: where to say that it is ready.
    var readiness: Readiness?
    /// Log every request (`-d`).
    var debug: Bool
    /// How many threads answer requests (`-s` makes it 1).
    var threads: Int
}

extension Configuration {
    /// Where the keeper and its server log: stderr in the foreground; in the background the
    /// log file, or syslog.
    func logOutput() throws -> LogOutput {
        if logsToStandardError { return .descriptor(LogDescriptor(STDERR_FILENO)) }
        guard let path = options.logFile else { return .syslog }
        return .descriptor(try LogDescriptor.appending(to: path))
    }
}

/// The server's life: set up, take over the keeper's connection (see ``Keeper``), serve until a
/// shutdown event, then run the cleanup protocol and report how it went as the exit status.
/// A server that takes over from one that died goes on from the count, the tick deadlines and
/// the kernel's requests that one left.
///
/// The serving, the takeover and the handover to an upgrade are the library's
/// (``ProcFSService``, given the ``KeptMount``); schedfs's part is its module and what it
/// carries from server to server (``CarriedFigures``).
struct Daemon {
    /// Threads that answer requests unless `-s` is given.
    static let defaultThreads = 4
    /// Bounds for stopping the tick thread once the routine has left: the library's, for
    /// every step.
    static let stopTimeout = FuseServer.stopTimeout

    let configuration: Configuration

    /// Runs the daemon. Errors thrown come before it serves (the caller reports them as one
    /// line); afterwards the result is the exit status.
    ///
    /// Once set up it runs on a swift-service-lifecycle `ServiceGroup`, which shuts its
    /// services down in the reverse of their order: ``ShutdownSignals`` ends on a signal,
    /// ``SchedService`` then runs the module's part of the cleanup protocol, and
    /// ``ProcFSService`` stops serving last. An unmount ends the ``ProcFSService`` first, and
    /// the others follow.
    func run() async throws -> Int32 {
        // Caught from here on: a signal while mounting runs the protocol once serving starts.
        let trigger = ShutdownTrigger()
        let signals = await ShutdownSignals(trigger: trigger)
        let output = try configuration.logOutput()
        let level: Logger.Level = configuration.debug ? .debug : .info
        LoggingSystem.bootstrap { label in output.handler(label: label, level: level) }
        let logger = Logger(label: "schedfs")

        guard let takeOver = configuration.takeOver, let readiness = configuration.readiness else {
            throw KeeperError.server("no connection to take over")
        }
        let kept: KeptMount
        do {
            kept = try KeptMount(
                connection: takeOver.connection, state: takeOver.state, reports: readiness, go: configuration.goDescriptor,
                mountpoint: configuration.mountpoint.path, options: mountOptions)
        } catch {
            throw KeeperError.system("the keeper's state", error)
        }
        let carried = try CarriedFigures(kept)
        let tree = ProcTree()
        let timer = try TimerQueue(hz: configuration.options.hz, latenessBounds: SchedMetrics.latenessBounds) { tick in
            carried.save(tick.position)
        }
        // schedfs's own figures, read from the timer when asked for, as files of metrics/ and
        // metrics/schedfs.prom.
        try SchedMetrics.add(timer, to: try ProcFSMetrics(tree: tree, expositionFile: "schedfs.prom"))
        let sched = SchedModule(timer: timer, tree: tree, logger: logger, count: carried.calls)
        try sched.start(mountedAt: carried.mountedAt)
        // Only one server ticks at a time: a server started for an upgrade starts ticking once
        // the one it replaces has stopped its own ticks and handed over, and goes on from where
        // those stopped; before it answers a request, so that no reader sees it unstarted.
        let procfs = ProcFSService(
            tree: tree, continuing: kept, readMode: configuration.options.readMode, threads: configuration.threads,
            logger: logger,
            beginTurn: { [timer] in try timer.start(continuing: carried.position) },
            endTurn: { [timer, logger] in
                if !timer.stop(timeout: Self.stopTimeout) { logger.error("handover: the tick thread was still busy after \(Self.stopTimeout)") }
            })
        // Nothing ticked yet for the first server of the mount (for logging only: the ticks go
        // on from where they stand when the turn comes).
        let first = carried.position == nil
        let module = SchedService(
            procfs: procfs, trigger: trigger,
            served: { [configuration, timer, sched, logger] in
                if !first {
                    logger.info("ticking on from count \(sched.calls)")
                } else {
                    logger.info(
                        "mounted on \(configuration.mountpoint.path.description): hz=\(timer.ticks.hz), \(configuration.threads) request thread(s), pid \(getppid()) (serving: \(getpid()))"
                    )
                }
            },
            cleanUp: { [sched, timer, logger] cause in Self.cleanUp(after: cause, sched: sched, timer: timer, logger: logger) })
        // The group's own lines are for its failures only: the protocol's log is unchanged.
        var groupLogger = logger
        groupLogger.logLevel = .warning
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    // Shut down last, and the first to end on an unmount.
                    .init(service: procfs, successTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: module, successTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: signals, successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                logger: groupLogger))
        var failed = false
        do {
            try await group.run()
        } catch {
            logger.error("\(error)")
            failed = true
        }
        guard let (status, started) = module.outcome.status else {
            // It never served: the keeper holds the mount, and unmounts it if it must.
            _ = timer.stop(timeout: Self.stopTimeout)
            return 1
        }
        let exitStatus: Int32 = failed ? 1 : status
        logger.info(
            "cleanup 3/3: exiting with status \(exitStatus) (protocol took \((ContinuousClock.now - started).loggedMilliseconds))")
        return exitStatus
    }

    /// The module's part of the cleanup protocol: unregister `sched` and wait for the routine
    /// to leave the queue (both in ``SchedModule/cleanup(timeout:)``), then stop the tick
    /// source; returns the exit status so far. ``ProcFSService`` then unmounts, if the mount
    /// is still there (detaching while the request threads still serve), and stops them.
    private static func cleanUp(after cause: ShutdownCause, sched: SchedModule, timer: TimerQueue, logger: Logger) -> Int32 {
        var status: Int32 = 0
        logger.info("cleanup: started by \(cause)")
        do {
            try sched.cleanup()
        } catch {
            logger.error("\(error)")
            status = 1
        }
        let measured = timer.ticks.statistics
        if !timer.stop(timeout: Self.stopTimeout) {
            logger.error("cleanup: the tick thread did not stop within \(Self.stopTimeout)")
            status = 1
        }
        logger.info("\(TickReport(statistics: measured, hz: timer.ticks.hz))")
        return status
    }

    /// The mount's options: our names first, so that the user's `-o` can override them. The
    /// kernel checks modes (`default_permissions`, always on), so only root may open `sched`
    /// for writing (and its writes fail with `EACCES`); only the user who mounted can use the
    /// mount unless `allow_other` is given; and unless `no_auto_unmount` is given, fusermount3
    /// unmounts if the daemon dies without doing so.
    private var mountOptions: [MountOption] {
        Self.mountOptions(options: configuration.options, source: configuration.source, debug: configuration.debug)
    }

    /// The mount's options for these `-o` options: the fixed ones, then those the user passed on.
    static func mountOptions(options: MountOptions, source: String?, debug: Bool) -> [MountOption] {
        var fixed: [MountOption] = [.fsName(source ?? "schedfs"), .subtype("schedfs")]
        if options.autoUnmount { fixed.append(.autoUnmount) }
        return fixed + options.passedOn.map(MountOption.custom) + (debug ? [.debug] : [])
    }

}
