import Glibc
import SystemPackage

/// What each FUSE operation's decision returns: the reply as a Swift value, which
/// `FuseOperations` turns into libfuse's `fuse_reply_*`, and the notices the kernel is sent of
/// a change in the tree.
extension ProcFileSystem {
    /// A node's attributes as the kernel is told them (FUSE's `fuse_attr`), with how long it may
    /// cache them.
    struct Attributes {
        var inode: UInt64
        /// The file type and permission bits (`st_mode`).
        var mode: mode_t
        var linkCount: Int
        var owner: ProcOwner
        var size: Int
        var created: timespec
        var modified: timespec
        /// Seconds the kernel may keep these.
        var timeout: Double
    }

    /// The reply to a `LOOKUP`. Its generation is always 0: a tree never gives an inode
    /// number twice.
    struct Entry {
        var attributes: Attributes
        var entryTimeout: Double
    }

    /// The reply to an `OPEN` or `OPENDIR`.
    struct Opened {
        var handle: UInt64
        /// Whether every read of this open comes to the server.
        var directIO: Bool
        /// For a directory: whether the kernel may keep its listing (`cache_readdir` and
        /// `keep_cache`).
        var cachesListing = false
    }

    /// One name of a directory listing, and the offset at which the listing goes on after it.
    struct DirectoryItem: Equatable {
        var name: String
        var inode: UInt64
        /// The file type bits of `st_mode`, for example `S_IFDIR`.
        var type: mode_t
        var nextOffset: Int
    }

    /// The reply to a `POLL`: the events, or an error; the handles to release before it is
    /// sent, and those to notify after.
    struct Polled {
        var result: Result<Int32, Errno>
        var release: [any KernelPollHandle] = []
        var notify: [any KernelPollHandle] = []
    }

    /// What the kernel must be told of a change in the tree
    /// (`fuse_lowlevel_notify_inval_inode` and `_inval_entry`).
    enum KernelNotice: Equatable {
        /// Ask again for the attributes of `inode` before using them; keep its pages.
        case attributes(UInt64)
        /// Ask again for the attributes and the contents of `inode` (for a directory: its
        /// link count and its listing).
        case attributesAndContents(UInt64)
        /// Forget the name `name` in the directory `parent`.
        case name(parent: UInt64, name: String)
    }

    /// The operations that always fail, as procfs fails them.
    enum RefusedOperation: CaseIterable {
        case getxattr, setxattr, removexattr, unlink, rmdir, create, mknod, mkdir, symlink, link, rename
    }

    /// The errno a refused operation gets (see the table above).
    static func refusal(of operation: RefusedOperation) -> Errno {
        switch operation {
        case .getxattr: .notSupported
        case .setxattr, .removexattr, .unlink, .rmdir: .permissionDenied
        case .create, .mknod, .mkdir, .symlink, .link, .rename: .noSuchFileOrDirectory
        }
    }
}
