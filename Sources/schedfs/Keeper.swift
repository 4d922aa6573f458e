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
        let caught = await UnixSignalsSequence(trapping: .sigint, .sigterm, .sighup)
        let passing = Task { [writer = ends[1]] in
            for await signal in caught {
                var number = signal.rawValue
                _ = write(writer, &number, MemoryLayout<Int32>.size)
            }
            close(writer)
        }
        defer { passing.cancel() }
        let output = try logOutput()
        configuration.readiness?.detach()
        LoggingSystem.bootstrap { label in output.handler(label: label, level: configuration.debug ? .debug : .info) }
        let logger = Logger(label: "schedfs")

        let keeper = try FuseKeeper(
            arguments: Daemon.fuseArguments(options: configuration.options, source: configuration.source, debug: configuration.debug),
            logger: logger)
        // Held, never closed: the lock lasts as long as the keeper.
        _ = try configuration.mountpoint.claim()
        try keeper.mount(at: configuration.mountpoint.path)
        var server: ServerProcess
        switch start(for: keeper) {
        case .success(let started): server = started
        case .failure(let failure):
            configuration.readiness?.failed(failure.message)
            keeper.unmount()
            throw failure
        }
        configuration.readiness?.ready()

        var restarts: [ContinuousClock.Instant] = []
        var shutdownSignal: Int32?
        var shutdownDeadline: ContinuousClock.Instant?
        while true {
            var fds = [
                pollfd(fd: signals, events: Int16(POLLIN), revents: 0),
                pollfd(fd: server.exitDescriptor, events: Int16(POLLIN), revents: 0),
            ]
            let wait = shutdownDeadline.map { Int32(clamping: max(($0 - .now).nanoseconds / 1_000_000, 0)) } ?? -1
            _ = try? retryingOnInterrupt { poll(&fds, 2, wait) }
            if fds[0].revents & Int16(POLLIN) != 0 {
                var number: Int32 = 0
                if read(signals, &number, MemoryLayout<Int32>.size) == MemoryLayout<Int32>.size {
                    // The server runs the cleanup protocol; the keeper waits for it.
                    shutdownSignal = number
                    shutdownDeadline = .now + Self.exitTimeout
                    kill(server.pid, number)
                }
            }
            if let deadline = shutdownDeadline, ContinuousClock.now >= deadline, fds[1].revents == 0 {
                logger.error("the server (pid \(server.pid)) did not exit within \(Self.exitTimeout) of the shutdown signal; killing it")
                kill(server.pid, SIGKILL)
                _ = server.reap()
                keeper.unmount()
                return 1
            }
            guard fds[1].revents != 0 else { continue }
            let ended = server.reap()
            guard case .killed(let signal) = ended, shutdownSignal == nil else {
                // It ran the cleanup protocol (an unmount, or the signal passed on), or failed.
                keeper.unmount()
                if case .exited(let status) = ended { return status }
                return 1
            }
            let now = ContinuousClock.now
            restarts = restarts.filter { now - $0 < Self.restartWindow } + [now]
            guard restarts.count <= Self.restartLimit else {
                logger.error("the server died \(restarts.count) times within \(Self.restartWindow); giving up and unmounting")
                keeper.unmount()
                return 1
            }
            switch start(for: keeper) {
            case .success(let started):
                logger.info(
                    "server pid \(server.pid) died by signal \(signal); pid \(started.pid) serves in its place after \((ContinuousClock.now - now).loggedMilliseconds)")
                server = started
            case .failure(let failure):
                logger.error("server pid \(server.pid) died by signal \(signal), and another could not start: \(failure.message)")
                keeper.unmount()
                return 1
            }
        }
    }

    /// Starts a server that takes the keeper's connection over, and waits until it serves.
    private func start(for keeper: FuseKeeper) -> Result<ServerProcess, KeeperError> {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { return .failure(.system("pipe", Errno(rawValue: errno))) }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        defer { close(ends[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // Inherited by number: dup2 onto itself clears close-on-exec in the child only.
        posix_spawn_file_actions_adddup2(&actions, ends[1], ends[1])
        let executable = Background.selfExecutable()
        var arguments = [executable, "-f"]
        if configuration.debug { arguments.append("-d") }
        if configuration.threads == 1 { arguments.append("-s") }
        for option in configuration.rawOptions { arguments += ["-o", option] }
        arguments += [
            "--take-over", "\(keeper.connection),\(keeper.carried.descriptor)", "--ready-fd", "\(ends[1])",
        ]
        if configuration.readiness == nil { arguments.append("--log-to-stderr") }
        arguments.append("--")
        var argv = arguments.map { strdup($0) }
        if let source = configuration.source { argv.append(strdup(source)) }
        argv.append(configuration.mountpoint.path.withPlatformString { strdup($0) })
        argv.append(nil)
        defer { argv.forEach { free($0) } }
        var child = pid_t()
        let spawned = posix_spawn(&child, executable, &actions, nil, argv, environ)
        close(ends[1])
        guard spawned == 0 else { return .failure(.system("posix_spawn \(executable)", Errno(rawValue: spawned))) }
        let server = ServerProcess(pid: child)
        switch Background.readReport(from: ends[0], timeout: Self.startTimeout) {
        case "ready": return .success(server)
        case let report:
            kill(child, SIGKILL)
            _ = server.reap()
            if let report, report.hasPrefix("error: ") { return .failure(.server(String(report.dropFirst("error: ".count)))) }
            return .failure(.server(report == nil ? "it did not serve within \(Self.startTimeout)" : "it exited before it served"))
        }
    }

    /// stderr in the foreground; in the background the log file, or syslog.
    private func logOutput() throws -> LogOutput {
        if configuration.readiness == nil { return .descriptor(LogDescriptor(STDERR_FILENO)) }
        guard let path = configuration.options.logFile else { return .syslog }
        return .descriptor(try LogDescriptor.appending(to: path))
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
