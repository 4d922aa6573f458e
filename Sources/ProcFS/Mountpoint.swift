import Glibc
import SystemPackage

/// A directory that a tree may be mounted on, checked before anything is mounted: every
/// server of a tree (``FuseServer``, and so ``ProcFSService``) and schedfs's keeper check the
/// same things, and refuse with the same ``MountpointError``.
package struct Mountpoint: Sendable {
    /// The absolute path with every link resolved, so it stays right after a daemon's
    /// `chdir("/")`; the bytes it is named by, which need not be UTF-8.
    package let path: FilePath

    /// Checks that `given` is an existing directory, not a symbolic link (unmounting by the
    /// link's name would not find the mount), and not a FUSE mount already: a live one, or a
    /// dead one whose server is gone.
    ///
    /// - Throws: ``MountpointError`` saying what is wrong; it shows the path as text.
    package init(checking given: FilePath) throws(MountpointError) {
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
        if let mounted = MountTable.fuseMount(at: path) { throw .alreadyMounted(shown, type: mounted.type) }
    }

    /// The mount point a keeper resolved and mounted on, taken as it is: a server must not
    /// look at it before it serves, as that would wait on itself.
    package init(mountedBy keeper: FilePath) {
        path = keeper
    }

    /// Claims the mount point for as long as the descriptor returned stays open, so that of two
    /// servers started on it at the same instant exactly one mounts: an exclusive `flock` on the
    /// directory, then the check for a FUSE mount again, under the lock. A racer that opens the
    /// path after the winner mounted locks the new mount's root instead, and then finds the
    /// mount.
    ///
    /// - Returns: the locked descriptor; close it once the mount is gone.
    /// - Throws: ``MountpointError/busy(_:)`` or ``MountpointError/alreadyMounted(_:type:)``.
    package func claim() throws(MountpointError) -> FileDescriptor {
        let descriptor = path.withPlatformString { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard descriptor >= 0 else { throw MountpointError(path.description, errno: errno) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let error = errno
            close(descriptor)
            throw error == EWOULDBLOCK ? .busy(path.description) : .unreachable(path.description, Errno(rawValue: error))
        }
        if let mounted = MountTable.fuseMount(at: path) {
            close(descriptor)
            throw .alreadyMounted(path.description, type: mounted.type)
        }
        return FileDescriptor(rawValue: descriptor)
    }
}

/// Why a directory cannot be mounted on; its description is one line that says what to do.
public enum MountpointError: Error, Equatable, CustomStringConvertible {
    /// There is no such directory.
    case missing(String)
    /// The path names something that is not a directory.
    case notDirectory(String)
    /// The path is a symbolic link, to the target given when it resolves.
    case symbolicLink(String, String?)
    /// A FUSE file system of the type given (`fuse.schedfs`, `fuse`) is mounted there already.
    case alreadyMounted(String, type: String)
    /// Another server is mounting on it at this moment.
    case busy(String)
    /// A FUSE mount whose server is gone is there: every access fails with `ENOTCONN`.
    case deadMount(String)
    /// The path cannot be reached, with the errno.
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

    public var description: String {
        switch self {
        case .missing(let path): "mountpoint '\(path)' does not exist"
        case .notDirectory(let path): "mountpoint '\(path)' is not a directory"
        case .symbolicLink(let path, let target):
            "mountpoint '\(path)' is a symbolic link; give the directory itself\(target.map { ": '\($0)'" } ?? "")"
        case .alreadyMounted(let path, let type):
            "mountpoint '\(path)' is already mounted (\(type)); unmount it with: fusermount3 -u \(path)"
        case .busy(let path): "mountpoint '\(path)' is already being mounted by another server"
        case .deadMount(let path):
            "mountpoint '\(path)' is a FUSE mount whose server is gone (transport endpoint is not connected); clear it with: fusermount3 -u \(path)"
        case .unreachable(let path, let error): "mountpoint '\(path)': \(error)"
        }
    }
}
