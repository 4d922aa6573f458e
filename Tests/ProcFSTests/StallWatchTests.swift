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
        watch.serverStarted(pid: getpid())
        requestsRead.add(1)  // It has read before: a server that counts.

        // Idle: nothing to wake the keeper for, no deadline.
        #expect(poll(&ready, 1, 0) == 0 && watch.deadline == nil)

        // A request waits: the watch starts, and looks again a tenth of the timeout later.
        #expect(write(ends[1], "r", 1) == 1)
        #expect(poll(&ready, 1, 0) == 1)
        let start = ContinuousClock.now
        watch.noticed(now: start)
        #expect(watch.deadline == start + .milliseconds(10))
        #expect(watch.check(now: start + .milliseconds(10)) == nil)
        #expect(watch.check(now: start + .milliseconds(20)) == nil)
        // Not looked at for 40 ms (the keeper was stopped with its server): the wait starts
        // again at 60 ms.
        #expect(watch.check(now: start + .milliseconds(60)) == nil)
        for step in 7...15 { #expect(watch.check(now: start + .milliseconds(step * 10)) == nil, "at \(step * 10) ms") }
        #expect(watch.check(now: start + .milliseconds(160)) == .readNone, "requests waited 100 ms with none read")
        // The server reads meanwhile: busy, not stuck; the wait counts from here.
        requestsRead.add(1)
        for step in 17...26 { #expect(watch.check(now: start + .milliseconds(step * 10)) == nil, "at \(step * 10) ms") }
        #expect(watch.check(now: start + .milliseconds(270)) == .readNone)
        #expect(watch.readByThisServer == 2)

        // None waits: the watch stops until the next waiting request (one shot, armed again).
        var byte: UInt8 = 0
        #expect(read(ends[0], &byte, 1) == 1)
        #expect(watch.check(now: start + .milliseconds(280)) == nil)
        #expect(watch.deadline == nil)
        #expect(poll(&ready, 1, 0) == 0)
        #expect(write(ends[1], "r", 1) == 1)
        #expect(poll(&ready, 1, 0) == 1, "armed again")

        // A new server that has read nothing (an older binary, which does not count) is
        // never taken for stuck.
        watch.serverStarted(pid: getpid())
        let later = ContinuousClock.now
        watch.noticed(now: later)
        for step in 1...20 { #expect(watch.check(now: later + .milliseconds(step * 10)) == nil) }
    }

    /// A server stopped (SIGSTOP) while it holds every request, read and not answered, leaves
    /// none waiting: it is stuck all the same, once the watch has started. The same server,
    /// running, is not: with none waiting, the watch stops.
    @Test func aStoppedServerIsStuckThoughNoRequestWaits() throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { ends.forEach { close($0) } }
        let carried = try CarriedState()
        let requestsRead = try #require(carried.value(named: CarriedState.requestsReadName))
        let watch = try #require(StallWatch(connection: FileDescriptor(rawValue: ends[0]), carried: carried, timeout: .milliseconds(100)))
        // The server: a child of this test's own, stopped and continued by it.
        var child = pid_t()
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("30"), nil]
        defer { argv.forEach { free($0) } }
        try #require(posix_spawn(&child, "/bin/sleep", nil, nil, argv, environ) == 0)
        defer {
            kill(child, SIGKILL)
            var status: Int32 = 0
            waitpid(child, &status, 0)
        }
        watch.serverStarted(pid: child)
        requestsRead.add(1)

        // Requests came (the keeper was woken), and were all read.
        let start = ContinuousClock.now
        watch.noticed(now: start)
        #expect(watch.check(now: start + .milliseconds(10)) == nil, "running, with none waiting")
        #expect(watch.deadline == nil, "the watch stopped")

        watch.noticed(now: start + .milliseconds(20))
        try #require(kill(child, SIGSTOP) == 0)
        var status: Int32 = 0
        try #require(waitpid(child, &status, WUNTRACED) == child, "stopped")
        for step in 3...11 { #expect(watch.check(now: start + .milliseconds(step * 10)) == nil, "at \(step * 10) ms") }
        #expect(watch.check(now: start + .milliseconds(120)) == .stopped, "stopped for 100 ms")
        try #require(kill(child, SIGCONT) == 0)
        try #require(waitpid(child, &status, WCONTINUED) == child, "running again")
        #expect(watch.check(now: start + .milliseconds(130)) == nil)
        #expect(watch.deadline == nil)
    }
}
