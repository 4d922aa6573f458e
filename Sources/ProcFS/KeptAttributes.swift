import Synchronization

/// Whether the kernel keeps the attributes of a file that announces its changes, in direct_io
/// mode: the size of its text, which changes only when the text does.
///
/// The kernel keeps them from a `GETATTR` reply until the file announces a change of length
/// (a change announced with `keepingLength`, see ``ProcEntry/changed(keepingLength:)``, leaves
/// the size true and is not told), when ``invalidate()`` says whether it must be told
/// (attributes only); so a warm `open`, `fstat` and path walk ask the server nothing, as on a
/// real /proc file. A change announced after
/// the kernel was told, or while no reply was kept, costs nothing.
///
/// The kernel's side of the race is its own: a reply whose request it sent before it was told
/// of a change is not kept (`fuse_change_attributes` in `fs/fuse/inode.c` compares the
/// inode's `attr_version`). The server's side is here: a size made while a change was
/// announced is not given as lasting, and every lasting reply is followed, at the next change,
/// by a notice.
final class KeptAttributes: Sendable {
    /// Whether the kernel may keep a size given since the last notice.
    private let kept = Mutex(false)

    /// The size of `entry`'s text now, and whether the kernel may keep it until told of a
    /// change: not when one was announced while the text was made. `nil` once the entry is
    /// removed.
    func keep(_ entry: ProcEntry) -> (size: Int, lasting: Bool)? {
        let version = entry.version
        guard let size = entry.snapshot()?.count else { return nil }
        // Under the lock, so that a change announced from here on finds `kept` set. An
        // unsettled size leaves it as it was: a lasting reply given before may still be held.
        let lasting = kept.withLock { kept in
            let settled = entry.version == version
            if settled { kept = true }
            return settled
        }
        return (size, lasting)
    }

    /// The file announced a change (its version has moved already).
    ///
    /// - Returns: whether the kernel may keep a size given before, so that it must be told.
    func invalidate() -> Bool {
        kept.withLock { kept in
            defer { kept = false }
            return kept
        }
    }
}
