import CLinux
import Glibc
import KernelSync
import Logging
import ProcFS
import SystemPackage

/// The daemon the user starts, signals and sees exit: it holds the mount (``FuseKeeper``) and
/// runs schedfs's server (``Daemon``) as a child process that takes the connection over. The
/// server answers every request and runs the cleanup protocol; the keeper only holds the
/// mount, passes shutdown signals on, and, when the server dies by a signal (`kill -9`, a
/// crash), starts another that goes on where it stopped: the same mount, the same count, the
/// same tick deadlines, and the requests it had read and not answered sent again. The watch
/// over the servers is the library's ``ServerSupervisor``; this is schedfs's part: its signals,
/// its log, its upgrade socket, and the command line its servers start with.
struct Keeper {
    let configuration: Configuration

    func run() async throws -> Int32 {
        // Caught from here on, and passed to the watch through a pipe, by number.
        let signals = try await KeeperSignals()
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
        let supervisor = ServerSupervisor(
            keeper: keeper, upgradeRequests: control, hangTimeout: configuration.options.hangTimeout, logger: logger,
            command: { [configuration] handoff in Self.serverCommand(configuration, handoff) })
        let server: ServerProcess
        do {
            server = try supervisor.start().get()
        } catch {
            control?.close()
            keeper.unmount()
            throw error
        }
        configuration.readiness?.ready()
        // The keeper's idle life is a wait in `poll`: on a thread of its own, not one of the few
        // that run Swift tasks.
        return try await runBlocking { [server, signals] in supervisor.watch(server, signals: signals.descriptor) }
    }

    /// A schedfs server in the foreground, taking over what `handoff` gives it, with the
    /// keeper's own options and mount point.
    private static func serverCommand(_ configuration: Configuration, _ handoff: ServerHandoff) -> ServerCommand {
        var command = ServerCommand(executable: configuration.executable)
        var arguments = [configuration.executable, "-f"]
        if configuration.debug { arguments.append("-d") }
        if configuration.threads == 1 { arguments.append("-s") }
        for option in configuration.rawOptions { arguments += ["-o", option] }
        arguments += ["--take-over", "\(handoff.connection),\(handoff.state)", "--ready-fd", "\(handoff.reports)"]
        if configuration.readiness == nil { arguments.append("--log-to-stderr") }
        if let go = handoff.go { arguments += ["--go-fd", "\(go)"] }
        arguments.append("--")
        for argument in arguments { command.append(argument) }
        if let source = configuration.source { command.append(source) }
        command.append(configuration.mountpoint.path)
        return command
    }
}
