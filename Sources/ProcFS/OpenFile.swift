import Glibc
import Synchronization

/// What one open of a file holds in direct_io mode: the snapshot of its text taken at open.
final class OpenFile: Sendable {
    let text: [UInt8]

    init(text: [UInt8]) {
        self.text = text
    }
}

/// What one open of a directory holds: its listing as it was at the last `readdir` from
/// offset 0, so that `readdir` is consistent at every offset while entries come and go.
final class OpenDirectory: Sendable {
    struct Item: Sendable {
        let name: String
        let inode: UInt64
        /// The file type bits of `st_mode`, for example `S_IFDIR`.
        let type: mode_t
    }

    let directory: ProcEntry
    /// `nil` until the first `readdir`.
    private let items = Mutex<[Item]?>(nil)

    init(directory: ProcEntry) {
        self.directory = directory
    }

    /// The listing from `offset` on. Reading from offset 0 (the first `readdir`, or
    /// `rewinddir`) takes the listing anew from `current`, as procfs shows entries added since;
    /// any other offset reads the listing kept, so that offsets stay true while entries come
    /// and go.
    func items(from offset: Int, current: () -> [Item]) -> ArraySlice<Item> {
        let items = self.items.withLock { kept in
            if offset == 0 || kept == nil { kept = current() }
            return kept!
        }
        return items[min(max(offset, 0), items.count)...]
    }
}

/// The objects behind the `fh` numbers the kernel holds for open files.
///
/// The table owns them, not the kernel: when a session ends with files still open, the kernel
/// sends no `RELEASE` for them, and they go with the table instead of leaking.
final class HandleTable<Object: Sendable>: Sendable {
    private struct State {
        var objects: [UInt64: Object] = [:]
        /// 0 is never given out: in page-cache mode the kernel passes `fh` 0 for its own opens.
        var next: UInt64 = 1
    }

    private let state = Mutex(State())

    /// Keeps `object` and returns the number that stands for it.
    func insert(_ object: Object) -> UInt64 {
        state.withLock { state in
            defer { state.next += 1 }
            state.objects[state.next] = object
            return state.next
        }
    }

    /// The object behind `handle`, if it is open.
    func object(_ handle: UInt64) -> Object? {
        state.withLock { $0.objects[handle] }
    }

    /// Forgets `handle` (`RELEASE`).
    func remove(_ handle: UInt64) {
        _ = state.withLock { $0.objects.removeValue(forKey: handle) }
    }
}
