import CLinux
import CTestSupport
import Dispatch
import Glibc
import KernelSync
import Logging
import ProcFS
import Synchronization
import SystemPackage
import Testing

/// A ``ProcTree`` of the test's own, served in this process on a fresh temporary directory.
///
/// ``cleanUp()`` (call it in a `defer`) detaches the mount, stops the request threads and
/// unmounts. No `auto_unmount`: its fusermount3 watcher would live as long as this process,
/// and the reliability tests check that no process of a test mount is left. A watchdog does so instead if the test hangs past ``watchdogTimeout``: closing the
/// FUSE device ends the connection, so a system call stuck on the mount returns `ENOTCONN`.
final class LibraryMount: Sendable {
    static let watchdogTimeout: Duration = .seconds(60)

    let root: TemporaryDirectory
    let mountpoint: String
    let server: FuseServer
    private let tornDown = Atomic<Bool>(false)

    init(_ tree: ProcTree, directIO: Bool) throws {
        try requireFuse()
        root = try TemporaryDirectory()
        mountpoint = root.path + "/mnt"
        mkdir(mountpoint, 0o755)
        server = try FuseServer(
            tree: tree, options: [.subtype("procfs-test")], readMode: directIO ? .directIO : .pageCache,
            logger: Logger(label: "test"))
        try server.start(at: FilePath(mountpoint), threads: 2) {}
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.watchdogTimeout.dispatchSeconds) { [self] in
            guard !tornDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
            Issue.record("the test hung on \(mountpoint); aborting the mount")
            // Waiting for nothing, it ends in closing the device.
            _ = server.shutDown(timeout: .zero)
        }
    }

    /// The path of `name` inside the mount.
    func path(_ name: String) -> String { mountpoint + "/" + name }

    func cleanUp() {
        if !tornDown.exchange(true, ordering: .acquiringAndReleasing) {
            #expect(server.shutDown(timeout: .seconds(2)).stopped, "a request thread did not stop")
        }
        root.remove()
    }
}

/// The ProcFS library through a real mount: what any program embedding it gets.
extension MountTests {
    @Suite struct Library {
        static let directIO = [false, true]

        /// A file whose text depends on who opens it sees each reader: this thread, then `cat`.
        @Test func aPerCallerFileSeesEachReader() throws {
            let tree = ProcTree()
            try tree.registerPerCaller("self") { "\($0.uid) \($0.gid) \($0.pid)\n" }
            let mount = try LibraryMount(tree, directIO: true)
            defer { mount.cleanUp() }
            #expect(try readOnce(mount.path("self")) == "\(geteuid()) \(getegid()) \(ctestsupport_thread_id())\n", "the reading thread")
            let output = try TemporaryDirectory()
            defer { output.remove() }
            let cat = try ChildProcess("/bin/cat", [mount.path("self")], stdout: output.path + "/out")
            #expect(cat.wait(timeout: .seconds(10)) == 0)
            #expect(readWhole(output.path + "/out") == "\(geteuid()) \(getegid()) \(cat.pid)\n")
            var attributes = stat()
            #expect(stat(mount.path("self"), &attributes) == 0 && attributes.st_size == 0)
        }

        /// Reads of a text made by an async closure do not hold the request threads: with both
        /// of the mount's threads' worth of such reads waiting (and one more), another file
        /// still reads, and then the waiting reads get their whole texts. They run on threads of
        /// their own, not Swift's cooperative pool, which the test keeps blocked meanwhile, as a
        /// program may.
        @Test func awaitedTextsDoNotHoldTheRequestThreads() throws {
            final class Flag: Sendable { let raised = Atomic<Bool>(true) }
            let poolBlocked = Flag()
            for _ in 0..<Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) {
                Task.detached { [poolBlocked] in
                    for _ in 0..<3000 where poolBlocked.raised.load(ordering: .relaxed) { usleep(10_000) }
                }
            }
            defer { poolBlocked.raised.store(false, ordering: .relaxed) }
            let tree = ProcTree()
            let opened = Atomic<Bool>(false)
            let waiting = Atomic<Int>(0)
            try tree.registerAwaiting("awaited") {
                waiting.add(1, ordering: .relaxed)
                // Bounded: at most 20 s, which fails the test below.
                for _ in 0..<2000 where !opened.load(ordering: .relaxed) {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                return "opened \(opened.load(ordering: .relaxed))\n"
            }
            try tree.register("plain") { "plain\n" }
            let mount = try LibraryMount(tree, directIO: true)
            defer { mount.cleanUp() }
            let texts = Mutex<[String]>([])
            let readers = try (0..<3).map { number in
                try JoinableThread(name: "awaiting-\(number)") {
                    let text = (try? readOnce(mount.path("awaited"))) ?? "failed"
                    texts.withLock { $0.append(text) }
                }
            }
            #expect(eventually(timeout: .seconds(10)) { waiting.load(ordering: .relaxed) == 3 }, "three reads wait")
            #expect(try readOnce(mount.path("plain")) == "plain\n", "a request thread is free")
            opened.store(true, ordering: .relaxed)
            for reader in readers { #expect(reader.join(timeout: .seconds(10))) }
            #expect(texts.withLock { $0 } == Array(repeating: "opened true\n", count: 3))
        }

        /// A reader held by a callback that does not return waits for it, as a reader of a
        /// procfs file whose `show` blocks does; but a signal ends its wait: the kernel sends
        /// `FUSE_INTERRUPT`, answered `EINTR` at once, where it would otherwise wait, beyond
        /// even SIGKILL, for a request the server has read. `cat` gets SIGKILL while the
        /// callback runs, and is gone within 2 s; the callback's late answer is dropped, and
        /// the file reads again.
        ///
        /// With `handledFirst`, the reader (Python's `os.read`) first takes SIGUSR1, which it
        /// has a handler for: the kernel sends its one `FUSE_INTERRUPT` then, and the reader must
        /// go on waiting, as a procfs reader would. The SIGKILL after it is not told again, and
        /// the reader still ends within 2 s.
        @Test(arguments: Library.directIO, [false, true])
        func aReaderHeldByACallbackEndsAtASignal(directIO: Bool, handledFirst: Bool) throws {
            let tree = ProcTree()
            let released = Atomic<Bool>(false)
            let held = Atomic<Int>(0)
            try tree.register("stuck") {
                held.add(1, ordering: .relaxed)
                // Bounded: at most 20 s, which fails the test below.
                for _ in 0..<2000 where !released.load(ordering: .relaxed) { usleep(10_000) }
                return "released \(released.load(ordering: .relaxed))\n"
            }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }
            defer { released.store(true, ordering: .relaxed) }
            let cat = handledFirst
                ? try ChildProcess("/usr/bin/python3", ["-c", Self.readWithAHandler, mount.path("stuck")])
                : try ChildProcess("/bin/cat", [mount.path("stuck")])
            defer {
                cat.send(SIGKILL)
                _ = cat.wait(timeout: .seconds(25))
            }
            try #require(eventually(timeout: .seconds(10)) { held.load(ordering: .relaxed) == 1 }, "the reader is held in the callback")
            if handledFirst {
                cat.send(SIGUSR1)
                #expect(cat.wait(timeout: .milliseconds(500)) == nil, "a handled signal ended the wait")
            }
            cat.send(SIGKILL)
            #expect(cat.wait(timeout: .seconds(2)) == 128 + SIGKILL, "the reader ended while the callback still ran")
            #expect(!released.load(ordering: .relaxed) && held.load(ordering: .relaxed) == 1)
            released.store(true, ordering: .relaxed)
            #expect(try readOnce(mount.path("stuck")) == "released true\n")
        }

        /// Reads the file `sys.argv[1]` once, with a handler for SIGUSR1 that returns (and the
        /// signal unblocked: a child inherits the test process's mask).
        static let readWithAHandler = """
            import os, signal, sys
            signal.signal(signal.SIGUSR1, lambda number, frame: None)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR1])
            os.read(os.open(sys.argv[1], os.O_RDONLY), 4096)
            """

        /// The kernel may keep a directory's listing (`cache_readdir`), as it keeps tmpfs's,
        /// yet never shows a stale one, as /proc never does: an entry added is listed at once,
        /// one removed is gone at once, while another thread lists the directory all the time
        /// so that listings it caches race the changes.
        @Test(arguments: Library.directIO)
        func listingsAreNeverStaleThoughTheKernelKeepsThem(directIO: Bool) throws {
            let tree = ProcTree()
            let directory = try tree.makeDirectory("d")
            for number in 0..<50 { try tree.register("f\(number)", in: directory) { "" } }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }
            let stop = Atomic<Bool>(false)
            let lister = try JoinableThread(name: "lister") {
                while !stop.load(ordering: .relaxed) { _ = try? listing(mount.path("d")) }
            }
            defer {
                stop.store(true, ordering: .relaxed)
                #expect(lister.join(timeout: .seconds(10)))
            }
            // Unlike procfs, whose directories keep the time they were made, the time moves
            // with each change of the entries (as on tmpfs): it is how the kernel knows that a
            // listing it kept is stale.
            var before = stat()
            var after = stat()
            #expect(stat(mount.path("d"), &before) == 0)
            try tree.remove(try tree.register("moved", in: directory) { "" })
            #expect(stat(mount.path("d"), &after) == 0)
            #expect(after.st_mtim.tv_sec * 1_000_000_000 + after.st_mtim.tv_nsec
                    == before.st_mtim.tv_sec * 1_000_000_000 + before.st_mtim.tv_nsec + 2)
            for round in 0..<200 {
                let entry = try tree.register("new\(round)", in: directory) { "" }
                #expect(try listing(mount.path("d")).contains("new\(round)"), "round \(round): an entry added is listed")
                try tree.remove(entry)
                #expect(try !listing(mount.path("d")).contains("new\(round)"), "round \(round): an entry removed is gone")
            }
            #expect(try listing(mount.path("d")).count == 52)
        }

        /// Bytes, NUL bytes and all, read as they are, in both modes.
        @Test(arguments: Library.directIO)
        func byteContentReadsAsItIs(directIO: Bool) throws {
            let tree = ProcTree()
            let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
            try tree.registerBytes("bytes") { bytes }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }
            let descriptor = open(mount.path("bytes"), O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            var read: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let count = Glibc.read(descriptor, &buffer, buffer.count)
                try #require(count >= 0)
                if count == 0 { break }
                read += buffer[..<count]
            }
            #expect(read == bytes)
        }

        /// A text far larger than one read, whole at every offset and with every buffer size.
        @Test(arguments: Library.directIO, [false, true])
        func largeTextsReadWholeAtEveryOffset(directIO: Bool, announcesChanges: Bool) throws {
            let text = (0..<40_000).map { "line \($0)\n" }.joined()
            let bytes = Array(text.utf8)
            let tree = ProcTree()
            try tree.register("big", announcesChanges: announcesChanges) { text }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }

            // In page-cache mode the kernel asks for the attributes of a file that does not
            // announce its changes before every read, and the text is made anew for each: 7-byte
            // reads of 290 KB would take a minute there, so that case reads 1021 bytes at a time.
            let smallest = directIO || announcesChanges ? 7 : 1021
            for chunk in [smallest, 4096, 65_536, 1 << 20] {
                #expect(try readText(mount.path("big"), chunk: chunk) == text, "\(chunk)-byte reads")
            }
            let descriptor = open(mount.path("big"), O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            var buffer = [UInt8](repeating: 0, count: 10_000)
            for offset in [0, 1, 4095, 4096, 4097, 131_071, 200_000, bytes.count - 1] {
                let count = pread(descriptor, &buffer, buffer.count, off_t(offset))
                let expected = bytes[offset..<min(offset + buffer.count, bytes.count)]
                #expect(count == expected.count && buffer[0..<max(count, 0)] == expected, "at offset \(offset)")
            }
            #expect(pread(descriptor, &buffer, buffer.count, off_t(bytes.count)) == 0)
            #expect(pread(descriptor, &buffer, buffer.count, off_t(bytes.count + 100)) == 0)
            var attributes = stat()
            // A file that does not announce its changes has size 0 in direct_io mode, as in procfs.
            #expect(stat(mount.path("big"), &attributes) == 0)
            #expect(Int(attributes.st_size) == (directIO && !announcesChanges ? 0 : bytes.count))
        }

        /// A change between two reads of one open: in direct_io mode the reads go on in the text
        /// the first one took, as procfs's seq_file does; in page-cache mode, where all opens of
        /// the file share the kernel's cache, they go on in the new text. This is the one
        /// difference of the page-cache mode that the README's table of modes names.
        @Test(arguments: Library.directIO)
        func aRunOfReadsAcrossAChange(directIO: Bool) throws {
            let text = Mutex("AAAAAAAAAA\n")
            let tree = ProcTree()
            let entry = try tree.register("text", announcesChanges: true) { text.withLock { $0 } }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }

            let descriptor = open(mount.path("text"), O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(read(descriptor, &buffer, 5) == 5)
            text.withLock { $0 = "BBBBBBBBBB\n" }
            entry.changed()
            let rest = read(descriptor, &buffer[5], 59)
            let seen = String(decoding: buffer[0..<5 + max(rest, 0)], as: UTF8.self)
            #expect(seen == (directIO ? "AAAAAAAAAA\n" : "AAAAABBBBB\n"))
            #expect(pread(descriptor, &buffer, 64, 0) == 11)
            #expect(String(decoding: buffer[0..<11], as: UTF8.self) == "BBBBBBBBBB\n", "a re-read from 0 takes the new text")
        }

        /// The moment the README's page-cache section names, brought about on purpose: a change
        /// that reaches the kernel while a reader's attribute request is in flight makes the
        /// kernel drop the reply (`fuse_change_attributes_i`: older than the invalidation), and
        /// that read copies the text cached before; the next read is current. Below a dynamic
        /// directory the kernel asks for attributes at every read, so a change made while the
        /// text is made, inside that request, overtakes its reply every time. In direct_io mode
        /// every read makes the text, and is current.
        @Test(arguments: Library.directIO)
        func aReadThatAChangeOvertakesGetsTheTextCachedBefore(directIO: Bool) throws {
            let tree = ProcTree()
            let text = Mutex("A\n")
            let changeWhileMade = Atomic<Bool>(false)
            let state = Mutex<ProcEntry?>(nil)
            try tree.makeDynamicDirectory("d", names: { [1] }) { tree, name, directory in
                let entry = try tree.register("\(name)", in: directory, announcesChanges: true) {
                    if changeWhileMade.exchange(false, ordering: .relaxed) { state.withLock { $0 }?.changed() }
                    return text.withLock { $0 }
                }
                state.withLock { $0 = entry }
            }
            // The entry's closure holds `state`, which holds the entry: let go after the test.
            defer { state.withLock { $0 = nil } }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }
            let descriptor = open(mount.path("d/1"), O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            // Attributes given for no time are stale at once (`fuse_time_to_jiffies` makes 0
            // of 0): each read in page-cache mode asks for them.
            func reread() throws -> String { try MountTests.ProcReference.reread(descriptor) }
            #expect(try reread() == "A\n")
            text.withLock { $0 = "B\n" }
            #expect(try reread() == "B\n", "a change no notice overtakes is read at once")
            text.withLock { $0 = "C\n" }
            changeWhileMade.store(true, ordering: .relaxed)
            let overtaken = try reread()
            let made = !changeWhileMade.load(ordering: .relaxed)
            #expect(made, "the text was made for this read")
            #expect(overtaken == (directIO ? "C\n" : "B\n"), "the overtaken read")
            #expect(try reread() == "C\n", "the read after it")
        }

        /// Two attribute requests around a change, brought about on purpose: the first (a `stat`
        /// on another thread) makes its text and is held there; the file changes; a second
        /// request (a `stat` on the test's thread) is answered with the new text, which the
        /// kernel keeps; then the first goes on. It must not undo the second: at the next change
        /// the kernel is told, and a `stat` and a read show the newest text. Each text is longer
        /// than the one before, so a size kept too long shows too.
        @Test(arguments: Library.directIO)
        func aRequestHeldAcrossAChangeLeavesTheNextChangeTold(directIO: Bool) throws {
            let tree = ProcTree()
            let text = Mutex("A\n")
            let holdNext = Atomic<Bool>(false)
            let held = Atomic<Bool>(false)
            let released = Atomic<Bool>(false)
            let heldUntilReleased = Atomic<Bool>(false)
            let entry = try tree.register("file", announcesChanges: true) {
                let made = text.withLock { $0 }
                if holdNext.exchange(false, ordering: .relaxed) {
                    held.store(true, ordering: .releasing)
                    // Bounded: a test that fails on the way must not leave a request thread here.
                    let waited = eventually(timeout: .seconds(10)) { released.load(ordering: .acquiring) }
                    heldUntilReleased.store(waited, ordering: .releasing)
                }
                return made
            }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }
            let path = mount.path("file")
            #expect(try readText(path) == "A\n")
            // The kernel keeps what it was given; the change tells it, so the next stat asks.
            holdNext.store(true, ordering: .relaxed)
            entry.changed()
            let first = try JoinableThread(name: "first") {
                var attributes = stat()
                _ = stat(path, &attributes)
            }
            defer {
                released.store(true, ordering: .releasing)
                _ = first.join(timeout: .seconds(10))
            }
            try #require(eventually(timeout: .seconds(5)) { held.load(ordering: .acquiring) }, "the first request did not come")
            text.withLock { $0 = "BB\n" }
            entry.changed()
            var attributes = stat()
            #expect(stat(path, &attributes) == 0 && attributes.st_size == 3, "the second request gets the new text")
            released.store(true, ordering: .releasing)
            try #require(first.join(timeout: .seconds(10)), "the first request did not end")
            let heldThroughout = heldUntilReleased.load(ordering: .acquiring)
            #expect(heldThroughout, "the first request went on before the second was answered")

            text.withLock { $0 = "CCC\n" }
            entry.changed()
            #expect(stat(path, &attributes) == 0 && attributes.st_size == 4, "the kernel was told of the change")
            #expect(try readText(path) == "CCC\n")
        }

        /// poll and epoll on a file whose changes the test makes: no report before a change,
        /// `POLLPRI|POLLERR` once after it, and a sleeper woken by a change on another thread.
        @Test(arguments: Library.directIO)
        func pollReportsEachChangeOnceAndWakesSleepers(directIO: Bool) throws {
            let tree = ProcTree()
            let entry = try tree.register("text", announcesChanges: true) { "text\n" }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }
            let descriptor = open(mount.path("text"), O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            // Timeouts above 0: only a poll that may sleep says which open asks in page-cache mode.
            var urgent = pollfd(fd: descriptor, events: Int16(POLLPRI), revents: 0)
            #expect(poll(&urgent, 1, 50) == 0, "no change since the open")
            entry.changed()
            #expect(poll(&urgent, 1, 50) == 1 && urgent.revents == Int16(POLLPRI | POLLERR))
            #expect(poll(&urgent, 1, 50) == 0, "each change is reported once")

            let changer = try JoinableThread(name: "changer") {
                usleep(100_000)
                entry.changed()
            }
            defer { _ = changer.join(timeout: .seconds(5)) }
            let clock = ContinuousClock()
            let start = clock.now
            #expect(poll(&urgent, 1, 5000) == 1 && urgent.revents == Int16(POLLPRI | POLLERR))
            #expect(clock.now - start < .seconds(4), "woken by the change, not by the timeout")

            let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
            try #require(epoll >= 0)
            defer { close(epoll) }
            var interest = epoll_event(events: EPOLLPRI.rawValue, data: epoll_data_t(fd: descriptor))
            #expect(epoll_ctl(epoll, EPOLL_CTL_ADD, descriptor, &interest) == 0)
            var ready = epoll_event()
            #expect(epoll_wait(epoll, &ready, 1, 50) == 0)
            let second = try JoinableThread(name: "changer") {
                usleep(100_000)
                entry.changed()
            }
            defer { _ = second.join(timeout: .seconds(5)) }
            #expect(epoll_wait(epoll, &ready, 1, 5000) == 1)
            #expect(ready.events & EPOLLPRI.rawValue != 0 && ready.events & EPOLLERR.rawValue != 0)
        }

        /// Nested directories with their modes, owners, link counts and inode numbers.
        @Test(arguments: Library.directIO)
        func nestedDirectoriesShowTheirAttributes(directIO: Bool) throws {
            let tree = ProcTree()
            let net = try tree.makeDirectory("net", permissions: FilePermissions(rawValue: 0o550))
            let ipv4 = try tree.makeDirectory("ipv4", in: net)
            try tree.makeDirectory("ipv6", in: net)
            let forward = try tree.registerKnob("forward", in: ipv4, permissions: FilePermissions(rawValue: 0o600), owner: ProcOwner(uid: 0, gid: 7),
                                                content: { "0\n" }, store: { _ throws(Errno) in })
            try tree.makeSymlink("self", target: "net/ipv4")
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }

            var attributes = stat()
            #expect(stat(mount.path("net"), &attributes) == 0)
            #expect(attributes.st_mode == S_IFDIR | 0o550 && attributes.st_nlink == 4 && attributes.st_ino == net.inode)
            #expect(stat(mount.path("net/ipv4"), &attributes) == 0)
            #expect(attributes.st_nlink == 2 && attributes.st_ino == ipv4.inode)
            #expect(stat(mount.path("net/ipv4/forward"), &attributes) == 0)
            #expect(attributes.st_mode == S_IFREG | 0o600 && attributes.st_gid == 7 && attributes.st_ino == forward.inode)
            #expect(lstat(mount.path("self"), &attributes) == 0 && attributes.st_mode == S_IFLNK | 0o777)
            #expect(try readText(mount.path("self/forward")) == "0\n", "through the symlink")
            #expect(try listing(mount.path("net")) == [".", "..", "ipv4", "ipv6"])
            #expect(failure(open(mount.path("net/ipv4/forward/x"), O_RDONLY)) == ENOTDIR)
            #expect(failure(mkdir(mount.path("net/ipv4/new"), 0o755)) == ENOENT)

            // A directory added or removed at run time changes its parent's link count at once.
            let ipx = try tree.makeDirectory("ipx", in: net)
            #expect(stat(mount.path("net"), &attributes) == 0 && attributes.st_nlink == 5)
            try tree.remove(ipx)
            #expect(stat(mount.path("net"), &attributes) == 0 && attributes.st_nlink == 4)
        }

        /// An open directory lists what it held at open however entries come and go, each
        /// once; `rewinddir` shows the tree as it is now.
        @Test(arguments: Library.directIO)
        func readdirStaysTrueWhileEntriesComeAndGo(directIO: Bool) throws {
            let tree = ProcTree()
            let directory = try tree.makeDirectory("d")
            for number in 0..<300 { try tree.register("file\(number)", in: directory) { "\(number)\n" } }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }

            let open = try #require(opendir(mount.path("d")))
            defer { closedir(open) }
            var names: [String] = []
            for _ in 0..<100 {
                guard let entry = readdir(open) else { break }
                names.append(name(of: entry))
            }
            for number in 0..<300 where number % 2 == 0 { try tree.remove("file\(number)", in: directory) }
            for number in 300..<350 { try tree.register("file\(number)", in: directory) { "" } }
            while let entry = readdir(open) { names.append(name(of: entry)) }
            #expect(names.count == 302, "each entry of the listing at open, once")
            #expect(Set(names) == Set([".", ".."] + (0..<300).map { "file\($0)" }))

            rewinddir(open)
            var now: [String] = []
            while let entry = readdir(open) { now.append(name(of: entry)) }
            let expected = [".", ".."] + ((0..<300).filter { $0 % 2 == 1 } + Array(300..<350)).map { "file\($0)" }
            #expect(Set(now) == Set(expected) && now.count == expected.count)
        }

        /// procfs's removal: new opens fail with ENOENT at once, open files read and fstat EIO
        /// and poll POLLERR|POLLHUP, and a new entry of that name is never the old one to the
        /// kernel: its file handle has a node id of its own.
        @Test(arguments: Library.directIO)
        func removalHidesTheNameAtOnceAndOpenFilesReadEIO(directIO: Bool) throws {
            let tree = ProcTree()
            let entry = try tree.register("gone", announcesChanges: true) { "still here\n" }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }

            let descriptor = open(mount.path("gone"), O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(pread(descriptor, &buffer, buffer.count, 0) == 11)
            try tree.remove(entry)
            var attributes = stat()
            #expect(failure(stat(mount.path("gone"), &attributes)) == ENOENT)
            #expect(failure(open(mount.path("gone"), O_RDONLY)) == ENOENT)
            #expect(failure(Int32(pread(descriptor, &buffer, buffer.count, 0))) == EIO)
            #expect(failure(Int32(read(descriptor, &buffer, buffer.count))) == EIO)
            #expect(failure(fstat(descriptor, &attributes)) == EIO)
            var polled = pollfd(fd: descriptor, events: Int16(POLLIN | POLLPRI), revents: 0)
            #expect(poll(&polled, 1, 1000) == 1)
            #expect(polled.revents == Int16(POLLERR | POLLHUP))

            let replacement = try tree.register("gone") { "new\n" }
            #expect(try readText(mount.path("gone")) == "new\n")
            #expect(stat(mount.path("gone"), &attributes) == 0 && attributes.st_ino == replacement.inode)
            let handle = try #require(fuseFileHandle(mount.path("gone")))
            #expect(handle.node == replacement.inode && handle.generation == 0, "\(handle)")
            #expect(handle.node != entry.inode, "the kernel cannot tell the new entry from the removed one: \(handle)")
        }
    }
}
