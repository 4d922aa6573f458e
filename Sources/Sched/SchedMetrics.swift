import KernelSync
import ProcFS
import ProcFSMetrics
import TaskQueue

/// schedfs's own figures in `metrics/`: the ticks, the missed ticks, each tick's lateness, the
/// queue's length and the rate.
///
/// The timer queue counts each of them anyway (``TickSource/statistics``), so they are read
/// from it when a file of `metrics/` is made, and at no other time. A tick's only work for them
/// is to count its lateness in the histogram's bucket, under the lock it takes anyway.
public enum SchedMetrics {
    /// The upper bounds of the lateness histogram's buckets, in seconds: from 10 µs to 1 s.
    public static let latenessBuckets: [Double] = [
        0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1,
    ]

    /// The same bounds, for the timer queue to count lateness in
    /// (``TimerQueue/init(hz:latenessBounds:observer:)``).
    public static let latenessBounds: [Duration] = latenessBuckets.map { .nanoseconds(Int64(($0 * 1e9).rounded())) }

    /// Shows the figures of `timer`, made with ``latenessBounds``, in `metrics`.
    ///
    /// The counts are this process's: a server that takes the mount over starts them again
    /// from 0, which Prometheus reads as a counter reset.
    ///
    /// - Throws: `ProcTreeError` when `metrics` has one of these names already.
    public static func add(_ timer: TimerQueue, to metrics: ProcFSMetrics) throws(ProcTreeError) {
        let ticks = timer.ticks
        try metrics.addCounter(
            label: "schedfs_timer_ticks", help: "Ticks of the timer queue, each running the tasks queued on it."
        ) { ticks.measured(\.delivered) }
        try metrics.addCounter(
            label: "schedfs_timer_missed_ticks",
            help: "Ticks run in a burst behind an earlier one, their deadline having passed while it waited to run."
        ) { ticks.measured(\.missedTicks) }
        try metrics.addHistogram(
            label: "schedfs_timer_lateness_seconds", help: "How long after its deadline each tick ran, in seconds.",
            bounds: latenessBuckets
        ) {
            let lateness = ticks.measured(\.latenessBuckets)
            return HistogramFigures(counts: lateness.counts, sum: Double(lateness.sum) / 1e9)
        }
        // Counted with a run in progress, so that the routine is on the queue at every instant.
        try metrics.addGauge(
            label: "schedfs_timer_queue_length", help: "Tasks on the timer queue."
        ) { [tasks = timer.tasks] in Double(tasks.queuedTasks.count) }
        try metrics.addGauge(
            label: "schedfs_timer_hz", help: "Ticks a second the timer is set to (timer/hz)."
        ) { Double(ticks.hz) }
    }
}
