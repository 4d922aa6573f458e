/// The text of the `sched` file, as the original module printed it.
public enum SchedText {
    /// `Timer was called N times so far\n`.
    public static func format(calls: UInt64) -> String {
        "Timer was called \(calls) times so far\n"
    }
}
