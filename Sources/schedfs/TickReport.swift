import TaskQueue

/// The tick source's figures as one log line, which `make bench` also reads:
/// `ticks: 1000 of 1000 due at hz=100 (pace 1.0000); lateness p50 52 µs, p99 80 µs, max 210 µs; 0 late wake-ups`.
struct TickReport: CustomStringConvertible {
    let statistics: TickStatistics
    let hz: Int

    var description: String {
        let lateness = statistics.lateness
        let pace = (statistics.pace * 10_000).rounded() / 10_000
        return "ticks: \(statistics.ticks) of \(statistics.due) due at hz=\(hz) (pace \(pace)); "
            + "lateness p50 \(lateness.percentile(0.5) / 1000) µs, p99 \(lateness.percentile(0.99) / 1000) µs, "
            + "max \(lateness.maximum / 1000) µs; \(statistics.lateWakeUps) late wake-ups"
    }
}
