import Glibc
import Synchronization
import SystemPackage

/// One node of a ``ProcTree``: a file whose text is made from live state, a writable file
/// (a *knob*, like those of `/proc/sys`), a directory, or a symbolic link.
///
/// A file is read as procfs reads a `seq_file`: a read from offset 0 makes the text anew from
/// the entry's closure, and the reads that follow it go on in that one text, whole at every
/// buffer size, never half of one value and half of the next. An owner that knows when the text
/// changes registers the file with `announcesChanges` and calls ``changed(keepingLength:)``; pollers of the
/// file then wake, and the kernel may cache the text in between.
public final class ProcEntry: Sendable {
    /// What an entry is, and what makes its content.
    public enum Kind: Sendable {
        /// A regular file, read-only unless it is a knob.
        case file
        /// A regular file whose writes are handed to a store closure.
        case knob
        /// A directory.
        case directory
        /// A symbolic link.
        case symlink
    }

    /// What makes a file's bytes: a text or bytes, the same for every caller, or a text for the
    /// caller who opens it. Each case holds the owner's closure itself, so an entry costs no
    /// allocation beyond the closure's own.
    enum Content: Sendable {
        case text(@Sendable () -> String)
        case bytes(@Sendable () -> [UInt8])
        case perCaller(@Sendable (ProcCaller) -> String)
        case awaitedText(@Sendable () async -> String)
    }

    /// What a directory keeps of its own: how many times its entries have changed, and for a
    /// dynamic directory what computes them.
    final class DirectoryState: Sendable {
        /// Computes the entries of a `/proc/<pid>`-style directory when it is looked in.
        let dynamic: DynamicChildren?
        /// Moved (under the tree's lock) by every entry added or removed, and by the
        /// directory's own removal.
        let listingChanges = Atomic<UInt64>(0)

        init(dynamic: DynamicChildren? = nil) {
            self.dynamic = dynamic
        }
    }

    /// A knob's two closures, in one object: knobs are few, and a file's body stays small.
    final class Knob: Sendable {
        let content: @Sendable () -> String
        /// Takes the bytes of one write at offset 0 and says how many it consumed.
        let store: @Sendable ([UInt8]) throws(Errno) -> Int

        init(content: @escaping @Sendable () -> String, store: @escaping @Sendable ([UInt8]) throws(Errno) -> Int) {
            self.content = content
            self.store = store
        }
    }

    enum Body: Sendable {
        case file(content: Content)
        case knob(Knob)
        case directory(DirectoryState)
        case symlink(target: String)
    }

    /// The entry's name in its directory; empty for the root.
    public let name: String
    /// The inode number, stable for the entry's life and never given to another entry of the
    /// tree. (A server that takes a mount over gives the tree, before it serves, the numbers
    /// the kernel holds for its paths: see `ProcFSKeeper`.)
    public var inode: UInt64 { number.load(ordering: .relaxed) }
    /// The inode number of the directory the entry is in; the root's is its own.
    public var parentInode: UInt64 { parentNumber.load(ordering: .relaxed) }
    /// The entry's number and its directory's, set again only by a renumbering before the tree
    /// is served (so before any other thread reads them: relaxed loads are plain loads).
    private let number: Atomic<UInt64>
    private let parentNumber: Atomic<UInt64>
    /// The permission bits, for example `0o444`.
    public let permissions: FilePermissions
    /// Who owns the entry; `nil` means the user who mounted the tree.
    public let owner: ProcOwner?
    /// Whether the owner calls ``changed(keepingLength:)`` whenever the text changes, so that the kernel may
    /// cache the text until then.
    public let announcesChanges: Bool
    let body: Body
    private let observers: ProcTreeObservers
    /// For an entry below a dynamic directory, whether that directory still holds the name the
    /// entry is, or is below; `nil` for every other entry.
    let listed: (@Sendable () -> Bool)?
    /// The entry's life in one word, so that an entry costs no lock of its own (procfs keeps
    /// `in_use` in the `proc_dir_entry` the same way): the callers inside it (procfs's
    /// `use_pde`) in the low bits, whether a server watches it, whether it is removed, and above
    /// those the count of changes it has announced. Its removal waits on the tree's one wait
    /// queue.
    private let state = Atomic<UInt64>(0)
    private static let usersMask: UInt64 = (1 << 24) - 1
    private static let watchedBit: UInt64 = 1 << 24
    private static let removedBit: UInt64 = 1 << 25
    /// One announced change; the count wraps after 2^38 of them.
    private static let oneChange: UInt64 = 1 << 26

    init(
        name: String, inode: UInt64, parentInode: UInt64, permissions: FilePermissions,
        owner: ProcOwner?, announcesChanges: Bool, body: Body, observers: ProcTreeObservers,
        listed: (@Sendable () -> Bool)? = nil
    ) {
        self.name = name
        number = Atomic(inode)
        parentNumber = Atomic(parentInode)
        self.permissions = permissions
        self.owner = owner
        self.announcesChanges = announcesChanges
        self.body = body
        self.observers = observers
        self.listed = listed
    }

    /// Gives the entry the number `inode`, in the directory numbered `parent`.
    func renumber(_ inode: UInt64, parent: UInt64) {
        number.store(inode, ordering: .relaxed)
        parentNumber.store(parent, ordering: .relaxed)
    }

    /// What the entry is.
    public var kind: Kind {
        switch body {
        case .file: .file
        case .knob: .knob
        case .directory: .directory
        case .symlink: .symlink
        }
    }

    /// The file type bits of the entry's `st_mode`.
    package var fileType: mode_t {
        switch kind {
        case .file, .knob: S_IFREG
        case .directory: S_IFDIR
        case .symlink: S_IFLNK
        }
    }

    /// What a directory keeps of its own; `nil` for every other entry.
    var directoryState: DirectoryState? {
        if case .directory(let state) = body { return state }
        return nil
    }

    /// What computes the entries of a dynamic directory; `nil` for every other entry.
    var dynamicChildren: DynamicChildren? { directoryState?.dynamic }

    /// Whether the entry is a directory whose entries are computed when it is looked in (see
    /// ``ProcTree/makeDynamicDirectory(_:in:permissions:owner:names:makeEntry:)``).
    public var isDynamicDirectory: Bool { dynamicChildren != nil }

    /// The link's target, for a symbolic link.
    public var symlinkTarget: String? {
        if case .symlink(let target) = body { return target }
        return nil
    }

    /// Whether the entry is in a dynamic directory, or below one.
    package var isBelowDynamicDirectory: Bool { listed != nil }

    /// Whether the entry is below a dynamic directory that no longer holds the name it is, or
    /// is below, as a `/proc/<pid>` file is once the process is gone: its open files read
    /// `ESRCH` then, before and after the directory's next lookup or listing removes it. It
    /// asks the directory's `names`.
    package var isOrphaned: Bool {
        guard let listed else { return false }
        return !listed()
    }

    /// How many changes the entry has announced.
    package var version: UInt64 { state.load(ordering: .acquiring) / Self.oneChange }

    /// Whether `version`, one the entry had, came after `earlier` and no later than `latest`,
    /// across the count's wrap: `earlier` and `latest` must be fewer than 2^38 changes apart.
    package static func version(_ version: UInt64, isAfter earlier: UInt64, upTo latest: UInt64) -> Bool {
        let versions = UInt64.max / oneChange + 1
        let distance = (version &- earlier) % versions
        return distance != 0 && distance <= (latest &- earlier) % versions
    }

    /// Says that the text has changed: pollers of the file wake, and a copy cached by the
    /// kernel is dropped. Cheap enough to call on every timer tick for many files: for an entry
    /// the kernel does not hold, it is one atomic operation. It does nothing once the entry is
    /// removed.
    ///
    /// A knob's store closure need not call this on its own knob: every write to a knob, through
    /// the mount or by ``store(_:)``, is announced by the library, before the write returns.
    ///
    /// - Parameter keepingLength: `true` when the new text has the same length as the one
    ///   before it (a counter that gained no digit). In direct_io mode the kernel then keeps the
    ///   file's attributes, which saves the next reader's path walk a round trip; the page cache
    ///   drops its copy all the same. Say it only when it is sure: a text that changed its length
    ///   would `stat` with the old size until the next change.
    public func changed(keepingLength: Bool = false) {
        let before = state.add(Self.oneChange, ordering: .acquiringAndReleasing).oldValue
        guard before & Self.watchedBit != 0, before & Self.removedBit == 0 else { return }
        observers.changed(self, keepingLength: keepingLength)
    }

    /// Says whether a server watches the entry (the kernel holds it): only then does
    /// ``changed(keepingLength:)`` tell the server. Set it before the kernel is given anything of the entry,
    /// so that no change after that goes untold.
    package func setWatched(_ watched: Bool) {
        if watched {
            state.bitwiseOr(Self.watchedBit, ordering: .acquiringAndReleasing)
        } else {
            state.bitwiseAnd(~Self.watchedBit, ordering: .acquiringAndReleasing)
        }
    }

    /// Whether the entry has been removed from its tree.
    public var isRemoved: Bool { state.load(ordering: .acquiring) & Self.removedBit != 0 }

    /// Runs `body` as a user of the entry, so that removal waits for it to return.
    ///
    /// - Returns: `nil`, without running `body`, once the entry has been removed.
    func whileLive<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result? {
        guard enter() else { return nil }
        defer { leave() }
        return try body()
    }

    /// Enters the entry as a user (`use_pde`), unless it is removed.
    ///
    /// - Returns: whether the caller is inside and must call ``leave()``.
    private func enter() -> Bool {
        var current = state.load(ordering: .relaxed)
        while true {
            guard current & Self.removedBit == 0 else { return false }
            precondition(current & Self.usersMask != Self.usersMask, "too many callers inside one entry")
            let (exchanged, found) = state.compareExchange(
                expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = found
        }
    }

    /// Leaves the entry (`unuse_pde`): the last caller out of a removed entry wakes its remover.
    private func leave() {
        let now = state.subtract(1, ordering: .acquiringAndReleasing).newValue
        if now & Self.removedBit != 0 && now & Self.usersMask == 0 {
            observers.rundown.wakeUp()
        }
    }

    /// Marks the entry removed: no caller enters it from now on (`proc_entry_rundown`'s start).
    func markRemoved() {
        state.bitwiseOr(Self.removedBit, ordering: .acquiringAndReleasing)
    }

    /// Waits at most `timeout` for the callers inside a removed entry to leave.
    ///
    /// - Returns: how many callers are still inside: 0 once the entry is drained.
    func drain(timeout: Duration) -> Int {
        let inside = { Int(self.state.load(ordering: .acquiring) & Self.usersMask) }
        _ = observers.rundown.wait(timeout: timeout) { inside() == 0 }
        return inside()
    }

    /// Whether the file's text depends on who opens it (see
    /// ``ProcTree/registerPerCaller(_:in:permissions:owner:content:)``).
    public var isPerCaller: Bool {
        switch body {
        case .file(.perCaller): true
        default: false
        }
    }

    /// Whether the file's text is made by an `async` closure (see
    /// ``ProcTree/registerAwaiting(_:in:permissions:owner:content:)``): only
    /// ``awaitedSnapshot(for:)`` makes it.
    public var isAwaited: Bool {
        if case .file(.awaitedText) = body { return true }
        return false
    }

    /// Whether the kernel's page cache cannot hold the file's text: it depends on the caller,
    /// or it is made by an `async` closure, which a `GETATTR` could not wait for.
    package var bypassesPageCache: Bool { isPerCaller || isAwaited }

    /// A snapshot of a file's bytes, as `caller` reads them; `nil` once the entry has been
    /// removed, for directories and symbolic links, and for a file whose text is made by an
    /// `async` closure (``isAwaited``; see ``awaitedSnapshot(for:)``).
    public func snapshot(for caller: ProcCaller = .current) -> [UInt8]? {
        let content: Content
        switch body {
        case .file(let made): content = made
        case .knob(let knob): content = .text(knob.content)
        case .directory, .symlink: return nil
        }
        return whileLive { () -> [UInt8]? in
            switch content {
            case .text(let make): Array(make().utf8)
            case .bytes(let make): make()
            case .perCaller(let make): Array(make(caller).utf8)
            case .awaitedText: nil
            }
        } ?? nil
    }

    /// A snapshot of a file's bytes, awaiting its `async` closure if it has one; otherwise as
    /// ``snapshot(for:)``. Removal waits for the closure to return, as for any callback.
    public func awaitedSnapshot(for caller: ProcCaller = .current) async -> [UInt8]? {
        guard case .file(.awaitedText(let make)) = body else { return snapshot(for: caller) }
        guard enter() else { return nil }
        defer { leave() }
        return Array(await make().utf8)
    }

    /// Hands `text` to a knob as one write at offset 0, as `sysctl -w` would; then announces a
    /// change (``changed(keepingLength:)``), as a write through the mount does: pollers wake, and the kernel
    /// drops what it cached of the knob.
    ///
    /// - Throws: the knob's refusal; `Errno.permissionDenied` for an entry that is
    ///   not a knob, and `Errno.ioError` once the entry has been removed, as procfs
    ///   answers a write to an open file whose entry is gone.
    public func store(_ text: String) throws(Errno) {
        _ = try write(Array(text.utf8))
    }

    /// Hands the bytes of one write at offset 0 to a knob, then announces a change, whether the
    /// knob took them or refused them: in page-cache mode the kernel has copied the written
    /// bytes into its cache, and must drop them before the writer reads the knob back.
    ///
    /// - Returns: how many of the bytes the knob consumed; the writer's `write` returns that.
    /// - Throws: as ``store(_:)``.
    package func write(_ bytes: [UInt8]) throws(Errno) -> Int {
        guard case .knob(let knob) = body else { throw .permissionDenied }
        defer { changed() }
        let store = knob.store
        let consumed: Int? = try whileLive { () throws(Errno) in try store(bytes) }
        guard let consumed else { throw .ioError }
        return consumed
    }
}

/// Who asks: the process that the kernel names in a request (`fuse_req_ctx`), as procfs's
/// files see `current`.
public struct ProcCaller: Sendable, Equatable {
    /// The caller's user id (its file-system uid).
    public var uid: uid_t
    /// The caller's group id (its file-system gid).
    public var gid: gid_t
    /// The id of the calling thread, as the kernel gives it (`in.h.pid`): the process id for
    /// a process's main thread, in the pid namespace of the mount.
    public var pid: pid_t

    public init(uid: uid_t, gid: gid_t, pid: pid_t) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }

    /// This process, for a snapshot taken outside a request.
    public static var current: ProcCaller { ProcCaller(uid: geteuid(), gid: getegid(), pid: getpid()) }
}

/// The user and group that own an entry.
public struct ProcOwner: Sendable, Equatable {
    public var uid: uid_t
    public var gid: gid_t

    public init(uid: uid_t, gid: gid_t) {
        self.uid = uid
        self.gid = gid
    }

    /// root:root, as for most of procfs.
    public static let root = ProcOwner(uid: 0, gid: 0)
}

