import CLinux
import Glibc
import KernelSync
import Synchronization

/// The timer interrupt: calls a handler once per tick, `hz` times a second.
///
/// Ticks fall on absolute deadlines `start + k / hz` of the monotonic clock, kept by a kernel
/// `timerfd`, so they do not drift however late one handler runs. When the thread wakes late and
/// finds several deadlines passed, it calls the handler once for each: the number of calls
/// always equals the number of deadlines passed.
public final class TickSource: Sendable {
    /// Ticks per second.
    public let hz: Int
    private let onTick: @Sendable () -> Void
    private let timer: Int32
    private let stopEvent: Int32
    private let thread = Mutex<KernelThread?>(nil)

    /// The accepted tick rates, as the kernel's `CONFIG_HZ` would never exceed.
    public static let hzRange = 1...10_000

    /// Prepares a tick source; nothing ticks until ``start()``.
    ///
    /// - Throws: ``TickSourceError`` if `hz` is out of ``hzRange`` or the system has no timer to give.
    public init(hz: Int, onTick: @escaping @Sendable () -> Void) throws(TickSourceError) {
        guard Self.hzRange.contains(hz) else { throw .badRate(hz) }
        let timer = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC))
        guard timer >= 0 else { throw .system("timerfd_create", errno) }
        let stopEvent = eventfd(0, Int32(EFD_CLOEXEC))
        guard stopEvent >= 0 else {
            let error = errno
            close(timer)
            throw .system("eventfd", error)
        }
        self.hz = hz
        self.onTick = onTick
        self.timer = timer
        self.stopEvent = stopEvent
    }

    deinit {
        close(timer)
        close(stopEvent)
    }

    /// The time between two ticks.
    public var period: Duration { .nanoseconds(1_000_000_000 / hz) }

    /// Arms the timer and starts the tick thread; the first tick is one period from now.
    public func start() throws {
        let periodNanoseconds = 1_000_000_000 / hz
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        var first = now
        first.tv_nsec += periodNanoseconds
        first.tv_sec += first.tv_nsec / 1_000_000_000
        first.tv_nsec %= 1_000_000_000
        var spec = itimerspec(
            it_interval: timespec(tv_sec: periodNanoseconds / 1_000_000_000, tv_nsec: periodNanoseconds % 1_000_000_000),
            it_value: first)
        guard timerfd_settime(timer, Int32(TFD_TIMER_ABSTIME), &spec, nil) == 0 else {
            throw TickSourceError.system("timerfd_settime", errno)
        }
        let started = try KernelThread(name: "schedfs-tick") { [self] in tickLoop() }
        thread.withLock { $0 = started }
    }

    /// Stops the ticks and waits at most `timeout` for the tick thread to end.
    ///
    /// - Returns: `false` if the tick thread was still running when the time was up.
    public func stop(timeout: Duration) -> Bool {
        var one: UInt64 = 1
        _ = write(stopEvent, &one, MemoryLayout<UInt64>.size)
        guard let running = thread.withLock({ $0 }) else { return true }
        return running.join(timeout: timeout)
    }

    private func tickLoop() {
        var fds = [
            pollfd(fd: timer, events: Int16(POLLIN), revents: 0),
            pollfd(fd: stopEvent, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            // Bounded by the timer: it becomes readable once a period.
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 { return }
            var expirations: UInt64 = 0
            if read(timer, &expirations, MemoryLayout<UInt64>.size) == MemoryLayout<UInt64>.size {
                for _ in 0..<expirations { onTick() }
            }
        }
    }
}

/// A tick source could not be made or started.
public enum TickSourceError: Error, CustomStringConvertible {
    case badRate(Int)
    case system(String, Int32)

    public var description: String {
        switch self {
        case .badRate(let hz):
            "tick rate \(hz) is out of range \(TickSource.hzRange.lowerBound)...\(TickSource.hzRange.upperBound)"
        case .system(let call, let error):
            "\(call): \(String(cString: strerror(error)))"
        }
    }
}
