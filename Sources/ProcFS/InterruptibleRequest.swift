import CFuse3
import Dispatch
import Glibc
import Synchronization

/// A request whose caller may be killed while the tree's callback makes its answer. A signal
/// to the caller has the kernel send `FUSE_INTERRUPT`, and libfuse calls back here, on the
/// thread that read the interrupt, while the request thread is still in the callback. When the
/// caller is dying (SIGKILL pending: `kill -9`, or a fatal signal such as Ctrl-C's), the
/// interrupt answers `EINTR` at once, and the caller ends: without this, the kernel waits
/// uninterruptibly for the answer to a request the server has read, however long the
/// callback takes. A caller that only takes a signal (a handler) is not answered early: its
/// call returns what procfs would, when the callback does. But the kernel interrupts a request
/// once, so such a caller is watched (``DyingCallerWatch``) until its request is answered, and
/// answered `EINTR` if it is killed meanwhile.
///
/// Exactly one side answers: whichever claims the request first. The other must not touch
/// it, since libfuse frees a request with its answer.
///
/// `@unchecked Sendable`: a `fuse_req_t` is libfuse's, and libfuse lets any thread answer a
/// request, once; the gate lets exactly one of the sides that hold it answer.
struct InterruptibleRequest: @unchecked Sendable {
    let request: fuse_req_t?
    private let gate: InterruptGate

    /// Lets an interrupt of `request` answer it from now on.
    ///
    /// - Returns: `nil` if the caller was killed already: the request is answered `EINTR`,
    ///   and must not be touched.
    init?(_ request: fuse_req_t?) {
        self.request = request
        gate = InterruptGate()
        // One reference for the callback, given back by whichever side answers. libfuse holds
        // the request's lock while it calls back, and `fuse_req_interrupt_func` takes that
        // lock, so the callback never runs after `claim()`. An interrupt that came before runs
        // the callback here, at once, with only this thread's hold on the request: then the
        // callback leaves the answer to this thread (replying inside would free the request
        // under libfuse's lock).
        fuse_req_interrupt_func(
            request,
            { request, data in
                let gate = Unmanaged<InterruptGate>.fromOpaque(data!)
                let caller = fuse_req_ctx(request)!.pointee.pid
                guard InterruptibleRequest.callerIsDying(caller) else {
                    DyingCallerWatch.watch(request, gate: gate.takeUnretainedValue(), caller: caller)
                    return
                }
                switch gate.takeUnretainedValue().interrupt() {
                case .answer:
                    fuse_reply_err(request, EINTR)
                    gate.release()
                case .leftToRegistration, .answeredAlready:
                    return
                }
            },
            Unmanaged.passRetained(gate).toOpaque())
        if !gate.arm() {
            fuse_req_interrupt_func(request, nil, nil)
            Unmanaged.passUnretained(gate).release()
            fuse_reply_err(request, EINTR)
            return nil
        }
    }

    /// Takes the right to answer the request.
    ///
    /// - Returns: `false` if the interrupt answered it: then the request is gone.
    func claim() -> Bool {
        guard gate.claim() else { return false }
        // Waits out a callback running now (it found the request claimed), and stops any after:
        // then the callback's reference can go.
        fuse_req_interrupt_func(request, nil, nil)
        Unmanaged.passUnretained(gate).release()
        return true
    }

    /// Whether the thread `thread`, which sent a request, has SIGKILL pending: it is being
    /// killed, by `kill -9` or by a signal whose action ends it (the kernel then sends SIGKILL
    /// to each of its threads). `false` when its `/proc/TID/status` cannot be read (another PID
    /// namespace).
    static func callerIsDying(_ thread: pid_t) -> Bool {
        guard thread > 0 else { return false }
        guard let status = readWholeFile("/proc/\(thread)/status") else { return false }
        let sigkill: UInt64 = 1 << (UInt64(SIGKILL) - 1)
        for line in status.split(separator: UInt8(ascii: "\n")) {
            let text = String(decoding: line, as: UTF8.self)
            guard text.hasPrefix("SigPnd:") || text.hasPrefix("ShdPnd:"),
                let pending = UInt64(text.dropFirst(7).drop { $0 == " " || $0 == "\t" }, radix: 16)
            else { continue }
            if pending & sigkill != 0 { return true }
        }
        return false
    }
}

/// Who answers an ``InterruptibleRequest``: its request thread, or the interrupt.
final class InterruptGate: Sendable {
    private static let registering = 0
    private static let armed = 1
    private static let claimed = 2
    private let state = Atomic<Int>(InterruptGate.registering)

    /// What an interrupt found.
    enum Interrupted {
        /// It is first: it answers.
        case answer
        /// It came before the registration ended: the registering thread answers.
        case leftToRegistration
        /// The request thread has answered.
        case answeredAlready
    }

    /// The registration has ended: the interrupt may answer from now on.
    ///
    /// - Returns: `false` if an interrupt came during it: then the registering thread answers.
    func arm() -> Bool {
        state.compareExchange(expected: Self.registering, desired: Self.armed, ordering: .acquiringAndReleasing).exchanged
    }

    /// The interrupt's claim.
    func interrupt() -> Interrupted {
        if state.compareExchange(expected: Self.armed, desired: Self.claimed, ordering: .acquiringAndReleasing).exchanged {
            return .answer
        }
        if state.compareExchange(expected: Self.registering, desired: Self.claimed, ordering: .acquiringAndReleasing).exchanged {
            return .leftToRegistration
        }
        return .answeredAlready
    }

    /// The request thread's claim: whether it is first.
    func claim() -> Bool {
        state.compareExchange(expected: Self.armed, desired: Self.claimed, ordering: .acquiringAndReleasing).exchanged
    }

    /// Whether one side has claimed the request: it is answered, or being answered.
    var isClaimed: Bool { state.load(ordering: .acquiring) == Self.claimed }
}

/// The interrupted requests whose caller only took a signal. The kernel sends `FUSE_INTERRUPT`
/// once per request, at the first signal; a SIGKILL that comes after a handled signal is not
/// told again, and the caller would wait for the callback however long it takes. So each such
/// request is looked at every ``interval`` until it is answered, and answered `EINTR` as soon
/// as its caller is found dying. An idle server watches nothing and costs nothing.
///
/// `@unchecked Sendable`: the request is touched only by the side that claims it through its
/// gate, which this watch holds a reference of until it lets the request go.
struct DyingCallerWatch: @unchecked Sendable {
    /// How often a watched caller is looked at: how long a killed one may wait.
    static let interval = DispatchTimeInterval.milliseconds(100)
    private static let queue = DispatchQueue(label: "procfs.interrupted-callers")

    private let request: fuse_req_t?
    private let gate: Unmanaged<InterruptGate>
    private let caller: pid_t

    /// Watches `request`, sent by thread `caller`, until `gate` is claimed.
    static func watch(_ request: fuse_req_t?, gate: InterruptGate, caller: pid_t) {
        DyingCallerWatch(request: request, gate: Unmanaged.passRetained(gate), caller: caller).schedule()
    }

    private func schedule() {
        Self.queue.asyncAfter(deadline: .now() + Self.interval) { look() }
    }

    private func look() {
        if gate.takeUnretainedValue().isClaimed {
            gate.release()
        } else if InterruptibleRequest.callerIsDying(caller) {
            if gate.takeUnretainedValue().interrupt() == .answer {
                fuse_reply_err(request, EINTR)
                // The reference the interrupt callback was given: the request thread will
                // find the request claimed and not give it back.
                gate.release()
            }
            gate.release()
        } else {
            schedule()
        }
    }
}
