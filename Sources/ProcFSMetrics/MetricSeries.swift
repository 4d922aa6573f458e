import CoreMetrics
import Synchronization

/// One series of a metric: one set of labels, and its value.
protocol MetricSeries: AnyObject, Sendable {
    /// The lines of the Prometheus text format for this series, for the metric `name` and the
    /// labels already written as `{…}` (or empty).
    func expositionLines(name: String, labels: String) -> [String]
    /// The value as the metric's own file shows it.
    var value: String { get }
}

/// A counter: one atomic integer, so an update takes no lock a reader of the tree holds.
final class CounterSeries: CounterHandler, MetricSeries {
    private let count = Atomic<Int64>(0)

    func increment(by amount: Int64) {
        count.add(amount, ordering: .relaxed)
    }

    func reset() {
        count.store(0, ordering: .relaxed)
    }

    var value: String { "\(count.load(ordering: .relaxed))" }

    func expositionLines(name: String, labels: String) -> [String] {
        ["\(name)\(labels) \(value)"]
    }
}

/// A gauge (a meter, or a recorder that does not aggregate): the last value, kept as the bits
/// of a `Double` in one atomic word.
final class GaugeSeries: MeterHandler, RecorderHandler, MetricSeries {
    private let bits = Atomic<UInt64>(0.0.bitPattern)

    func set(_ value: Int64) { set(Double(value)) }

    func set(_ value: Double) {
        bits.store(value.bitPattern, ordering: .relaxed)
    }

    func record(_ value: Int64) { set(Double(value)) }

    func record(_ value: Double) { set(value) }

    func increment(by amount: Double) {
        var current = bits.load(ordering: .relaxed)
        while true {
            let (exchanged, found) = bits.compareExchange(
                expected: current, desired: (Double(bitPattern: current) + amount).bitPattern, ordering: .relaxed)
            if exchanged { return }
            current = found
        }
    }

    func decrement(by amount: Double) { increment(by: -amount) }

    var value: String { Exposition.number(Double(bitPattern: bits.load(ordering: .relaxed))) }

    func expositionLines(name: String, labels: String) -> [String] {
        ["\(name)\(labels) \(value)"]
    }
}

/// A histogram (a timer, in seconds, or a recorder that aggregates): bucket counts, a sum and a
/// count, changed together under one small lock so that a scrape sees each observation whole.
final class HistogramSeries: RecorderHandler, TimerHandler, MetricSeries {
    /// The upper bounds of the buckets, ascending; `+Inf` is implied.
    let bounds: [Double]
    /// What one recorded unit is in the exposition: 1 for a recorder, 1e-9 for a timer's
    /// nanoseconds, which Prometheus shows in seconds.
    private let scale: Double
    private let figures: Mutex<HistogramFigures>

    init(bounds: [Double], scale: Double) {
        self.bounds = bounds
        self.scale = scale
        figures = Mutex(HistogramFigures(counts: Array(repeating: 0, count: bounds.count + 1), sum: 0))
    }

    func record(_ value: Int64) { observe(Double(value) * scale) }

    func record(_ value: Double) { observe(value * scale) }

    func recordNanoseconds(_ duration: Int64) { observe(Double(duration) * scale) }

    private func observe(_ value: Double) {
        let bucket = bounds.firstIndex { value <= $0 } ?? bounds.count
        figures.withLock { figures in
            figures.counts[bucket] += 1
            figures.sum += value
        }
    }

    var value: String { figures.withLock { $0 }.value }

    func expositionLines(name: String, labels: String) -> [String] {
        figures.withLock { $0 }.expositionLines(name: name, labels: labels, bounds: bounds)
    }
}

/// A counter the program keeps itself, read each time it is shown.
final class CounterReading: MetricSeries {
    private let read: @Sendable () -> UInt64

    init(_ read: @escaping @Sendable () -> UInt64) {
        self.read = read
    }

    var value: String { "\(read())" }

    func expositionLines(name: String, labels: String) -> [String] {
        ["\(name)\(labels) \(value)"]
    }
}

/// A gauge the program keeps itself, read each time it is shown.
final class GaugeReading: MetricSeries {
    private let read: @Sendable () -> Double

    init(_ read: @escaping @Sendable () -> Double) {
        self.read = read
    }

    var value: String { Exposition.number(read()) }

    func expositionLines(name: String, labels: String) -> [String] {
        ["\(name)\(labels) \(value)"]
    }
}

/// A histogram the program keeps itself, read each time it is shown.
final class HistogramReading: MetricSeries {
    let bounds: [Double]
    private let read: @Sendable () -> HistogramFigures

    init(bounds: [Double], _ read: @escaping @Sendable () -> HistogramFigures) {
        self.bounds = bounds
        self.read = read
    }

    var value: String { read().value }

    func expositionLines(name: String, labels: String) -> [String] {
        read().expositionLines(name: name, labels: labels, bounds: bounds)
    }
}

extension HistogramFigures {
    /// As a histogram's own file shows it: `count N sum S`.
    var value: String { "count \(count) sum \(Exposition.number(sum))" }

    /// The lines of the Prometheus text format: a cumulative count per bound, `+Inf`, the sum
    /// and the count. Counts missing for some bounds count as 0.
    func expositionLines(name: String, labels: String, bounds: [Double]) -> [String] {
        var lines: [String] = []
        var cumulative: UInt64 = 0
        for (index, bound) in bounds.enumerated() {
            cumulative += index < counts.count ? counts[index] : 0
            lines.append("\(name)_bucket\(Exposition.labels(labels, adding: "le", Exposition.number(bound))) \(cumulative)")
        }
        lines.append("\(name)_bucket\(Exposition.labels(labels, adding: "le", "+Inf")) \(count)")
        lines.append("\(name)_sum\(labels) \(Exposition.number(sum))")
        lines.append("\(name)_count\(labels) \(count)")
        return lines
    }
}
