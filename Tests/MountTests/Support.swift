import CTestSupport
import Dispatch
import Glibc
import Synchronization
import Testing

/// A failed system call in a test, with its errno.
struct SystemError: Error, Equatable, CustomStringConvertible {
    let errno: Int32
    var description: String { "\(String(cString: strerror(errno))) (errno \(errno))" }
}

/// The `schedfs` binary under test: `$SCHEDFS_BIN`, or the one built beside the test bundle.
func schedfsBinary() throws -> String {
    try builtBinary("schedfs")
}

/// A binary of this package: beside `$SCHEDFS_BIN` when that is set (the sanitizer builds), or
/// else beside the test bundle.
func builtBinary(_ name: String) throws -> String {
    let anchor = getenv("SCHEDFS_BIN").map { String(cString: $0) } ?? CommandLine.arguments[0]
    let directory = anchor.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
    let path = "\(directory)/\(name)"
    guard access(path, X_OK) == 0 else {
        Issue.record("no \(name) binary at \(path); build it first (make test does) or set SCHEDFS_BIN")
        throw SystemError(errno: ENOENT)
    }
    return path
}

/// Fails the test, saying so, when this machine cannot mount FUSE file systems.
func requireFuse() throws {
    guard access("/dev/fuse", R_OK | W_OK) == 0 else {
        Issue.record("/dev/fuse is missing or not usable here (\(SystemError(errno: errno))): FUSE mount tests need it; run them as root on a machine with the fuse module")
        throw SystemError(errno: errno)
    }
}

/// A child process started with `posix_spawn`, waited for within bounds.
final class ChildProcess: Sendable {
    let pid: pid_t
    private let status = Mutex<Int32?>(nil)

    /// The search path children get, so that `fusermount3` and `umount` are found.
    static let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"]

    /// Starts `path` with `arguments`; stdin comes from the given file, stdout and stderr go to
    /// the given files (each /dev/null when not given).
    init(_ path: String, _ arguments: [String], stdin: String? = nil, stdout: String? = nil, stderr: String? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = Self.environment.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid = pid_t()
        let result = posix_spawn(&pid, path, &actions, nil, argv, envp)
        guard result == 0 else { throw SystemError(errno: result) }
        self.pid = pid
    }

    /// Waits at most `timeout` for the child to exit.
    ///
    /// - Returns: its exit status (128 + N when killed by signal N), or `nil` if it still runs.
    func wait(timeout: Duration) -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let known = status.withLock({ $0 }) { return known }
            var raw: Int32 = 0
            let reaped = waitpid(pid, &raw, WNOHANG)
            if reaped == pid {
                let decoded = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
                status.withLock { $0 = decoded }
                return decoded
            }
            if reaped < 0 { return status.withLock { $0 } ?? -1 }
            if ContinuousClock.now >= deadline { return nil }
            usleep(1000)
        }
    }

    /// Sends `signal` to the child, unless it has already been reaped.
    func send(_ signal: Int32) {
        if status.withLock({ $0 }) == nil { kill(pid, signal) }
    }
}

/// Runs a command to completion within `timeout`, its stdin from the file `stdin` (or
/// /dev/null), and returns its status and output.
func runCommand(_ path: String, _ arguments: [String], stdin: String? = nil, timeout: Duration = .seconds(10)) throws
    -> (status: Int32, stdout: String, stderr: String)
{
    let scratch = try TemporaryDirectory()
    defer { scratch.remove() }
    let child = try ChildProcess(path, arguments, stdin: stdin, stdout: scratch.path + "/out", stderr: scratch.path + "/err")
    guard let status = child.wait(timeout: timeout) else {
        child.send(SIGKILL)
        _ = child.wait(timeout: .seconds(5))
        Issue.record("\(path) \(arguments.joined(separator: " ")) did not finish within \(timeout)")
        throw SystemError(errno: ETIMEDOUT)
    }
    return (status, readWhole(scratch.path + "/out") ?? "", readWhole(scratch.path + "/err") ?? "")
}

/// A fresh directory under /tmp, removed with everything in it by ``remove()``.
struct TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/schedfs-test.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SystemError(errno: errno) }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Removes the directory; `--one-file-system` keeps it out of a mount left inside.
    func remove() {
        let rm = try? ChildProcess("/bin/rm", ["-rf", "--one-file-system", path])
        if let rm, rm.wait(timeout: .seconds(10)) == nil { rm.send(SIGKILL) }
    }
}

/// Reads a whole file with open/read/close, as any reader of /proc would.
func readText(_ path: String, chunk: Int = 4096) throws(SystemError) -> String {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { throw SystemError(errno: errno) }
    defer { close(descriptor) }
    return String(decoding: try readToEnd(descriptor, chunk: chunk), as: UTF8.self)
}

/// Reads `descriptor` from where it stands to the end of the file, `chunk` bytes at a time.
func readToEnd(_ descriptor: Int32, chunk: Int = 4096) throws(SystemError) -> [UInt8] {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: chunk)
    while true {
        let count = read(descriptor, &buffer, chunk)
        if count < 0 { throw SystemError(errno: errno) }
        if count == 0 { return bytes }
        bytes += buffer[0..<count]
    }
}

/// Reads a small file with one `read` on a fresh open. Tests that check whole lines in both
/// read modes read this way: in page-cache mode `cat`'s second `read`, at the end of the text,
/// goes on in the new text if it has grown meanwhile (see the README's table of modes).
func readOnce(_ path: String) throws(SystemError) -> String {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { throw SystemError(errno: errno) }
    defer { close(descriptor) }
    var buffer = [UInt8](repeating: 0, count: 65_536)
    let count = read(descriptor, &buffer, buffer.count)
    guard count >= 0 else { throw SystemError(errno: errno) }
    return String(decoding: buffer[0..<count], as: UTF8.self)
}

/// A file opened and read in part, to be read on to its end later: a reader stopped between
/// two reads of a text.
final class HeldRead {
    private let descriptor: Int32
    private var bytes: [UInt8]

    /// Opens `path` and reads exactly `count` bytes.
    init(_ path: String, first count: Int) throws(SystemError) {
        descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw SystemError(errno: errno) }
        var buffer = [UInt8](repeating: 0, count: count)
        let got = read(descriptor, &buffer, count)
        guard got == count else {
            let error = got < 0 ? errno : EIO
            close(descriptor)
            throw SystemError(errno: error)
        }
        bytes = buffer
    }

    deinit { close(descriptor) }

    /// Reads on to the end of the file, and returns all the reads got.
    func rest() throws(SystemError) -> String {
        bytes += try readToEnd(descriptor)
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Reads a whole file, or `nil` if it cannot be opened.
func readWhole(_ path: String) -> String? {
    try? readText(path)
}

/// The count in a `sched` text, or `nil` if the text is not exactly one line of the format.
func parseSched(_ text: String) -> UInt64? {
    let prefix = "Timer was called ", suffix = " times so far\n"
    guard text.hasPrefix(prefix), text.hasSuffix(suffix), text.count > prefix.count + suffix.count else { return nil }
    let digits = text.dropFirst(prefix.count).dropLast(suffix.count)
    guard digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
    return UInt64(digits)
}

/// The seconds up in an `uptime` text (the mount's or `/proc/uptime`): its first field.
func parseUptime(_ text: String) -> Double? {
    text.split(separator: " ").first.flatMap { Double($0) }
}

/// Whether a schedfs file system is mounted at `path`, from /proc/self/mountinfo.
func isSchedfsMounted(_ path: String) -> Bool {
    isMounted(path) { $0 == "fuse.schedfs" }
}

/// Whether a FUSE file system of any type is mounted at `path`.
func isMounted(_ path: String) -> Bool {
    isMounted(path) { $0 == "fuse" || $0.hasPrefix("fuse.") }
}

/// Whether a file system whose type `matches` is mounted at `path`, from /proc/self/mountinfo.
private func isMounted(_ path: String, type matches: (Substring) -> Bool) -> Bool {
    (readWhole("/proc/self/mountinfo") ?? "").split(separator: "\n").contains { line in
        let fields = line.split(separator: " ")
        guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return false }
        return fields[4] == path && matches(fields[dash + 1])
    }
}

/// PIDs of live (not zombie) processes whose command line mentions `needle` and schedfs:
/// the daemon, and the fusermount3 that watches it for `auto_unmount`. With `named`, only
/// processes of that command name.
func livePIDs(mentioning needle: String, named: String? = nil) -> [pid_t] {
    guard let directory = opendir("/proc") else { return [] }
    defer { closedir(directory) }
    var found: [pid_t] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        guard let pid = pid_t(name), pid != getpid() else { continue }
        let commandLine = (readWhole("/proc/\(pid)/cmdline") ?? "").replacingNULs
        guard commandLine.contains(needle), commandLine.contains("schedfs") else { continue }
        if let named, (readWhole("/proc/\(pid)/comm") ?? "") != named + "\n" { continue }
        let stat = readWhole("/proc/\(pid)/stat") ?? ""
        if let close = stat.lastIndex(of: ")"), stat[stat.index(close, offsetBy: 2)] == "Z" { continue }
        found.append(pid)
    }
    return found
}

extension String {
    fileprivate var replacingNULs: String { String(map { $0 == "\0" ? " " : $0 }) }
}

/// Waits at most `timeout` for `condition`, testing it every `interval` (a millisecond unless
/// given).
func eventually(timeout: Duration, every interval: Duration = .milliseconds(1), _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= deadline { return false }
        usleep(UInt32(interval.dispatchSeconds * 1e6))
    }
    return true
}

/// A schedfs daemon in the foreground (`-f`), mounted on a fresh temporary directory.
///
/// ``cleanUp()`` (call it in a `defer`) always leaves nothing behind: it unmounts, waits for
/// the daemon, and if the daemon hangs, kills it by its PID and detaches the mount. A watchdog
/// does the same if the test itself hangs past ``watchdogTimeout``: killing the daemon makes any
/// system call stuck on the mount return `ENOTCONN`, so the test can end.
final class MountedSchedfs: Sendable {
    static let watchdogTimeout: Duration = .seconds(60)

    let root: TemporaryDirectory
    let mountpoint: String
    let logPath: String
    let daemon: ChildProcess
    private let cleaned = Atomic<Bool>(false)

    /// Mounts with `options`, running `binary` (the one built, unless given).
    init(options: [String] = [], binary given: String? = nil) throws {
        try requireFuse()
        let binary = try given ?? schedfsBinary()
        root = try TemporaryDirectory()
        mountpoint = root.path + "/mnt"
        logPath = root.path + "/schedfs.log"
        mkdir(mountpoint, 0o755)
        daemon = try ChildProcess(binary, [mountpoint, "-f"] + options, stderr: logPath)
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.watchdogTimeout.dispatchSeconds) { [self] in
            guard !cleaned.load(ordering: .acquiring) else { return }
            daemon.send(SIGKILL)
            _ = try? runCommand("/usr/bin/fusermount3", ["-u", "-z", mountpoint])
        }
        guard eventually(timeout: .seconds(10), { isSchedfsMounted(mountpoint) || daemon.wait(timeout: .zero) != nil }),
            isSchedfsMounted(mountpoint)
        else {
            Issue.record("schedfs did not mount on \(mountpoint); its log:\n\(log)")
            cleanUp()
            throw SystemError(errno: EIO)
        }
        // Mounted is not yet ready: wait until the daemon has checked its mount and said so
        // ("mounted on ..."), which it does once the kernel answered.
        guard eventually(timeout: .seconds(10), { log.contains("mounted on") }) else {
            Issue.record("schedfs did not say it was ready on \(mountpoint); its log:\n\(log)")
            cleanUp()
            throw SystemError(errno: ETIMEDOUT)
        }
    }

    /// The path of `name` inside the mount.
    func path(_ name: String) -> String { mountpoint + "/" + name }

    /// What the daemon has logged so far.
    var log: String { readWhole(logPath) ?? "" }

    /// The current count, read through the mount.
    func count() throws -> UInt64 {
        let text = try readOnce(path("sched"))
        guard let count = parseSched(text) else {
            Issue.record("sched read \(text.debugDescription)")
            throw SystemError(errno: EINVAL)
        }
        return count
    }

    /// Unmounts, waits for the daemon, and removes the directory; idempotent.
    func cleanUp() {
        guard !cleaned.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if daemon.wait(timeout: .zero) == nil {
            if isSchedfsMounted(mountpoint) { _ = try? runCommand("/usr/bin/fusermount3", ["-u", mountpoint]) }
            if daemon.wait(timeout: .seconds(5)) == nil {
                Issue.record("schedfs (pid \(daemon.pid)) did not exit after unmount; killing it")
                daemon.send(SIGKILL)
                _ = daemon.wait(timeout: .seconds(5))
            }
        }
        if isSchedfsMounted(mountpoint) { _ = try? runCommand("/usr/bin/fusermount3", ["-u", "-z", mountpoint]) }
        root.remove()
    }
}

extension Duration {
    var dispatchSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// The positions of `steps` in `log`, which must all be there, in order.
func expectStepsInOrder(_ log: String, _ steps: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    var rest = Substring(log)
    for step in steps {
        guard let found = rest.firstRange(of: step) else {
            Issue.record("log lacks '\(step)' after the steps before it; log:\n\(log)", sourceLocation: sourceLocation)
            return
        }
        rest = rest[found.upperBound...]
    }
}

/// The errno of a failed call that returns -1, or 0 when it succeeded.
func failure(_ result: Int32) -> Int32 { result < 0 ? errno : 0 }

/// This package's root directory, where the Makefile and README are.
let packageRoot: String = {
    let parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    return parts.dropLast(3).joined(separator: "/")
}()

/// Runs `body` with `/dev/fuse` at `mode` (0666 opens it to every user; it is 0600 on these
/// machines), and puts its mode back as it was afterwards, whatever `body` does. Only the
/// serialized `MountTests` suite calls this, so that two tests never save and restore the mode
/// across each other.
func withFuseDevice(mode: mode_t, _ body: () throws -> Void) throws {
    var device = stat()
    try #require(stat("/dev/fuse", &device) == 0, "cannot stat /dev/fuse: \(SystemError(errno: errno))")
    try #require(chmod("/dev/fuse", mode) == 0, "cannot chmod /dev/fuse: \(SystemError(errno: errno))")
    defer { chmod("/dev/fuse", device.st_mode & 0o7777) }
    try body()
}

/// A system user made for one test by `useradd` and removed by ``remove()`` (call it in a
/// `defer`): an ordinary user with no home and no groups.
struct TemporaryUser {
    let name: String

    init() throws {
        name = "schedfs-t\(getpid() % 100_000)"
        let made = try runCommand("/usr/sbin/useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
        try #require(made.status == 0, "useradd \(name): \(made.stderr)")
    }

    /// `setpriv`'s arguments that run a command as this user.
    var setprivArguments: [String] { ["--reuid=\(name)", "--regid=\(name)", "--clear-groups"] }

    /// Runs `path` with `arguments` as this user.
    func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runCommand("/usr/bin/setpriv", setprivArguments + [path] + arguments)
    }

    /// Ends what still runs as the user, each by its PID (all of it was started by the test that
    /// made the user; userdel refuses a user with processes), then removes the user.
    func remove() {
        if let uid = getpwnam(name)?.pointee.pw_uid {
            let running = { pids(ofUser: uid) }
            running().forEach { kill($0, SIGKILL) }
            if !eventually(timeout: .seconds(5), { running().isEmpty }) {
                Issue.record("processes of the test's user \(name) outlived SIGKILL: \(running())")
            }
        }
        let removed = try? runCommand("/usr/sbin/userdel", [name])
        if removed?.status != 0 { Issue.record("could not remove the test's user \(name): \(removed?.stderr ?? "")") }
    }
}

/// The daemon's processes: the keeper `pid`, which holds the mount, and the server it started,
/// which serves it; sorted, as ``livePIDs(mentioning:named:)`` lists them.
func daemonPIDs(keeper pid: pid_t) -> [pid_t] {
    guard let directory = opendir("/proc") else { return [pid] }
    defer { closedir(directory) }
    var found = [pid]
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        guard let child = pid_t(name), let stat = readWhole("/proc/\(child)/stat") else { continue }
        // After the command's name, in parentheses: the state, then the parent's PID.
        let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
        // (fusermount3, the keeper's other child, watches for the end of the connection.)
        let command = stat.split(separator: "(").dropFirst().first?.split(separator: ")").first
        if fields.count > 1, fields[0] != "Z", pid_t(fields[1]) == pid, command == "schedfs" { found.append(child) }
    }
    return found.sorted()
}

/// PIDs of the live processes whose real user is `uid`.
func pids(ofUser uid: uid_t) -> [pid_t] {
    guard let directory = opendir("/proc") else { return [] }
    defer { closedir(directory) }
    var found: [pid_t] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        guard let pid = pid_t(name) else { continue }
        let status = readWhole("/proc/\(pid)/status") ?? ""
        let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }
        let zombie = status.split(separator: "\n").contains { $0.hasPrefix("State:") && $0.contains("Z") }
        if !zombie, uidLine?.split(separator: "\t").dropFirst().first == Substring("\(uid)") { found.append(pid) }
    }
    return found
}

/// The node id and generation in the file handle the kernel gives for a path on a FUSE mount
/// (`fuse_encode_fh` in the kernel's fs/fuse/inode.c: the node id as two 32-bit words, high
/// first, then the generation); `nil` if there is none.
func fuseFileHandle(_ path: String) -> (node: UInt64, generation: UInt32)? {
    var bytes = [UInt8](repeating: 0, count: 128)
    var type: Int32 = 0
    let count = ctestsupport_file_handle(path, &bytes, UInt32(bytes.count), &type)
    guard count >= 12 else { return nil }
    let words = stride(from: 0, to: 12, by: 4).map { offset in
        bytes[offset..<offset + 4].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
    return (UInt64(words[0]) << 32 | UInt64(words[1]), words[2])
}

/// `fusermount3 -u mountpoint`, tried again for up to `timeout` while the kernel answers
/// `EBUSY`: a process may hold something in a mount for a moment, as on any file system. Who
/// held it is recorded, so that a mount that stays busy says why.
func unmountWhenFree(_ mountpoint: String, timeout: Duration = .seconds(3)) throws -> (status: Int32, stderr: String) {
    let deadline = ContinuousClock.now + timeout
    while true {
        let result = try runCommand("/usr/bin/fusermount3", ["-u", mountpoint])
        guard result.status != 0, result.stderr.contains("busy") else { return (result.status, result.stderr) }
        let holders = processesUsing(mountpoint)
        guard ContinuousClock.now < deadline else {
            return (result.status, result.stderr + " (held by: \(holders))")
        }
        usleep(50_000)
    }
}

/// The processes (pid and command) whose working directory or open files are in `path`.
func processesUsing(_ path: String) -> [String] {
    guard let directory = opendir("/proc") else { return [] }
    defer { closedir(directory) }
    var found: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        guard pid_t(name) != nil else { continue }
        var links = ["/proc/\(name)/cwd"]
        if let fds = opendir("/proc/\(name)/fd") {
            while let fd = readdir(fds) {
                let number = withUnsafeBytes(of: fd.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if Int(number) != nil { links.append("/proc/\(name)/fd/\(number)") }
            }
            closedir(fds)
        }
        let uses = links.contains { link in
            var target = [CChar](repeating: 0, count: Int(PATH_MAX))
            let length = readlink(link, &target, target.count - 1)
            guard length > 0 else { return false }
            let resolved = String(decoding: target[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return resolved == path || resolved.hasPrefix(path + "/")
        }
        if uses { found.append("\(name) \((readWhole("/proc/\(name)/comm") ?? "").dropLast())") }
    }
    return found
}
