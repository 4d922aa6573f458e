import CLinux
import Glibc
import SystemPackage

/// What outlives the process that serves a mount: a small shared memory file that the keeper
/// (the process that mounted, and holds the connection) makes, and that every server it starts
/// maps. A server killed at any instant leaves it as it was at its last store, so the next
/// server goes on from there.
///
/// It holds the kernel's `INIT` request (sent once per mount, and given again to each new
/// server), a count of servers started (part of each file handle a server gives out, so that
/// no two servers give the kernel the same one), the kernel handles of files being polled
/// (woken by a new server, whose predecessor can no longer wake them), named 64-bit values
/// that the program keeps there (see ``value(named:)``), the texts that open files are
/// reading (``CarriedTexts``), and the path of each inode number the kernel holds
/// (``CarriedNames``).
package final class CarriedState: @unchecked Sendable {
    // @unchecked: `words` points into a MAP_SHARED mapping that lives as long as this object;
    // every access to shared words goes through the C atomics in CLinux, and the fixed areas
    // (the INIT bytes) are written once, by the keeper, before any server starts.
    private let words: UnsafeMutablePointer<CUnsignedLongLong>

    /// The memory file; a server started with it inherits it by number.
    package let descriptor: Int32
    /// The texts of open files; `nil` in a file that a keeper of an earlier layout made,
    /// which has no room for them.
    let texts: CarriedTexts?
    /// The paths of the numbers the kernel holds; `nil` in a file that a keeper of an earlier
    /// layout made.
    let names: CarriedNames?

    /// The fixed part: everything but the texts, which follow it.
    static let fixedSize = 8192
    private static let magic: CUnsignedLongLong = 0x5052_4F43_4653_3031  // "PROCFS01"
    private enum Layout {
        static let magic = 0
        static let serverCount = 1
        static let initLength = 2
        static let initBytes = 3  // 64 words: 512 bytes
        static let initCapacity = 512
        static let pollCursor = 67
        static let polled = 68  // 256 words
        static let polledCount = 256
        static let slots = 324  // 64 slots of 8 words: state, 6 words of name, value
        static let slotCount = 64
        static let slotWords = 8
        static let nameBytes = 48
    }

    /// Makes a new, empty state (in the keeper).
    ///
    /// - Throws: the `Errno` of `memfd_create`, `ftruncate` or `mmap`.
    package convenience init() throws(Errno) {
        let descriptor = clinux_memfd_inherited("procfs-carried")
        guard descriptor >= 0 else { throw Errno(rawValue: errno) }
        guard ftruncate(descriptor, off_t(CarriedNames.offset + CarriedNames.length)) == 0 else {
            let error = Errno(rawValue: errno)
            close(descriptor)
            throw error
        }
        try self.init(mapping: descriptor)
        clinux_shared_store(words + Layout.magic, Self.magic)
    }

    /// Maps the state that a keeper made, inherited as `descriptor` (in a server), which is
    /// closed on exec from then on.
    ///
    /// - Throws: `EINVAL` if `descriptor` holds no such state; the `Errno` of `mmap`.
    package convenience init(adopting descriptor: Int32) throws(Errno) {
        // Inherited without close-on-exec: a child the program that embeds the server starts
        // must not inherit it.
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        try self.init(mapping: descriptor)
        guard clinux_shared_load(words + Layout.magic) == Self.magic else { throw .invalidArgument }
    }

    private init(mapping descriptor: Int32) throws(Errno) {
        guard let mapped = mmap(nil, Self.fixedSize, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0), mapped != MAP_FAILED else {
            throw Errno(rawValue: errno)
        }
        self.descriptor = descriptor
        self.texts = CarriedTexts(descriptor: descriptor)
        self.names = CarriedNames(descriptor: descriptor)
        self.words = mapped.bindMemory(to: CUnsignedLongLong.self, capacity: Self.fixedSize / 8)
    }

    deinit {
        munmap(words, Self.fixedSize)
        close(descriptor)
    }

    // MARK: The connection

    /// The kernel's `INIT` request as the keeper read it; empty until then.
    var initRequest: [UInt8] {
        get {
            let length = min(Int(clinux_shared_load(words + Layout.initLength)), Layout.initCapacity)
            return Array(UnsafeRawBufferPointer(start: words + Layout.initBytes, count: length))
        }
        set {
            let length = min(newValue.count, Layout.initCapacity)
            newValue.withUnsafeBytes { UnsafeMutableRawPointer(words + Layout.initBytes).copyMemory(from: $0.baseAddress!, byteCount: length) }
            clinux_shared_store(words + Layout.initLength, CUnsignedLongLong(length))
        }
    }

    /// Counts one more server, and returns its number (1 for the first).
    func countServer() -> UInt64 { UInt64(clinux_shared_add(words + Layout.serverCount, 1)) }

    /// Keeps the kernel handle of a file with a poller asleep on it (a ring of the latest 256).
    func rememberPolled(_ kernelHandle: UInt64) {
        let index = Int(clinux_shared_add(words + Layout.pollCursor, 1) % CUnsignedLongLong(Layout.polledCount))
        clinux_shared_store(words + Layout.polled + index, CUnsignedLongLong(kernelHandle))
    }

    /// The kernel handles remembered by ``rememberPolled(_:)``, each once.
    var polledHandles: Set<UInt64> {
        Set((0..<Layout.polledCount).map { UInt64(clinux_shared_load(words + Layout.polled + $0)) }.filter { $0 != 0 })
    }

    // MARK: Values

    /// The value in which the servers count the requests they read, for a ``StallWatch``.
    static let requestsReadName = "procfs.requests-read"

    /// The value called `name` (at most 48 bytes of UTF-8), 0 until first stored; the same
    /// name gives the same value in every server of the mount.
    ///
    /// - Returns: `nil` when all 64 names are taken or `name` is too long.
    package func value(named name: String) -> CarriedValue? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= Layout.nameBytes else { return nil }
        var packed = [CUnsignedLongLong](repeating: 0, count: Layout.nameBytes / 8)
        packed.withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
        for slot in 0..<Layout.slotCount {
            let base = words + Layout.slots + slot * Layout.slotWords
            // A slot: 0 free, 1 being named, 2 named.
            if clinux_shared_claim(base, 0, 1) != 0 {
                for (index, word) in packed.enumerated() { clinux_shared_store(base + 1 + index, word) }
                clinux_shared_store(base, 2)
                return CarriedValue(word: base + 7, owner: self)
            }
            while clinux_shared_load(base) == 1 { sched_yield() }
            if (0..<packed.count).allSatisfy({ clinux_shared_load(base + 1 + $0) == packed[$0] }) {
                return CarriedValue(word: base + 7, owner: self)
            }
        }
        return nil
    }
}

/// A 64-bit value that outlives the server that stores it: it lives in the memory of the
/// mount's keeper (see ``KeptMount/value(named:)``). Each operation is one atomic operation on
/// memory the servers share.
public struct CarriedValue: @unchecked Sendable {
    // @unchecked: `word` points into the state's shared mapping, which `owner` keeps mapped;
    // every access is one C atomic operation.
    private let word: UnsafeMutablePointer<CUnsignedLongLong>
    private let owner: CarriedState

    init(word: UnsafeMutablePointer<CUnsignedLongLong>, owner: CarriedState) {
        self.word = word
        self.owner = owner
    }

    /// The value now.
    public func load() -> UInt64 { UInt64(clinux_shared_load(word)) }

    /// Sets the value.
    public func store(_ value: UInt64) { clinux_shared_store(word, CUnsignedLongLong(value)) }

    /// Adds `delta` and returns the new value.
    @discardableResult
    public func add(_ delta: UInt64) -> UInt64 { UInt64(clinux_shared_add(word, CUnsignedLongLong(delta))) }
}
