import CFuse3
import CLinux
import Glibc
import KernelSync
import Logging
import Synchronization
import SystemPackage

/// The threads that answer a FUSE session's requests.
///
/// Each runs its own request loop rather than `fuse_session_loop_mt`'s: it polls the
/// (nonblocking) `/dev/fuse` descriptor together with a stop event. So ``stop(timeout:)`` ends
/// the workers at once whatever the kernel is doing, and a signal never has to wait for a
/// request to arrive (libfuse issue 997). When the kernel ends the session (`fusermount3 -u`,
/// `umount`), the workers see `ENODEV` and report it once.
final class RequestWorkers: @unchecked Sendable {
    // @unchecked: `session` is a C pointer, which Swift cannot prove Sendable. The workers use
    // it only through libfuse's thread-safe receive and process calls, and the session that owns
    // it is destroyed only after ``stop(timeout:)`` has joined them.
    private let session: OpaquePointer
    private let logger: Logger
    private let stopEvent: FileDescriptor
    private let threads = Mutex<[JoinableThread]>([])
    private let stopping = Atomic<Bool>(false)
    private let sessionEnded = Atomic<Bool>(false)
    private let sessionEnd = WaitQueue()
    /// Where a server of a kept mount counts the requests it reads, for the keeper's
    /// ``StallWatch``.
    private let requestsRead: CarriedValue?

    /// - Throws: ``FuseServerError/system(_:_:)`` if the stop event cannot be made.
    init(session: OpaquePointer, requestsRead: CarriedValue?, logger: Logger) throws(FuseServerError) {
        let event = eventfd(0, Int32(EFD_CLOEXEC))
        guard event >= 0 else { throw .system("eventfd", Errno(rawValue: errno)) }
        self.session = session
        self.requestsRead = requestsRead
        self.logger = logger
        self.stopEvent = FileDescriptor(rawValue: event)
    }

    deinit {
        try? stopEvent.close()
    }

    /// Starts `count` workers that answer requests until ``stop(timeout:)`` or the end of the
    /// session; `onSessionEnd` runs once if the kernel ends the session first.
    func start(_ count: Int, onSessionEnd: @escaping @Sendable () -> Void) throws {
        for number in 1...max(count, 1) {
            let worker = try JoinableThread(name: "procfs/\(number)") { [self] in
                serveRequests()
                if !stopping.load(ordering: .acquiring),
                    !sessionEnded.exchange(true, ordering: .acquiringAndReleasing)
                {
                    sessionEnd.wakeUp()
                    onSessionEnd()
                }
            }
            threads.withLock { $0.append(worker) }
        }
    }

    /// Whether no worker is running: none started, or every one stopped and joined. A worker
    /// still in a callback that never returned would answer into the session later.
    var noneRunning: Bool { threads.withLock { $0.allSatisfy(\.hasFinished) } }

    /// Whether the kernel has ended the session (the file system was unmounted from outside).
    var hasSessionEnded: Bool { sessionEnded.load(ordering: .acquiring) }

    /// Waits at most `timeout` for the kernel to end the session.
    ///
    /// - Returns: whether it has ended.
    func awaitSessionEnd(timeout: Duration) -> Bool {
        sessionEnd.wait(timeout: timeout) { hasSessionEnded }
    }

    /// Stops the workers and waits at most `timeout` for them to finish their requests.
    ///
    /// - Returns: `false` if a worker was still busy when the time was up.
    func stop(timeout: Duration) -> Bool {
        stopping.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { try? stopEvent.write($0) }
        let deadline = ContinuousClock.now + timeout
        let joined = threads.withLock { $0 }.allSatisfy { worker in
            worker.join(timeout: max(deadline - ContinuousClock.now, .zero))
        }
        // Each worker's body holds these workers; forgetting the finished ones lets them go.
        if joined { threads.withLock { $0.removeAll() } }
        return joined
    }

    private func serveRequests() {
        var buffer = fuse_buf()
        defer { free(buffer.mem) }
        var fds = [
            pollfd(fd: fuse_session_fd(session), events: Int16(POLLIN), revents: 0),
            pollfd(fd: stopEvent.rawValue, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            // Idle until a request, the end of the session, or stop(): each makes a descriptor ready.
            do {
                _ = try retryingOnInterrupt { poll(&fds, nfds_t(fds.count), -1) }
            } catch {
                logger.error("poll on /dev/fuse: \(error)")
                return
            }
            if fds[1].revents != 0 { return }
            let received = fuse_session_receive_buf(session, &buffer)
            if received == -EINTR || received == -EAGAIN { continue }
            if received == 0 { return }  // ENODEV: the kernel ended the session.
            if received < 0 {
                logger.error("reading /dev/fuse: \(Errno(rawValue: -received))")
                return
            }
            requestsRead?.add(1)
            fuse_session_process_buf(session, &buffer)
        }
    }
}
