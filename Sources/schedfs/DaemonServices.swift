import Glibc
import KernelSync
import ProcFS
import ServiceLifecycle
import Synchronization
import UnixSignals

/// What starts the cleanup protocol: a shutdown signal, or the end of the FUSE session.
enum ShutdownCause: CustomStringConvertible, Sendable {
    /// A shutdown signal, by number.
    case signal(Int32)
    /// The kernel ended the FUSE session: `fusermount3 -u` or `umount`.
    case unmounted

    var description: String {
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

/// What started the cleanup protocol: the first of a shutdown signal and an unmount.
final class ShutdownTrigger: Sendable {
    private let first = Mutex<ShutdownCause?>(nil)

    /// Records `cause`, unless another came first.
    func record(_ cause: ShutdownCause) {
        first.withLock { first in
            if first == nil { first = cause }
        }
    }

    /// The cause recorded first, if any.
    var cause: ShutdownCause? { first.withLock { $0 } }
}

/// Waits for SIGINT, SIGTERM or SIGHUP, and records it: its return shuts the service group
/// down, which starts the cleanup protocol.
struct ShutdownSignals: Service {
    let trigger: ShutdownTrigger
    private let signals: UnixSignalsSequence

    /// Starts catching the signals: make it before the daemon says it is ready, since a signal
    /// that comes before is not caught. (Until then they are blocked in every thread.)
    init(trigger: ShutdownTrigger) async {
        self.trigger = trigger
        signals = await UnixSignalsSequence(trapping: .sigint, .sigterm, .sighup)
    }

    func run() async {
        for await signal in signals.cancelOnGracefulShutdown() {
            trigger.record(.signal(signal.rawValue))
            return
        }
    }
}

/// The mounted daemon as a service: it serves until the session ends (`fusermount3 -u`,
/// `umount`) or the group shuts down (a signal), then runs the cleanup protocol, whose exit
/// status it keeps.
struct MountedDaemon: Service {
    /// The exit status the cleanup protocol gave; `nil` until it has run.
    final class Outcome: Sendable {
        let status = Mutex<Int32?>(nil)
    }

    let trigger: ShutdownTrigger
    let outcome = Outcome()
    /// Ends when the session ends; the daemon finishes it on a graceful shutdown too.
    private let sessionEnded: AsyncStream<Void>
    private let endWaiting: AsyncStream<Void>.Continuation
    /// The cleanup protocol, dropped as it returns.
    private let cleanUp: OneShot<Int32>

    /// - Parameter cleanUp: runs the cleanup protocol, started by the cause given, and returns
    ///   the exit status; it blocks for a bounded time, on a thread of its own.
    init(trigger: ShutdownTrigger, cleanUp: @escaping @Sendable (ShutdownCause?) -> Int32) {
        self.trigger = trigger
        self.cleanUp = OneShot { [trigger] in cleanUp(trigger.cause) }
        (sessionEnded, endWaiting) = AsyncStream<Void>.makeStream()
    }

    /// What the server calls when the kernel ends the session. It holds nothing of the server
    /// (the cleanup closure does): the server keeps it, and a cycle would keep the server.
    var onSessionEnd: @Sendable () -> Void {
        { [trigger, endWaiting] in
            trigger.record(.unmounted)
            endWaiting.finish()
        }
    }

    func run() async throws {
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                for await _ in sessionEnded {}
            } onGracefulShutdown: { [endWaiting] in
                endWaiting.finish()
            }
        } onCancel: { [endWaiting] in
            endWaiting.finish()
        }
        // Run and dropped on the blocking thread: what it holds (the server, the module) is
        // gone before the group ends, not when the task that ran this is freed, which may be
        // after the process has begun to exit. (The group runs a service once.)
        let status = try await runBlocking(cleanUp)
        outcome.status.withLock { $0 = status }
    }
}
