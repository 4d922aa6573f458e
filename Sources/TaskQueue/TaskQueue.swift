import Synchronization

/// A list of tasks waiting to run, with the semantics of the kernel's `task_queue`.
///
/// - ``queue(_:)`` is idempotent: a task that is already queued is not inserted again.
/// - ``run()`` detaches the whole list at once, then for each task, in the order they were
///   queued, clears its `sync` flag and only then calls its routine. A routine that re-queues
///   itself therefore lands on the list for the *next* run: it runs once per run, never in a loop.
public final class TaskQueue: Sendable {
    private struct Lists {
        var pending: [QueueTask] = []
        /// The list ``run()`` emptied last time, kept so that a run allocates nothing.
        var spare: [QueueTask] = []
    }

    private let lists = Mutex(Lists())

    public init() {}

    /// Puts `task` at the end of the queue unless it is queued already (`queue_task`).
    ///
    /// - Returns: `true` if the task was inserted, `false` if it was already on a queue.
    @discardableResult
    public func queue(_ task: QueueTask) -> Bool {
        guard task.sync.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return false }
        task.markQueued()
        lists.withLock { $0.pending.append(task) }
        return true
    }

    /// Runs every task queued before this call (`run_task_queue`).
    ///
    /// - Returns: how many tasks ran.
    @discardableResult
    public func run() -> Int {
        var detached = lists.withLock { lists in
            var detached: [QueueTask] = []
            swap(&detached, &lists.spare)
            swap(&detached, &lists.pending)
            return detached
        }
        for task in detached {
            task.sync.store(false, ordering: .releasing)
            task.countRun()
            task.routine(task)
        }
        let ran = detached.count
        detached.removeAll(keepingCapacity: true)
        lists.withLock { $0.spare = detached }
        return ran
    }

    /// The names of the tasks waiting for the next run, in order.
    public var queuedNames: [String] { queuedTasks.map(\.name) }

    /// The tasks waiting for the next run, in order.
    public var queuedTasks: [QueueTask] { lists.withLock { $0.pending } }

    /// Whether no task is waiting.
    public var isEmpty: Bool { lists.withLock { $0.pending.isEmpty } }
}
