/// The text of the `sched` file, as the original module printed it.
public enum SchedText {
    /// `Timer was called N times so far\n`.
    public static func format(calls: UInt64) -> String {
        "Timer was called \(calls) times so far\n"
    }

    /// Whether the text at `calls` is longer than at one call fewer: when the count gains a
    /// digit (10, 100, 1000, …).
    static func isLonger(calls: UInt64) -> Bool {
        var power: UInt64 = 1
        while power < calls, power <= UInt64.max / 10 { power *= 10 }
        return power == calls && calls > 1
    }
}
