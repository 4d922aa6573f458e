import CFuse3
import Glibc
import Logging
import Synchronization

/// Answers libfuse's low-level requests from a ``ProcTree``.
///
/// Directories and symbolic links are known to the kernel by their entries' inode numbers, and
/// the kernel's lookups of them are counted (``ProcTree/kernelLooksUp(_:)``). Files are known by
/// ``SnapshotNodes`` in page-cache mode; in direct_io mode by their inode numbers, and each open
/// takes its snapshot (``OpenFile``).
///
/// What procfs does not allow is refused with the errno that Linux procfs gives a caller
/// without privilege, as measured on Linux 6.18 on `/proc/uptime` (mode 0444):
///
/// | operation                                  | errno     |
/// |--------------------------------------------|-----------|
/// | open a read-only file for writing or with `O_TRUNC`, truncate it | `EACCES` |
/// | write to a read-only file (page-cache mode, where the kernel opens files itself) | `EACCES` |
/// | unlink, rmdir, setxattr, removexattr       | `EACCES`  |
/// | chmod, chown, utimes                       | `EPERM`   |
/// | create, mknod, mkdir, symlink, link, rename | `ENOENT` |
/// | getxattr                                   | `ENOTSUP` |
/// | listxattr                                  | empty list |
///
/// A knob (a writable file) takes writes as `/proc/sys` does: truncating it is allowed and
/// changes nothing, a value goes whole at offset 0 (elsewhere: `EINVAL`), and its store
/// closure's refusal is the writer's errno.
///
/// A file removed after it was opened still reads its snapshot to the end, where procfs would
/// answer `EIO`: the snapshot is whole, so a reader racing an unmount sees a line or an error
/// of the name (`ENOENT`) or of the mount (`ENOTCONN`), never a failed read of an open file.
/// A write to a removed knob gets `EIO`, as in procfs.
final class FuseRequestHandler: Sendable {
    let tree: ProcTree
    let snapshots = SnapshotNodes()
    let openFiles = HandleTable<OpenFile>()
    let openDirectories = HandleTable<OpenDirectory>()
    /// The user who mounted, who owns every entry registered without an owner.
    let mounter: ProcOwner
    let createdAt: timespec
    let logger: Logger
    let directIORequested: Bool
    private let servesFromPageCache = Atomic<Bool>(false)
    private let replyFailureLogged = Atomic<Bool>(false)

    /// How long the kernel may cache a name; a change or removal drops it explicitly.
    static let entryTimeout = 1.0
    /// How long the kernel may cache attributes that change only when the server says so: a
    /// directory's, a link's and a snapshot node's. With `default_permissions` the kernel checks
    /// them on every path walk, so an expired root costs every open a `GETATTR` round trip.
    static let unchangingAttributeTimeout = 86_400.0

    init(tree: ProcTree, directIORequested: Bool, logger: Logger) {
        self.tree = tree
        self.directIORequested = directIORequested
        self.mounter = ProcOwner(uid: getuid(), gid: getgid())
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

    /// The entry behind a node ID, with the text frozen in it for a snapshot node.
    private func resolve(_ node: UInt64) -> (entry: ProcEntry, frozen: [UInt8]?)? {
        if SnapshotNodes.isSnapshot(node) {
            return snapshots.node(node).map { ($0.entry, $0.text) }
        }
        return tree.entry(inode: node).map { ($0, nil) }
    }

    /// An entry's attributes and how long the kernel may cache them; `nil` once it is removed.
    /// A snapshot node's never change, nor do a directory's or a link's without the server
    /// saying so; a file read in direct_io mode gives a fresh size each time.
    private func attributes(of entry: ProcEntry, frozen: [UInt8]?) -> (stat, timeout: Double)? {
        var attributes = stat()
        attributes.st_ino = UInt(entry.inode)
        let owner = entry.owner ?? mounter
        attributes.st_uid = owner.uid
        attributes.st_gid = owner.gid
        attributes.st_atim = createdAt
        attributes.st_mtim = createdAt
        attributes.st_ctim = createdAt
        attributes.st_blksize = 4096
        attributes.st_mode = mode_t(entry.permissions)
        switch entry.kind {
        case .directory:
            guard !entry.isRemoved else { return nil }
            attributes.st_mode |= S_IFDIR
            attributes.st_nlink = UInt(2 + tree.subdirectoryCount(of: entry))
            return (attributes, Self.unchangingAttributeTimeout)
        case .symlink:
            guard !entry.isRemoved, let target = entry.symlinkTarget else { return nil }
            attributes.st_mode |= S_IFLNK
            attributes.st_nlink = 1
            attributes.st_size = off_t(target.utf8.count)
            return (attributes, Self.unchangingAttributeTimeout)
        case .file, .knob:
            guard let text = frozen ?? entry.snapshot() else { return nil }
            attributes.st_mode |= S_IFREG
            attributes.st_nlink = 1
            attributes.st_size = off_t(text.count)
            return (attributes, frozen == nil ? 0 : Self.unchangingAttributeTimeout)
        }
    }

    // MARK: Requests

    func lookup(_ request: fuse_req_t, parent: UInt64, name: String) {
        guard let (directory, _) = resolve(parent) else { return reply(request, error: ENOENT) }
        guard directory.kind == .directory else { return reply(request, error: ENOTDIR) }
        guard let entry = tree.entry(named: name, in: directory) else { return reply(request, error: ENOENT) }
        var parameters = fuse_entry_param()
        let frozen: [UInt8]?
        if readMode == .pageCache, entry.kind == .file || entry.kind == .knob {
            // A snapshot node; a file that does not announce its changes gets a new one on
            // every lookup, and the kernel must look it up again on every open.
            guard let node = snapshots.lookUp(entry) else { return reply(request, error: ENOENT) }
            (parameters.ino, frozen) = (node.id, node.text)
            parameters.entry_timeout = entry.announcesChanges ? Self.entryTimeout : 0
        } else {
            guard tree.kernelLooksUp(entry) else { return reply(request, error: ENOENT) }
            (parameters.ino, frozen) = (entry.inode, nil)
            parameters.generation = entry.generation
            parameters.entry_timeout = Self.entryTimeout
        }
        guard let (attributes, timeout) = attributes(of: entry, frozen: frozen) else {
            forget(parameters.ino, count: 1)
            return reply(request, error: ENOENT)
        }
        parameters.attr = attributes
        parameters.attr_timeout = timeout
        let replied = fuse_reply_entry(request, &parameters)
        // An interrupted lookup: the kernel will not forget what it never got.
        if replied != 0 { forget(parameters.ino, count: 1) }
        checked(replied, "lookup")
    }

    func forget(_ request: fuse_req_t, node: UInt64, lookups: UInt64) {
        forget(node, count: lookups)
        fuse_reply_none(request)
    }

    private func forget(_ node: UInt64, count: UInt64) {
        if SnapshotNodes.isSnapshot(node) {
            snapshots.forget(node, count: count)
        } else {
            tree.kernelForgot(node, count: count)
        }
    }

    func getattr(_ request: fuse_req_t, node: UInt64) {
        guard let (entry, frozen) = resolve(node), let found = attributes(of: entry, frozen: frozen) else {
            return reply(request, error: ENOENT)
        }
        replyAttributes(request, found, "getattr")
    }

    /// Truncating a knob is allowed and changes nothing, as for `/proc/sys` (it is how
    /// `echo 1 > knob` opens it); any other change is refused as procfs refuses it.
    func setattr(_ request: fuse_req_t, node: UInt64, changes: Int32) {
        guard let (entry, frozen) = resolve(node) else { return reply(request, error: ENOENT) }
        if changes & FUSE_SET_ATTR_SIZE != 0 {
            guard entry.kind == .knob, let found = attributes(of: entry, frozen: frozen) else {
                return reply(request, error: entry.kind == .directory ? EISDIR : EACCES)
            }
            return replyAttributes(request, found, "setattr")
        }
        reply(request, error: EPERM)
    }

    func readlink(_ request: fuse_req_t, node: UInt64) {
        guard let (entry, _) = resolve(node), !entry.isRemoved else { return reply(request, error: ENOENT) }
        guard let target = entry.symlinkTarget else { return reply(request, error: EINVAL) }
        checked(fuse_reply_readlink(request, target), "readlink")
    }

    func open(_ request: fuse_req_t, node: UInt64, info: UnsafeMutablePointer<fuse_file_info>) {
        guard let (entry, _) = resolve(node) else { return reply(request, error: ENOENT) }
        // ENOSYS tells the kernel to open files itself from now on, keeping their cached pages.
        if readMode == .pageCache { return reply(request, error: ENOSYS) }
        let flags = info.pointee.flags
        let writes = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
        guard !writes || entry.kind == .knob else { return reply(request, error: EACCES) }
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
            snapshot = resolve(node)?.frozen
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

    /// Hands a write to a knob. Like `/proc/sys` with `sysctl_writes_strict` (the kernel's
    /// default), an appending write (`>>`) goes to offset 0, since a `/proc/sys` file's size is
    /// 0, and a write past offset 0 is reported written and changes nothing. The writer is told
    /// how many bytes the knob consumed (`1 2` to an integer knob consumes 2). The knob
    /// announces its change only after the reply: until then the kernel holds the file locked,
    /// and telling it of the change would wait for that lock.
    func write(_ request: fuse_req_t, node: UInt64, bytes: UnsafeRawBufferPointer, offset: off_t, flags: Int32) {
        guard let (entry, _) = resolve(node), !entry.isRemoved else { return reply(request, error: EIO) }
        guard entry.kind == .knob else { return reply(request, error: EACCES) }
        guard flags & O_APPEND != 0 || offset == 0 else {
            return checked(fuse_reply_write(request, bytes.count), "write")
        }
        let consumed: Int
        do {
            consumed = try entry.write(Array(bytes))
        } catch {
            return reply(request, error: error.code)
        }
        checked(fuse_reply_write(request, min(consumed, bytes.count)), "write")
        entry.changed()
    }

    func release(_ request: fuse_req_t, info: UnsafeMutablePointer<fuse_file_info>) {
        openFiles.remove(info.pointee.fh)
        reply(request, error: 0)
    }

    func opendir(_ request: fuse_req_t, node: UInt64, info: UnsafeMutablePointer<fuse_file_info>) {
        guard let (directory, _) = resolve(node), !directory.isRemoved else { return reply(request, error: ENOENT) }
        guard directory.kind == .directory else { return reply(request, error: ENOTDIR) }
        info.pointee.fh = openDirectories.insert(OpenDirectory(directory: directory))
        if fuse_reply_open(request, info) != 0 {
            openDirectories.remove(info.pointee.fh)
        }
    }

    /// A directory's listing as it is now: `.`, `..`, then the entries by name.
    private func listing(of directory: ProcEntry) -> [OpenDirectory.Item] {
        [OpenDirectory.Item(name: ".", inode: directory.inode, type: S_IFDIR),
         OpenDirectory.Item(name: "..", inode: directory.parentInode, type: S_IFDIR)]
            + tree.children(of: directory).map { OpenDirectory.Item(name: $0.name, inode: $0.inode, type: $0.fileType) }
    }

    /// Lists the directory from `offset` on (see ``OpenDirectory/items(from:current:)``).
    func readdir(_ request: fuse_req_t, size: Int, offset: off_t, info: UnsafeMutablePointer<fuse_file_info>) {
        guard let directory = openDirectories.object(info.pointee.fh) else { return reply(request, error: EBADF) }
        let items = directory.items(from: Int(offset)) { listing(of: directory.directory) }
        var buffer = [CChar](repeating: 0, count: size)
        var used = 0
        for (index, item) in zip(items.indices, items) {
            var attributes = stat()
            attributes.st_ino = UInt(item.inode)
            attributes.st_mode = item.type
            let needed = buffer.withUnsafeMutableBufferPointer { bytes in
                fuse_add_direntry(request, bytes.baseAddress! + used, size - used, item.name, &attributes, off_t(index + 1))
            }
            if needed > size - used { break }
            used += needed
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

    private func replyAttributes(_ request: fuse_req_t, _ found: (stat, timeout: Double), _ operation: String) {
        var attributes = found.0
        checked(fuse_reply_attr(request, &attributes, found.timeout), operation)
    }

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
