import KernelSync
import Synchronization
import SystemPackage

/// A /proc-like tree of live files, knobs, directories and symbolic links, changed at run
/// time from any thread.
///
/// ```swift
/// let tree = ProcTree()
/// let stats = try tree.makeDirectory("stats")
/// try tree.register("requests", in: stats) { "\(requests.load(ordering: .relaxed))\n" }
/// ```
///
/// Removal follows the kernel's `remove_proc_entry`: the name disappears at once (new lookups
/// and opens fail with `ENOENT`), the server is told so that it can drop the kernel's cached
/// entry, and ``remove(_:timeout:)`` returns only after every callback already inside the entry
/// (or, for a directory, inside any entry below it) has returned.
public final class ProcTree: Sendable {
    /// The root directory's inode number (`FUSE_ROOT_ID`).
    public static let rootInode: UInt64 = 1
    /// How long ``remove(_:timeout:)`` waits for callers inside an entry by default.
    public static let defaultRundownTimeout: Duration = .seconds(2)

    /// A live directory and its entries by name.
    private struct Directory {
        let entry: ProcEntry
        var children: [String: ProcEntry] = [:]
    }

    private struct State {
        /// Each live directory by its inode number.
        var directories: [UInt64: Directory]
        /// The next inode number. A number is given once in a tree's life, so it never names
        /// two entries, even for a holder outside the kernel (64 bits last 500 years at a
        /// billion entries a second).
        var nextInode = ProcTree.rootInode + 1
        /// For a tree served by a server that took a mount over, the numbers the kernel holds
        /// by path (see ``number(byPath:freshFrom:)``).
        var heldNumber: HeldNumber?

        /// The number of a new entry `name` in the directory numbered `parent`.
        mutating func number(for name: String, in parent: UInt64) -> UInt64 {
            if let held = heldNumber?(parent, name) { return held }
            defer { nextInode += 1 }
            return nextInode
        }
    }

    /// The number the kernel holds for the entry `name` in the directory numbered `parent`, if
    /// it holds one; each number is given once.
    package typealias HeldNumber = @Sendable (_ parent: UInt64, _ name: String) -> UInt64?

    /// The root directory.
    public let root: ProcEntry
    private let state: Mutex<State>
    private let observers = ProcTreeObservers()

    /// Makes an empty tree whose root directory has the mode `rootPermissions`.
    public init(rootPermissions: FilePermissions = [.ownerReadExecute, .groupReadExecute, .otherReadExecute]) {
        root = ProcEntry(
            name: "", inode: Self.rootInode, parentInode: Self.rootInode,
            permissions: rootPermissions, owner: nil, announcesChanges: false, body: .directory(ProcEntry.DirectoryState()),
            observers: observers)
        state = Mutex(State(directories: [Self.rootInode: Directory(entry: root)]))
    }

    // MARK: Adding entries

    /// Adds a read-only file whose text `content` makes on each open (`proc_create_single`).
    ///
    /// - Parameters:
    ///   - name: the file name: not empty, not `.` or `..`, no `/`, at most 255 bytes.
    ///   - parent: the directory to add it to; the root when `nil`.
    ///   - permissions: the permission bits; procfs's read-only files are `0o444`.
    ///   - owner: who owns it; `nil` for the user who mounted.
    ///   - announcesChanges: whether the caller will call ``ProcEntry/changed(keepingLength:)`` whenever the
    ///     text changes; the kernel may then cache the text until it does.
    ///   - content: makes the text; it runs on the server's threads, so it must be quick.
    /// - Throws: ``ProcTreeError`` when the name is bad or taken, or the parent is gone.
    @discardableResult
    public func register(
        _ name: String, in parent: ProcEntry? = nil, permissions: FilePermissions = [.ownerRead, .groupRead, .otherRead], owner: ProcOwner? = nil,
        announcesChanges: Bool = false, content: @escaping @Sendable () -> String
    ) throws(ProcTreeError) -> ProcEntry {
        try add(name, in: parent, permissions: permissions, owner: owner, announcesChanges: announcesChanges,
                body: .file(content: .text(content)))
    }

    /// Adds a read-only file of bytes that `content` makes on each open, for binary data, or a
    /// text of many megabytes kept as bytes: every open of it shares the array `content`
    /// returns (`[UInt8]` is copied only on write), so an owner that keeps its bytes and returns
    /// them costs no copy per open.
    ///
    /// - Parameters: as for ``register(_:in:permissions:owner:announcesChanges:content:)``.
    @discardableResult
    public func registerBytes(
        _ name: String, in parent: ProcEntry? = nil, permissions: FilePermissions = [.ownerRead, .groupRead, .otherRead], owner: ProcOwner? = nil,
        announcesChanges: Bool = false, content: @escaping @Sendable () -> [UInt8]
    ) throws(ProcTreeError) -> ProcEntry {
        try add(name, in: parent, permissions: permissions, owner: owner, announcesChanges: announcesChanges,
                body: .file(content: .bytes(content)))
    }

    /// Adds a read-only file whose text depends on who opens it, as `/proc/self` depends on the
    /// process that looks: `content` is given the caller of each open (its uid, gid and pid) and
    /// makes the text that open reads.
    ///
    /// Such a file has size 0 and never announces a change. It needs the direct_io read mode:
    /// the kernel's page cache keeps one text for every caller, so a server asked for the page
    /// cache serves a tree that holds one of these at mount in direct_io mode, and a file of
    /// this kind added later fails its reads there with `EIO` rather than show one caller's
    /// text to another.
    ///
    /// - Parameters: as for ``register(_:in:permissions:owner:announcesChanges:content:)``.
    @discardableResult
    public func registerPerCaller(
        _ name: String, in parent: ProcEntry? = nil, permissions: FilePermissions = [.ownerRead, .groupRead, .otherRead], owner: ProcOwner? = nil,
        content: @escaping @Sendable (ProcCaller) -> String
    ) throws(ProcTreeError) -> ProcEntry {
        try add(name, in: parent, permissions: permissions, owner: owner, announcesChanges: false,
                body: .file(content: .perCaller(content)))
    }

    /// Adds a read-only file whose text an `async` closure makes on each open, for state that
    /// lives in an actor or behind an `async` API. The server's request thread is not held
    /// while it waits: the read is answered later, from the task that made the text (libfuse
    /// lets a reply come from any thread), and files of the other kinds read as fast as before.
    /// The server runs these tasks on threads of its own, not Swift's cooperative pool, so a
    /// program that blocks the pool does not stall them.
    ///
    /// Such a file has size 0 and never announces a change, and it needs the direct_io read
    /// mode, as a file registered with
    /// ``registerPerCaller(_:in:permissions:owner:content:)`` does (the kernel asks for a
    /// page-cache file's size in a request that cannot wait).
    ///
    /// - Parameters: as for ``register(_:in:permissions:owner:announcesChanges:content:)``.
    @discardableResult
    public func registerAwaiting(
        _ name: String, in parent: ProcEntry? = nil, permissions: FilePermissions = [.ownerRead, .groupRead, .otherRead], owner: ProcOwner? = nil,
        content: @escaping @Sendable () async -> String
    ) throws(ProcTreeError) -> ProcEntry {
        try add(name, in: parent, permissions: permissions, owner: owner, announcesChanges: false,
                body: .file(content: .awaitedText(content)))
    }

    /// Whether the tree holds, or has held, a file whose text the kernel's page cache cannot
    /// hold: one that depends on who opens it, or one made by an `async` closure.
    package var holdsFilesBypassingPageCache: Bool { observers.filesBypassingPageCache.load(ordering: .acquiring) }

    /// Adds a writable file, a *knob* like those of `/proc/sys`: `content` makes its text, and
    /// `store` takes each write at offset 0, less one trailing newline. `store` checks the text
    /// and throws to refuse it: the writer gets the `Errno` it throws (`Errno.invalidArgument`
    /// is `EINVAL`), and `EINVAL` for an error of any other type.
    ///
    /// Every write to a knob, through the mount or by ``ProcEntry/store(_:)``, taken or
    /// refused, wakes its pollers and drops what the kernel cached of it, as a write to
    /// `/proc/sys/kernel/hostname` wakes its pollers; `store` need not call
    /// ``ProcEntry/changed(keepingLength:)``. Register the knob with `announcesChanges: true` when its value
    /// also changes by other means and the program calls ``ProcEntry/changed(keepingLength:)`` then.
    ///
    /// Writes follow `/proc/sys` with `sysctl_writes_strict` (the kernel's default): an
    /// appending write (`>>`) goes to offset 0, as a `/proc/sys` file's size is 0, and a write
    /// past offset 0 is reported written and changes nothing.
    ///
    /// ```swift
    /// try tree.registerKnob("greeting", content: { greeting.withLock { $0 } + "\n" }) { text in
    ///     guard !text.isEmpty else { throw Errno.invalidArgument }
    ///     greeting.withLock { $0 = text }
    /// }
    /// ```
    ///
    /// - Parameters: as for ``register(_:in:permissions:owner:announcesChanges:content:)``;
    ///   the mode defaults to `0o644`.
    @discardableResult
    public func registerKnob(
        _ name: String, in parent: ProcEntry? = nil, permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead], owner: ProcOwner? = nil,
        announcesChanges: Bool = false, content: @escaping @Sendable () -> String,
        store: @escaping @Sendable (String) throws -> Void
    ) throws(ProcTreeError) -> ProcEntry {
        let storeText: @Sendable ([UInt8]) throws(Errno) -> Int = { bytes throws(Errno) in
            let text = bytes.last == UInt8(ascii: "\n") ? bytes.dropLast() : bytes[...]
            guard let text = String(validating: text, as: UTF8.self) else { throw .invalidArgument }
            try Self.refusal { try store(text) }
            return bytes.count
        }
        return try add(name, in: parent, permissions: permissions, owner: owner, announcesChanges: announcesChanges,
                       body: .knob(ProcEntry.Knob(content: content, store: storeText)))
    }

    /// Adds an integer knob that reads and takes writes exactly as a `/proc/sys` integer does
    /// (`proc_dointvec_minmax`): it reads as the number and a newline; a write may have white
    /// space around the number and may be in hex (`0x10`) or octal (`010`); `+5`, `5x`, numbers
    /// beyond a C `int` and numbers outside `range` are refused with `EINVAL`, and `1 2` stores 1.
    /// `set` takes each value in range, and may still throw to refuse it, as for
    /// ``registerKnob(_:in:permissions:owner:announcesChanges:content:store:)``.
    ///
    /// ```swift
    /// try tree.registerIntegerKnob("workers", range: 1...64, value: { workers.load(ordering: .relaxed) }) {
    ///     workers.store($0, ordering: .relaxed)
    /// }
    /// ```
    ///
    /// - Parameters: as for ``registerKnob(_:in:permissions:owner:announcesChanges:content:store:)``,
    ///   with `range` the values a write may set (every `Int32` when left out), and `value`
    ///   giving the current value.
    @discardableResult
    public func registerIntegerKnob(
        _ name: String, in parent: ProcEntry? = nil, permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead], owner: ProcOwner? = nil,
        announcesChanges: Bool = false, range: ClosedRange<Int32> = .min ... .max, value: @escaping @Sendable () -> Int32,
        set: @escaping @Sendable (Int32) throws -> Void
    ) throws(ProcTreeError) -> ProcEntry {
        let storeInteger: @Sendable ([UInt8]) throws(Errno) -> Int = { bytes throws(Errno) in
            let (parsed, consumed) = try SysctlInteger.parse(bytes)
            guard range.contains(parsed) else { throw .invalidArgument }
            try Self.refusal { try set(parsed) }
            return consumed
        }
        return try add(name, in: parent, permissions: permissions, owner: owner, announcesChanges: announcesChanges,
                       body: .knob(ProcEntry.Knob(content: { "\(value())\n" }, store: storeInteger)))
    }

    /// Runs an owner's store closure; what it throws becomes the writer's errno.
    private static func refusal(_ store: () throws -> Void) throws(Errno) {
        do {
            try store()
        } catch let errno as Errno {
            throw errno
        } catch {
            throw .invalidArgument
        }
    }

    /// Adds a directory (`proc_mkdir`).
    @discardableResult
    public func makeDirectory(
        _ name: String, in parent: ProcEntry? = nil, permissions: FilePermissions = [.ownerReadExecute, .groupReadExecute, .otherReadExecute], owner: ProcOwner? = nil
    ) throws(ProcTreeError) -> ProcEntry {
        try add(name, in: parent, permissions: permissions, owner: owner, announcesChanges: false, body: .directory(ProcEntry.DirectoryState()))
    }

    /// Adds a directory whose entries are computed when it is looked in, as procfs computes
    /// `/proc/<pid>` (`proc_pid_lookup`, `proc_pid_readdir`): each lookup of a name in it, each
    /// listing of it and each `stat` of it first asks `names` for the names it holds now (each
    /// name is its `description`), removes the entries whose names are gone (with the rundown
    /// of ``remove(_:timeout:)``), and calls `makeEntry` for each new name, which adds an entry of
    /// that name to the directory with the methods of the tree it is given (this tree, passed so
    /// that the closure need not hold it): a file, a link, or a directory with entries of its
    /// own. An entry whose name stays is kept, with its inode number. A name that is not valid,
    /// or for which `makeEntry` throws, is left out.
    ///
    /// The entry that `makeEntry` adds must be named by the name's text (`"\(id)"`): one named
    /// otherwise is not found, and `makeEntry` is called again at the next lookup. A name whose
    /// text does not make the same value again (`Name(text)`) is left out.
    ///
    /// The kernel keeps no name in such a directory: every path walk through it asks again, so it
    /// is never out of date, at the cost of one call to `names` per lookup. An open file below a
    /// name that `names` no longer gives reads and writes `ESRCH`, as a held `/proc/<pid>/status`
    /// does once the process is gone: each read or write of a file below such a directory, and
    /// in page-cache mode each `stat` of it, asks `names` first. (Removed while `names` still
    /// gives its name, by ``remove(_:timeout:)`` or when the server stops, it reads `EIO`, as
    /// any removed file does.) `names` and `makeEntry` run on the server's threads, one
    /// directory's at a time; they must be quick and must not look in the directory themselves.
    ///
    /// ```swift
    /// try tree.makeDynamicDirectory("workers", names: { pool.workerIDs }) { tree, id, directory in
    ///     let worker = try tree.makeDirectory("\(id)", in: directory)
    ///     try tree.register("state", in: worker) { pool.state(of: id) + "\n" }
    /// }
    /// ```
    ///
    /// - Parameters:
    ///   - name: the directory's name, as for ``makeDirectory(_:in:permissions:owner:)``.
    ///   - parent: the directory to add it to; the root when `nil`.
    ///   - permissions: the permission bits; `0o555` unless given.
    ///   - owner: who owns it; `nil` for the user who mounted.
    ///   - names: the names the directory holds now, each of a type that converts to and from
    ///     its text (`Int`, `String`, `UInt32`, …): `makeEntry` gets back the value, made
    ///     from its text.
    ///   - makeEntry: adds the entry of one new name to `directory`.
    @discardableResult
    public func makeDynamicDirectory<Name: LosslessStringConvertible & Sendable>(
        _ name: String, in parent: ProcEntry? = nil, permissions: FilePermissions = [.ownerReadExecute, .groupReadExecute, .otherReadExecute], owner: ProcOwner? = nil,
        names: @escaping @Sendable () -> [Name],
        makeEntry: @escaping @Sendable (_ tree: ProcTree, _ name: Name, _ directory: ProcEntry) throws -> Void
    ) throws(ProcTreeError) -> ProcEntry {
        let dynamic = DynamicChildren(names: { names().map(\.description) }) { tree, text, directory in
            guard let name = Name(text) else { return }
            try makeEntry(tree, name, directory)
        }
        return try add(name, in: parent, permissions: permissions, owner: owner, announcesChanges: false,
                       body: .directory(ProcEntry.DirectoryState(dynamic: dynamic)))
    }

    /// Brings a dynamic directory's entries up to date with its names; does nothing for any
    /// other entry. The server calls it before it looks in, lists or describes the directory.
    package func refresh(_ directory: ProcEntry) {
        guard let dynamic = directory.dynamicChildren else { return }
        dynamic.refreshing.withLock { _ in
            guard !directory.isRemoved else { return }
            let names = dynamic.names()
            let wanted = Set(names)
            for stale in children(of: directory) where !wanted.contains(stale.name) {
                // Removed from the tree either way; a caller still inside at the timeout only
                // delays this lookup.
                try? remove(stale, timeout: Self.defaultRundownTimeout)
            }
            for name in names where entry(named: name, in: directory) == nil {
                try? dynamic.makeEntry(self, name, directory)
            }
        }
    }

    /// Adds a symbolic link to `target` (`proc_symlink`).
    @discardableResult
    public func makeSymlink(
        _ name: String, in parent: ProcEntry? = nil, target: String, owner: ProcOwner? = nil
    ) throws(ProcTreeError) -> ProcEntry {
        try add(name, in: parent, permissions: [.ownerReadWriteExecute, .groupReadWriteExecute, .otherReadWriteExecute], owner: owner, announcesChanges: false,
                body: .symlink(target: target))
    }

    private func add(
        _ name: String, in parent: ProcEntry?, permissions: FilePermissions, owner: ProcOwner?, announcesChanges: Bool,
        body: ProcEntry.Body
    ) throws(ProcTreeError) -> ProcEntry {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), name.utf8.count <= 255 else {
            throw .invalidName(name)
        }
        let parent = parent ?? root
        guard parent.kind == .directory else { throw .notADirectory(parent.name) }
        let entry = try state.withLock { (state) throws(ProcTreeError) -> ProcEntry in
            guard state.directories[parent.inode] != nil else { throw .notFound(parent.name) }
            guard state.directories[parent.inode]?.children[name] == nil else { throw .exists(name) }
            let inode = state.number(for: name, in: parent.inode)
            let entry = ProcEntry(
                name: name, inode: inode, parentInode: parent.inode,
                permissions: permissions, owner: owner, announcesChanges: announcesChanges, body: body,
                observers: observers, listed: Self.listing(of: name, in: parent))
            state.directories[parent.inode]?.children[name] = entry
            parent.directoryState?.listingChanges.add(1, ordering: .releasing)
            if entry.kind == .directory { state.directories[inode] = Directory(entry: entry) }
            return entry
        }
        if entry.bypassesPageCache { observers.filesBypassingPageCache.store(true, ordering: .releasing) }
        observers.added(entry)
        return entry
    }

    /// What tells whether an entry named `name` in `parent` is still held by every dynamic
    /// directory it is in, or is below: `nil` for an entry below none.
    private static func listing(of name: String, in parent: ProcEntry) -> (@Sendable () -> Bool)? {
        guard let dynamic = parent.dynamicChildren else { return parent.listed }
        let outer = parent.listed
        return {
            guard outer?() ?? true else { return false }
            // Inside the directory, as a caller of its closures: its removal waits for this,
            // and a removed directory's names are not asked (its entries read EIO then).
            return parent.whileLive { dynamic.holds(name) } ?? true
        }
    }

    // MARK: Removing entries

    /// Removes the entry `name` of `parent` (the root when `nil`); see ``remove(_:timeout:)``.
    public func remove(
        _ name: String, in parent: ProcEntry? = nil, timeout: Duration = ProcTree.defaultRundownTimeout
    ) throws(ProcTreeError) {
        guard let entry = entry(named: name, in: parent) else { throw .notFound(name) }
        try remove(entry, timeout: timeout)
    }

    /// Removes `entry`, and with a directory everything below it, then waits at most `timeout`
    /// for callers inside any of them to leave.
    ///
    /// - Throws: ``ProcTreeError/notFound(_:)`` if it was removed already, or
    ///   ``ProcTreeError/busy(_:users:)`` when callers were still inside at the timeout; the
    ///   entries are removed from the tree either way.
    public func remove(_ entry: ProcEntry, timeout: Duration = ProcTree.defaultRundownTimeout) throws(ProcTreeError) {
        guard entry !== root else { throw .invalidName(entry.name) }
        let removed = state.withLock { state -> [ProcEntry] in
            guard state.directories[entry.parentInode]?.children[entry.name] === entry else { return [] }
            state.directories[entry.parentInode]?.children[entry.name] = nil
            state.directories[entry.parentInode]?.entry.directoryState?.listingChanges.add(1, ordering: .releasing)
            var removed: [ProcEntry] = []
            var pending = [entry]
            while let next = pending.popLast() {
                removed.append(next)
                if let below = state.directories.removeValue(forKey: next.inode) { pending += below.children.values }
                // Marked removed before anyone is told, so that what they ask next fails; a
                // directory lists nothing from now on, which is a change of its listing.
                next.markRemoved()
                next.directoryState?.listingChanges.add(1, ordering: .releasing)
            }
            return removed
        }
        guard !removed.isEmpty else { throw .notFound(entry.name) }
        // The name first, so that new path walks fail at once; then the rundown of each.
        for gone in removed { observers.removed(gone) }
        let deadline = ContinuousClock.now + timeout
        let users = removed.reduce(0) { users, gone in
            users + gone.drain(timeout: max(deadline - ContinuousClock.now, .zero))
        }
        if users > 0 { throw .busy(entry.name, users: users) }
    }

    // MARK: Finding entries

    /// The live entry called `name` in `parent` (the root when `nil`), if any.
    public func entry(named name: String, in parent: ProcEntry? = nil) -> ProcEntry? {
        state.withLock { $0.directories[(parent ?? root).inode]?.children[name] }
    }

    /// The live entry whose inode number is `inode`, if any: a search of the whole tree, for a
    /// server that takes over a mount and meets numbers another server gave the kernel.
    package func entry(inode: UInt64) -> ProcEntry? {
        state.withLock { state in
            if let directory = state.directories[inode] { return directory.entry }
            for directory in state.directories.values {
                if let found = directory.children.values.first(where: { $0.inode == inode }) { return found }
            }
            return nil
        }
    }

    /// Every live entry, the root first, then each directory's entries.
    package var allEntries: [ProcEntry] {
        state.withLock { state in
            [root] + state.directories.values.flatMap { $0.children.values }
        }
    }

    /// Gives no entry added from now on a number below `inode`: a server that takes over a
    /// mount must not give a number that another server gave the kernel to another entry.
    package func reserveInodes(below inode: UInt64) {
        state.withLock { $0.nextInode = max($0.nextInode, inode) }
    }

    /// Numbers the tree by path, for a server that takes a mount over, before it serves: each
    /// entry, and each entry added from now on, gets the number `held` gives for its path (the
    /// one the kernel knows the path by), or else a new one, at or above `fresh`, which no
    /// server gave the kernel. So a path keeps its inode whatever order the tree was built in.
    /// Directories are numbered before their entries, so `held` is asked with the parent's
    /// number as the kernel knows it.
    package func number(byPath held: @escaping HeldNumber, freshFrom fresh: UInt64) {
        state.withLock { state in
            state.nextInode = max(state.nextInode, fresh)
            state.heldNumber = held
            var renumbered: [UInt64: Directory] = [:]
            var pending = [Self.rootInode]
            while let old = pending.popLast(), let directory = state.directories[old] {
                renumbered[directory.entry.inode] = directory
                for child in directory.children.values {
                    if child.kind == .directory { pending.append(child.inode) }
                    child.renumber(state.number(for: child.name, in: directory.entry.inode), parent: directory.entry.inode)
                }
            }
            state.directories = renumbered
        }
    }

    /// The live entry at `path`, names separated by `/`, relative to the root.
    package func entry(atPath path: String) -> ProcEntry? {
        var current = root
        for name in path.split(separator: "/") {
            guard let next = entry(named: String(name), in: current) else { return nil }
            current = next
        }
        return current
    }

    /// The live entries of `directory` (the root when `nil`), sorted by name as procfs lists
    /// them; empty once the directory is removed.
    public func children(of directory: ProcEntry? = nil) -> [ProcEntry] {
        state.withLock { $0.directories[(directory ?? root).inode]?.children.values.sorted { $0.name < $1.name } } ?? []
    }

    /// How many times the entries of `directory` have changed: added, removed, or, once it is
    /// removed itself, all gone. The server gives it in the directory's modification time, by
    /// which the kernel knows whether a listing it cached is still true.
    package func listingVersion(of directory: ProcEntry) -> UInt64 {
        directory.directoryState?.listingChanges.load(ordering: .acquiring) ?? 0
    }

    /// How many directories `directory` holds, for its link count.
    package func subdirectoryCount(of directory: ProcEntry) -> Int {
        state.withLock { state in
            state.directories[directory.inode]?.children.values.count { $0.kind == .directory } ?? 0
        }
    }

    /// Sets what runs when an entry is added, when one changes (``ProcEntry/changed(keepingLength:)``,
    /// with whether its length stayed) and when one is removed (before its rundown); the server
    /// uses them to keep the kernel's
    /// caches true. A tree has one observer at a time, so one server: this refuses while
    /// another `owner` observes.
    ///
    /// - Returns: whether `owner` observes the tree now.
    package func observe(
        as owner: ObjectIdentifier, added: @escaping @Sendable (ProcEntry) -> Void,
        changed: @escaping @Sendable (ProcEntry, _ keepingLength: Bool) -> Void, removed: @escaping @Sendable (ProcEntry) -> Void
    ) -> Bool {
        observers.set(owner: owner, ProcTreeObservers.Handlers(added: added, changed: changed, removed: removed))
    }

    /// Stops `owner`'s observing, if it observes the tree.
    package func stopObserving(as owner: ObjectIdentifier) {
        observers.clear(owner: owner)
    }
}

/// What computes the entries of one dynamic directory, and the lock that lets one refresh of
/// it run at a time.
final class DynamicChildren: Sendable {
    let names: @Sendable () -> [String]
    let makeEntry: @Sendable (ProcTree, String, ProcEntry) throws -> Void
    let refreshing = Mutex(())

    init(names: @escaping @Sendable () -> [String],
         makeEntry: @escaping @Sendable (ProcTree, String, ProcEntry) throws -> Void) {
        self.names = names
        self.makeEntry = makeEntry
    }

    /// Whether the directory holds `name` now; asked one at a time, as a refresh is.
    func holds(_ name: String) -> Bool {
        refreshing.withLock { _ in names().contains(name) }
    }
}

/// The observers of one tree, shared with its entries, and the wait queue on which the tree's
/// removals wait for the callers inside the entries they remove.
final class ProcTreeObservers: Sendable {
    let rundown = WaitQueue()
    let filesBypassingPageCache = Atomic<Bool>(false)

    struct Handlers {
        var added: (@Sendable (ProcEntry) -> Void)?
        var changed: (@Sendable (ProcEntry, Bool) -> Void)?
        var removed: (@Sendable (ProcEntry) -> Void)?
    }

    private let handlers = Mutex((owner: ObjectIdentifier?.none, handlers: Handlers()))

    /// Sets `owner`'s handlers, unless another owner's are set.
    func set(owner: ObjectIdentifier, _ new: Handlers) -> Bool {
        handlers.withLock { current in
            guard current.owner == nil || current.owner == owner else { return false }
            current = (owner, new)
            return true
        }
    }

    /// Clears the handlers, if they are `owner`'s.
    func clear(owner: ObjectIdentifier) {
        handlers.withLock { current in
            if current.owner == owner { current = (nil, Handlers()) }
        }
    }

    func added(_ entry: ProcEntry) { handlers.withLock { $0.handlers.added }?(entry) }

    func changed(_ entry: ProcEntry, keepingLength: Bool) { handlers.withLock { $0.handlers.changed }?(entry, keepingLength) }

    func removed(_ entry: ProcEntry) { handlers.withLock { $0.handlers.removed }?(entry) }
}

/// Why a change to a ``ProcTree`` was refused.
public enum ProcTreeError: Error, Equatable, CustomStringConvertible {
    /// The name is empty, `.` or `..`, holds a `/`, or is longer than 255 bytes.
    case invalidName(String)
    /// An entry of that name is registered already.
    case exists(String)
    /// No entry of that name is registered, or the directory to add to is removed.
    case notFound(String)
    /// The entry to add to is not a directory.
    case notADirectory(String)
    /// Callers were still inside the removed entry when its rundown timed out.
    case busy(String, users: Int)

    public var description: String {
        switch self {
        case .invalidName(let name): "invalid entry name '\(name)'"
        case .exists(let name): "entry '\(name)' already exists"
        case .notFound(let name): "no entry '\(name)'"
        case .notADirectory(let name): "entry '\(name)' is not a directory"
        case .busy(let name, let users): "entry '\(name)' still had \(users) caller(s) inside when its rundown timed out"
        }
    }
}
