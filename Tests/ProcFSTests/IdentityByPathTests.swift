@testable import ProcFS
import Glibc
import Logging
import Testing

/// The paths of the numbers the kernel holds, kept for the server that takes over a mount.
@Suite struct CarriedNamesTests {
    @Test func aRecordIsKeptUntilErasedAndItsSlotTakenAgain() throws {
        let names = try #require(try CarriedState().names)
        #expect(names.record(5, parent: 1, name: "sched") == .new)
        #expect(names.record(5, parent: 1, name: "sched") == .kept, "one record a number")
        #expect(names.record(6, parent: 5, name: "hz") == .new)
        #expect(Set(names.records.map(\.inode)) == [5, 6])
        #expect(names.records.contains(CarriedNames.Record(inode: 6, parent: 5, name: "hz")))
        names.erase(5)
        #expect(names.records == [CarriedNames.Record(inode: 6, parent: 5, name: "hz")])
        // A number that falls on the erased slot takes it.
        let wrapped = 5 + UInt64(CarriedNames.slotCount)
        #expect(names.record(wrapped, parent: 1, name: "again") == .new)
        #expect(names.records.count == 2)
    }

    /// Numbers that fall on one slot take the next free ones, and each is found again.
    @Test func numbersOnOneSlotEachKeepTheirPath() throws {
        let names = try #require(try CarriedState().names)
        let numbers = (0..<10).map { 9 + UInt64($0) * UInt64(CarriedNames.slotCount) }
        for (index, number) in numbers.enumerated() { #expect(names.record(number, parent: 1, name: "n\(index)") == .new) }
        names.erase(numbers[3])
        #expect(names.record(numbers[7], parent: 1, name: "n7") == .kept, "found past an erased slot")
        #expect(Set(names.records.map(\.inode)) == Set(numbers).subtracting([numbers[3]]))
    }

    @Test func aNameTooLongIsNotKept() throws {
        let names = try #require(try CarriedState().names)
        let longest = String(repeating: "x", count: CarriedNames.nameCapacity)
        #expect(names.record(2, parent: 1, name: longest) == .new)
        #expect(names.record(3, parent: 1, name: longest + "x") == .full)
        #expect(names.records == [CarriedNames.Record(inode: 2, parent: 1, name: longest)])
    }
}

/// A server that takes a mount over gives each path the number the kernel knows it by.
@Suite struct IdentityByPathTests {
    /// The first server's tree: `a`, `dir/b`, `dir/c`, and `gone`.
    private func firstTree() throws -> ProcTree {
        let tree = ProcTree()
        try tree.register("a") { "a\n" }
        let directory = try tree.makeDirectory("dir")
        try tree.register("b", in: directory) { "b\n" }
        try tree.register("c", in: directory) { "c\n" }
        try tree.register("gone") { "gone\n" }
        return tree
    }

    /// The next server's tree: an extra entry first, `gone` dropped, the rest in another order.
    private func nextTree() throws -> ProcTree {
        let tree = ProcTree()
        try tree.register("extra") { "extra\n" }
        let directory = try tree.makeDirectory("dir")
        try tree.register("c", in: directory) { "c\n" }
        try tree.register("b", in: directory) { "b\n" }
        try tree.register("a") { "a\n" }
        return tree
    }

    private func serve(_ tree: ProcTree, _ carried: CarriedState) -> ProcFileSystem {
        let fileSystem = ProcFileSystem(
            tree: tree, requestedMode: .directIO, logger: Logger(label: "test"), mounter: .root,
            takingOver: (carried, carried.countServer()))
        _ = fileSystem.initialize(kernelOffersNoOpen: true, kernelOffersAutoInvalidation: true)
        fileSystem.succession?.numberTree()
        return fileSystem
    }

    /// Looks up every entry of `fileSystem`'s tree as the kernel does, and returns each path's
    /// number.
    private func lookUpAll(_ fileSystem: ProcFileSystem) throws -> [String: UInt64] {
        var numbers: [String: UInt64] = [:]
        for name in ["a", "dir", "gone", "extra"] {
            guard let found = try? fileSystem.lookup(parent: ProcTree.rootInode, name: name) else { continue }
            numbers[name] = found.attributes.inode
        }
        if let directory = numbers["dir"] {
            for name in ["b", "c"] { numbers["dir/" + name] = try fileSystem.lookup(parent: directory, name: name).attributes.inode }
        }
        return numbers
    }

    @Test func theNextServerGivesEachPathTheNumberTheKernelHolds() throws {
        let carried = try CarriedState()
        let first = serve(try firstTree(), carried)
        let held = try lookUpAll(first)
        #expect(held.count == 5)

        let tree = try nextTree()
        let next = serve(tree, carried)
        for path in ["a", "dir", "dir/b", "dir/c"] {
            #expect(tree.entry(atPath: path)?.inode == held[path], "\(path) keeps its number")
        }
        let extra = try #require(tree.entry(atPath: "extra")).inode
        #expect(!held.values.contains(extra) && extra > held.values.max()!, "a new entry takes a number never given")
        let live = Set(tree.allEntries.map(\.inode))
        #expect(next.succession?.dropped(live: live).map(\.name) == ["gone"])
        // The kernel's numbers answer for their paths in the next server.
        #expect(try next.attributes(node: held["dir/b"]!, handle: nil).inode == held["dir/b"])
        #expect(throws: Errno.ioError, "as a removed file") { try next.attributes(node: held["gone"]!, handle: nil) }
        #expect(try lookUpAll(next) == held.filter { $0.key != "gone" }.merging(["extra": extra]) { $1 })
    }

    /// A server killed after it kept a number's path but before it counted the number given
    /// leaves a record above the count: no new entry of the next server takes that number.
    @Test func newNumbersStartAboveEveryRecordedOne() throws {
        let carried = try CarriedState()
        let first = serve(try firstTree(), carried)
        let held = try lookUpAll(first)
        let killedMidway = held.values.max()! + 3
        try #require(carried.names).record(killedMidway, parent: ProcTree.rootInode, name: "lost")
        let tree = try nextTree()
        _ = serve(tree, carried)
        let fresh = try #require(tree.entry(atPath: "extra")).inode
        #expect(fresh > killedMidway)
    }

    /// An entry added after the takeover (as a dynamic directory adds its entries when looked
    /// in) takes the number the kernel holds for its path, once; added again, a new one.
    @Test func anEntryAddedLaterTakesItsPathsNumberOnce() throws {
        let carried = try CarriedState()
        let first = serve(try firstTree(), carried)
        let held = try lookUpAll(first)

        let tree = ProcTree()
        _ = serve(tree, carried)
        let late = try tree.register("gone") { "back\n" }
        #expect(late.inode == held["gone"])
        try tree.remove(late)
        let again = try tree.register("gone") { "again\n" }
        #expect(again.inode != held["gone"] && again.inode > held.values.max()!)
    }

    /// A name whose path cannot be kept for the next server is not kept by the kernel either,
    /// so that after a server change a path walk asks for it again and finds its new number.
    @Test func theKernelKeepsNoNameWhosePathCannotBeCarried() throws {
        let carried = try CarriedState()
        let tree = ProcTree()
        try tree.register("short") { "" }
        try tree.register(String(repeating: "x", count: CarriedNames.nameCapacity + 1)) { "" }
        let served = serve(tree, carried)
        #expect(try served.lookup(parent: ProcTree.rootInode, name: "short").entryTimeout == ProcFileSystem.entryTimeout)
        let long = try served.lookup(parent: ProcTree.rootInode, name: String(repeating: "x", count: CarriedNames.nameCapacity + 1))
        #expect(long.entryTimeout == 0)
        #expect(try served.lookup(parent: ProcTree.rootInode, name: String(repeating: "x", count: CarriedNames.nameCapacity + 1)).entryTimeout == 0, "nor at the next lookup")
    }

    /// A number the kernel forgot leaves no record; one that another server told the kernel of
    /// keeps its record when this server's own lookups of it are forgotten.
    @Test func theKernelsForgetErasesOnlyWhatThisServerCountedWhole() throws {
        let carried = try CarriedState()
        let first = serve(try firstTree(), carried)
        let held = try lookUpAll(first)
        first.forget(node: held["a"]!, lookups: 1)
        let names = try #require(carried.names)
        #expect(!names.records.contains { $0.inode == held["a"] })

        let tree = try firstTree()
        let next = serve(tree, carried)
        _ = try next.lookup(parent: ProcTree.rootInode, name: "gone")
        next.forget(node: held["gone"]!, lookups: 1)
        #expect(names.records.contains { $0.inode == held["gone"] }, "the kernel may hold more lookups from the first server")
    }

    /// At a takeover the kernel may say it holds no node of a recorded number: the node is
    /// dropped then, unless a lookup in this server has given it to the kernel since.
    @Test func aNodeTheKernelLacksIsDroppedUnlessALookupGaveItSince() throws {
        let carried = try CarriedState()
        let held = try lookUpAll(serve(try firstTree(), carried))
        let tree = try firstTree()
        let next = serve(tree, carried)
        for path in ["a", "dir/b"] { _ = next.adopt(try #require(tree.entry(atPath: path))) }
        _ = try next.lookup(parent: held["dir"]!, name: "b")
        next.nodes.forgetUnlessLookedUp(held["a"]!)
        next.nodes.forgetUnlessLookedUp(held["dir/b"]!)
        #expect(next.nodes.entry(held["a"]!) == nil)
        #expect(next.nodes.entry(held["dir/b"]!) != nil, "the kernel holds the lookup's node")
    }

    /// An entry removed while the kernel holds it from the server before (a node adopted, with
    /// no lookup in this server) has its attributes dropped by the kernel, as a looked-up one.
    @Test func removingAnAdoptedEntryTellsTheKernelOfItsAttributes() throws {
        let carried = try CarriedState()
        _ = try lookUpAll(serve(try firstTree(), carried))
        let tree = try firstTree()
        let next = serve(tree, carried)
        let entry = try #require(tree.entry(atPath: "a"))
        #expect(!next.noticesOfRemoval(of: entry).contains(.attributes(entry.inode)), "not held in this server yet")
        _ = next.adopt(entry)
        #expect(next.noticesOfRemoval(of: entry).contains(.attributes(entry.inode)))
    }
}
