import Glibc
import KernelSync
import Synchronization
import TaskQueue
import Testing

@Suite struct LatencyHistogramTests {
    @Test func anEmptyHistogramSaysZero() {
        let histogram = LatencyHistogram()
        #expect(histogram.count == 0)
        #expect(histogram.percentile(0.99) == 0)
    }

    @Test func smallValuesAreExact() {
        var histogram = LatencyHistogram()
        for value in 0..<16 { histogram.record(nanoseconds: Int64(value)) }
        #expect(histogram.percentile(0.5) == 7)
        #expect(histogram.percentile(1) == 15)
    }

    /// Percentiles land within the 1/16 precision of the buckets.
    @Test func percentilesAreWithinSixPercent() {
        var histogram = LatencyHistogram()
        for value in 1...10_000 { histogram.record(nanoseconds: Int64(value) * 1000) }
        for (fraction, exact) in [(0.5, 5_000_000.0), (0.99, 9_900_000.0)] {
            let found = Double(histogram.percentile(fraction))
            #expect(found >= exact && found <= exact * 1.0625, "p\(fraction): \(found) for \(exact)")
        }
        #expect(histogram.maximum == 10_000_000)
        #expect(histogram.percentile(1) == 10_000_000)
    }

    @Test func negativeDurationsCountAsZero() {
        var histogram = LatencyHistogram()
        histogram.record(nanoseconds: -5)
        #expect(histogram.percentile(1) == 0)
        #expect(histogram.count == 1)
    }
}

@Suite struct DurationBucketsTests {
    /// Each duration counts in the first bucket whose bound it does not pass, a bound itself
    /// included; those above every bound in the last; negatives as zero.
    @Test func eachDurationCountsInTheFirstBucketItFitsAndInTheSum() {
        var buckets = DurationBuckets(bounds: [.microseconds(10), .nanoseconds(100)])
        #expect(buckets.bounds == [100, 10_000], "sorted")
        for value: Int64 in [-5, 0, 100, 101, 10_000, 10_001, 1_000_000] { buckets.record(nanoseconds: value) }
        #expect(buckets.counts == [3, 2, 2])
        #expect(buckets.count == 7)
        #expect(buckets.sum == 100 + 101 + 10_000 + 10_001 + 1_000_000)
    }

    @Test func noBoundsIsOneBucket() {
        var buckets = DurationBuckets(bounds: [])
        buckets.record(nanoseconds: 42)
        #expect(buckets.counts == [1] && buckets.sum == 42)
    }
}

@Suite struct TickStatisticsTests {
    @Test func aTickSourceMeasuresItsPaceAndLateness() throws {
        let source = try TickSource(hz: 200) { _ in }
        try source.start()
        usleep(500_000)
        let measured = source.statistics
        #expect(source.stop(timeout: .seconds(1)))
        #expect(measured.due >= 90 && measured.due <= 110, "due \(measured.due) after 0.5 s at 200 Hz")
        #expect(measured.ticks + 1 >= measured.due && measured.ticks <= measured.due)
        #expect(measured.lateness.count > 0)
        #expect(measured.lateness.percentile(0.5) < 5_000_000, "a median tick 5 ms late at 200 Hz")
    }

    /// The buckets a source is made with count every tick's lateness, as the handler is told
    /// of it, and their sum.
    @Test func aSourceCountsLatenessInTheBucketsItWasMadeWith() throws {
        let bounds: [Duration] = [.microseconds(50), .milliseconds(1), .milliseconds(5)]
        let told = Mutex<DurationBuckets>(DurationBuckets(bounds: bounds))
        let source = try TickSource(hz: 200, latenessBounds: bounds) { tick in
            told.withLock { $0.record(nanoseconds: tick.lateness.nanoseconds) }
        }
        try source.start()
        usleep(300_000)
        #expect(source.stop(timeout: .seconds(1)))
        let measured = source.statistics
        #expect(measured.latenessBuckets == told.withLock { $0 })
        #expect(measured.latenessBuckets.count == measured.delivered && measured.delivered > 0)
        #expect(measured.latenessBuckets.bounds == [50_000, 1_000_000, 5_000_000])
    }

    /// A handler that holds the tick thread for 300 ms delays the 30 ticks due meanwhile: each
    /// ran late by the time since its own deadline, so the stall shows in the maximum and in
    /// the upper percentiles, not only in `missedTicks`.
    @Test func aStallShowsInTheLatenessOfEveryTickItHeldBack() throws {
        let stalled = Atomic<Bool>(false)
        // What the handler is told of each tick: how late, and whether it ran in a burst.
        let told = Mutex<(missed: UInt64, latest: Duration)>((0, .zero))
        let source = try TickSource(hz: 100) { tick in
            told.withLock { told in
                if tick.missed { told.missed += 1 }
                told.latest = max(told.latest, tick.lateness)
            }
            if !stalled.exchange(true, ordering: .relaxed) { usleep(300_000) }
        }
        try source.start()
        usleep(600_000)
        #expect(source.stop(timeout: .seconds(1)))
        let measured = source.statistics
        #expect(told.withLock { $0.missed } == measured.missedTicks, "the handler is told of every missed tick")
        #expect(told.withLock { $0.latest } >= .milliseconds(250), "and of the stall in their lateness")
        #expect(measured.missedTicks >= 25, "\(measured.missedTicks) ticks missed behind a 300 ms stall")
        #expect(measured.lateness.maximum >= 250_000_000, "max \(measured.lateness.maximum) ns")
        #expect(measured.lateness.percentile(0.75) >= 50_000_000, "p75 \(measured.lateness.percentile(0.75)) ns of \(measured.lateness.count) ticks")
    }

    /// A second tick source started at the first one's position goes on with its deadlines:
    /// the deadlines passed while none ran are ticks delivered at once, so over the whole run
    /// the ticks keep the pace of the one schedule, as a new server's must after a crash.
    @Test func aSourceStartedAtAnotherOnesPositionKeepsItsDeadlines() throws {
        let first = try TickSource(hz: 200) { _ in }
        try first.start()
        usleep(300_000)
        #expect(first.stop(timeout: .seconds(1)))
        let position = try #require(first.position)
        #expect(position.hz == 200 && position.ticks > 0 && position.ticksBefore == 0)
        usleep(200_000)  // nothing ticks: 40 deadlines pass
        let told = Atomic<Int>(0)
        let second = try TickSource(hz: 50) { _ in told.add(1, ordering: .relaxed) }
        try second.start(continuing: position)
        usleep(100_000)
        #expect(second.stop(timeout: .seconds(1)))
        let measured = second.statistics
        #expect(second.hz == 200, "the position's rate is taken")
        #expect(Int(measured.ticks) == Int(position.ticks) + told.load(ordering: .relaxed))
        #expect(Int(measured.delivered) == told.load(ordering: .relaxed), "its own ticks count from 0")
        #expect(measured.ticks + 1 >= measured.due && measured.ticks <= measured.due,
                "\(measured.ticks) ticks of \(measured.due) due since the first source started")
        #expect(measured.due >= 110 && measured.due <= 130, "about 0.6 s at 200 Hz: \(measured.due)")
        #expect(measured.missedTicks >= 30, "the deadlines passed in between came as one burst: \(measured.missedTicks)")
    }
}
