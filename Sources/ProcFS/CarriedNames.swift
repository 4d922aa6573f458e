import CLinux
import Glibc

/// The path of every inode number the kernel holds, kept in the ``CarriedState``'s memory file
/// so that a server taking over a mount gives each path the number the kernel knows it by,
/// whatever order its tree was built in (see ``ProcTree/number(byPath:freshFrom:)``).
///
/// A record is the number, its directory's number and the name, written when a server first
/// tells the kernel of the number (a `LOOKUP` reply, before it is sent) and erased when the
/// kernel forgets it. The records live in a table of 2^17 slots of 128 bytes after the texts
/// (``CarriedTexts``), each at the slot its number falls on, or the next free one: numbers are
/// given in order, so the slots used lie together, and the file, which is sparse, takes memory
/// only for the pages they are on.
///
/// A slot's first word is its number: 0 when free, ``erased`` once forgotten, which a later
/// record may take. It is claimed by a compare-and-swap, so two servers (the old one finishing
/// during an upgrade, and the new one) never write one slot. A server killed while it writes
/// a record leaves the number with a part of its path: the name's length is stored last, and a
/// record without it is taken as no record.
final class CarriedNames: @unchecked Sendable {
    // @unchecked: `slots` points into a MAP_SHARED mapping of the memory file that this object
    // makes and unmaps in `deinit`; every word is read and written with the C atomics in
    // CLinux, and a record's words are written only by the server that claimed its slot.
    private let slots: UnsafeMutablePointer<CUnsignedLongLong>

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

    /// Maps the table of the memory file `descriptor`; `nil` if the file is too short to hold
    /// it (one that a keeper of an earlier layout made).
    init?(descriptor: Int32) {
        var status = stat()
        guard fstat(descriptor, &status) == 0, Int(status.st_size) >= Self.offset + Self.length,
            let mapped = mmap(nil, Self.length, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, off_t(Self.offset)),
            mapped != MAP_FAILED
        else { return nil }
        slots = mapped.bindMemory(to: CUnsignedLongLong.self, capacity: Self.length / 8)
    }

    deinit {
        munmap(slots, Self.length)
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

    /// Every whole record, for a server taking the mount over: a scan of the table, in which
    /// pages never used read as zeros.
    var records: [Record] {
        var found: [Record] = []
        for index in 0..<Self.slotCount {
            let words = slot(index)
            let inode = clinux_shared_load(words)
            guard inode != 0, inode != Self.erased else { continue }
            let length = clinux_shared_load(words + 2)
            guard length & Self.whole != 0, Int(length & 0xff) <= Self.nameCapacity else { continue }
            let packed = (0..<Self.nameCapacity / 8).map { clinux_shared_load(words + 3 + $0) }
            let name = packed.withUnsafeBytes { String(decoding: $0.prefix(Int(length & 0xff)), as: UTF8.self) }
            found.append(Record(inode: UInt64(inode), parent: UInt64(clinux_shared_load(words + 1)), name: name))
        }
        return found
    }
}
