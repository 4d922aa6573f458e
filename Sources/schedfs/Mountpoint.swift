import Glibc
import ProcFS
import SystemPackage

/// A directory that schedfs may mount on, checked before anything is mounted.
struct Mountpoint {
    /// The absolute path with every link resolved, so it stays right after the daemon's
    /// `chdir("/")`; the bytes it is named by, which need not be UTF-8.
    let path: FilePath

    /// Checks that `given` is an existing directory that is not already a schedfs mount.
    ///
    /// - Throws: ``MountpointError`` saying what is wrong; it shows the path as text.
    init(checking given: FilePath) throws(MountpointError) {
        let shown = given.description
        var link = stat()
        if given.withPlatformString({ lstat($0, &link) }) == 0, link.st_mode & S_IFMT == S_IFLNK {
            let target = given.withPlatformString { realpath($0, nil) }
            defer { free(target) }
            throw .symbolicLink(shown, target.map { String(cString: $0) })
        }
        guard let resolved = given.withPlatformString({ realpath($0, nil) }) else {
            throw MountpointError(shown, errno: errno)
        }
        path = FilePath(platformString: resolved)
        free(resolved)
        var attributes = stat()
        guard path.withPlatformString({ stat($0, &attributes) }) == 0 else { throw MountpointError(shown, errno: errno) }
        guard attributes.st_mode & S_IFMT == S_IFDIR else { throw .notDirectory(shown) }
        if Self.schedfsMounts().contains(path) { throw .alreadyMounted(shown) }
    }

    /// The mount point a keeper resolved and mounted on, taken as it is: a server must not
    /// look at it before it serves, as that would wait on itself.
    init(mountedBy keeper: FilePath) {
        path = keeper
    }

    /// Claims the mount point for this process's life, so that of two schedfs started on it
    /// at the same instant exactly one mounts: an exclusive `flock` on the directory, then the
    /// check for a schedfs mount again, under the lock. A racer that opens the path after the
    /// winner mounted locks the new mount's root instead, and then finds the mount.
    ///
    /// - Returns: the locked descriptor; the lock lasts until the process exits.
    /// - Throws: ``MountpointError/busy(_:)`` or ``MountpointError/alreadyMounted(_:)``.
    func claim() throws(MountpointError) -> Int32 {
        let descriptor = path.withPlatformString { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard descriptor >= 0 else { throw MountpointError(path.description, errno: errno) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let error = errno
            close(descriptor)
            throw error == EWOULDBLOCK ? .busy(path.description) : .unreachable(path.description, Errno(rawValue: error))
        }
        if Self.schedfsMounts().contains(path) {
            close(descriptor)
            throw .alreadyMounted(path.description)
        }
        return descriptor
    }

    /// The mount points of the schedfs file systems now mounted.
    static func schedfsMounts() -> Set<FilePath> {
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
    case unreachable(String, Errno)

    /// The error for a path that `realpath` or `stat` failed on with `errno`.
    init(_ path: String, errno: Int32) {
        switch errno {
        case ENOENT: self = .missing(path)
        case ENOTDIR: self = .notDirectory(path)
        case ENOTCONN: self = .deadMount(path)
        default: self = .unreachable(path, Errno(rawValue: errno))
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
        case .unreachable(let path, let error): "mountpoint '\(path)': \(error)"
        }
    }
}
