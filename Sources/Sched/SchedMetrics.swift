import CoreMetrics
import KernelSync
import TaskQueue

/// schedfs's own figures, kept through swift-metrics, so that any metrics backend shows them
/// (schedfs's is `ProcFSMetrics`, which serves them in `metrics/`): each tick's lateness, the
/// ticks, the missed ticks, the queue's length and the rate.
public struct SchedMetrics: Sendable {
    /// The buckets of the lateness histogram, in seconds: from 10 µs to 1 s.
    public static let latenessBuckets: [Double] = [
        0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1,
    ]

    /// What each figure means, by its swift-metrics label: for a backend that can show it
    /// (`ProcFSMetrics` takes it as its `help`).
    public static let help: [String: String] = [
        "schedfs_timer_ticks": "Ticks of the timer queue, each running the tasks queued on it.",
        "schedfs_timer_missed_ticks": "Ticks run in a burst behind an earlier one, their deadline having passed while it waited to run.",
        "schedfs_timer_lateness": "How long after its deadline each tick ran, in seconds.",
        "schedfs_timer_queue_length": "Tasks on the timer queue after the last tick.",
        "schedfs_timer_hz": "Ticks a second the timer is set to (timer/hz).",
    ]

    private let ticks: Counter
    private let missedTicks: Counter
    private let lateness: Timer
    private let queueLength: Meter
    private let hz: Meter

    /// Makes the metrics in `factory`, the rate already set to `hz`, before the first tick.
    public init(factory: MetricsFactory, hz: Int) {
        ticks = Counter(label: "schedfs_timer_ticks", factory: factory)
        missedTicks = Counter(label: "schedfs_timer_missed_ticks", factory: factory)
        lateness = Timer(label: "schedfs_timer_lateness", factory: factory)
        queueLength = Meter(label: "schedfs_timer_queue_length", factory: factory)
        self.hz = Meter(label: "schedfs_timer_hz", factory: factory)
        self.hz.set(hz)
    }

    /// Counts one tick, after the tasks of the queue have run (a ``TimerQueue`` observer).
    public func observe(_ tick: TickSource.Tick, of tasks: TaskQueue) {
        ticks.increment()
        if tick.missed { missedTicks.increment() }
        lateness.recordNanoseconds(tick.lateness.nanoseconds)
        queueLength.set(tasks.count)
        hz.set(tick.hz)
    }
}
