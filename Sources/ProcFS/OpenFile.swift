/// What one open of a file holds: the entry, and the snapshot of its text taken at open.
final class OpenFile: Sendable {
    let entry: ProcEntry
    let text: [UInt8]

    init(entry: ProcEntry, text: [UInt8]) {
        self.entry = entry
        self.text = text
    }
}

/// What one open of the root directory holds: its listing as it was at `opendir`, so that
/// `readdir` is consistent at every offset while entries come and go.
final class OpenDirectory: Sendable {
    struct Item: Sendable {
        let name: String
        let inode: UInt64
        let isDirectory: Bool
    }

    let items: [Item]

    init(items: [Item]) {
        self.items = items
    }
}

/// Passes a Swift object through the `fh` field of `fuse_file_info` and back.
enum FileHandle {
    /// Retains `object` and encodes it as an `fh`; ``release(_:as:)`` balances it.
    static func retain<Object: AnyObject>(_ object: Object) -> UInt64 {
        UInt64(UInt(bitPattern: Unmanaged.passRetained(object).toOpaque()))
    }

    /// The object behind `fh`, still retained by the handle.
    static func borrow<Object: AnyObject>(_ fh: UInt64, as: Object.Type) -> Object {
        Unmanaged<Object>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).takeUnretainedValue()
    }

    /// Drops the handle's reference to the object behind `fh`.
    static func release<Object: AnyObject>(_ fh: UInt64, as: Object.Type) {
        Unmanaged<Object>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fh))!).release()
    }
}
