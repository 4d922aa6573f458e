import Glibc
import Logging
import Synchronization
import SystemPackage

/// The answer to each FUSE operation on a ``ProcTree``, decided in Swift: each method returns
/// the reply as a value or throws the `Errno` the caller gets. `FuseOperations` turns libfuse's
/// requests into these calls and sends what they return; no C type of libfuse's appears here,
/// so every rule below is tested without a mount.
///
/// The kernel knows every entry by its inode number for the entry's whole life, and the
/// ``NodeTable`` counts its lookups of them; a name is dropped from the kernel only when its
/// entry is removed, so an open file never looks deleted. How files read depends on the
/// ``ReadMode``: in direct_io mode each open is an ``OpenFile``; in page-cache mode the kernel
/// opens files itself and each file's ``PageCacheCopy``, in its node, keeps its cache true.
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
/// A knob (a writable file) takes writes as `/proc/sys` does (see
/// ``write(node:bytes:offset:flags:)``). Once an entry is removed, as in procfs, new lookups
/// fail with `ENOENT`, and files still open read, write and `fstat` `EIO` and poll
/// `POLLERR|POLLHUP`.
final class ProcFileSystem: Sendable {
    let tree: ProcTree
    /// The entries the kernel holds.
    let nodes: NodeTable
    let openFiles: HandleTable<OpenFile>
    let openDirectories: HandleTable<OpenDirectory>
    let pollers = PollWaiters<any KernelPollHandle>()
    /// The user who mounted, who owns every entry registered without an owner.
    let mounter: ProcOwner
    let createdAt: timespec
    let logger: Logger
    let requestedMode: ReadMode
    private let servesFromPageCache = Atomic<Bool>(false)
    /// Whether the kernel may cache directory listings (`FOPEN_CACHE_DIR`): it can tell a
    /// listing that changed only with `FUSE_CAP_AUTO_INVAL_DATA`.
    private let cachesListings = Atomic<Bool>(false)

    /// How long the kernel may cache a name: until the entry is removed, which drops the name
    /// explicitly. (A name not found is not cached, so a new entry is seen at once.)
    static let entryTimeout = unchangingAttributeTimeout
    /// How long the kernel may cache attributes that change only when the server says so: a
    /// directory's, a link's, and a file's, but for texts per caller or made by `async` closures
    /// in page-cache mode, and files below a dynamic directory. A file that announces its
    /// changes has them kept only from a `GETATTR`, and only until it announces a change of
    /// its text's length in direct_io mode (a change that keeps the length leaves its size
    /// true, and is not told), or any change in page-cache mode; the kernel is then told to
    /// drop them. With `default_permissions` the kernel checks them on every path walk, so an
    /// expired root costs every open a `GETATTR` round trip.
    static let unchangingAttributeTimeout = 86_400.0

    /// What this server owes the servers of its mount before and after it, when a keeper hands
    /// the mount from one to the next (see ``Succession``); `nil` for a server that mounted on
    /// its own, which then pays nothing for takeover.
    let succession: Succession?

    /// - Parameter takingOver: the state of a mount that servers hand on to each other, and
    ///   this server's number among them. Its file handles then carry its number, so that
    ///   none is one another server gave the kernel; the kernel's nodes and open files that
    ///   another server made are found in the tree by their inode numbers, and opened anew on
    ///   their first use.
    init(
        tree: ProcTree, requestedMode: ReadMode, logger: Logger, mounter: ProcOwner = ProcOwner(uid: getuid(), gid: getgid()),
        takingOver: (state: CarriedState, server: UInt64)? = nil
    ) {
        self.tree = tree
        let succession = takingOver.map { Succession($0.state, server: $0.server, tree: tree) }
        self.succession = succession
        self.openFiles = HandleTable(base: succession?.firstHandle ?? 0)
        self.openDirectories = HandleTable(base: succession?.firstHandle ?? 0)
        self.nodes = NodeTable(root: tree.root, keepingPathsIn: succession?.paths)
        self.requestedMode = requestedMode
        self.mounter = mounter
        self.createdAt = Self.now
        self.logger = logger
    }

    /// How the kernel reads files; decided when the kernel says what it offers (`FUSE_INIT`).
    var readMode: ReadMode { servesFromPageCache.load(ordering: .acquiring) ? .pageCache : .directIO }

    static var now: timespec {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return now
    }

    // MARK: Operations

    /// `FUSE_INIT`: picks the read mode from what the kernel offers, and whether the kernel may
    /// cache directory listings.
    ///
    /// - Returns: whether the server wants `FUSE_CAP_AUTO_INVAL_DATA`: whenever it is offered.
    ///   Besides the page-cache mode's files, it has the kernel ask for a directory's
    ///   attributes before it serves a cached listing from the start, and so see from the
    ///   modification time (``ProcTree/listingVersion(of:)``) that the listing changed.
    func initialize(kernelOffersNoOpen: Bool, kernelOffersAutoInvalidation: Bool) -> Bool {
        let kernelOffersPageCache = kernelOffersNoOpen && kernelOffersAutoInvalidation
        let bypassing = tree.holdsFilesBypassingPageCache
        let mode = ReadMode.choose(kernelOffersPageCache: kernelOffersPageCache && !bypassing, requested: requestedMode)
        servesFromPageCache.store(mode == .pageCache, ordering: .releasing)
        let lacking = requestedMode == .pageCache && mode != .pageCache
            ? bypassing && kernelOffersPageCache
                ? " (the tree holds files that the page cache cannot hold: texts per caller, or made by async closures)"
                : " (the kernel lacks FUSE_CAP_NO_OPEN_SUPPORT or FUSE_CAP_AUTO_INVAL_DATA)"
            : ""
        logger.info("reading files \(mode == .pageCache ? "through the page cache" : "in direct_io mode")\(lacking)")
        cachesListings.store(kernelOffersAutoInvalidation, ordering: .releasing)
        return kernelOffersAutoInvalidation
    }

    /// `LOOKUP`: counts one more lookup of the entry found, which the kernel forgets later; call
    /// ``lookupNotDelivered(_:)`` if the reply cannot be sent.
    func lookup(parent: UInt64, name: String) throws(Errno) -> Entry {
        guard let directory = heldEntry(parent), !directory.isRemoved else { throw .noSuchFileOrDirectory }
        guard directory.kind == .directory else { throw .notDirectory }
        tree.refresh(directory)
        guard let entry = tree.entry(named: name, in: directory),
            let looked = nodes.lookedUp(entry, caching: kernelCache(of: entry))
        else {
            throw .noSuchFileOrDirectory
        }
        guard let attributes = attributes(of: entry, open: nil) else {
            nodes.forget(entry.inode, count: 1)
            throw .noSuchFileOrDirectory
        }
        // Before the kernel has the number: a server after this one must not give it again.
        succession?.giving(entry.inode)
        // The kernel keeps no name in a dynamic directory, which is told of no change, nor one
        // whose number the next server of a kept mount would not know.
        let kept = !directory.isDynamicDirectory && looked == .counted
        return Entry(attributes: attributes, entryTimeout: kept ? Self.entryTimeout : 0)
    }

    /// The reply to a lookup did not reach the kernel (the caller was interrupted): it will not
    /// forget what it never got.
    func lookupNotDelivered(_ entry: Entry) {
        nodes.forget(entry.attributes.inode, count: 1)
    }

    /// `FORGET`.
    func forget(node: UInt64, lookups: UInt64) {
        nodes.forget(node, count: lookups)
    }

    /// `GETATTR`; `handle` is the open file's `fh` when the kernel sends one (`lseek` to
    /// `SEEK_END`; an `fstat` sends none).
    func attributes(node: UInt64, handle: UInt64?) throws(Errno) -> Attributes {
        // A number another server gave the kernel for a path this server's tree lacks names an
        // entry gone, which answers as a removed file does.
        guard let entry = heldEntry(node) else { throw succession == nil ? .noSuchFileOrDirectory : .ioError }
        tree.refresh(entry)
        let open = handle.flatMap { openFile($0, of: entry) }
        guard let found = attributes(of: entry, open: open, lasting: true) else { throw .ioError }
        return found
    }

    /// `SETATTR`. Truncating a knob is allowed and changes nothing, as for `/proc/sys` (it is
    /// how `echo 1 > knob` opens it); any other change is refused as procfs refuses it.
    func setAttributes(node: UInt64, truncates: Bool) throws(Errno) -> Attributes {
        guard let entry = heldEntry(node) else { throw .noSuchFileOrDirectory }
        guard truncates else { throw .notPermitted }
        guard entry.kind == .knob else { throw entry.kind == .directory ? .isDirectory : .permissionDenied }
        guard let found = attributes(of: entry, open: nil) else { throw .ioError }
        return found
    }

    /// `READLINK`.
    func readlink(node: UInt64) throws(Errno) -> String {
        guard let entry = heldEntry(node), !entry.isRemoved else { throw .noSuchFileOrDirectory }
        guard let target = entry.symlinkTarget else { throw .invalidArgument }
        return target
    }

    /// `OPEN`: in direct_io mode a new ``OpenFile``, which reads as `caller`; call ``release(handle:)`` if the reply
    /// cannot be sent. In page-cache mode `ENOSYS`, which tells the kernel to open files itself
    /// from now on, keeping their cached pages.
    func open(node: UInt64, flags: Int32, caller: ProcCaller) throws(Errno) -> Opened {
        guard let entry = heldEntry(node), !entry.isRemoved else { throw .noSuchFileOrDirectory }
        if readMode == .pageCache { throw .noFunction }
        let writes = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
        guard !writes || entry.kind == .knob else { throw .permissionDenied }
        // Every read comes here, to be read as a seq_file.
        let opened = openFiles.insert { OpenFile(entry: entry, caller: caller, handle: $0, carrying: succession?.texts) }
        return Opened(handle: opened, directIO: true)
    }

    /// The reply to a `READ`: the bytes now, or, for a file whose text an `async` closure
    /// makes, a wait for them that the caller runs in a task and answers from there.
    enum ReadReply {
        case bytes(ArraySlice<UInt8>)
        case awaiting(@Sendable () async throws(Errno) -> ArraySlice<UInt8>)
    }

    /// `READ` from the open file `handle` (direct_io), or, to fill the kernel's cache in
    /// page-cache mode (where the kernel opens files itself and `handle` is 0), from the text
    /// given to the kernel with the size it holds.
    func read(node: UInt64, handle: UInt64, offset: Int, size: Int) throws(Errno) -> ReadReply {
        let entry = heldEntry(node)
        // As a held /proc/<pid> file reads once the process is gone.
        if entry?.isOrphaned == true { throw .noSuchProcess }
        let bytes: ArraySlice<UInt8>?
        if handle == 0 {
            bytes = entry.flatMap { entry in
                nodes.copy(of: node)?.published(entry, now: Self.now)?.text.bytes(at: offset, count: size)
            }
        } else {
            let open = entry.flatMap { openFile(handle, of: $0) }
            if let open, open.entry.isAwaited {
                return .awaiting { () async throws(Errno) in
                    guard let bytes = await open.awaitedRead(at: offset, size: size) else { throw .ioError }
                    return bytes
                }
            }
            bytes = open?.read(at: offset, size: size)
        }
        guard let bytes else { throw .ioError }
        return .bytes(bytes)
    }

    /// `WRITE` to a knob. Like `/proc/sys` with `sysctl_writes_strict` (the kernel's default),
    /// an appending write (`>>`) goes to offset 0, since a `/proc/sys` file's size is 0, and a
    /// write past offset 0 is reported written and changes nothing. The writer is told how many
    /// bytes the knob consumed (`1 2` to an integer knob consumes 2).
    ///
    /// After every write to a knob, the knob announces a change before the reply is sent (see
    /// ``ProcEntry/write(_:)``): in page-cache mode the kernel has copied the written bytes into
    /// its cache, and must drop them even when the knob took nothing, before the writer, woken by
    /// the reply, reads the knob back. (The notice asks only for the attributes again, which
    /// takes no lock the writing kernel holds.)
    func write(node: UInt64, bytes: [UInt8], offset: Int, flags: Int32) -> Result<Int, Errno> {
        guard let entry = heldEntry(node) else { return .failure(.ioError) }
        guard !entry.isOrphaned else { return .failure(.noSuchProcess) }
        guard !entry.isRemoved else { return .failure(.ioError) }
        guard entry.kind == .knob else { return .failure(.permissionDenied) }
        guard flags & O_APPEND != 0 || offset == 0 else {
            entry.changed()
            return .success(bytes.count)
        }
        do {
            return .success(min(try entry.write(bytes), bytes.count))
        } catch {
            return .failure(error)
        }
    }

    /// `POLL`, answered as a sysctl answers it (see ``PollWaiters``); `handle` is notified when
    /// the entry changes, if the caller will sleep.
    func poll(node: UInt64, fileHandle: UInt64, handle: (any KernelPollHandle)?) -> Polled {
        let open = fileHandle == 0 ? nil : heldEntry(node).flatMap { openFile(fileHandle, of: $0) }
        guard let entry = open?.entry ?? heldEntry(node) else {
            return Polled(result: .failure(.noSuchFileOrDirectory), release: [handle].compactMap { $0 })
        }
        let now = entry.isRemoved ? PollWaiters<any KernelPollHandle>.removed : PollWaiters<any KernelPollHandle>.readable
        // A file that does not announce its changes has nothing to wake a poller for, as
        // /proc/uptime has not (procfs's DEFAULT_POLLMASK): no poller is kept. (Go's runtime
        // polls every file it opens, so each open would otherwise leave one behind.) A knob
        // announces every write to it, as /proc/sys/kernel/hostname wakes its pollers.
        guard entry.announcesChanges || entry.kind == .knob else { return Polled(result: .success(now), release: [handle].compactMap { $0 }) }
        // An open is its fh in direct_io mode, and the kernel's own handle in page-cache mode.
        guard let key = open == nil ? handle?.kernelFileHandle : fileHandle else {
            // A page-cache poll that will not sleep does not say which open it is.
            return Polled(result: .success(now))
        }
        if let handle { succession?.sleeping(handle.kernelFileHandle) }
        let answer = pollers.poll(entry, key: key, since: open?.openedVersion ?? entry.version, handle: handle)
        return Polled(result: .success(answer.events), release: answer.release, notify: answer.notify)
    }

    /// The entry the kernel knows as `inode`. For a server that took over the mount, one that
    /// another server told the kernel of is found in the tree by its number, and held from
    /// then on.
    private func heldEntry(_ inode: UInt64) -> ProcEntry? {
        if let held = nodes.entry(inode) { return held }
        guard succession != nil, let found = tree.entry(inode: inode) else { return nil }
        return adopt(found)
    }

    /// Holds `entry` as a node another server of the mount told the kernel of.
    func adopt(_ entry: ProcEntry) -> ProcEntry {
        nodes.adopt(entry, caching: kernelCache(of: entry))
    }

    /// What the kernel may cache of `entry` that changes without a notice from the tree. The
    /// kernel's cache cannot keep a text per caller, or wait for an async one: such a file
    /// reads EIO there, and has size 0 in direct_io mode, as in procfs.
    private func kernelCache(of entry: ProcEntry) -> NodeTable.KernelCache {
        if entry.bypassesPageCache { return .nothing }
        if readMode == .pageCache { return .pages }
        return entry.announcesChanges ? .attributes : .nothing
    }

    /// The open file `handle` of `entry`: one this server opened, or, for a server that took
    /// over the mount, one another server opened, which is opened here on its first use (as
    /// the caller the server runs as), going on with the text that server kept for it.
    private func openFile(_ handle: UInt64, of entry: ProcEntry) -> OpenFile? {
        guard let succession, succession.isAnothers(handle) else { return openFiles.object(handle) }
        return openFiles.object(handle) { succession.adoptOpen(handle, of: entry) }
    }

    /// `RELEASE`: forgets the open, its kept text and its poller; the poll handle to release,
    /// if any.
    func release(handle: UInt64) -> (any KernelPollHandle)? {
        guard let open = openFiles.remove(handle) else {
            // Another server's open that this one never used: the text it kept goes.
            if let succession, succession.isAnothers(handle) { succession.releasedUnused(handle) }
            return nil
        }
        open.release()
        return pollers.closed(inode: open.entry.inode, key: handle)
    }

    /// `OPENDIR`; call ``releaseDirectory(handle:)`` if the reply cannot be sent.
    func openDirectory(node: UInt64) throws(Errno) -> Opened {
        guard let directory = heldEntry(node), !directory.isRemoved else { throw .noSuchFileOrDirectory }
        guard directory.kind == .directory else { throw .notDirectory }
        // A dynamic directory is computed at each listing: the kernel must ask every time.
        return Opened(
            handle: openDirectories.insert { _ in OpenDirectory(directory: directory) }, directIO: false,
            cachesListing: cachesListings.load(ordering: .acquiring) && !directory.isDynamicDirectory)
    }

    /// `READDIR` from `offset` on (see ``OpenDirectory/items(from:current:)``): `.`, `..`, then
    /// the entries by name, each with the offset that follows it.
    func readDirectory(node: UInt64, handle: UInt64, offset: Int) throws(Errno) -> ArraySlice<DirectoryItem> {
        // A server that took over the mount lists anew a directory another server opened.
        let found = succession == nil
            ? openDirectories.object(handle)
            : openDirectories.object(handle) { self.heldEntry(node).map { OpenDirectory(directory: $0) } }
        guard let open = found else { throw .badFileDescriptor }
        return open.items(from: offset) {
            tree.refresh(open.directory)
            return listing(of: open.directory)
        }
    }

    /// `RELEASEDIR`.
    func releaseDirectory(handle: UInt64) {
        openDirectories.remove(handle)
    }

    // MARK: Attributes

    /// An entry's attributes and how long the kernel may cache them; `nil` once it is removed,
    /// but for a directory, which answers as procfs's does (and lists nothing).
    ///
    /// In direct_io mode, a file that announces its changes has the size of its current text,
    /// which a read from offset 0 gets (the kernel sends no handle with an `fstat`), or with an
    /// open file's handle (`lseek` to `SEEK_END`) that of the text the open is reading. From a
    /// `GETATTR` without a handle (`lasting`), the kernel keeps that size until the file
    /// announces a change of length (``KeptAttributes``), so that a warm `cat` waits on `OPEN`
    /// and two `READ`s alone; an open's size, and the reply to a `LOOKUP` (whose inode the kernel may
    /// not hold yet when it is told of a change), it does not keep. A file
    /// that does not announce its changes has size 0, as in procfs: its size is known only by
    /// making its text, and so its attributes never change and the kernel keeps them (which is
    /// what makes `ls -l` and `find` of a large tree cheap). In page-cache mode the size is that
    /// of the text given to the kernel, with a modification time that moves when that text
    /// changes, and only a file that announces its changes, whose text settled, from a
    /// `GETATTR` (`lasting`), may be cached until the next change: a `LOOKUP` or `SETATTR` reply
    /// may arrive after a change the kernel could not yet be told of.
    private func attributes(of entry: ProcEntry, open: OpenFile?, lasting: Bool = false) -> Attributes? {
        // A removed directory still answers, as procfs's does: it lists nothing. So does a file
        // of a dynamic entry that is gone, as a held /proc/<pid> file's fstat does.
        let orphaned = entry.isOrphaned
        guard !entry.isRemoved || entry.kind == .directory || orphaned else { return nil }
        var attributes = Attributes(
            inode: entry.inode, mode: entry.permissions.rawValue | entry.fileType, linkCount: 1,
            owner: entry.owner ?? mounter, size: 0, created: createdAt, modified: createdAt,
            timeout: Self.unchangingAttributeTimeout)
        switch entry.kind {
        case .directory:
            attributes.linkCount = 2 + tree.subdirectoryCount(of: entry)
            // Moves with every change of its entries: a listing the kernel cached before is stale.
            attributes.modified = Self.advance(createdAt, nanoseconds: tree.listingVersion(of: entry))
            // A dynamic directory's link count changes with no notice to the kernel.
            if entry.isDynamicDirectory { attributes.timeout = 0 }
        case .symlink:
            guard let target = entry.symlinkTarget else { return nil }
            attributes.size = target.utf8.count
        case .file, .knob:
            if orphaned {
                // Its process is gone: a time never given before, so that the kernel drops what
                // it cached and reads again, which fails with ESRCH. The page cache reads only
                // below the size, so there it is not 0.
                attributes.timeout = 0
                if readMode == .pageCache, let copy = nodes.copy(of: entry.inode) {
                    attributes.modified = copy.moveModificationTime(now: Self.now)
                    attributes.size = max(copy.publishedSize ?? 0, 1)
                }
            } else if entry.bypassesPageCache {
                // Its size depends on who asks, or on an async closure: 0, as in procfs.
            } else if readMode == .pageCache {
                guard let copy = nodes.copy(of: entry.inode)?.publish(entry, now: Self.now) else { return nil }
                attributes.size = copy.text.count
                attributes.modified = copy.modified
                // Below a dynamic directory, a name may go with no notice to the kernel.
                let cached = lasting && entry.announcesChanges && copy.settled && !entry.isBelowDynamicDirectory
                attributes.timeout = cached ? Self.unchangingAttributeTimeout : 0
            } else if entry.announcesChanges {
                if let size = open?.size {
                    // The open's own text, which the kernel must not keep for the file.
                    attributes.size = size
                    attributes.timeout = 0
                } else if lasting, !entry.isBelowDynamicDirectory, let kept = nodes.keptAttributes(of: entry.inode) {
                    guard let size = kept.keep(entry) else { return nil }
                    attributes.size = size.size
                    attributes.timeout = size.lasting ? Self.unchangingAttributeTimeout : 0
                } else {
                    guard let size = entry.snapshot()?.count else { return nil }
                    attributes.size = size
                    attributes.timeout = 0
                }
            }
        }
        return attributes
    }

    /// `time` plus `nanoseconds`.
    private static func advance(_ time: timespec, nanoseconds: UInt64) -> timespec {
        let total = UInt64(time.tv_nsec) + nanoseconds
        return timespec(tv_sec: time.tv_sec + Int(total / 1_000_000_000), tv_nsec: Int(total % 1_000_000_000))
    }

    /// A directory's listing as it is now: `.`, `..`, then the entries by name.
    private func listing(of directory: ProcEntry) -> [DirectoryItem] {
        let items = [(".", directory.inode, S_IFDIR), ("..", directory.parentInode, S_IFDIR)]
            + tree.children(of: directory).map { ($0.name, $0.inode, $0.fileType) }
        return items.enumerated().map { index, item in
            DirectoryItem(name: item.0, inode: item.1, type: item.2, nextOffset: index + 1)
        }
    }
}

/// A poll that sleeps until it is notified: libfuse's `fuse_pollhandle` on a mount.
protocol KernelPollHandle: Sendable {
    /// The kernel's handle of the polled file (`kh`), unique to one open.
    var kernelFileHandle: UInt64 { get }
    /// Wakes the poller, which then polls again, and frees the handle.
    func notify()
    /// Frees the handle without waking the poller.
    func release()
}
