import CLinux
import Glibc
import Testing

/// The real /proc is the reference: each test runs one probe on a kernel file and on the mount,
/// in the same test, and expects the same result, in both read modes.
extension MountTests {
    @Suite struct ProcReference {
        /// A `/proc/sys` integer (`proc_dointvec`, no range) whose value the test saves first
        /// and restores however the test ends.
        static let sysctl = "/proc/sys/kernel/printk_ratelimit_burst"

        /// One way of writing to a knob: the bytes, the open flags beside `O_WRONLY`, and
        /// whether each write goes at an offset (`pwrite`) and how many times it is made.
        struct KnobWrite: Sendable, CustomTestStringConvertible {
            var text: String
            var flags: Int32 = O_TRUNC
            var offset: off_t? = nil
            var times = 1
            var testDescription: String {
                "\(text.debugDescription)\(flags & O_APPEND != 0 ? " appended" : "")"
                    + "\(offset.map { " at \($0)" } ?? "")\(times > 1 ? " \(times) times" : "")"
            }
        }

        static let knobWrites: [KnobWrite] = [
            KnobWrite(text: "50\n"),
            KnobWrite(text: "50"),
            KnobWrite(text: "  50  \n"),
            KnobWrite(text: "\t50\n"),
            KnobWrite(text: "0x32\n"),
            KnobWrite(text: "062\n"),
            KnobWrite(text: "+50\n"),
            KnobWrite(text: "50x\n"),
            KnobWrite(text: "08\n"),
            KnobWrite(text: "1.5\n"),
            KnobWrite(text: "\n"),
            KnobWrite(text: "99999999999\n"),
            KnobWrite(text: "5 0\n"),
            KnobWrite(text: "50\n", flags: O_APPEND),
            KnobWrite(text: "60\n", flags: O_APPEND, times: 2),
            KnobWrite(text: "50\n", times: 2),
            KnobWrite(text: "50", flags: 0, offset: 2),
        ]

        /// What a write did: each call's result (bytes written, or minus the errno), and the
        /// value read back afterwards.
        struct Outcome: Equatable, CustomStringConvertible {
            var results: [Int]
            var after: String
            var description: String { "\(results) then \(after.debugDescription)" }
        }

        static func outcome(of write: KnobWrite, to path: String) throws -> Outcome {
            let descriptor = open(path, O_WRONLY | write.flags)
            guard descriptor >= 0 else { throw SystemError(errno: errno) }
            var results: [Int] = []
            for _ in 0..<write.times {
                let result = write.text.withCString { bytes in
                    if let offset = write.offset { pwrite(descriptor, bytes, strlen(bytes), offset) }
                    else { Glibc.write(descriptor, bytes, strlen(bytes)) }
                }
                results.append(result < 0 ? -Int(errno) : result)
            }
            close(descriptor)
            return Outcome(results: results, after: try readText(path))
        }

        /// Writes as `/proc/sys` takes them: white space, hex and octal, `>>`, a second write
        /// on one descriptor, a write past offset 0, a partial take, and every refusal.
        @Test(arguments: MountTests.readModes, knobWrites)
        func aKnobTakesWritesAsAProcSysInteger(mode: [String], write: KnobWrite) throws {
            let saved = try readText(Self.sysctl)
            defer { _ = try? writeText(Self.sysctl, saved) }
            let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
            defer { mount.cleanUp() }
            try writeText(Self.sysctl, "100\n")
            #expect(try readText(mount.path("timer/hz")) == "100\n")

            let reference = try Self.outcome(of: write, to: Self.sysctl)
            let knob = try Self.outcome(of: write, to: mount.path("timer/hz"))
            #expect(knob == reference, "\(Self.sysctl) gave \(reference); timer/hz gave \(knob)")
        }

        /// The shell's own `echo N >> file`, beside the same on `/proc/sys`.
        @Test(arguments: MountTests.readModes)
        func echoAppendingWorksAsOnProcSys(mode: [String]) throws {
            let saved = try readText(Self.sysctl)
            defer { _ = try? writeText(Self.sysctl, saved) }
            let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
            defer { mount.cleanUp() }
            for path in [Self.sysctl, mount.path("timer/hz")] {
                let shell = try runCommand("/bin/sh", ["-c", "echo 50 >> \(path)"])
                #expect(shell.status == 0, "echo 50 >> \(path): \(shell.stderr)")
                #expect(try readText(path) == "50\n", "\(path)")
            }
        }

        /// A `/proc/sys` file that wakes its pollers after every write (`proc_sys_poll_notify`),
        /// even one that changes nothing; the test writes its own value back, and restores it
        /// however the test ends.
        static let pollingSysctl = "/proc/sys/kernel/hostname"

        /// A poller of a knob wakes after every write to it, as a poller of
        /// `/proc/sys/kernel/hostname` does: `POLLPRI|POLLERR` once per write, and nothing
        /// before the first. `timer/hz` is a knob schedfs does not register as announcing.
        /// The poller first sleeps once, as a program waiting for a change does: in page-cache
        /// mode the kernel opens files itself, and the server meets an open at its first
        /// sleeping poll.
        @Test(arguments: MountTests.readModes)
        func aKnobWakesItsPollersAfterEachWriteAsHostnameDoes(mode: [String]) throws {
            let saved = try readText(Self.pollingSysctl)
            defer { _ = try? writeText(Self.pollingSysctl, saved) }
            let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
            defer { mount.cleanUp() }
            let events = Int16(POLLIN | POLLPRI)
            for (path, value) in [(Self.pollingSysctl, saved), (mount.path("timer/hz"), "100\n")] {
                let descriptor = open(path, O_RDONLY)
                try #require(descriptor >= 0, "open \(path): \(SystemError(errno: errno))")
                defer { close(descriptor) }
                var before = pollfd(fd: descriptor, events: Int16(POLLPRI), revents: 0)
                #expect(poll(&before, 1, 100) == 0, "\(path) before a write: \(before.revents)")
                for write in 1...3 {
                    try writeText(path, value)
                    var woken = pollfd(fd: descriptor, events: events, revents: 0)
                    #expect(poll(&woken, 1, 2000) == 1, "\(path), write \(write)")
                    #expect(woken.revents == Int16(POLLIN | POLLPRI | POLLERR), "\(path), write \(write): \(woken.revents)")
                    var again = pollfd(fd: descriptor, events: events, revents: 0)
                    #expect(poll(&again, 1, 0) == 1 && again.revents == Int16(POLLIN), "\(path) after write \(write) was reported: \(again.revents)")
                }
            }
        }
    }
}

/// Reads, held files, inotify and poll: the same probe on `/proc` and on the mount.
extension MountTests.ProcReference {
    /// Reads what a held file shows from offset 0, with `pread` or with `lseek` and `read`.
    static func reread(_ descriptor: Int32, seeking: Bool = false) throws -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count: Int
        if seeking {
            guard lseek(descriptor, 0, SEEK_SET) == 0 else { throw SystemError(errno: errno) }
            count = read(descriptor, &buffer, buffer.count)
        } else {
            count = pread(descriptor, &buffer, buffer.count, 0)
        }
        guard count >= 0 else { throw SystemError(errno: errno) }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    /// How far on a text of `sched` or of an `uptime` is: its count, or its seconds up.
    static func progress(_ text: String, path: String) -> Double? {
        if path.hasSuffix("/sched") { return parseSched(text).map(Double.init) }
        return parseUptime(text)
    }

    /// procps's way of reading /proc: keep the file open and re-read it from the start.
    @Test(arguments: MountTests.readModes, [false, true])
    func aHeldFileReReadFromTheStartShowsTheCurrentText(mode: [String], seeking: Bool) throws {
        let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
        defer { mount.cleanUp() }
        for path in ["/proc/uptime", mount.path("sched"), mount.path("uptime")] {
            let descriptor = open(path, O_RDONLY)
            try #require(descriptor >= 0, "\(path)")
            defer { close(descriptor) }
            let first = try Self.reread(descriptor, seeking: seeking)
            // However slow this machine: wait until a fresh open shows a newer text; the held
            // file must then show one at least as new. (Not a fixed sleep: in page-cache mode a
            // read whose attribute request a tick overtakes copies the pages of the read
            // before, as the README says, and a loaded machine widens that moment.)
            var fresh = first
            try #require(eventually(timeout: .seconds(10), every: .milliseconds(10)) {
                fresh = (try? readOnce(path)) ?? first
                return fresh != first
            }, "\(path) showed \(first.debugDescription) to fresh opens for 10 s")
            let second = try Self.reread(descriptor, seeking: seeking)
            #expect(first != second, "\(path) re-read showed \(second.debugDescription) again")
            let now = try #require(Self.progress(second, path: path), "\(path) read \(second.debugDescription)")
            let before = try #require(Self.progress(fresh, path: path), "\(path) read \(fresh.debugDescription)")
            #expect(now >= before, "\(path): held re-read \(second.debugDescription), a fresh open before it \(fresh.debugDescription)")
        }
    }

    /// A reader that keeps `sched` open and re-reads it every 10 ms sees every count. (20 Hz
    /// here, so that a reader off the CPU for a moment in a sanitizer build misses nothing;
    /// `make bench` checks 100 Hz.)
    @Test(arguments: MountTests.readModes)
    func aHeldReaderSeesEveryTick(mode: [String]) throws {
        let mount = try MountedSchedfs(options: ["-o", "hz=20"] + mode)
        defer { mount.cleanUp() }
        // sched announces its changes: fstat gives the size of what it reads, unlike /proc.
        let descriptor = open(mount.path("sched"), O_RDONLY)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        let clock = ContinuousClock()
        let end = clock.now + .milliseconds(1500)
        var seen: Set<UInt64> = []
        while clock.now < end {
            let text = try Self.reread(descriptor)
            seen.insert(try #require(parseSched(text), "read \(text.debugDescription)"))
            usleep(10_000)
        }
        let first = try #require(seen.min()), last = try #require(seen.max())
        #expect((first...last).allSatisfy(seen.contains), "missed \((first...last).filter { !seen.contains($0) })")
        #expect(last - first >= 20, "1.5 s at 20 Hz went from \(first) to \(last)")
    }

    /// Every inotify event a watch can ask for (`IN_ALL_EVENTS`, a macro Swift cannot import).
    static let allInotifyEvents: UInt32 = 0xFFF

    /// An open file keeps its name and inode number while it exists: `/proc/PID/fd` does not
    /// say `(deleted)`, and inotify sees no `DELETE_SELF`, `DELETE`, `MOVE_SELF` or `IGNORED`.
    @Test(arguments: MountTests.readModes)
    func nothingLooksDeletedWhileItExists(mode: [String]) throws {
        let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
        defer { mount.cleanUp() }
        for (file, directory) in [("/proc/uptime", "/proc"), (mount.path("sched"), mount.mountpoint)] {
            let watcher = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
            try #require(watcher >= 0)
            defer { close(watcher) }
            #expect(inotify_add_watch(watcher, file, Self.allInotifyEvents) >= 0)
            #expect(inotify_add_watch(watcher, directory, Self.allInotifyEvents) >= 0)
            var before = stat()
            #expect(stat(file, &before) == 0)
            let descriptor = open(file, O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            for _ in 0..<30 {
                _ = try Self.reread(descriptor)
                _ = try readText(file)
                usleep(10_000)
            }
            var held = stat(), now = stat()
            #expect(fstat(descriptor, &held) == 0 && stat(file, &now) == 0)
            #expect(held.st_ino == before.st_ino && now.st_ino == before.st_ino, "\(file)'s inode number changed")
            var target = [CChar](repeating: 0, count: 4096)
            let length = readlink("/proc/self/fd/\(descriptor)", &target, target.count - 1)
            let resolved = String(decoding: target[..<max(length, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            #expect(resolved == file, "/proc/self/fd says \(resolved)")

            var events = [UInt8](repeating: 0, count: 65_536)
            let count = read(watcher, &events, events.count)
            var masks: [UInt32] = []
            var offset = 0
            while offset < max(count, 0) {
                let event = events.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: inotify_event.self) }
                masks.append(event.mask)
                offset += MemoryLayout<inotify_event>.size + Int(event.len)
            }
            let gone = UInt32(IN_DELETE_SELF | IN_DELETE | IN_MOVE_SELF | IN_MOVED_FROM | IN_IGNORED)
            #expect(!masks.contains { $0 & gone != 0 }, "\(file): inotify said \(masks.map { String($0, radix: 16) })")
        }
    }

    /// `fstat` on an open file of a file that announces its changes (`sched`) gives the size of
    /// the text that file reads. /proc says 0, which tools that trust the size read as empty;
    /// schedfs differs on purpose there (see the README). A file that does not announce its
    /// changes reports 0, as /proc does, in direct_io mode.
    @Test(arguments: MountTests.readModes)
    func fstatGivesTheSizeOfWhatTheFileReads(mode: [String]) throws {
        let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
        defer { mount.cleanUp() }
        var attributes = stat()
        let reference = open("/proc/uptime", O_RDONLY)
        defer { close(reference) }
        #expect(fstat(reference, &attributes) == 0 && attributes.st_size == 0, "/proc reports size 0")
        // A file that does not announce its changes reports 0 as /proc does, in direct_io mode;
        // the page cache needs the true size.
        let uptime = open(mount.path("uptime"), O_RDONLY)
        defer { close(uptime) }
        #expect(fstat(uptime, &attributes) == 0)
        #expect(mode.isEmpty ? attributes.st_size == 0 : attributes.st_size > 0, "uptime's size: \(attributes.st_size)")

        let descriptor = open(mount.path("sched"), O_RDONLY)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        // The length changes only at 10, 100, ...: a read, fstat, read of one length must agree.
        var agreed = 0
        for _ in 0..<50 {
            let before = try Self.reread(descriptor)
            #expect(fstat(descriptor, &attributes) == 0)
            let after = try Self.reread(descriptor)
            if before.utf8.count == after.utf8.count, Int(attributes.st_size) == after.utf8.count { agreed += 1 }
            usleep(2000)
        }
        #expect(agreed >= 45, "fstat agreed with the reads around it \(agreed) times of 50")
    }

    /// `sendfile` (Python's `shutil.copyfile`, for one) copies `/proc/uptime` whole. From the
    /// mount it copies `sched` whole in both modes, and `uptime` whole under the page cache;
    /// in direct_io mode it copies nothing of `uptime`, which differs from /proc on purpose:
    /// the kernel splices a FUSE file through the page cache, which stops at the file's size,
    /// and a file that does not announce its changes has size 0 there, as /proc's (see the
    /// README's *Reading*). `read`, which cat and cp use, is not affected.
    @Test(arguments: MountTests.readModes)
    func sendfileCopiesWhatTheSizeAllows(mode: [String]) throws {
        let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
        defer { mount.cleanUp() }
        let scratch = try TemporaryDirectory()
        defer { scratch.remove() }
        /// What sendfile copies of `path` into a file, read back.
        func sent(_ path: String) throws -> String {
            let source = open(path, O_RDONLY)
            try #require(source >= 0, "open \(path): \(SystemError(errno: errno))")
            defer { close(source) }
            let copy = scratch.path + "/copy"
            let target = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            try #require(target >= 0)
            defer { close(target) }
            try #require(sendfile(target, source, nil, 1 << 16) >= 0, "sendfile from \(path): \(SystemError(errno: errno))")
            return readWhole(copy) ?? ""
        }
        let procUptime = try sent("/proc/uptime")
        #expect(procUptime.hasSuffix("\n") && procUptime.split(separator: " ").count == 2, "/proc/uptime copies whole: \(procUptime)")
        let sched = try sent(mount.path("sched"))
        #expect(parseSched(sched) != nil, "sched copies whole: \(sched.debugDescription)")
        let uptime = try sent(mount.path("uptime"))
        // direct_io: size 0, so nothing is spliced (differs from /proc on purpose); page cache: whole.
        #expect(uptime.split(separator: " ").count == (mode.isEmpty ? 0 : 2), "uptime copied as \(uptime.debugDescription)")
    }

    /// Polls as `/proc` and sysfs answer them: readable at once; `POLLPRI` never for a file
    /// that does not announce changes (`/proc/uptime`, the mount's `uptime`), and for `sched`,
    /// which does, `POLLPRI|POLLERR` at its next change, after which a re-read shows it.
    @Test(arguments: MountTests.readModes)
    func pollAnswersAsProcAndSysfsDo(mode: [String]) throws {
        let mount = try MountedSchedfs(options: ["-o", "hz=20"] + mode)
        defer { mount.cleanUp() }
        for path in ["/proc/uptime", mount.path("uptime"), mount.path("sched")] {
            let descriptor = open(path, O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            var readable = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            #expect(poll(&readable, 1, 0) == 1 && readable.revents == Int16(POLLIN), "\(path)")
        }
        for path in ["/proc/uptime", mount.path("uptime")] {
            let descriptor = open(path, O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            var urgent = pollfd(fd: descriptor, events: Int16(POLLPRI), revents: 0)
            #expect(poll(&urgent, 1, 200) == 0, "\(path) reported \(urgent.revents)")
        }

        let descriptor = open(mount.path("sched"), O_RDONLY)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        let first = try #require(parseSched(try Self.reread(descriptor)))
        var last = first
        // Each report is of a change not reported before, so five reports span five ticks.
        for _ in 0..<5 {
            var urgent = pollfd(fd: descriptor, events: Int16(POLLPRI), revents: 0)
            #expect(poll(&urgent, 1, 2000) == 1)
            #expect(urgent.revents == Int16(POLLPRI | POLLERR))
            let count = try #require(parseSched(try Self.reread(descriptor)))
            #expect(count >= last, "woken, the re-read showed \(count) after \(last)")
            last = count
        }
        #expect(last >= first + 3, "five wake-ups took the count only from \(first) to \(last)")
    }
}
