import Glibc
import Synchronization

/// What the kernel's page cache holds of one file's text in page-cache mode, and the
/// modification time that tells the kernel when that copy is stale.
///
/// The kernel opens files itself in this mode and reads from its cache without asking the
/// server; it asks only for attributes (`GETATTR`, and the attributes of a `LOOKUP`) and for
/// pages it lacks (`READ`). With `FUSE_CAP_AUTO_INVAL_DATA` it asks for attributes before a
/// `read` whenever the cached ones have expired or were invalidated, and drops its cached pages
/// when the size or the modification time it gets differs from what it had. So:
///
/// - every attribute request ``publish(_:now:)``es the entry's text, with a later modification
///   time whenever the text differs from the one published before or the entry has announced
///   a change since (a request whose text another request's has overtaken gives that newer
///   one instead);
/// - `READ` is answered from the text published last (``published(_:now:)``), so the pages
///   the kernel fills agree with the size it was given;
/// - when a file announces a change, ``invalidate()`` says whether the kernel's copy was
///   current, and then the server invalidates the inode's attributes in the kernel (never its
///   pages, which could wait on a `READ` that only the calling thread would answer); the next
///   `read` asks for attributes and drops the stale pages itself. A copy already stale costs
///   the next changes nothing.
///
/// The text is made outside the lock, so a content closure may take locks of its own that are
/// also held around ``ProcEntry/changed(keepingLength:)``. A text made while a change was
/// announced is given unsettled (``Published/settled`` is `false`): the server then lets the
/// kernel keep the attributes for no time at all, and the next `read` asks again. Such a text
/// never replaces one that another request made after the change (that one is given instead),
/// and never makes the copy stale: a reply given from the newer text may be held by the kernel
/// until the next change tells it otherwise.
///
/// Reads that do not go through `read` (`splice`, `sendfile`, `mmap`) do not ask for
/// attributes, so they see the text the kernel has until some `read` does.
final class PageCacheCopy: Sendable {
    /// A text as given to the kernel, with its modification time.
    struct Published {
        let text: [UInt8]
        let modified: timespec
        /// Whether no change has been announced since the text was made.
        let settled: Bool
    }

    private struct State {
        var text: [UInt8]?
        var modified = timespec()
        /// The entry's version when `text` was made.
        var version: UInt64 = 0
        /// Whether the kernel may rely on `text` until a change is announced.
        var current = false
    }

    private let state = Mutex(State())

    /// Takes the entry's text now, to give the kernel with its attributes; `nil` once the entry
    /// is removed.
    func publish(_ entry: ProcEntry, now: timespec) -> Published? {
        let version = entry.version
        guard let text = entry.snapshot() else { return nil }
        return state.withLock { state in
            if let newer = state.text, ProcEntry.version(state.version, isAfter: version, upTo: entry.version) {
                // Made before a change that another request's text has already followed: give
                // that one, the newest the kernel may have been given.
                let settled = entry.version == state.version
                if settled { state.current = true }
                return Published(text: newer, modified: state.modified, settled: settled)
            }
            if state.text == nil || text != state.text || version != state.version {
                state.modified = Self.later(than: state.modified, now: now)
            }
            state.text = text
            state.version = version
            // A change announced after this sees the copy current and has the kernel told. An
            // unsettled text leaves `current` as it was: a lasting reply may be held already.
            let settled = entry.version == version
            if settled { state.current = true }
            return Published(text: text, modified: state.modified, settled: settled)
        }
    }

    /// The text published last, for a `READ`; publishes one if none was.
    func published(_ entry: ProcEntry, now: timespec) -> Published? {
        let known = state.withLock { state in
            state.text.map { Published(text: $0, modified: state.modified, settled: state.current) }
        }
        guard let known else { return publish(entry, now: now) }
        return entry.isRemoved ? nil : known
    }

    /// The size of the text published last, if one was.
    var publishedSize: Int? { state.withLock { $0.text?.count } }

    /// Moves the modification time past every one given before, whatever the clock does, and
    /// returns it: the kernel then drops the pages it holds, and reads again.
    func moveModificationTime(now: timespec) -> timespec {
        state.withLock { state in
            state.modified = Self.later(than: state.modified, now: now)
            state.current = false
            return state.modified
        }
    }

    /// The entry announced a change (its version has moved already).
    ///
    /// - Returns: whether the kernel's copy was current until now, so that the kernel must be
    ///   told; `false` when it was stale already.
    func invalidate() -> Bool {
        state.withLock { state in
            defer { state.current = false }
            return state.current
        }
    }

    /// `now`, or one nanosecond past `previous` if the clock has not moved past it.
    private static func later(than previous: timespec, now: timespec) -> timespec {
        if (now.tv_sec, now.tv_nsec) > (previous.tv_sec, previous.tv_nsec) { return now }
        var next = previous
        next.tv_nsec += 1
        if next.tv_nsec >= 1_000_000_000 {
            next.tv_sec += 1
            next.tv_nsec = 0
        }
        return next
    }
}
