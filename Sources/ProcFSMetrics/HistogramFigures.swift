/// A histogram's figures as a program keeps them itself, for
/// ``ProcFSMetrics/addHistogram(label:help:bounds:reading:)``: how many observations fell in
/// each bucket, and their sum.
public struct HistogramFigures: Sendable, Equatable {
    /// Observations per bucket, not cumulative: at most the first bound, then above each bound
    /// and at most the next, then, last, above every bound (one more than the bounds).
    public var counts: [UInt64]
    /// The sum of the observations.
    public var sum: Double

    public init(counts: [UInt64], sum: Double) {
        self.counts = counts
        self.sum = sum
    }

    /// How many observations there were.
    public var count: UInt64 { counts.reduce(0, +) }
}
