import CFuse3
import Glibc
import Synchronization

/// A request whose caller may give up while the tree's callback makes its answer: a signal
/// to the caller has the kernel send `FUSE_INTERRUPT`, and libfuse calls back here, on the
/// thread that read the interrupt, while the request thread is still in the callback. The
/// interrupt answers `EINTR` at once, so the caller's `read` (or `open`, `stat`) returns, and a
/// fatal signal ends the caller: without this, the kernel waits uninterruptibly for the answer
/// to a request the server has read, however long the callback takes.
///
/// Exactly one of the two answers: whichever claims the request first. The other must not
/// touch it, since libfuse frees a request with its answer.
struct InterruptibleRequest {
    let request: fuse_req_t?
    private let gate: InterruptGate

    /// Lets an interrupt of `request` answer it from now on.
    ///
    /// - Returns: `nil` if the caller was interrupted already: the request is answered, and
    ///   must not be touched.
    init?(_ request: fuse_req_t?) {
        self.request = request
        gate = InterruptGate()
        // One reference for the callback, given back by whichever side answers (there, or in
        // `claim()`). libfuse holds the request's lock while it calls back, and
        // `fuse_req_interrupt_func` takes that lock, so the callback never runs after `claim()`.
        // An interrupt that came before runs the callback here, at once.
        fuse_req_interrupt_func(
            request,
            { request, data in
                let gate = Unmanaged<InterruptGate>.fromOpaque(data!)
                guard gate.takeUnretainedValue().claim() else { return }
                fuse_reply_err(request, EINTR)
                gate.release()
            },
            Unmanaged.passRetained(gate).toOpaque())
        if gate.isClaimed { return nil }
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
}

/// Who has answered an ``InterruptibleRequest``: its request thread, or the interrupt.
final class InterruptGate: Sendable {
    private let claimed = Atomic<Bool>(false)

    /// Whether this caller is the first to claim the answer.
    func claim() -> Bool { !claimed.exchange(true, ordering: .acquiringAndReleasing) }

    var isClaimed: Bool { claimed.load(ordering: .acquiring) }
}
