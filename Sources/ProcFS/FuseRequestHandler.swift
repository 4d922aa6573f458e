import CFuse3
import Glibc
import Logging
import Synchronization
import SystemPackage

/// Answers libfuse's low-level requests from a ``ProcTree``.
///
/// The kernel knows every entry by its inode number for the entry's whole life, and its
/// lookups of them are counted (``ProcTree/kernelLooksUp(_:)``); a name is dropped from the
/// kernel only when its entry is removed, so an open file never looks deleted. How files read
/// depends on the ``ReadMode``: in direct_io mode each open is an ``OpenFile``; in page-cache
/// mode the kernel opens files itself and each entry's ``KernelCopy`` keeps its cache true.
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
/// A knob (a writable file) takes writes as `/proc/sys` does (see ``write(_:node:bytes:offset:flags:)``).
///
/// Once an entry is removed, as in procfs, new lookups fail with `ENOENT`, and files still open
/// read, write and `fstat` `EIO` and poll `POLLERR|POLLHUP`.
final class FuseRequestHandler: Sendable {
    let tree: ProcTree
    let openFiles = HandleTable<OpenFile>()
    let openDirectories = HandleTable<OpenDirectory>()
    let pollers = PollWaiters<PollHandle>()
    /// The user who mounted, who owns every entry registered without an owner.
    let mounter: ProcOwner
    let createdAt: timespec
    let logger: Logger
    let requestedMode: ReadMode
    private let servesFromPageCache = Atomic<Bool>(false)
    private let replyFailureLogged = Atomic<Bool>(false)

    /// How long the kernel may cache a name; a removal drops it explicitly.
    static let entryTimeout = 1.0
    /// How long the kernel may cache attributes that change only when the server says so: a
    /// directory's, a link's, and in page-cache mode those of a file that announces its
    /// changes. With `default_permissions` the kernel checks them on every path walk, so an
    /// expired root costs every open a `GETATTR` round trip.
    static let unchangingAttributeTimeout = 86_400.0

    init(tree: ProcTree, requestedMode: ReadMode, logger: Logger) {
        self.tree = tree
        self.requestedMode = requestedMode
        self.mounter = ProcOwner(uid: getuid(), gid: getgid())
        self.createdAt = Self.now
        self.logger = logger
    }

    /// How the kernel reads files; decided when the kernel says what it offers (`FUSE_INIT`).
    var readMode: ReadMode { servesFromPageCache.load(ordering: .acquiring) ? .pageCache : .directIO }

    func initialize(_ connection: UnsafeMutablePointer<fuse_conn_info>) {
        let capable = connection.pointee.capable
        let offered = capable & UInt32(FUSE_CAP_NO_OPEN_SUPPORT) != 0
        let autoInvalidates = capable & UInt32(FUSE_CAP_AUTO_INVAL_DATA) != 0
        let mode = ReadMode.choose(kernelOffersPageCache: offered && autoInvalidates, requested: requestedMode)
        if mode == .pageCache { connection.pointee.want |= UInt32(FUSE_CAP_AUTO_INVAL_DATA) }
        servesFromPageCache.store(mode == .pageCache, ordering: .releasing)
        let lacking = requestedMode == .pageCache && mode != .pageCache
            ? " (the kernel lacks FUSE_CAP_NO_OPEN_SUPPORT or FUSE_CAP_AUTO_INVAL_DATA)" : ""
        logger.info("serving reads through the \(mode.rawValue)\(lacking)")
    }

    private static var now: timespec {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return now
    }

    // MARK: Attributes

    /// An entry's attributes and how long the kernel may cache them; `nil` once it is removed.
    ///
    /// A file's size is that of its current text, which a read from offset 0 gets (the kernel
    /// sends no handle with an `fstat`); with an open file's handle (`lseek` to `SEEK_END`) in
    /// direct_io mode, that of the text the open is reading. In page-cache mode it is the text
    /// given to the kernel, with a modification time that moves when that text changes, and
    /// only a file that announces its changes, whose text settled, from a `GETATTR`
    /// (`lasting`), may be cached until the next change: a `LOOKUP` or `SETATTR` reply may
    /// arrive after a change the kernel could not yet be told of.
    private func attributes(of entry: ProcEntry, open: OpenFile?, lasting: Bool = false) -> (stat, timeout: Double)? {
        guard !entry.isRemoved else { return nil }
        var attributes = stat()
        attributes.st_ino = UInt(entry.inode)
        let owner = entry.owner ?? mounter
        attributes.st_uid = owner.uid
        attributes.st_gid = owner.gid
        attributes.st_atim = createdAt
        attributes.st_mtim = createdAt
        attributes.st_ctim = createdAt
        attributes.st_blksize = 4096
        attributes.st_mode = mode_t(entry.permissions) | entry.fileType
        switch entry.kind {
        case .directory:
            attributes.st_nlink = UInt(2 + tree.subdirectoryCount(of: entry))
            return (attributes, Self.unchangingAttributeTimeout)
        case .symlink:
            guard let target = entry.symlinkTarget else { return nil }
            attributes.st_nlink = 1
            attributes.st_size = off_t(target.utf8.count)
            return (attributes, Self.unchangingAttributeTimeout)
        case .file, .knob:
            attributes.st_nlink = 1
            if readMode == .pageCache {
                guard let copy = entry.kernelCopy.publish(entry, now: Self.now) else { return nil }
                attributes.st_size = off_t(copy.text.count)
                attributes.st_mtim = copy.modified
                attributes.st_ctim = copy.modified
                let cached = lasting && entry.announcesChanges && copy.settled
                return (attributes, cached ? Self.unchangingAttributeTimeout : 0)
            }
            guard let size = open?.size ?? entry.snapshot()?.count else { return nil }
            attributes.st_size = off_t(size)
            return (attributes, 0)
        }
    }

    // MARK: Requests

    func lookup(_ request: fuse_req_t, parent: UInt64, name: String) {
        guard let directory = tree.kernelEntry(inode: parent), !directory.isRemoved else {
            return reply(request, error: ENOENT)
        }
        guard directory.kind == .directory else { return reply(request, error: ENOTDIR) }
        guard let entry = tree.entry(named: name, in: directory), tree.kernelLooksUp(entry) else {
            return reply(request, error: ENOENT)
        }
        guard let (attributes, timeout) = attributes(of: entry, open: nil) else {
            tree.kernelForgot(entry.inode, count: 1)
            return reply(request, error: ENOENT)
        }
        var parameters = fuse_entry_param()
        parameters.ino = entry.inode
        parameters.generation = entry.generation
        parameters.entry_timeout = Self.entryTimeout
        parameters.attr = attributes
        parameters.attr_timeout = timeout
        let replied = fuse_reply_entry(request, &parameters)
        // An interrupted lookup: the kernel will not forget what it never got.
        if replied != 0 { tree.kernelForgot(entry.inode, count: 1) }
        checked(replied, "lookup")
    }

    func forget(_ request: fuse_req_t, node: UInt64, lookups: UInt64) {
        tree.kernelForgot(node, count: lookups)
        fuse_reply_none(request)
    }

    /// `handle` is the open file's `fh` when the kernel sends one (`lseek` to `SEEK_END`; an
    /// `fstat` sends none).
    func getattr(_ request: fuse_req_t, node: UInt64, handle: UInt64?) {
        guard let entry = tree.kernelEntry(inode: node) else { return reply(request, error: ENOENT) }
        let open = handle.flatMap { openFiles.object($0) }
        guard let found = attributes(of: entry, open: open, lasting: true) else {
            return reply(request, error: entry.kind == .directory ? ENOENT : EIO)
        }
        replyAttributes(request, found, "getattr")
    }

    /// Truncating a knob is allowed and changes nothing, as for `/proc/sys` (it is how
    /// `echo 1 > knob` opens it); any other change is refused as procfs refuses it.
    func setattr(_ request: fuse_req_t, node: UInt64, changes: Int32) {
        guard let entry = tree.kernelEntry(inode: node) else { return reply(request, error: ENOENT) }
        if changes & FUSE_SET_ATTR_SIZE != 0 {
            guard entry.kind == .knob else { return reply(request, error: entry.kind == .directory ? EISDIR : EACCES) }
            guard let found = attributes(of: entry, open: nil) else { return reply(request, error: EIO) }
            return replyAttributes(request, found, "setattr")
        }
        reply(request, error: EPERM)
    }

    func readlink(_ request: fuse_req_t, node: UInt64) {
        guard let entry = tree.kernelEntry(inode: node), !entry.isRemoved else { return reply(request, error: ENOENT) }
        guard let target = entry.symlinkTarget else { return reply(request, error: EINVAL) }
        checked(fuse_reply_readlink(request, target), "readlink")
    }

    func open(_ request: fuse_req_t, node: UInt64, info: UnsafeMutablePointer<fuse_file_info>) {
        guard let entry = tree.kernelEntry(inode: node), !entry.isRemoved else { return reply(request, error: ENOENT) }
        // ENOSYS tells the kernel to open files itself from now on, keeping their cached pages.
        if readMode == .pageCache { return reply(request, error: ENOSYS) }
        let flags = info.pointee.flags
        let writes = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
        guard !writes || entry.kind == .knob else { return reply(request, error: EACCES) }
        info.pointee.fh = openFiles.insert(OpenFile(entry: entry))
        // Every read comes here, to be read as a seq_file.
        info.pointee.direct_io = 1
        if fuse_reply_open(request, info) != 0 {
            // The open was interrupted: no release will come for this handle.
            openFiles.remove(info.pointee.fh)
        }
    }

    /// Reads from the open file (direct_io), or, to fill the kernel's cache in page-cache mode
    /// (where the kernel opens files itself and `fh` is 0), from the text given to the kernel
    /// with the size it holds.
    func read(
        _ request: fuse_req_t, node: UInt64, size: Int, offset: off_t, info: UnsafeMutablePointer<fuse_file_info>
    ) {
        let bytes: ArraySlice<UInt8>?
        if info.pointee.fh == 0 {
            bytes = tree.kernelEntry(inode: node).flatMap { entry in
                entry.kernelCopy.published(entry, now: Self.now)?.text.bytes(at: Int(offset), count: size)
            }
        } else {
            bytes = openFiles.object(info.pointee.fh)?.read(at: Int(offset), size: size)
        }
        guard let bytes else { return reply(request, error: EIO) }
        let replied = bytes.withUnsafeBufferPointer { buffer in
            fuse_reply_buf(request, UnsafeRawPointer(buffer.baseAddress)?.assumingMemoryBound(to: CChar.self), buffer.count)
        }
        checked(replied, "read")
    }

    /// Hands a write to a knob. Like `/proc/sys` with `sysctl_writes_strict` (the kernel's
    /// default), an appending write (`>>`) goes to offset 0, since a `/proc/sys` file's size is
    /// 0, and a write past offset 0 is reported written and changes nothing. The writer is told
    /// how many bytes the knob consumed (`1 2` to an integer knob consumes 2).
    ///
    /// After every write the knob announces a change, once the write is answered: in
    /// page-cache mode the kernel has copied the written bytes into its cache, and must drop
    /// them even when the knob took nothing.
    func write(_ request: fuse_req_t, node: UInt64, bytes: UnsafeRawBufferPointer, offset: off_t, flags: Int32) {
        guard let entry = tree.kernelEntry(inode: node), !entry.isRemoved else { return reply(request, error: EIO) }
        guard entry.kind == .knob else { return reply(request, error: EACCES) }
        defer { entry.changed() }
        guard flags & O_APPEND != 0 || offset == 0 else {
            return checked(fuse_reply_write(request, bytes.count), "write")
        }
        do {
            let consumed = try entry.write(Array(bytes))
            checked(fuse_reply_write(request, min(consumed, bytes.count)), "write")
        } catch {
            reply(request, error: error.rawValue)
        }
    }

    /// Answers a poll as a sysctl does (see ``PollWaiters``); `handle` is notified when the
    /// entry changes, if the caller will sleep.
    func poll(_ request: fuse_req_t, node: UInt64, fileHandle: UInt64, handle: PollHandle?) {
        let open = openFiles.object(fileHandle)
        guard let entry = open?.entry ?? tree.kernelEntry(inode: node) else {
            handle?.release()
            return reply(request, error: ENOENT)
        }
        // An open is its fh in direct_io mode, and the kernel's own handle in page-cache mode.
        let key = open == nil ? handle?.kernelFileHandle : fileHandle
        guard let key else {
            // A page-cache poll that will not sleep does not say which open it is.
            let events = entry.isRemoved ? PollWaiters<PollHandle>.removed : PollWaiters<PollHandle>.readable
            return checked(fuse_reply_poll(request, UInt32(events)), "poll")
        }
        let answer = pollers.poll(entry, key: key, since: open?.openedVersion ?? entry.version, handle: handle)
        answer.release.forEach { $0.release() }
        checked(fuse_reply_poll(request, UInt32(answer.events)), "poll")
        answer.notify.forEach { $0.notify() }
    }

    /// Wakes the pollers of `entry` after a change or its removal.
    func notifyPollers(of entry: ProcEntry) {
        for handle in pollers.wake(entry) { handle.notify() }
    }

    func release(_ request: fuse_req_t, info: UnsafeMutablePointer<fuse_file_info>) {
        if let open = openFiles.remove(info.pointee.fh) {
            pollers.closed(inode: open.entry.inode, key: info.pointee.fh)?.release()
        }
        reply(request, error: 0)
    }

    func opendir(_ request: fuse_req_t, node: UInt64, info: UnsafeMutablePointer<fuse_file_info>) {
        guard let directory = tree.kernelEntry(inode: node), !directory.isRemoved else { return reply(request, error: ENOENT) }
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
        let message = "\(operation): reply not delivered: \(Errno(rawValue: -result))"
        if replyFailureLogged.exchange(true, ordering: .relaxed) {
            logger.debug("\(message)")
        } else {
            logger.notice("\(message); further undelivered replies are logged at debug level")
        }
    }
}
