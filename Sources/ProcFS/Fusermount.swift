import Glibc
import SystemPackage

/// fusermount3, the setuid helper that mounts and unmounts FUSE file systems for users who may
/// not call `mount(2)` and `umount2(2)` themselves.
enum Fusermount {
    /// How long a run of fusermount3 may take before it is killed.
    static let timeout: Duration = .seconds(2)

    /// Detaches the mount at `path` from the file tree, as `umount2(MNT_DETACH)` does, for a
    /// user without the privilege to call that: `fusermount3 -u -z path`.
    ///
    /// - Returns: whether fusermount3 ran and succeeded within ``timeout``.
    static func detach(_ path: FilePath) -> Bool {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for descriptor in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] {
            posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", descriptor == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0)
        }
        let arguments: [UnsafeMutablePointer<CChar>?] =
            [strdup("fusermount3"), strdup("-u"), strdup("-z"), path.withPlatformString { strdup($0) }, nil]
        defer { arguments.forEach { free($0) } }
        var pid = pid_t()
        guard posix_spawnp(&pid, "fusermount3", &actions, nil, arguments, environ) == 0 else { return false }
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            guard ContinuousClock.now < deadline else {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return false
            }
            usleep(1000)
        }
        return status & 0x7f == 0 && (status >> 8) & 0xff == 0
    }
}
