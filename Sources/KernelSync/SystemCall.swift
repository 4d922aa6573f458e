import Glibc
import SystemPackage

/// Makes a system call that fails by returning -1 and setting `errno`, and makes it again for
/// as long as a signal interrupts it (`EINTR`): the one place in this package that does so.
/// (swift-system's `FileDescriptor` does the same for the calls it wraps.)
///
/// ```swift
/// let ready = try retryingOnInterrupt { poll(&fds, nfds_t(fds.count), -1) }
/// ```
///
/// Inlinable, so that each caller gets it made for its own integer type: unspecialized, the
/// generic comparisons cost more than a cheap system call (the tick thread's `read`).
///
/// - Returns: what the call returned, which is not -1.
/// - Throws: the call's `errno`, for any failure but `EINTR`.
@inlinable
public func retryingOnInterrupt<Result: FixedWidthInteger & SignedInteger>(
    _ call: () -> Result
) throws(Errno) -> Result {
    while true {
        let result = call()
        if result != -1 { return result }
        let failure = Errno(rawValue: errno)
        if failure != .interrupted { throw failure }
    }
}
