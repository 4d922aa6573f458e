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

/// A histogram (a timer, in seconds, or a recorder that aggregates): cumulative bucket counts,
/// a sum and a count, changed together under one small lock so that a scrape sees each
/// observation whole.
final class HistogramSeries: RecorderHandler, TimerHandler, MetricSeries {
    private struct Counts {
        var buckets: [UInt64]
        var sum = 0.0
        var count: UInt64 = 0
    }

    /// The upper bounds of the buckets, ascending; `+Inf` is implied.
    let bounds: [Double]
    /// What one recorded unit is in the exposition: 1 for a recorder, 1e-9 for a timer's
    /// nanoseconds, which Prometheus shows in seconds.
    private let scale: Double
    private let counts: Mutex<Counts>

    init(bounds: [Double], scale: Double) {
        self.bounds = bounds
        self.scale = scale
        counts = Mutex(Counts(buckets: Array(repeating: 0, count: bounds.count)))
    }

    func record(_ value: Int64) { observe(Double(value) * scale) }

    func record(_ value: Double) { observe(value * scale) }

    func recordNanoseconds(_ duration: Int64) { observe(Double(duration) * scale) }

    private func observe(_ value: Double) {
        let bucket = bounds.firstIndex { value <= $0 }
        counts.withLock { counts in
            if let bucket { counts.buckets[bucket] += 1 }
            counts.sum += value
            counts.count += 1
        }
    }

    var value: String {
        let (sum, count) = counts.withLock { ($0.sum, $0.count) }
        return "count \(count) sum \(Exposition.number(sum))"
    }

    func expositionLines(name: String, labels: String) -> [String] {
        let counts = counts.withLock { $0 }
        var lines: [String] = []
        var cumulative: UInt64 = 0
        for (bound, inBucket) in zip(bounds, counts.buckets) {
            cumulative += inBucket
            lines.append("\(name)_bucket\(Exposition.labels(labels, adding: "le", Exposition.number(bound))) \(cumulative)")
        }
        lines.append("\(name)_bucket\(Exposition.labels(labels, adding: "le", "+Inf")) \(counts.count)")
        lines.append("\(name)_sum\(labels) \(Exposition.number(counts.sum))")
        lines.append("\(name)_count\(labels) \(counts.count)")
        return lines
    }
}
