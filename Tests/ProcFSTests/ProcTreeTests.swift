import Dispatch
import ProcFS
import Synchronization
import Testing

@Suite struct ProcTreeTests {
    @Test func registeredEntriesAreFoundByNameAndInode() throws {
        let tree = ProcTree()
        let a = try tree.register("a") { "A\n" }
        let b = try tree.register("b", permissions: 0o400) { "B\n" }
        #expect(a.inode > ProcTree.rootInode)
        #expect(b.inode > a.inode)
        #expect(tree.entry(named: "a") === a)
        #expect(tree.entry(inode: b.inode) === b)
        #expect(b.permissions == 0o400)
        #expect(tree.entries.map(\.name) == ["a", "b"])
        #expect(a.snapshot() == Array("A\n".utf8))
    }

    @Test(arguments: ["", ".", "..", "a/b", String(repeating: "x", count: 256)])
    func rejectsBadNames(name: String) {
        #expect(throws: ProcTreeError.invalidName(name)) { try ProcTree().register(name) { "" } }
    }

    @Test func rejectsADuplicateName() throws {
        let tree = ProcTree()
        try tree.register("a") { "" }
        #expect(throws: ProcTreeError.exists("a")) { try tree.register("a") { "" } }
    }

    @Test func removalHidesTheEntryAndStopsItsCallbacks() throws {
        let tree = ProcTree()
        let entry = try tree.register("a") { "A\n" }
        try tree.remove("a")
        #expect(tree.entry(named: "a") == nil)
        #expect(tree.entry(inode: entry.inode) == nil)
        #expect(entry.isRemoved)
        #expect(entry.snapshot() == nil)
        #expect(throws: ProcTreeError.notFound("a")) { try tree.remove("a") }
    }

    @Test func inodesAreNotReusedAfterRemoval() throws {
        let tree = ProcTree()
        let first = try tree.register("a") { "" }
        try tree.remove("a")
        let second = try tree.register("a") { "" }
        #expect(second.inode != first.inode)
    }

    @Test func removalTellsTheObserver() throws {
        let tree = ProcTree()
        let removed = Mutex<[String]>([])
        tree.observe(changed: nil, removed: { entry in removed.withLock { $0.append(entry.name) } })
        try tree.register("a") { "" }
        try tree.remove("a")
        #expect(removed.withLock { $0 } == ["a"])
    }

    /// procfs's rundown: removal returns only after a callback already inside has left.
    @Test func removalWaitsForACallbackInside() throws {
        let tree = ProcTree()
        let inside = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let callbackFinished = Atomic<Bool>(false)
        let entry = try tree.register("slow") {
            inside.signal()
            release.wait()
            callbackFinished.store(true, ordering: .releasing)
            return "done\n"
        }
        let reader = DispatchQueue(label: "reader")
        reader.async { _ = entry.snapshot() }
        #expect(inside.wait(timeout: .now() + 5) == .success)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) { release.signal() }
        try tree.remove("slow", timeout: .seconds(5))
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

@Suite struct ReadModeTests {
    @Test func thePageCacheIsUsedOnlyWhereTheKernelOffersNoOpenAndDirectIOIsNotAsked() {
        #expect(ReadMode.choose(kernelOffersNoOpen: true, directIORequested: false) == .pageCache)
        #expect(ReadMode.choose(kernelOffersNoOpen: true, directIORequested: true) == .directIO)
        #expect(ReadMode.choose(kernelOffersNoOpen: false, directIORequested: false) == .directIO)
        #expect(ReadMode.choose(kernelOffersNoOpen: false, directIORequested: true) == .directIO)
    }
}
