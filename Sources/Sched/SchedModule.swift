import KernelSync
import Logging
import ProcFS
import Synchronization
import TaskQueue

/// The port of the kernel module `sched.c`: a routine on the timer queue that counts its runs,
/// and the file `sched` that shows the count, with the timer's own files beside it (`timer/`
/// and `uptime`).
///
/// ``start()`` is `init_module`: it queues the routine and registers the files. Each time the
/// timer queue runs, the routine counts one call and re-queues itself, until ``cleanup(timeout:)``
/// (`cleanup_module`) asks it to stop: then it wakes the cleanup instead of re-queuing.
public final class SchedModule: Sendable {
    /// The name of the file in the tree.
    public static let fileName = "sched"
    /// How long cleanup waits for the routine to leave the queue, and for readers to leave `sched`.
    public static let defaultCleanupTimeout: Duration = .seconds(2)

    private let timer: TimerQueue
    private let tree: ProcTree
    private let logger: Logger
    private let routine: TickRoutine
    private let task: QueueTask

    /// Prepares the module; nothing is queued or registered until ``start()``.
    ///
    /// - Parameters:
    ///   - timer: the timer queue the routine runs on; its ticks are shown and set through
    ///     `timer/`.
    ///   - count: where the routine keeps its count, if it must outlive this process (a
    ///     keeper's ``CarriedValue``, which the next server goes on from); in this object
    ///     when `nil`.
    package init(timer: TimerQueue, tree: ProcTree, logger: Logger, count: CarriedValue? = nil) {
        let routine = TickRoutine(count: count)
        self.timer = timer
        self.tree = tree
        self.logger = logger
        self.routine = routine
        // Weak: the queue holds the task while it is queued, and the task holds this closure.
        self.task = QueueTask(name: "sched") { [weak tasks = timer.tasks] task in
            guard let tasks else { return }
            routine.run(task, requeueOn: tasks)
        }
    }

    /// How many times the routine has run.
    public var calls: UInt64 { routine.calls.value }

    /// `init_module`: queues the routine on the timer queue and registers `sched`, `timer/`
    /// and `uptime`.
    ///
    /// - Parameter mounted: when the mount was made, from which `uptime` counts: now, unless
    ///   this process took the mount over from another.
    public func start(mountedAt mounted: ContinuousClock.Instant = .now) throws(ProcTreeError) {
        let start = mounted
        timer.tasks.queue(task)
        // The text needs only the count: capturing the routine, which holds the file, would
        // make a cycle. The routine announces each new count.
        let file = try tree.register(Self.fileName, permissions: [.ownerRead, .groupRead, .otherRead], announcesChanges: true) {
            [calls = routine.calls] in SchedText.format(calls: calls.value)
        }
        routine.file.withLock { $0 = file }
        try TimerFiles.register(in: tree, ticks: timer.ticks, timerQueue: timer.tasks, start: start)
    }

    /// `cleanup_module`, made race-free and bounded. Step 1 unregisters `sched`, then the rest
    /// of the module's files, and waits for readers already inside them; step 2 sleeps until the
    /// routine has taken itself off the queue. Each step is logged with its time. Step 3,
    /// exiting, is the caller's.
    ///
    /// The timer queue must keep running until this returns: the routine leaves it on a tick.
    ///
    /// - Throws: ``SchedCleanupError`` when a step did not finish within `timeout`.
    public func cleanup(timeout: Duration = defaultCleanupTimeout) throws(SchedCleanupError) {
        let clock = ContinuousClock()
        var failure: SchedCleanupError?

        let unregistering = clock.now
        do {
            try tree.remove(Self.fileName, timeout: timeout)
        } catch {
            failure = .readersStayed(error)
        }
        do {
            try TimerFiles.remove(from: tree, timeout: timeout)
        } catch {
            failure = failure ?? .readersStayed(error)
        }
        routine.file.withLock { $0 = nil }
        logger.info(
            "cleanup 1/3: unregistered \(Self.fileName), then \(TimerFiles.directoryName)/ and \(TimerFiles.uptimeName) (\((clock.now - unregistering).loggedMilliseconds))")

        let sleeping = clock.now
        routine.stopRequested.store(true, ordering: .releasing)
        let left = routine.wake.wait(timeout: timeout) { routine.hasLeft.load(ordering: .acquiring) }
        guard left else {
            logger.error("cleanup 2/3: tick routine still on the timer queue after \((clock.now - sleeping).loggedMilliseconds); giving up")
            throw .routineStayed(timeout)
        }
        logger.info("cleanup 2/3: tick routine left the timer queue after \(calls) calls (\((clock.now - sleeping).loggedMilliseconds))")
        if let failure { throw failure }
    }
}

/// The routine's state: the count, and the handshake with cleanup.
///
/// `stopRequested` plays the part of the original's `WaitQ != NULL`; `hasLeft` with `wake` is
/// the condition and wait queue that replace `sleep_on`, so the wake-up cannot be lost.
final class TickRoutine: Sendable {
    let calls: CallCount

    init(count: CarriedValue?) {
        calls = CallCount(carried: count)
    }

    /// The `sched` file, told of each new count so that cached copies are dropped.
    let file = Mutex<ProcEntry?>(nil)
    let stopRequested = Atomic<Bool>(false)
    let hasLeft = Atomic<Bool>(false)
    let wake = WaitQueue()

    /// One run: count it, then re-queue, or leave the queue and wake cleanup.
    func run(_ task: QueueTask, requeueOn queue: TaskQueue) {
        let count = calls.count()
        file.withLock { $0 }?.changed(keepingLength: !SchedText.isLonger(calls: count))
        if stopRequested.load(ordering: .acquiring) {
            hasLeft.store(true, ordering: .releasing)
            wake.wakeUp()
        } else {
            queue.queue(task)
        }
    }
}

/// How many times the routine has run: in this object, or in a keeper's state.
final class CallCount: Sendable {
    private let calls = Atomic<UInt64>(0)
    private let carried: CarriedValue?

    init(carried: CarriedValue?) {
        self.carried = carried
    }

    /// Counts one call.
    ///
    /// - Returns: the count now.
    func count() -> UInt64 {
        if let carried { return carried.add(1) }
        return calls.add(1, ordering: .releasing).newValue
    }

    var value: UInt64 { carried?.load() ?? calls.load(ordering: .acquiring) }
}

/// A step of the cleanup protocol did not finish in time.
public enum SchedCleanupError: Error, CustomStringConvertible {
    /// Readers were still inside `sched` when step 1's rundown timed out.
    case readersStayed(ProcTreeError)
    /// The routine had not left the timer queue when step 2's wait timed out.
    case routineStayed(Duration)

    public var description: String {
        switch self {
        case .readersStayed(let error): "cleanup: \(error)"
        case .routineStayed(let timeout): "cleanup: the tick routine did not leave the timer queue within \(timeout)"
        }
    }
}
