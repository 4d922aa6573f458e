import Dispatch
import Glibc
@testable import ProcFS
@testable import ProcFSCore
import Synchronization
import Testing
import SystemPackage

@Suite struct ProcTreeTests {
    @Test func versionsCompareAcrossTheWrapOfTheirCount() {
        let last = UInt64.max >> 26
        #expect(ProcEntry.version(5, isAfter: 3, upTo: 7) && ProcEntry.version(7, isAfter: 3, upTo: 7))
        #expect(!ProcEntry.version(3, isAfter: 3, upTo: 7) && !ProcEntry.version(8, isAfter: 3, upTo: 7))
        #expect(!ProcEntry.version(2, isAfter: 3, upTo: 7), "a version from before, however long before")
        #expect(ProcEntry.version(0, isAfter: last, upTo: 2) && ProcEntry.version(last, isAfter: last - 1, upTo: 1), "0 follows the last version")
        #expect(!ProcEntry.version(last, isAfter: 0, upTo: 2), "a version from before the wrap")
    }

    @Test func registeredEntriesAreFoundByNameAndPath() throws {
        let tree = ProcTree()
        let b = try tree.register("b", permissions: FilePermissions(rawValue: 0o400), owner: .root) { "B\n" }
        let a = try tree.register("a") { "A\n" }
        let directory = try tree.makeDirectory("d")
        let nested = try tree.register("n", in: directory) { "N\n" }
        #expect(a.inode > ProcTree.rootInode && b.inode > ProcTree.rootInode)
        #expect(a.inode != b.inode)
        #expect(tree.entry(named: "a") === a)
        #expect(tree.entry(atPath: "d/n") === nested)
        #expect(tree.entry(atPath: "") === tree.root)
        #expect(tree.entry(named: "n") == nil, "n is in d, not in the root")
        #expect(nested.parentInode == directory.inode)
        #expect(b.permissions.rawValue == 0o400 && b.owner == .root && a.owner == nil)
        #expect(tree.children().map(\.name) == ["a", "b", "d"], "sorted by name, as procfs lists")
        #expect(a.snapshot() == Array("A\n".utf8))
        #expect(directory.snapshot() == nil)
    }

    @Test(arguments: ["", ".", "..", "a/b", String(repeating: "x", count: 256)])
    func rejectsBadNames(name: String) {
        #expect(throws: ProcTreeError.invalidName(name)) { try ProcTree().register(name) { "" } }
    }

    @Test func rejectsADuplicateNameAndAFileAsParent() throws {
        let tree = ProcTree()
        let file = try tree.register("a") { "" }
        #expect(throws: ProcTreeError.exists("a")) { try tree.makeDirectory("a") }
        #expect(throws: ProcTreeError.notADirectory("a")) { try tree.register("b", in: file) { "" } }
        let directory = try tree.makeDirectory("d")
        try tree.register("a", in: directory) { "" }
        try tree.remove(directory)
        #expect(throws: ProcTreeError.notFound("d")) { try tree.register("c", in: directory) { "" } }
    }

    @Test func directoriesCountTheirSubdirectories() throws {
        let tree = ProcTree()
        let outer = try tree.makeDirectory("outer")
        try tree.makeDirectory("one", in: outer)
        try tree.makeDirectory("two", in: outer)
        try tree.register("file", in: outer) { "" }
        try tree.makeSymlink("link", in: outer, target: "one")
        #expect(tree.subdirectoryCount(of: outer) == 2)
        #expect(tree.subdirectoryCount(of: tree.root) == 1)
        try tree.remove("one", in: outer)
        #expect(tree.subdirectoryCount(of: outer) == 1)
    }

    @Test func symlinksKeepTheirTarget() throws {
        let link = try ProcTree().makeSymlink("self", target: "../proc/self")
        #expect(link.kind == .symlink)
        #expect(link.symlinkTarget == "../proc/self")
        #expect(link.snapshot() == nil)
    }

    @Test func knobsStoreWhatTheirClosureAcceptsAndRefuseTheRest() throws {
        let tree = ProcTree()
        let value = Mutex(1)
        let knob = try tree.registerKnob("level", content: { "\(value.withLock { $0 })\n" }) { text throws(Errno) in
            guard let level = Int(text), (0...9).contains(level) else { throw .invalidArgument }
            value.withLock { $0 = level }
        }
        #expect(knob.kind == .knob && knob.permissions.rawValue == 0o644)
        try knob.store("7")
        #expect(knob.snapshot() == Array("7\n".utf8))
        #expect(throws: Errno.invalidArgument) { try knob.store("10") }
        #expect(throws: Errno.invalidArgument) { try knob.store("seven") }
        #expect(value.withLock { $0 } == 7)
        let file = try tree.register("file") { "" }
        #expect(throws: Errno.permissionDenied) { try file.store("1") }
        try tree.remove(knob)
        #expect(throws: Errno.ioError) { try knob.store("1") }
    }

    @Test func removalHidesTheEntryAndStopsItsCallbacks() throws {
        let tree = ProcTree()
        let entry = try tree.register("a") { "A\n" }
        try tree.remove("a")
        #expect(tree.entry(named: "a") == nil)
        #expect(entry.isRemoved)
        #expect(entry.snapshot() == nil)
        #expect(throws: ProcTreeError.notFound("a")) { try tree.remove("a") }
        #expect(throws: ProcTreeError.notFound("a")) { try tree.remove(entry) }
        #expect(throws: ProcTreeError.invalidName("")) { try tree.remove(tree.root) }
    }

    @Test func removingADirectoryRemovesItsSubtree() throws {
        let tree = ProcTree()
        let removed = Mutex<[String]>([])
        let observing = tree.observe(
            as: ObjectIdentifier(tree), added: { _ in }, changed: { _, _ in },
            removed: { entry in removed.withLock { $0.append(entry.name) } })
        #expect(observing)
        let top = try tree.makeDirectory("top")
        let middle = try tree.makeDirectory("middle", in: top)
        let leaf = try tree.register("leaf", in: middle) { "x\n" }
        try tree.register("kept") { "" }
        try tree.remove(top)
        #expect(removed.withLock { $0 }.first == "top", "the name goes first, so new path walks fail at once")
        #expect(Set(removed.withLock { $0 }) == ["top", "middle", "leaf"])
        #expect([top, middle, leaf].allSatisfy { $0.isRemoved && $0.snapshot() == nil })
        #expect(tree.children().map(\.name) == ["kept"])
        #expect(tree.children(of: middle).isEmpty)
    }

    /// procfs's rundown: removal returns only after a callback already inside has left,
    /// here a callback of a file below the directory removed.
    @Test func removalWaitsForACallbackInside() throws {
        let tree = ProcTree()
        let inside = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let callbackFinished = Atomic<Bool>(false)
        let directory = try tree.makeDirectory("d")
        let entry = try tree.register("slow", in: directory) {
            inside.signal()
            release.wait()
            callbackFinished.store(true, ordering: .releasing)
            return "done\n"
        }
        DispatchQueue(label: "reader").async { _ = entry.snapshot() }
        #expect(inside.wait(timeout: .now() + 5) == .success)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) { release.signal() }
        try tree.remove(directory, timeout: .seconds(5))
        let callbackFinishedNow = callbackFinished.load(ordering: .acquiring)
        #expect(callbackFinishedNow, "remove returned while a callback was inside")
        #expect(entry.snapshot() == nil)
    }

    @Test func rundownGivesUpAfterItsTimeout() throws {
        let tree = ProcTree()
        let inside = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let entry = try tree.register("stuck") {
            inside.signal()
            release.wait()
            return ""
        }
        DispatchQueue(label: "reader").async { _ = entry.snapshot() }
        #expect(inside.wait(timeout: .now() + 5) == .success)
        #expect(throws: ProcTreeError.busy("stuck", users: 1)) { try tree.remove("stuck", timeout: .milliseconds(50)) }
        release.signal()
        #expect(tree.entry(named: "stuck") == nil)
    }
}

@Suite struct DynamicDirectoryTests {
    /// A refresh makes the entries of new names, removes those of names gone (running their
    /// rundown) and keeps the rest; names that are bad or that make nothing are left out.
    @Test func aRefreshFollowsTheNames() throws {
        let tree = ProcTree()
        let names = Mutex(["one", "two"])
        let made = Mutex(0)
        let dynamic = try tree.makeDynamicDirectory("dynamic", names: { names.withLock { $0 } }) {
            tree, name, directory throws(ProcTreeError) in
            made.withLock { $0 += 1 }
            guard name != "nothing" else { return }
            try tree.register(name, in: directory) { name }
        }
        #expect(dynamic.isDynamicDirectory && dynamic.kind == .directory)
        #expect(tree.children(of: dynamic).isEmpty, "nothing is made before the directory is looked in")
        tree.refresh(dynamic)
        let one = try #require(tree.entry(named: "one", in: dynamic))
        #expect(tree.children(of: dynamic).map(\.name) == ["one", "two"])
        names.withLock { $0 = ["one", "three", "nothing", "", "a/b"] }
        tree.refresh(dynamic)
        #expect(tree.children(of: dynamic).map(\.name) == ["one", "three"])
        #expect(tree.entry(named: "one", in: dynamic) === one, "a name that stays keeps its entry")
        #expect(made.withLock { $0 } == 6)
        try tree.remove(dynamic)
        tree.refresh(dynamic)
        #expect(made.withLock { $0 } == 6, "a removed directory is not computed")
        #expect(!tree.root.isDynamicDirectory)
    }
}

@Suite struct ChangeTests {
    /// A change reaches the server only while it watches the entry (the kernel holds it); the
    /// version moves either way, so a text made later still sees it.
    @Test func aChangeReachesTheServerOnlyWhileTheEntryIsWatched() throws {
        let tree = ProcTree()
        let told = Mutex(0)
        let observing = tree.observe(
            as: ObjectIdentifier(tree), added: { _ in }, changed: { _, _ in told.withLock { $0 += 1 } }, removed: { _ in })
        #expect(observing)
        let entry = try tree.register("file", announcesChanges: true) { "" }
        entry.changed()
        #expect(told.withLock { $0 } == 0 && entry.version == 1)
        entry.setWatched(true)
        entry.changed()
        #expect(told.withLock { $0 } == 1 && entry.version == 2)
        entry.setWatched(false)
        entry.changed()
        #expect(told.withLock { $0 } == 1 && entry.version == 3)
        entry.setWatched(true)
        try tree.remove(entry)
        entry.changed()
        #expect(told.withLock { $0 } == 1, "a removed entry tells nobody")
    }
}

@Suite struct InodeNumberTests {
    /// A number names one entry in a tree's whole life: a removed entry's number is never
    /// given again, so nothing that still holds it (the kernel, an NFS file handle) can take a
    /// new entry for the old.
    @Test func aNumberIsNeverGivenTwice() throws {
        let tree = ProcTree()
        var seen: Set<UInt64> = [ProcTree.rootInode]
        for round in 0..<50 {
            let entry = try tree.register("f\(round % 4)") { "" }
            #expect(seen.insert(entry.inode).inserted, "round \(round): \(entry.inode) again")
            try tree.remove(entry)
        }
    }
}

@Suite struct DirectoryListingTests {
    private func item(_ name: String, _ inode: UInt64) -> ProcFileSystem.DirectoryItem {
        ProcFileSystem.DirectoryItem(name: name, inode: inode, type: S_IFREG, nextOffset: 0)
    }

    @Test func offsetsStayTrueWhileEntriesComeAndGoAndRewindSeesNewOnes() throws {
        let tree = ProcTree()
        let open = OpenDirectory(directory: tree.root)
        var current = [item("a", 2), item("b", 3), item("c", 4)]
        #expect(open.items(from: 0) { current }.map(\.name) == ["a", "b", "c"])
        current = [item("b", 3), item("c", 4), item("d", 5)]
        #expect(open.items(from: 1) { current }.map(\.name) == ["b", "c"], "the open listing is kept")
        #expect(open.items(from: 3) { current }.isEmpty)
        #expect(open.items(from: 99) { current }.isEmpty)
        #expect(open.items(from: 0) { current }.map(\.name) == ["b", "c", "d"], "rewinddir lists anew")

        let seekedFirst = OpenDirectory(directory: tree.root)
        #expect(seekedFirst.items(from: 1) { current }.map(\.name) == ["c", "d"], "a first read past 0 lists too")
    }
}

@Suite struct ReadModeTests {
    @Test func thePageCacheIsUsedOnlyWhereTheKernelOffersNoOpenAndDirectIOIsNotAsked() {
        #expect(ReadMode.choose(kernelOffersPageCache: true, requested: .pageCache) == .pageCache)
        #expect(ReadMode.choose(kernelOffersPageCache: true, requested: .directIO) == .directIO)
        #expect(ReadMode.choose(kernelOffersPageCache: false, requested: .pageCache) == .directIO)
        #expect(ReadMode.choose(kernelOffersPageCache: false, requested: .directIO) == .directIO)
    }
}
