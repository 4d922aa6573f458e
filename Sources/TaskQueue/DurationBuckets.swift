import KernelSync

/// Durations counted in a few fixed buckets, with their sum: the figures of a Prometheus
/// histogram, kept where the durations are measured (as a ``TickSource`` keeps its ticks'
/// lateness), so that showing them costs nothing until someone reads them.
public struct DurationBuckets: Sendable, Equatable {
    /// The buckets' upper bounds, in nanoseconds, ascending.
    public let bounds: [Int64]
    /// How many durations fell in each bucket: at most `bounds[0]`, then above `bounds[i - 1]`
    /// and at most `bounds[i]`, then, last, above every bound (one more than ``bounds``).
    public private(set) var counts: [UInt64]
    /// The sum of the durations recorded, in nanoseconds; negative ones count as zero.
    public private(set) var sum: Int64 = 0

    /// Buckets with these upper bounds (in any order), and one above them all.
    public init(bounds: [Duration]) {
        self.bounds = bounds.map(\.nanoseconds).sorted()
        counts = Array(repeating: 0, count: bounds.count + 1)
    }

    /// How many durations were recorded.
    public var count: UInt64 { counts.reduce(0, +) }

    /// Records one duration; a negative one counts as zero.
    public mutating func record(nanoseconds: Int64) {
        let value = max(nanoseconds, 0)
        var bucket = 0
        while bucket < bounds.count, value > bounds[bucket] { bucket += 1 }
        counts[bucket] += 1
        sum += value
    }
}
