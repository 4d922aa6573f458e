import Synchronization

/// The entries the kernel holds, by inode number, as libfuse's `passthrough_ll.c` keeps its
/// inodes: one node per entry the kernel was told of in a `LOOKUP` reply, with how many lookups
/// of it the kernel holds, until `FORGET` takes the last. A file's node also keeps what the
/// kernel caches of it that changes without a notice from the tree (``KernelCache``).
///
/// A removed entry stays here while the kernel holds it, so its open files answer `EIO`, as
/// in procfs; the tree gives inode numbers once, so a number here never names another entry.
/// An entry is watched (``ProcEntry/setWatched(_:)``) while it has a node, so that a change
/// of an entry the kernel does not hold costs the server nothing.
///
/// Under a keeper, each number the kernel is told of has its path kept in ``CarriedNames``
/// until the kernel forgets it, for the next server; a node whose count of lookups is not all
/// the kernel's (one that another server told the kernel of) leaves its record when it goes.
final class NodeTable: Sendable {
    /// What the kernel may cache of a file that the file's node must keep true.
    enum KernelCache {
        /// Nothing that changes: a directory, a link, a file of size 0.
        case nothing
        /// The size of a file that announces its changes, in direct_io mode (``KeptAttributes``).
        case attributes
        /// The text and attributes of a file, in page-cache mode (``PageCacheCopy``).
        case pages
    }

    private struct Node {
        let entry: ProcEntry
        var lookups: UInt64
        /// What the kernel caches of a file's text, in page-cache mode.
        let copy: PageCacheCopy?
        /// Whether the kernel keeps a file's size, in direct_io mode.
        let attributes: KeptAttributes?
        /// Whether `lookups` is all the kernel holds, so that its last `FORGET` erases the
        /// number's record: the number was new to the kernel when this server gave it.
        var countsAll = false
        /// Whether the number's path could not be kept for the next server (see ``Looked``).
        var pathLost = false

        init(entry: ProcEntry, lookups: UInt64, caching: KernelCache) {
            self.entry = entry
            self.lookups = lookups
            let file = entry.kind == .file || entry.kind == .knob
            copy = file && caching == .pages ? PageCacheCopy() : nil
            attributes = file && caching == .attributes ? KeptAttributes() : nil
        }
    }

    private let nodes: Mutex<[UInt64: Node]>
    private let paths: CarriedNames?

    /// A table that holds the root, which the kernel holds for the whole mount without a
    /// lookup, and keeps the path of each number the kernel is told of in `paths`.
    init(root: ProcEntry, keepingPathsIn paths: CarriedNames? = nil) {
        nodes = Mutex([root.inode: Node(entry: root, lookups: 1, caching: .nothing)])
        self.paths = paths
        root.setWatched(true)
    }

    /// The entry the kernel knows as `inode`: live, or removed and not yet forgotten.
    func entry(_ inode: UInt64) -> ProcEntry? {
        nodes.withLock { $0[inode]?.entry }
    }

    /// Holds `entry` as a node that another server of the mount told the kernel of (see
    /// ``CarriedState``): how many lookups the kernel holds is unknown, so its first `FORGET`
    /// removes it. What the kernel caches of it (`caching`) is taken as stale, so the next use
    /// asks for it.
    ///
    /// - Returns: the entry held as `entry.inode`, which may be one held already.
    func adopt(_ entry: ProcEntry, caching: KernelCache) -> ProcEntry {
        nodes.withLock { nodes in
            if let known = nodes[entry.inode] { return known.entry }
            nodes[entry.inode] = Node(entry: entry, lookups: 0, caching: caching)
            entry.setWatched(true)
            return entry
        }
    }

    /// A lookup counted.
    enum Looked {
        /// The kernel may keep the name until the entry is removed.
        case counted
        /// The kernel must not keep the name: its number's path could not be kept for the next
        /// server (the name is too long, or the table is full), which would then not know the
        /// number, so each path walk must ask again.
        case countedWithoutPath
    }

    /// Counts one more lookup of `entry`, which the kernel is about to be told of in a
    /// `LOOKUP` reply; refuses once the entry is removed. A file's first lookup starts what
    /// keeps the kernel's cache of it true (`caching`).
    ///
    /// - Returns: `nil` if the lookup was refused.
    func lookedUp(_ entry: ProcEntry, caching: KernelCache) -> Looked? {
        nodes.withLock { nodes in
            guard !entry.isRemoved else { return nil }
            if nodes[entry.inode] != nil {
                nodes[entry.inode]!.lookups += 1
            } else {
                nodes[entry.inode] = Node(entry: entry, lookups: 1, caching: caching)
                if let paths {
                    let recorded = paths.record(entry.inode, parent: entry.parentInode, name: entry.name)
                    nodes[entry.inode]!.countsAll = recorded == .new
                    nodes[entry.inode]!.pathLost = recorded == .full
                }
                // Before the kernel gets anything of the entry: its changes are told from now on.
                entry.setWatched(true)
            }
            return nodes[entry.inode]!.pathLost ? .countedWithoutPath : .counted
        }
    }

    /// The kernel forgets `count` lookups of `inode` (`FORGET`); the node goes with the last.
    func forget(_ inode: UInt64, count: UInt64) {
        nodes.withLock { nodes in
            guard let held = nodes[inode]?.lookups, inode != ProcTree.rootInode else { return }
            if held > count {
                nodes[inode]!.lookups = held - count
            } else {
                let node = nodes.removeValue(forKey: inode)
                node?.entry.setWatched(false)
                if node?.countsAll == true { paths?.erase(inode) }
            }
        }
    }

    /// Drops the node of `inode` if no `LOOKUP` reply of this server gave it to the kernel
    /// (its count is 0: a node adopted from another server), for when the kernel says it
    /// holds no such node. A node a lookup counted since stays: the kernel holds it now, and
    /// will forget it.
    func forgetUnlessLookedUp(_ inode: UInt64) {
        nodes.withLock { nodes in
            guard nodes[inode]?.lookups == 0, inode != ProcTree.rootInode else { return }
            // An adopted node's record is another server's (`countsAll` is false): it stays.
            nodes.removeValue(forKey: inode)?.entry.setWatched(false)
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

    /// Whether the kernel keeps `inode`'s size, if it holds a file that announces its changes
    /// in direct_io mode.
    func keptAttributes(of inode: UInt64) -> KeptAttributes? {
        nodes.withLock { $0[inode]?.attributes }
    }
}
