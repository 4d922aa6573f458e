import Glibc
import Synchronization

/// The pollers of the tree's files, and what each poll reports.
///
/// A poll reports as a sysctl's does (`proc_sys_poll` in `fs/proc/proc_sysctl.c`), which is
/// also how sysfs wakes its pollers (`kernfs_notify`):
///
/// - an open file of a live entry is always readable and writable (`DEFAULT_POLLMASK`, as
///   `/proc/uptime` reports);
/// - once after each change that the open has not been told of, it also reports
///   `POLLPRI | POLLERR`; the open is told of it by that report;
/// - after the entry is removed, it reports `POLLERR | POLLHUP`.
///
/// An open is known by a key: its `fh` in direct_io mode, and the kernel's own handle of the
/// file (`kh`) in page-cache mode, where the kernel opens files itself. A poll that will sleep
/// leaves a `Handle`, which the server notifies when the entry changes or is removed; the
/// kernel then polls again.
///
/// In page-cache mode no `RELEASE` says when an open ends, so one entry keeps at most
/// ``maximumPollers``: beyond that the longest silent is forgotten, first among those that
/// hold no handle; a forgotten handle is notified, so a poller that still sleeps polls again.
/// A forgotten open that polls again counts changes from then on.
final class PollWaiters<Handle: Sendable>: Sendable {
    /// What a poll of a live entry reports (`DEFAULT_POLLMASK`).
    static var readable: Int32 { Int32(POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM) }
    /// What a poll reports once after a change.
    static var changed: Int32 { readable | Int32(POLLPRI | POLLERR) }
    /// What a poll reports after the entry is removed.
    static var removed: Int32 { Int32(POLLERR | POLLHUP) }
    /// How many opens one entry keeps.
    static var maximumPollers: Int { 1024 }

    private struct Poller {
        /// The entry's version the open has been told of.
        var seen: UInt64
        var handle: Handle?
        /// When it last polled, in polls of this set.
        var lastPoll: UInt64
    }

    private struct State {
        var pollers: [UInt64: [UInt64: Poller]] = [:]
        var polls: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Answers a poll of the open `key` of `entry`.
    ///
    /// - Parameters:
    ///   - since: the entry's version when this open began, for an open not seen before.
    ///   - handle: what to notify when the answer changes, if the caller will sleep.
    /// - Returns: the events to report; the handles the caller must release: a handle this one
    ///   replaces, or this one when nothing will notify it; and the handles of forgotten
    ///   pollers, which the caller must notify.
    func poll(_ entry: ProcEntry, key: UInt64, since: UInt64, handle: Handle?)
        -> (events: Int32, release: [Handle], notify: [Handle])
    {
        state.withLock { state in
            // Read under the lock that wake(_:) takes, which a change takes after it counts
            // itself: either this sees the change, or the change sees the handle kept here.
            let version = entry.version
            guard !entry.isRemoved else {
                let stale = state.pollers[entry.inode]?.removeValue(forKey: key)?.handle
                return (Self.removed, [stale, handle].compactMap { $0 }, [])
            }
            state.polls += 1
            var poller = state.pollers[entry.inode]?[key] ?? Poller(seen: since, handle: nil, lastPoll: 0)
            let replaced = handle == nil ? nil : poller.handle
            if handle != nil { poller.handle = handle }
            poller.lastPoll = state.polls
            let changed = poller.seen != version
            poller.seen = version
            state.pollers[entry.inode, default: [:]][key] = poller
            let forgotten = Self.forgetSilent(in: &state.pollers[entry.inode, default: [:]])
            return (changed ? Self.changed : Self.readable, [replaced].compactMap { $0 }, forgotten)
        }
    }

    /// `entry` changed or was removed: the handles to notify and then release. After a
    /// removal its pollers are forgotten.
    func wake(_ entry: ProcEntry) -> [Handle] {
        state.withLock { state in
            guard !entry.isRemoved else {
                return state.pollers.removeValue(forKey: entry.inode)?.values.compactMap(\.handle) ?? []
            }
            guard var pollers = state.pollers[entry.inode] else { return [] }
            var handles: [Handle] = []
            for key in pollers.keys {
                if let handle = pollers[key]?.handle {
                    handles.append(handle)
                    pollers[key]?.handle = nil
                }
            }
            state.pollers[entry.inode] = pollers
            return handles
        }
    }

    /// The open `key` of the file `inode` was closed: its handle to release, if any.
    func closed(inode: UInt64, key: UInt64) -> Handle? {
        state.withLock { state in
            let poller = state.pollers[inode]?.removeValue(forKey: key)
            if state.pollers[inode]?.isEmpty == true { state.pollers[inode] = nil }
            return poller?.handle
        }
    }

    /// Forgets every poller, at the end of serving: the handles to release.
    func forgetAll() -> [Handle] {
        state.withLock { state in
            defer { state.pollers.removeAll() }
            return state.pollers.values.flatMap { $0.values.compactMap(\.handle) }
        }
    }

    /// How many opens of the file `inode` are known.
    func count(of inode: UInt64) -> Int {
        state.withLock { $0.pollers[inode]?.count ?? 0 }
    }

    /// Forgets pollers beyond ``maximumPollers``, those without a handle first, then the
    /// longest silent: the handles forgotten.
    private static func forgetSilent(in pollers: inout [UInt64: Poller]) -> [Handle] {
        guard pollers.count > maximumPollers else { return [] }
        let order = pollers.sorted { ($0.value.handle != nil ? 1 : 0, $0.value.lastPoll) < ($1.value.handle != nil ? 1 : 0, $1.value.lastPoll) }
        return order.prefix(pollers.count - maximumPollers).compactMap { key, _ in pollers.removeValue(forKey: key)?.handle }
    }
}
