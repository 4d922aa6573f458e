import Synchronization

/// A regular file of a ``ProcTree`` whose text is made from live state.
///
/// Like a procfs `single_open` file, each open sees one snapshot of the text, whole at every
/// offset and buffer size, never half of one value and half of the next. An owner that knows
/// when the text changes calls ``changed()``, which lets the kernel cache the text in between.
public final class ProcEntry: Sendable {
    /// The file's name in its directory.
    public let name: String
    /// The inode number, stable for the entry's life and never given to another entry.
    public let inode: UInt64
    /// The permission bits, for example `0o444`.
    public let permissions: UInt16
    private let content: @Sendable () -> String
    private let observers: ProcTreeObservers
    let gate = RundownGate()
    /// The page-cache mode's state for this entry, kept here so a change costs no lookups.
    let cacheState = Mutex(EntryCacheState())

    init(
        name: String, inode: UInt64, permissions: UInt16, observers: ProcTreeObservers,
        content: @escaping @Sendable () -> String
    ) {
        self.name = name
        self.inode = inode
        self.permissions = permissions
        self.observers = observers
        self.content = content
    }

    /// Says that the text has changed, so that a copy cached by the kernel is dropped.
    /// Cheap enough to call on every timer tick; does nothing once the entry is removed.
    public func changed() {
        guard !isRemoved else { return }
        observers.changed(self)
    }

    /// Whether the entry has been removed from its tree.
    public var isRemoved: Bool { gate.isClosed }

    /// Runs `body` as a user of the entry, so that removal waits for it to return.
    ///
    /// - Returns: `nil`, without running `body`, once the entry has been removed.
    func whileLive<Result>(_ body: () throws -> Result) rethrows -> Result? {
        guard gate.enter() else { return nil }
        defer { gate.leave() }
        return try body()
    }

    /// A snapshot of the text as bytes, or `nil` once the entry has been removed.
    public func snapshot() -> [UInt8]? {
        whileLive { Array(content().utf8) }
    }
}
