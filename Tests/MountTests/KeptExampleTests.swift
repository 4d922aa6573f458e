import Glibc
import KernelSync
import Synchronization
import Testing

extension MountTests {
    /// `statusfs --kept`: an embedder's program whose mount a keeper holds (ProcFSKeeper), with
    /// no survival code of its own.
    @Suite(.serialized) struct KeptExample {
        /// The example's keeper on a fresh directory, and its log.
        final class KeptStatusfs: Sendable {
            let root: TemporaryDirectory
            let mountpoint: String
            let keeper: ChildProcess

            init() throws {
                try requireFuse()
                root = try TemporaryDirectory()
                mountpoint = root.path + "/mnt"
                mkdir(mountpoint, 0o755)
                keeper = try ChildProcess(try builtBinary("statusfs"), ["--kept", mountpoint], stderr: root.path + "/log")
                // Ready once the keeper says so: a server killed before it is ready ends the keeper,
                // as one that cannot start.
                guard eventually(timeout: .seconds(10), { log.contains("keeping the mount on") }) else {
                    Issue.record("statusfs --kept did not serve; log:\n\(log)")
                    cleanUp()
                    throw SystemError(errno: ETIMEDOUT)
                }
            }

            var log: String { readWhole(root.path + "/log") ?? "" }

            /// The keeper's child that serves now (fusermount3's watcher is its child too).
            var server: pid_t? {
                let threads = (try? listing("/proc/\(keeper.pid)/task")) ?? []
                let children = threads.flatMap { (readWhole("/proc/\(keeper.pid)/task/\($0)/children") ?? "").split(separator: " ") }
                return children.compactMap { pid_t($0) }.first { readWhole("/proc/\($0)/comm") == "statusfs\n" }
            }

            /// The count of requests, read through the mount.
            func requests() throws -> Int {
                let text = try readText(mountpoint + "/requests")
                guard text.last == "\n", let count = Int(text.dropLast()) else { throw SystemError(errno: EINVAL) }
                return count
            }

            func cleanUp() {
                if keeper.wait(timeout: .zero) == nil {
                    keeper.send(SIGKILL)
                    _ = keeper.wait(timeout: .seconds(5))
                }
                if isMounted(mountpoint) { _ = try? runCommand("/usr/bin/fusermount3", ["-u", "-z", mountpoint]) }
                root.remove()
            }
        }

        /// Readers of `requests` the whole time: fresh opens, and held files re-read from
        /// offset 0. Each counts what it read, errors, and counts that went back.
        final class Readers: Sendable {
            let reads = Atomic<Int>(0)
            let errors = Mutex<[String]>([])
            let backwards = Atomic<Int>(0)
            private let stop = Atomic<Bool>(false)
            private let threads: Mutex<[JoinableThread]> = Mutex([])

            init(_ mount: KeptStatusfs) throws {
                for number in 0..<8 {
                    let held = number >= 6
                    let thread = try JoinableThread(name: "reader-\(number)") { [self] in
                        let descriptor = held ? open(mount.mountpoint + "/requests", O_RDONLY) : -1
                        defer { if descriptor >= 0 { close(descriptor) } }
                        var last = 0
                        while !stop.load(ordering: .relaxed) {
                            do {
                                let count = held ? try Self.reread(descriptor) : try mount.requests()
                                if count < last { backwards.add(1, ordering: .relaxed) }
                                last = count
                                reads.add(1, ordering: .relaxed)
                            } catch {
                                errors.withLock { $0.append("\(held ? "held" : "fresh"): \(error)") }
                            }
                        }
                    }
                    threads.withLock { $0.append(thread) }
                }
            }

            static func reread(_ descriptor: Int32) throws -> Int {
                var buffer = [UInt8](repeating: 0, count: 64)
                let count = pread(descriptor, &buffer, buffer.count, 0)
                guard count > 1, buffer[count - 1] == UInt8(ascii: "\n"),
                    let value = Int(String(decoding: buffer[..<(count - 1)], as: UTF8.self))
                else { throw SystemError(errno: count < 0 ? errno : EINVAL) }
                return value
            }

            /// Stops them; whether every one ended in time.
            func finish() -> Bool {
                stop.store(true, ordering: .relaxed)
                let joined = threads.withLock { $0 }.allSatisfy { $0.join(timeout: .seconds(10)) }
                // Each thread's body holds these readers; forgetting the finished ones lets them go.
                if joined { threads.withLock { $0.removeAll() } }
                return joined
            }
        }

        /// A long, legitimate wait is not taken for a hang: `report`, whose async closure takes
        /// 3 s, is read while the 8 readers read `requests` at full speed, under the keeper's
        /// 1 s hang timeout. Its reader gets the text after 3 s, the others never wait, and
        /// no server is found stuck.
        @Test func aTextThatTakesLongIsNotTakenForAHang() throws {
            let mount = try KeptStatusfs()
            defer { mount.cleanUp() }
            let server = try #require(mount.server)
            let readers = try Readers(mount)
            var finished = false
            defer { if !finished { _ = readers.finish() } }
            let before = readers.reads.load(ordering: .relaxed)
            let clock = ContinuousClock()
            let started = clock.now
            let report = try readText(mount.mountpoint + "/report")
            let took = clock.now - started
            let during = readers.reads.load(ordering: .relaxed) - before
            finished = true
            #expect(readers.finish(), "a reader hung")
            #expect(report.hasSuffix(" requests, reported after 3.0 seconds\n"), "\(report)")
            #expect(took >= .seconds(3) && took < .seconds(5), "took \(took)")
            #expect(during > 1000, "\(during) reads of requests meanwhile")
            #expect(readers.errors.withLock { $0 }.isEmpty, "\(readers.errors.withLock { $0.prefix(5) })")
            #expect(mount.server == server, "the server serves on")
            #expect(!mount.log.contains("is stuck: "), "log:\n\(mount.log)")
        }

        /// 20 `kill -9`s of the server, 3 SIGSTOPs of it, then 10 upgrades by SIGUSR2 to the
        /// keeper, under 8 readers: no reader error, and the count, which the program keeps in the keeper's
        /// memory, never goes back. SIGTERM to the keeper then stops both, with status 0 and
        /// nothing left.
        @Test func aKilledOrUpgradedServerCostsReadersNothing() throws {
            let mount = try KeptStatusfs()
            defer { mount.cleanUp() }
            let readers = try Readers(mount)
            var finished = false
            defer { if !finished { _ = readers.finish() } }

            for kill in 1...20 {
                let server = try #require(mount.server, "no server; log:\n\(mount.log)")
                Glibc.kill(server, SIGKILL)
                try #require(eventually(timeout: .seconds(5)) { mount.log.components(separatedBy: "serves in its place").count - 1 == kill },
                             "kill \(kill): no server in place of pid \(server); log:\n\(mount.log)")
                usleep(50_000)
            }
            // A server that stops answering (stopped here; a deadlock looks the same) is killed
            // after the keeper's hang timeout, 1 s, and replaced.
            for stop in 1...3 {
                let server = try #require(mount.server)
                Glibc.kill(server, SIGSTOP)
                try #require(eventually(timeout: .seconds(5)) { mount.log.components(separatedBy: "serves in its place").count - 1 == 20 + stop },
                             "stop \(stop): pid \(server) was not replaced; log:\n\(mount.log)")
                usleep(50_000)
            }
            let before = try mount.requests()
            for upgrade in 1...10 {
                let server = try #require(mount.server)
                mount.keeper.send(SIGUSR2)
                try #require(eventually(timeout: .seconds(10)) { mount.log.components(separatedBy: "upgrade: pid").count - 1 == upgrade },
                             "upgrade \(upgrade) did not happen; log:\n\(mount.log)")
                #expect(mount.server != server, "upgrade \(upgrade) left pid \(server) serving")
                usleep(50_000)
            }
            #expect(try mount.requests() > before, "the work goes on in the upgraded servers")
            finished = true
            #expect(readers.finish(), "a reader hung")
            #expect(readers.errors.withLock { $0 }.isEmpty, "\(readers.errors.withLock { $0.prefix(5) })")
            #expect(readers.backwards.load(ordering: .relaxed) == 0)
            #expect(readers.reads.load(ordering: .relaxed) > 1000, "\(readers.reads.load(ordering: .relaxed)) reads")
            #expect(mount.log.components(separatedBy: "died by signal 9").count - 1 == 23, "log:\n\(mount.log)")
            // Each stopped server was found stuck: requests waited, or it held them all.
            #expect(mount.log.components(separatedBy: "is stuck: ").count - 1 == 3, "log:\n\(mount.log)")

            mount.keeper.send(SIGTERM)
            #expect(mount.keeper.wait(timeout: .seconds(10)) == 0, "log:\n\(mount.log)")
            #expect(!isMounted(mount.mountpoint))
            #expect(eventually(timeout: .seconds(3)) { livePIDs(mentioning: mount.root.path).isEmpty })
        }
    }
}
