import Glibc
import SystemPackage
import UnixSignals

/// The signals a keeper acts on (SIGINT, SIGTERM and SIGHUP to shut down, SIGUSR2 to upgrade),
/// caught from when this is made and passed by number through a pipe, so that
/// ``ServerSupervisor/watch(_:signals:)`` waits on them in the same `poll` as on its servers.
package final class KeeperSignals: Sendable {
    /// The pipe's read end: each signal caught is an `Int32` in it; it ends when this does.
    package let descriptor: Int32
    private let passing: Task<Void, Never>

    /// Starts catching. (With an async main, the main thread waits with no signal blocked, so
    /// they must be caught before anything else is started.)
    package init() async throws(KeeperError) {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw .system("pipe", Errno(rawValue: errno)) }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        descriptor = ends[0]
        let caught = await UnixSignalsSequence(trapping: .sigint, .sigterm, .sighup, .sigusr2)
        passing = Task { [writer = ends[1]] in
            for await signal in caught {
                var number = signal.rawValue
                _ = write(writer, &number, MemoryLayout<Int32>.size)
            }
            close(writer)
        }
    }

    deinit {
        passing.cancel()
        close(descriptor)
    }
}
