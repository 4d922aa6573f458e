import CFuse3
import Glibc
import Logging

/// Answers libfuse's low-level requests from a ``ProcTree``.
///
/// Changes to the tree are refused with the errno that Linux procfs gives a caller without
/// privilege over a read-only proc file (`/proc/uptime`, mode 0444), as measured on Linux 6.18:
///
/// | operation                                  | errno     |
/// |--------------------------------------------|-----------|
/// | open for writing or with `O_TRUNC`, truncate | `EACCES` |
/// | unlink, rmdir, setxattr, removexattr       | `EACCES`  |
/// | chmod, chown, utimes                       | `EPERM`   |
/// | create, mknod, mkdir, symlink, link, rename | `ENOENT` |
/// | getxattr                                   | `ENOTSUP` |
/// | listxattr                                  | empty list |
/// | read on a file removed since it was opened | `EIO`     |
final class FuseRequestHandler: Sendable {
    let tree: ProcTree
    let owner: (uid: uid_t, gid: gid_t)
    let createdAt: timespec
    let logger: Logger

    /// How long the kernel may cache a name lookup; removal invalidates it explicitly.
    static let entryTimeout = 1.0
    /// How long the kernel may cache attributes: never, since the size follows the text.
    static let attributeTimeout = 0.0

    init(tree: ProcTree, logger: Logger) {
        self.tree = tree
        self.owner = (getuid(), getgid())
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.createdAt = now
        self.logger = logger
    }

    // MARK: Attributes

    private func baseAttributes(inode: UInt64) -> stat {
        var attributes = stat()
        attributes.st_ino = UInt(inode)
        attributes.st_uid = owner.uid
        attributes.st_gid = owner.gid
        attributes.st_atim = createdAt
        attributes.st_mtim = createdAt
        attributes.st_ctim = createdAt
        attributes.st_blksize = 4096
        return attributes
    }

    private var rootAttributes: stat {
        var attributes = baseAttributes(inode: ProcTree.rootInode)
        attributes.st_mode = S_IFDIR | 0o555
        attributes.st_nlink = 2
        return attributes
    }

    /// The entry's attributes with the size of its current text, or `nil` once it is removed.
    private func attributes(of entry: ProcEntry) -> stat? {
        guard let text = entry.snapshot() else { return nil }
        var attributes = baseAttributes(inode: entry.inode)
        attributes.st_mode = S_IFREG | mode_t(entry.permissions)
        attributes.st_nlink = 1
        attributes.st_size = off_t(text.count)
        return attributes
    }

    // MARK: Requests

    func lookup(_ request: fuse_req_t, parent: UInt64, name: String) {
        guard parent == ProcTree.rootInode else { return reply(request, error: ENOTDIR) }
        guard let entry = tree.entry(named: name), let attributes = attributes(of: entry) else {
            return reply(request, error: ENOENT)
        }
        var parameters = fuse_entry_param()
        parameters.ino = entry.inode
        parameters.attr = attributes
        parameters.entry_timeout = Self.entryTimeout
        parameters.attr_timeout = Self.attributeTimeout
        checked(fuse_reply_entry(request, &parameters), "lookup")
    }

    func getattr(_ request: fuse_req_t, inode: UInt64) {
        var attributes: stat
        if inode == ProcTree.rootInode {
            attributes = rootAttributes
        } else if let entry = tree.entry(inode: inode), let found = self.attributes(of: entry) {
            attributes = found
        } else {
            return reply(request, error: ENOENT)
        }
        checked(fuse_reply_attr(request, &attributes, Self.attributeTimeout), "getattr")
    }

    func setattr(_ request: fuse_req_t, inode: UInt64, changes: Int32) {
        guard inode == ProcTree.rootInode || tree.entry(inode: inode) != nil else {
            return reply(request, error: ENOENT)
        }
        reply(request, error: changes & FUSE_SET_ATTR_SIZE != 0 ? EACCES : EPERM)
    }

    func access(_ request: fuse_req_t, inode: UInt64, mask: Int32) {
        let permissions: UInt16
        if inode == ProcTree.rootInode {
            permissions = 0o555
        } else if let entry = tree.entry(inode: inode) {
            permissions = entry.permissions
        } else {
            return reply(request, error: ENOENT)
        }
        let caller = fuse_req_ctx(request)!.pointee
        let shift: UInt16 = caller.uid == owner.uid ? 6 : caller.gid == owner.gid ? 3 : 0
        let granted = Int32((permissions >> shift) & 0o7)
        reply(request, error: mask & ~granted == 0 ? 0 : EACCES)
    }

    func open(_ request: fuse_req_t, inode: UInt64, info: UnsafeMutablePointer<fuse_file_info>) {
        guard let entry = tree.entry(inode: inode) else { return reply(request, error: ENOENT) }
        let flags = info.pointee.flags
        guard flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0 else { return reply(request, error: EACCES) }
        guard let text = entry.snapshot() else { return reply(request, error: ENOENT) }
        info.pointee.fh = FileHandle.retain(OpenFile(entry: entry, text: text))
        // The text changes while its size is cached: read through to the snapshot every time.
        info.pointee.direct_io = 1
        if fuse_reply_open(request, info) != 0 {
            // The open was interrupted: no release will come for this handle.
            FileHandle.release(info.pointee.fh, as: OpenFile.self)
        }
    }

    func read(_ request: fuse_req_t, size: Int, offset: off_t, info: UnsafeMutablePointer<fuse_file_info>) {
        let file = FileHandle.borrow(info.pointee.fh, as: OpenFile.self)
        let replied: Int32? = file.entry.whileLive {
            let start = min(Int(offset), file.text.count)
            let end = min(start + size, file.text.count)
            return file.text.withUnsafeBufferPointer { bytes in
                bytes.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                    fuse_reply_buf(request, $0 + start, end - start)
                }
            }
        }
        guard let replied else { return reply(request, error: EIO) }
        checked(replied, "read")
    }

    func release(_ request: fuse_req_t, info: UnsafeMutablePointer<fuse_file_info>) {
        FileHandle.release(info.pointee.fh, as: OpenFile.self)
        reply(request, error: 0)
    }

    func opendir(_ request: fuse_req_t, inode: UInt64, info: UnsafeMutablePointer<fuse_file_info>) {
        guard inode == ProcTree.rootInode else {
            return reply(request, error: tree.entry(inode: inode) == nil ? ENOENT : ENOTDIR)
        }
        let parent = OpenDirectory.Item(name: ".", inode: ProcTree.rootInode, isDirectory: true)
        let grandparent = OpenDirectory.Item(name: "..", inode: ProcTree.rootInode, isDirectory: true)
        let files = tree.entries.map { OpenDirectory.Item(name: $0.name, inode: $0.inode, isDirectory: false) }
        info.pointee.fh = FileHandle.retain(OpenDirectory(items: [parent, grandparent] + files))
        if fuse_reply_open(request, info) != 0 {
            FileHandle.release(info.pointee.fh, as: OpenDirectory.self)
        }
    }

    func readdir(_ request: fuse_req_t, size: Int, offset: off_t, info: UnsafeMutablePointer<fuse_file_info>) {
        let directory = FileHandle.borrow(info.pointee.fh, as: OpenDirectory.self)
        var buffer = [CChar](repeating: 0, count: size)
        var used = 0
        var index = Int(max(offset, 0))
        while index < directory.items.count {
            let item = directory.items[index]
            var attributes = stat()
            attributes.st_ino = UInt(item.inode)
            attributes.st_mode = item.isDirectory ? S_IFDIR : S_IFREG
            let needed = buffer.withUnsafeMutableBufferPointer { bytes in
                fuse_add_direntry(request, bytes.baseAddress! + used, size - used, item.name, &attributes, off_t(index + 1))
            }
            if needed > size - used { break }
            used += needed
            index += 1
        }
        checked(fuse_reply_buf(request, buffer, used), "readdir")
    }

    func releasedir(_ request: fuse_req_t, info: UnsafeMutablePointer<fuse_file_info>) {
        FileHandle.release(info.pointee.fh, as: OpenDirectory.self)
        reply(request, error: 0)
    }

    func listxattr(_ request: fuse_req_t, size: Int) {
        if size == 0 {
            checked(fuse_reply_xattr(request, 0), "listxattr")
        } else {
            checked(fuse_reply_buf(request, nil, 0), "listxattr")
        }
    }

    // MARK: Replies

    /// Replies with `error` (0 for success).
    func reply(_ request: fuse_req_t, error: Int32) {
        checked(fuse_reply_err(request, error), "reply")
    }

    /// Logs a reply that could not be sent: the caller gave up (interrupted) or the mount is
    /// going away. Neither is the daemon's fault, and neither may stop it.
    private func checked(_ result: Int32, _ operation: String) {
        if result != 0 {
            logger.debug("\(operation): reply not delivered: \(String(cString: strerror(-result)))")
        }
    }
}
