import CLinux
import KernelSync
import SystemPackage
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
        /// Waiting for the events failed: the daemon can no longer tell when to stop, so it
        /// stops now.
        case failed(Errno)

        public var description: String {
            switch self {
            case .signal(let number): "signal \(String(cString: strsignal(number)).lowercased()) (\(Self.name(of: number)))"
            case .unmounted: "unmount (fusermount3 -u or umount)"
            case .failed(let error): "a failure to wait for shutdown events (\(error))"
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

    private let signalDescriptor: FileDescriptor
    private let sessionEndDescriptor: FileDescriptor

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
    ///
    /// - Throws: the errno of `signalfd` or `eventfd`.
    public init() throws(Errno) {
        var set = Self.signalSet
        let signals = signalfd(-1, &set, Int32(SFD_CLOEXEC))
        guard signals >= 0 else { throw Errno(rawValue: errno) }
        let sessionEnd = eventfd(0, Int32(EFD_CLOEXEC))
        guard sessionEnd >= 0 else {
            let failure = Errno(rawValue: errno)
            close(signals)
            throw failure
        }
        signalDescriptor = FileDescriptor(rawValue: signals)
        sessionEndDescriptor = FileDescriptor(rawValue: sessionEnd)
    }

    deinit {
        try? signalDescriptor.close()
        try? sessionEndDescriptor.close()
    }

    /// Records that the kernel has ended the FUSE session; safe from any thread.
    public func sessionEnded() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { try? sessionEndDescriptor.write($0) }
    }

    /// Sleeps until a shutdown signal arrives or the session ends. This is the daemon's idle
    /// state, so it has no time limit: one of the two is what ends a daemon's life, unless
    /// waiting itself fails (``Cause/failed(_:)``), which ends it too.
    public func next() -> Cause {
        var fds = [
            pollfd(fd: signalDescriptor.rawValue, events: Int16(POLLIN), revents: 0),
            pollfd(fd: sessionEndDescriptor.rawValue, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            do {
                _ = try retryingOnInterrupt { poll(&fds, nfds_t(fds.count), -1) }
                if fds[0].revents & Int16(POLLIN) != 0 {
                    var info = signalfd_siginfo()
                    let count = try withUnsafeMutableBytes(of: &info) { try signalDescriptor.read(into: $0) }
                    if count == MemoryLayout<signalfd_siginfo>.size { return .signal(Int32(info.ssi_signo)) }
                }
                if fds[1].revents != 0 { return .unmounted }
                if fds[0].revents & Int16(POLLERR | POLLNVAL) != 0 { return .failed(.badFileDescriptor) }
            } catch {
                return .failed(error as? Errno ?? .ioError)
            }
        }
    }
}
