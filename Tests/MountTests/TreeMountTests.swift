import Dispatch
import Glibc
import Synchronization
import Testing

/// The whole schedfs tree through a real mount: every file, the `timer/hz` knob, refused
/// writes, and removal while readers hold files open.
extension MountTests {
    @Suite struct Tree {
        @Test(arguments: MountTests.readModes)
        func everyFileReadsInItsFormat(mode: [String]) throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
            defer { mount.cleanUp() }
            // Some ticks, and some uptime, to show: waited for, however slow this machine.
            try #require(eventually(timeout: .seconds(10), every: .milliseconds(10)) {
                let ticks = (try? readOnce(mount.path("timer/ticks"))).flatMap { UInt64($0.dropLast()) } ?? 0
                let up = (try? readOnce(mount.path("uptime"))).flatMap(parseUptime) ?? 0
                return ticks > 0 && up > 0
            }, "no tick, or no uptime, in 10 s")
            #expect(try readOnce(mount.path("timer/hz")) == "100\n")
            let ticks = try #require(UInt64(try readOnce(mount.path("timer/ticks")).dropLast()))
            #expect(ticks > 0)
            #expect(parseSched(try readOnce(mount.path("sched"))) != nil)

            let queue = try readOnce(mount.path("timer/queue")).split(separator: "\n")
            #expect(queue.count == 2 && queue[0] == "name runs queued_since", "\(queue)")
            let task = queue.last?.split(separator: " ") ?? []
            #expect(task.count == 3 && task[0] == "sched" && (UInt64(task[1]) ?? 0) > 0 && Double(task[2]) != nil,
                    "\(queue)")

            let latency = try readOnce(mount.path("timer/latency")).split(separator: "\n").map { $0.split(separator: " ") }
            #expect(latency.map { $0.first ?? "" } == ["p50_us", "p99_us", "max_us", "missed_ticks"])
            #expect(latency.allSatisfy { $0.count == 2 && UInt64($0[1]) != nil })

            let uptime = try readOnce(mount.path("uptime"))
            let fields = uptime.dropLast().split(separator: " ")
            #expect(uptime.hasSuffix("\n") && fields.count == 2, "\(uptime.debugDescription)")
            let up = try #require(Double(fields.first ?? ""))
            let idle = try #require(Double(fields.last ?? ""))
            #expect(fields.allSatisfy { $0.split(separator: ".").last?.count == 2 }, "two decimals, as /proc/uptime")
            #expect(up > 0 && up < 60 && idle <= up)

            var attributes = stat()
            #expect(stat(mount.path("timer"), &attributes) == 0)
            #expect(attributes.st_mode == S_IFDIR | 0o555 && attributes.st_nlink == 3)
            #expect(stat(mount.path("timer/hz"), &attributes) == 0)
            // A knob does not announce its changes: size 0 as in /proc/sys, but for the page
            // cache, which needs the true size.
            #expect(attributes.st_mode == S_IFREG | 0o644 && attributes.st_size == (mode.isEmpty ? 0 : 4))
            for name in ["timer/ticks", "timer/queue", "timer/latency", "uptime"] {
                #expect(stat(mount.path(name), &attributes) == 0)
                #expect(attributes.st_mode == S_IFREG | 0o444, "\(name)")
            }
            #expect(try listing(mount.path("timer")) == [".", "..", "hz", "latency", "queue", "tasks", "ticks"])

            // timer/tasks has one directory per queued task, computed when looked in.
            #expect(try listing(mount.path("timer/tasks")) == [".", "..", "sched"])
            #expect(stat(mount.path("timer/tasks"), &attributes) == 0 && attributes.st_nlink == 3)
            #expect(stat(mount.path("timer/tasks/sched"), &attributes) == 0)
            #expect(attributes.st_mode == S_IFDIR | 0o555 && attributes.st_nlink == 2)
            #expect(try listing(mount.path("timer/tasks/sched")) == [".", "..", "queued_since", "runs"])
            let runs = try #require(UInt64(try readOnce(mount.path("timer/tasks/sched/runs")).dropLast()))
            #expect(eventually(timeout: .seconds(2)) {
                (UInt64((try? readOnce(mount.path("timer/tasks/sched/runs")))?.dropLast() ?? "") ?? 0) > runs
            }, "runs grows with the ticks")
            let since = try readOnce(mount.path("timer/tasks/sched/queued_since"))
            #expect(since.hasSuffix("\n") && Double(since.dropLast()) != nil, "\(since.debugDescription)")
            #expect(failure(stat(mount.path("timer/tasks/other"), &attributes)) == ENOENT)
        }

        /// schedfs's own figures, read from the timer by ProcFSMetrics when shown: a file each in
        /// `metrics/`, and all of them in `metrics/schedfs.prom`, in the Prometheus text format.
        @Test func itsFiguresAreMetricsFilesAndPrometheusText() throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=100"])
            defer { mount.cleanUp() }
            #expect(try listing(mount.path("metrics")) == [
                ".", "..", "schedfs.prom", "schedfs_timer_hz", "schedfs_timer_lateness_seconds",
                "schedfs_timer_missed_ticks_total", "schedfs_timer_queue_length", "schedfs_timer_ticks_total",
            ])
            let ticks = { UInt64((try? readOnce(mount.path("metrics/schedfs_timer_ticks_total")))?.dropLast() ?? "") ?? 0 }
            #expect(eventually(timeout: .seconds(2)) { ticks() > 0 }, "the first tick is counted")
            let first = ticks()
            #expect(eventually(timeout: .seconds(2)) { ticks() > first }, "the tick counter grows")
            #expect(try readOnce(mount.path("metrics/schedfs_timer_hz")) == "100\n")
            #expect(try readOnce(mount.path("metrics/schedfs_timer_queue_length")) == "1\n", "sched, re-queued")
            let exposition = try readText(mount.path("metrics/schedfs.prom"))
            let lines = exposition.split(separator: "\n").map(String.init)
            for expected in [
                "# TYPE schedfs_timer_ticks_total counter", "# TYPE schedfs_timer_lateness_seconds histogram",
                "# TYPE schedfs_timer_hz gauge", "schedfs_timer_hz 100", "schedfs_timer_queue_length 1",
            ] {
                #expect(lines.contains(expected), "\(expected) in:\n\(exposition)")
            }
            // The exposition reads the histogram before the counter, and the histogram's own
            // file is read after both: a tick counted in one and not the other shows.
            let value = { (name: String) in lines.first { $0.hasPrefix(name + " ") }.flatMap { $0.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } } }
            let countedBefore = try #require(value("schedfs_timer_lateness_seconds_count"), "\(exposition)")
            let delivered = try #require(value("schedfs_timer_ticks_total"), "\(exposition)")
            let histogram = try readOnce(mount.path("metrics/schedfs_timer_lateness_seconds"))
            let countedAfter = try #require(histogram.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }, "\(histogram)")
            #expect(countedBefore > 0 && countedBefore <= delivered && delivered <= countedAfter,
                    "every tick's lateness is in the histogram: \(exposition)\(histogram)")
        }

        /// Writing a rate to `timer/hz` changes how fast the count grows, at once.
        @Test(arguments: MountTests.readModes)
        func writingHzChangesThePaceOfTheCount(mode: [String]) throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=50"] + mode)
            defer { mount.cleanUp() }
            #expect(try rate(of: mount) < 100, "at hz=50")
            try writeText(mount.path("timer/hz"), "1000\n")
            #expect(try readOnce(mount.path("timer/hz")) == "1000\n")
            let fast = try rate(of: mount)
            #expect(fast > 500 && fast < 1500, "count grew at \(fast)/s after writing 1000")
            // With O_TRUNC, as the shell's `>` opens it.
            try writeText(mount.path("timer/hz"), "20", flags: O_WRONLY | O_TRUNC)
            let slow = try rate(of: mount)
            #expect(slow > 5 && slow < 40, "count grew at \(slow)/s after writing 20")
            #expect(try readOnce(mount.path("timer/hz")) == "20\n")
        }

        @Test(arguments: MountTests.readModes)
        func badWritesAreRefusedAndChangeNothing(mode: [String]) throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=100"] + mode)
            defer { mount.cleanUp() }
            let hz = mount.path("timer/hz")
            for bad in ["0", "10001", "-1", "abc", "\n", "12abc", "1.5", "+50"] {
                #expect(throws: SystemError(errno: EINVAL), "writing \(bad.debugDescription)") { try writeText(hz, bad) }
            }
            #expect(try readText(hz) == "100\n", "no bad write changed the rate")

            for name in ["timer/ticks", "timer/queue", "timer/latency", "uptime"] {
                #expect(throws: SystemError(errno: EACCES), "\(name)") { try writeText(mount.path(name), "1") }
            }
            #expect(failure(mkdir(mount.path("timer/new"), 0o755)) == ENOENT)
            #expect(failure(open(mount.path("timer/new"), O_CREAT | O_WRONLY, 0o644)) == ENOENT)
            #expect(failure(unlink(hz)) == EACCES)
            #expect(failure(rmdir(mount.path("timer"))) == EACCES)
            #expect(failure(chmod(hz, 0o600)) == EPERM)
            #expect(failure(chmod(mount.path("timer"), 0o755)) == EPERM)
            #expect(failure(open(mount.path("timer"), O_WRONLY)) == EISDIR)
        }

        /// Unregistering follows procfs: files held open read and fstat EIO, new opens of every
        /// file of the tree fail with ENOENT, and a held directory lists empty.
        @Test(arguments: MountTests.readModes)
        func removalWhileReadersHoldFilesOpen(mode: [String]) throws {
            let mount = try MountedSchedfs(options: ["-o", "hz=2"] + mode)
            defer { mount.cleanUp() }
            let before = try mount.count()
            #expect(eventually(timeout: .seconds(3)) { (try? mount.count()) != before })
            let held = ["sched", "timer/queue", "uptime"].map { open(mount.path($0), O_RDONLY) }
            defer { held.filter { $0 >= 0 }.forEach { close($0) } }
            #expect(held.allSatisfy { $0 >= 0 })
            let timer = try #require(opendir(mount.path("timer")))
            defer { closedir(timer) }

            mount.daemon.send(SIGTERM)
            let allGone = eventually(timeout: .seconds(2)) {
                ["sched", "timer/hz", "timer/ticks", "timer", "uptime"].allSatisfy { name in
                    var attributes = stat()
                    return stat(mount.path(name), &attributes) == -1 && errno == ENOENT
                }
            }
            #expect(allGone, "every name must be gone from step 1; log:\n\(mount.log)")
            // The daemon serves on for at least a second: it waits that long for the held files
            // to close before it unmounts (see Daemon.stopTimeout).
            var buffer = [UInt8](repeating: 0, count: 256)
            for descriptor in held {
                #expect(failure(Int32(pread(descriptor, &buffer, buffer.count, 0))) == EIO, "a held file reads EIO, as in procfs")
            }
            var attributes = stat()
            #expect(failure(fstat(held[0], &attributes)) == EIO)
            rewinddir(timer)
            var names: [String] = []
            while let entry = readdir(timer) { names.append(name(of: entry)) }
            #expect(names.allSatisfy { $0 == "." || $0 == ".." }, "a removed directory lists empty: \(names)")
            held.filter { $0 >= 0 }.forEach { close($0) }
            #expect(mount.daemon.wait(timeout: .seconds(5)) == 0, "log:\n\(mount.log)")
            expectStepsInOrder(mount.log, ["cleanup 1/3: unregistered sched, then timer/ and uptime"])
        }

        /// The count's growth per second, over half a second.
        private func rate(of mount: MountedSchedfs) throws -> Double {
            let clock = ContinuousClock()
            let first = try mount.count()
            let start = clock.now
            usleep(500_000)
            let second = try mount.count()
            return Double(second - first) / (clock.now - start).dispatchSeconds
        }
    }

    /// The embedding example, `counterfs`, mounted and used.
    @Suite struct Example {
        @Test func counterfsServesItsTreeAndUnmounts() throws {
            try requireFuse()
            let binary = try builtBinary("counterfs")
            let root = try TemporaryDirectory()
            defer { root.remove() }
            let mountpoint = root.path + "/mnt"
            mkdir(mountpoint, 0o755)
            let daemon = try ChildProcess(binary, [mountpoint], stderr: root.path + "/log")
            defer {
                if daemon.wait(timeout: .zero) == nil {
                    _ = try? runCommand("/usr/bin/fusermount3", ["-u", "-z", mountpoint])
                    if daemon.wait(timeout: .seconds(5)) == nil {
                        daemon.send(SIGKILL)
                        _ = daemon.wait(timeout: .seconds(5))
                    }
                }
            }
            let log = { readWhole(root.path + "/log") ?? "" }
            try #require(eventually(timeout: .seconds(10)) { (try? readText(mountpoint + "/changes")) != nil },
                         "counterfs did not serve; log:\n\(log())")

            #expect(try listing(mountpoint) == [".", "..", "changes", "config", "hello"])
            #expect(try readText(mountpoint + "/config/greeting") == "hello\n")
            #expect(try readText(mountpoint + "/hello") == "hello\n", "through the symlink")
            var target = [CChar](repeating: 0, count: 64)
            #expect(readlink(mountpoint + "/hello", &target, target.count) == 15)
            #expect(try readText(mountpoint + "/changes") == "0\n")

            try writeText(mountpoint + "/config/greeting", "good day\n")
            try writeText(mountpoint + "/hello", "bonjour\n")
            #expect(try readText(mountpoint + "/config/greeting") == "bonjour\n")
            #expect(try readText(mountpoint + "/changes") == "2\n")
            #expect(throws: SystemError(errno: EINVAL)) {
                try writeText(mountpoint + "/config/greeting", String(repeating: "x", count: 65))
            }
            #expect(throws: SystemError(errno: EACCES)) { try writeText(mountpoint + "/changes", "9") }
            #expect(try readText(mountpoint + "/changes") == "2\n")

            let unmount = try unmountWhenFree(mountpoint)
            #expect(unmount.status == 0, "\(unmount.stderr)")
            #expect(daemon.wait(timeout: .seconds(5)) == 0, "log:\n\(log())")
        }

        /// Both examples say what is wrong in one line, never a backtrace: 64 for the command
        /// line, 1 for a mount point they cannot use; nothing is left mounted or running.
        @Test(arguments: ["counterfs", "statusfs"])
        func theExamplesFailInOneLine(example: String) throws {
            let binary = try builtBinary(example)
            let root = try TemporaryDirectory()
            defer { root.remove() }
            let file = root.path + "/file"
            close(open(file, O_CREAT | O_WRONLY, 0o644))
            let cases: [(arguments: [String], status: Int32, says: String)] = [
                ([], 64, "usage: \(example) \(example == "statusfs" ? "[--kept] " : "")MOUNTPOINT"),
                ([root.path + "/absent"], 1, "\(example): mountpoint '\(root.path)/absent' does not exist"),
                ([file], 1, "\(example): mountpoint '\(file)' is not a directory"),
            ]
            for (arguments, status, says) in cases {
                let result = try runCommand(binary, arguments)
                #expect(result.status == status, "\(arguments): \(result.stderr)")
                #expect(result.stderr == says + "\n", "\(arguments)")
            }
            #expect(livePIDs(mentioning: root.path).isEmpty)
        }

        /// The service example, `statusfs`: ProcFSService on a ServiceGroup beside the work it
        /// shows. Its files live, its knob refuses what procfs would, and it stops with status 0
        /// and nothing left, on SIGTERM (graceful shutdown) and on an unmount from outside.
        @Test(arguments: ["SIGTERM", "fusermount3 -u"])
        func statusfsServesOnAServiceGroupAndStops(stop: String) throws {
            try requireFuse()
            let binary = try builtBinary("statusfs")
            let root = try TemporaryDirectory()
            defer { root.remove() }
            let mountpoint = root.path + "/mnt"
            mkdir(mountpoint, 0o755)
            let daemon = try ChildProcess(binary, [mountpoint], stderr: root.path + "/log")
            defer {
                if daemon.wait(timeout: .zero) == nil {
                    daemon.send(SIGKILL)
                    _ = daemon.wait(timeout: .seconds(5))
                }
                if isMounted(mountpoint) { _ = try? runCommand("/usr/bin/fusermount3", ["-u", "-z", mountpoint]) }
            }
            let log = { readWhole(root.path + "/log") ?? "" }
            try #require(eventually(timeout: .seconds(10)) { (try? readText(mountpoint + "/requests")) != nil },
                         "statusfs did not serve; log:\n\(log())")

            #expect(try listing(mountpoint) == [".", "..", "clients", "rate", "report", "requests"])
            // Its fsName is added to the service's defaults: it wins over theirs, and
            // auto_unmount stays (fusermount3 waits beside it to unmount should it die).
            #expect(mountSource(mountpoint) == "statusfs")
            #expect(!livePIDs(mentioning: mountpoint, named: "fusermount3").isEmpty, "no auto_unmount watcher")
            let first = Int(try readText(mountpoint + "/requests").dropLast()) ?? -1
            #expect(eventually(timeout: .seconds(3)) { (Int((try? readText(mountpoint + "/requests"))?.dropLast() ?? "") ?? 0) > first })
            try writeText(mountpoint + "/rate", "1000\n")
            #expect(try readText(mountpoint + "/rate") == "1000\n")
            #expect(throws: SystemError(errno: EINVAL)) { try writeText(mountpoint + "/rate", "0\n") }
            #expect(eventually(timeout: .seconds(5)) { ((try? listing(mountpoint + "/clients")) ?? []).count > 2 },
                    "a client appears every 50 requests")
            // clients/ is a dynamic directory: what it lists reads, and goes when the client leaves.
            let client = try #require(try listing(mountpoint + "/clients").first { Int($0) != nil })
            #expect(Int(try readText(mountpoint + "/clients/\(client)/requests").dropLast()) != nil)
            var attributes = stat()
            #expect(eventually(timeout: .seconds(5)) { stat(mountpoint + "/clients/" + client, &attributes) != 0 && errno == ENOENT },
                    "\(client) left 200 requests after it came")
            #expect(try !listing(mountpoint + "/clients").contains(client))

            if stop == "SIGTERM" {
                daemon.send(SIGTERM)
            } else {
                let unmount = try unmountWhenFree(mountpoint)
                #expect(unmount.status == 0, "\(unmount.stderr)")
            }
            #expect(daemon.wait(timeout: .seconds(5)) == 0, "log:\n\(log())")
            #expect(!isMounted(mountpoint))
            #expect(log().contains("stopped serving on \(mountpoint)"), "log:\n\(log())")
            #expect(eventually(timeout: .seconds(3)) { livePIDs(mentioning: root.path).isEmpty })
        }
    }
}

/// Writes `text` in one `write` call, as `echo text > path` does.
func writeText(_ path: String, _ text: String, flags: Int32 = O_WRONLY) throws(SystemError) {
    let descriptor = open(path, flags)
    guard descriptor >= 0 else { throw SystemError(errno: errno) }
    defer { close(descriptor) }
    let written = text.withCString { write(descriptor, $0, strlen($0)) }
    guard written == text.utf8.count else { throw SystemError(errno: written < 0 ? errno : EIO) }
}

/// The names in a directory, in the order `readdir` gives them.
func listing(_ path: String) throws(SystemError) -> [String] {
    guard let directory = opendir(path) else { throw SystemError(errno: errno) }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) { names.append(name(of: entry)) }
    return names
}

/// The name in a `dirent`.
func name(of entry: UnsafeMutablePointer<dirent>) -> String {
    withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// The source field (`fsname`) of the mount at `path`, from `/proc/self/mountinfo`.
func mountSource(_ path: String) -> String? {
    let lines = (readWhole("/proc/self/mountinfo") ?? "").split(separator: "\n")
    // Fields: id parent major:minor root mountpoint options [optional...] - fstype source super
    return lines.map { $0.split(separator: " ") }.last { $0.count > 4 && $0[4] == path }
        .flatMap { fields in fields.firstIndex(of: "-").map { String(fields[$0 + 2]) } }
}
