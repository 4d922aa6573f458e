import Glibc
import ProcFS

/// A directory that schedfs may mount on, checked before anything is mounted.
struct Mountpoint {
    /// The absolute path with every link resolved, so it stays right after the daemon's `chdir("/")`.
    let path: String

    /// Checks that `given` is an existing directory that is not already a schedfs mount.
    ///
    /// - Throws: ``MountpointError`` saying what is wrong.
    init(checking given: String) throws(MountpointError) {
        var link = stat()
        if lstat(given, &link) == 0, link.st_mode & S_IFMT == S_IFLNK {
            let target = realpath(given, nil)
            defer { free(target) }
            throw .symbolicLink(given, target.map { String(cString: $0) })
        }
        guard let resolved = realpath(given, nil) else { throw MountpointError(given, errno: errno) }
        path = String(cString: resolved)
        free(resolved)
        var attributes = stat()
        guard stat(path, &attributes) == 0 else { throw MountpointError(given, errno: errno) }
        guard attributes.st_mode & S_IFMT == S_IFDIR else { throw .notDirectory(given) }
        if Self.schedfsMounts().contains(path) { throw .alreadyMounted(given) }
    }

    /// Claims the mount point for this process's life, so that of two schedfs started on it
    /// at the same instant exactly one mounts: an exclusive `flock` on the directory, then the
    /// check for a schedfs mount again, under the lock. A racer that opens the path after the
    /// winner mounted locks the new mount's root instead, and then finds the mount.
    ///
    /// - Returns: the locked descriptor; the lock lasts until the process exits.
    /// - Throws: ``MountpointError/busy(_:)`` or ``MountpointError/alreadyMounted(_:)``.
    func claim() throws(MountpointError) -> Int32 {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw MountpointError(path, errno: errno) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let error = errno
            close(descriptor)
            throw error == EWOULDBLOCK ? .busy(path) : .unreachable(path, error)
        }
        if Self.schedfsMounts().contains(path) {
            close(descriptor)
            throw .alreadyMounted(path)
        }
        return descriptor
    }

    /// The mount points of the schedfs file systems now mounted.
    static func schedfsMounts() -> Set<String> {
        Set(MountTable.mounts().filter { $0.type == "fuse.schedfs" }.map(\.mountpoint))
    }
}

/// A mount point that cannot be used.
enum MountpointError: Error, Equatable, CustomStringConvertible {
    case missing(String)
    case notDirectory(String)
    case symbolicLink(String, String?)
    case alreadyMounted(String)
    case busy(String)
    case deadMount(String)
    case unreachable(String, Int32)

    /// The error for a path that `realpath` or `stat` failed on with `errno`.
    init(_ path: String, errno: Int32) {
        switch errno {
        case ENOENT: self = .missing(path)
        case ENOTDIR: self = .notDirectory(path)
        case ENOTCONN: self = .deadMount(path)
        default: self = .unreachable(path, errno)
        }
    }

    var description: String {
        switch self {
        case .missing(let path): "mountpoint '\(path)' does not exist"
        case .notDirectory(let path): "mountpoint '\(path)' is not a directory"
        case .symbolicLink(let path, let target):
            "mountpoint '\(path)' is a symbolic link; give the directory itself\(target.map { ": '\($0)'" } ?? "")"
        case .alreadyMounted(let path): "mountpoint '\(path)' is already a schedfs mount; unmount it with: fusermount3 -u \(path)"
        case .busy(let path): "mountpoint '\(path)' is already being mounted by another schedfs"
        case .deadMount(let path):
            "mountpoint '\(path)' is a FUSE mount whose daemon is gone (transport endpoint is not connected); clear it with: fusermount3 -u \(path)"
        case .unreachable(let path, let error): "mountpoint '\(path)': \(String(cString: strerror(error)))"
        }
    }
}
