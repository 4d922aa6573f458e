import Dispatch
import Synchronization

/// A kernel-style wait queue: `wait_event_timeout(wq, condition)` and `wake_up(wq)`.
///
/// A sleeper puts itself on the queue *before* it tests its condition, and a waker makes the
/// condition true *before* it calls ``wakeUp()``. So either the sleeper sees the condition, or
/// the wake-up finds the sleeper on the queue: no wake-up is lost between the test and the sleep,
/// which was the flaw of the kernel's old `sleep_on`.
///
/// Every wait is bounded by a timeout.
public final class WaitQueue: Sendable {
    /// One semaphore per sleeper; a signal delivered before the sleeper blocks is kept, not lost.
    private let sleepers = Mutex<[DispatchSemaphore]>([])

    public init() {}

    /// Sleeps until `condition` returns true or `timeout` has passed.
    ///
    /// - Returns: whether `condition` held when the wait ended.
    public func wait(timeout: Duration, until condition: () -> Bool) -> Bool {
        if condition() { return true }
        let deadline = DispatchTime.now() + timeout.dispatchInterval
        let sleeper = DispatchSemaphore(value: 0)
        sleepers.withLock { $0.append(sleeper) }
        defer { sleepers.withLock { $0.removeAll { $0 === sleeper } } }
        while !condition() {
            if sleeper.wait(timeout: deadline) == .timedOut {
                return condition()
            }
        }
        return true
    }

    /// Wakes every sleeper, which then tests its condition again.
    public func wakeUp() {
        sleepers.withLock { list in
            for sleeper in list { sleeper.signal() }
        }
    }
}

extension Duration {
    /// This duration as a Dispatch interval, in whole nanoseconds.
    package var dispatchInterval: DispatchTimeInterval {
        .nanoseconds(Int(clamping: nanoseconds))
    }

    /// This duration in whole nanoseconds, saturating at the bounds of `Int64`.
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }

    /// This duration in milliseconds, for logs.
    package var milliseconds: Double {
        Double(nanoseconds) / 1_000_000
    }

    /// This duration for a log line, to a hundredth of a millisecond: `0.12 ms`.
    package var loggedMilliseconds: String {
        "\((milliseconds * 100).rounded() / 100) ms"
    }
}
