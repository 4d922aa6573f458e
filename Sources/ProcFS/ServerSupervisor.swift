import CLinux
import Glibc
import KernelSync
import Logging
import SystemPackage

/// What a server the keeper starts inherits, by number: the mount's connection, the state the
/// servers share, the pipe it reports its start on, and, for one that replaces a server still
/// serving, the pipe it waits on for the word to take over.
package struct ServerHandoff: Sendable {
    package let connection: Int32
    package let state: Int32
    package let reports: Int32
    package let go: Int32?
}

/// How to start a server: the binary, its arguments and what its environment adds.
package struct ServerCommand: Sendable {
    package let executable: String
    /// The arguments, the program's name first, as the bytes they are (a path need not be UTF-8).
    package private(set) var arguments: [[CChar]] = []
    /// `NAME=value` entries added to the keeper's environment.
    package var environment: [String] = []

    package init(executable: String) {
        self.executable = executable
    }

    package mutating func append(_ argument: String) {
        arguments.append(Array(argument.utf8CString))
    }

    package mutating func append(_ path: FilePath) {
        arguments.append(path.withPlatformString { Array(UnsafeBufferPointer(start: $0, count: strlen($0) + 1)) })
    }
}

/// Where upgrade requests come from besides SIGUSR2: a socket the keeper listens on.
package protocol UpgradeRequests: Sendable {
    /// Readable when a request waits.
    var descriptor: Int32 { get }
    /// The request waiting, if it may be answered.
    func acceptRequest() -> (any UpgradeRequest)?
    /// Stops listening, before the mount goes.
    func close()
}

/// One upgrade request, answered once with one line.
package protocol UpgradeRequest {
    func answer(_ line: String)
}

/// The keeper's watch over the servers of its mount (see ``FuseKeeper``): it starts them,
/// passes shutdown signals on, starts another in place of one that dies by a signal (`kill
/// -9`, a crash) or is found stuck (``StallWatch``), and replaces the one that serves by one of
/// the binary now on disk on request (SIGUSR2, or an ``UpgradeRequests`` source). The server
/// answers every request and runs the program's shutdown; the keeper only holds the mount.
package struct ServerSupervisor: Sendable {
    /// How long a server may take to say it serves.
    package static let startTimeout: Duration = .seconds(10)
    /// How long a server may take to exit once told to shut down.
    package static let exitTimeout: Duration = .seconds(10)
    /// Servers that die within ``restartWindow`` of each other, beyond which the keeper gives
    /// up (a server that cannot start ends the keeper at once, unless it was killed before it
    /// served: see ``killedBeforeServingLimit``).
    static let restartLimit = 50
    static let restartWindow: Duration = .seconds(10)
    /// Servers started in place of a dead one that may be killed in a row before one serves.
    static let killedBeforeServingLimit = 5
    /// Servers found stuck in a row, each before it had read `stuckAtOnceRequests`, after
    /// which the keeper stops looking for stuck servers.
    static let stuckAtOnceLimit = 5
    static let stuckAtOnceRequests: UInt64 = 16

    let keeper: FuseKeeper
    /// The command that starts a server with what it inherits.
    let command: @Sendable (ServerHandoff) -> ServerCommand
    let upgradeRequests: (any UpgradeRequests)?
    /// How long requests may wait with the server reading none before it is taken for stuck;
    /// `nil` for never.
    let hangTimeout: Duration?
    let logger: Logger

    package init(
        keeper: FuseKeeper, upgradeRequests: (any UpgradeRequests)?, hangTimeout: Duration?, logger: Logger,
        command: @escaping @Sendable (ServerHandoff) -> ServerCommand
    ) {
        self.keeper = keeper
        self.command = command
        self.upgradeRequests = upgradeRequests
        self.hangTimeout = hangTimeout
        self.logger = logger
    }

    /// Watches `started`, the signals passed on through `signals` (each an `Int32` signal
    /// number) and the upgrade requests until the mount's life ends; unmounts, and returns the
    /// exit status: the server's own when it exits, 1 when the keeper gives up.
    package func watch(_ started: ServerProcess, signals: Int32) -> Int32 {
        var server = started
        var restarts: [ContinuousClock.Instant] = []
        var shutdownSignal: Int32?
        var shutdownDeadline: ContinuousClock.Instant?
        // A server that reads no request while requests wait (stopped, deadlocked) is killed,
        // and so replaced as one that died.
        var stall = hangTimeout.flatMap { keeper.stallWatch(timeout: $0) }
        if hangTimeout != nil && stall == nil {
            logger.warning("no room in the shared state to watch for a stuck server; hang_timeout is off")
        }
        stall?.serverStarted(pid: server.pid)
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
                pollfd(fd: upgradeRequests?.descriptor ?? -1, events: Int16(POLLIN), revents: 0),
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
                        // None when the old server handed over and no other could start.
                        guard let upgraded = upgrade(server).server else { return end(status: 1) }
                        server = upgraded
                        stall?.serverStarted(pid: server.pid)
                    }
                } else {
                    // The server shuts down; the keeper waits for it.
                    shutdownSignal = number
                    shutdownDeadline = .now + Self.exitTimeout
                    kill(server.pid, number)
                }
                continue
            }
            if fds[2].revents & Int16(POLLIN) != 0, let request = upgradeRequests?.acceptRequest() {
                if shutdownSignal != nil {
                    request.answer("error: the daemon is shutting down")
                } else {
                    let upgraded = upgrade(server)
                    request.answer(upgraded.answer)
                    // None when the old server handed over and no other could start.
                    guard let started = upgraded.server else { return end(status: 1) }
                    server = started
                    stall?.serverStarted(pid: server.pid)
                }
                continue
            }
            if let watched = watching, fds[1].revents == 0 {
                if fds[3].revents != 0 { watched.noticed() }
                if let deadline = watched.deadline, ContinuousClock.now >= deadline, let stuck = watched.check() {
                    stuckAtOnce = watched.readByThisServer < Self.stuckAtOnceRequests ? stuckAtOnce + 1 : 0
                    switch stuck {
                    case .readNone:
                        logger.warning(
                            "server pid \(server.pid) is stuck: it read no request for \(watched.timeout) while requests waited; killing it")
                    case .stopped:
                        logger.warning("server pid \(server.pid) is stuck: it was stopped for \(watched.timeout) while serving requests; killing it")
                    }
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
                return end(status: 1)
            }
            guard fds[1].revents != 0 else { continue }
            let ended = server.reap()
            guard case .killed(let signal) = ended, shutdownSignal == nil else {
                // It ran the program's shutdown (an unmount, or the signal passed on), or failed.
                if case .exited(let status) = ended { return end(status: status) }
                return end(status: 1)
            }
            let now = ContinuousClock.now
            switch restart(after: now, counting: &restarts) {
            case .success(let started):
                logger.info(
                    "server pid \(server.pid) died by signal \(signal); pid \(started.pid) serves in its place after \((ContinuousClock.now - now).loggedMilliseconds)")
                server = started
                stall?.serverStarted(pid: server.pid)
            case .failure(let failure):
                logger.error("server pid \(server.pid) died by signal \(signal), and another could not start: \(failure.message)")
                return end(status: 1)
            }
        }
    }

    /// Starts a server in place of one that died at `died`, and again when the new one is
    /// killed (SIGKILL: a `kill -9` of each server in turn, the OOM killer) before it serves:
    /// at most ``killedBeforeServingLimit`` times in a row, within ``restartLimit`` deaths in
    /// ``restartWindow``. A server that dies by another signal before it serves (a crash at
    /// start) cannot start.
    private func restart(after died: ContinuousClock.Instant, counting restarts: inout [ContinuousClock.Instant])
        -> Result<ServerProcess, KeeperError>
    {
        var death = died
        for _ in 0...Self.killedBeforeServingLimit {
            restarts = restarts.filter { death - $0 < Self.restartWindow } + [death]
            guard restarts.count <= Self.restartLimit else {
                return .failure(.server("servers died \(restarts.count) times within \(Self.restartWindow); giving up"))
            }
            let started = start()
            guard case .failure(.killed(SIGKILL)) = started else { return started }
            logger.warning("the server started in place was killed by signal \(SIGKILL) before it served; starting another")
            death = .now
        }
        return .failure(.server("\(Self.killedBeforeServingLimit + 1) servers in a row were killed before they served; giving up"))
    }

    /// Stops listening for upgrades and unmounts; returns `status`.
    private func end(status: Int32) -> Int32 {
        upgradeRequests?.close()
        keeper.unmount()
        return status
    }

    /// Starts a server that takes the keeper's connection over, and waits until it serves.
    package func start() -> Result<ServerProcess, KeeperError> {
        let spawned: SpawnedServer
        switch spawn(standingBy: false) {
        case .success(let started): spawned = started
        case .failure(let failure): return .failure(failure)
        }
        defer { close(spawned.reports) }
        return spawned.awaitReport("ready")
    }

    /// Replaces `current` by a server of the binary now on disk: the new one starts and waits,
    /// ready; then `current` hands over (SIGUSR1: it stops and exits, leaving the mount as it
    /// is), and the new one goes on from where it stopped. If the new one fails before it is
    /// ready, `current` serves on, and the answer says why. If it fails after `current` has
    /// handed over, another is started as after a crash; if none can start, no server is
    /// returned (`current` has been reaped), and the keeper must give up.
    private func upgrade(_ current: ServerProcess) -> (server: ServerProcess?, answer: String) {
        let clock = ContinuousClock()
        let started = clock.now
        let spawned: SpawnedServer
        switch spawn(standingBy: true) {
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
            logger.info("upgrade: pid \(server.pid), from \(spawned.executable), serves in place of pid \(current.pid) (\(took.loggedMilliseconds))")
            return (server, "upgraded: pid \(server.pid) serves in place of pid \(current.pid), \(took.loggedMilliseconds)")
        case .failure(let failure):
            // The old server has gone: start another, as after a crash.
            logger.error("upgrade: the new server failed after the old one handed over: \(failure.message)")
            switch start() {
            case .success(let server): return (server, "error: the new server failed after the handover (\(failure.message)); pid \(server.pid) serves")
            case .failure(let again):
                logger.error("upgrade: no server could start after the failed handover: \(again.message); unmounting")
                return (nil, "error: the new server failed after the handover (\(failure.message)), and no server could start: \(again.message)")
            }
        }
    }

    /// A server started, with its end of the report pipe (and, standing by, of the go pipe).
    private struct SpawnedServer {
        let process: ServerProcess
        let executable: String
        let reports: Int32
        let go: Int32?

        /// Waits for the report `expected`; on anything else the server is killed.
        func awaitReport(_ expected: String) -> Result<ServerProcess, KeeperError> {
            let report = Readiness.readReport(from: reports, timeout: ServerSupervisor.startTimeout)
            if report == expected { return .success(process) }
            // Before the keeper's own kill: a server that died meanwhile says how. The pipe
            // ends (an empty report) as it exits, a moment before its exit can be seen.
            let diedAlready = process.exits(within: report == "" ? .seconds(1) : .zero)
            kill(process.pid, SIGKILL)
            let ended = process.reap()
            if diedAlready, case .killed(let signal) = ended { return .failure(.killed(signal)) }
            if let report, report.hasPrefix("error: ") { return .failure(.server(String(report.dropFirst("error: ".count)))) }
            return .failure(.server(report == nil ? "it did not serve within \(ServerSupervisor.startTimeout)" : "it exited before it served"))
        }
    }

    /// Starts a server of ``command``; standing by, it waits for a byte on its go pipe.
    private func spawn(standingBy: Bool) -> Result<SpawnedServer, KeeperError> {
        var ends: [Int32] = [0, 0]
        var goEnds: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return .failure(.system("pipe", Errno(rawValue: errno))) }
        if standingBy, pipe(&goEnds) != 0 {
            let error = Errno(rawValue: errno)
            for end in ends { close(end) }
            return .failure(.system("pipe", error))
        }
        for end in ends + goEnds where end >= 0 { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // Inherited by number: dup2 onto itself clears close-on-exec in the child only.
        posix_spawn_file_actions_adddup2(&actions, ends[1], ends[1])
        if standingBy { posix_spawn_file_actions_adddup2(&actions, goEnds[0], goEnds[0]) }
        let server = command(ServerHandoff(
            connection: keeper.connection.rawValue, state: keeper.carried.descriptor, reports: ends[1],
            go: standingBy ? goEnds[0] : nil))
        var argv = server.arguments.map { argument in argument.withUnsafeBufferPointer { strdup($0.baseAddress!) } } + [nil]
        var environment = Self.environment(adding: server.environment).map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            environment.forEach { free($0) }
        }
        // The server starts with no signal blocked and the signals it handles at their
        // defaults, whatever the keeper blocks or ignores (an ignored signal stays ignored
        // across exec, as a blocked one stays blocked).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noneBlocked = sigset_t()
        sigemptyset(&noneBlocked)
        var defaulted = sigset_t()
        sigemptyset(&defaulted)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2] { sigaddset(&defaulted, signal) }
        posix_spawnattr_setsigmask(&attributes, &noneBlocked)
        posix_spawnattr_setsigdefault(&attributes, &defaulted)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var child = pid_t()
        let spawned = posix_spawn(&child, server.executable, &actions, &attributes, &argv, &environment)
        close(ends[1])
        if standingBy { close(goEnds[0]) }
        guard spawned == 0 else {
            close(ends[0])
            if standingBy { close(goEnds[1]) }
            return .failure(.system("posix_spawn \(server.executable)", Errno(rawValue: spawned)))
        }
        let process: ServerProcess
        do throws(Errno) {
            process = try ServerProcess(pid: child)
        } catch {
            // Its exit could not be watched: it goes now, before it takes the connection over.
            kill(child, SIGKILL)
            _ = try? retryingOnInterrupt { waitpid(child, nil, 0) }
            close(ends[0])
            if standingBy { close(goEnds[1]) }
            return .failure(.system("pidfd_open", error))
        }
        return .success(SpawnedServer(
            process: process, executable: server.executable, reports: ends[0], go: standingBy ? goEnds[1] : nil))
    }

    /// This process's environment, with `added` in place of any entries of the same names.
    private static func environment(adding added: [String]) -> [String] {
        let names = Set(added.map { $0.prefix { $0 != "=" } })
        var entries: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if !names.contains(text.prefix { $0 != "=" }) { entries.append(text) }
            entry += 1
        }
        return entries + added
    }
}

/// A server the keeper started.
package struct ServerProcess {
    package let pid: pid_t
    /// Readable once it has exited.
    let exitDescriptor: Int32

    /// Watches the child `pid`.
    ///
    /// - Throws: the `Errno` of `pidfd_open` (Linux 5.3 and later), without which its exit
    ///   would never be seen.
    init(pid: pid_t) throws(Errno) {
        let descriptor = clinux_pidfd_open(pid)
        guard descriptor >= 0 else { throw Errno(rawValue: errno) }
        self.pid = pid
        exitDescriptor = descriptor
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
package enum KeeperError: Error, CustomStringConvertible {
    case system(String, Errno)
    case server(String)
    /// A server was killed by the signal before it served.
    case killed(Int32)

    package var message: String { description }

    package var description: String {
        switch self {
        case .system(let call, let error): "\(call): \(error)"
        case .server(let message): message
        case .killed(let signal): "it was killed by signal \(signal) before it served"
        }
    }
}
