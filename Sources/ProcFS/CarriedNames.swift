import CLinux
import Glibc

/// The path of every inode number the kernel holds, kept in the ``CarriedState``'s memory file
/// so that a server taking over a mount gives each path the number the kernel knows it by,
/// whatever order its tree was built in (see ``ProcTree/number(byPath:freshFrom:)``).
///
/// A record is the number, its directory's number and the name, written when a server first
/// tells the kernel of the number (a `LOOKUP` reply, before it is sent) and erased when the
/// kernel forgets the number in that server (a number another server recorded keeps its
/// record when this server's node of it goes: see ``NodeTable``). The records live in a table
/// of 2^17 slots of 128 bytes after the texts (``CarriedTexts``), each at the slot its number
/// falls on, or the next free one: numbers are given in order, so the slots used lie
/// together. The memory file is sparse: only the pages a server has touched take memory, and
/// the scan of all records (``records``) reads only the pages that hold data.
///
/// A slot's first word is its number: 0 when free, `erased` once forgotten, which a later
/// record may take. It is claimed by a compare-and-swap, so two servers (the old one finishing
/// during an upgrade, and the new one) never write one slot. A server killed while it writes
/// a record leaves the number with a part of its path: the name's length, with the bit
/// `whole`, is stored last (and cleared first when the record is erased), and a record without
/// it is taken as no record.
final class CarriedNames: @unchecked Sendable {
    // @unchecked: `slots` points into a MAP_SHARED mapping of the memory file that this object
    // makes and unmaps in `deinit`; every word is read and written with the C atomics in
    // CLinux, and a record's words are written only by the server that claimed its slot.
    private let slots: UnsafeMutablePointer<CUnsignedLongLong>
    /// The memory file, this object's own duplicate, closed in `deinit`: the scan asks it where
    /// its data lie. -1 if it could not be duplicated; the scan then reads every slot.
    private let descriptor: Int32

    /// A number the kernel holds, and its path.
    struct Record: Equatable {
        let inode: UInt64
        let parent: UInt64
        let name: String
    }

    static let slotCount = 1 << 17
    private static let slotWords = 16
    /// The longest name kept: 13 words. A longer name is not kept, and its entry's number is
    /// not carried to the next server.
    static let nameCapacity = 104
    /// How far from its own slot a record may go.
    private static let probes = 256
    /// Where the table starts in the memory file: after the texts.
    static let offset = CarriedTexts.offset + CarriedTexts.length
    /// What the table takes of the memory file.
    static let length = slotCount * slotWords * 8
    /// The first word of a slot whose record was erased.
    private static let erased = CUnsignedLongLong.max
    /// Set in the length word once the record is whole.
    private static let whole: CUnsignedLongLong = 1 << 63
    /// `lseek`'s `SEEK_DATA` and `SEEK_HOLE` (the same on every Linux architecture): glibc's
    /// headers define them only under `_GNU_SOURCE`.
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4

    /// Maps the table of the memory file `descriptor`; `nil` if the file is too short to hold
    /// it (one that a keeper of an earlier layout made).
    init?(descriptor: Int32) {
        var status = stat()
        guard fstat(descriptor, &status) == 0, Int(status.st_size) >= Self.offset + Self.length,
            let mapped = mmap(nil, Self.length, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, off_t(Self.offset)),
            mapped != MAP_FAILED
        else { return nil }
        slots = mapped.bindMemory(to: CUnsignedLongLong.self, capacity: Self.length / 8)
        // Its own: the state that gave `descriptor` may close it first. Not inherited.
        self.descriptor = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
    }

    deinit {
        munmap(slots, Self.length)
        if descriptor >= 0 { close(descriptor) }
    }

    private func slot(_ index: Int) -> UnsafeMutablePointer<CUnsignedLongLong> {
        slots + (index & (Self.slotCount - 1)) * Self.slotWords
    }

    /// What ``record(_:parent:name:)`` did.
    enum Recorded {
        /// It kept the path.
        case new
        /// The number had a record already: another server told the kernel of it.
        case kept
        /// It could not keep it: the name is too long, or the slots near the number's own are
        /// all taken.
        case full
    }

    /// Keeps the path of `inode`, the entry `name` in the directory numbered `parent`, unless
    /// it is kept already.
    @discardableResult
    func record(_ inode: UInt64, parent: UInt64, name: String) -> Recorded {
        let bytes = Array(name.utf8)
        guard bytes.count <= Self.nameCapacity, inode != 0, inode != UInt64(Self.erased) else { return .full }
        let number = CUnsignedLongLong(inode)
        var claimed: UnsafeMutablePointer<CUnsignedLongLong>?
        // A slot taken by another server between the look and the claim: look again.
        for _ in 0..<3 where claimed == nil {
            var candidate: (words: UnsafeMutablePointer<CUnsignedLongLong>, held: CUnsignedLongLong)?
            for probe in 0..<Self.probes {
                let words = slot(Int(truncatingIfNeeded: inode) + probe)
                let held = clinux_shared_load(words)
                if held == number { return .kept }
                if held == Self.erased, candidate == nil { candidate = (words, held) }
                // No record of this number lies past a slot never used.
                if held == 0 {
                    if candidate == nil { candidate = (words, held) }
                    break
                }
            }
            guard let candidate else { return .full }
            if clinux_shared_claim(candidate.words, candidate.held, number) != 0 { claimed = candidate.words }
        }
        guard let words = claimed else { return .full }
        var packed = [CUnsignedLongLong](repeating: 0, count: Self.nameCapacity / 8)
        packed.withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
        clinux_shared_store(words + 2, 0)
        clinux_shared_store(words + 1, CUnsignedLongLong(parent))
        for (index, word) in packed.enumerated() { clinux_shared_store(words + 3 + index, word) }
        clinux_shared_store(words + 2, Self.whole | CUnsignedLongLong(bytes.count))
        return .new
    }

    /// Erases the record of `inode`, which the kernel has forgotten.
    func erase(_ inode: UInt64) {
        let number = CUnsignedLongLong(inode)
        for probe in 0..<Self.probes {
            let words = slot(Int(truncatingIfNeeded: inode) + probe)
            let held = clinux_shared_load(words)
            if held == 0 { return }
            if held == number {
                clinux_shared_store(words + 2, 0)
                clinux_shared_store(words, Self.erased)
                return
            }
        }
    }

    /// Every whole record, one per number, for a server taking the mount over: a scan of the
    /// slots on the pages of the file that hold data (``touchedSlots``).
    ///
    /// A record is taken only if its number and length words read the same after its parent
    /// and name as before them: erasing a record clears its length word, then its number
    /// word, before its slot can be written again, so a record rewritten while it was read
    /// (by a server still writing, as the old one finishing during an upgrade) is never taken
    /// torn. A number found in two slots (two servers that recorded it at once, each in a
    /// slot of its own) is taken once.
    var records: [Record] {
        var found: [Record] = []
        var seen = Set<UInt64>()
        for range in touchedSlots {
            for index in range {
                let words = slot(index)
                let inode = clinux_shared_load(words)
                guard inode != 0, inode != Self.erased, !seen.contains(UInt64(inode)) else { continue }
                let length = clinux_shared_load(words + 2)
                guard length & Self.whole != 0, Int(length & 0xff) <= Self.nameCapacity else { continue }
                let parent = clinux_shared_load(words + 1)
                let packed = (0..<Self.nameCapacity / 8).map { clinux_shared_load(words + 3 + $0) }
                guard clinux_shared_load(words + 2) == length, clinux_shared_load(words) == inode else { continue }
                let name = packed.withUnsafeBytes { String(decoding: $0.prefix(Int(length & 0xff)), as: UTF8.self) }
                seen.insert(UInt64(inode))
                found.append(Record(inode: UInt64(inode), parent: UInt64(parent), name: name))
            }
        }
        return found
    }

    /// The slots on pages of the file that hold data, found with `lseek`'s `SEEK_DATA` and
    /// `SEEK_HOLE`: a slot in a hole was never written, so is free, and reading it through the
    /// mapping would give its page memory (a read fault on a shared memory file allocates the
    /// page), so that a scan of all 16 MiB would make the file take them all. Every slot if the
    /// file cannot say.
    private var touchedSlots: [Range<Int>] {
        let everySlot = [0..<Self.slotCount]
        guard descriptor >= 0 else { return everySlot }
        let start = off_t(Self.offset)
        let end = off_t(Self.offset + Self.length)
        let slotBytes = off_t(Self.slotWords * 8)
        var ranges: [Range<Int>] = []
        var position = start
        while position < end {
            // The offsets are lseek's results, not the file's offset, which the servers share.
            let data = lseek(descriptor, position, Self.seekData)
            if data < 0 {
                // ENXIO: no data from `position` to the end of the file.
                if errno == ENXIO { break }
                return everySlot
            }
            guard data < end else { break }
            let hole = lseek(descriptor, data, Self.seekHole)
            guard hole > data else { return everySlot }
            let stop = min(hole, end)
            ranges.append(Int((data - start) / slotBytes)..<Int((stop - start + slotBytes - 1) / slotBytes))
            position = stop
        }
        return ranges
    }
}
