import CLinux
import Glibc
import Synchronization
import SystemPackage

/// A POSIX thread that runs one body and can be joined within a bound.
///
/// The thread inherits the signal mask of the thread that creates it; schedfs blocks its
/// shutdown signals before it creates any, so none of these threads ever takes one.
public final class JoinableThread: Sendable {
    /// The name the thread carries (shown by `ps -L` and `top -H`), at most 15 bytes.
    public let name: String
    private let thread: pthread_t
    private let start: ThreadStart

    /// Starts a thread running `body`.
    ///
    /// - Throws: ``JoinableThreadError`` when the system cannot create the thread.
    public init(name: String, body: @escaping @Sendable () -> Void) throws(JoinableThreadError) {
        self.name = name
        let start = ThreadStart(name: Self.threadName(name), body: body)
        self.start = start
        var thread = pthread_t()
        let context = Unmanaged.passRetained(start).toOpaque()
        let result = pthread_create(&thread, nil, { context in
            let start = Unmanaged<ThreadStart>.fromOpaque(context!).takeRetainedValue()
            start.run()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<ThreadStart>.fromOpaque(context).release()
            throw JoinableThreadError(name: name, errno: Errno(rawValue: result))
        }
        self.thread = thread
    }

    /// `name` cut to the 15 bytes a Linux thread name holds, at a character boundary, so that a
    /// character is never cut in two.
    static func threadName(_ name: String) -> String {
        var fitting = Substring(name)
        while fitting.utf8.count > 15 { fitting = fitting.dropLast() }
        return String(fitting)
    }

    /// Whether the thread's body has returned.
    public var hasFinished: Bool { start.finished.load(ordering: .acquiring) }

    /// Waits at most `timeout` for the body to return, then reaps the thread.
    ///
    /// - Returns: `false` if the body is still running when the time is up; the thread is then
    ///   left to run and is not reaped.
    public func join(timeout: Duration) -> Bool {
        guard start.exited.wait(timeout: timeout, until: { hasFinished }) else { return false }
        if start.reaped.exchange(true, ordering: .acquiringAndReleasing) == false {
            pthread_join(thread, nil)
        }
        return true
    }
}

/// A thread could not be created.
public struct JoinableThreadError: Error, CustomStringConvertible {
    /// The name of the thread that could not start.
    public let name: String
    /// What `pthread_create` answered.
    public let errno: Errno
    public var description: String { "cannot start thread \(name): \(errno)" }
}

/// What a new thread needs: its body, and where it says that it has finished.
private final class ThreadStart: Sendable {
    let name: String
    let body: @Sendable () -> Void
    let finished = Atomic<Bool>(false)
    let reaped = Atomic<Bool>(false)
    let exited = WaitQueue()

    init(name: String, body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }

    func run() {
        _ = clinux_set_thread_name(name)
        body()
        finished.store(true, ordering: .releasing)
        exited.wakeUp()
    }
}
