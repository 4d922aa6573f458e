import CoreMetrics
import ProcFSCore
@testable import ProcFSMetrics
import Synchronization
import Testing

/// The backend without a mount: the files it adds to a tree and the Prometheus text they hold.
@Suite struct ProcFSMetricsTests {
    func text(_ tree: ProcTree, _ path: String) -> String? {
        tree.entry(atPath: path)?.snapshot().map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func everyKindIsAFileAndALineOfTheExposition() throws {
        let tree = ProcTree()
        let metrics = try ProcFSMetrics(tree: tree, expositionFile: "test.prom", timerBuckets: [0.001, 0.01])
        let ticks = metrics.makeCounter(label: "test.timer.ticks", dimensions: [])
        ticks.increment(by: 3)
        let queued = metrics.makeMeter(label: "queue length", dimensions: [])
        queued.set(Int64(2))
        queued.increment(by: 0.5)
        let lateness = metrics.makeTimer(label: "lateness", dimensions: [("thread", "tick")])
        lateness.recordNanoseconds(500_000)  // 0.0005 s
        lateness.recordNanoseconds(5_000_000)  // 0.005 s
        lateness.recordNanoseconds(50_000_000)  // 0.05 s
        let rate = metrics.makeRecorder(label: "hz", dimensions: [], aggregate: false)
        rate.record(Int64(100))

        #expect(tree.children(of: metrics.directory).map(\.name)
                == ["hz", "lateness_seconds", "queue_length", "test.prom", "test_timer_ticks_total"])
        #expect(text(tree, "metrics/test_timer_ticks_total") == "3\n")
        #expect(text(tree, "metrics/queue_length") == "2.5\n")
        #expect(text(tree, "metrics/lateness_seconds") == "thread=\"tick\" count 3 sum 0.0555\n")
        #expect(text(tree, "metrics/test.prom") == """
            # HELP hz hz
            # TYPE hz gauge
            hz 100
            # HELP lateness_seconds lateness
            # TYPE lateness_seconds histogram
            lateness_seconds_bucket{thread="tick",le="0.001"} 1
            lateness_seconds_bucket{thread="tick",le="0.01"} 2
            lateness_seconds_bucket{thread="tick",le="+Inf"} 3
            lateness_seconds_sum{thread="tick"} 0.0555
            lateness_seconds_count{thread="tick"} 3
            # HELP queue_length queue length
            # TYPE queue_length gauge
            queue_length 2.5
            # HELP test_timer_ticks_total test.timer.ticks
            # TYPE test_timer_ticks_total counter
            test_timer_ticks_total 3

            """)
    }

    /// A figure the program keeps itself is read each time a file that shows it is made, and
    /// at no other time; its name is made as swift-metrics' are.
    @Test func figuresTheProgramKeepsAreReadOnlyWhenShown() throws {
        let tree = ProcTree()
        let metrics = try ProcFSMetrics(tree: tree, expositionFile: "test.prom", help: ["depth": "Depth now."])
        let reads = Mutex(0)
        let ticks = Mutex<UInt64>(0)
        try metrics.addCounter(label: "test.ticks", help: "Ticks.") {
            reads.withLock { $0 += 1 }
            return ticks.withLock { $0 }
        }
        try metrics.addGauge(label: "depth") { 2.5 }
        try metrics.addHistogram(label: "wait_seconds", bounds: [0.001, 0.01]) {
            HistogramFigures(counts: [1, 0, 2], sum: 0.5005)
        }
        ticks.withLock { $0 = 7 }
        #expect(reads.withLock { $0 } == 0, "nothing read until a file is made")
        #expect(tree.children(of: metrics.directory).map(\.name)
                == ["depth", "test.prom", "test_ticks_total", "wait_seconds"])
        #expect(text(tree, "metrics/test_ticks_total") == "7\n")
        #expect(reads.withLock { $0 } == 1)
        ticks.withLock { $0 = 9 }
        #expect(text(tree, "metrics/depth") == "2.5\n")
        #expect(text(tree, "metrics/wait_seconds") == "count 3 sum 0.5005\n")
        #expect(text(tree, "metrics/test.prom") == """
            # HELP depth Depth now.
            # TYPE depth gauge
            depth 2.5
            # HELP test_ticks_total Ticks.
            # TYPE test_ticks_total counter
            test_ticks_total 9
            # HELP wait_seconds wait_seconds
            # TYPE wait_seconds histogram
            wait_seconds_bucket{le="0.001"} 1
            wait_seconds_bucket{le="0.01"} 1
            wait_seconds_bucket{le="+Inf"} 3
            wait_seconds_sum 0.5005
            wait_seconds_count 3

            """)
        #expect(reads.withLock { $0 } == 2)
    }

    /// A name is the program's figure or swift-metrics', never both: adding a taken name
    /// throws, and a swift-metrics series of a figure's name is shown nowhere.
    @Test func aFiguresNameIsItsOwn() throws {
        let tree = ProcTree()
        let metrics = try ProcFSMetrics(tree: tree, expositionFile: "exposition")
        try metrics.addCounter(label: "ticks") { 1 }
        #expect(throws: ProcTreeError.exists("ticks_total")) { try metrics.addCounter(label: "ticks_total") { 2 } }
        metrics.makeCounter(label: "ticks", dimensions: []).increment(by: 5)
        metrics.makeMeter(label: "level", dimensions: []).set(Int64(3))
        #expect(throws: ProcTreeError.exists("level")) { try metrics.addGauge(label: "level") { 4 } }
        #expect(throws: ProcTreeError.exists("exposition")) { try metrics.addGauge(label: "exposition") { 4 } }
        #expect(text(tree, "metrics/ticks_total") == "1\n")
        #expect(text(tree, "metrics/level") == "3\n")
        #expect(text(tree, "metrics/exposition") == """
            # HELP level level
            # TYPE level gauge
            level 3
            # HELP ticks_total ticks
            # TYPE ticks_total counter
            ticks_total 1

            """, "a name whose file could not be made is not kept")
    }

    /// A metric named in `help` is described by it, escaped as the format asks; others by their label.
    @Test func helpTextsDescribeTheMetricsTheyName() throws {
        let tree = ProcTree()
        let metrics = try ProcFSMetrics(tree: tree, help: ["ticks": "Ticks so far.\nA \\ B"])
        metrics.makeCounter(label: "ticks", dimensions: []).increment(by: 1)
        metrics.makeMeter(label: "depth", dimensions: []).set(Int64(4))
        #expect(text(tree, "metrics/metrics.prom") == """
            # HELP depth depth
            # TYPE depth gauge
            depth 4
            # HELP ticks_total Ticks so far.\\nA \\\\ B
            # TYPE ticks_total counter
            ticks_total 1

            """)
    }

    /// Each label set is a line of the metric's file and a series of the exposition; the same
    /// labels give the same series; a metric whose last series is destroyed loses its file.
    @Test func labelSetsAreSeriesAndDestroyingTheLastRemovesTheFile() throws {
        let tree = ProcTree()
        let metrics = try ProcFSMetrics(tree: tree)
        let get = metrics.makeCounter(label: "requests", dimensions: [("method", "GET")])
        let put = metrics.makeCounter(label: "requests", dimensions: [("method", "PUT \"x\"\n")])
        #expect(metrics.makeCounter(label: "requests", dimensions: [("method", "GET")]) === get)
        get.increment(by: 2)
        put.increment(by: 1)
        #expect(text(tree, "metrics/requests_total") == "method=\"GET\" 2\nmethod=\"PUT \\\"x\\\"\\n\" 1\n")
        #expect(text(tree, "metrics/metrics.prom")?.contains("requests_total{method=\"GET\"} 2\n") == true)
        metrics.destroyCounter(get)
        #expect(text(tree, "metrics/requests_total") == "method=\"PUT \\\"x\\\"\\n\" 1\n")
        metrics.destroyCounter(put)
        #expect(tree.entry(atPath: "metrics/requests_total") == nil)
        #expect(text(tree, "metrics/metrics.prom") == "")
    }

    @Test func namesAndNumbersAreWrittenAsPrometheusParsesThem() {
        #expect(Exposition.metricName("schedfs.timer-ticks") == "schedfs_timer_ticks")
        #expect(Exposition.metricName("9lives") == "_9lives")
        #expect(Exposition.metricName("é") == "_")
        #expect(Exposition.number(3) == "3" && Exposition.number(0.25) == "0.25")
        #expect(Exposition.number(.infinity) == "+Inf" && Exposition.number(-.infinity) == "-Inf")
        #expect(Exposition.number(.nan) == "NaN")
    }
}
