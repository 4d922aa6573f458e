import CLinux
import Glibc
import SystemPackage

/// Tells, for the keeper of a mount, a server that has stopped reading requests (stopped by a
/// signal, deadlocked, every request thread stuck in a callback) from one that is only busy:
/// requests wait on the connection, and the count of requests its servers have read has not
/// moved, for longer than a bound. The keeper then replaces that server, and the kernel sends
/// the next one what the stuck one held (`FUSE_NOTIFY_RESEND`).
///
/// A server stopped by a signal or a debugger may hold every request in flight, read and not
/// answered, with none left waiting: once the watch has started, a server whose process is
/// stopped counts as stuck though no request waits.
///
/// It costs an idle mount nothing: ``descriptor`` becomes readable only when a request waits
/// (a one-shot `epoll` on the connection), and only then does it look at the connection again,
/// ten times per ``timeout``, until it finds none waiting. Each server pays one shared atomic
/// addition per request.
package final class StallWatch {
    /// How long requests may wait with none read before the server counts as stuck.
    package let timeout: Duration
    /// Readable once a request waits on the connection; then call ``noticed(now:)``.
    package let descriptor: Int32
    private let connection: FileDescriptor
    private let requestsRead: CarriedValue
    /// While requests wait: since when none has been read, the count of requests read then,
    /// and when to look again.
    private var waiting: (since: ContinuousClock.Instant, read: UInt64, next: ContinuousClock.Instant)?
    /// The count when the server now serving started.
    private var atStart: UInt64 = 0
    /// The process of the server now serving.
    private var server: pid_t?

    /// Watches `connection`, the mount's, whose servers count the requests they read in
    /// `carried`.
    ///
    /// - Returns: `nil` if `carried` has no room for the count, or `epoll` fails.
    package init?(connection: FileDescriptor, carried: CarriedState, timeout: Duration) {
        guard let requestsRead = carried.value(named: CarriedState.requestsReadName) else { return nil }
        let descriptor = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard descriptor >= 0 else { return nil }
        self.connection = connection
        self.requestsRead = requestsRead
        self.timeout = timeout
        self.descriptor = descriptor
        guard arm(EPOLL_CTL_ADD) else {
            close(descriptor)
            return nil
        }
    }

    deinit {
        close(descriptor)
    }

    /// When to call ``check(now:)``; `nil` while no request has been seen waiting.
    package var deadline: ContinuousClock.Instant? { waiting?.next }

    /// How many requests the server now serving has read.
    package var readByThisServer: UInt64 { requestsRead.load() &- atStart }

    /// The server `pid` serves from now on: the watch starts again at the next waiting request.
    package func serverStarted(pid: pid_t) {
        atStart = requestsRead.load()
        server = pid
        reset()
    }

    /// A request was seen waiting (``descriptor`` was readable): the watch starts.
    package func noticed(now: ContinuousClock.Instant = .now) {
        var event = epoll_event()
        _ = epoll_wait(descriptor, &event, 1, 0)
        waiting = (now, requestsRead.load(), now + timeout / 10)
    }

    /// How a server was found stuck.
    package enum Stuck: Equatable {
        /// Requests waited for the ``timeout`` with none read.
        case readNone
        /// Its process was stopped for the ``timeout`` (with none waiting, maybe: it may hold
        /// them all).
        case stopped
    }

    /// At the ``deadline``: whether requests have waited for ``timeout`` with none read, or
    /// the server's process was stopped all that time. If none waits now and the server runs,
    /// the watch starts again at the next waiting request.
    ///
    /// The wait counts only while it was looked at on time: after a gap (the keeper itself
    /// stopped with its server, as `Ctrl-Z` of `schedfs -f` does, or the machine suspended) it
    /// starts again. A server that has read no request at all is never taken for stuck: an
    /// older binary does not count what it reads.
    package func check(now: ContinuousClock.Instant = .now) -> Stuck? {
        var ready = pollfd(fd: connection.rawValue, events: Int16(POLLIN), revents: 0)
        let requestsWait = poll(&ready, 1, 0) == 1 && ready.revents & Int16(POLLIN) != 0
        guard var waiting, requestsWait || serverIsStopped else {
            reset()
            return nil
        }
        let read = requestsRead.load()
        let interval = timeout / 10
        if read != waiting.read || now - waiting.next > interval * 2 { (waiting.since, waiting.read) = (now, read) }
        waiting.next = now + interval
        self.waiting = waiting
        guard now - waiting.since >= timeout && read != atStart else { return nil }
        return requestsWait ? .readNone : .stopped
    }

    /// Whether the server's process is stopped: by a signal (state `T` in `/proc/PID/stat`)
    /// or in a debugger (`t`).
    private var serverIsStopped: Bool {
        guard let server else { return false }
        guard let line = readWholeFile("/proc/\(server)/stat") else { return false }
        // "PID (COMM) STATE ...": COMM may hold any byte, ')' too, so the last ')' ends it.
        guard let end = line.lastIndex(of: UInt8(ascii: ")")), end + 2 < line.count else { return false }
        return line[end + 2] == UInt8(ascii: "T") || line[end + 2] == UInt8(ascii: "t")
    }

    /// Starts again at the next waiting request: a new server serves now.
    package func reset() {
        waiting = nil
        _ = arm(EPOLL_CTL_MOD)
    }

    /// Asks `epoll` to report the next waiting request, once.
    private func arm(_ operation: Int32) -> Bool {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLONESHOT.rawValue
        return epoll_ctl(descriptor, operation, connection.rawValue, &event) == 0
    }
}
