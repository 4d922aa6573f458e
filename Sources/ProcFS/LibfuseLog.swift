import CFuse3
import Glibc
import Logging
import Synchronization

/// Routes libfuse's own messages (`fuse_log`) into swift-log, or collects them while a call
/// that can fail runs, so that the failure can be reported as one line.
///
/// libfuse sometimes prints one line in several calls (its "unknown option(s)" message does),
/// so text is gathered until a newline ends the line.
enum LibfuseLog {
    private struct State {
        var logger = Logger(label: "libfuse")
        var collected: [String]?
        var partial = ""
    }

    private static let state = Mutex(State())

    /// Runs `body` and returns it with the lines libfuse said during it; afterwards libfuse's
    /// messages go to `logger`.
    static func collecting<Result>(restoring logger: Logger, _ body: () -> Result) -> (Result, [String]) {
        fuse_set_log_func { level, format, arguments in
            guard let arguments else { return }
            var buffer = [CChar](repeating: 0, count: 1024)
            vsnprintf(&buffer, buffer.count, format, arguments)
            LibfuseLog.append(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, level: level)
        }
        state.withLock { $0.collected = [] }
        let result = body()
        let said = state.withLock { state in
            defer {
                state.collected = nil
                state.logger = logger
            }
            return (state.collected ?? []) + (state.partial.isEmpty ? [] : [state.partial])
        }
        return (result, said)
    }

    private static func append(_ text: String, level: fuse_log_level) {
        state.withLock { state in
            state.partial += text
            while let newline = state.partial.firstIndex(of: "\n") {
                let line = String(state.partial[..<newline])
                state.partial = String(state.partial[state.partial.index(after: newline)...])
                if state.collected != nil {
                    state.collected!.append(line)
                } else {
                    state.logger.log(level: level.swiftLogLevel, "\(line)")
                }
            }
        }
    }
}

extension fuse_log_level {
    var swiftLogLevel: Logger.Level {
        switch self {
        case FUSE_LOG_EMERG, FUSE_LOG_ALERT, FUSE_LOG_CRIT: .critical
        case FUSE_LOG_ERR: .error
        case FUSE_LOG_WARNING: .warning
        case FUSE_LOG_NOTICE: .notice
        case FUSE_LOG_INFO: .info
        default: .debug
        }
    }
}
