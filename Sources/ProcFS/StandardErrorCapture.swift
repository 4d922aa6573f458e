import CLinux
import Glibc
import SystemPackage

/// Catches what is written to standard error while a call runs, so that an error can say
/// why: libfuse reports some mount failures with `perror`, and fusermount3, which it starts,
/// writes its reasons there (`option allow_other only allowed if 'user_allow_other' is set`).
///
/// Standard error goes to an anonymous memory file for the call, and is then put back. A
/// process started meanwhile keeps that file as its standard error (fusermount3 stays, with
/// `auto_unmount`, to watch the daemon): a file never makes it fail with `EPIPE` as a pipe
/// whose reader has gone would. What other threads wrote meanwhile is handed back to the
/// caller too, to pass on.
enum StandardErrorCapture {
    /// Runs `body` with standard error caught.
    ///
    /// - Returns: what `body` returned, and the lines written to standard error meanwhile.
    static func capturing<Result>(_ body: () -> Result) -> (Result, [String]) {
        let memory = clinux_memfd_cloexec("procfs-stderr")
        let saved = memory < 0 ? -1 : fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0)
        guard memory >= 0, saved >= 0 else {
            // Most likely the process is out of descriptors, which is then the call's trouble too.
            let why = "standard error could not be caught: \(Errno(rawValue: errno))"
            if memory >= 0 { close(memory) }
            return (body(), [why])
        }
        defer { close(memory) }
        fflush(nil)
        dup2(memory, STDERR_FILENO)
        let result = body()
        fflush(nil)
        dup2(saved, STDERR_FILENO)
        close(saved)
        // Standard error shared the file's offset, which the writes moved to the end.
        lseek(memory, 0, SEEK_SET)
        let lines = String(decoding: readToEnd(memory), as: UTF8.self).split(separator: "\n").map(String.init)
        return (result, lines)
    }
}
