import CLinux
import Glibc
import SystemPackage

/// The texts that open files are reading, kept in the ``CarriedState``'s memory file so that
/// a server taking over a mount continues each one where the last server left it: a reader
/// between two reads of a text gets the rest of that text, not part of a new one.
///
/// The file holds 1024 slots after the state's first 8 KiB, each a header (the open's file
/// handle, then a word with a valid bit, a bit set once a text longer than a page was kept, a
/// sequence number and the length) and 64 KiB for the
/// text. It is sparse: only the pages written take memory, and a server takes the lowest free
/// slot, so a mount with a few files open at a time touches a few pages. A text longer than a
/// slot, or an open beyond the 1024th, is not kept, and a server taking over makes its text
/// anew, as before.
///
/// A slot is claimed by a compare-and-swap of its handle word, so two servers of one mount
/// (the old one finishing what it holds during an upgrade, and the new one) never take the
/// same slot. A server killed while storing a text leaves the slot marked not valid; a reader
/// that takes a text checks that the sequence did not move while it copied.
final class CarriedTexts: @unchecked Sendable {
    // @unchecked: `headers` and `texts` point into a MAP_SHARED mapping of the memory file
    // that this object makes and unmaps in `deinit`; every header word is read and written
    // with the C atomics in CLinux. A text's bytes are copied only by the server that holds
    // the slot, between two header stores that mark it not valid and then valid, and read
    // only between two header loads that must agree, so no torn text is ever taken.
    private let mapping: UnsafeMutableRawPointer
    private let headers: UnsafeMutablePointer<CUnsignedLongLong>
    private let texts: UnsafeMutableRawPointer

    /// Slots in the file.
    static let slotCount = 1024
    /// The longest text kept.
    static let capacity = 65_536
    /// Where the slots start in the memory file: after the state's fixed part.
    static let offset = CarriedState.fixedSize
    /// The slots' headers: two words each.
    private static let headerBytes = slotCount * 16
    /// What the slots take of the memory file, from ``offset`` on.
    static let length = headerBytes + slotCount * capacity
    private static let valid: CUnsignedLongLong = 1 << 63
    /// Set once the slot kept a text longer than a page: its pages past the first are given
    /// back when it is freed.
    private static let spilled: CUnsignedLongLong = 1 << 62
    private static let sequenceMask: CUnsignedLongLong = (1 << 30) - 1
    private static let lengthMask: CUnsignedLongLong = 0xffff_ffff
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Maps the slots of the memory file `descriptor`; `nil` if the file is too short to hold
    /// them (one that a keeper of an earlier layout made).
    init?(descriptor: Int32) {
        var status = stat()
        guard fstat(descriptor, &status) == 0, Int(status.st_size) >= Self.offset + Self.length,
            let mapped = mmap(nil, Self.length, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, off_t(Self.offset)),
            mapped != MAP_FAILED
        else { return nil }
        mapping = mapped
        headers = mapped.bindMemory(to: CUnsignedLongLong.self, capacity: Self.headerBytes / 8)
        texts = mapped + Self.headerBytes
    }

    deinit {
        munmap(mapping, Self.length)
    }

    private func handleWord(_ slot: Int) -> UnsafeMutablePointer<CUnsignedLongLong> { headers + 2 * slot }
    private func stateWord(_ slot: Int) -> UnsafeMutablePointer<CUnsignedLongLong> { headers + 2 * slot + 1 }
    private func textBytes(_ slot: Int) -> UnsafeMutableRawPointer { texts + slot * Self.capacity }

    /// Takes the lowest free slot for the open file `handle` (never 0); `nil` when all are
    /// taken.
    func claim(for handle: UInt64) -> Int? {
        for slot in 0..<Self.slotCount where clinux_shared_load(handleWord(slot)) == 0 {
            if clinux_shared_claim(handleWord(slot), 0, CUnsignedLongLong(handle)) != 0 {
                clinux_shared_store(stateWord(slot), 0)
                return slot
            }
        }
        return nil
    }

    /// Keeps `text` in `slot`, before the read that begins it is answered; a text longer
    /// than a slot leaves the slot with no text.
    func store(_ text: [UInt8], in slot: Int) {
        let word = stateWord(slot)
        let before = clinux_shared_load(word)
        let sequence = ((before >> 32 & Self.sequenceMask) + 1 & Self.sequenceMask) << 32
        let spilled = before & Self.spilled | (text.count > Self.pageSize ? Self.spilled : 0)
        clinux_shared_store(word, spilled | sequence)
        guard text.count <= Self.capacity else { return }
        text.withUnsafeBytes { bytes in
            if let source = bytes.baseAddress { textBytes(slot).copyMemory(from: source, byteCount: bytes.count) }
        }
        clinux_shared_store(word, Self.valid | spilled | sequence | CUnsignedLongLong(text.count))
    }

    /// The slot that the open file `handle` holds, and the text kept there if it is whole;
    /// `nil` if it holds none.
    func taken(by handle: UInt64) -> (slot: Int, text: [UInt8]?)? {
        guard let slot = slot(of: handle) else { return nil }
        let before = clinux_shared_load(stateWord(slot))
        let length = Int(before & Self.lengthMask)
        guard before & Self.valid != 0, length <= Self.capacity else { return (slot, nil) }
        let text = Array(UnsafeRawBufferPointer(start: textBytes(slot), count: length))
        let whole = clinux_shared_load(stateWord(slot)) == before && clinux_shared_load(handleWord(slot)) == handle
        return (slot, whole ? text : nil)
    }

    /// Frees `slot`, giving its pages back past the first.
    func free(_ slot: Int) {
        let spilled = clinux_shared_load(stateWord(slot)) & Self.spilled != 0
        clinux_shared_store(stateWord(slot), 0)
        if spilled {
            _ = madvise(textBytes(slot) + Self.pageSize, Self.capacity - Self.pageSize, MADV_REMOVE)
        }
        clinux_shared_store(handleWord(slot), 0)
    }

    /// Frees the slot of the open file `handle`, if it holds one (an open another server made,
    /// released before this one used it).
    func free(handleOf handle: UInt64) {
        if let slot = slot(of: handle) { free(slot) }
    }

    private func slot(of handle: UInt64) -> Int? {
        (0..<Self.slotCount).first { clinux_shared_load(handleWord($0)) == handle }
    }
}
