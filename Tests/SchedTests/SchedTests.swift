import Glibc
import KernelSync
import Logging
import ProcFS
@testable import Sched
import TaskQueue
import Testing
import SystemPackage

@Suite struct SchedTextTests {
    @Test(arguments: [(UInt64(0), "Timer was called 0 times so far\n"),
                      (1, "Timer was called 1 times so far\n"),
                      (12_345, "Timer was called 12345 times so far\n"),
                      (UInt64.max, "Timer was called 18446744073709551615 times so far\n")])
    func formatsLikeTheOriginal(calls: UInt64, text: String) {
        #expect(SchedText.format(calls: calls) == text)
    }

    /// The routine tells the kernel of a change of length exactly where the text's length
    /// changes: checked against the formatted texts, through the largest count.
    @Test func knowsWhereTheLengthChanges() {
        let counts = (1...100_001).map { UInt64($0) } + [UInt64.max / 10 * 10, UInt64.max]
        for calls in counts {
            let longer = SchedText.format(calls: calls).utf8.count > SchedText.format(calls: calls - 1).utf8.count
            #expect(SchedText.isLonger(calls: calls) == longer, "at \(calls)")
        }
        #expect(SchedText.isLonger(calls: 10_000_000_000_000_000_000))
    }
}

@Suite struct SchedModuleTests {
    private func text(_ tree: ProcTree) -> String? {
        tree.entry(named: SchedModule.fileName)?.snapshot().map { String(decoding: $0, as: UTF8.self) }
    }

    /// A module over a timer queue that is made but not started: the tests run its tasks.
    private func module(_ tree: ProcTree, hz: Int = 100) throws -> (SchedModule, TimerQueue) {
        let timer = try TimerQueue(hz: hz)
        return (SchedModule(timer: timer, tree: tree, logger: Logger(label: "test")), timer)
    }

    private func read(_ tree: ProcTree, _ path: String) -> String? {
        tree.entry(atPath: path)?.snapshot().map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func startQueuesTheRoutineAndRegistersSched() throws {
        let tree = ProcTree()
        let (sched, timer) = try module(tree)
        let queue = timer.tasks
        try sched.start()
        #expect(queue.queuedTasks.map(\.name) == ["sched"])
        #expect(tree.entry(named: "sched")?.permissions.rawValue == 0o444)
        #expect(text(tree) == "Timer was called 0 times so far\n")
        for _ in 0..<7 { queue.run() }
        #expect(sched.calls == 7)
        #expect(text(tree) == "Timer was called 7 times so far\n")
        #expect(queue.queuedTasks.map(\.name) == ["sched"], "the routine re-queues itself")
    }

    @Test func cleanupUnregistersAndWaitsForTheRoutineToLeave() throws {
        let tree = ProcTree()
        let (sched, timer) = try module(tree, hz: 200)
        let queue = timer.tasks
        try sched.start()
        try timer.start()
        defer { _ = timer.stop(timeout: .seconds(1)) }
        try sched.cleanup(timeout: .seconds(2))
        #expect(tree.children().isEmpty, "sched, timer/ and uptime are all unregistered")
        #expect(queue.isEmpty, "the routine took itself off the queue")
        let calls = sched.calls
        usleep(50_000)
        #expect(sched.calls == calls, "no routine is left running")
    }

    @Test func cleanupGivesUpWhenNoTickComes() throws {
        let tree = ProcTree()
        let (sched, _) = try module(tree)
        try sched.start()
        let clock = ContinuousClock()
        let start = clock.now
        #expect(throws: SchedCleanupError.self) { try sched.cleanup(timeout: .milliseconds(100)) }
        #expect(clock.now - start < .seconds(2))
        #expect(tree.entry(named: "sched") == nil)
    }

    @Test func startRegistersTheTimersOwnFiles() throws {
        let tree = ProcTree()
        let (sched, timer) = try module(tree)
        let (queue, ticks) = (timer.tasks, timer.ticks)
        try sched.start()
        #expect(tree.children().map(\.name) == ["sched", "timer", "uptime"])
        #expect(tree.children(of: tree.entry(named: "timer")).map(\.name) == ["hz", "latency", "queue", "tasks", "ticks"])
        #expect(tree.entry(atPath: "timer/hz")?.kind == .knob)
        #expect(tree.entry(atPath: "timer/hz")?.permissions.rawValue == 0o644)
        #expect(read(tree, "timer/hz") == "100\n")
        #expect(read(tree, "timer/ticks") == "0\n")
        for _ in 0..<3 { queue.run() }
        let queueText = try #require(read(tree, "timer/queue"))
        let lines = queueText.split(separator: "\n")
        #expect(lines.first == "name runs queued_since")
        #expect(lines.count == 2)
        #expect(lines.last?.hasPrefix("sched 3 ") == true, "\(queueText)")
        // timer/tasks is computed from the queue when it is looked in.
        let tasks = try #require(tree.entry(atPath: "timer/tasks"))
        tree.refresh(tasks)
        #expect(tree.children(of: tasks).map(\.name) == ["sched"])
        #expect(read(tree, "timer/tasks/sched/runs") == "3\n")
        #expect(read(tree, "timer/tasks/sched/queued_since").flatMap { Double($0.dropLast()) } != nil)
        #expect(read(tree, "uptime")?.hasSuffix("\n") == true)
        #expect(read(tree, "timer/latency")?.contains("missed_ticks 0\n") == true)
        #expect(ticks.statistics.ticks == 0, "the tests ran the queue, not the ticks")
    }

    @Test func theHzKnobSetsTheRateAndRefusesAnythingElse() throws {
        let tree = ProcTree()
        let (sched, timer) = try module(tree)
        let ticks = timer.ticks
        try sched.start()
        let hz = try #require(tree.entry(atPath: "timer/hz"))
        try hz.store("250")
        #expect(ticks.hz == 250)
        #expect(read(tree, "timer/hz") == "250\n")
        for bad in ["0", "10001", "-5", "abc", "", "1e3", "+7", "0x"] {
            #expect(throws: Errno.invalidArgument, "\(bad)") { try hz.store(bad) }
        }
        #expect(ticks.hz == 250)
        try hz.store("10000")
        #expect(ticks.hz == 10000)
    }
}

@Suite struct TimerTextTests {
    @Test func secondsAreTruncatedToTheirDecimals() {
        #expect(TimerText.uptime(.milliseconds(12_345), busy: .milliseconds(2_001)) == "12.34 10.34\n")
        #expect(TimerText.uptime(.milliseconds(5), busy: .milliseconds(10)) == "0.00 0.00\n")
        #expect(TimerText.uptime(.seconds(3), busy: .zero) == "3.00 3.00\n")
    }

    @Test func numbersEndWithANewline() {
        #expect(TimerText.number(100) == "100\n")
        #expect(TimerText.number(UInt64(0)) == "0\n")
    }

    @Test func latencyShowsPercentilesInMicrosecondsAndMissedTicks() {
        var statistics = TickStatistics()
        for nanoseconds: Int64 in [10_000, 20_000, 30_000, 2_000_000] {
            statistics.lateness.record(nanoseconds: nanoseconds)
        }
        statistics.missedTicks = 3
        let lines = TimerText.latency(statistics).split(separator: "\n")
        #expect(lines.count == 4)
        #expect(lines[2] == "max_us 2000")
        #expect(lines[3] == "missed_ticks 3")
        // The histogram rounds up to its bucket's bound, about 6 % above the value.
        let p50 = lines[0].split(separator: " ")
        #expect(p50.first == "p50_us")
        #expect((20...21).contains(Int(p50.last ?? "") ?? 0), "\(lines[0])")
    }

    @Test func theQueueListsTasksInOrderWithTheirRuns() {
        let start = ContinuousClock.now
        let queue = TaskQueue()
        let a = QueueTask(name: "a") { _ in }
        let b = QueueTask(name: "b") { _ in }
        queue.queue(a)
        queue.run()
        queue.queue(b)
        queue.queue(a)
        let lines = TimerText.queue(queue.queuedTasks, since: start).split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines[1].hasPrefix("b 0 0."))
        #expect(lines[2].hasPrefix("a 1 0."))
    }
}
