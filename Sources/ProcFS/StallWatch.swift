import Glibc
import SystemPackage

/// Tells, for the keeper of a mount, a server that has stopped reading requests (stopped by a
/// signal, deadlocked, every request thread stuck in a callback) from one that is only busy:
/// requests wait on the connection, and the count of requests its servers have read has not
/// moved, for longer than a bound. The keeper then replaces that server, and the kernel sends
/// the next one what the stuck one held (`FUSE_NOTIFY_RESEND`).
///
/// It costs the keeper a look at the connection each time ``check(now:)`` is called (a `poll`
/// that does not wait) and the server one shared atomic addition per request.
package struct StallWatch {
    /// How long requests may wait with none read before the server counts as stuck.
    package let timeout: Duration
    private let connection: FileDescriptor
    private let requestsRead: CarriedValue
    /// Since when requests have waited, and the count of requests read then.
    private var waiting: (since: ContinuousClock.Instant, read: UInt64)?

    /// Watches `connection`, the mount's, whose servers count the requests they read in
    /// `carried`.
    ///
    /// - Returns: `nil` if `carried` has no room for the count.
    package init?(connection: FileDescriptor, carried: CarriedState, timeout: Duration) {
        guard let requestsRead = carried.value(named: CarriedState.requestsReadName) else { return nil }
        self.connection = connection
        self.requestsRead = requestsRead
        self.timeout = timeout
    }

    /// How often to call ``check(now:)``: a server is found stuck at most this long after
    /// ``timeout``.
    package var interval: Duration { timeout / 10 }

    /// Looks at the connection now; whether requests have waited for ``timeout`` with none read.
    package mutating func check(now: ContinuousClock.Instant = .now) -> Bool {
        var ready = pollfd(fd: connection.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&ready, 1, 0) == 1, ready.revents & Int16(POLLIN) != 0 else {
            waiting = nil
            return false
        }
        let read = requestsRead.load()
        guard let waiting, waiting.read == read else {
            self.waiting = (now, read)
            return false
        }
        return now - waiting.since >= timeout
    }

    /// Forgets what it saw: a new server starts now.
    package mutating func reset() {
        waiting = nil
    }
}
