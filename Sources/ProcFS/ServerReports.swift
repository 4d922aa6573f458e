import Glibc
import KernelSync
import SystemPackage

/// A server's end of the pipe on which it tells the process that started it how its start
/// went: one line, `ready`, `standby` (ready to take over, waiting for the word), or
/// `error: <what is wrong>`.
package struct Readiness: Sendable {
    package let descriptor: Int32

    /// Reports on `descriptor`, which is closed on exec from then on.
    package init(descriptor: Int32) {
        // Inherited without close-on-exec: a child of the server must not inherit it, nor keep
        // the pipe open once the server has exited.
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        self.descriptor = descriptor
    }

    /// Detaches the process from the caller's terminal session and working directory.
    package func detach() {
        setsid()
        chdir("/")
    }

    package func ready() { report("ready") }

    /// Says that a server is ready to take over, keeping the pipe open for what follows.
    package func standingBy() {
        var bytes = Array("standby\n".utf8)
        _ = write(descriptor, &bytes, bytes.count)
    }

    package func failed(_ message: String) { report("error: \(message)") }

    private func report(_ line: String) {
        var bytes = Array("\(line)\n".utf8)
        _ = write(descriptor, &bytes, bytes.count)
        close(descriptor)
    }

    /// The one line written on `descriptor`, or `nil` if none came within `timeout`; "" when
    /// the writer exited silently.
    package static func readReport(from descriptor: Int32, timeout: Duration) -> String? {
        let deadline = ContinuousClock.now + timeout
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while !bytes.contains(UInt8(ascii: "\n")) {
            var ready = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let polled = try? retryingOnInterrupt {
                poll(&ready, 1, Int32(clamping: max((deadline - ContinuousClock.now).nanoseconds / 1_000_000, 0)))
            }
            guard let polled, polled > 0 else { return nil }
            let count = try? chunk.withUnsafeMutableBytes { try FileDescriptor(rawValue: descriptor).read(into: $0) }
            guard let count, count > 0 else { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
    }
}
