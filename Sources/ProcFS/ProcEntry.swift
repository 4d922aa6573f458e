/// A regular file of a ``ProcTree`` whose text is made from live state when it is opened.
///
/// Like a procfs `single_open` file, each open takes one snapshot of the text, so a reader sees
/// one value whole at every offset and buffer size, never half of one and half of the next.
public final class ProcEntry: Sendable {
    /// The file's name in its directory.
    public let name: String
    /// The inode number, stable for the entry's life and never given to another entry.
    public let inode: UInt64
    /// The permission bits, for example `0o444`.
    public let permissions: UInt16
    private let content: @Sendable () -> String
    let gate = RundownGate()

    init(name: String, inode: UInt64, permissions: UInt16, content: @escaping @Sendable () -> String) {
        self.name = name
        self.inode = inode
        self.permissions = permissions
        self.content = content
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
