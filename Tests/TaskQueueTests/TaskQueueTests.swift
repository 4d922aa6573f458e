import Glibc
import KernelSync
import Synchronization
import TaskQueue
import Testing

@Suite struct TaskQueueTests {
    @Test func queueingIsIdempotent() {
        let queue = TaskQueue()
        let runs = Atomic<Int>(0)
        let task = QueueTask(name: "t") { _ in runs.add(1, ordering: .relaxed) }
        #expect(!task.isQueued)
        #expect(queue.queue(task))
        #expect(task.isQueued)
        #expect(!queue.queue(task), "a queued task must not be inserted twice")
        #expect(queue.queuedTasks.map(\.name) == ["t"])
        #expect(queue.run() == 1)
        let runsNow = runs.load(ordering: .relaxed)
        #expect(runsNow == 1)
        #expect(!task.isQueued)
        #expect(queue.isEmpty)
    }

    @Test func tasksRunInTheOrderTheyWereQueued() {
        let queue = TaskQueue()
        let order = Mutex<[Int]>([])
        let tasks = (0..<10).map { number in QueueTask(name: "\(number)") { _ in order.withLock { $0.append(number) } } }
        for task in tasks.reversed() { queue.queue(task) }
        queue.run()
        #expect(order.withLock { $0 } == Array((0..<10).reversed()))
    }

    @Test func syncIsClearedBeforeTheRoutineRuns() {
        let queue = TaskQueue()
        let sawQueued = Atomic<Bool>(true)
        let task = QueueTask(name: "t") { task in sawQueued.store(task.isQueued, ordering: .relaxed) }
        queue.queue(task)
        queue.run()
        let sawQueuedNow = sawQueued.load(ordering: .relaxed)
        #expect(!sawQueuedNow)
    }

    @Test func aSelfRequeueingRoutineRunsOncePerRun() {
        let queue = TaskQueue()
        let (task, runs) = queueSelfRequeueingTask(on: queue)
        for expected in 1...25 {
            #expect(queue.run() == 1)
            let runsNow = runs.value.load(ordering: .relaxed)
            #expect(runsNow == expected)
            #expect(task.isQueued, "the routine re-queued itself for the next run")
        }
    }

    @Test func aRoutineQueueingAnotherTaskDefersItToTheNextRun() {
        let queue = TaskQueue()
        let laterRan = Atomic<Bool>(false)
        let later = QueueTask(name: "later") { _ in laterRan.store(true, ordering: .relaxed) }
        let first = QueueTask(name: "first") { [weak queue] _ in queue?.queue(later) }
        queue.queue(first)
        #expect(queue.run() == 1)
        let ranOnFirstRun = laterRan.load(ordering: .relaxed)
        #expect(!ranOnFirstRun)
        #expect(queue.run() == 1)
        let ranOnSecondRun = laterRan.load(ordering: .relaxed)
        #expect(ranOnSecondRun)
    }

    @Test func manyTasksEachRunOnce() {
        let queue = TaskQueue()
        let runs = Mutex([Int](repeating: 0, count: 1000))
        let tasks = (0..<1000).map { index in QueueTask(name: "\(index)") { _ in runs.withLock { $0[index] += 1 } } }
        for task in tasks { queue.queue(task) }
        #expect(queue.run() == 1000)
        #expect(runs.withLock { $0 }.allSatisfy { $0 == 1 })
        #expect(queue.run() == 0)
    }

    @Test func queueingFromManyThreadsInsertsEachTaskOnce() throws {
        let queue = TaskQueue()
        let runs = Mutex([Int](repeating: 0, count: 200))
        let tasks = (0..<200).map { index in QueueTask(name: "\(index)") { _ in runs.withLock { $0[index] += 1 } } }
        let inserted = Atomic<Int>(0)
        let threads = try (0..<8).map { number in
            try JoinableThread(name: "queuer-\(number)") {
                for task in tasks where queue.queue(task) { inserted.add(1, ordering: .relaxed) }
            }
        }
        for thread in threads { #expect(thread.join(timeout: .seconds(10))) }
        let insertedNow = inserted.load(ordering: .relaxed)
        #expect(insertedNow == 200)
        #expect(queue.run() == 200)
        #expect(runs.withLock { $0 }.allSatisfy { $0 == 1 })
    }

    @Test func runningWhileOtherThreadsQueueLosesNoTask() throws {
        let queue = TaskQueue()
        let runs = Atomic<Int>(0)
        let tasks = (0..<64).map { index in QueueTask(name: "\(index)") { _ in runs.add(1, ordering: .relaxed) } }
        let inserted = Atomic<Int>(0)
        let done = Atomic<Bool>(false)
        let queuers = try (0..<4).map { number in
            try JoinableThread(name: "queuer-\(number)") {
                for _ in 0..<500 {
                    for task in tasks where queue.queue(task) { inserted.add(1, ordering: .relaxed) }
                }
            }
        }
        let runner = try JoinableThread(name: "runner") {
            while !done.load(ordering: .acquiring) { queue.run() }
        }
        for queuer in queuers { #expect(queuer.join(timeout: .seconds(30))) }
        done.store(true, ordering: .releasing)
        #expect(runner.join(timeout: .seconds(10)))
        queue.run()
        let runsNow = runs.load(ordering: .relaxed)
        #expect(runsNow == inserted.load(ordering: .relaxed))
    }
}

@Suite struct TickSourceTests {
    @Test(arguments: [0, -5, 10_001])
    func rejectsRatesOutOfRange(hz: Int) {
        #expect(throws: TickSourceError.self) { try TickSource(hz: hz) { _ in } }
    }

    /// Absolute deadlines keep the pace: the count matches elapsed time × HZ within 1 %.
    @Test func keepsPaceWithTheClock() throws {
        let hz = 100
        let ticks = Atomic<Int>(0)
        let source = try TickSource(hz: hz) { _ in ticks.add(1, ordering: .relaxed) }
        let clock = ContinuousClock()
        let start = clock.now
        try source.start()
        usleep(3_000_000)
        let counted = ticks.load(ordering: .relaxed)
        let elapsed = clock.now - start
        #expect(source.stop(timeout: .seconds(1)))
        let due = elapsed.milliseconds / 1000 * Double(hz)
        #expect(abs(Double(counted) - due) <= max(due * 0.01, 2), "counted \(counted) ticks, \(due) due")
    }

    @Test func stopEndsTheTicksAtOnce() throws {
        let ticks = Atomic<Int>(0)
        let source = try TickSource(hz: 1) { _ in ticks.add(1, ordering: .relaxed) }
        try source.start()
        let clock = ContinuousClock()
        let start = clock.now
        #expect(source.stop(timeout: .seconds(2)))
        #expect(clock.now - start < .milliseconds(500), "stop must not wait for the next 1 s tick")
        let after = ticks.load(ordering: .relaxed)
        usleep(50_000)
        let ticksNow = ticks.load(ordering: .relaxed)
        #expect(ticksNow == after)
    }

    /// The timer queue (`tq_timer`): its own ticks run its tasks.
    @Test func aTimerQueueRunsItsTasksOnEveryTick() throws {
        let timer = try TimerQueue(hz: 1000)
        let (_, runs) = queueSelfRequeueingTask(on: timer.tasks)
        try timer.start()
        usleep(200_000)
        #expect(timer.stop(timeout: .seconds(1)))
        let runsNow = runs.value.load(ordering: .relaxed)
        #expect(runsNow > 100)
    }

    @Test func aRateChangeTakesEffectWhileRunningAndKeepsThePace() throws {
        let timer = try TimerQueue(hz: 10)
        let (task, runs) = queueSelfRequeueingTask(on: timer.tasks)
        let source = timer.ticks
        try source.start()
        defer { _ = source.stop(timeout: .seconds(1)) }
        #expect(throws: TickSourceError.self) { try source.setRate(0) }
        try source.setRate(2000)
        #expect(source.hz == 2000)
        usleep(400_000)
        // At 10 Hz, 0.4 s would give about 4 runs; at 2000 Hz, about 800.
        let runsNow = runs.value.load(ordering: .relaxed)
        #expect(runsNow > 100, "the new rate did not take effect: \(runsNow) runs")
        let statistics = source.statistics
        #expect(statistics.ticks <= statistics.due && statistics.due - statistics.ticks <= 2,
                "ticks \(statistics.ticks) of \(statistics.due) due")
        #expect(task.runs >= UInt64(runsNow), "the task counts every run of its routine")
    }

    /// A reader of the queue during a run sees the task being run, once, not an empty queue.
    @Test func aTaskStaysListedUntilItsRoutineReturns() {
        let queue = TaskQueue()
        let seen = Mutex<[[String]]>([])
        let first = QueueTask(name: "first") { [weak queue] task in
            seen.withLock { $0.append(queue?.queuedTasks.map(\.name) ?? []) }
            queue?.queue(task)
            seen.withLock { $0.append(queue?.queuedTasks.map(\.name) ?? []) }
        }
        let second = QueueTask(name: "second") { [weak queue] _ in
            seen.withLock { $0.append(queue?.queuedTasks.map(\.name) ?? []) }
        }
        queue.queue(first)
        queue.queue(second)
        queue.run()
        #expect(seen.withLock { $0 } == [["first", "second"], ["second", "first"], ["second", "first"]])
        #expect(queue.queuedTasks.map(\.name) == ["first"])
    }

    @Test func tasksCountTheirRunsAndWhenTheyWereQueued() {
        let queue = TaskQueue()
        let task = QueueTask(name: "t") { _ in }
        #expect(task.queuedSince == nil && task.runs == 0)
        let before = ContinuousClock.now
        queue.queue(task)
        let queuedAt = task.queuedSince
        #expect(queuedAt != nil && queuedAt! >= before)
        queue.run()
        queue.run()
        #expect(task.runs == 1, "the second run found the task off the queue")
        #expect(queue.queuedTasks.isEmpty)
    }
}

/// How many times a task ran.
private final class RunCount: Sendable {
    let value = Atomic<Int>(0)
}

/// Queues on `queue` a task that counts its runs and re-queues itself, like sched's routine.
private func queueSelfRequeueingTask(on queue: TaskQueue) -> (task: QueueTask, runs: RunCount) {
    let runs = RunCount()
    // Weak, as in sched: the queue holds the task, which holds this closure.
    let task = QueueTask(name: "self") { [weak queue] task in
        runs.value.add(1, ordering: .relaxed)
        queue?.queue(task)
    }
    queue.queue(task)
    return (task, runs)
}
