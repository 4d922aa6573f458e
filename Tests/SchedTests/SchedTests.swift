import Glibc
import KernelSync
import Logging
import ProcFS
import Sched
import TaskQueue
import Testing

@Suite struct SchedTextTests {
    @Test(arguments: [(UInt64(0), "Timer was called 0 times so far\n"),
                      (1, "Timer was called 1 times so far\n"),
                      (12_345, "Timer was called 12345 times so far\n"),
                      (UInt64.max, "Timer was called 18446744073709551615 times so far\n")])
    func formatsLikeTheOriginal(calls: UInt64, text: String) {
        #expect(SchedText.format(calls: calls) == text)
    }
}

@Suite struct SchedModuleTests {
    private func text(_ tree: ProcTree) -> String? {
        tree.entry(named: SchedModule.fileName)?.snapshot().map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func startQueuesTheRoutineAndRegistersSched() throws {
        let queue = TaskQueue()
        let tree = ProcTree()
        let sched = SchedModule(timerQueue: queue, tree: tree, logger: Logger(label: "test"))
        try sched.start()
        #expect(queue.queuedNames == ["sched"])
        #expect(tree.entry(named: "sched")?.permissions == 0o444)
        #expect(text(tree) == "Timer was called 0 times so far\n")
        for _ in 0..<7 { queue.run() }
        #expect(sched.calls == 7)
        #expect(text(tree) == "Timer was called 7 times so far\n")
        #expect(queue.queuedNames == ["sched"], "the routine re-queues itself")
    }

    @Test func cleanupUnregistersAndWaitsForTheRoutineToLeave() throws {
        let queue = TaskQueue()
        let tree = ProcTree()
        let sched = SchedModule(timerQueue: queue, tree: tree, logger: Logger(label: "test"))
        try sched.start()
        let ticks = try TickSource(hz: 200) { queue.run() }
        try ticks.start()
        defer { _ = ticks.stop(timeout: .seconds(1)) }
        try sched.cleanup(timeout: .seconds(2))
        #expect(tree.entry(named: "sched") == nil)
        #expect(queue.isEmpty, "the routine took itself off the queue")
        let calls = sched.calls
        usleep(50_000)
        #expect(sched.calls == calls, "no routine is left running")
    }

    @Test func cleanupGivesUpWhenNoTickComes() throws {
        let queue = TaskQueue()
        let tree = ProcTree()
        let sched = SchedModule(timerQueue: queue, tree: tree, logger: Logger(label: "test"))
        try sched.start()
        let clock = ContinuousClock()
        let start = clock.now
        #expect(throws: SchedCleanupError.self) { try sched.cleanup(timeout: .milliseconds(100)) }
        #expect(clock.now - start < .seconds(2))
        #expect(tree.entry(named: "sched") == nil)
    }
}
