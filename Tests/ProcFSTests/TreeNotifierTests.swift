@testable import ProcFS
@testable import ProcFSCore
import Glibc
import Logging
import Synchronization
import SystemPackage
import Testing

/// The one road from a change in the tree to the kernel and the pollers, without a mount: the
/// notices are recorded instead of written to a session's device.
@Suite struct TreeNotifierTests {
    /// Keeps the notices it is given, and answers each as a kernel that holds the inode would.
    final class RecordingChannel: KernelNoticeChannel {
        let notices = Mutex<[ProcFileSystem.KernelNotice]>([])
        func send(_ notice: ProcFileSystem.KernelNotice) -> Int32 {
            notices.withLock { $0.append(notice) }
            return 0
        }
        /// The notices sent since the last call.
        func taken() -> [ProcFileSystem.KernelNotice] { notices.withLock { notices in defer { notices = [] }; return notices } }
    }

    /// A knob that announces its changes, looked up, read and polled as a reader of the mount
    /// does, in `mode`.
    struct PolledKnob {
        let tree = ProcTree()
        let fileSystem: ProcFileSystem
        let channel = RecordingChannel()
        let notifier: TreeNotifier
        let knob: ProcEntry
        let mode: ReadMode

        init(_ mode: ReadMode) throws {
            fileSystem = ProcFileSystem(tree: tree, requestedMode: mode, logger: Logger(label: "test"), mounter: .root)
            _ = fileSystem.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true)
            notifier = try TreeNotifier(fileSystem: fileSystem, channel: channel, logger: Logger(label: "test"))
            let value = ProcFileSystemTests.KnobValue()
            knob = try tree.registerIntegerKnob("knob", announcesChanges: true, value: { Int32(value.value.withLock { $0 }) }) {
                new throws(Errno) in value.value.withLock { $0 = Int(new) }
            }
            _ = try fileSystem.lookup(parent: ProcTree.rootInode, name: "knob")
            // The kernel reads the attributes, and so keeps the knob's text or size.
            _ = try fileSystem.attributes(node: knob.inode, handle: nil)
            self.mode = mode
            _ = channel.taken()  // the knob's addition
        }

        /// Opens the knob anew and polls it as a caller that will sleep. (In page-cache mode the
        /// kernel opens files itself: the open is the poll handle's own `kh`.)
        func sleepingPoller(_ number: UInt64) throws -> CountedPollHandle {
            let fileHandle = mode == .directIO ? try fileSystem.open(node: knob.inode, flags: O_RDONLY, caller: .current).handle : 0
            let handle = CountedPollHandle(kernelFileHandle: number)
            let polled = fileSystem.poll(node: knob.inode, fileHandle: fileHandle, handle: handle)
            #expect(polled.result == .success(PollWaiters<any KernelPollHandle>.readable) && polled.release.isEmpty)
            return handle
        }
    }

    /// `ProcEntry.store` ("as `sysctl -w` would") and a knob written through the mount take the
    /// same road: the sleeping poller wakes, and the kernel is told to drop what it keeps of the
    /// knob (its text in page-cache mode, its size in direct_io mode), as for a tick's
    /// `changed()`.
    @Test(arguments: [ReadMode.directIO, .pageCache])
    func aStoreAndAWriteThroughTheMountAnnounceAlike(mode: ReadMode) throws {
        let polled = try PolledKnob(mode)
        let expected: [ProcFileSystem.KernelNotice] = [.attributes(polled.knob.inode)]
        defer { _ = polled.notifier.close(timeout: .zero) }

        let storePoller = try polled.sleepingPoller(1)
        try polled.knob.store("5\n")
        #expect(storePoller.notifications.load(ordering: .relaxed) == 1, "a store wakes the poller")
        #expect(polled.channel.taken() == expected)

        _ = try polled.fileSystem.attributes(node: polled.knob.inode, handle: nil)
        let writePoller = try polled.sleepingPoller(2)
        let written = polled.fileSystem.write(node: polled.knob.inode, bytes: Array("6\n".utf8), offset: 0, flags: O_WRONLY)
        #expect(written == .success(2))
        #expect(writePoller.notifications.load(ordering: .relaxed) == 1, "a write through the mount wakes the poller")
        #expect(polled.channel.taken() == expected)

        _ = try polled.fileSystem.attributes(node: polled.knob.inode, handle: nil)
        let tickPoller = try polled.sleepingPoller(3)
        polled.knob.changed()
        #expect(tickPoller.notifications.load(ordering: .relaxed) == 1, "a changed() wakes the poller")
        #expect(polled.channel.taken() == expected)

        _ = try polled.fileSystem.attributes(node: polled.knob.inode, handle: nil)
        let refusedPoller = try polled.sleepingPoller(4)
        #expect(throws: Errno.invalidArgument) { try polled.knob.store("five\n") }
        #expect(refusedPoller.notifications.load(ordering: .relaxed) == 1, "a refused store is announced too")
        #expect(polled.channel.taken() == expected)
    }

    /// Once closed, the notifier writes nothing more, and the tree may be served again.
    @Test func aClosedNotifierSendsNothing() throws {
        let polled = try PolledKnob(.pageCache)
        #expect(polled.notifier.close(timeout: .seconds(1)) == 0)
        try polled.knob.store("1\n")
        #expect(polled.channel.taken().isEmpty)
        #expect(polled.notifier.send(.attributes(polled.knob.inode)) == nil)
        let another = try TreeNotifier(fileSystem: polled.fileSystem, channel: polled.channel, logger: Logger(label: "test"))
        _ = another.close(timeout: .zero)
    }
}
