import Synchronization

/// A unit of deferred work, the userspace twin of the kernel's `struct tq_struct`.
///
/// Its `sync` flag says whether it is on a queue; ``TaskQueue/queue(_:)`` tests and sets it, so a
/// task is never on a queue twice. The routine receives the task itself, which is how a routine
/// re-queues itself without the task holding a reference to its own closure.
public final class QueueTask: Sendable {
    /// A name for logs and listings.
    public let name: String
    let routine: @Sendable (QueueTask) -> Void
    let sync = Atomic<Bool>(false)

    /// Makes a task that runs `routine` each time a queue it is on runs.
    public init(name: String, routine: @escaping @Sendable (QueueTask) -> Void) {
        self.name = name
        self.routine = routine
    }

    /// Whether the task is on a queue now, waiting for that queue's next run.
    public var isQueued: Bool { sync.load(ordering: .acquiring) }
}
