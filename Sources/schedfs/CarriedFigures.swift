import Glibc
import KernelSync
import ProcFS
import TaskQueue

/// What one server leaves the next in the keeper's memory (``KeptMount/value(named:)``): the
/// routine's count and where the tick deadlines stand. Each is stored as it changes, so a
/// server killed at any instant leaves the next one at most one tick behind, which it then
/// delivers again.
struct CarriedFigures: Sendable {
    /// The routine's count, which `sched` shows.
    let calls: CarriedValue
    private let hz: CarriedValue
    private let first: CarriedValue
    private let ticksBefore: CarriedValue
    private let ticks: CarriedValue
    /// When the mount was made, in nanoseconds of the boot-time clock (ContinuousClock's).
    private let mounted: CarriedValue

    init(_ kept: KeptMount) throws(KeeperError) {
        func value(_ name: String) throws(KeeperError) -> CarriedValue {
            guard let value = kept.value(named: name) else { throw .server("no room for \(name) in the keeper's state") }
            return value
        }
        calls = try value("sched.calls")
        hz = try value("timer.hz")
        first = try value("timer.first")
        ticksBefore = try value("timer.ticks-before")
        ticks = try value("timer.ticks")
        mounted = try value("mount.started")
    }

    /// When the mount was made: stored by the first server, read by the others.
    var mountedAt: ContinuousClock.Instant {
        if mounted.load() == 0 { mounted.store(UInt64(clockNanoseconds(CLOCK_BOOTTIME))) }
        return ContinuousClock.Instant(bootTimeNanoseconds: Int64(mounted.load()))
    }

    /// Where the last server's ticks stood; `nil` for the first server.
    var position: TickSource.Position? {
        let first = Int64(bitPattern: first.load())
        guard first != 0 else { return nil }
        return TickSource.Position(
            hz: Int(hz.load()), first: first, ticksBefore: ticksBefore.load(), ticks: ticks.load())
    }

    /// Stores where the ticks stand after a tick (on the tick thread).
    func save(_ position: TickSource.Position) {
        ticks.store(position.ticks)
        if first.load() != UInt64(bitPattern: position.first) || hz.load() != UInt64(position.hz) {
            hz.store(UInt64(position.hz))
            ticksBefore.store(position.ticksBefore)
            first.store(UInt64(bitPattern: position.first))
        }
    }
}
