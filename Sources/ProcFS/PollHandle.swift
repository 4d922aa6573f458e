import CFuse3

/// libfuse's handle of a poll that sleeps until it is notified (`struct fuse_pollhandle`).
struct PollHandle: KernelPollHandle, @unchecked Sendable {
    // @unchecked: the pointer is a small heap object that libfuse hands to the poll callback to
    // own. ``PollWaiters`` keeps each handle under its lock and hands it out once, so exactly
    // one thread notifies or releases it, and libfuse's notify is safe from any thread.
    let pointer: OpaquePointer

    /// The kernel's handle of the polled file (`kh`), unique to one open.
    var kernelFileHandle: UInt64 { cfuse3_pollhandle_kh(pointer) }

    /// Wakes the poller, which then polls again, and frees the handle.
    func notify() {
        _ = fuse_lowlevel_notify_poll(pointer)
        fuse_pollhandle_destroy(pointer)
    }

    /// Frees the handle without waking the poller.
    func release() {
        fuse_pollhandle_destroy(pointer)
    }
}
