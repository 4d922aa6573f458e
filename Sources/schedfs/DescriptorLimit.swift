import Glibc
import SystemPackage

/// The open-file limit a daemon needs, checked before it starts any work.
///
/// A running keeper holds 22 descriptors and its server 20, and during an upgrade the keeper
/// holds the new server's too. Below what they need, the step that runs out first depends on which thread
/// gets there first; when it is the Swift runtime's own event loop (libdispatch), the process
/// traps with nothing said. So the command refuses a limit that low up front, in one line.
enum DescriptorLimit {
    /// The fewest open files a keeper and its server need, with room for an upgrade.
    static let minimum: rlim_t = 64

    /// Throws when `RLIMIT_NOFILE` is below ``minimum``.
    static func check() throws(DescriptorLimitError) {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < minimum { throw DescriptorLimitError(limit: limit.rlim_cur) }
    }
}

/// The open-file limit is too low for the daemon.
struct DescriptorLimitError: Error, CustomStringConvertible {
    let limit: rlim_t

    var description: String {
        "the open-file limit (ulimit -n) is \(limit), and schedfs needs \(DescriptorLimit.minimum): \(Errno.tooManyOpenFiles)"
    }
}
