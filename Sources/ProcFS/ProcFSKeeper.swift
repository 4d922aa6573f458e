import CLinux
import Glibc
import KernelSync
import Logging
import Synchronization
import SystemPackage

/// Keeps a program's mount alive across the processes that serve it, so that readers of the
/// tree lose nothing when a server crashes, hangs or is upgraded.
///
/// Call ``keepOrTakeOver(mountpoint:options:defaults:hangTimeout:logger:)`` first thing in
/// `main`, before the program builds its tree or starts its services. In the process the user
/// starts, it becomes the *keeper*: it mounts, starts the program again (the same binary, the
/// same arguments) as the *server*, and from then on only watches. It never returns: it exits
/// with the server's status when the server shuts down (SIGTERM, SIGINT or SIGHUP to the
/// keeper are passed on) or the mount is unmounted. In the server it returns the
/// ``KeptMount``, which the program serves with ``ProcFSService/init(tree:continuing:readMode:threads:logger:beginTurn:endTurn:)``:
///
/// ```swift
/// let kept = try await ProcFSKeeper.keepOrTakeOver(mountpoint: "/run/myserver", logger: logger)
/// let handled = kept.value(named: "requests")  // outlives each server
/// let tree = ProcTree()
/// try tree.register("requests") { "\(handled?.load() ?? 0)\n" }
/// let procfs = ProcFSService(tree: tree, continuing: kept, logger: logger)
/// ```
///
/// What the keeper does for the program, with no code of its own:
///
/// - **A crash**: a server that dies by a signal (`kill -9`, a fault) is replaced at once. The
///   kernel sends the new one the requests the dead one had read and not answered
///   (`FUSE_NOTIFY_RESEND`, Linux 6.9 and later; before that, their readers wait for ever),
///   and each open file goes on in the text it was reading.
/// - **A hang**: a server that reads no request for `hangTimeout` while requests wait (stopped,
///   deadlocked) is killed, and so replaced.
/// - **An upgrade**: SIGUSR2 to the keeper starts a server of the binary now on disk; once it
///   is ready, the old one stops and the new one takes over. A new build may add, drop or
///   reorder entries: each path keeps its inode number.
/// - **What the program carries**: 64-bit values named by ``KeptMount/value(named:)`` live in
///   the keeper's memory, so a count goes on from where the last server left it.
///
/// The program's own state is otherwise made afresh in each server, as after any restart.
public enum ProcFSKeeper {
    /// The environment variable by which a keeper tells the server it starts what to take over.
    static let handoffVariable = "PROCFS_KEPT_MOUNT"

    /// Keeps the mount on `mountpoint` in the process the user started, and never returns
    /// there; in the server that process starts, returns what the server takes over.
    ///
    /// - Parameters:
    ///   - mountpoint: an existing directory; its bytes need not be UTF-8.
    ///   - options: mount options added to `defaults`, as for ``ProcFSService``.
    ///   - defaults: the options `options` are added to.
    ///   - hangTimeout: how long requests may wait while the server reads none before it is
    ///     replaced; `nil` for never. A callback that takes long in an `async` file does not
    ///     count: the server goes on reading.
    ///   - logger: where the keeper logs.
    /// - Throws: in the keeper, before it serves: ``MountpointError``, ``FuseServerError`` or
    ///   `KeeperError` (nothing is left mounted); in a server, `EINVAL` if the keeper's handoff
    ///   is not one.
    public static func keepOrTakeOver(
        mountpoint: FilePath, options: [MountOption] = [], defaults: [MountOption] = ProcFSService.defaultOptions,
        hangTimeout: Duration? = .seconds(1), logger: Logger
    ) async throws -> KeptMount {
        let mountOptions = defaults + options
        if let handoff = getenv(handoffVariable).map({ String(cString: $0) }) {
            unsetenv(handoffVariable)
            return try KeptMount(handoff: handoff, mountpoint: mountpoint, options: mountOptions)
        }
        exit(try await keep(mountpoint: mountpoint, options: mountOptions, hangTimeout: hangTimeout, logger: logger))
    }

    /// The keeper's life: mount, start a server, watch; returns the exit status.
    private static func keep(mountpoint: FilePath, options: [MountOption], hangTimeout: Duration?, logger: Logger) async throws -> Int32 {
        // Caught from here on, and passed to the watch through a pipe, by number.
        let signals = try await KeeperSignals()
        let keeper = try FuseKeeper(options: options, logger: logger)
        let checked = try Mountpoint(checking: mountpoint)
        // Held, never closed: the lock lasts as long as the keeper.
        _ = try checked.claim()
        try keeper.mount(at: mountpoint)
        let program = ProgramPath.current
        let supervisor = ServerSupervisor(keeper: keeper, upgradeRequests: nil, hangTimeout: hangTimeout, logger: logger) { handoff in
            var command = ServerCommand(executable: program)
            command.append(program)
            for index in 1..<Int(CommandLine.argc) {
                command.append(FilePath(platformString: CommandLine.unsafeArgv[index]!))
            }
            let go = handoff.go.map { ",\($0)" } ?? ""
            command.environment = ["\(handoffVariable)=\(handoff.connection),\(handoff.state),\(handoff.reports)\(go)"]
            return command
        }
        let server: ServerProcess
        do {
            server = try supervisor.start().get()
        } catch {
            keeper.unmount()
            throw error
        }
        logger.info("keeping the mount on \(mountpoint) (pid \(getpid())); pid \(server.pid) serves it; SIGUSR2 upgrades it")
        // The keeper's idle life is a wait in `poll`: on a thread of its own.
        return try await runBlocking { [signals] in supervisor.watch(server, signals: signals.descriptor) }
    }
}

/// What a server of a kept mount takes over from its keeper (see ``ProcFSKeeper``): the
/// mount's connection, and the state the mount's servers share.
public final class KeptMount: Sendable {
    let connection: FileDescriptor
    let carried: CarriedState
    let mountpoint: FilePath
    let options: [MountOption]
    let readiness: Readiness
    /// For a server that replaces one still serving: the pipe it waits on for the word.
    private let go: Int32?
    /// Whether it has had the word.
    private let waited = Mutex(false)
    /// The thread that ends this server with its keeper.
    private let lifeline: JoinableThread?

    /// Takes `handoff`, the keeper's `connection,state,reports[,go]` descriptors.
    convenience init(handoff: String, mountpoint: FilePath, options: [MountOption]) throws {
        let numbers = handoff.split(separator: ",").compactMap { Int32($0) }
        guard numbers.count == 3 || numbers.count == 4 else { throw Errno.invalidArgument }
        try self.init(
            connection: numbers[0], state: numbers[1], reports: Readiness(descriptor: numbers[2]),
            go: numbers.count == 4 ? numbers[3] : nil, mountpoint: mountpoint, options: options)
    }

    /// Takes what a ``ServerSupervisor``'s ``ServerHandoff`` gave this server, by number, for a
    /// program whose keeper passes it another way than ``ProcFSKeeper``'s (schedfs's, on its
    /// command line).
    package init(
        connection: Int32, state: Int32, reports: Readiness, go: Int32?, mountpoint: FilePath, options: [MountOption]
    ) throws(Errno) {
        // The keeper's death is this server's: the kernel then ends the connection.
        lifeline = KeeperLifeline.hold()
        self.connection = FileDescriptor(rawValue: connection)
        carried = try CarriedState(adopting: state)
        readiness = reports
        // Not for the program's own children, as each descriptor the server adopts.
        if let go { _ = fcntl(go, F_SETFD, FD_CLOEXEC) }
        self.go = go
        self.mountpoint = mountpoint
        self.options = options
    }

    /// Returns once it is this server's turn to serve: at once for a server the keeper started
    /// at the mount or after a crash; for one started for an upgrade, once the server it
    /// replaces has stopped (it stands by, ready, until then). If the keeper gives up on this
    /// server meanwhile, the process exits at once, with status 0.
    func waitForTurn() {
        waited.withLock { waited in
            guard !waited, let go else { return }
            readiness.standingBy()
            var byte: UInt8 = 0
            // The keeper closes the pipe when it gives up on this server: leave without a word.
            guard (try? retryingOnInterrupt { read(go, &byte, 1) }) == 1 else { _exit(0) }
            close(go)
            waited = true
        }
    }

    /// The 64-bit value called `name` (at most 48 bytes of UTF-8), kept in the keeper's memory:
    /// every server of the mount gets the same one, as the last server left it; 0 at first.
    ///
    /// - Returns: `nil` when all 64 names are taken or `name` is too long.
    public func value(named name: String) -> CarriedValue? {
        carried.value(named: name)
    }
}

/// The path of the running program's binary, to start it again.
package enum ProgramPath {
    /// The binary by the path it was started as, made absolute (a link stays a link, so that
    /// replacing what it names upgrades the program), or else `/proc/self/exe`.
    package static var current: String {
        let named = CommandLine.arguments[0]
        guard named.contains("/") else { return selfExecutable }
        if named.hasPrefix("/") { return named }
        var directory = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&directory, directory.count) != nil else { return selfExecutable }
        return directory.withUnsafeBufferPointer { FilePath(platformString: $0.baseAddress!) }.string + "/" + named
    }

    /// What `/proc/self/exe` names: the binary this process runs, as it was when it started.
    package static var selfExecutable: String {
        var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &path, path.count - 1)
        guard length > 0 else { return CommandLine.arguments[0] }
        return String(decoding: path[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
