import Glibc
import KernelSync
import ProcFS
import Synchronization
import Testing

/// The mount, the count and every reader outlive the server: schedfs's keeper holds the mount
/// and starts another server when one is killed.
extension MountTests {
    @Suite struct Survival {
        /// `kill -9` of the serving process 20 times under 8 readers (fresh opens, held files,
        /// pollers, writes to `timer/hz`): no reader sees an error or a bad text, no count goes
        /// back, the count keeps the pace of `hz` over the whole run, and nothing is left after
        /// the final unmount.
        @Test(arguments: MountTests.readModes)
        func killingTheServerLosesNothing(mode: [String]) throws {
            try Self.replaceTheServer(mode: mode, as: "kill -9", told: "serves in its place") { _, mount, server in
                kill(server, SIGKILL)
            }
        }

        /// A server that stops answering (SIGSTOP leaves it as a deadlock would: alive, reading
        /// nothing) is replaced, 10 times under the same 8 readers: no reader sees an error, a
        /// bad text or a count going back, and none waits 1.5 s for a read. `hang_timeout` is
        /// 500 ms here (1 s by default): the load's pollers give up after 1 s. Each new server
        /// serves half a second before it is stopped.
        @Test(arguments: MountTests.readModes)
        func aServerThatStopsAnsweringIsReplaced(mode: [String]) throws {
            try Self.replaceTheServer(
                10, mode: mode + ["-o", "hang_timeout=500"], as: "SIGSTOP", told: "is stuck: ",
                longestWait: .milliseconds(1500), findsStuckServers: true, settle: .milliseconds(500)
            ) { _, _, server in
                kill(server, SIGSTOP)
            }
        }

        /// `schedfs --upgrade` and SIGUSR2, 10 times each, under the same 8 readers: the same
        /// as for `kill -9`, each upgrade a new server of the binary on disk.
        @Test(arguments: MountTests.readModes)
        func upgradingLosesNothing(mode: [String]) throws {
            let binary = try schedfsBinary()
            try Self.replaceTheServer(mode: mode, as: "upgrade", told: "upgrade: pid") { round, mount, _ in
                if round % 2 == 0 {
                    let asked = try runCommand(binary, ["--upgrade", mount.mountpoint], timeout: .seconds(30))
                    #expect(asked.status == 0 && asked.stdout.hasPrefix("schedfs: upgraded: pid "), "\(asked)")
                } else {
                    kill(mount.daemon.pid, SIGUSR2)
                }
            }
        }

        /// Mounts, starts the readers, has `replace` end the server `rounds` times (each time the
        /// keeper logs `told`, a new one must serve), and checks what the readers saw (in
        /// page-cache mode, a text the kernel's own race tore as the count gained a digit, at
        /// 1000, is counted apart: see ``SurvivalLoad/Seen/tornByTheKernel``), the pace,
        /// that no reader waited `longestWait` or more for a read, and that the final unmount
        /// leaves nothing.
        static func replaceTheServer(
            _ rounds: Int = 20, mode: [String], as name: String, told: String, longestWait: Duration = .seconds(5),
            findsStuckServers: Bool = false, settle: Duration = .milliseconds(150),
            _ replace: (_ round: Int, _ mount: MountedSchedfs, _ server: pid_t) throws -> Void
        ) throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
            defer { mount.cleanUp() }
            try passTheKnownPageCacheRace(mount, mode: mode)
            let load = try SurvivalLoad(mount)
            let (startCount, started) = try tick(of: mount)

            var servers = Set<pid_t>()
            for round in 1...rounds {
                let server = try #require(Self.server(of: mount), "no server before \(name) \(round)")
                servers.insert(server)
                try replace(round, mount, server)
                let replaced = eventually(timeout: .seconds(5)) {
                    mount.log.components(separatedBy: told).count == round + 1
                        && Self.server(of: mount).map { $0 != server } ?? false
                }
                try #require(replaced, "\(name) \(round) did not replace \(server) within 5 s; log:\n\(mount.log)")
                usleep(UInt32(settle.components.attoseconds / 1_000_000_000_000 + settle.components.seconds * 1_000_000))
            }
            usleep(300_000)
            let (endCount, ended) = try tick(of: mount)
            let elapsed = (ended - started).dispatchSeconds
            let seen = load.stop()

            #expect(servers.count == rounds, "\(rounds) servers replaced, each once")
            // A healthy server is never taken for a stuck one, under this load either.
            #expect(mount.log.contains("is stuck: ") == findsStuckServers, "log:\n\(mount.log)")
            #expect(!mount.log.contains("no longer watching for stuck servers"), "log:\n\(mount.log)")
            #expect(seen.longestStall < longestWait, "a reader waited \(seen.longestStall)")
            #expect(seen.errors.isEmpty, "errors: \(seen.errors.prefix(5))")
            #expect(seen.bad.isEmpty, "bad texts: \(seen.bad.prefix(5))")
            #expect(seen.backwards.isEmpty, "counts that went back: \(seen.backwards.prefix(5))")
            #expect(seen.reads > 1000 && seen.polls > rounds + 10 && seen.writes > rounds, "\(seen)")
            let pace = Double(endCount - startCount) / elapsed / 100
            #expect(abs(pace - 1) <= 0.01, "the count grew at \(pace) × hz over \(elapsed) s")
            print("\(name) × \(rounds) (\(mode.contains("page_cache") ? "page_cache" : "direct_io")): \(seen), pace \(pace) (\(startCount) to \(endCount) in \(elapsed) s), longest stall \(seen.longestStall)")

            #expect(try unmountWhenFree(mount.mountpoint).status == 0)
            #expect(mount.daemon.wait(timeout: .seconds(5)) == 0, "log:\n\(mount.log)")
            #expect(eventually(timeout: .seconds(5)) { livePIDs(mentioning: mount.root.path).isEmpty })
        }

        /// A reader between two reads of a text when the server is replaced gets the rest of
        /// that text, though the text grew by a digit meanwhile: at 99 (hz lowered to 5, so the
        /// count stays for 200 ms) one open has read 1 byte of `sched` and another the whole
        /// text but not its end of file; the server is killed or upgraded; once fresh reads
        /// show 100, both go on, and each gets exactly the text of 99. A seq_file keeps its
        /// text across a pause the same way, which the same probe on /proc/uptime shows.
        @Test(arguments: ["kill -9", "upgrade"])
        func aTextGoesOnAcrossAServerChange(replacement: String) throws {
            let uptimeBefore = try HeldRead("/proc/uptime", first: 1)
            usleep(100_000)
            let uptime = try #require(parseUptime(try uptimeBefore.rest()))
            let uptimeAfter = try #require(parseUptime(try readText("/proc/uptime")))
            #expect(uptimeAfter - uptime >= 0.09, "/proc/uptime's held text is the one its first read made")

            let mount = try MountedSchedfs(options: ["-o", "hz=100"])
            defer { mount.cleanUp() }
            try Self.holdTheCountAt99(mount)
            let oneByte = try HeldRead(mount.path("sched"), first: 1)
            let whole = try HeldRead(mount.path("sched"), first: 33)
            try #require(try mount.count() == 99, "the count left 99 before both reads began its text (a stall of 200 ms)")

            let server = try #require(Self.server(of: mount))
            try Self.replace(server, of: mount, by: replacement)
            #expect(eventually(timeout: .seconds(5)) { ((try? mount.count()) ?? 0) >= 100 }, "the new server counts on")
            #expect(try oneByte.rest() == "Timer was called 99 times so far\n")
            #expect(try whole.rest() == "Timer was called 99 times so far\n")
        }

        /// In page-cache mode a run of reads is one text when no change falls between them (see
        /// the README's *Reading*): a held reader of `timer/hz`, which no one writes meanwhile,
        /// goes on in its text across a server change too.
        @Test(arguments: ["kill -9", "upgrade"])
        func aPageCacheTextGoesOnAcrossAServerChange(replacement: String) throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=100", "-o", "page_cache"])
            defer { mount.cleanUp() }
            let held = try HeldRead(mount.path("timer/hz"), first: 1)
            let server = try #require(Self.server(of: mount))
            try Self.replace(server, of: mount, by: replacement)
            #expect(try held.rest() == "100\n")
        }

        /// Brings the count to 99 with `hz` lowered to 5 so that it stays there 200 ms: `hz` 25
        /// from 50 and 5 from 90, each step leaving over 350 ms before the next.
        static func holdTheCountAt99(_ mount: MountedSchedfs) throws {
            for (from, hz) in [(50, 25), (90, 5)] {
                try #require(eventually(timeout: .seconds(10)) { ((try? mount.count()) ?? 0) >= from })
                try writeText(mount.path("timer/hz"), "\(hz)\n")
            }
            try #require(try mount.count() < 99, "the count passed 99 before hz was lowered to 5")
            try #require(eventually(timeout: .seconds(5)) { ((try? mount.count()) ?? 0) == 99 })
        }

        /// Ends `server` by `replacement` (`kill -9`, or `schedfs --upgrade`), and waits until
        /// another one serves.
        static func replace(_ server: pid_t, of mount: MountedSchedfs, by replacement: String) throws {
            if replacement == "upgrade" {
                let asked = try runCommand(try schedfsBinary(), ["--upgrade", mount.mountpoint], timeout: .seconds(30))
                try #require(asked.status == 0, "\(asked)")
            } else {
                try #require(kill(server, SIGKILL) == 0)
            }
            let replaced = eventually(timeout: .seconds(5)) { Self.server(of: mount).map { $0 != server } ?? false }
            try #require(replaced, "\(replacement) did not replace \(server) within 5 s; log:\n\(mount.log)")
        }

        /// A server killed before it serves (`kill -9` of each new server in turn) is replaced
        /// as one killed later: the keeper starts another until one serves, and nothing is
        /// lost. So that the kill lands before the server serves, the keeper's binary is, from
        /// the first kill on, a script that waits 1 s before it runs schedfs. (A server killed
        /// by another signal before it serves is one that cannot start.)
        @Test func aServerKilledBeforeItServesIsReplacedToo() throws {
            let built = try schedfsBinary()
            let scratch = try TemporaryDirectory()
            defer { scratch.remove() }
            let binary = scratch.path + "/schedfs"
            try #require(symlink(built, binary) == 0)
            let mount = try MountedSchedfs(options: ["-o", "hz=100"], binary: binary)
            defer { mount.cleanUp() }
            let first = try #require(Self.server(of: mount))
            let slow = scratch.path + "/slow"
            try #require(writeFile(slow, "#!/bin/sh\nsleep 1\nexec '\(built)' \"$@\"\n"))
            try #require(chmod(slow, 0o755) == 0)
            unlink(binary)
            try #require(symlink(slow, binary) == 0)

            let before = try mount.count()
            kill(first, SIGKILL)
            var second: pid_t = 0
            try #require(eventually(timeout: .seconds(5)) {
                second = Self.server(of: mount) ?? first
                return second != first
            }, "no server started in place of \(first)")
            // With the script's own child, `sleep`, which holds the report pipe too: then the
            // pipe ends as the server dies, a moment before its death can be seen.
            var children: [pid_t] = []
            try #require(eventually(timeout: .seconds(5)) {
                children = (readWhole("/proc/\(second)/task/\(second)/children") ?? "").split(separator: " ").compactMap { pid_t($0) }
                return !children.isEmpty
            }, "the script's sleep")
            kill(second, SIGKILL)
            for child in children { kill(child, SIGKILL) }
            try #require(
                eventually(timeout: .seconds(10)) { mount.log.contains("killed by signal 9 before it served; starting another") },
                "log:\n\(mount.log)")
            try #require(eventually(timeout: .seconds(10)) { mount.log.contains("serves in its place") }, "log:\n\(mount.log)")
            let third = try #require(Self.server(of: mount))
            #expect(third != first && third != second)
            #expect(eventually(timeout: .seconds(2)) { ((try? mount.count()) ?? 0) > before }, "the count goes on")
            #expect(try unmountWhenFree(mount.mountpoint).status == 0)
            #expect(mount.daemon.wait(timeout: .seconds(5)) == 0, "log:\n\(mount.log)")
        }

        /// An upgrade to a binary that cannot serve (one that exits at once, or none at all)
        /// leaves the old server serving, and the command says why and exits 1; once the binary
        /// is back, the upgrade works.
        @Test func anUpgradeThatCannotStartLeavesTheOldServerServing() throws {
            let built = try schedfsBinary()
            let scratch = try TemporaryDirectory()
            defer { scratch.remove() }
            let binary = scratch.path + "/schedfs"
            try #require(symlink(built, binary) == 0)
            let mount = try MountedSchedfs(options: ["-o", "hz=100"], binary: binary)
            defer { mount.cleanUp() }
            let server = try #require(Self.server(of: mount))

            for (replacement, reason) in [("/bin/false", "exited before it served"), (nil, "No such file or directory")] {
                unlink(binary)
                if let replacement { try #require(symlink(replacement, binary) == 0) }
                let before = try mount.count()
                let asked = try runCommand(built, ["--upgrade", mount.mountpoint], timeout: .seconds(30))
                #expect(asked.status == 1, "\(asked)")
                let lines = asked.stderr.split(separator: "\n")
                #expect(lines.count == 1 && lines[0].hasPrefix("schedfs: ") && asked.stderr.contains(reason), "\(asked.stderr)")
                #expect(Self.server(of: mount) == server, "the old server serves on")
                #expect(eventually(timeout: .seconds(1)) { ((try? mount.count()) ?? 0) > before }, "and counts on")
            }
            unlink(binary)
            try #require(symlink(built, binary) == 0)
            let asked = try runCommand(built, ["--upgrade", mount.mountpoint], timeout: .seconds(30))
            #expect(asked.status == 0, "\(asked)")
            #expect(Self.server(of: mount) != server)
        }

        /// Another local user can neither stop a mount nor its upgrade, nor answer for it: a
        /// user the test makes binds every name of the abstract namespace that the upgrade
        /// socket once had (`@schedfs-upgrade:0:N`, N up to 1023), and still the mount is made
        /// and `--upgrade` upgrades it; that user cannot make a socket where the keeper's is.
        @Test func anotherUserCannotTakeTheUpgradeSocket() throws {
            let user = try TemporaryUser()
            defer { user.remove() }
            let scratch = try TemporaryDirectory()
            defer { scratch.remove() }
            chmod(scratch.path, 0o755)
            let squatting = """
                import resource, socket, sys, time
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                held = []
                for minor in range(1024):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.bind(b"\\0schedfs-upgrade:0:%d" % minor)
                        s.listen(1)
                        held.append(s)
                    except OSError:
                        s.close()
                print(len(held), flush=True)
                time.sleep(120)
                """
            let squatter = try ChildProcess(
                "/usr/bin/setpriv", user.setprivArguments + ["/usr/bin/python3", "-c", squatting], stdout: scratch.path + "/held")
            defer {
                squatter.send(SIGKILL)
                _ = squatter.wait(timeout: .seconds(5))
            }
            try #require(eventually(timeout: .seconds(10)) { readWhole(scratch.path + "/held")?.hasSuffix("\n") == true },
                         "the other user's squatter did not start")

            let mount = try MountedSchedfs(options: ["-o", "hz=100"])
            defer { mount.cleanUp() }
            let device = try #require(MountTable.fuseMount(at: FilePath(mount.mountpoint))?.device)
            let minor = try #require(device.split(separator: ":").last.flatMap { Int($0) })
            let unixSockets = readWhole("/proc/net/unix") ?? ""
            try #require(minor < 1024 && unixSockets.contains("@schedfs-upgrade:\(device)\n"),
                         "the other user does not hold the old name of this mount's socket (\(device))")

            let server = try #require(Self.server(of: mount))
            let asked = try runCommand(try schedfsBinary(), ["--upgrade", mount.mountpoint], timeout: .seconds(30))
            #expect(asked.status == 0 && asked.stdout.hasPrefix("schedfs: upgraded: pid "), "\(asked)")
            #expect(Self.server(of: mount) != server)

            let taking = try user.run("/usr/bin/python3", [
                "-c", "import socket; socket.socket(socket.AF_UNIX).bind('/run/schedfs-upgrade/upgrade-\(device)')",
            ])
            #expect(taking.status != 0 && taking.stderr.contains("Permission denied"), "\(taking)")
        }

        /// In page-cache mode a read racing a change of the text's length may copy the old text
        /// and a NUL (`Timer was called 99 times so far\n\0`, see the README's *Reading*), with or
        /// without a server change: the load starts once the count has 3 digits, which it keeps
        /// for 9 seconds, longer than a test here.
        static func passTheKnownPageCacheRace(_ mount: MountedSchedfs, mode: [String]) throws {
            guard !mode.isEmpty else { return }
            try #require(eventually(timeout: .seconds(3)) { ((try? mount.count()) ?? 0) >= 100 })
        }

        /// The count as it changes, and when: reading at a tick, not between two, keeps the
        /// pace measured over a few seconds true to a tick.
        static func tick(of mount: MountedSchedfs) throws -> (count: UInt64, at: ContinuousClock.Instant) {
            let before = try mount.count()
            var now = before
            let changed = eventually(timeout: .seconds(1)) { now = (try? mount.count()) ?? before; return now != before }
            // The log's end first: what the servers did last is what tells why.
            let lastLines = mount.log.split(separator: "\n").suffix(12).joined(separator: "\n")
            try #require(changed, "the count stayed at \(before) for a second; the log's last lines:\n\(lastLines)")
            return (now, .now)
        }

        /// The server the keeper started, if one runs now.
        static func server(of mount: MountedSchedfs) -> pid_t? {
            daemonPIDs(keeper: mount.daemon.pid).first { $0 != mount.daemon.pid }
        }
    }
}

/// Eight readers of a mount, as its users would be: two open, read and close `sched`; two read
/// files they hold open from the start; two poll `sched` for its changes and re-read it; one
/// writes `timer/hz` its own value; one lists the root and reads `timer/ticks`.
final class SurvivalLoad: Sendable {
    struct Seen: CustomStringConvertible, Sendable {
        var reads = 0
        var polls = 0
        var writes = 0
        var errors: [String] = []
        var bad: [String] = []
        /// Page-cache mode only: texts torn by the kernel's own race as the text grows by a
        /// digit, which BENCHMARKS.md and the README describe: the old text and a NUL
        /// (`filemap_read` takes the page, then the size another reader's `GETATTR` has just
        /// changed), or the new text cut to the old size (a page filled by a `READ` answered
        /// with the text last given, which another reader's `GETATTR` got with a size the
        /// kernel has not applied yet, or a `READ` sent again to the server that took over).
        var tornByTheKernel = 0
        var backwards: [String] = []
        var longestStall: Duration = .zero

        var description: String {
            "\(reads) reads, \(polls) poll wake-ups, \(writes) writes, \(errors.count) errors, \(bad.count) bad, \(tornByTheKernel) torn by the kernel as the text grew, \(backwards.count) backwards"
        }
    }

    private let seen = Mutex(Seen())
    private let pageCache: Bool
    private let stopping = Atomic<Bool>(false)
    private let threads: Mutex<[JoinableThread]> = Mutex([])

    init(_ mount: MountedSchedfs) throws {
        let sched = mount.path("sched")
        var bodies: [@Sendable () -> Void] = []
        // In page-cache mode a run of reads is one text only if no change falls between them
        // (see the README): there each open reads once, as the held files do.
        let pageCache = mount.log.contains("through the page cache")
        self.pageCache = pageCache
        let whole: @Sendable (String) throws(SystemError) -> String = { path throws(SystemError) in
            pageCache ? try readOnce(path) : try readText(path)
        }
        for _ in 0..<2 {
            bodies.append { [self] in self.loop(counting: { () throws(SystemError) in try whole(sched) }) }
        }
        for _ in 0..<2 {
            let held = open(sched, O_RDONLY)
            try #require(held >= 0)
            bodies.append { [self] in
                self.loop(counting: { () throws(SystemError) in try Self.reread(held) })
                close(held)
            }
        }
        for _ in 0..<2 {
            let polled = open(sched, O_RDONLY)
            try #require(polled >= 0)
            bodies.append { [self] in
                self.poll(polled)
                close(polled)
            }
        }
        bodies.append { [self] in
            self.repeatedly("write timer/hz") { () throws(SystemError) in
                try writeText(mount.path("timer/hz"), "100\n")
                self.seen.withLock { $0.writes += 1 }
            }
        }
        let uptime = Mutex<Double>(0)
        bodies.append { [self] in
            self.repeatedly("list, read timer/ticks and uptime") { () throws(SystemError) in
                guard try listing(mount.mountpoint).contains("sched") else { throw SystemError(errno: ENOENT) }
                guard UInt64(try whole(mount.path("timer/ticks")).dropLast()) != nil else { throw SystemError(errno: EINVAL) }
                // Seconds since mount, whichever server answers.
                let text = try whole(mount.path("uptime"))
                guard let seconds = parseUptime(text) else { throw SystemError(errno: EINVAL) }
                let previous = uptime.withLock { last in defer { last = max(last, seconds) }; return last }
                if seconds < previous { self.seen.withLock { $0.backwards.append("uptime: \(previous) then \(seconds)") } }
            }
        }
        let started = try bodies.enumerated().map { number, body in try JoinableThread(name: "load-\(number)", body: body) }
        threads.withLock { $0 = started }
    }

    /// Stops the readers and says what they saw.
    func stop() -> Seen {
        stopping.store(true, ordering: .relaxed)
        for thread in threads.withLock({ $0 }) {
            if !thread.join(timeout: .seconds(5)) { seen.withLock { $0.errors.append("a reader did not stop within 5 s") } }
        }
        // Each thread's body holds this object: letting the threads go ends the cycle.
        threads.withLock { $0 = [] }
        return seen.withLock { $0 }
    }

    /// Reads counts with `read` until stopped: each must parse, and none may go back.
    private func loop(counting read: () throws(SystemError) -> String) {
        var last: UInt64 = 0
        var lastRead = ContinuousClock.now
        while !stopping.load(ordering: .relaxed) {
            do {
                let text = try read()
                let now = ContinuousClock.now
                seen.withLock { seen in
                    seen.reads += 1
                    seen.longestStall = max(seen.longestStall, now - lastRead)
                    guard let count = parseSched(text) else { return self.classify(text, after: last, in: &seen) }
                    if count < last { seen.backwards.append("\(last) then \(count)") }
                    last = max(last, count)
                }
                lastRead = now
            } catch {
                seen.withLock { $0.errors.append("read: \(error)") }
            }
        }
    }

    /// A text that is not one of `sched`'s, read by a reader whose last count was `last`: the
    /// kernel's race in page-cache mode as the count gains a digit (the text of a count of
    /// nines, then a NUL; or, before this reader has seen a count of that many digits, the
    /// text of one that has just gained a digit, cut by its newline to the old length), or bad.
    private func classify(_ text: String, after last: UInt64, in seen: inout Seen) {
        let oldTextAndNUL = text.hasSuffix("\n\0") && parseSched(String(text.dropLast())).map {
            String($0 + 1).dropFirst().allSatisfy { $0 == "0" } && String($0 + 1).first == "1"
        } == true
        let newTextCut = parseSched(text + "\n").map {
            String($0).first == "1" && String($0).count == String(last).count + 1
        } == true
        if pageCache, oldTextAndNUL || newTextCut {
            seen.tornByTheKernel += 1
        } else {
            seen.bad.append(text)
        }
    }

    /// Polls `descriptor` for a change until stopped: each wake-up must come within a second
    /// and say `POLLPRI`, and the re-read must show a count that did not go back.
    private func poll(_ descriptor: Int32) {
        var last: UInt64 = 0
        _ = try? Self.reread(descriptor)
        while !stopping.load(ordering: .relaxed) {
            var polled = pollfd(fd: descriptor, events: Int16(POLLPRI), revents: 0)
            let ready = Glibc.poll(&polled, 1, 1000)
            if stopping.load(ordering: .relaxed) { return }
            guard ready == 1, polled.revents & Int16(POLLPRI) != 0, polled.revents & Int16(POLLHUP | POLLNVAL) == 0 else {
                seen.withLock { $0.errors.append("poll: \(ready) ready, revents \(polled.revents)") }
                continue
            }
            do {
                let text = try Self.reread(descriptor)
                seen.withLock { seen in
                    seen.polls += 1
                    guard let count = parseSched(text) else { return self.classify(text, after: last, in: &seen) }
                    if count < last { seen.backwards.append("poll: \(last) then \(count)") }
                    last = max(last, count)
                }
            } catch {
                seen.withLock { $0.errors.append("re-read after poll: \(error)") }
            }
        }
    }

    private func repeatedly(_ what: String, _ body: () throws(SystemError) -> Void) {
        while !stopping.load(ordering: .relaxed) {
            do {
                try body()
            } catch {
                seen.withLock { $0.errors.append("\(what): \(error)") }
            }
            usleep(5000)
        }
    }

    /// The text of an open file, read again from offset 0.
    static func reread(_ descriptor: Int32) throws(SystemError) -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = pread(descriptor, &buffer, buffer.count, 0)
        guard count >= 0 else { throw SystemError(errno: errno) }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }
}
