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
        /// Above every entry inode number, so that no ID means two things.
        var nextID = SnapshotNodes.firstID
    }

    private let state = Mutex(State())
    /// Where snapshot node IDs start: above every entry's inode number.
    private static let firstID: UInt64 = 1 << 40

    /// Whether `id` names a snapshot node rather than an entry.
    static func isSnapshot(_ id: UInt64) -> Bool { id >= firstID }
    /// How often a lookup takes a new snapshot when the file changes while it takes one.
    private static let snapshotAttempts = 3

    /// The node for `entry`'s current text, counting one more lookup of it; `nil` once the
    /// entry is removed. An entry that does not announce its changes gets a new node each time.
    func lookUp(_ entry: ProcEntry) -> (id: UInt64, text: [UInt8])? {
        guard entry.announcesChanges else {
            guard let text = entry.snapshot() else { return nil }
            return (add(Node(entry: entry, text: text, lookups: 1)), text)
        }
        for attempt in 1...Self.snapshotAttempts {
            let seen = entry.cacheState.withLock { $0 }
            if let current = seen.currentNode, let found = countLookup(of: current) { return found }
            guard let text = entry.snapshot() else { return nil }
            // A change during the snapshot would leave the new node stale with nobody to
            // retire it, so take the snapshot again; after the last attempt, hand it out as
            // not current, and the next lookup takes a fresh one.
            let id = add(Node(entry: entry, text: text, lookups: 1))
            let installed = entry.cacheState.withLock { cache in
                guard cache.changes == seen.changes else { return false }
                cache.currentNode = id
                return true
            }
            if installed || attempt == Self.snapshotAttempts { return (id, text) }
            forget(id, count: 1)
        }
        return nil
    }

    private func add(_ node: Node) -> UInt64 {
        state.withLock { state in
            defer { state.nextID += 1 }
            state.nodes[state.nextID] = node
            return state.nextID
        }
    }

    private func countLookup(of id: UInt64) -> (id: UInt64, text: [UInt8])? {
        state.withLock { state in
            guard var node = state.nodes[id] else { return nil }
            node.lookups += 1
            state.nodes[id] = node
            return (id, node.text)
        }
    }

    /// The node with `id`, if the kernel still holds it.
    func node(_ id: UInt64) -> Node? {
        state.withLock { $0.nodes[id] }
    }

    /// Retires `entry`'s current node after a change; cheap when nobody has looked it up.
    ///
    /// - Returns: the retired node's ID, for the server to tell the kernel; `nil` when no lookup
    ///   has taken a snapshot since the last change, so the kernel holds nothing to drop.
    func supersede(_ entry: ProcEntry) -> UInt64? {
        entry.cacheState.withLock { cache in
            cache.changes &+= 1
            defer { cache.currentNode = nil }
            return cache.currentNode
        }
    }

    /// The kernel forgets `count` lookups of node `id` (`FUSE_FORGET`).
    func forget(_ id: UInt64, count: UInt64) {
        let released = state.withLock { state -> Node? in
            guard var node = state.nodes[id] else { return nil }
            node.lookups -= min(count, node.lookups)
            if node.lookups > 0 {
                state.nodes[id] = node
                return nil
            }
            state.nodes[id] = nil
            return node
        }
        released?.entry.cacheState.withLock { cache in
            if cache.currentNode == id { cache.currentNode = nil }
        }
    }

    /// How many nodes the kernel holds.
    var count: Int { state.withLock { $0.nodes.count } }
}

/// What the page-cache mode keeps on each entry: the node of its current text, if a lookup
/// has taken one since the last change, and how many changes there have been.
struct EntryCacheState: Sendable {
    var currentNode: UInt64?
    var changes: UInt64 = 0
}
