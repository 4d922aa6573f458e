import Glibc
import KernelSync
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
    private let runCount = Atomic<UInt64>(0)
    /// When the task was last queued, in nanoseconds of the boot-time clock (ContinuousClock's);
    /// 0 if it never was. One atomic word, so that queuing, on every tick, takes no lock.
    private let lastQueued = Atomic<Int64>(0)

    /// Makes a task that runs `routine` each time a queue it is on runs.
    public init(name: String, routine: @escaping @Sendable (QueueTask) -> Void) {
        self.name = name
        self.routine = routine
    }

    /// Whether the task is on a queue now, waiting for that queue's next run.
    package var isQueued: Bool { sync.load(ordering: .acquiring) }

    /// How many times the routine has been run by a queue.
    public var runs: UInt64 { runCount.load(ordering: .relaxed) }

    /// When the task was last put on a queue; `nil` if it never was.
    public var queuedSince: ContinuousClock.Instant? {
        let queued = lastQueued.load(ordering: .relaxed)
        return queued == 0 ? nil : ContinuousClock.Instant(bootTimeNanoseconds: queued)
    }

    func markQueued() {
        lastQueued.store(clockNanoseconds(CLOCK_BOOTTIME), ordering: .relaxed)
    }

    func countRun() {
        runCount.add(1, ordering: .relaxed)
    }
}
