import Glibc
import KernelSync
import ProcFS
import SystemPackage

/// Puts the daemon in the background without `fork()`.
///
/// A process that has run Swift code must not go on after a fork: the runtime caches each
/// thread's ID, `Mutex` writes that ID into its futex, and in the child the forking thread
/// would lock with its parent's ID; the first contended lock then spins forever (the kernel
/// answers ESRCH and EPERM). So the command starts a fresh `schedfs -f` in a new session with
/// `posix_spawn`, and waits until that child says it is mounted and serving, or why it failed.
/// The parent's exit status therefore tells whether every step of starting worked.
enum Background {
    /// The descriptor a background child reports on.
    static let readinessDescriptor: Int32 = 3
    /// How long the command waits for its child to be ready.
    static let startTimeout: Duration = .seconds(30)
    /// How long a child that failed to start may take to exit.
    static let reapTimeout: Duration = .seconds(5)

    /// Starts the daemon in the background, with this command's own arguments as the bytes
    /// they were (a path need not be UTF-8), and waits for it.
    ///
    /// - Returns: 0 once the daemon serves; otherwise the child's error has been printed.
    static func start() throws(BackgroundError) -> Int32 {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw .system("pipe", Errno(rawValue: errno)) }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        defer { close(ends[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, ends[1], readinessDescriptor)
        for descriptor: Int32 in 0...2 {
            posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", O_RDWR, 0)
        }
        let executable = ProgramPath.selfExecutable
        // Its own flags first: after a `--` among the user's arguments they would be paths.
        let given = (1..<Int(CommandLine.argc)).map { strdup(CommandLine.unsafeArgv[$0]!) }
        let own: [String] = [executable, "-f", "--ready-fd", "\(readinessDescriptor)"]
        let argv = own.map { strdup($0) } + given + [nil]
        defer { argv.forEach { free($0) } }
        var child = pid_t()
        let spawned = posix_spawn(&child, executable, &actions, nil, argv, environ)
        close(ends[1])
        guard spawned == 0 else { throw .system("posix_spawn \(executable)", Errno(rawValue: spawned)) }

        let report = Readiness.readReport(from: ends[0], timeout: startTimeout)
        if report == "ready" { return 0 }
        // The child failed: make sure it is gone before saying so, so nothing is left behind.
        reap(child)
        switch report {
        case .some(let report) where report.hasPrefix("error: "):
            throw .daemon(String(report.dropFirst("error: ".count)))
        case .some:
            throw .daemon("the daemon exited before it was ready; see its log")
        case .none:
            throw .daemon("the daemon was not ready within \(startTimeout)")
        }
    }

    /// Waits for a failed child to exit, at most `reapTimeout` and then by SIGKILL.
    private static func reap(_ child: pid_t) {
        let deadline = ContinuousClock.now + reapTimeout
        var status: Int32 = 0
        while waitpid(child, &status, WNOHANG) == 0 {
            if ContinuousClock.now >= deadline {
                kill(child, SIGKILL)
                waitpid(child, &status, 0)
                return
            }
            usleep(1000)
        }
    }
}

/// The daemon could not be started in the background.
enum BackgroundError: Error, CustomStringConvertible {
    case system(String, Errno)
    case daemon(String)

    var description: String {
        switch self {
        case .system(let call, let error): "\(call): \(error)"
        case .daemon(let message): message
        }
    }
}
