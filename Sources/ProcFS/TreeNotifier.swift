import Glibc
import Logging
import Synchronization
import SystemPackage

/// Where the notices to the kernel go: a FUSE session's device, through libfuse's
/// `fuse_lowlevel_notify_*` calls.
protocol KernelNoticeChannel: Sendable {
    /// Writes `notice` to the kernel.
    ///
    /// - Returns: 0, or the negative errno the kernel answered.
    func send(_ notice: ProcFileSystem.KernelNotice) -> Int32
}

/// The one road by which a change in the tree reaches the kernel and the pollers, whatever
/// made it: a timer tick's ``ProcEntry/changed(keepingLength:)``, a knob written through the mount or by
/// ``ProcEntry/store(_:)``, an entry added or removed. It observes the tree, asks the
/// ``ProcFileSystem`` what each change means to the kernel, sends that, and wakes the pollers.
///
/// Notices are written while a gate is open: ``close(timeout:)`` shuts it and waits for the
/// writers inside, so that no notice is written into the session's device once it is closed
/// (its descriptor number may be reused by then).
final class TreeNotifier: Sendable {
    private let fileSystem: ProcFileSystem
    private let channel: any KernelNoticeChannel
    private let logger: Logger
    private let writing = RundownGate()
    private let failureLogged = Atomic<Bool>(false)

    /// Observes `fileSystem`'s tree from now on.
    ///
    /// - Throws: ``FuseServerError/treeServedAlready`` if another notifier observes it: a tree
    ///   is served by one server at a time, and a second one would take the first one's notices.
    init(fileSystem: ProcFileSystem, channel: any KernelNoticeChannel, logger: Logger) throws(FuseServerError) {
        self.fileSystem = fileSystem
        self.channel = channel
        self.logger = logger
        // The tree holds these closures until `close` stops its observing; they hold the
        // notifier, which holds no server.
        let observing = fileSystem.tree.observe(
            as: ObjectIdentifier(self),
            added: { [self] entry in added(entry) },
            changed: { [self] entry, keepingLength in changed(entry, keepingLength: keepingLength) },
            removed: { [self] entry in removed(entry) })
        guard observing else { throw .treeServedAlready }
    }

    /// Stops observing the tree, closes the gate and waits at most `timeout` for the notices
    /// being written.
    ///
    /// - Returns: how many notices were still being written at the timeout.
    func close(timeout: Duration) -> Int {
        fileSystem.tree.stopObserving(as: ObjectIdentifier(self))
        writing.close()
        return writing.drain(timeout: timeout)
    }

    /// Sends `notice` unless the gate is closed.
    ///
    /// - Returns: what the kernel answered (see ``KernelNoticeChannel/send(_:)``); `nil` once
    ///   the gate is closed.
    func send(_ notice: ProcFileSystem.KernelNotice) -> Int32? {
        guard writing.enter() else { return nil }
        defer { writing.leave() }
        return channel.send(notice)
    }

    /// A changed file: the kernel drops what it keeps of it that changed; its pollers wake.
    private func changed(_ entry: ProcEntry, keepingLength: Bool) {
        guard writing.enter() else { return }
        defer { writing.leave() }
        send(fileSystem.noticesOfChange(to: entry, keepingLength: keepingLength), about: entry)
        fileSystem.notifyPollers(of: entry)
    }

    /// A directory added changes its parent's link count, which the kernel caches.
    private func added(_ entry: ProcEntry) {
        guard writing.enter() else { return }
        defer { writing.leave() }
        send(fileSystem.noticesOfAddition(of: entry), about: entry)
    }

    /// A removed entry: the kernel forgets it (see ``ProcFileSystem/noticesOfRemoval(of:)``),
    /// and its pollers wake to `POLLERR|POLLHUP`.
    private func removed(_ entry: ProcEntry) {
        guard writing.enter() else { return }
        defer { writing.leave() }
        send(fileSystem.noticesOfRemoval(of: entry), about: entry)
        fileSystem.notifyPollers(of: entry)
    }

    /// Writes `notices`, logging a failure once. `ENOENT` (the kernel holds nothing to drop) is
    /// normal, and so are `ENODEV`/`ENOTCONN`/`EBADF` while the mount goes away.
    private func send(_ notices: [ProcFileSystem.KernelNotice], about entry: ProcEntry) {
        for notice in notices {
            let result = channel.send(notice)
            guard result != 0, ![ENOENT, ENODEV, ENOTCONN, EBADF].contains(-result) else { continue }
            if !failureLogged.exchange(true, ordering: .relaxed) {
                logger.warning("cannot tell the kernel of a change to \(entry.name) (\(notice)): \(Errno(rawValue: -result)); further failures are not logged")
            }
        }
    }
}
