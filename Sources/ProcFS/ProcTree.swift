import KernelSync
import Synchronization

/// The /proc-like tree: a root directory of live files, registered and removed at run time
/// from any thread.
///
/// Removal follows the kernel's `remove_proc_entry`: the name disappears at once (new lookups
/// and opens fail with `ENOENT`), the server is told so that it can drop the kernel's cached
/// entry, and ``remove(_:timeout:)`` returns only after every callback already inside the entry
/// has left.
public final class ProcTree: Sendable {
    /// The root directory's inode number (`FUSE_ROOT_ID`).
    public static let rootInode: UInt64 = 1
    /// How long ``remove(_:timeout:)`` waits for callers inside an entry by default.
    public static let defaultRundownTimeout: Duration = .seconds(2)

    private struct State {
        var byName: [String: ProcEntry] = [:]
        var byInode: [UInt64: ProcEntry] = [:]
        var nextInode = ProcTree.rootInode + 1
    }

    private let state = Mutex(State())
    private let observers = ProcTreeObservers()

    public init() {}

    /// Adds a read-only file whose text `content` makes on each open (`proc_create_single`).
    ///
    /// - Parameters:
    ///   - name: the file name: not empty, not `.` or `..`, no `/`, at most 255 bytes.
    ///   - permissions: the permission bits; procfs's read-only files are `0o444`.
    ///   - content: makes the text; it runs on the server's threads, so it must be quick.
    /// - Throws: ``ProcTreeError/invalidName(_:)`` or ``ProcTreeError/exists(_:)``.
    @discardableResult
    public func register(
        _ name: String, permissions: UInt16 = 0o444, content: @escaping @Sendable () -> String
    ) throws(ProcTreeError) -> ProcEntry {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), name.utf8.count <= 255 else {
            throw .invalidName(name)
        }
        return try state.withLock { (state) throws(ProcTreeError) -> ProcEntry in
            guard state.byName[name] == nil else { throw .exists(name) }
            let entry = ProcEntry(
                name: name, inode: state.nextInode, permissions: permissions, observers: observers, content: content)
            state.nextInode += 1
            state.byName[name] = entry
            state.byInode[entry.inode] = entry
            return entry
        }
    }

    /// Removes the file `name` and waits at most `timeout` for callers inside it to leave.
    ///
    /// - Throws: ``ProcTreeError/notFound(_:)``, or ``ProcTreeError/busy(_:users:)`` when callers
    ///   were still inside at the timeout; the entry is removed from the tree either way.
    public func remove(_ name: String, timeout: Duration = ProcTree.defaultRundownTimeout) throws(ProcTreeError) {
        let removed = state.withLock { state -> ProcEntry? in
            guard let entry = state.byName.removeValue(forKey: name) else { return nil }
            state.byInode[entry.inode] = nil
            return entry
        }
        guard let removed else { throw .notFound(name) }
        observers.removed(removed)
        let users = removed.gate.close(timeout: timeout)
        if users > 0 { throw .busy(name, users: users) }
    }

    /// The live entry called `name`, if any.
    public func entry(named name: String) -> ProcEntry? {
        state.withLock { $0.byName[name] }
    }

    /// The live entry with inode number `inode`, if any.
    public func entry(inode: UInt64) -> ProcEntry? {
        state.withLock { $0.byInode[inode] }
    }

    /// The live entries, in the order they were registered.
    public var entries: [ProcEntry] {
        state.withLock { $0.byInode.values.sorted { $0.inode < $1.inode } }
    }

    /// Sets what runs when an entry changes (``ProcEntry/changed()``) and when one is removed
    /// (before its rundown); the server uses them to keep the kernel's caches true. `nil`
    /// clears both.
    public func observe(
        changed: (@Sendable (ProcEntry) -> Void)?, removed: (@Sendable (ProcEntry) -> Void)?
    ) {
        observers.set(changed: changed, removed: removed)
    }
}

/// The observers of one tree, shared with its entries.
final class ProcTreeObservers: Sendable {
    private struct Handlers {
        var changed: (@Sendable (ProcEntry) -> Void)?
        var removed: (@Sendable (ProcEntry) -> Void)?
    }

    private let handlers = Mutex(Handlers())

    func set(changed: (@Sendable (ProcEntry) -> Void)?, removed: (@Sendable (ProcEntry) -> Void)?) {
        handlers.withLock { $0 = Handlers(changed: changed, removed: removed) }
    }

    func changed(_ entry: ProcEntry) { handlers.withLock { $0.changed }?(entry) }

    func removed(_ entry: ProcEntry) { handlers.withLock { $0.removed }?(entry) }
}

/// Why a change to a ``ProcTree`` was refused.
public enum ProcTreeError: Error, Equatable, CustomStringConvertible {
    /// The name is empty, `.` or `..`, holds a `/`, or is longer than 255 bytes.
    case invalidName(String)
    /// An entry of that name is registered already.
    case exists(String)
    /// No entry of that name is registered.
    case notFound(String)
    /// Callers were still inside the removed entry when its rundown timed out.
    case busy(String, users: Int)

    public var description: String {
        switch self {
        case .invalidName(let name): "invalid entry name '\(name)'"
        case .exists(let name): "entry '\(name)' already exists"
        case .notFound(let name): "no entry '\(name)'"
        case .busy(let name, let users): "entry '\(name)' still had \(users) caller(s) inside when its rundown timed out"
        }
    }
}
