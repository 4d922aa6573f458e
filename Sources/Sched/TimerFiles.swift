import ProcFS
import TaskQueue
import SystemPackage

/// The timer's own files: `timer/hz` (a knob), `timer/ticks`, `timer/queue`, `timer/latency`,
/// `timer/tasks/<name>/{runs,queued_since}` for each queued task, and `uptime`. Each is made from live state on every open.
struct TimerFiles {
    /// The directory's name in the tree.
    static let directoryName = "timer"
    /// The file of seconds since mount, beside `sched`.
    static let uptimeName = "uptime"

    /// Registers the files in `tree`, timing the uptime from `start`.
    static func register(
        in tree: ProcTree, ticks: TickSource, timerQueue: TaskQueue, start: ContinuousClock.Instant
    ) throws(ProcTreeError) {
        let timer = try tree.makeDirectory(directoryName)
        let hzRange = Int32(TickSource.hzRange.lowerBound)...Int32(TickSource.hzRange.upperBound)
        try tree.registerIntegerKnob("hz", in: timer, range: hzRange, value: { Int32(ticks.hz) }) { hz in
            try ticks.setRate(Int(hz))
        }
        try tree.register("ticks", in: timer) { TimerText.number(ticks.statistics.ticks) }
        // Weak: the queue holds tasks whose routines may hold the tree.
        try tree.register("queue", in: timer) { [weak timerQueue] in
            TimerText.queue(timerQueue?.queuedTasks ?? [], since: start)
        }
        try tree.register("latency", in: timer) { TimerText.latency(ticks.statistics) }
        // One directory per queued task, as /proc has one per process.
        try tree.makeDynamicDirectory(
            "tasks", in: timer, names: { [weak timerQueue] in timerQueue?.queuedTasks.map(\.name) ?? [] }
        ) { [weak timerQueue] tree, name, directory in
            guard let task = timerQueue?.queuedTasks.first(where: { $0.name == name }) else { return }
            let files = try tree.makeDirectory(name, in: directory)
            try tree.register("runs", in: files) { [weak task] in TimerText.number(task?.runs ?? 0) }
            try tree.register("queued_since", in: files) { [weak task] in
                TimerText.queuedSince(task?.queuedSince, start: start)
            }
        }
        try tree.register(uptimeName) {
            TimerText.uptime(.now - start, busy: .nanoseconds(ticks.statistics.busyNanoseconds))
        }
    }

    /// Removes what ``register(in:ticks:timerQueue:start:)`` added, waiting at most `timeout`
    /// for readers inside; a file that is already gone is skipped.
    static func remove(from tree: ProcTree, timeout: Duration) throws(ProcTreeError) {
        for name in [directoryName, uptimeName] {
            guard let entry = tree.entry(named: name) else { continue }
            try tree.remove(entry, timeout: timeout)
        }
    }
}
