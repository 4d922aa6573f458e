import CLinux
import Glibc
import KernelSync
import Synchronization

/// The timer interrupt: calls a handler once per tick, `hz` times a second.
///
/// Ticks fall on absolute deadlines `start + k / hz` of the monotonic clock, kept by a kernel
/// `timerfd`, so they do not drift however late one handler runs. When the thread wakes late and
/// finds several deadlines passed, it calls the handler once for each: the number of calls
/// always equals the number of deadlines passed.
public final class TickSource: Sendable {
    /// Ticks per second.
    public let hz: Int
    /// The time between two ticks, in nanoseconds.
    private let periodNanoseconds: Int64
    private let onTick: @Sendable () -> Void
    private let timer: Int32
    private let stopping = Atomic<Bool>(false)
    private let thread = Mutex<KernelThread?>(nil)
    /// The first deadline, in monotonic nanoseconds; 0 until started.
    private let firstDeadline = Atomic<Int64>(0)
    private let measured = Mutex(TickStatistics())

    /// The accepted tick rates, as the kernel's `CONFIG_HZ` would never exceed.
    public static let hzRange = 1...10_000

    /// Prepares a tick source; nothing ticks until ``start()``.
    ///
    /// - Throws: ``TickSourceError`` if `hz` is out of ``hzRange`` or the system has no timer to give.
    public init(hz: Int, onTick: @escaping @Sendable () -> Void) throws(TickSourceError) {
        guard Self.hzRange.contains(hz) else { throw .badRate(hz) }
        let timer = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC))
        guard timer >= 0 else { throw .system("timerfd_create", errno) }
        self.hz = hz
        self.periodNanoseconds = Int64(1_000_000_000 / hz)
        self.onTick = onTick
        self.timer = timer
    }

    deinit {
        close(timer)
    }

    /// The time between two ticks.
    public var period: Duration { .nanoseconds(periodNanoseconds) }

    /// Arms the timer and starts the tick thread; the first tick is one period from now.
    public func start() throws {
        var first = timespec()
        clock_gettime(CLOCK_MONOTONIC, &first)
        first.tv_nsec += Int(periodNanoseconds)
        first.tv_sec += first.tv_nsec / 1_000_000_000
        first.tv_nsec %= 1_000_000_000
        firstDeadline.store(Int64(first.tv_sec) * 1_000_000_000 + Int64(first.tv_nsec), ordering: .releasing)
        var spec = itimerspec(
            it_interval: timespec(tv_sec: Int(periodNanoseconds / 1_000_000_000), tv_nsec: Int(periodNanoseconds % 1_000_000_000)),
            it_value: first)
        guard timerfd_settime(timer, Int32(TFD_TIMER_ABSTIME), &spec, nil) == 0 else {
            throw TickSourceError.system("timerfd_settime", errno)
        }
        let started = try KernelThread(name: "schedfs-tick") { [self] in tickLoop() }
        thread.withLock { $0 = started }
    }

    /// What the tick source has measured so far, with the deadlines passed by now.
    public var statistics: TickStatistics {
        var statistics = measured.withLock { $0 }
        let first = firstDeadline.load(ordering: .acquiring)
        let now = Self.monotonicNanoseconds()
        statistics.due = first == 0 || now < first ? 0 : UInt64((now - first) / periodNanoseconds) + 1
        return statistics
    }

    private static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// Stops the ticks and waits at most `timeout` for the tick thread to end.
    ///
    /// - Returns: `false` if the tick thread was still running when the time was up.
    public func stop(timeout: Duration) -> Bool {
        stopping.store(true, ordering: .releasing)
        // Fire the timer at once, so the tick thread wakes now and sees `stopping`.
        var now = itimerspec(it_interval: timespec(), it_value: timespec(tv_sec: 0, tv_nsec: 1))
        timerfd_settime(timer, 0, &now, nil)
        guard let running = thread.withLock({ $0 }) else { return true }
        guard running.join(timeout: timeout) else { return false }
        // The thread's body holds the tick source; forgetting the finished thread lets it go.
        thread.withLock { $0 = nil }
        return true
    }

    /// Measures a wake-up that found `expirations` deadlines passed.
    private func record(_ expirations: UInt64) {
        let now = Self.monotonicNanoseconds()
        measured.withLock { statistics in
            statistics.ticks += expirations
            if expirations > 1 { statistics.lateWakeUps += 1 }
            let latest = firstDeadline.load(ordering: .acquiring) + Int64(statistics.ticks - 1) * periodNanoseconds
            statistics.lateness.record(nanoseconds: now - latest)
        }
    }

    /// One blocking `read` of the timer a tick: the cheapest wake-up there is. The read is
    /// bounded by the timer, which expires once a period, and by ``stop(timeout:)``, which
    /// makes it expire at once.
    private func tickLoop() {
        while true {
            var expirations: UInt64 = 0
            let count = read(timer, &expirations, MemoryLayout<UInt64>.size)
            if stopping.load(ordering: .acquiring) { return }
            guard count == MemoryLayout<UInt64>.size else {
                if count < 0, errno == EINTR { continue }
                return
            }
            record(expirations)
            for _ in 0..<expirations { onTick() }
        }
    }
}

/// A tick source could not be made or started.
public enum TickSourceError: Error, CustomStringConvertible {
    /// The rate is outside ``TickSource/hzRange``.
    case badRate(Int)
    /// A system call failed, with its errno.
    case system(String, Int32)

    public var description: String {
        switch self {
        case .badRate(let hz):
            "tick rate \(hz) is out of range \(TickSource.hzRange.lowerBound)...\(TickSource.hzRange.upperBound)"
        case .system(let call, let error):
            "\(call): \(String(cString: strerror(error)))"
        }
    }
}
