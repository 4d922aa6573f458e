@testable import ProcFS
import Synchronization
import Testing

@Suite struct SnapshotNodesTests {
    /// A count that a test bumps under a registered entry.
    private final class Counter: Sendable {
        let value = Atomic<Int>(0)
        var text: String { "count \(value.load(ordering: .relaxed))\n" }
    }

    @Test func lookupsShareOneNodeUntilTheFileChanges() throws {
        let counter = Counter()
        let entry = try ProcTree().register("f", announcesChanges: true) { counter.text }
        let nodes = SnapshotNodes()
        let first = try #require(nodes.lookUp(entry))
        #expect(first.text == Array("count 0\n".utf8))
        #expect(nodes.lookUp(entry)?.id == first.id)

        counter.value.store(1, ordering: .relaxed)
        #expect(nodes.lookUp(entry)?.id == first.id, "without changed() the snapshot stays")
        #expect(nodes.supersede(entry) == first.id)
        #expect(nodes.supersede(entry) == nil, "nothing new was looked up")

        let second = try #require(nodes.lookUp(entry))
        #expect(second.id != first.id)
        #expect(second.text == Array("count 1\n".utf8))
        #expect(nodes.node(first.id)?.text == first.text, "open files keep the old snapshot")
    }

    @Test func aNodeLivesUntilTheKernelForgetsEveryLookup() throws {
        let entry = try ProcTree().register("f", announcesChanges: true) { "x\n" }
        let nodes = SnapshotNodes()
        let node = try #require(nodes.lookUp(entry))
        _ = nodes.lookUp(entry)
        nodes.forget(node.id, count: 1)
        #expect(nodes.node(node.id) != nil)
        nodes.forget(node.id, count: 1)
        #expect(nodes.node(node.id) == nil)
        #expect(nodes.count == 0)
        #expect(nodes.lookUp(entry)?.id != node.id, "a forgotten node is not handed out again")
    }

    @Test func aFileThatDoesNotAnnounceChangesGetsAFreshNodeOnEveryLookup() throws {
        let counter = Counter()
        let entry = try ProcTree().register("f") { counter.text }
        let nodes = SnapshotNodes()
        let first = try #require(nodes.lookUp(entry))
        counter.value.store(1, ordering: .relaxed)
        let second = try #require(nodes.lookUp(entry))
        #expect(second.id != first.id)
        #expect(second.text == Array("count 1\n".utf8))
        #expect(nodes.supersede(entry) == nil, "no node is current, so nothing is cached to drop")
        #expect(SnapshotNodes.isSnapshot(first.id) && !SnapshotNodes.isSnapshot(entry.inode))
    }

    @Test func aRemovedEntryGivesNoNode() throws {
        let tree = ProcTree()
        let entry = try tree.register("f") { "x\n" }
        try tree.remove("f")
        #expect(SnapshotNodes().lookUp(entry) == nil)
    }
}
