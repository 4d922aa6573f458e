@testable import ProcFS
import Glibc
import SystemPackage
import Testing

/// The keeper's watch for a stuck server, without a mount: a pipe stands for the connection
/// (readable while a request waits), and the carried count for the requests servers read.
@Suite struct StallWatchTests {
    @Test func aServerIsStuckOnlyWhenRequestsWaitAndNoneIsReadForTheTimeout() throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { ends.forEach { close($0) } }
        let carried = try CarriedState()
        let requestsRead = try #require(carried.value(named: CarriedState.requestsReadName))
        let watch = try #require(StallWatch(connection: FileDescriptor(rawValue: ends[0]), carried: carried, timeout: .milliseconds(100)))
        var ready = pollfd(fd: watch.descriptor, events: Int16(POLLIN), revents: 0)
        watch.serverStarted()
        requestsRead.add(1)  // It has read before: a server that counts.

        // Idle: nothing to wake the keeper for, no deadline.
        #expect(poll(&ready, 1, 0) == 0 && watch.deadline == nil)

        // A request waits: the watch starts, and looks again a tenth of the timeout later.
        #expect(write(ends[1], "r", 1) == 1)
        #expect(poll(&ready, 1, 0) == 1)
        let start = ContinuousClock.now
        watch.noticed(now: start)
        #expect(watch.deadline == start + .milliseconds(10))
        #expect(!watch.check(now: start + .milliseconds(10)))
        #expect(!watch.check(now: start + .milliseconds(20)))
        // Not looked at for 40 ms (the keeper was stopped with its server): the wait starts
        // again at 60 ms.
        #expect(!watch.check(now: start + .milliseconds(60)))
        for step in 7...15 { #expect(!watch.check(now: start + .milliseconds(step * 10)), "at \(step * 10) ms") }
        #expect(watch.check(now: start + .milliseconds(160)), "requests waited 100 ms with none read")
        // The server reads meanwhile: busy, not stuck; the wait counts from here.
        requestsRead.add(1)
        for step in 17...26 { #expect(!watch.check(now: start + .milliseconds(step * 10)), "at \(step * 10) ms") }
        #expect(watch.check(now: start + .milliseconds(270)))
        #expect(watch.readByThisServer == 2)

        // None waits: the watch stops until the next waiting request (one shot, armed again).
        var byte: UInt8 = 0
        #expect(read(ends[0], &byte, 1) == 1)
        #expect(!watch.check(now: start + .milliseconds(280)))
        #expect(watch.deadline == nil)
        #expect(poll(&ready, 1, 0) == 0)
        #expect(write(ends[1], "r", 1) == 1)
        #expect(poll(&ready, 1, 0) == 1, "armed again")

        // A new server that has read nothing (an older binary, which does not count) is
        // never taken for stuck.
        watch.serverStarted()
        let later = ContinuousClock.now
        watch.noticed(now: later)
        for step in 1...20 { #expect(!watch.check(now: later + .milliseconds(step * 10))) }
    }
}
