import Synchronization

/// The kernel's inodes in page-cache mode: one per snapshot of a file's text.
///
/// A lookup of a file freezes its current text in a node; the kernel caches that node's size
/// and pages, and every open through it reads that one snapshot, so size and text always agree
/// and an open never mixes two texts. When the file changes, ``supersede(_:)`` retires its
/// current node, and the server tells the kernel to drop the name (`notify_delete`): the next
/// open looks the file up again and gets a new node, while files already open keep theirs. A
/// node lives until the kernel forgets every lookup of it.
///
/// Node IDs are the kernel's handles only; `stat` shows the entry's stable inode number.
final class SnapshotNodes: Sendable {
    struct Node {
        let entry: ProcEntry
        let text: [UInt8]
        var lookups: UInt64
    }

    private struct State {
        var nodes: [UInt64: Node] = [:]
        /// The node of each entry's current text, by entry inode number.
        var current: [UInt64: UInt64] = [:]
        /// How many times each entry has changed, by entry inode number.
        var changes: [UInt64: UInt64] = [:]
        /// Above every entry inode number, so that no ID means two things.
        var nextID: UInt64 = 1 << 40
    }

    private let state = Mutex(State())
    /// How often a lookup takes a new snapshot when the file changes while it takes one.
    private static let snapshotAttempts = 3

    /// The node for `entry`'s current text, counting one more lookup of it; `nil` once the
    /// entry is removed.
    func lookUp(_ entry: ProcEntry) -> (id: UInt64, text: [UInt8])? {
        for attempt in 1...Self.snapshotAttempts {
            let seen = state.withLock { state -> (UInt64, (UInt64, [UInt8])?) in
                let changes = state.changes[entry.inode, default: 0]
                guard let id = state.current[entry.inode], var node = state.nodes[id] else { return (changes, nil) }
                node.lookups += 1
                state.nodes[id] = node
                return (changes, (id, node.text))
            }
            if let found = seen.1 { return found }
            guard let text = entry.snapshot() else { return nil }
            // A change during the snapshot would leave the new node stale with nobody to
            // retire it, so take the snapshot again; after the last attempt, hand it out as
            // not current, and the next lookup takes a fresh one.
            let made: UInt64? = state.withLock { state in
                let unchanged = state.changes[entry.inode, default: 0] == seen.0
                guard unchanged || attempt == Self.snapshotAttempts else { return nil }
                let id = state.nextID
                state.nextID += 1
                state.nodes[id] = Node(entry: entry, text: text, lookups: 1)
                if unchanged { state.current[entry.inode] = id }
                return id
            }
            if let made { return (made, text) }
        }
        return nil
    }

    /// The node with `id`, if the kernel still holds it.
    func node(_ id: UInt64) -> Node? {
        state.withLock { $0.nodes[id] }
    }

    /// Retires `entry`'s current node after a change.
    ///
    /// - Returns: the retired node's ID, for the server to tell the kernel; `nil` when no lookup
    ///   has taken a snapshot since the last change, so the kernel holds nothing to drop.
    func supersede(_ entry: ProcEntry) -> UInt64? {
        state.withLock { state in
            state.changes[entry.inode, default: 0] += 1
            return state.current.removeValue(forKey: entry.inode)
        }
    }

    /// Forgets an entry that was removed from the tree; its nodes live on until forgotten.
    func remove(_ entry: ProcEntry) {
        state.withLock { state in
            state.current[entry.inode] = nil
            state.changes[entry.inode] = nil
        }
    }

    /// The kernel forgets `count` lookups of node `id` (`FUSE_FORGET`).
    func forget(_ id: UInt64, count: UInt64) {
        state.withLock { state in
            guard var node = state.nodes[id] else { return }
            node.lookups -= min(count, node.lookups)
            if node.lookups == 0 {
                state.nodes[id] = nil
                if state.current[node.entry.inode] == id { state.current[node.entry.inode] = nil }
            } else {
                state.nodes[id] = node
            }
        }
    }

    /// How many nodes the kernel holds.
    var count: Int { state.withLock { $0.nodes.count } }
}
