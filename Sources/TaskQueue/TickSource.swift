import CLinux
import Glibc
import KernelSync
import Synchronization
import SystemPackage

/// The timer interrupt: calls a handler once per tick, `hz` times a second.
///
/// Ticks fall on absolute deadlines `start + k / hz` of the monotonic clock, kept by a kernel
/// `timerfd`, so they do not drift however late one handler runs. When the thread wakes late and
/// finds several deadlines passed, it calls the handler once for each: the number of calls
/// always equals the number of deadlines passed.
///
/// The rate can change while it runs (``setRate(_:)``); the tick thread itself re-arms the
/// timer after the tick in progress, so a new rate's deadlines follow on from the last old one.
public final class TickSource: Sendable {
    /// The time between two ticks, in nanoseconds, at `hz` ticks a second.
    private static func period(hz: Int) -> Int64 { Int64(1_000_000_000 / hz) }

    /// The deadlines of the rate in force: `first + k * period`.
    private struct Schedule {
        var period: Int64
        /// The first deadline at this rate, in monotonic nanoseconds; 0 until started.
        var first: Int64 = 0
        /// Ticks delivered, and deadlines passed, before this rate took effect.
        var ticksBefore: UInt64 = 0
    }

    private let onTick: @Sendable (Tick) -> Void
    private let timer: Int32
    private let stopping = Atomic<Bool>(false)
    private let requestedHz: Atomic<Int>
    private let thread = Mutex<JoinableThread?>(nil)
    private let measured: Mutex<(schedule: Schedule, statistics: TickStatistics)>

    /// The accepted tick rates, as the kernel's `CONFIG_HZ` would never exceed.
    public static let hzRange = 1...10_000

    /// One tick, as the handler is told of it.
    public struct Tick: Sendable {
        /// How late the tick runs, from its own deadline.
        public let lateness: Duration
        /// Whether it runs in a burst after an earlier one, its deadline having passed while the
        /// thread still waited to run that one (a missed tick, run late).
        public let missed: Bool
        /// The rate it ticks at.
        public let hz: Int
        /// Where the deadlines stand once this tick is delivered: a tick source started there
        /// (``start(continuing:)``) delivers the next one.
        public let position: Position
    }

    /// Prepares a tick source; nothing ticks until ``start(continuing:)``.
    ///
    /// - Parameter latenessBounds: the upper bounds of the buckets that
    ///   ``TickStatistics/latenessBuckets`` counts each tick's lateness in (for a histogram such
    ///   as Prometheus shows); none when empty.
    /// - Throws: ``TickSourceError`` if `hz` is out of ``hzRange`` or the system has no timer to give.
    public init(
        hz: Int, latenessBounds: [Duration] = [], onTick: @escaping @Sendable (Tick) -> Void
    ) throws(TickSourceError) {
        guard Self.hzRange.contains(hz) else { throw .badRate(hz) }
        let timer = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC))
        guard timer >= 0 else { throw .system("timerfd_create", Errno(rawValue: errno)) }
        self.requestedHz = Atomic(hz)
        var statistics = TickStatistics()
        statistics.latenessBuckets = DurationBuckets(bounds: latenessBounds)
        self.measured = Mutex((Schedule(period: Self.period(hz: hz)), statistics))
        self.onTick = onTick
        self.timer = timer
    }

    /// Ticks per second: the rate last set, which is in force from the next tick on.
    public var hz: Int { requestedHz.load(ordering: .relaxed) }

    /// Changes the tick rate, from any thread. The tick thread takes it up when it next wakes,
    /// which is at most one tick of the old rate from now.
    ///
    /// - Throws: ``TickSourceError/badRate(_:)`` if `hz` is out of ``hzRange``.
    public func setRate(_ hz: Int) throws(TickSourceError) {
        guard Self.hzRange.contains(hz) else { throw .badRate(hz) }
        requestedHz.store(hz, ordering: .relaxed)
    }

    deinit {
        close(timer)
    }

    /// Where the deadlines stand: enough for another tick source, in this process or another
    /// (the monotonic clock is the system's), to go on with the same deadlines.
    public struct Position: Sendable, Equatable {
        /// The rate in force.
        public var hz: Int
        /// The first deadline at that rate, in monotonic nanoseconds.
        public var first: Int64
        /// Ticks delivered before that rate took effect.
        public var ticksBefore: UInt64
        /// Ticks delivered so far.
        public var ticks: UInt64

        public init(hz: Int, first: Int64, ticksBefore: UInt64, ticks: UInt64) {
            self.hz = hz
            self.first = first
            self.ticksBefore = ticksBefore
            self.ticks = ticks
        }
    }

    /// Where the deadlines stand now; `nil` before ``start(continuing:)``.
    public var position: Position? {
        measured.withLock { measured in
            guard measured.schedule.first != 0 else { return nil }
            return Position(
                hz: Int(1_000_000_000 / measured.schedule.period), first: measured.schedule.first,
                ticksBefore: measured.schedule.ticksBefore, ticks: measured.statistics.ticks)
        }
    }

    /// Arms the timer and starts the tick thread. With no `position` the first tick is one
    /// period from now; with one, the ticks go on where it stands, at its rate: every deadline
    /// it passed meanwhile is a tick, delivered at once, so the count of ticks keeps its pace.
    ///
    /// - Throws: ``TickSourceError/badRate(_:)`` if the position's rate is out of ``hzRange``.
    public func start(continuing position: Position? = nil) throws {
        let hz = position?.hz ?? requestedHz.load(ordering: .relaxed)
        guard Self.hzRange.contains(hz) else { throw TickSourceError.badRate(hz) }
        requestedHz.store(hz, ordering: .relaxed)
        let period = Self.period(hz: hz)
        if let position {
            measured.withLock { $0.statistics.ticks = position.ticks }
            try arm(
                first: position.first, period: period, ticksBefore: position.ticksBefore,
                next: position.first + Int64(position.ticks - position.ticksBefore) * period)
        } else {
            let first = Self.monotonicNanoseconds() + period
            try arm(first: first, period: period, ticksBefore: 0, next: first)
        }
        let started = try JoinableThread(name: "tick") { [self] in tickLoop(armedAt: hz) }
        thread.withLock { $0 = started }
    }

    /// Sets the timer to expire at `first` and every `period` after it, and makes that the
    /// schedule that statistics are measured against.
    private func arm(first: Int64, period: Int64) throws(TickSourceError) {
        try arm(first: first, period: period, ticksBefore: measured.withLock { $0.statistics.ticks }, next: first)
    }

    /// Sets the schedule `first + k * period`, of which `ticksBefore` ticks came before
    /// `first`, and the timer to expire next at `next`, one of its deadlines (a past one
    /// expires at once, with every deadline since counted).
    private func arm(first: Int64, period: Int64, ticksBefore: UInt64, next: Int64) throws(TickSourceError) {
        var spec = itimerspec(it_interval: Self.timeSpec(period), it_value: Self.timeSpec(next))
        measured.withLock { measured in
            measured.schedule = Schedule(period: period, first: first, ticksBefore: ticksBefore)
        }
        guard timerfd_settime(timer, Int32(TFD_TIMER_ABSTIME), &spec, nil) == 0 else {
            throw .system("timerfd_settime", Errno(rawValue: errno))
        }
    }

    private static func timeSpec(_ nanoseconds: Int64) -> timespec {
        timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }

    /// Reads some of what the tick source has measured, under its lock, without copying the
    /// rest: a reader that held a copy of the percentile histogram (8 KiB) would make the next
    /// tick copy it again. `read` must be quick; ``TickStatistics/due`` is not set.
    public func measured<Result>(_ read: (TickStatistics) -> Result) -> Result {
        measured.withLock { read($0.statistics) }
    }

    /// What the tick source has measured so far, with the deadlines passed by now.
    public var statistics: TickStatistics {
        let (schedule, measuredSoFar) = measured.withLock { ($0.schedule, $0.statistics) }
        var statistics = measuredSoFar
        let now = Self.monotonicNanoseconds()
        let passed = schedule.first == 0 || now < schedule.first ? 0 : UInt64((now - schedule.first) / schedule.period) + 1
        statistics.due = schedule.ticksBefore + passed
        return statistics
    }

    private static func monotonicNanoseconds() -> Int64 {
        clockNanoseconds(CLOCK_MONOTONIC)
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

    /// Measures a wake-up at `now` that found `expirations` deadlines passed: each of those
    /// ticks runs now, so each is as late as `now` is past its own deadline, and a stall shows
    /// in the lateness of every tick it held back.
    ///
    /// - Returns: the latest deadline passed.
    private func record(_ expirations: UInt64, at now: Int64) -> (latest: Int64, schedule: Schedule, ticks: UInt64) {
        measured.withLock { measured in
            measured.statistics.ticks += expirations
            measured.statistics.delivered += expirations
            if expirations > 1 {
                measured.statistics.lateWakeUps += 1
                measured.statistics.missedTicks += expirations - 1
            }
            let schedule = measured.schedule
            let latest = schedule.first + Int64(measured.statistics.ticks - schedule.ticksBefore - 1) * schedule.period
            for earlier in 0..<Int64(expirations) {
                let lateness = now - (latest - earlier * schedule.period)
                measured.statistics.lateness.record(nanoseconds: lateness)
                measured.statistics.latenessBuckets.record(nanoseconds: lateness)
            }
            return (latest, schedule, measured.statistics.ticks)
        }
    }

    /// Counts the time the handlers took after a wake-up at `woke`.
    private func recordBusy(since woke: Int64) {
        let busy = Self.monotonicNanoseconds() - woke
        measured.withLock { $0.statistics.busyNanoseconds += busy }
    }

    /// One blocking `read` of the timer a tick: the cheapest wake-up there is. The read is
    /// bounded by the timer, which expires once a period, and by ``stop(timeout:)``, which
    /// makes it expire at once. `hz` is the rate the timer was armed at.
    private func tickLoop(armedAt hz: Int) {
        var hz = hz
        while true {
            var expirations: UInt64 = 0
            let count = try? retryingOnInterrupt { read(timer, &expirations, MemoryLayout<UInt64>.size) }
            if stopping.load(ordering: .acquiring) { return }
            guard count == MemoryLayout<UInt64>.size else { return }
            let woke = Self.monotonicNanoseconds()
            let (latest, schedule, ticks) = record(expirations, at: woke)
            // Oldest first: the first is late by the whole burst, the last by the least.
            for index in 0..<Int64(expirations) {
                let later = Int64(expirations) - 1 - index
                let position = Position(
                    hz: hz, first: schedule.first, ticksBefore: schedule.ticksBefore, ticks: ticks - UInt64(later))
                onTick(Tick(lateness: .nanoseconds(woke - (latest - later * schedule.period)), missed: index > 0, hz: hz, position: position))
            }
            recordBusy(since: woke)
            let wanted = requestedHz.load(ordering: .relaxed)
            if wanted != hz {
                // The new rate's first deadline is one new period after the last old one.
                let period = Self.period(hz: wanted)
                do {
                    try arm(first: latest + period, period: period)
                    hz = wanted
                } catch {
                    return
                }
                // stop() may have fired the timer just before this re-arm overwrote it.
                if stopping.load(ordering: .acquiring) { return }
            }
        }
    }
}

/// A tick source could not be made or started.
public enum TickSourceError: Error, CustomStringConvertible {
    /// The rate is outside ``TickSource/hzRange``.
    case badRate(Int)
    /// A system call failed, with its errno.
    case system(String, Errno)

    public var description: String {
        switch self {
        case .badRate(let hz):
            "tick rate \(hz) is out of range \(TickSource.hzRange.lowerBound)...\(TickSource.hzRange.upperBound)"
        case .system(let call, let error):
            "\(call): \(error)"
        }
    }
}
