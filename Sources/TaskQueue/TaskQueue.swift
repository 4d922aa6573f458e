import Synchronization

/// A list of tasks waiting to run, with the semantics of the kernel's `task_queue`.
///
/// - ``queue(_:)`` is idempotent: a task that is already queued is not inserted again.
/// - ``run()`` detaches the whole list at once, then for each task, in the order they were
///   queued, clears its `sync` flag and only then calls its routine. A routine that re-queues
///   itself therefore lands on the list for the *next* run: it runs once per run, never in a loop.
public final class TaskQueue: Sendable {
    private let pending = Mutex<[QueueTask]>([])

    public init() {}

    /// Puts `task` at the end of the queue unless it is queued already (`queue_task`).
    ///
    /// - Returns: `true` if the task was inserted, `false` if it was already on a queue.
    @discardableResult
    public func queue(_ task: QueueTask) -> Bool {
        guard task.sync.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return false }
        pending.withLock { $0.append(task) }
        return true
    }

    /// Runs every task queued before this call (`run_task_queue`).
    ///
    /// - Returns: how many tasks ran.
    @discardableResult
    public func run() -> Int {
        let detached = pending.withLock { list in
            defer { list.removeAll(keepingCapacity: true) }
            return list
        }
        for task in detached {
            task.sync.store(false, ordering: .releasing)
            task.routine(task)
        }
        return detached.count
    }

    /// The names of the tasks waiting for the next run, in order.
    public var queuedNames: [String] { pending.withLock { $0.map(\.name) } }

    /// Whether no task is waiting.
    public var isEmpty: Bool { pending.withLock { $0.isEmpty } }
}
