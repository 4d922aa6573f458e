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
        /// The list ``run()`` detached, while it runs; empty between runs. Its buffer goes back
        /// to `pending` at the next run, so that a run allocates nothing.
        var running: [QueueTask] = []
        /// The index in `running` of the task whose routine runs now.
        var current = 0
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
        let count = lists.withLock { lists in
            swap(&lists.running, &lists.pending)
            return lists.running.count
        }
        for index in 0..<count {
            let task = lists.withLock { lists in
                lists.current = index
                return lists.running[index]
            }
            task.sync.store(false, ordering: .releasing)
            task.countRun()
            task.routine(task)
        }
        lists.withLock { lists in
            lists.running.removeAll(keepingCapacity: true)
            lists.current = 0
        }
        return count
    }

    /// The tasks on the queue, in the order they will run: during a run, the tasks of that run
    /// whose routines have not returned yet (unless they have queued themselves again), then
    /// the tasks waiting for the next run.
    public var queuedTasks: [QueueTask] {
        lists.withLock { lists in
            let unfinished = lists.running[lists.current...].filter { task in
                !lists.pending.contains { $0 === task }
            }
            return unfinished + lists.pending
        }
    }

    /// Whether no task is waiting for the next run.
    package var isEmpty: Bool { lists.withLock { $0.pending.isEmpty } }
}
