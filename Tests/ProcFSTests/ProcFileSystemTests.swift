@testable import ProcFS
@testable import ProcFSCore
import Glibc
import Logging
import Synchronization
import SystemPackage
import Testing

/// Each FUSE operation's decision, without a mount: what the kernel would be told.
@Suite struct ProcFileSystemTests {
    /// A tree of one of each kind, served in `mode` as the kernel would settle it at INIT.
    final class Served: Sendable {
        let tree = ProcTree()
        let fileSystem: ProcFileSystem
        let file: ProcEntry
        let knob: ProcEntry
        let directory: ProcEntry
        let link: ProcEntry
        let knobBox = KnobValue()
        /// The value the knob holds now.
        var value: Int { knobBox.value.withLock { $0 } }

        init(_ mode: ReadMode) throws {
            fileSystem = ProcFileSystem(tree: tree, requestedMode: mode, logger: Logger(label: "test"), mounter: .root)
            _ = fileSystem.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true)
            file = try tree.register("file", announcesChanges: true) { "text\n" }
            let box = knobBox
            knob = try tree.registerIntegerKnob("knob", value: { Int32(box.value.withLock { $0 }) }) { new throws(Errno) in
                guard new >= 0 else { throw .invalidArgument }
                box.value.withLock { $0 = Int(new) }
            }
            directory = try tree.makeDirectory("directory")
            link = try tree.makeSymlink("link", target: "file")
        }

        /// Looks `name` up in the root as the kernel does, which then holds it.
        func lookUp(_ name: String) throws(Errno) -> ProcFileSystem.Entry {
            try fileSystem.lookup(parent: ProcTree.rootInode, name: name)
        }

        /// Looks up every entry, as the kernel does before it asks anything of one.
        func lookUpAll() throws(Errno) {
            for name in ["file", "knob", "directory", "link"] { _ = try lookUp(name) }
        }
    }

    /// The value behind the knob.
    final class KnobValue: Sendable {
        let value = Mutex(7)
    }

    static let modes: [ReadMode] = [.directIO, .pageCache]

    @Test func theKernelOffersDecideTheReadMode() {
        let fileSystem = ProcFileSystem(tree: ProcTree(), requestedMode: .pageCache, logger: Logger(label: "test"))
        #expect(!fileSystem.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: false))
        #expect(fileSystem.readMode == .directIO)
        #expect(fileSystem.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true))
        #expect(fileSystem.readMode == .pageCache)
    }

    /// The errno table of the type's documentation, which procfs gives on /proc/uptime.
    @Test func refusedOperationsGetProcfsErrnos() {
        let expected: [ProcFileSystem.RefusedOperation: Errno] = [
            .getxattr: .notSupported, .setxattr: .permissionDenied, .removexattr: .permissionDenied,
            .unlink: .permissionDenied, .rmdir: .permissionDenied, .create: .noSuchFileOrDirectory,
            .mknod: .noSuchFileOrDirectory, .mkdir: .noSuchFileOrDirectory, .symlink: .noSuchFileOrDirectory,
            .link: .noSuchFileOrDirectory, .rename: .noSuchFileOrDirectory,
        ]
        #expect(expected.count == ProcFileSystem.RefusedOperation.allCases.count)
        for operation in ProcFileSystem.RefusedOperation.allCases {
            #expect(ProcFileSystem.refusal(of: operation) == expected[operation], "\(operation)")
        }
    }

    @Test(arguments: modes)
    func lookupsFindWhatIsThereAndCountTheKernelsHold(mode: ReadMode) throws {
        let served = try Served(mode)
        #expect(throws: Errno.noSuchFileOrDirectory) { try served.lookUp("missing") }
        #expect(throws: Errno.noSuchFileOrDirectory, "the kernel holds no such parent") {
            try served.fileSystem.lookup(parent: served.directory.inode, name: "x")
        }
        let found = try served.lookUp("file")
        #expect(found.attributes.inode == served.file.inode)
        #expect(found.attributes.mode == S_IFREG | 0o444 && found.attributes.size == 5)
        #expect(found.entryTimeout == ProcFileSystem.entryTimeout)
        #expect(served.fileSystem.nodes.lookups(of: served.file.inode) == 1)
        #expect(throws: Errno.notDirectory) { try served.fileSystem.lookup(parent: served.file.inode, name: "x") }
        served.fileSystem.lookupNotDelivered(found)
        #expect(served.fileSystem.nodes.lookups(of: served.file.inode) == 0, "an undelivered lookup is not held")
        _ = try served.lookUp("file")
        _ = try served.lookUp("file")
        served.fileSystem.forget(node: served.file.inode, lookups: 2)
        #expect(served.fileSystem.nodes.lookups(of: served.file.inode) == 0)
    }

    /// How long the kernel may keep attributes: directories and links until told; a file that
    /// announces its changes from a GETATTR until told, not from a LOOKUP.
    @Test(arguments: modes)
    func attributeTimeoutsFollowWhoAnnouncesChanges(mode: ReadMode) throws {
        let served = try Served(mode)
        try served.lookUpAll()
        let lasting = ProcFileSystem.unchangingAttributeTimeout
        #expect(try served.lookUp("directory").attributes.timeout == lasting)
        #expect(try served.lookUp("link").attributes.timeout == lasting)
        #expect(try served.lookUp("file").attributes.timeout == 0, "a LOOKUP reply may race a change")
        let fileTimeout = try served.fileSystem.attributes(node: served.file.inode, handle: nil).timeout
        #expect(fileTimeout == lasting)
        // The knob does not announce its changes: in direct_io mode its size is 0 (as in
        // procfs) and its attributes never change; the page cache needs the true size.
        let knob = try served.fileSystem.attributes(node: served.knob.inode, handle: nil)
        #expect(knob.timeout == (mode == .pageCache ? 0 : lasting) && knob.size == (mode == .pageCache ? 2 : 0))
        let root = try served.fileSystem.attributes(node: ProcTree.rootInode, handle: nil)
        #expect(root.linkCount == 3 && root.mode == S_IFDIR | 0o555 && root.owner == .root)
        #expect(try served.lookUp("link").attributes.size == 4)
    }

    @Test(arguments: modes)
    func attributeChangesAreRefusedButAKnobMayBeTruncated(mode: ReadMode) throws {
        let served = try Served(mode)
        try served.lookUpAll()
        let fs = served.fileSystem
        #expect(throws: Errno.notPermitted) { try fs.setAttributes(node: served.file.inode, truncates: false) }
        #expect(throws: Errno.notPermitted) { try fs.setAttributes(node: served.knob.inode, truncates: false) }
        #expect(throws: Errno.permissionDenied) { try fs.setAttributes(node: served.file.inode, truncates: true) }
        #expect(throws: Errno.isDirectory) { try fs.setAttributes(node: served.directory.inode, truncates: true) }
        #expect(try fs.setAttributes(node: served.knob.inode, truncates: true).size == (mode == .pageCache ? 2 : 0),
                "truncating changes nothing")
        #expect(throws: Errno.noSuchFileOrDirectory) { try fs.setAttributes(node: 999, truncates: true) }
    }

    @Test func opensFollowTheModeAndTheFilesKind() throws {
        let direct = try Served(.directIO)
        try direct.lookUpAll()
        #expect(throws: Errno.permissionDenied) { try direct.fileSystem.open(node: direct.file.inode, flags: O_WRONLY, caller: .current) }
        #expect(throws: Errno.permissionDenied) { try direct.fileSystem.open(node: direct.file.inode, flags: O_RDONLY | O_TRUNC, caller: .current) }
        let opened = try direct.fileSystem.open(node: direct.knob.inode, flags: O_WRONLY | O_TRUNC, caller: .current)
        #expect(opened.directIO && opened.handle != 0)
        #expect(direct.fileSystem.release(handle: opened.handle) == nil)
        #expect(throws: Errno.ioError, "a released handle reads nothing") {
            try direct.fileSystem.readNow(node: direct.knob.inode, handle: opened.handle, offset: 0, size: 10)
        }

        let cached = try Served(.pageCache)
        try cached.lookUpAll()
        #expect(throws: Errno.noFunction, "ENOSYS: the kernel opens files itself from now on") {
            try cached.fileSystem.open(node: cached.file.inode, flags: O_RDONLY, caller: .current)
        }
        #expect(throws: Errno.notDirectory) { try cached.fileSystem.openDirectory(node: cached.file.inode) }
    }

    @Test func readsAreSeqFileReadsOfTheOpenOrTheKernelsCopy() throws {
        let direct = try Served(.directIO)
        try direct.lookUpAll()
        let opened = try direct.fileSystem.open(node: direct.file.inode, flags: O_RDONLY, caller: .current)
        let first = try direct.fileSystem.readNow(node: direct.file.inode, handle: opened.handle, offset: 0, size: 2)
        let rest = try direct.fileSystem.readNow(node: direct.file.inode, handle: opened.handle, offset: 2, size: 100)
        #expect(String(decoding: first + rest, as: UTF8.self) == "text\n")

        let cached = try Served(.pageCache)
        let size = try cached.lookUp("file").attributes.size
        let page = try cached.fileSystem.readNow(node: cached.file.inode, handle: 0, offset: 0, size: 4096)
        #expect(page.count == size, "READ fills the pages from the text whose size the kernel was given")
    }

    /// A knob takes writes as /proc/sys does, and every write to it is announced after the reply.
    @Test(arguments: modes)
    func writesFollowSysctlWritesStrict(mode: ReadMode) throws {
        let served = try Served(mode)
        try served.lookUpAll()
        let fs = served.fileSystem
        /// The write's result, and whether it announced a change of the knob.
        func write(_ text: String, offset: Int = 0, flags: Int32 = O_WRONLY) -> (result: Result<Int, Errno>, changed: Bool) {
            let before = served.knob.version
            let result = fs.write(node: served.knob.inode, bytes: Array(text.utf8), offset: offset, flags: flags)
            return (result, served.knob.version == before + 1)
        }
        let stored = write("12\n")
        #expect(try stored.result.get() == 3 && stored.changed)
        #expect(served.value == 12)
        let pastZero = write("99\n", offset: 3)
        #expect(try pastZero.result.get() == 3 && served.value == 12, "reported written, nothing changed")
        #expect(pastZero.changed)
        let appended = write("5\n", offset: 3, flags: O_WRONLY | O_APPEND)
        #expect(try appended.result.get() == 2 && served.value == 5, ">> writes at offset 0")
        let partial = write("1 2")
        #expect(try partial.result.get() == 2 && served.value == 1, "1 2 stores 1 and consumes 2")
        let refused = write("-3\n")
        #expect(refused.result == .failure(.invalidArgument) && refused.changed)

        let fileVersion = served.file.version
        let toFile = fs.write(node: served.file.inode, bytes: [49], offset: 0, flags: O_WRONLY)
        #expect(toFile == .failure(.permissionDenied) && served.file.version == fileVersion)
        try served.tree.remove(served.knob)
        #expect(write("1\n").result == .failure(.ioError), "a removed knob's open file writes EIO")
    }

    @Test(arguments: modes)
    func readdirOffsetsResumeWhereTheLastReplyEnded(mode: ReadMode) throws {
        let served = try Served(mode)
        let fs = served.fileSystem
        let opened = try fs.openDirectory(node: ProcTree.rootInode)
        let all = try fs.readDirectory(node: ProcTree.rootInode, handle: opened.handle, offset: 0)
        #expect(all.map(\.name) == [".", "..", "directory", "file", "knob", "link"])
        #expect(all.map(\.nextOffset) == Array(1...6))
        #expect(all.first { $0.name == "directory" }?.type == S_IFDIR)
        try served.tree.register("another") { "" }
        let rest = try fs.readDirectory(node: ProcTree.rootInode, handle: opened.handle, offset: 3)
        #expect(rest.map(\.name) == ["file", "knob", "link"], "an open listing keeps its offsets")
        #expect(try fs.readDirectory(node: ProcTree.rootInode, handle: opened.handle, offset: 0).count == 7, "rewinddir lists anew")
        fs.releaseDirectory(handle: opened.handle)
        #expect(throws: Errno.badFileDescriptor) { try fs.readDirectory(node: ProcTree.rootInode, handle: opened.handle, offset: 0) }
    }

    /// What the kernel is told of changes: an announced change of a file whose text (in
    /// page-cache mode) or size (in direct_io mode, from a GETATTR) it keeps, once until it asks
    /// again; nothing for a file it does not hold.
    @Test func changesAreNoticedOnlyWhereTheKernelHoldsACurrentCopy() throws {
        let cached = try Served(.pageCache)
        #expect(cached.fileSystem.noticesOfChange(to: cached.file).isEmpty, "the kernel holds nothing yet")
        _ = try cached.lookUp("file")
        #expect(cached.fileSystem.noticesOfChange(to: cached.file) == [.attributes(cached.file.inode)])
        #expect(cached.fileSystem.noticesOfChange(to: cached.file).isEmpty, "its copy is stale already")
        _ = try cached.fileSystem.attributes(node: cached.file.inode, handle: nil)
        #expect(cached.fileSystem.noticesOfChange(to: cached.file) == [.attributes(cached.file.inode)])

        let direct = try Served(.directIO)
        #expect(direct.fileSystem.noticesOfChange(to: direct.file).isEmpty, "the kernel holds nothing yet")
        _ = try direct.lookUp("file")
        #expect(direct.fileSystem.noticesOfChange(to: direct.file).isEmpty, "a LOOKUP's size is not kept")
        _ = try direct.fileSystem.attributes(node: direct.file.inode, handle: nil)
        #expect(direct.fileSystem.noticesOfChange(to: direct.file) == [.attributes(direct.file.inode)])
        #expect(direct.fileSystem.noticesOfChange(to: direct.file).isEmpty, "its size is stale already")
        _ = try direct.fileSystem.attributes(node: direct.file.inode, handle: nil)
        #expect(direct.fileSystem.noticesOfChange(to: direct.file, keepingLength: true).isEmpty, "the size it keeps is true")
        #expect(direct.fileSystem.noticesOfChange(to: direct.file) == [.attributes(direct.file.inode)])
        _ = try cached.fileSystem.attributes(node: cached.file.inode, handle: nil)
        #expect(cached.fileSystem.noticesOfChange(to: cached.file, keepingLength: true) == [.attributes(cached.file.inode)], "its pages are stale")
        let opened = try direct.fileSystem.open(node: direct.file.inode, flags: O_RDONLY, caller: .current)
        #expect(try direct.fileSystem.attributes(node: direct.file.inode, handle: opened.handle).timeout == 0, "an open's size")
        #expect(direct.fileSystem.noticesOfChange(to: direct.file).isEmpty)
    }

    /// A size made while the file announced a change is not kept, and does not undo a kept one:
    /// the change that follows it is still told.
    @Test func aSizeMadeDuringAChangeIsNotKept() throws {
        let tree = ProcTree()
        let fileSystem = ProcFileSystem(tree: tree, requestedMode: .directIO, logger: Logger(label: "test"), mounter: .root)
        _ = fileSystem.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true)
        let changing = Mutex(false)
        // Weak: the tree holds this closure, and a strong capture would make a cycle.
        let file = try tree.register("file", announcesChanges: true) { [weak tree] () -> String in
            guard changing.withLock({ $0 }), let entry = tree?.entry(atPath: "file") else { return "text\n" }
            entry.changed()
            return "longer text\n"
        }
        _ = try fileSystem.lookup(parent: ProcTree.rootInode, name: "file")
        let settled = try fileSystem.attributes(node: file.inode, handle: nil)
        #expect(settled.timeout == ProcFileSystem.unchangingAttributeTimeout && settled.size == 5)
        changing.withLock { $0 = true }
        let unsettled = try fileSystem.attributes(node: file.inode, handle: nil)
        #expect(unsettled.timeout == 0 && unsettled.size == 12)
        #expect(fileSystem.noticesOfChange(to: file) == [.attributes(file.inode)], "the size kept before")
    }

    @Test func additionsAndRemovalsAreNoticedAsTheKernelNeeds() throws {
        let served = try Served(.directIO)
        let fs = served.fileSystem
        // Any change of the entries of a directory the kernel holds: its link count, its
        // modification time and the listing it may have cached.
        #expect(fs.noticesOfAddition(of: served.file) == [.attributesAndContents(ProcTree.rootInode)])
        #expect(fs.noticesOfAddition(of: served.directory) == [.attributesAndContents(ProcTree.rootInode)])
        #expect(fs.noticesOfRemoval(of: served.file) == [
            .name(parent: ProcTree.rootInode, name: "file"), .attributesAndContents(ProcTree.rootInode),
        ])
        let inside = try served.tree.register("inside", in: served.directory) { "" }
        #expect(fs.noticesOfAddition(of: inside).isEmpty, "the kernel holds nothing of the directory")
        _ = try served.lookUp("directory")
        #expect(fs.noticesOfAddition(of: inside) == [.attributesAndContents(served.directory.inode)])
        #expect(fs.noticesOfRemoval(of: served.directory) == [
            .name(parent: ProcTree.rootInode, name: "directory"), .attributesAndContents(ProcTree.rootInode),
            .attributesAndContents(served.directory.inode),
        ])

        // A directory's modification time moves with each change of its entries.
        let before = try fs.attributes(node: served.directory.inode, handle: nil).modified
        try served.tree.remove(inside)
        #expect(nanoseconds(try fs.attributes(node: served.directory.inode, handle: nil).modified) == nanoseconds(before) + 1)
    }

    /// A dynamic directory is computed at each lookup, listing and `stat`; the kernel keeps no
    /// name in it and is told nothing when it changes (it holds the directory locked while it
    /// looks in, so a notice there would wait for ever).
    @Test(arguments: modes)
    func aDynamicDirectoryIsComputedWhenLookedInAndNeverNoticed(mode: ReadMode) throws {
        let served = try Served(mode)
        let fs = served.fileSystem
        let names = Mutex(["a"])
        let dynamic = try served.tree.makeDynamicDirectory("dynamic", names: { names.withLock { $0 } }) {
            tree, name, directory in
            let files = try tree.makeDirectory(name, in: directory)
            try tree.register("name", in: files) { name + "\n" }
        }
        #expect(fs.noticesOfAddition(of: dynamic) == [.attributesAndContents(ProcTree.rootInode)])
        let found = try served.lookUp("dynamic")
        #expect(found.attributes.timeout == 0, "its link count changes with no notice")
        let a = try fs.lookup(parent: dynamic.inode, name: "a")
        #expect(a.entryTimeout == 0 && a.attributes.mode == S_IFDIR | 0o555)
        #expect(try fs.lookup(parent: dynamic.inode, name: "a").attributes.inode == a.attributes.inode,
                "an entry whose name stays keeps its inode number")
        let name = try fs.lookup(parent: a.attributes.inode, name: "name")
        #expect(name.entryTimeout == ProcFileSystem.entryTimeout, "below the dynamic level names are kept")
        #expect(throws: Errno.noSuchFileOrDirectory) { try fs.lookup(parent: dynamic.inode, name: "b") }

        names.withLock { $0 = ["b", "c", "b", "bad/name"] }
        #expect(try fs.attributes(node: dynamic.inode, handle: nil).linkCount == 4, "a stat computes it too")
        let opened = try fs.openDirectory(node: dynamic.inode)
        #expect(try fs.readDirectory(node: dynamic.inode, handle: opened.handle, offset: 0).map(\.name) == [".", "..", "b", "c"])
        #expect(throws: Errno.noSuchFileOrDirectory) { try fs.lookup(parent: dynamic.inode, name: "a") }
        let gone = try #require(fs.nodes.entry(a.attributes.inode))
        #expect(gone.isRemoved)
        #expect(fs.noticesOfRemoval(of: gone) == [.attributesAndContents(a.attributes.inode)], "no name to drop, no parent to refresh")
        let goneName = try #require(fs.nodes.entry(name.attributes.inode))
        #expect(fs.noticesOfRemoval(of: goneName) == [
            .name(parent: a.attributes.inode, name: "name"), .attributesAndContents(a.attributes.inode),
            .attributes(name.attributes.inode),
        ])
    }

    /// A file below a name its dynamic directory no longer holds reads and writes `ESRCH`, as a
    /// held `/proc/<pid>/status` does once the process is gone, before and after a lookup
    /// removes it; its content closure is not called again. Its attributes still answer; in
    /// page-cache mode with a time never given before, so that the kernel drops its copy and
    /// reads. Removed while its name is still held (as when the server stops), it reads EIO.
    @Test(arguments: modes)
    func aFileOfAGoneDynamicEntryReadsESRCH(mode: ReadMode) throws {
        let served = try Served(mode)
        let fs = served.fileSystem
        let ids = Mutex([7, 8])
        let made = Atomic<Int>(0)
        let workers = try served.tree.makeDynamicDirectory("workers", names: { ids.withLock { $0 } }) { tree, id, directory in
            let worker = try tree.makeDirectory("\(id)", in: directory)
            try tree.register("state", in: worker) {
                made.add(1, ordering: .relaxed)
                return "worker \(id)\n"
            }
            try tree.registerKnob("nice", in: worker, content: { "0\n" }) { _ in }
        }
        _ = try served.lookUp("workers")
        let seven = try fs.lookup(parent: workers.inode, name: "7")
        let state = try fs.lookup(parent: seven.attributes.inode, name: "state")
        let nice = try fs.lookup(parent: seven.attributes.inode, name: "nice")
        let handle = mode == .directIO ? try fs.open(node: state.attributes.inode, flags: O_RDONLY, caller: .current).handle : 0
        #expect(Array(try fs.readNow(node: state.attributes.inode, handle: handle, offset: 0, size: 100)) == Array("worker 7\n".utf8))
        let before = try fs.attributes(node: state.attributes.inode, handle: nil)
        let calls = made.load(ordering: .relaxed)

        ids.withLock { $0 = [8] }
        #expect(throws: Errno.noSuchProcess) { try fs.readNow(node: state.attributes.inode, handle: handle, offset: 0, size: 100) }
        #expect(fs.write(node: nice.attributes.inode, bytes: Array("1\n".utf8), offset: 0, flags: O_WRONLY) == .failure(.noSuchProcess))
        let after = try fs.attributes(node: state.attributes.inode, handle: nil)
        // The page cache reads only below the size: there it is what the kernel holds.
        #expect(after.timeout == 0 && after.size == (mode == .pageCache ? before.size : 0))
        #expect((nanoseconds(after.modified) != nanoseconds(before.modified)) == (mode == .pageCache))
        #expect(throws: Errno.noSuchFileOrDirectory, "a lookup finds it gone") { try fs.lookup(parent: workers.inode, name: "7") }
        #expect(throws: Errno.noSuchProcess, "removed now, it still reads ESRCH") {
            try fs.readNow(node: state.attributes.inode, handle: handle, offset: 0, size: 100)
        }
        #expect(made.load(ordering: .relaxed) == calls, "the content closure of a gone entry was called")

        let eight = try fs.lookup(parent: workers.inode, name: "8")
        let eightState = try fs.lookup(parent: eight.attributes.inode, name: "state")
        try served.tree.remove(workers)
        #expect(throws: Errno.ioError, "removed with its name held") {
            try fs.readNow(node: eightState.attributes.inode, handle: 0, offset: 0, size: 100)
        }
        #expect(!served.file.isOrphaned && !served.file.isBelowDynamicDirectory)
    }

    /// A file whose text depends on who opens it reads as its opener, has size 0, and is never
    /// put in the kernel's page cache, which keeps one text for all.
    @Test func aPerCallerFileReadsAsItsOpener() throws {
        let served = try Served(.directIO)
        let fs = served.fileSystem
        let me = try served.tree.registerPerCaller("self") { "\($0.uid) \($0.gid) \($0.pid)\n" }
        let found = try served.lookUp("self")
        #expect(found.attributes.size == 0 && found.attributes.timeout == ProcFileSystem.unchangingAttributeTimeout)
        let first = try fs.open(node: me.inode, flags: O_RDONLY, caller: ProcCaller(uid: 1000, gid: 100, pid: 42))
        let second = try fs.open(node: me.inode, flags: O_RDONLY, caller: ProcCaller(uid: 0, gid: 0, pid: 7))
        #expect(Array(try fs.readNow(node: me.inode, handle: first.handle, offset: 0, size: 100)) == Array("1000 100 42\n".utf8))
        #expect(Array(try fs.readNow(node: me.inode, handle: second.handle, offset: 0, size: 100)) == Array("0 0 7\n".utf8))
        #expect(me.isPerCaller && !served.file.isPerCaller)
        #expect(me.snapshot() == Array("\(geteuid()) \(getegid()) \(getpid())\n".utf8), "outside a request: this process")

        // Asked for the page cache, a tree that holds one is served in direct_io mode.
        let cached = ProcFileSystem(tree: served.tree, requestedMode: .pageCache, logger: Logger(label: "test"))
        #expect(cached.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true), "for the listings")
        #expect(cached.readMode == .directIO)
        // One added in page-cache mode fails its reads rather than show one caller's text to another.
        let late = try Served(.pageCache)
        let lateSelf = try late.tree.registerPerCaller("self") { "\($0.pid)\n" }
        _ = try late.lookUp("self")
        #expect(try late.fileSystem.attributes(node: lateSelf.inode, handle: nil).size == 0)
        #expect(throws: Errno.ioError) { try late.fileSystem.readNow(node: lateSelf.inode, handle: 0, offset: 0, size: 100) }
    }

    /// A file whose text an async closure makes is read by awaiting it, outside the request
    /// thread; every other file is answered at once. Its size is 0, and the page cache is not
    /// used for a tree that holds one.
    @Test func anAwaitedFileIsAnsweredLater() async throws {
        let served = try Served(.directIO)
        let fs = served.fileSystem
        let awaited = try served.tree.registerAwaiting("awaited") {
            await Task.yield()
            return "made later\n"
        }
        #expect(awaited.isAwaited && !served.file.isAwaited && awaited.snapshot() == nil)
        #expect(await awaited.awaitedSnapshot() == Array("made later\n".utf8))
        #expect(try served.lookUp("awaited").attributes.size == 0)
        let opened = try fs.open(node: awaited.inode, flags: O_RDONLY, caller: .current)
        guard case .awaiting(let first) = try fs.read(node: awaited.inode, handle: opened.handle, offset: 0, size: 5) else {
            Issue.record("the read of an async text was answered at once")
            return
        }
        #expect(Array(try await first()) == Array("made ".utf8))
        guard case .awaiting(let rest) = try fs.read(node: awaited.inode, handle: opened.handle, offset: 5, size: 100) else {
            Issue.record("the read of an async text was answered at once")
            return
        }
        #expect(Array(try await rest()) == Array("later\n".utf8), "the reads that continue it stay in one text")
        _ = try served.lookUp("file")
        let file = try fs.open(node: served.file.inode, flags: O_RDONLY, caller: .current)
        #expect(Array(try fs.readNow(node: served.file.inode, handle: file.handle, offset: 0, size: 100)) == Array("text\n".utf8))

        let cached = ProcFileSystem(tree: served.tree, requestedMode: .pageCache, logger: Logger(label: "test"))
        #expect(cached.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true), "for the listings")
        try served.tree.remove(awaited)
        guard case .awaiting(let removed) = try fs.read(node: awaited.inode, handle: opened.handle, offset: 0, size: 5) else {
            Issue.record("the read of an async text was answered at once")
            return
        }
        await #expect(throws: Errno.ioError, "a removed entry reads EIO") { try await removed() }
    }

    /// A file of bytes reads them as they are, NUL bytes and all, and opens share the owner's
    /// array rather than copy it.
    @Test func byteContentIsReadAsItIs() throws {
        let served = try Served(.directIO)
        let bytes: [UInt8] = [0, 1, 2, 0xff, 0, 10]
        let file = try served.tree.registerBytes("bytes") { bytes }
        _ = try served.lookUp("bytes")
        let opened = try served.fileSystem.open(node: file.inode, flags: O_RDONLY, caller: .current)
        #expect(Array(try served.fileSystem.readNow(node: file.inode, handle: opened.handle, offset: 0, size: 100)) == bytes)
        let shared = try #require(file.snapshot())
        #expect(shared.withUnsafeBufferPointer { $0.baseAddress } == bytes.withUnsafeBufferPointer { $0.baseAddress },
                "the snapshot is the owner's array, not a copy")
    }

    /// A poll of a file that announces nothing keeps no poller, in either mode: it reports what
    /// /proc/uptime does, and the handle is given back at once, as nothing would ever wake it.
    /// A file that announces its changes keeps its poller's handle until a change, and so does
    /// every knob, whose writes are announced (the served knob is not registered as announcing).
    @Test(arguments: modes)
    func onlyFilesThatAnnounceChangesAndKnobsKeepPollers(mode: ReadMode) throws {
        let served = try Served(mode)
        let quiet = try served.tree.register("quiet") { "same\n" }
        _ = try served.lookUp("quiet")
        try served.lookUpAll()
        let fs = served.fileSystem
        #expect(!served.knob.announcesChanges)
        for (number, entry) in [(1, quiet), (2, served.file), (3, served.knob)] {
            // In page-cache mode the kernel opens files itself: an open is its own handle (kh).
            let fileHandle = mode == .directIO ? try fs.open(node: entry.inode, flags: O_RDONLY, caller: .current).handle : 0
            let handle = CountedPollHandle(kernelFileHandle: UInt64(number))
            let polled = fs.poll(node: entry.inode, fileHandle: fileHandle, handle: handle)
            #expect(polled.result == .success(PollWaiters<any KernelPollHandle>.readable))
            if entry === quiet {
                #expect(polled.release.count == 1 && polled.release.first as? CountedPollHandle === handle,
                        "the handle of a file that announces nothing is given back")
            } else {
                #expect(polled.release.isEmpty, "the handle of a file that announces changes is kept")
            }
            #expect(polled.notify.isEmpty)
        }
    }

    /// A server that takes over a mount answers for what another server gave the kernel:
    /// nodes found in its own tree (built the same way) by number, open files opened anew on
    /// first use; its own file handles are never the other's, and it gives no inode number the
    /// other gave.
    @Test func aServerTakingOverAnswersForAnothersNodesAndOpens() throws {
        let carried = try CarriedState()
        func build() throws -> (ProcTree, ProcEntry) {
            let tree = ProcTree()
            let file = try tree.register("file", announcesChanges: true) { "text\n" }
            return (tree, file)
        }
        let (firstTree, firstFile) = try build()
        let first = ProcFileSystem(
            tree: firstTree, requestedMode: .directIO, logger: Logger(label: "test"), takingOver: (carried, 1))
        _ = first.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true)
        first.succession?.numberTree()
        _ = try first.lookup(parent: ProcTree.rootInode, name: "file")
        let opened = try first.open(node: firstFile.inode, flags: O_RDONLY, caller: .current)
        let late = try firstTree.register("late") { "late\n" }
        _ = try first.lookup(parent: ProcTree.rootInode, name: "late")

        let (secondTree, secondFile) = try build()
        let second = ProcFileSystem(
            tree: secondTree, requestedMode: .directIO, logger: Logger(label: "test"), takingOver: (carried, 2))
        _ = second.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true)
        second.succession?.numberTree()
        #expect(secondFile.inode == firstFile.inode, "the same tree, built the same way, has the same numbers")
        #expect(try second.attributes(node: firstFile.inode, handle: nil).inode == firstFile.inode)
        #expect(Array(try second.readNow(node: firstFile.inode, handle: opened.handle, offset: 0, size: 100)) == Array("text\n".utf8))
        #expect(carried.texts?.taken(by: opened.handle)?.text == Array("text\n".utf8), "the text it read is kept for the next")
        #expect(second.release(handle: opened.handle) == nil, "the other server's open is released here")
        #expect(carried.texts?.taken(by: opened.handle) == nil, "with the text it kept")
        let own = try second.open(node: secondFile.inode, flags: O_RDONLY, caller: .current)
        #expect(own.handle >> Succession.serverShift == 2 && opened.handle >> Succession.serverShift == 1)
        let added = try secondTree.register("new") { "new\n" }
        #expect(added.inode > late.inode, "a number the first server gave the kernel is not given again")
    }

    /// A reader inside a text when the server is replaced gets the rest of that text from the
    /// next server, though the text has grown by a digit meanwhile.
    @Test func aServerTakingOverGoesOnWithTheTextAReaderIsInside() throws {
        let carried = try CarriedState()
        let count = CountBox()
        func serve(_ server: UInt64) throws -> (ProcFileSystem, ProcEntry) {
            let tree = ProcTree()
            let file = try tree.register("sched", announcesChanges: true) { "Timer was called \(count.value.load(ordering: .relaxed)) times so far\n" }
            let served = ProcFileSystem(tree: tree, requestedMode: .directIO, logger: Logger(label: "test"), takingOver: (carried, server))
            _ = served.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true)
            return (served, file)
        }
        let (first, file) = try serve(1)
        let inside = try first.open(node: file.inode, flags: O_RDONLY, caller: .current).handle
        let atEnd = try first.open(node: file.inode, flags: O_RDONLY, caller: .current).handle
        #expect(try first.readNow(node: file.inode, handle: inside, offset: 0, size: 1) .elementsEqual("T".utf8))
        #expect(try first.readNow(node: file.inode, handle: atEnd, offset: 0, size: 4096).count == 33)
        count.value.store(100, ordering: .relaxed)

        let (second, _) = try serve(2)
        let rest = try second.readNow(node: file.inode, handle: inside, offset: 1, size: 4096)
        #expect(String(decoding: rest, as: UTF8.self) == "imer was called 99 times so far\n")
        #expect(try second.readNow(node: file.inode, handle: atEnd, offset: 33, size: 4096).isEmpty, "the end of the same text")
        #expect(try second.readNow(node: file.inode, handle: atEnd, offset: 0, size: 4096).count == 34, "and from 0 the new one")
    }

    /// A removed entry the kernel still holds answers as procfs does.
    @Test(arguments: modes)
    func aRemovedEntryAnswersAsProcfsDoes(mode: ReadMode) throws {
        let served = try Served(mode)
        let fs = served.fileSystem
        _ = try served.lookUp("file")
        _ = try served.lookUp("directory")
        try served.tree.remove(served.file)
        try served.tree.remove(served.directory)
        #expect(throws: Errno.noSuchFileOrDirectory) { try served.lookUp("file") }
        #expect(throws: Errno.ioError) { try fs.attributes(node: served.file.inode, handle: nil) }
        // A held directory still answers, as procfs's does, with a new modification time: it
        // lists nothing now, so a listing the kernel cached is stale.
        let removedDirectory = try fs.attributes(node: served.directory.inode, handle: nil)
        #expect(removedDirectory.linkCount == 2 && nanoseconds(removedDirectory.modified) > nanoseconds(fs.createdAt))
        let opened = try fs.openDirectory(node: ProcTree.rootInode)
        #expect(try fs.readDirectory(node: ProcTree.rootInode, handle: opened.handle, offset: 0).map(\.name) == [".", "..", "knob", "link"])
        #expect(throws: Errno.noSuchFileOrDirectory) { try fs.lookup(parent: served.directory.inode, name: "x") }
        #expect(throws: Errno.noSuchFileOrDirectory) { try fs.open(node: served.file.inode, flags: O_RDONLY, caller: .current) }
        let polled = fs.poll(node: served.file.inode, fileHandle: 0, handle: nil)
        #expect(polled.result == .success(Int32(POLLERR | POLLHUP)))
    }
}

/// The kernel's lookups, one node per entry it holds (libfuse's passthrough_ll.c).
@Suite struct NodeTableTests {
    @Test func aNodeLastsFromTheFirstLookupToTheLastForget() throws {
        let tree = ProcTree()
        let nodes = NodeTable(root: tree.root)
        let file = try tree.register("file") { "" }
        #expect(nodes.entry(ProcTree.rootInode) === tree.root, "the kernel holds the root without a lookup")
        #expect(nodes.entry(file.inode) == nil)
        #expect(nodes.lookedUp(file, caching: .nothing) != nil && nodes.lookedUp(file, caching: .nothing) != nil)
        #expect(nodes.lookups(of: file.inode) == 2 && nodes.entry(file.inode) === file)
        nodes.forget(file.inode, count: 1)
        #expect(nodes.entry(file.inode) === file)
        nodes.forget(file.inode, count: 1)
        #expect(nodes.entry(file.inode) == nil && nodes.lookups(of: file.inode) == 0)
        nodes.forget(ProcTree.rootInode, count: 5)
        #expect(nodes.entry(ProcTree.rootInode) === tree.root, "FORGET of the root keeps it")
    }

    /// A removed entry is not handed to the kernel again, but stays while the kernel holds it,
    /// so its open files answer EIO, as in procfs.
    @Test func aRemovedEntryStaysUntilForgottenAndIsNotLookedUpAgain() throws {
        let tree = ProcTree()
        let nodes = NodeTable(root: tree.root)
        let held = try tree.makeDirectory("held")
        #expect(nodes.lookedUp(held, caching: .nothing) != nil)
        try tree.remove(held)
        #expect(nodes.lookedUp(held, caching: .nothing) == nil)
        #expect(nodes.entry(held.inode) === held && nodes.lookups(of: held.inode) == 1)
        nodes.forget(held.inode, count: 1)
        #expect(nodes.entry(held.inode) == nil)
    }

    @Test func onlyFilesInPageCacheModeKeepACopy() throws {
        let tree = ProcTree()
        let nodes = NodeTable(root: tree.root)
        let file = try tree.register("file") { "" }
        let knob = try tree.registerKnob("knob", content: { "" }) { _ throws(Errno) in }
        let directory = try tree.makeDirectory("directory")
        let direct = try tree.register("direct") { "" }
        for entry in [file, knob, directory] { #expect(nodes.lookedUp(entry, caching: .pages) != nil) }
        #expect(nodes.lookedUp(direct, caching: .nothing) != nil)
        #expect(nodes.copy(of: file.inode) != nil && nodes.copy(of: knob.inode) != nil)
        #expect(nodes.copy(of: directory.inode) == nil && nodes.copy(of: direct.inode) == nil)
        #expect(nodes.copy(of: 999) == nil)
        #expect(nodes.keptAttributes(of: file.inode) == nil, "the page cache keeps the size itself")
        let kept = try tree.register("kept", announcesChanges: true) { "" }
        for entry in [kept, directory] { #expect(nodes.lookedUp(entry, caching: .attributes) != nil) }
        #expect(nodes.keptAttributes(of: kept.inode) != nil && nodes.copy(of: kept.inode) == nil)
        #expect(nodes.keptAttributes(of: directory.inode) == nil)
    }
}

@Suite struct FuseServerTests {
    /// A tree has one observer, so one server: a second is refused while the first lives, and
    /// its refusal leaves the first one's notices alone.
    @Test func aTreeIsServedByOneServerAtATime() throws {
        let tree = ProcTree()
        let logger = Logger(label: "test")
        var first: FuseServer? = try FuseServer(tree: tree, options: [], logger: logger)
        #expect {
            _ = try FuseServer(tree: tree, options: [], logger: logger)
        } throws: { error in
            guard case .treeServedAlready = error as? FuseServerError else { return false }
            return true
        }
        let another = tree.observe(as: ObjectIdentifier(tree), added: { _ in }, changed: { _, _ in }, removed: { _ in })
        #expect(!another, "the first server still observes the tree")
        withExtendedLifetime(first) {}
        first = nil
        _ = try FuseServer(tree: tree, options: [], logger: logger)
    }
}

extension ProcFileSystem {
    /// A read that must be answered at once, as every read but one of an async text is.
    func readNow(node: UInt64, handle: UInt64, offset: Int, size: Int) throws(Errno) -> ArraySlice<UInt8> {
        switch try read(node: node, handle: handle, offset: offset, size: size) {
        case .bytes(let bytes): return bytes
        case .awaiting:
            Issue.record("a read that should be answered at once awaits")
            return []
        }
    }
}

/// `time` in nanoseconds.
func nanoseconds(_ time: timespec) -> Int { time.tv_sec * 1_000_000_000 + time.tv_nsec }

/// A poll handle that stands for itself and counts its notifications: the tests look at which
/// handles come back, and which are woken.
final class CountedPollHandle: KernelPollHandle {
    let kernelFileHandle: UInt64
    let notifications = Atomic<Int>(0)
    init(kernelFileHandle: UInt64) { self.kernelFileHandle = kernelFileHandle }
    func notify() { notifications.add(1, ordering: .relaxed) }
    func release() {}
}

/// A count that a test sets and a text closure reads.
final class CountBox: Sendable {
    let value = Atomic<Int>(99)
}
