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

/// The shutdown signal that started the cleanup protocol, if one did (the first); without one,
/// the end of the session did.
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

/// schedfs's module as a service, beside the ``ProcFSService`` that serves its tree: it says
/// so once the mount is served, and on a graceful shutdown, which comes first on a signal and
/// after the session's end on an unmount, runs the module's part of the cleanup protocol:
/// unregister `sched`, wait for the routine to leave the queue, stop the ticks. The service
/// group then shuts the ``ProcFSService`` down, which stops serving.
struct SchedService: Service {
    /// How the module's part of the protocol went; `nil` until it has run.
    final class Outcome: Sendable {
        private let result = Mutex<(status: Int32, started: ContinuousClock.Instant)?>(nil)

        /// The exit status so far, and when the protocol started.
        var status: (status: Int32, started: ContinuousClock.Instant)? { result.withLock { $0 } }

        fileprivate func record(_ status: Int32, startedAt started: ContinuousClock.Instant) {
            result.withLock { $0 = (status, started) }
        }
    }

    /// How long the tree may take to be served.
    static let servingTimeout: Duration = ServerSupervisor.startTimeout

    let outcome = Outcome()
    private let procfs: ProcFSService
    /// Says that the tree is served; dropped as it returns (it holds the module and the timer,
    /// and the group may keep this service until after the process has begun to exit).
    private let served: OneShot<Void>
    /// The module's part of the cleanup protocol, started by the cause given; it returns the
    /// exit status, and is dropped as it returns (it holds the module and the timer).
    private let cleanUp: OneShot<Int32>

    /// - Parameters:
    ///   - served: says that the tree is served.
    ///   - cleanUp: the module's part of the cleanup protocol, started by the cause given;
    ///     it returns the exit status so far, and blocks for a bounded time.
    init(
        procfs: ProcFSService, trigger: ShutdownTrigger,
        served: @escaping @Sendable () -> Void, cleanUp: @escaping @Sendable (ShutdownCause) -> Int32
    ) {
        self.procfs = procfs
        self.served = OneShot(served)
        // With no signal recorded, what shut the group down is the end of the session.
        self.cleanUp = OneShot { [trigger] in cleanUp(trigger.cause ?? .unmounted) }
    }

    func run() async throws {
        // Not served (the group fails with why): there is nothing to clean up but the mount,
        // which the keeper holds.
        do {
            try await procfs.waitUntilServing(timeout: Self.servingTimeout)
        } catch FuseServerError.stopped {
            // Served, and unmounted before this saw it: the protocol runs all the same.
        }
        _ = served.run()
        // Cancelled rather than shut down gracefully: the group failed, and so does the exit.
        let failed = (try? await gracefulShutdown()) == nil
        let started = ContinuousClock.now
        let status = (try? await runBlocking(cleanUp)) ?? 1
        outcome.record(failed ? 1 : status, startedAt: started)
    }
}
