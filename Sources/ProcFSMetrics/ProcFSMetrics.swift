import CoreMetrics
import ProcFSCore
import Synchronization

/// A swift-metrics backend that shows every metric as files of a `ProcTree`: one file per
/// metric in a directory, one line per label set, and one file in the Prometheus text format
/// with them all, for node_exporter's textfile collector.
///
/// ```swift
/// let metrics = try ProcFSMetrics(tree: tree, expositionFile: "myserver.prom")
/// MetricsSystem.bootstrap(metrics)
/// Counter(label: "requests").increment()   // metrics/requests_total, and a line of myserver.prom
/// ```
///
/// A counter or gauge update is one atomic operation and takes no lock that a reader of the tree
/// holds; a histogram's takes only its own, briefly. Each file is made whole when it is opened,
/// so a scrape sees every update either whole or not at all.
///
/// - Counters are `counter`s, shown as `<label>_total`.
/// - Meters and recorders that do not aggregate are `gauge`s: the last value.
/// - Recorders that aggregate, and timers, are `histogram`s, with the buckets given at
///   ``init(tree:in:directory:expositionFile:recorderBuckets:timerBuckets:help:)``. Timers are
///   in seconds, as Prometheus's names say: a timer's name gains `_seconds` unless it ends so
///   already (`Timer(label: "request_duration")` is `metrics/request_duration_seconds`).
///
/// Labels become metric names as Prometheus requires: any character other than a letter, a
/// digit, `_` or `:` becomes `_`.
public final class ProcFSMetrics: MetricsFactory {
    /// The directory that holds the metrics' files.
    public let directory: ProcEntry
    private let tree: ProcTree
    private let recorderBuckets: [Double]
    private let timerBuckets: [Double]
    private let help: [String: String]
    private let registry = Registry()

    /// Prometheus's default buckets, in seconds for a timer.
    public static let defaultBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    /// One metric: its kind, and its series by label set. (Its file is found by its name, so
    /// that the registry, which the files' closures hold, holds no entry.)
    private struct Family: Sendable {
        enum Kind: String { case counter, gauge, histogram }
        let kind: Kind
        let help: String
        var series: [String: any MetricSeries] = [:]
        /// Whether the program keeps its one series itself (``addCounter(label:help:reading:)``
        /// and the like), so that swift-metrics may add none.
        var isReading = false
    }

    /// The metrics by name.
    private final class Registry: Sendable {
        let families = Mutex<[String: Family]>([:])
    }

    /// Makes the directory `directory` in `parent` (the root when `nil`) and in it the file
    /// `expositionFile`, in the Prometheus text format.
    ///
    /// - Parameters:
    ///   - tree: the tree to add the files to.
    ///   - parent: the directory to add `directory` to; the root when `nil`.
    ///   - directory: the name of the directory of the metrics' files.
    ///   - expositionFile: the name of the file with every metric in the Prometheus text format.
    ///   - recorderBuckets: the histogram buckets of a recorder that aggregates.
    ///   - timerBuckets: the histogram buckets of a timer, in seconds.
    ///   - help: what each metric means, by its swift-metrics label, for its `# HELP` line
    ///     (swift-metrics has no place for it); a metric not named here is described by its
    ///     label.
    /// - Throws: `ProcTreeError` when the names are taken or bad.
    public init(
        tree: ProcTree, in parent: ProcEntry? = nil, directory: String = "metrics",
        expositionFile: String = "metrics.prom", recorderBuckets: [Double] = ProcFSMetrics.defaultBuckets,
        timerBuckets: [Double] = ProcFSMetrics.defaultBuckets, help: [String: String] = [:]
    ) throws(ProcTreeError) {
        self.tree = tree
        self.help = help
        self.recorderBuckets = recorderBuckets.sorted()
        self.timerBuckets = timerBuckets.sorted()
        self.directory = try tree.makeDirectory(directory, in: parent)
        let registry = self.registry
        try tree.register(expositionFile, in: self.directory) {
            Self.exposition(registry.families.withLock { $0 })
        }
    }

    // MARK: MetricsFactory

    public func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler {
        let name = Exposition.metricName(label)
        return series(name.hasSuffix("_total") ? name : name + "_total", help: help[label] ?? label, .counter, dimensions) {
            CounterSeries()
        }
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> MeterHandler {
        series(Exposition.metricName(label), help: help[label] ?? label, .gauge, dimensions) { GaugeSeries() }
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler {
        let name = Exposition.metricName(label)
        if aggregate {
            return series(name, help: help[label] ?? label, .histogram, dimensions) { [recorderBuckets] in
                HistogramSeries(bounds: recorderBuckets, scale: 1)
            }
        }
        return series(name, help: help[label] ?? label, .gauge, dimensions) { GaugeSeries() }
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler {
        let name = Exposition.metricName(label)
        return series(name.hasSuffix("_seconds") ? name : name + "_seconds", help: help[label] ?? label, .histogram, dimensions) {
            [timerBuckets] in HistogramSeries(bounds: timerBuckets, scale: 1e-9)
        }
    }

    public func destroyCounter(_ handler: CounterHandler) { destroy(handler) }

    public func destroyMeter(_ handler: MeterHandler) { destroy(handler) }

    public func destroyRecorder(_ handler: RecorderHandler) { destroy(handler) }

    public func destroyTimer(_ handler: TimerHandler) { destroy(handler) }

    // MARK: Figures the program keeps

    /// Shows a counter that the program keeps itself, as client_golang's `CounterFunc` does:
    /// `reading` is called each time a file that shows it is made, and at no other time, so
    /// that counting costs the program nothing more while nobody reads. It is named as
    /// ``makeCounter(label:dimensions:)`` names a counter (with `_total`).
    ///
    /// - Parameters:
    ///   - label: its name, before `_total` and the characters Prometheus does not allow
    ///     become `_`.
    ///   - help: what it means; when `nil`, as the `help` given at
    ///     ``init(tree:in:directory:expositionFile:recorderBuckets:timerBuckets:help:)`` says,
    ///     or its label.
    ///   - reading: the value now; quick, and never decreasing but to start again from 0.
    /// - Throws: `ProcTreeError.exists` when a metric has that name already.
    public func addCounter(
        label: String, help: String? = nil, reading: @escaping @Sendable () -> UInt64
    ) throws(ProcTreeError) {
        let name = Exposition.metricName(label)
        try add(name.hasSuffix("_total") ? name : name + "_total", .counter, help ?? self.help[label] ?? label, CounterReading(reading))
    }

    /// Shows a gauge that the program keeps itself, as client_golang's `GaugeFunc` does:
    /// `reading` is called each time a file that shows it is made, and at no other time.
    ///
    /// - Parameters:
    ///   - label: its name, the characters Prometheus does not allow becoming `_`.
    ///   - help: what it means; as ``addCounter(label:help:reading:)`` says when `nil`.
    ///   - reading: the value now; quick.
    /// - Throws: `ProcTreeError.exists` when a metric has that name already.
    public func addGauge(
        label: String, help: String? = nil, reading: @escaping @Sendable () -> Double
    ) throws(ProcTreeError) {
        try add(Exposition.metricName(label), .gauge, help ?? self.help[label] ?? label, GaugeReading(reading))
    }

    /// Shows a histogram that the program keeps itself, as client_golang's constant histograms
    /// do: `reading` is called each time a file that shows it is made, and at no other time,
    /// so that observing costs the program only its own counting. Its name is its label's, in
    /// whatever unit the figures are (end it in `_seconds` for seconds, as Prometheus asks).
    ///
    /// - Parameters:
    ///   - label: its name, the characters Prometheus does not allow becoming `_`.
    ///   - help: what it means; as ``addCounter(label:help:reading:)`` says when `nil`.
    ///   - bounds: the upper bounds of its buckets, ascending; `+Inf` is implied.
    ///   - reading: the figures now, a count for each bucket of `bounds` and one above them.
    /// - Throws: `ProcTreeError.exists` when a metric has that name already.
    public func addHistogram(
        label: String, help: String? = nil, bounds: [Double], reading: @escaping @Sendable () -> HistogramFigures
    ) throws(ProcTreeError) {
        try add(Exposition.metricName(label), .histogram, help ?? self.help[label] ?? label, HistogramReading(bounds: bounds, reading))
    }

    /// Adds `series`, with no labels, as the one series of a new metric `name`, and its file.
    private func add(_ name: String, _ kind: Family.Kind, _ help: String, _ series: any MetricSeries) throws(ProcTreeError) {
        let added = registry.families.withLock { families in
            guard families[name] == nil else { return false }
            families[name] = Family(kind: kind, help: help, series: ["": series], isReading: true)
            return true
        }
        guard added else { throw .exists(name) }
        do {
            try addFile(for: name)
        } catch {
            registry.families.withLock { $0[name] = nil }
            throw error
        }
    }

    // MARK: Series

    /// The series of `name` with these labels: the one made before, or a new one from `make`.
    /// A metric's file is added with its first series. A name already used by a metric of
    /// another kind, or by one the program keeps itself, gets a series of its own that no file
    /// shows, as Prometheus cannot show one name with two types or two sources.
    private func series<Series: MetricSeries>(
        _ name: String, help: String, _ kind: Family.Kind, _ dimensions: [(String, String)], make: () -> Series
    ) -> Series {
        let labels = Exposition.labels(dimensions)
        let (series, isNewFamily) = registry.families.withLock { families -> (Series, Bool) in
            var family = families[name] ?? Family(kind: kind, help: help)
            guard family.kind == kind, !family.isReading else { return (make(), false) }
            if let existing = family.series[labels] as? Series { return (existing, false) }
            let made = make()
            let isNew = family.series.isEmpty
            family.series[labels] = made
            families[name] = family
            return (made, isNew)
        }
        if isNewFamily { try? addFile(for: name) }
        return series
    }

    /// Adds the file of metric `name`, which shows its series, a line each.
    private func addFile(for name: String) throws(ProcTreeError) {
        let registry = self.registry
        _ = try tree.register(name, in: directory) {
            Self.valueText(registry.families.withLock { $0[name] })
        }
    }

    /// Forgets the series `handler`; a metric with no series left loses its file.
    private func destroy(_ handler: AnyObject) {
        let emptied = registry.families.withLock { families -> String? in
            for (name, var family) in families {
                guard let labels = family.series.first(where: { $0.value === handler })?.key else { continue }
                family.series[labels] = nil
                if family.series.isEmpty {
                    families[name] = nil
                    return name
                }
                families[name] = family
                return nil
            }
            return nil
        }
        if let emptied { try? tree.remove(emptied, in: directory) }
    }

    // MARK: Texts

    /// A metric's own file: its value, or with labels one line per label set, `k="v" value`.
    private static func valueText(_ family: Family?) -> String {
        guard let family else { return "" }
        return family.series.sorted { $0.key < $1.key }.map { labels, series in
            labels.isEmpty ? series.value + "\n" : "\(labels.dropFirst().dropLast()) \(series.value)\n"
        }.joined()
    }

    /// Every metric in the Prometheus text format, by name.
    private static func exposition(_ families: [String: Family]) -> String {
        var text = ""
        for (name, family) in families.sorted(by: { $0.key < $1.key }) {
            text += "# HELP \(name) \(Exposition.help(family.help))\n# TYPE \(name) \(family.kind.rawValue)\n"
            for (labels, series) in family.series.sorted(by: { $0.key < $1.key }) {
                for line in series.expositionLines(name: name, labels: labels) { text += line + "\n" }
            }
        }
        return text
    }
}
