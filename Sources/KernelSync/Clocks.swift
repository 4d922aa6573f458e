import Glibc

/// Nanoseconds of one of the kernel's clocks (`clock_gettime`): `CLOCK_MONOTONIC` for the
/// deadlines a `timerfd` keeps, `CLOCK_BOOTTIME` for an instant that another process, or a
/// later read, must take as `ContinuousClock`'s.
@inlinable
package func clockNanoseconds(_ clock: clockid_t) -> Int64 {
    var now = timespec()
    clock_gettime(clock, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

extension ContinuousClock.Instant {
    /// The instant that `bootTime`, nanoseconds of `CLOCK_BOOTTIME` (ContinuousClock's clock on
    /// Linux), stands for. The boot-time clock is read first, so the instant is never before
    /// the one it stands for.
    package init(bootTimeNanoseconds bootTime: Int64) {
        let now = clockNanoseconds(CLOCK_BOOTTIME)
        self = .now - .nanoseconds(now - bootTime)
    }
}
