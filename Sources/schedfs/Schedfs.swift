import ArgumentParser
import Glibc
import Logging
import ProcFS
import SystemPackage

/// The `schedfs` command.
@main
struct Schedfs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedfs",
        abstract: "Mount a live /proc-like tree whose file 'sched' counts timer ticks.",
        usage: """
            schedfs MOUNTPOINT [-f] [-d] [-s] [-o option[,option...]]
            schedfs SOURCE MOUNTPOINT -o options    (the form mount.fuse3 uses)
            schedfs --upgrade MOUNTPOINT
            """,
        discussion: """
            Reading MOUNTPOINT/sched gives 'Timer was called N times so far', where N counts \
            the runs of a routine on a timer-driven task queue that ticks HZ times a second. \
            MOUNTPOINT/timer/ shows the timer: hz (write a rate to change it live), ticks, \
            queue and latency; MOUNTPOINT/uptime the seconds since mount; MOUNTPOINT/metrics/ \
            the timer's figures, a file each and all in schedfs.prom, for Prometheus: give \
            node_exporter --collector.textfile.directory=MOUNTPOINT/metrics.

            schedfs goes to the background once the mount is ready and serving. Unmount with \
            'fusermount3 -u MOUNTPOINT' (or umount, or SIGINT/SIGTERM/SIGHUP): schedfs \
            unregisters sched and the rest of the tree, waits until the routine has left the \
            queue, and exits 0.

            Exit status: 0 when the mount is ready (or, with -f, when it has been unmounted), \
            64 for a bad command line, bad -o options included, and 1 for a failure at run time.
            """,
        version: "schedfs 0.1.0")

    @Argument(
        help: ArgumentHelp("The directory to mount on.", valueName: "mountpoint"),
        completion: .directory)
    var paths: [String] = []

    @Flag(name: .customShort("f"), help: "Stay in the foreground and log to stderr.")
    var foreground = false

    @Flag(name: .customShort("d"), help: "Debug: log every FUSE request; implies -f.")
    var debug = false

    @Flag(name: .customShort("s"), help: "Answer requests on a single thread.")
    var singleThreaded = false

    @Option(
        name: .customShort("o"),
        help: ArgumentHelp(
            "Mount options, comma separated.",
            discussion: """
                schedfs's own:
                  hz=N         timer ticks per second, 1 to 10000 (default 100)
                  log=PATH     in the background, log to PATH, not syslog
                  direct_io    each read a round trip to the daemon, exactly
                               as /proc reads (the default)
                  page_cache   let the kernel serve reads from its page cache
                               between changes: faster, but a run of reads
                               that a change falls between goes on in the
                               new text
                  no_auto_unmount
                               leave the mount behind if the daemon is
                               killed (by default fusermount3 unmounts it)
                  hang_timeout=MS
                               replace a server that reads no request for
                               MS milliseconds while requests wait
                               (default 1000; 0: never)
                Any other option goes to libfuse (allow_other, ro, fsname=...). \
                default_permissions is always on: the kernel enforces the files' modes.
                """,
            valueName: "options"))
    var mountOptions: [String] = []

    @Flag(
        name: .customLong("upgrade"),
        help: ArgumentHelp(
            "Replace the daemon serving MOUNTPOINT by the binary now on disk.",
            discussion: "The mount, the count and every open file stay; if the new binary cannot serve, the old one serves on and the command says why (exit 1). SIGUSR2 to the daemon does the same."))
    var upgrade = false

    @Option(name: .customLong("ready-fd"), help: .private)
    var readyDescriptor: Int32?

    /// Set by the keeper for its server: the connection and the state it inherits, by number.
    @Option(name: .customLong("take-over"), help: .private)
    var takeOver: String?

    /// Set by the keeper for a server that replaces one still serving.
    @Option(name: .customLong("go-fd"), help: .private)
    var goDescriptor: Int32?

    /// Set by a keeper in the foreground for its server.
    @Flag(name: .customLong("log-to-stderr"), help: .private)
    var logsToStandardError = false

    func validate() throws {
        if paths.isEmpty { throw ValidationError("missing mountpoint: say where to mount, as in 'schedfs mnt'") }
        if paths.count > 2 {
            throw ValidationError("too many arguments '\(paths.joined(separator: " "))': expected a single mountpoint")
        }
    }

    func run() async throws {
        let readiness = readyDescriptor.map { Readiness(descriptor: $0) }
        do {
            let options = try MountOptions.parse(mountOptions)
            let source = paths.count == 2 ? paths[0] : nil
            do {
                try FuseServer.check(
                    options: Daemon.mountOptions(options: options, source: source, debug: debug),
                    logger: Logger(label: "schedfs"))
            } catch {
                throw UsageError(description: "\(error)")
            }
            let given = Self.rawArgument(paths[paths.count - 1])
            if upgrade { Glibc.exit(try Self.requestUpgrade(of: given)) }
            try DescriptorLimit.check()
            let connection = try takeOver.map { (text) throws(UsageError) -> (connection: Int32, state: Int32) in
                let numbers = text.split(separator: ",").compactMap { Int32($0) }
                guard numbers.count == 2 else { throw UsageError(description: "bad --take-over '\(text)'") }
                return (numbers[0], numbers[1])
            }
            let mountpoint = connection == nil ? try Mountpoint(checking: given) : Mountpoint(mountedBy: given)
            if !foreground && !debug {
                Glibc.exit(try Background.start())
            }
            let configuration = Configuration(
                mountpoint: mountpoint,
                source: source,
                options: options,
                rawOptions: mountOptions,
                takeOver: connection,
                logsToStandardError: readiness == nil || logsToStandardError,
                goDescriptor: goDescriptor,
                executable: ProgramPath.current,
                readiness: readiness,
                debug: debug,
                threads: singleThreaded ? 1 : Daemon.defaultThreads)
            // The keeper holds the mount; its server, started with --take-over, serves it.
            if connection == nil { Glibc.exit(try await Keeper(configuration: configuration).run()) }
            Glibc.exit(try await Daemon(configuration: configuration).run())
        } catch {
            readiness?.failed("\(error)")
            // A server's failure is the keeper's to report, once.
            if takeOver != nil { Glibc.exit(1) }
            throw error
        }
    }

    /// `--upgrade`: asks the daemon of the mount on `given` to upgrade, and says how it went.
    static func requestUpgrade(of given: FilePath) throws -> Int32 {
        let resolved = given.withPlatformString { realpath($0, nil) }.map { path in
            defer { free(path) }
            return FilePath(platformString: path)
        } ?? given
        let answer = try UpgradeControl.requestUpgrade(of: resolved, timeout: .seconds(30))
        guard answer.hasPrefix("error: ") else {
            LogDescriptor(STDOUT_FILENO).write(line: "schedfs: \(answer)")
            return 0
        }
        throw KeeperError.server(String(answer.dropFirst("error: ".count)))
    }

    /// The command-line argument that `parsed` was decoded from, as the bytes it was: a path
    /// need not be UTF-8, and decoding it into a `String` replaced what was not.
    static func rawArgument(_ parsed: String) -> FilePath {
        for index in (1..<Int(CommandLine.argc)).reversed() {
            guard let raw = CommandLine.unsafeArgv[index] else { continue }
            let bytes = UnsafeRawBufferPointer(start: raw, count: strlen(raw))
            if String(decoding: bytes, as: UTF8.self) == parsed { return FilePath(platformString: raw) }
        }
        return FilePath(parsed)
    }

    /// Parses and runs; every error is one line on stderr, `schedfs: <what is wrong>`, and a
    /// non-zero exit: 64 (`EX_USAGE`) for a bad command line, bad `-o` options included, and 1
    /// for everything that fails at run time. `--help` and `--version` print
    /// as usual.
    static func main() async {
        // Before any thread exists, so that every thread inherits it: the shutdown signals
        // reach the daemon only through ShutdownSignals, never a thread that would ignore them.
        blockShutdownSignals()
        let command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "bad command line"
            LogDescriptor(STDERR_FILENO).write(line: "schedfs: \(message.lowercasedFirst)")
            Glibc.exit(code.rawValue)
        }
        do {
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                var command = command
                try command.run()
            }
        } catch {
            // parseAsRoot hands `--help` and `-h` over as a command whose run throws the request.
            if exitCode(for: error) == .success { exit(withError: error) }
            LogDescriptor(STDERR_FILENO).write(line: "schedfs: \(error)")
            Glibc.exit(error is CommandLineError ? ExitCode.validationFailure.rawValue : 1)
        }
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread, and so in every thread it creates
/// after this: one that comes while the daemon mounts waits, pending, for the service that
/// catches it.
private func blockShutdownSignals() {
    var set = sigset_t()
    sigemptyset(&set)
    for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, signal) }
    pthread_sigmask(SIG_BLOCK, &set, nil)
}

extension String {
    /// ArgumentParser starts its messages with a capital; ours follow `schedfs:` in lower case.
    fileprivate var lowercasedFirst: String {
        guard let first else { return self }
        return first.lowercased() + dropFirst()
    }
}

/// An error in what the command line says, as opposed to a failure at run time: the command
/// exits 64 (`EX_USAGE`).
protocol CommandLineError: Error {}

extension MountOptionError: CommandLineError {}

/// An option that libfuse refused, with what it said.
struct UsageError: CommandLineError, CustomStringConvertible {
    let description: String
}
