import TaskQueue

/// The texts of the timer's files, made from what the task queue and tick source measure.
public enum TimerText {
    /// `timer/hz` and `timer/ticks`: one number and a newline.
    public static func number<Number: BinaryInteger>(_ value: Number) -> String {
        "\(value)\n"
    }

    /// `timer/queue`: a header, then one line per queued task, in queue order: its name, how
    /// many times it has run, and when it was last queued, in seconds since `start`.
    public static func queue(_ tasks: [QueueTask], since start: ContinuousClock.Instant) -> String {
        var text = "name runs queued_since\n"
        for task in tasks {
            text += "\(task.name) \(task.runs) \(queuedSince(task.queuedSince, start: start))"
        }
        return text
    }

    /// `timer/tasks/<name>/queued_since`: when the task was last queued, in seconds since
    /// `start`, or `-` if it is not queued.
    public static func queuedSince(_ instant: ContinuousClock.Instant?, start: ContinuousClock.Instant) -> String {
        (instant.map { seconds($0 - start, decimals: 6) } ?? "-") + "\n"
    }

    /// `timer/latency`: how late the ticks came, in µs, and how many ran late in a burst.
    public static func latency(_ statistics: TickStatistics) -> String {
        let lateness = statistics.lateness
        return """
            p50_us \(lateness.percentile(0.5) / 1000)
            p99_us \(lateness.percentile(0.99) / 1000)
            max_us \(lateness.maximum / 1000)
            missed_ticks \(statistics.missedTicks)

            """
    }

    /// `uptime`, as `/proc/uptime` prints it: seconds since mount, and of those the seconds the
    /// timer thread spent idle, each with two decimals.
    public static func uptime(_ elapsed: Duration, busy: Duration) -> String {
        "\(seconds(elapsed, decimals: 2)) \(seconds(max(elapsed - busy, .zero), decimals: 2))\n"
    }

    /// `duration` in seconds with `decimals` digits after the point, truncated as the kernel does.
    static func seconds(_ duration: Duration, decimals: Int) -> String {
        let (whole, attoseconds) = duration.components
        var scale: Int64 = 1
        for _ in 0..<decimals { scale *= 10 }
        let fraction = attoseconds / (1_000_000_000_000_000_000 / scale)
        let digits = String(fraction)
        return "\(whole)." + String(repeating: "0", count: decimals - digits.count) + digits
    }
}
