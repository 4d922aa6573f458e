/// A tree's inode numbers: given to entries, counted while the kernel holds them, and given
/// again only once free, each time with a new generation.
///
/// The kernel knows an entry by the number it was told at `LOOKUP` until it sends `FORGET` for
/// every lookup of it. A number whose entry was removed is therefore kept out of use until the
/// kernel's count of it is zero; reused, it carries the next generation, so that even a holder
/// outside the kernel's count (an NFS file handle) can tell the new entry from the old.
struct InodeNumbers {
    private var next: UInt64
    /// Numbers free for reuse, the longest free first.
    private var free: [UInt64] = []
    /// The current generation of every number that has been reused; the others are at 0.
    private var generations: [UInt64: UInt64] = [:]
    /// How many lookups of each number the kernel holds.
    private var kernelLookups: [UInt64: UInt64] = [:]
    /// Numbers whose entry is removed, waiting for the kernel to forget them.
    private var retired: Set<UInt64> = []

    /// Starts numbering at `first`.
    init(first: UInt64) {
        next = first
    }

    /// A number for a new entry, with its generation.
    mutating func allocate() -> (inode: UInt64, generation: UInt64) {
        guard !free.isEmpty else {
            defer { next += 1 }
            return (next, 0)
        }
        let inode = free.removeFirst()
        let generation = generations[inode, default: 0] + 1
        generations[inode] = generation
        return (inode, generation)
    }

    /// The kernel was told of `inode` in one more lookup.
    mutating func lookedUp(_ inode: UInt64) {
        kernelLookups[inode, default: 0] += 1
    }

    /// The kernel forgets `count` lookups of `inode`; a removed entry's number is freed with
    /// the last.
    mutating func forget(_ inode: UInt64, count: UInt64) {
        guard let held = kernelLookups[inode] else { return }
        if held > count {
            kernelLookups[inode] = held - count
            return
        }
        kernelLookups[inode] = nil
        if retired.remove(inode) != nil { free.append(inode) }
    }

    /// The entry with `inode` is removed: the number is free now if the kernel holds none of
    /// it, or else once the kernel has forgotten it.
    mutating func release(_ inode: UInt64) {
        if kernelLookups[inode] == nil {
            free.append(inode)
        } else {
            retired.insert(inode)
        }
    }

    /// How many lookups of `inode` the kernel holds.
    func lookups(of inode: UInt64) -> UInt64 {
        kernelLookups[inode, default: 0]
    }
}
