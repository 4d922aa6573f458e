import Glibc
import Synchronization

/// One open of a file in direct_io mode, read as procfs reads a `seq_file` (`seq_read_iter`
/// in the kernel's `fs/seq_file.c`):
///
/// - a read at offset 0 makes the text anew, so a file held open and re-read from the start
///   (`pread(fd, buf, n, 0)`, or `lseek` to 0 and `read`) shows the current text;
/// - a read where the last one ended continues the same text, so a sequence of reads from 0
///   to the end is one whole text at any buffer size;
/// - a read anywhere else makes the text anew and skips to its offset (`traverse`);
/// - once the entry is removed every read fails (`EIO` in procfs's `proc_reg_read`).
///
/// Concurrent reads of one open take turns, as they do on the `seq_file`'s lock.
///
/// Served by a keeper's server, an open keeps each text it makes in the ``CarriedTexts`` before
/// the read that begins it is answered, so that a server taking over the mount continues it
/// (see ``init(entry:caller:handle:carrying:resuming:)``).
final class OpenFile: Sendable {
    let entry: ProcEntry
    /// The entry's version when the file was opened: a poll reports changes after it.
    let openedVersion: UInt64
    /// The number the kernel knows the open by.
    let handle: UInt64
    /// Where its texts are kept for the next server; `nil` when there is none.
    private let carried: CarriedTexts?

    private struct Position {
        /// The text being read; `nil` before the first read.
        var text: [UInt8]?
        /// Where the last read ended: a read there continues the text.
        var next = 0
        /// Whether the text is another server's, and the next read continues it anywhere in
        /// it: where that server's last read ended is not known (the kernel may send again a
        /// read that it began but never answered).
        var resumes = false
        /// The slot of ``CarriedTexts`` that keeps the text, once one is taken.
        var slot: Int?
        /// Set at `RELEASE`: the slot is freed and no other is taken.
        var released = false

        /// Whether a read at `offset` makes the text anew: at offset 0, anywhere but where the
        /// last read ended (or, resuming another server's text, past its end), or before any
        /// text.
        func needsText(at offset: Int) -> Bool {
            guard let text, offset != 0 else { return true }
            return resumes ? offset > text.count : offset != next
        }

        /// The bytes of the text a read of `size` at `offset` gets, where the next one then
        /// continues; `nil` without a text.
        mutating func read(at offset: Int, size: Int) -> ArraySlice<UInt8>? {
            guard let text else { return nil }
            let bytes = text.bytes(at: offset, count: size)
            next = offset + bytes.count
            resumes = false
            return bytes
        }

        /// Makes `text` the one being read, kept in `carried` if there is one.
        mutating func begin(_ text: [UInt8]?, handle: UInt64, carried: CarriedTexts?) {
            self.text = text
            resumes = false
            guard let carried, let text, !released else { return }
            if slot == nil { slot = carried.claim(for: handle) }
            if let slot { carried.store(text, in: slot) }
        }
    }

    private let position: Mutex<Position>

    /// Who opened the file: a file whose text depends on who opens it reads as them, as a
    /// procfs file reads with the opener's credentials (`file->f_cred`).
    let caller: ProcCaller

    /// - Parameters:
    ///   - handle: the number the kernel knows the open by.
    ///   - carried: where to keep each text this open makes, for a server that takes over.
    ///   - resuming: for an open that another server made, what it kept of it: the slot, and
    ///     the text its reader is inside, which the first read here continues.
    init(
        entry: ProcEntry, caller: ProcCaller, handle: UInt64, carrying carried: CarriedTexts? = nil,
        resuming: (slot: Int, text: [UInt8]?)? = nil
    ) {
        self.entry = entry
        self.caller = caller
        self.handle = handle
        self.carried = carried
        self.openedVersion = entry.version
        position = Mutex(Position(text: resuming?.text, resumes: resuming?.text != nil, slot: resuming?.slot))
    }

    /// The bytes a read of at most `size` bytes at `offset` gets; `nil` once the entry is
    /// removed.
    func read(at offset: Int, size: Int) -> ArraySlice<UInt8>? {
        position.withLock { position in
            if position.needsText(at: offset) { position.begin(entry.snapshot(for: caller), handle: handle, carried: carried) }
            guard !entry.isRemoved else { return nil }
            return position.read(at: offset, size: size)
        }
    }

    /// A read of a file whose text an `async` closure makes (``ProcEntry/isAwaited``), as
    /// ``read(at:size:)``: the text is awaited outside the lock, then kept for the reads that
    /// continue it.
    func awaitedRead(at offset: Int, size: Int) async -> ArraySlice<UInt8>? {
        let needsText = position.withLock { $0.needsText(at: offset) }
        let fresh = needsText ? await entry.awaitedSnapshot(for: caller) : nil
        if needsText && fresh == nil { return nil }
        return position.withLock { position in
            if let fresh { position.begin(fresh, handle: handle, carried: carried) }
            guard !entry.isRemoved else { return nil }
            return position.read(at: offset, size: size)
        }
    }

    /// The length of the text this open reads, for the attributes the kernel asks for with the
    /// open's handle (`lseek` to `SEEK_END`): that of its last read, or of a new text if it has
    /// not read yet (which its first read then continues only past offset 0); `nil` once the
    /// entry is removed.
    var size: Int? {
        position.withLock { position in
            if position.text == nil { position.text = entry.snapshot(for: caller) }
            guard let text = position.text, !entry.isRemoved else { return nil }
            return text.count
        }
    }

    /// `RELEASE`: frees the slot that kept its text.
    func release() {
        position.withLock { position in
            position.released = true
            if let slot = position.slot { carried?.free(slot) }
            position.slot = nil
        }
    }
}

extension Array where Element == UInt8 {
    /// At most `count` bytes of a text from `offset` on: none at or past its end.
    func bytes(at offset: Int, count: Int) -> ArraySlice<UInt8> {
        let start = Swift.min(offset, self.count)
        return self[start..<Swift.min(start + count, self.count)]
    }
}

/// What one open of a directory holds: its listing as it was at the last `readdir` from
/// offset 0, so that `readdir` is consistent at every offset while entries come and go.
final class OpenDirectory: Sendable {
    let directory: ProcEntry
    /// `nil` until the first `readdir`.
    private let items = Mutex<[ProcFileSystem.DirectoryItem]?>(nil)

    init(directory: ProcEntry) {
        self.directory = directory
    }

    /// The listing from `offset` on. Reading from offset 0 (the first `readdir`, or
    /// `rewinddir`) takes the listing anew from `current`, as procfs shows entries added since;
    /// any other offset reads the listing kept, so that offsets stay true while entries come
    /// and go.
    func items(
        from offset: Int, current: () -> [ProcFileSystem.DirectoryItem]
    ) -> ArraySlice<ProcFileSystem.DirectoryItem> {
        let items = self.items.withLock { kept in
            if offset == 0 || kept == nil { kept = current() }
            return kept!
        }
        return items[min(max(offset, 0), items.count)...]
    }
}

/// The objects behind the `fh` numbers the kernel holds for open files.
///
/// The table owns them, not the kernel: when a session ends with files still open, the kernel
/// sends no `RELEASE` for them, and they go with the table instead of leaking.
final class HandleTable<Object: Sendable>: Sendable {
    private struct State {
        var objects: [UInt64: Object] = [:]
        /// 0 is never given out: in page-cache mode the kernel passes `fh` 0 for its own opens.
        var next: UInt64
    }

    private let state: Mutex<State>
    /// Its numbers are `base + 1`, `base + 2`, ...
    let base: UInt64

    init(base: UInt64 = 0) {
        self.base = base
        state = Mutex(State(next: base + 1))
    }

    /// Keeps the object `make` makes for the number that stands for it, and returns the
    /// number.
    func insert(_ make: (UInt64) -> Object) -> UInt64 {
        state.withLock { state in
            defer { state.next += 1 }
            state.objects[state.next] = make(state.next)
            return state.next
        }
    }

    /// The object behind `handle`, if it is open.
    func object(_ handle: UInt64) -> Object? {
        state.withLock { $0.objects[handle] }
    }

    /// The object behind `handle`; if there is none, the one `make` makes, kept under that
    /// number (a number another server gave out).
    func object(_ handle: UInt64, adopting make: () -> Object?) -> Object? {
        state.withLock { state in
            if let found = state.objects[handle] { return found }
            let made = make()
            state.objects[handle] = made
            return made
        }
    }

    /// Forgets `handle` (`RELEASE`), returning what it stood for.
    @discardableResult
    func remove(_ handle: UInt64) -> Object? {
        state.withLock { $0.objects.removeValue(forKey: handle) }
    }
}
