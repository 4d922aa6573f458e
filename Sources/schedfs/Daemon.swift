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
struct Daemon {
    /// Threads that answer requests unless `-s` is given.
    static let defaultThreads = 4
    /// Bounds for stopping the tick thread and the request threads once the routine has left:
    /// the library's, for every step.
    static let stopTimeout = FuseServer.stopTimeout

    let configuration: Configuration

    /// Runs the daemon. Errors thrown come before it serves (the caller reports them as one
    /// line); afterwards the result is the exit status.
    ///
    /// Once mounted it runs on a swift-service-lifecycle `ServiceGroup`: ``MountedDaemon``
    /// serves until the session ends or ``ShutdownSignals`` sees a signal, either of which
    /// shuts the group down and runs the cleanup protocol.
    func run() async throws -> Int32 {
        // Caught from here on: a signal while mounting runs the protocol once serving starts.
        let trigger = ShutdownTrigger()
        let signals = await ShutdownSignals(trigger: trigger)
        // SIGUSR1 from the keeper: hand the mount over to the next server (see ``handOver``).
        let handover = await UnixSignalsSequence(trapping: .sigusr1)
        let output = try configuration.logOutput()
        // The keeper's death is this server's: the kernel then ends the connection.
        _ = clinux_die_with_parent()
        let level: Logger.Level = configuration.debug ? .debug : .info
        LoggingSystem.bootstrap { label in output.handler(label: label, level: level) }
        let logger = Logger(label: "schedfs")

        guard let takeOver = configuration.takeOver else { throw KeeperError.server("no connection to take over") }
        let carried: CarriedState
        do {
            carried = try CarriedState(adopting: takeOver.state)
        } catch {
            throw KeeperError.system("the keeper's state", error)
        }
        let kept = try CarriedFigures(carried)
        let tree = ProcTree()
        // schedfs's own figures, through swift-metrics, as files of metrics/ and metrics/schedfs.prom.
        let figures = SchedMetrics(
            factory: try ProcFSMetrics(
                tree: tree, expositionFile: "schedfs.prom", timerBuckets: SchedMetrics.latenessBuckets,
                help: SchedMetrics.help),
            hz: configuration.options.hz)
        let timer = try TimerQueue(hz: configuration.options.hz) { tick, tasks in
            figures.observe(tick, of: tasks)
            kept.save(tick.position)
        }
        let sched = SchedModule(timer: timer, tree: tree, logger: logger, count: kept.calls)
        try sched.start(mountedAt: kept.mountedAt)
        let server = try FuseServer(
            tree: tree, options: mountOptions, readMode: configuration.options.readMode, logger: logger,
            takingOver: carried)
        try server.takeOver(connection: FileDescriptor(rawValue: takeOver.connection), mountpoint: configuration.mountpoint.path)
        // A server started to replace one that serves waits here, ready, until that one has
        // stopped; if the keeper gives up on it, it leaves without a word.
        if let go = configuration.goDescriptor {
            configuration.readiness?.standingBy()
            var byte: UInt8 = 0
            guard (try? retryingOnInterrupt { read(go, &byte, 1) }) == 1 else { _exit(0) }
            close(go)
        }
        // Where the server before this one stopped; nil for the first.
        let continuing = kept.position
        let daemon = MountedDaemon(trigger: trigger) { [sched, timer, server, logger] cause in
            Self.shutDown(after: cause, sched: sched, timer: timer, server: server, logger: logger)
        }
        do {
            try timer.start(continuing: continuing)
            let resumed = try server.resumeServing(threads: configuration.threads, onSessionEnd: daemon.onSessionEnd)
            if server.takesOverFromAnother {
                logger.info(
                    "took the mount over at count \(sched.calls): \(resumed.entriesHeld) entries held by the kernel (\(resumed.entriesDropped) dropped), \(resumed.pollersWoken) pollers woken, unanswered requests \(resumed.resent ? "sent again" : "lost (the kernel has no FUSE_NOTIFY_RESEND)")")
            }
        } catch {
            // The keeper holds the mount, and unmounts it if it must.
            logger.error("\(error)")
            configuration.readiness?.failed("\(error)")
            _ = timer.stop(timeout: Self.stopTimeout)
            _ = server.stop(timeout: Self.stopTimeout)
            return 1
        }
        let handing = Task { [timer, server, logger] in
            for await _ in handover {
                Self.handOver(timer: timer, server: server, logger: logger)
            }
        }
        if !server.takesOverFromAnother {
            logger.info(
                "mounted on \(configuration.mountpoint.path.description): hz=\(timer.ticks.hz), \(configuration.threads) request thread(s), pid \(getppid()) (serving: \(getpid()))"
            )
        }
        configuration.readiness?.ready()
        // The group's own lines are for its failures only: the protocol's log is unchanged.
        var groupLogger = logger
        groupLogger.logLevel = .warning
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    // Shut down last, and the first to end on an unmount.
                    .init(service: daemon, successTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: signals, successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                logger: groupLogger))
        do {
            try await group.run()
        } catch {
            logger.error("the service group failed: \(error)")
        }
        // Ended, so that it lets go of what it holds before the exit (LeakSanitizer takes what
        // a task still holds then for leaked).
        handing.cancel()
        await handing.value
        if let status = daemon.outcome.status.withLock({ $0 }) { return status }
        // The group ended without the protocol (it failed): run it here, and fail.
        _ = Self.shutDown(after: trigger.cause, sched: sched, timer: timer, server: server, logger: logger)
        return 1
    }

    /// Leaves the mount to the next server, which the keeper has started and which waits:
    /// stops ticking (the count and the deadlines are in the keeper's state already), stops
    /// taking requests once those in hand are answered, and ends at once, leaving the mount,
    /// the tree and `sched` as they are. No cleanup protocol: nothing is unloaded.
    private static func handOver(timer: TimerQueue, server: FuseServer, logger: Logger) {
        let clock = ContinuousClock()
        let start = clock.now
        let ticking = timer.stop(timeout: stopTimeout)
        let serving = server.stop(timeout: stopTimeout)
        logger.info("handing the mount over to the next server (stopped in \((clock.now - start).loggedMilliseconds))")
        if !ticking || !serving { logger.error("handover: a thread was still busy after \(stopTimeout)") }
        // Gone at once, as the keeper waits for it: nothing is left to flush (every log line is
        // written), and an exit under a sanitizer would take about a second to tear down.
        kill(getpid(), SIGKILL)
    }

    /// The cleanup protocol: unregister `sched` and wait for the routine to leave the queue
    /// (both in ``SchedModule/cleanup(timeout:)``), then stop the tick source, unmount if still
    /// mounted (detaching while the request threads still serve), stop the request threads,
    /// and return the exit status.
    private static func shutDown(
        after cause: ShutdownCause?, sched: SchedModule?, timer: TimerQueue, server: FuseServer, logger: Logger
    ) -> Int32 {
        let clock = ContinuousClock()
        let start = clock.now
        var status: Int32 = 0
        if let cause {
            logger.info("cleanup: started by \(cause)")
        } else {
            status = 1
        }
        do {
            try sched?.cleanup()
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
        let serving = server.shutDown()
        if !serving.detached {
            logger.warning("cleanup: could not detach the mount cleanly (files stayed open); aborting the connection")
        }
        if !serving.stopped {
            logger.error("cleanup: a request thread was still busy after \(Self.stopTimeout)")
            status = 1
        }
        if let left = server.currentMountpoint {
            logger.error("cleanup: the mount on \(left) is still there; clear it with: fusermount3 -u \(left)")
            status = 1
        }
        logger.info("cleanup 3/3: exiting with status \(status) (protocol took \((clock.now - start).loggedMilliseconds))")
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
