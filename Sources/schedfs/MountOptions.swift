import ProcFS
import TaskQueue

/// The `-o` options: schedfs's own (`hz=N`, `log=PATH`, …) and the ones passed on to libfuse.
struct MountOptions: Equatable {
    /// Timer ticks per second.
    var hz = 100
    /// Where the daemon logs when it is in the background; `nil` means syslog.
    var logFile: String?
    /// How the kernel reads files: `direct_io` (the default) or `page_cache`.
    var readMode = ReadMode.directIO
    /// Have fusermount3 unmount if the daemon dies without unmounting (`auto_unmount`).
    var autoUnmount = true
    /// How long requests may wait while the server reads none before it is replaced; `nil`
    /// never (`hang_timeout=0`).
    var hangTimeout: Duration? = .seconds(1)
    /// Options for libfuse, each `key` or `key=value`, in the order given.
    var passedOn: [String] = []

    /// Parses the values of every `-o`, each a comma-separated list.
    ///
    /// - Throws: ``MountOptionError`` naming the first bad option.
    static func parse(_ values: [String]) throws(MountOptionError) -> MountOptions {
        var options = MountOptions()
        var seen: Set<String> = []
        for value in values {
            for option in value.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
                guard !option.isEmpty else { throw .empty(value) }
                let key = String(option.prefix { $0 != "=" })
                let argument = option.contains("=") ? String(option.drop { $0 != "=" }.dropFirst()) : nil
                switch key {
                case "hz":
                    guard seen.insert(key).inserted else { throw .repeated(key) }
                    options.hz = try parseHz(argument)
                case "log":
                    guard seen.insert(key).inserted else { throw .repeated(key) }
                    guard let argument, !argument.isEmpty else { throw .missingValue(key, "a file path") }
                    options.logFile = argument
                case "direct_io", "page_cache":
                    guard seen.insert(key).inserted else { throw .repeated(key) }
                    guard seen.isDisjoint(with: ["direct_io", "page_cache"].filter { $0 != key }) else {
                        throw .conflicting("direct_io", "page_cache")
                    }
                    guard argument == nil else { throw .unexpectedValue(key) }
                    options.readMode = key == "direct_io" ? .directIO : .pageCache
                case "hang_timeout":
                    guard seen.insert(key).inserted else { throw .repeated(key) }
                    let wanted = "0 (never), or a whole number of milliseconds from 100 to 3600000"
                    guard let argument, !argument.isEmpty else { throw .missingValue(key, wanted) }
                    guard let milliseconds = Int(argument), milliseconds == 0 || (100...3_600_000).contains(milliseconds) else {
                        throw .badValue(key, argument, wanted)
                    }
                    options.hangTimeout = milliseconds == 0 ? nil : .milliseconds(milliseconds)
                case "no_auto_unmount":
                    guard seen.insert(key).inserted else { throw .repeated(key) }
                    guard argument == nil else { throw .unexpectedValue(key) }
                    options.autoUnmount = false
                default:
                    options.passedOn.append(option)
                }
            }
        }
        return options
    }

    private static func parseHz(_ argument: String?) throws(MountOptionError) -> Int {
        let range = TickSource.hzRange
        let wanted = "a whole number from \(range.lowerBound) to \(range.upperBound)"
        guard let argument, !argument.isEmpty else { throw .missingValue("hz", wanted) }
        guard let hz = Int(argument), range.contains(hz) else { throw .badValue("hz", argument, wanted) }
        return hz
    }
}

/// A `-o` option that cannot be used.
enum MountOptionError: Error, Equatable, CustomStringConvertible {
    case empty(String)
    case repeated(String)
    case conflicting(String, String)
    case missingValue(String, String)
    case unexpectedValue(String)
    case badValue(String, String, String)

    var description: String {
        switch self {
        case .empty(let list): "empty mount option in '-o \(list)'"
        case .repeated(let key): "mount option '\(key)' is given more than once"
        case .conflicting(let one, let other): "mount options '\(one)' and '\(other)' exclude each other"
        case .missingValue(let key, let wanted): "mount option '\(key)' needs a value: \(wanted)"
        case .unexpectedValue(let key): "mount option '\(key)' takes no value"
        case .badValue(let key, let value, let wanted): "bad value '\(value)' for mount option '\(key)': expected \(wanted)"
        }
    }
}
