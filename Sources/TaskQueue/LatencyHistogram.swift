/// A histogram of durations in nanoseconds, with 16 buckets to each power of two (about 6 %
/// precision) and constant memory, for percentiles of tick lateness.
public struct LatencyHistogram: Sendable, Equatable {
    private static let subBuckets = 16
    private var counts = [UInt64](repeating: 0, count: 61 * 16)
    /// How many durations were recorded.
    public private(set) var count: UInt64 = 0
    /// The longest duration recorded.
    public private(set) var maximum: Int64 = 0

    public init() {}

    /// Records one duration; negative ones count as zero.
    public mutating func record(nanoseconds: Int64) {
        let value = max(nanoseconds, 0)
        counts[Self.bucket(of: value)] += 1
        count += 1
        maximum = max(maximum, value)
    }

    /// The duration below which `fraction` (0 to 1) of the recorded ones fall, rounded up to
    /// its bucket's bound; 0 when nothing was recorded.
    public func percentile(_ fraction: Double) -> Int64 {
        guard count > 0 else { return 0 }
        let wanted = max(1, UInt64((Double(count) * fraction).rounded(.up)))
        var seen: UInt64 = 0
        for (bucket, bucketCount) in counts.enumerated() where bucketCount > 0 {
            seen += bucketCount
            if seen >= wanted { return min(Self.upperBound(of: bucket), maximum) }
        }
        return maximum
    }

    static func bucket(of value: Int64) -> Int {
        if value < Int64(subBuckets) { return Int(value) }
        let exponent = 63 - value.leadingZeroBitCount
        let mantissa = Int(value >> (exponent - 4)) & (subBuckets - 1)
        return (exponent - 3) * subBuckets + mantissa
    }

    static func upperBound(of bucket: Int) -> Int64 {
        if bucket < subBuckets { return Int64(bucket) }
        let exponent = bucket / subBuckets + 3
        let mantissa = Int64(bucket % subBuckets)
        return ((Int64(subBuckets) + mantissa + 1) << (exponent - 4)) - 1
    }
}

/// What a ``TickSource`` measured of itself.
public struct TickStatistics: Sendable, Equatable {
    /// Ticks delivered: handler calls, and before them those of the position the source went
    /// on from (``TickSource/start(continuing:)``).
    public var ticks: UInt64 = 0
    /// Ticks this source delivered itself, from 0 whatever position it went on from.
    public var delivered: UInt64 = 0
    /// Deadlines passed from the start until the statistics were read.
    public var due: UInt64 = 0
    /// Wake-ups that found more than one deadline passed (ticks delivered late, in a burst).
    public var lateWakeUps: UInt64 = 0
    /// Ticks whose deadline passed while the thread still waited to run an earlier one: each
    /// ran late, in a burst.
    public var missedTicks: UInt64 = 0
    /// How long the handlers ran, in nanoseconds; the rest of the time the tick thread slept.
    public var busyNanoseconds: Int64 = 0
    /// How late each tick ran after its own deadline.
    public var lateness = LatencyHistogram()
    /// The same, counted in the buckets the source was made with, with their sum.
    public var latenessBuckets = DurationBuckets(bounds: [])

    public init() {}

    /// Ticks delivered over ticks due: 1 when none was lost.
    public var pace: Double { due == 0 ? 1 : Double(ticks) / Double(due) }
}
