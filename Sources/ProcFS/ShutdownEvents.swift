import CLinux
import Glibc

/// What starts the cleanup protocol: a shutdown signal, or the end of the FUSE session.
///
/// The signals are blocked in the process and read from a `signalfd`, so no thread of the
/// process ever runs a handler for them, and the main thread sees them in order with the
/// session's end, in one `poll`.
public final class ShutdownEvents: Sendable {
    /// The signals that start cleanup, as `kill`, Ctrl-C and a closed terminal send them.
    public static let signals = [SIGINT, SIGTERM, SIGHUP]

    /// What ended the daemon's service.
    public enum Cause: CustomStringConvertible, Sendable {
        /// A shutdown signal, by number.
        case signal(Int32)
        /// The kernel ended the FUSE session: `fusermount3 -u` or `umount`.
        case unmounted

        public var description: String {
            switch self {
            case .signal(let number): "signal \(String(cString: strsignal(number)).lowercased()) (\(Self.name(of: number)))"
            case .unmounted: "unmount (fusermount3 -u or umount)"
            }
        }

        private static func name(of signal: Int32) -> String {
            switch signal {
            case SIGINT: "SIGINT"
            case SIGTERM: "SIGTERM"
            case SIGHUP: "SIGHUP"
            default: "signal \(signal)"
            }
        }
    }

    private let signalDescriptor: Int32
    private let sessionEndDescriptor: Int32

    /// Blocks the shutdown signals in the calling thread, and so in every thread it creates
    /// after this; call it before any other thread exists.
    public static func blockSignals() {
        var set = signalSet
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// ``signals`` as a `sigset_t`.
    private static var signalSet: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        return set
    }

    /// Opens the descriptors that carry the events; call ``blockSignals()`` first.
    public init() throws(ShutdownEventsError) {
        var set = Self.signalSet
        signalDescriptor = signalfd(-1, &set, Int32(SFD_CLOEXEC))
        guard signalDescriptor >= 0 else { throw ShutdownEventsError(call: "signalfd", errno: errno) }
        sessionEndDescriptor = eventfd(0, Int32(EFD_CLOEXEC))
        guard sessionEndDescriptor >= 0 else { throw ShutdownEventsError(call: "eventfd", errno: errno) }
    }

    deinit {
        close(signalDescriptor)
        close(sessionEndDescriptor)
    }

    /// Records that the kernel has ended the FUSE session; safe from any thread.
    public func sessionEnded() {
        var one: UInt64 = 1
        _ = write(sessionEndDescriptor, &one, MemoryLayout<UInt64>.size)
    }

    /// Sleeps until a shutdown signal arrives or the session ends. This is the daemon's idle
    /// state, so it has no time limit: one of the two is what ends a daemon's life.
    public func next() -> Cause {
        var fds = [
            pollfd(fd: signalDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: sessionEndDescriptor, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            guard poll(&fds, nfds_t(fds.count), -1) > 0 else { continue }
            if fds[0].revents & Int16(POLLIN) != 0 {
                var info = signalfd_siginfo()
                if read(signalDescriptor, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
                    return .signal(Int32(info.ssi_signo))
                }
            }
            if fds[1].revents != 0 { return .unmounted }
        }
    }
}

/// The descriptors for shutdown events could not be opened.
public struct ShutdownEventsError: Error, CustomStringConvertible {
    /// The system call that failed.
    public let call: String
    /// Its errno.
    public let errno: Int32
    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}
