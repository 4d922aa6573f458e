import CFuse3
import Glibc
import Logging
import Synchronization

/// Answers libfuse's low-level requests from a ``ProcTree``.
///
/// In page-cache mode the kernel's node IDs are ``SnapshotNodes``; in direct_io mode they are
/// the entries' inode numbers, and each open takes its snapshot (``OpenFile``).
///
/// Changes to the tree are refused with the errno that Linux procfs gives a caller without
/// privilege over a read-only proc file (`/proc/uptime`, mode 0444), as measured on Linux 6.18:
///
/// | operation                                  | errno     |
/// |--------------------------------------------|-----------|
/// | open for writing or with `O_TRUNC`, truncate | `EACCES` |
/// | write (page-cache mode, where the kernel opens files itself) | `EACCES` |
/// | unlink, rmdir, setxattr, removexattr       | `EACCES`  |
/// | chmod, chown, utimes                       | `EPERM`   |
/// | create, mknod, mkdir, symlink, link, rename | `ENOENT` |
/// | getxattr                                   | `ENOTSUP` |
/// | listxattr                                  | empty list |
///
/// A file removed after it was opened still reads its snapshot to the end, where procfs would
/// answer `EIO`: the snapshot is whole, so a reader racing an unmount sees a line or an error
/// of the name (`ENOENT`) or of the mount (`ENOTCONN`), never a failed read of an open file.
final class FuseRequestHandler: Sendable {
    let tree: ProcTree
    let snapshots = SnapshotNodes()
    let openFiles = HandleTable<OpenFile>()
    let openDirectories = HandleTable<OpenDirectory>()
    let owner: (uid: uid_t, gid: gid_t)
    let createdAt: timespec
    let logger: Logger
    let directIORequested: Bool
    private let servesFromPageCache = Atomic<Bool>(false)
    private let replyFailureLogged = Atomic<Bool>(false)

    /// How long the kernel may cache a name; a change or removal drops it explicitly.
    static let entryTimeout = 1.0
    /// How long the kernel may cache attributes that never change: the root directory's and a
    /// snapshot node's. With `default_permissions` the kernel checks them on every path walk,
    /// so an expired root costs every open a `GETATTR` round trip.
    static let unchangingAttributeTimeout = 86_400.0

    init(tree: ProcTree, directIORequested: Bool, logger: Logger) {
        self.tree = tree
        self.directIORequested = directIORequested
        self.owner = (getuid(), getgid())
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.createdAt = now
        self.logger = logger
    }

    /// How the kernel reads files; decided when the kernel says what it offers (`FUSE_INIT`).
    var readMode: ReadMode { servesFromPageCache.load(ordering: .acquiring) ? .pageCache : .directIO }

    func initialize(_ connection: UnsafeMutablePointer<fuse_conn_info>) {
        let offered = connection.pointee.capable & UInt32(FUSE_CAP_NO_OPEN_SUPPORT) != 0
        let mode = ReadMode.choose(kernelOffersNoOpen: offered, directIORequested: directIORequested)
        servesFromPageCache.store(mode == .pageCache, ordering: .releasing)
        logger.info(
            "serving reads through the \(mode.rawValue)\(offered ? "" : " (the kernel lacks FUSE_CAP_NO_OPEN_SUPPORT)")")
    }

    // MARK: Nodes and attributes

    /// The file behind a node ID, with the text frozen in it in page-cache mode.
    private func file(_ node: UInt64) -> (entry: ProcEntry, frozen: [UInt8]?)? {
        if readMode == .pageCache {
            return snapshots.node(node).map { ($0.entry, $0.text) }
        }
        return tree.entry(inode: node).map { ($0, nil) }
    }

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

    /// A file's attributes; its inode number is the entry's, whatever node the kernel holds.
    private func attributes(of entry: ProcEntry, size: Int) -> stat {
        var attributes = baseAttributes(inode: entry.inode)
        attributes.st_mode = S_IFREG | mode_t(entry.permissions)
        attributes.st_nlink = 1
        attributes.st_size = off_t(size)
        return attributes
    }

    /// A file's attributes from its frozen text, which the kernel may cache as long as it
    /// likes, or else (direct_io) from a fresh snapshot, which it may not cache at all;
    /// `nil` once the entry is removed.
    private func attributes(of entry: ProcEntry, frozen: [UInt8]?) -> (stat, timeout: Double)? {
        guard let text = frozen ?? entry.snapshot() else { return nil }
        return (attributes(of: entry, size: text.count), frozen == nil ? 0 : Self.unchangingAttributeTimeout)
    }

    // MARK: Requests

    func lookup(_ request: fuse_req_t, parent: UInt64, name: String) {
        guard parent == ProcTree.rootInode else { return reply(request, error: ENOTDIR) }
        guard let entry = tree.entry(named: name) else { return reply(request, error: ENOENT) }
        // Page-cache mode hands out a snapshot node; direct_io, the entry's own inode.
        let node: (id: UInt64, text: [UInt8]?)? =
            readMode == .pageCache ? snapshots.lookUp(entry).map { ($0.id, $0.text) } : (entry.inode, nil)
        guard let node, let (attributes, timeout) = attributes(of: entry, frozen: node.text) else {
            return reply(request, error: ENOENT)
        }
        var parameters = fuse_entry_param()
        parameters.ino = node.id
        parameters.attr = attributes
        parameters.attr_timeout = timeout
        parameters.entry_timeout = Self.entryTimeout
        let replied = fuse_reply_entry(request, &parameters)
        if replied != 0, readMode == .pageCache {
            // The lookup was interrupted: the kernel will not forget what it never got.
            snapshots.forget(node.id, count: 1)
        }
        checked(replied, "lookup")
    }

    func forget(_ request: fuse_req_t, node: UInt64, lookups: UInt64) {
        if readMode == .pageCache { snapshots.forget(node, count: lookups) }
        fuse_reply_none(request)
    }

    func getattr(_ request: fuse_req_t, node: UInt64) {
        var attributes: stat
        let timeout: Double
        if node == ProcTree.rootInode {
            (attributes, timeout) = (rootAttributes, Self.unchangingAttributeTimeout)
        } else if let (entry, frozen) = file(node), let found = self.attributes(of: entry, frozen: frozen) {
            (attributes, timeout) = found
        } else {
            return reply(request, error: ENOENT)
        }
        checked(fuse_reply_attr(request, &attributes, timeout), "getattr")
    }

    func setattr(_ request: fuse_req_t, node: UInt64, changes: Int32) {
        guard node == ProcTree.rootInode || file(node) != nil else { return reply(request, error: ENOENT) }
        reply(request, error: changes & FUSE_SET_ATTR_SIZE != 0 ? EACCES : EPERM)
    }

    func open(_ request: fuse_req_t, node: UInt64, info: UnsafeMutablePointer<fuse_file_info>) {
        guard let (entry, _) = file(node) else { return reply(request, error: ENOENT) }
        // ENOSYS tells the kernel to open files itself from now on, keeping their cached pages.
        if readMode == .pageCache { return reply(request, error: ENOSYS) }
        let flags = info.pointee.flags
        guard flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0 else { return reply(request, error: EACCES) }
        guard let text = entry.snapshot() else { return reply(request, error: ENOENT) }
        info.pointee.fh = openFiles.insert(OpenFile(text: text))
        // The text changes while its size is cached: read through to the snapshot every time.
        info.pointee.direct_io = 1
        if fuse_reply_open(request, info) != 0 {
            // The open was interrupted: no release will come for this handle.
            openFiles.remove(info.pointee.fh)
        }
    }

    /// Reads from the open's snapshot (direct_io), or from the node's frozen snapshot to fill
    /// the kernel's cache (page-cache mode, where the kernel opens files itself and `fh` is 0).
    func read(
        _ request: fuse_req_t, node: UInt64, size: Int, offset: off_t, info: UnsafeMutablePointer<fuse_file_info>
    ) {
        let snapshot: [UInt8]?
        if info.pointee.fh == 0 {
            snapshot = file(node)?.frozen
        } else {
            snapshot = openFiles.object(info.pointee.fh)?.text
        }
        guard let text = snapshot else { return reply(request, error: EIO) }
        let start = min(Int(offset), text.count)
        let end = min(start + size, text.count)
        let replied = text.withUnsafeBufferPointer { bytes in
            bytes.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                fuse_reply_buf(request, $0 + start, end - start)
            }
        }
        checked(replied, "read")
    }

    func release(_ request: fuse_req_t, info: UnsafeMutablePointer<fuse_file_info>) {
        openFiles.remove(info.pointee.fh)
        reply(request, error: 0)
    }

    func opendir(_ request: fuse_req_t, node: UInt64, info: UnsafeMutablePointer<fuse_file_info>) {
        guard node == ProcTree.rootInode else {
            return reply(request, error: file(node) == nil ? ENOENT : ENOTDIR)
        }
        let parent = OpenDirectory.Item(name: ".", inode: ProcTree.rootInode, isDirectory: true)
        let grandparent = OpenDirectory.Item(name: "..", inode: ProcTree.rootInode, isDirectory: true)
        let files = tree.entries.map { OpenDirectory.Item(name: $0.name, inode: $0.inode, isDirectory: false) }
        info.pointee.fh = openDirectories.insert(OpenDirectory(items: [parent, grandparent] + files))
        if fuse_reply_open(request, info) != 0 {
            openDirectories.remove(info.pointee.fh)
        }
    }

    func readdir(_ request: fuse_req_t, size: Int, offset: off_t, info: UnsafeMutablePointer<fuse_file_info>) {
        guard let directory = openDirectories.object(info.pointee.fh) else { return reply(request, error: EBADF) }
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
        openDirectories.remove(info.pointee.fh)
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
    /// going away. Neither is the daemon's fault, and neither may stop it. The first is logged
    /// at notice level, the rest at debug level, so a storm of them cannot flood the log.
    private func checked(_ result: Int32, _ operation: String) {
        guard result != 0 else { return }
        let message = "\(operation): reply not delivered: \(String(cString: strerror(-result)))"
        if replyFailureLogged.exchange(true, ordering: .relaxed) {
            logger.debug("\(message)")
        } else {
            logger.notice("\(message); further undelivered replies are logged at debug level")
        }
    }
}
