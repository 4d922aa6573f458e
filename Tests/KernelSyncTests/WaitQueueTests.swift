import Glibc
import Dispatch
import KernelSync
import Synchronization
import Testing

@Suite struct WaitQueueTests {
    @Test func returnsAtOnceWhenTheConditionAlreadyHolds() {
        let queue = WaitQueue()
        let clock = ContinuousClock()
        let start = clock.now
        #expect(queue.wait(timeout: .seconds(5)) { true })
        #expect(clock.now - start < .seconds(1))
    }

    @Test func timesOutWhenNobodyWakes() {
        let queue = WaitQueue()
        let clock = ContinuousClock()
        let start = clock.now
        #expect(!queue.wait(timeout: .milliseconds(50)) { false })
        #expect(clock.now - start >= .milliseconds(50))
    }

    @Test func wakesWhenAnotherThreadMakesTheConditionTrue() throws {
        let queue = WaitQueue()
        let flag = Atomic<Bool>(false)
        let waker = try JoinableThread(name: "waker") {
            usleep(20_000)
            flag.store(true, ordering: .releasing)
            queue.wakeUp()
        }
        #expect(queue.wait(timeout: .seconds(5)) { flag.load(ordering: .acquiring) })
        #expect(waker.join(timeout: .seconds(5)))
    }

    /// A lost wake-up shows as a wait that only ends at its timeout; with a 2 s timeout and
    /// thousands of races between the test and the sleep, any loss would be plain to see.
    @Test func losesNoWakeUpUnderStress() throws {
        let rounds = 3000
        let timeout: Duration = .seconds(2)
        let clock = ContinuousClock()
        var slowest: Duration = .zero
        for _ in 0..<rounds {
            let queue = WaitQueue()
            let flag = Atomic<Bool>(false)
            let waker = try JoinableThread(name: "waker") {
                flag.store(true, ordering: .releasing)
                queue.wakeUp()
            }
            let start = clock.now
            let woke = queue.wait(timeout: timeout) { flag.load(ordering: .acquiring) }
            slowest = max(slowest, clock.now - start)
            #expect(woke)
            #expect(waker.join(timeout: timeout))
        }
        #expect(slowest < timeout / 2, "a wait ran to its timeout: a wake-up was lost")
    }

    @Test func wakesEverySleeper() throws {
        let queue = WaitQueue()
        let flag = Atomic<Bool>(false)
        let woken = Atomic<Int>(0)
        let sleepers = try (0..<8).map { number in
            try JoinableThread(name: "sleeper-\(number)") {
                if queue.wait(timeout: .seconds(5), until: { flag.load(ordering: .acquiring) }) {
                    woken.add(1, ordering: .relaxed)
                }
            }
        }
        usleep(20_000)
        flag.store(true, ordering: .releasing)
        queue.wakeUp()
        for sleeper in sleepers { #expect(sleeper.join(timeout: .seconds(5))) }
        let wokenNow = woken.load(ordering: .relaxed)
        #expect(wokenNow == 8)
    }
}

@Suite struct JoinableThreadTests {
    @Test func joinReportsABodyThatDoesNotReturnInTime() throws {
        let release = DispatchSemaphore(value: 0)
        let thread = try JoinableThread(name: "blocked") { release.wait() }
        #expect(!thread.join(timeout: .milliseconds(30)))
        #expect(!thread.hasFinished)
        release.signal()
        #expect(thread.join(timeout: .seconds(5)))
        #expect(thread.hasFinished)
    }

    /// A Linux thread name holds 15 bytes. A name whose 15th byte falls inside a character
    /// ("é" is two bytes, the 15th and 16th here) is cut before that character, not in it.
    @Test func aNameCutInsideACharacterLosesTheWholeCharacter() throws {
        let seen = Mutex<String?>(nil)
        let thread = try JoinableThread(name: "abcdefghijklmné-tail") {
            let descriptor = open("/proc/thread-self/comm", O_RDONLY)
            defer { close(descriptor) }
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = read(descriptor, &buffer, buffer.count)
            seen.withLock { $0 = count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : nil }
        }
        #expect(thread.join(timeout: .seconds(5)))
        #expect(seen.withLock { $0 } == "abcdefghijklmn\n")
        #expect(thread.name == "abcdefghijklmné-tail")
    }

    @Test func durationConversions() {
        #expect(Duration.milliseconds(1500).nanoseconds == 1_500_000_000)
        #expect(Duration.microseconds(250).milliseconds == 0.25)
        #expect(Duration.seconds(Int64.max).nanoseconds == Int64.max)
    }
}
