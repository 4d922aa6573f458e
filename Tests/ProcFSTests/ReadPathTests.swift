@testable import ProcFS
@testable import ProcFSCore
import Glibc
import Synchronization
import Testing

/// A text that a test sets.
private final class TextBox: Sendable {
    let text = Mutex("first text\n")
}

/// An entry, set once it exists.
private final class EntryBox: Sendable {
    let entry = Mutex<ProcEntry?>(nil)
}

/// A file whose text the test sets, announcing each change.
private final class Changing: Sendable {
    let box = TextBox()
    let tree = ProcTree()
    let entry: ProcEntry

    init(announcesChanges: Bool = true) throws {
        let box = self.box
        entry = try tree.register("file", announcesChanges: announcesChanges) { box.text.withLock { $0 } }
    }

    func set(_ new: String, announce: Bool = true) {
        box.text.withLock { $0 = new }
        if announce { entry.changed() }
    }
}

private func string(_ bytes: ArraySlice<UInt8>?) -> String? {
    bytes.map { String(decoding: $0, as: UTF8.self) }
}

/// An open in direct_io mode reads as a procfs seq_file.
@Suite struct OpenFileTests {
    @Test func aReadAtOffsetZeroTakesTheCurrentText() throws {
        let file = try Changing()
        let open = OpenFile(entry: file.entry, caller: .current, handle: 1)
        #expect(string(open.read(at: 0, size: 100)) == "first text\n")
        file.set("second text\n")
        #expect(string(open.read(at: 0, size: 100)) == "second text\n")
    }

    @Test func readsThatContinueStayInOneTextAcrossAChange() throws {
        let file = try Changing()
        let open = OpenFile(entry: file.entry, caller: .current, handle: 1)
        #expect(string(open.read(at: 0, size: 3)) == "fir")
        file.set("SECOND TEXT\n")
        #expect(string(open.read(at: 3, size: 4)) == "st t")
        #expect(string(open.read(at: 7, size: 100)) == "ext\n")
        #expect(string(open.read(at: 11, size: 100)) == "", "the end of the same text")
    }

    @Test func aReadElsewhereTakesANewTextAndSkipsToItsOffset() throws {
        let file = try Changing()
        let open = OpenFile(entry: file.entry, caller: .current, handle: 1)
        #expect(string(open.read(at: 0, size: 3)) == "fir")
        file.set("SECOND TEXT\n")
        #expect(string(open.read(at: 6, size: 100)) == " TEXT\n", "seq_file's traverse")
        #expect(string(open.read(at: 2, size: 2)) == "CO")
    }

    @Test func sizeIsThatOfTheTextBeingRead() throws {
        let file = try Changing()
        let open = OpenFile(entry: file.entry, caller: .current, handle: 1)
        #expect(open.size == 11, "a new text before the first read")
        _ = open.read(at: 0, size: 4)
        file.set("a longer second text\n")
        #expect(open.size == 11, "the text being read, not the current one")
        _ = open.read(at: 0, size: 4)
        #expect(open.size == 21)
    }

    @Test func everyReadFailsOnceTheEntryIsRemoved() throws {
        let file = try Changing()
        let open = OpenFile(entry: file.entry, caller: .current, handle: 1)
        _ = open.read(at: 0, size: 4)
        try file.tree.remove(file.entry)
        #expect(open.read(at: 4, size: 4) == nil, "even a read that continues")
        #expect(open.read(at: 0, size: 4) == nil)
        #expect(open.size == nil)
    }
}

/// The texts open files are reading, kept for the server that takes over a mount.
@Suite struct CarriedTextsTests {
    @Test func aSlotKeepsATextForItsOpenUntilFreed() throws {
        let texts = try #require(try CarriedState().texts)
        let slot = try #require(texts.claim(for: 7))
        #expect(texts.taken(by: 7)?.slot == slot && texts.taken(by: 7)?.text == nil, "claimed, no text yet")
        texts.store(Array("Timer was called 99 times so far\n".utf8), in: slot)
        #expect(texts.taken(by: 7)?.text == Array("Timer was called 99 times so far\n".utf8))
        texts.store(Array("shorter\n".utf8), in: slot)
        #expect(texts.taken(by: 7)?.text == Array("shorter\n".utf8), "the latest text, at its own length")
        #expect(texts.taken(by: 8) == nil, "an open that claimed nothing")
        texts.free(slot)
        #expect(texts.taken(by: 7) == nil)
    }

    @Test func theLowestFreeSlotIsTakenAndEachOnce() throws {
        let texts = try #require(try CarriedState().texts)
        #expect(texts.claim(for: 1) == 0 && texts.claim(for: 2) == 1 && texts.claim(for: 3) == 2)
        texts.free(1)
        #expect(texts.claim(for: 4) == 1, "the freed slot, the lowest")
        texts.free(handleOf: 3)
        #expect(texts.taken(by: 3) == nil && texts.claim(for: 5) == 2)
        for handle in 6...UInt64(CarriedTexts.slotCount + 2) { _ = texts.claim(for: handle) }
        #expect(texts.claim(for: 99_999) == nil, "all taken")
    }

    @Test func aTextLongerThanASlotIsNotKept() throws {
        let texts = try #require(try CarriedState().texts)
        let slot = try #require(texts.claim(for: 1))
        texts.store(Array("short\n".utf8), in: slot)
        texts.store([UInt8](repeating: 65, count: CarriedTexts.capacity + 1), in: slot)
        #expect(texts.taken(by: 1)?.text == nil, "not the earlier text either")
        texts.store([UInt8](repeating: 66, count: CarriedTexts.capacity), in: slot)
        #expect(texts.taken(by: 1)?.text?.count == CarriedTexts.capacity)
    }

    /// The texts are in the memory file, not in one process's memory: a second mapping of it,
    /// as the next server makes, sees them.
    @Test func anotherMappingOfTheFileSeesTheTexts() throws {
        let state = try CarriedState()
        let slot = try #require(state.texts?.claim(for: 42))
        state.texts?.store(Array("kept\n".utf8), in: slot)
        let copy = dup(state.descriptor)
        let next = try CarriedState(adopting: copy)
        #expect(next.texts?.taken(by: 42)?.text == Array("kept\n".utf8))
    }
}

/// An open that another server made goes on with the text that server kept for it.
@Suite struct ResumedOpenFileTests {
    /// Reads `count` bytes of the text in an open of the first server, and returns what a
    /// second server's open of the same handle starts from.
    private func handedOver(after count: Int) throws -> (file: Changing, texts: CarriedTexts, next: OpenFile) {
        let file = try Changing()
        file.set("Timer was called 99 times so far\n")
        let texts = try #require(try CarriedState().texts)
        let first = OpenFile(entry: file.entry, caller: .current, handle: 1 << 40 | 1, carrying: texts)
        #expect(first.read(at: 0, size: count)?.count == count)
        file.set("Timer was called 100 times so far\n")
        let next = OpenFile(entry: file.entry, caller: .current, handle: 1 << 40 | 1, carrying: texts, resuming: texts.taken(by: 1 << 40 | 1))
        return (file, texts, next)
    }

    @Test func aReadInsideTheTextGetsItsRest() throws {
        let (_, _, next) = try handedOver(after: 1)
        #expect(string(next.read(at: 1, size: 100)) == "imer was called 99 times so far\n")
        #expect(string(next.read(at: 33, size: 100)) == "")
    }

    @Test func aReadAtTheEndOfTheTextGetsTheEndOfFile() throws {
        let (_, _, next) = try handedOver(after: 33)
        #expect(string(next.read(at: 33, size: 100)) == "")
        #expect(string(next.read(at: 0, size: 100)) == "Timer was called 100 times so far\n", "offset 0: the text anew")
    }

    /// The kernel may send again a read the dead server began and never answered: it starts
    /// before where that server's last read ended.
    @Test func aReadSentAgainStillGetsTheSameText() throws {
        let (_, _, next) = try handedOver(after: 33)
        #expect(string(next.read(at: 10, size: 100)) == "called 99 times so far\n")
        #expect(string(next.read(at: 5, size: 100)) == " was called 100 times so far\n", "then reads go on as a seq_file's")
    }

    @Test func aReadPastTheTextTakesTheNewText() throws {
        let (file, _, next) = try handedOver(after: 1)
        file.set("Timer was called 100 times so far\nand more\n")
        #expect(string(next.read(at: 34, size: 100)) == "and more\n", "past the old text's 33 bytes: the new one, skipped to 34")
    }

    /// The open keeps the texts it makes in the same slot, for a third server, and frees it at
    /// `RELEASE`.
    @Test func theNextServerKeepsItsTextsAndFreesTheSlot() throws {
        let (file, texts, next) = try handedOver(after: 2)
        _ = next.read(at: 0, size: 3)
        file.set("Timer was called 101 times so far\n")
        let third = OpenFile(entry: file.entry, caller: .current, handle: 1 << 40 | 1, carrying: texts, resuming: texts.taken(by: 1 << 40 | 1))
        #expect(string(third.read(at: 3, size: 100)) == "er was called 100 times so far\n")
        third.release()
        #expect(texts.taken(by: 1 << 40 | 1) == nil)
        _ = third.read(at: 0, size: 100)
        #expect(texts.taken(by: 1 << 40 | 1) == nil, "no slot is taken after RELEASE")
    }
}

/// What page-cache mode gives the kernel, and when the kernel must be told of a change.
@Suite struct PageCacheCopyTests {
    private func time(_ seconds: Int, _ nanoseconds: Int = 0) -> timespec {
        timespec(tv_sec: seconds, tv_nsec: nanoseconds)
    }

    @Test func theModificationTimeMovesOnlyWhenTheTextIsNew() throws {
        let file = try Changing(announcesChanges: false)
        let copy = PageCacheCopy()
        let first = try #require(copy.publish(file.entry, now: time(10)))
        let same = try #require(copy.publish(file.entry, now: time(11)))
        #expect(same.modified.tv_sec == 10, "the same text keeps its time")
        file.set("second\n", announce: false)
        let changed = try #require(copy.publish(file.entry, now: time(12)))
        #expect(changed.modified.tv_sec == 12 && String(decoding: changed.text, as: UTF8.self) == "second\n")
        #expect(first.text != changed.text)
    }

    @Test func anAnnouncedChangeMovesTheTimeEvenForTheSameText() throws {
        let file = try Changing()
        let copy = PageCacheCopy()
        #expect(copy.publish(file.entry, now: time(10))?.settled == true)
        file.set("first text\n")
        #expect(copy.invalidate(), "the kernel holds a current copy: tell it")
        #expect(!copy.invalidate(), "a stale copy costs further changes nothing")
        let again = try #require(copy.publish(file.entry, now: time(10)))
        #expect(again.modified.tv_sec == 10 && again.modified.tv_nsec == 1, "later than before, even on a clock that stood still")
        #expect(copy.invalidate())
    }

    @Test func aChangeWhileTheTextIsMadeLeavesTheCopyUnsettled() throws {
        let tree = ProcTree()
        let announcer = EntryBox()
        let entry = try tree.register("file", announcesChanges: true) {
            announcer.entry.withLock { $0 }?.changed()
            return "text\n"
        }
        announcer.entry.withLock { $0 = entry }
        // The entry's closure holds the box, which holds the entry: break the cycle at the end.
        defer { announcer.entry.withLock { $0 = nil } }
        let copy = PageCacheCopy()
        #expect(copy.publish(entry, now: time(10))?.settled == false, "the kernel must not keep these attributes")
        #expect(!copy.invalidate(), "not current: the next read asks again anyway")
    }

    /// Two attribute requests and a change between them: the first makes its text, the file
    /// changes, the second makes and publishes the new text (a lasting reply), and only then
    /// does the first publish. The first must neither bring back the older text nor leave the
    /// copy stale: the kernel may hold the second's reply, and the next change must tell it.
    @Test func aTextMadeBeforeAChangeNeverUndoesOneMadeAfter() throws {
        let tree = ProcTree()
        let state = RacingRequests()
        let entry = try tree.register("file", announcesChanges: true) { state.text() }
        state.entry.withLock { $0 = entry }
        // The entry's closure holds the state, which holds the entry: break the cycle at the end.
        defer { state.entry.withLock { $0 = nil } }

        let first = try #require(state.copy.publish(entry, now: time(10)))
        let second = try #require(state.second.withLock { $0 })
        #expect(second.settled && String(decoding: second.text, as: UTF8.self) == "second\n")
        #expect(String(decoding: first.text, as: UTF8.self) == "second\n", "the newest text published, not the older one")
        #expect(first.modified.tv_sec == second.modified.tv_sec && first.modified.tv_nsec == second.modified.tv_nsec)
        #expect(first.settled, "nothing changed since the newest text was made")
        #expect(String(decoding: try #require(state.copy.published(entry, now: time(12))).text, as: UTF8.self) == "second\n")
        #expect(state.copy.invalidate(), "the kernel may keep the second reply: the next change must tell it")
    }

    @Test func aReadGetsTheTextLastPublishedWhateverChangedSince() throws {
        let file = try Changing()
        let copy = PageCacheCopy()
        _ = copy.publish(file.entry, now: time(10))
        file.set("second\n")
        let read = try #require(copy.published(file.entry, now: time(11)))
        #expect(String(decoding: read.text, as: UTF8.self) == "first text\n", "the pages must agree with the size given")
        try file.tree.remove(file.entry)
        #expect(copy.published(file.entry, now: time(12)) == nil)
        #expect(copy.publish(file.entry, now: time(12)) == nil)
    }
}

/// A file's text as two attribute requests make it, the second wholly inside the first: the
/// first call (the first request) changes the file and has the second request publish before it
/// returns the text it had made before the change.
private final class RacingRequests: Sendable {
    let copy = PageCacheCopy()
    let entry = Mutex<ProcEntry?>(nil)
    let second = Mutex<PageCacheCopy.Published?>(nil)
    private let calls = Mutex(0)

    func text() -> String {
        let call = calls.withLock { calls in
            calls += 1
            return calls
        }
        guard call == 1, let entry = entry.withLock({ $0 }) else { return "second\n" }
        entry.changed()
        let published = copy.publish(entry, now: timespec(tv_sec: 11, tv_nsec: 0))
        second.withLock { $0 = published }
        return "first\n"
    }
}

/// Poll answers, as a sysctl gives them.
@Suite struct PollWaitersTests {
    typealias Waiters = PollWaiters<Int>

    @Test func aChangeIsReportedOncePerOpen() throws {
        let file = try Changing()
        let waiters = Waiters()
        let since = file.entry.version
        #expect(waiters.poll(file.entry, key: 1, since: since, handle: nil).events == Waiters.readable)
        file.set("second\n")
        #expect(waiters.poll(file.entry, key: 1, since: since, handle: nil).events == Waiters.changed)
        #expect(waiters.poll(file.entry, key: 1, since: since, handle: nil).events == Waiters.readable)
        #expect(waiters.poll(file.entry, key: 2, since: since, handle: nil).events == Waiters.changed,
                "another open opened before the change is told of it too")
    }

    @Test func aChangeWakesEachSleeperOnce() throws {
        let file = try Changing()
        let waiters = Waiters()
        #expect(waiters.poll(file.entry, key: 1, since: file.entry.version, handle: 10).release.isEmpty)
        #expect(waiters.poll(file.entry, key: 2, since: file.entry.version, handle: 20).release.isEmpty)
        #expect(waiters.poll(file.entry, key: 1, since: file.entry.version, handle: 11).release == [10], "a handle replaced is released")
        file.set("second\n")
        #expect(waiters.wake(file.entry).sorted() == [11, 20])
        #expect(waiters.wake(file.entry).isEmpty)
        #expect(waiters.closed(inode: file.entry.inode, key: 2) == nil)
        #expect(waiters.count(of: file.entry.inode) == 1)
    }

    @Test func afterRemovalEveryPollSaysSoAndEverySleeperWakes() throws {
        let file = try Changing()
        let waiters = Waiters()
        _ = waiters.poll(file.entry, key: 1, since: file.entry.version, handle: 10)
        try file.tree.remove(file.entry)
        #expect(waiters.wake(file.entry) == [10])
        let answer = waiters.poll(file.entry, key: 1, since: 0, handle: 11)
        #expect(answer.events == Waiters.removed && answer.release == [11])
        #expect(waiters.count(of: file.entry.inode) == 0)
    }

    @Test func theEndOfServingReleasesEverySleeper() throws {
        let file = try Changing()
        let waiters = Waiters()
        _ = waiters.poll(file.entry, key: 1, since: file.entry.version, handle: 10)
        _ = waiters.poll(file.entry, key: 2, since: file.entry.version, handle: nil)
        #expect(waiters.forgetAll() == [10])
        #expect(waiters.count(of: file.entry.inode) == 0)
    }

    @Test func opensBeyondTheLimitAreForgottenIdleFirstThenLongestSilent() throws {
        let file = try Changing()
        let waiters = Waiters()
        _ = waiters.poll(file.entry, key: 0, since: file.entry.version, handle: 99)
        for key in 1...UInt64(Waiters.maximumPollers + 10) {
            #expect(waiters.poll(file.entry, key: key, since: file.entry.version, handle: nil).notify.isEmpty)
        }
        #expect(waiters.count(of: file.entry.inode) == Waiters.maximumPollers)
        // Sleepers only from here on: the oldest, 99, goes first, and is to be notified.
        var forgotten: [Int] = []
        for key in 2000..<UInt64(2000 + Waiters.maximumPollers) {
            forgotten += waiters.poll(file.entry, key: key, since: file.entry.version, handle: Int(key)).notify
        }
        #expect(waiters.count(of: file.entry.inode) == Waiters.maximumPollers)
        #expect(forgotten == [99])
    }
}
