import Glibc
import Logging
import Synchronization
import SystemPackage

/// Where the daemon's log lines go: a file descriptor (stderr in the foreground, or a log file),
/// or syslog in the background when no file is given.
enum LogOutput: Sendable {
    case descriptor(LogDescriptor)
    case syslog

    /// A swift-log handler writing to this output at `level`.
    func handler(label: String, level: Logger.Level) -> any LogHandler {
        switch self {
        case .descriptor(let descriptor): LineLogHandler(descriptor: descriptor, logLevel: level)
        case .syslog: SyslogLogHandler(logLevel: level)
        }
    }
}

/// A file descriptor that log lines are written to whole, one `write` per line.
final class LogDescriptor: Sendable {
    private let descriptor: Mutex<Int32>

    init(_ descriptor: Int32) {
        self.descriptor = Mutex(descriptor)
    }

    /// Opens `path` for appending, creating it with mode 0644.
    ///
    /// - Throws: ``LogFileError`` when it cannot be opened.
    static func appending(to path: String) throws(LogFileError) -> LogDescriptor {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw LogFileError(path: path, errno: Errno(rawValue: errno)) }
        return LogDescriptor(descriptor)
    }

    func write(line: String) {
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        descriptor.withLock { descriptor in
            _ = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        }
    }
}

/// The log file could not be opened.
struct LogFileError: Error, CustomStringConvertible {
    let path: String
    let errno: Errno
    var description: String { "cannot open log file '\(path)': \(errno)" }
}

/// Writes `2026-11-24T23:59:01.123Z schedfs[1234] info: message` lines.
struct LineLogHandler: LogHandler {
    let descriptor: LogDescriptor
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(descriptor: LogDescriptor, logLevel: Logger.Level) {
        self.descriptor = descriptor
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        descriptor.write(line: "\(Self.timestamp()) schedfs[\(getpid())] \(event.level): \(event.message)")
    }

    /// The wall-clock time in UTC, to the millisecond.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        gmtime_r(&now.tv_sec, &parts)
        var text = [CChar](repeating: 0, count: 32)
        strftime(&text, text.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let millis = now.tv_nsec / 1_000_000
        let fraction = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } + ".\(fraction)Z"
    }
}

/// Sends log lines to syslog as `schedfs[PID]`, facility daemon.
struct SyslogLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(logLevel: Logger.Level) {
        self.logLevel = logLevel
        openlog("schedfs", LOG_PID, LOG_DAEMON)
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let priority: Int32 =
            switch event.level {
            case .trace, .debug: LOG_DEBUG
            case .info: LOG_INFO
            case .notice: LOG_NOTICE
            case .warning: LOG_WARNING
            case .error: LOG_ERR
            case .critical: LOG_CRIT
            }
        "\(event.message)".withCString { text in
            withVaList([text]) { vsyslog(priority, "%s", $0) }
        }
    }
}
