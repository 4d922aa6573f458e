import CLinux
import Glibc
import KernelSync
import Logging
import ProcFS
import SystemPackage
import UnixSignals

/// The daemon the user starts, signals and sees exit: it holds the mount (``FuseKeeper``) and
/// runs schedfs's server (``Daemon``) as a child process that takes the connection over. The
/// server answers every request and runs the cleanup protocol; the keeper only holds the
/// mount, passes shutdown signals on, and, when the server dies by a signal (`kill -9`, a
/// crash), starts another that goes on where it stopped: the same mount, the same count, the
/// same tick deadlines, and the requests it had read and not answered sent again.
struct Keeper {
    /// How long a server may take to say it serves.
    static let startTimeout: Duration = .seconds(10)
    /// How long a server may take to exit once told to shut down.
    static let exitTimeout: Duration = .seconds(10)
    /// Servers that die within ``restartWindow`` of each other, beyond which the keeper gives
    /// up (a server that cannot start at all ends the keeper at once).
    static let restartLimit = 50
    /// Servers found stuck in a row, each before it had read `stuckAtOnceRequests`, after
    /// which the keeper stops looking for stuck servers.
    static let stuckAtOnceLimit = 5
    static let stuckAtOnceRequests: UInt64 = 16
    static let restartWindow: Duration = .seconds(10)

    let configuration: Configuration

    func run() async throws -> Int32 {
        // Caught from here on (with an async main, the main thread waits with no signal
        // blocked): each is passed to the loop below through a pipe, by number.
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw KeeperError.system("pipe", Errno(rawValue: errno)) }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let signals = ends[0]
        defer { close(ends[0]) }
        let caught = await UnixSignalsSequence(trapping: .sigint, .sigterm, .sighup, .sigusr2)
        let passing = Task { [writer = ends[1]] in
            for await signal in caught {
                var number = signal.rawValue
                _ = write(writer, &number, MemoryLayout<Int32>.size)
            }
            close(writer)
        }
        defer { passing.cancel() }
        let output = try configuration.logOutput()
        configuration.readiness?.detach()
        LoggingSystem.bootstrap { label in output.handler(label: label, level: configuration.debug ? .debug : .info) }
        let logger = Logger(label: "schedfs")

        let keeper = try FuseKeeper(
            options: Daemon.mountOptions(options: configuration.options, source: configuration.source, debug: configuration.debug),
            logger: logger)
        // Held, never closed: the lock lasts as long as the keeper.
        _ = try configuration.mountpoint.claim()
        try keeper.mount(at: configuration.mountpoint.path)
        // A mount never fails for want of the upgrade socket: SIGUSR2 still upgrades.
        let control: UpgradeControl?
        do {
            control = try UpgradeControl(listeningFor: keeper.mountpoint ?? configuration.mountpoint.path)
        } catch {
            logger.warning("schedfs --upgrade cannot reach this mount (\(error)); SIGUSR2 to pid \(getpid()) upgrades it")
            control = nil
        }
        // Nothing is left mounted if the keeper cannot go on (the caller reports why).
        let server: ServerProcess
        do {
            server = try start(for: keeper).get()
        } catch {
            control?.close()
            keeper.unmount()
            throw error
        }
        configuration.readiness?.ready()
        // The keeper's idle life is a wait in `poll`: on a thread of its own, not one of the few
        // that run Swift tasks.
        return try await runBlocking { [self, server] in
            watch(server, for: keeper, control: control, signals: signals, logger: logger)
        }
    }

    /// Watches the server, the signals passed on through `signals` and the upgrade requests
    /// until the mount's life ends; returns the exit status. It starts a server in place of
    /// one that dies by a signal, and one of the binary on disk on request (``upgrade``).
    private func watch(
        _ started: ServerProcess, for keeper: FuseKeeper, control: UpgradeControl?, signals: Int32, logger: Logger
    ) -> Int32 {
        var server = started
        var restarts: [ContinuousClock.Instant] = []
        var shutdownSignal: Int32?
        var shutdownDeadline: ContinuousClock.Instant?
        // A server that reads no request while requests wait (stopped, deadlocked) is killed,
        // and so replaced as one that died.
        var stall = configuration.options.hangTimeout.flatMap { keeper.stallWatch(timeout: $0) }
        if configuration.options.hangTimeout != nil && stall == nil {
            logger.warning("no room in the shared state to watch for a stuck server; hang_timeout is off")
        }
        stall?.serverStarted()
        // Servers found stuck one after another, each having read next to nothing: a request
        // that stops every server (a callback that never returns) would be sent to the next.
        var stuckAtOnce = 0
        while true {
            // Not while the server runs the cleanup protocol: it may stop reading on purpose.
            let watching = shutdownSignal == nil ? stall : nil
            var fds = [
                pollfd(fd: signals, events: Int16(POLLIN), revents: 0),
                pollfd(fd: server.exitDescriptor, events: Int16(POLLIN), revents: 0),
                // No socket, or no watch: poll skips a negative descriptor.
                pollfd(fd: control?.descriptor ?? -1, events: Int16(POLLIN), revents: 0),
                pollfd(fd: watching?.descriptor ?? -1, events: Int16(POLLIN), revents: 0),
            ]
            let until = [shutdownDeadline, watching?.deadline].compactMap { $0 }.min()
            let wait = until.map { Int32(clamping: max(($0 - .now).nanoseconds / 1_000_000 + 1, 0)) } ?? -1
            _ = try? retryingOnInterrupt { poll(&fds, nfds_t(fds.count), wait) }
            var number: Int32 = 0
            if fds[0].revents & Int16(POLLIN) != 0,
                read(signals, &number, MemoryLayout<Int32>.size) == MemoryLayout<Int32>.size
            {
                if number == SIGUSR2 {
                    if shutdownSignal == nil {
                        server = upgrade(server, for: keeper, logger: logger).server
                        stall?.serverStarted()
                    }
                } else {
                    // The server runs the cleanup protocol; the keeper waits for it.
                    shutdownSignal = number
                    shutdownDeadline = .now + Self.exitTimeout
                    kill(server.pid, number)
                }
                continue
            }
            if fds[2].revents & Int16(POLLIN) != 0, let request = control?.accept() {
                if shutdownSignal != nil {
                    request.answer("error: the daemon is shutting down")
                } else {
                    let upgraded = upgrade(server, for: keeper, logger: logger)
                    server = upgraded.server
                    stall?.serverStarted()
                    request.answer(upgraded.answer)
                }
                continue
            }
            if let watched = watching, fds[1].revents == 0 {
                if fds[3].revents != 0 { watched.noticed() }
                if let deadline = watched.deadline, ContinuousClock.now >= deadline, watched.check() {
                    stuckAtOnce = watched.readByThisServer < Self.stuckAtOnceRequests ? stuckAtOnce + 1 : 0
                    logger.warning(
                        "server pid \(server.pid) read no request for \(watched.timeout) while requests waited; killing it")
                    kill(server.pid, SIGKILL)
                    if stuckAtOnce >= Self.stuckAtOnceLimit {
                        logger.error(
                            "\(stuckAtOnce) servers in a row were stuck before they had read \(Self.stuckAtOnceRequests) requests: a request stops every server (a callback that never returns?); no longer watching for stuck servers")
                        stall = nil
                    }
                    continue
                }
            }
            if let deadline = shutdownDeadline, ContinuousClock.now >= deadline, fds[1].revents == 0 {
                logger.error("the server (pid \(server.pid)) did not exit within \(Self.exitTimeout) of the shutdown signal; killing it")
                kill(server.pid, SIGKILL)
                _ = server.reap()
                control?.close()
                keeper.unmount()
                return 1
            }
            guard fds[1].revents != 0 else { continue }
            let ended = server.reap()
            guard case .killed(let signal) = ended, shutdownSignal == nil else {
                // It ran the cleanup protocol (an unmount, or the signal passed on), or failed.
                control?.close()
                keeper.unmount()
                if case .exited(let status) = ended { return status }
                return 1
            }
            let now = ContinuousClock.now
            restarts = restarts.filter { now - $0 < Self.restartWindow } + [now]
            guard restarts.count <= Self.restartLimit else {
                logger.error("the server died \(restarts.count) times within \(Self.restartWindow); giving up and unmounting")
                control?.close()
                keeper.unmount()
                return 1
            }
            switch start(for: keeper) {
            case .success(let started):
                logger.info(
                    "server pid \(server.pid) died by signal \(signal); pid \(started.pid) serves in its place after \((ContinuousClock.now - now).loggedMilliseconds)")
                server = started
                stall?.serverStarted()
            case .failure(let failure):
                logger.error("server pid \(server.pid) died by signal \(signal), and another could not start: \(failure.message)")
                control?.close()
                keeper.unmount()
                return 1
            }
        }
    }

    /// Starts a server that takes the keeper's connection over, and waits until it serves.
    private func start(for keeper: FuseKeeper) -> Result<ServerProcess, KeeperError> {
        let spawned: SpawnedServer
        switch spawn(for: keeper, standingBy: false) {
        case .success(let started): spawned = started
        case .failure(let failure): return .failure(failure)
        }
        defer { close(spawned.reports) }
        return spawned.awaitReport("ready")
    }

    /// Replaces `current` by a server of the binary now on disk (see ``executable``): the new
    /// one starts and waits, ready; then `current` hands over (SIGUSR1: it stops and exits,
    /// leaving the mount as it is), and the new one goes on from where it stopped. If the new
    /// one fails before it is ready, `current` serves on, and the answer says why.
    private func upgrade(_ current: ServerProcess, for keeper: FuseKeeper, logger: Logger) -> (server: ServerProcess, answer: String) {
        let clock = ContinuousClock()
        let started = clock.now
        let spawned: SpawnedServer
        switch spawn(for: keeper, standingBy: true) {
        case .success(let made): spawned = made
        case .failure(let failure):
            logger.error("upgrade: \(failure.message); pid \(current.pid) serves on")
            return (current, "error: \(failure.message)")
        }
        defer { close(spawned.reports) }
        if case .failure(let failure) = spawned.awaitReport("standby") {
            close(spawned.go!)
            logger.error("upgrade: the new server failed: \(failure.message); pid \(current.pid) serves on")
            return (current, "error: the new server failed: \(failure.message); pid \(current.pid) serves on")
        }
        kill(current.pid, SIGUSR1)
        if !current.exits(within: Self.exitTimeout) {
            logger.error("upgrade: pid \(current.pid) did not hand over within \(Self.exitTimeout); killing it")
            kill(current.pid, SIGKILL)
        }
        _ = current.reap()
        var go: UInt8 = 1
        _ = write(spawned.go!, &go, 1)
        close(spawned.go!)
        switch spawned.awaitReport("ready") {
        case .success(let server):
            let took = clock.now - started
            logger.info("upgrade: pid \(server.pid), from \(executable), serves in place of pid \(current.pid) (\(took.loggedMilliseconds))")
            return (server, "upgraded: pid \(server.pid) serves in place of pid \(current.pid), \(took.loggedMilliseconds)")
        case .failure(let failure):
            // The old server has gone: start another, as after a crash.
            logger.error("upgrade: the new server failed after the old one handed over: \(failure.message)")
            switch start(for: keeper) {
            case .success(let server): return (server, "error: the new server failed after the handover (\(failure.message)); pid \(server.pid) serves")
            case .failure(let again): return (current, "error: no server could start: \(again.message)")
            }
        }
    }

    /// The binary a new server runs: the one the keeper was started from, as it is on disk
    /// now (a package upgrade replaces it).
    private var executable: String { configuration.executable }

    /// A server started, with its end of the report pipe (and, standing by, of the go pipe).
    private struct SpawnedServer {
        let process: ServerProcess
        let reports: Int32
        let go: Int32?

        /// Waits for the report `expected`; on anything else the server is killed.
        func awaitReport(_ expected: String) -> Result<ServerProcess, KeeperError> {
            let report = Background.readReport(from: reports, timeout: Keeper.startTimeout)
            if report == expected { return .success(process) }
            kill(process.pid, SIGKILL)
            _ = process.reap()
            if let report, report.hasPrefix("error: ") { return .failure(.server(String(report.dropFirst("error: ".count)))) }
            return .failure(.server(report == nil ? "it did not serve within \(Keeper.startTimeout)" : "it exited before it served"))
        }
    }

    /// Starts a server of ``executable``; standing by, it waits for a byte on `go`.
    private func spawn(for keeper: FuseKeeper, standingBy: Bool) -> Result<SpawnedServer, KeeperError> {
        var ends: [Int32] = [0, 0]
        var goEnds: [Int32] = [-1, -1]
        guard pipe(&ends) == 0, !standingBy || pipe(&goEnds) == 0 else { return .failure(.system("pipe", Errno(rawValue: errno))) }
        for end in ends + goEnds where end >= 0 { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // Inherited by number: dup2 onto itself clears close-on-exec in the child only.
        posix_spawn_file_actions_adddup2(&actions, ends[1], ends[1])
        if standingBy { posix_spawn_file_actions_adddup2(&actions, goEnds[0], goEnds[0]) }
        var arguments = [executable, "-f"]
        if configuration.debug { arguments.append("-d") }
        if configuration.threads == 1 { arguments.append("-s") }
        for option in configuration.rawOptions { arguments += ["-o", option] }
        arguments += [
            "--take-over", "\(keeper.connection.rawValue),\(keeper.carried.descriptor)", "--ready-fd", "\(ends[1])",
        ]
        if configuration.readiness == nil { arguments.append("--log-to-stderr") }
        if standingBy { arguments += ["--go-fd", "\(goEnds[0])"] }
        arguments.append("--")
        var argv = arguments.map { strdup($0) }
        if let source = configuration.source { argv.append(strdup(source)) }
        argv.append(configuration.mountpoint.path.withPlatformString { strdup($0) })
        argv.append(nil)
        defer { argv.forEach { free($0) } }
        var child = pid_t()
        let spawned = posix_spawn(&child, executable, &actions, nil, argv, environ)
        close(ends[1])
        if standingBy { close(goEnds[0]) }
        guard spawned == 0 else {
            close(ends[0])
            if standingBy { close(goEnds[1]) }
            return .failure(.system("posix_spawn \(executable)", Errno(rawValue: spawned)))
        }
        return .success(SpawnedServer(process: ServerProcess(pid: child), reports: ends[0], go: standingBy ? goEnds[1] : nil))
    }

}

/// A server the keeper started.
struct ServerProcess {
    let pid: pid_t
    /// Readable once it has exited.
    let exitDescriptor: Int32

    init(pid: pid_t) {
        self.pid = pid
        exitDescriptor = clinux_pidfd_open(pid)
    }

    enum End {
        case exited(Int32)
        case killed(Int32)
    }

    /// Whether it exits within `timeout`.
    func exits(within timeout: Duration) -> Bool {
        var ready = pollfd(fd: exitDescriptor, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(clamping: timeout.nanoseconds / 1_000_000)
        return (try? retryingOnInterrupt { poll(&ready, 1, milliseconds) }) == 1
    }

    /// Waits for it to exit (call once it has, or after SIGKILL) and says how.
    func reap() -> End {
        var status: Int32 = 0
        _ = try? retryingOnInterrupt { waitpid(pid, &status, 0) }
        close(exitDescriptor)
        return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .killed(status & 0x7f)
    }
}

/// Why the keeper could not go on.
enum KeeperError: Error, CustomStringConvertible {
    case system(String, Errno)
    case server(String)

    var message: String { description }

    var description: String {
        switch self {
        case .system(let call, let error): "\(call): \(error)"
        case .server(let message): message
        }
    }
}
