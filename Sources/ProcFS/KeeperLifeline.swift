import CLinux
import Glibc
import KernelSync

/// Ends a server of a kept mount when its keeper ends, however it ends: the server holds the
/// mount's connection too, and without its keeper it would serve on a mount that nothing
/// watches (and `kill -9` of the keeper would leave it mounted).
///
/// A thread of its own waits, for the life of the server, on a pidfd of the keeper, and kills
/// the process once the keeper has exited. Not `PR_SET_PDEATHSIG`, which the kernel keeps per
/// thread on both sides: it is lost when the server thread that set it ends, and it fires when
/// the keeper *thread* that started the server ends, though the keeper lives on (Swift's pool
/// threads come and go).
enum KeeperLifeline {
    /// Starts watching the parent process, the keeper.
    ///
    /// - Returns: the watching thread, to be kept; `nil` where the kernel has no pidfd (before
    ///   Linux 5.3), which falls back to `PR_SET_PDEATHSIG` on the calling thread.
    static func hold() -> JoinableThread? {
        let keeper = getppid()
        // Already gone: the server is init's now.
        if keeper == 1 { kill(getpid(), SIGKILL) }
        let descriptor = clinux_pidfd_open(keeper)
        guard descriptor >= 0 else {
            _ = clinux_die_with_parent()
            return nil
        }
        return try? JoinableThread(name: "procfs/keeper") {
            var exited = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            if (try? retryingOnInterrupt { poll(&exited, 1, -1) }) == 1 { kill(getpid(), SIGKILL) }
        }
    }
}
