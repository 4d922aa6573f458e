import Synchronization

/// The entries the kernel holds, by inode number, as libfuse's `passthrough_ll.c` keeps its
/// inodes: one node per entry the kernel was told of in a `LOOKUP` reply, with how many lookups
/// of it the kernel holds, until `FORGET` takes the last. In page-cache mode each file's node
/// also keeps what the kernel's cache holds of its text (``PageCacheCopy``).
///
/// A removed entry stays here while the kernel holds it, so its open files answer `EIO`, as
/// in procfs; the tree gives inode numbers once, so a number here never names another entry.
/// An entry is watched (``ProcEntry/setWatched(_:)``) while it has a node, so that a change
/// of an entry the kernel does not hold costs the server nothing.
final class NodeTable: Sendable {
    private struct Node {
        let entry: ProcEntry
        var lookups: UInt64
        /// What the kernel caches of a file's text, in page-cache mode.
        let copy: PageCacheCopy?
    }

    private let nodes: Mutex<[UInt64: Node]>

    /// A table that holds the root, which the kernel holds for the whole mount without a
    /// lookup.
    init(root: ProcEntry) {
        nodes = Mutex([root.inode: Node(entry: root, lookups: 1, copy: nil)])
        root.setWatched(true)
    }

    /// The entry the kernel knows as `inode`: live, or removed and not yet forgotten.
    func entry(_ inode: UInt64) -> ProcEntry? {
        nodes.withLock { $0[inode]?.entry }
    }

    /// Holds `entry` as a node that another server of the mount told the kernel of (see
    /// ``CarriedState``): how many lookups the kernel holds is unknown, so its first `FORGET`
    /// removes it. In page-cache mode (`keepingCopy`) the kernel's copy of a file is taken as
    /// stale, so the next read asks for it.
    ///
    /// - Returns: the entry held as `entry.inode`, which may be one held already.
    func adopt(_ entry: ProcEntry, keepingCopy: Bool) -> ProcEntry {
        nodes.withLock { nodes in
            if let known = nodes[entry.inode] { return known.entry }
            let copy = keepingCopy && (entry.kind == .file || entry.kind == .knob) ? PageCacheCopy() : nil
            nodes[entry.inode] = Node(entry: entry, lookups: 0, copy: copy)
            entry.setWatched(true)
            return entry
        }
    }

    /// Counts one more lookup of `entry`, which the kernel is about to be told of in a
    /// `LOOKUP` reply; refuses once the entry is removed. A file's first lookup in page-cache
    /// mode (`keepingCopy`) starts its ``PageCacheCopy``.
    ///
    /// - Returns: whether the lookup was counted.
    func lookedUp(_ entry: ProcEntry, keepingCopy: Bool) -> Bool {
        nodes.withLock { nodes in
            guard !entry.isRemoved else { return false }
            if nodes[entry.inode] != nil {
                nodes[entry.inode]!.lookups += 1
            } else {
                let copy = keepingCopy && (entry.kind == .file || entry.kind == .knob) ? PageCacheCopy() : nil
                nodes[entry.inode] = Node(entry: entry, lookups: 1, copy: copy)
                // Before the kernel gets anything of the entry: its changes are told from now on.
                entry.setWatched(true)
            }
            return true
        }
    }

    /// The kernel forgets `count` lookups of `inode` (`FORGET`); the node goes with the last.
    func forget(_ inode: UInt64, count: UInt64) {
        nodes.withLock { nodes in
            guard let held = nodes[inode]?.lookups, inode != ProcTree.rootInode else { return }
            if held > count {
                nodes[inode]!.lookups = held - count
            } else {
                nodes.removeValue(forKey: inode)?.entry.setWatched(false)
            }
        }
    }

    /// How many lookups of `inode` the kernel holds.
    func lookups(of inode: UInt64) -> UInt64 {
        nodes.withLock { $0[inode]?.lookups ?? 0 }
    }

    /// What the kernel's cache holds of `inode`'s text, if it holds the file in page-cache mode.
    func copy(of inode: UInt64) -> PageCacheCopy? {
        nodes.withLock { $0[inode]?.copy }
    }
}
