import Synchronization

/// What a server of a mount that a ``FuseKeeper`` holds owes the servers before and after it,
/// as far as the FUSE operations are concerned: the one place where takeover meets them.
///
/// A ``ProcFileSystem`` is given one only when it takes a connection over; without one it pays
/// nothing for takeover on any operation. With one, an operation asks it only on a miss (a
/// node or an open this server never made); a `LOOKUP` touches the shared memory to keep the
/// path of a number new to this server (``CarriedNames``), and to count a number larger than
/// any given before.
final class Succession: Sendable {
    /// Where a server's number starts in its file handles: 2^24 servers of 2^40 opens each.
    static let serverShift: UInt64 = 40

    /// What the mount's servers share.
    let carried: CarriedState
    /// This server's number among the mount's servers (1 for the first); its file handles
    /// carry it, so that none is one another server gave the kernel.
    let server: UInt64
    /// The largest inode number any server of the mount gave the kernel, in the shared memory,
    /// and this server's own copy of it.
    private let inodesGiven: CarriedValue?
    private let largestGiven: Atomic<UInt64>
    /// The numbers the kernel held, with their paths, when this server began to serve.
    private let held = Mutex<[CarriedNames.Record]>([])
    private let tree: ProcTree

    /// Joins the mount's servers as number `server`; ``numberTree()`` then numbers the tree
    /// once the server before this one has stopped.
    init(_ carried: CarriedState, server: UInt64, tree: ProcTree) {
        self.carried = carried
        self.server = server
        self.tree = tree
        inodesGiven = carried.value(named: "procfs.inodes-given")
        largestGiven = Atomic(inodesGiven?.load() ?? 0)
    }

    /// Numbers the tree before this server serves, once no other server of the mount does (a
    /// server started for an upgrade calls it after the old one stopped, so that it sees every
    /// number the old one gave): each of the tree's paths that the kernel holds gets the number
    /// the kernel knows it by, whatever order the tree was built in, and every other entry a
    /// number no server gave the kernel (see ``ProcTree/number(byPath:freshFrom:)``). A state
    /// that keeps no paths (one that a keeper of an earlier layout made) leaves the tree's
    /// numbers as they are, above those given.
    func numberTree() {
        let given = inodesGiven?.load() ?? 0
        _ = largestGiven.max(given, ordering: .relaxed)
        guard let names = carried.names else {
            tree.reserveInodes(below: given + 1)
            return
        }
        let records = names.records
        held.withLock { $0 = records }
        // A path held twice is an entry removed and added again: the newer number (the larger)
        // is the live one; the kernel keeps the other only for files open on it.
        var numbers: [PathKey: UInt64] = [:]
        for record in records {
            let key = PathKey(parent: record.parent, name: record.name)
            numbers[key] = max(numbers[key] ?? 0, record.inode)
        }
        let unclaimed = Mutex(numbers)
        // A server killed between keeping a number's path and counting the number given leaves
        // a record above the count: new numbers start above both.
        let highest = max(given, records.map(\.inode).max() ?? 0)
        tree.number(byPath: { parent, name in
            unclaimed.withLock { $0.removeValue(forKey: PathKey(parent: parent, name: name)) }
        }, freshFrom: highest + 1)
    }

    /// A path as the kernel knows it.
    private struct PathKey: Hashable {
        let parent: UInt64
        let name: String
    }

    /// The numbers the kernel held when this server joined whose paths the tree lacks (or
    /// holds under a newer number): entries gone in this server's tree, to be dropped from
    /// the kernel as removed ones are. `live` is every number the tree gives now.
    func dropped(live: Set<UInt64>) -> [CarriedNames.Record] {
        held.withLock { $0.filter { !live.contains($0.inode) } }
    }

    /// Where the paths of the numbers the kernel holds are kept, if the state has room.
    var paths: CarriedNames? { carried.names }

    /// The first of this server's file handles.
    var firstHandle: UInt64 { server << Self.serverShift }

    /// Whether this server takes the mount over from another that served it before.
    var followsAnother: Bool { server > 1 }

    /// Where open files keep their texts for the next server.
    var texts: CarriedTexts? { carried.texts }

    /// Records, before the kernel has it, that the kernel is given `inode`: a server after
    /// this one must not give it again.
    func giving(_ inode: UInt64) {
        guard inode > largestGiven.load(ordering: .relaxed) else { return }
        _ = largestGiven.max(inode, ordering: .relaxed)
        if let inodesGiven, inodesGiven.load() < inode { inodesGiven.store(inode) }
    }

    /// Whether `handle` is an open that another server of the mount gave the kernel.
    func isAnothers(_ handle: UInt64) -> Bool {
        handle >> Self.serverShift != server
    }

    /// Another server's open of `entry`, opened here on its first use (as the caller this
    /// server runs as), going on with the text that server kept for it; `nil` once the entry
    /// is removed.
    func adoptOpen(_ handle: UInt64, of entry: ProcEntry) -> OpenFile? {
        guard !entry.isRemoved else { return nil }
        return OpenFile(entry: entry, caller: .current, handle: handle, carrying: texts, resuming: texts?.taken(by: handle))
    }

    /// Another server's open that this server never used was released: the text it kept goes.
    func releasedUnused(_ handle: UInt64) {
        texts?.free(handleOf: handle)
    }

    /// A poll of the kernel's file handle `kernelHandle` will sleep: a server after this one
    /// cannot know who sleeps, so it wakes them all once.
    func sleeping(_ kernelHandle: UInt64) {
        carried.rememberPolled(kernelHandle)
    }
}
