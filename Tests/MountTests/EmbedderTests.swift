import CLinux
import Glibc
import Logging
import ProcFS
import ServiceLifecycle
import Synchronization
import SystemPackage
import Testing

/// What a program that embeds ProcFS gets from the library alone: the checks and the lock of
/// its session, a way to wait until it serves, and the /proc behaviours of integer knobs and
/// dynamic directories, each beside the real /proc.
extension MountTests {
    @Suite struct Embedder {
        static let directIO = [false, true]

        /// A `/proc/sys` integer with a range (`proc_dointvec_minmax`, 0 to 200); the test
        /// writes only values it refuses, and its own value back, and restores it however the
        /// test ends.
        static let rangedSysctl = "/proc/sys/vm/swappiness"

        /// `registerIntegerKnob(range:)` refuses what `proc_dointvec_minmax` refuses, with the
        /// same errno, and takes what it takes.
        @Test(arguments: Embedder.directIO)
        func anIntegerKnobWithARangeRefusesAsProcDointvecMinmax(directIO: Bool) throws {
            let saved = try readText(Self.rangedSysctl)
            defer { _ = try? writeText(Self.rangedSysctl, saved) }
            let value = Atomic<Int32>(Int32(saved.dropLast()) ?? 60)
            let tree = ProcTree()
            try tree.registerIntegerKnob("swappiness", range: 0...200, value: { value.load(ordering: .relaxed) }) {
                value.store($0, ordering: .relaxed)
            }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }
            for text in ["201\n", "-1\n", "0x100\n", "99999999999\n", saved] {
                let reference = try ProcReference.outcome(of: .init(text: text), to: Self.rangedSysctl)
                let knob = try ProcReference.outcome(of: .init(text: text), to: mount.path("swappiness"))
                #expect(knob.results == reference.results, "\(text.debugDescription): \(Self.rangedSysctl) gave \(reference); the knob gave \(knob)")
                #expect(knob.after == saved, "\(text.debugDescription) changed the knob")
            }
        }

        /// A held file of a dynamic entry whose name is gone reads `ESRCH`, and `stat` of its
        /// path gives `ENOENT`, as a held `/proc/<pid>/status` of a process that has exited;
        /// `fstat` of the held file still answers, as there.
        @Test(arguments: Embedder.directIO)
        func aGoneDynamicEntryReadsAsAGoneProcessDoes(directIO: Bool) throws {
            let child = try ChildProcess("/bin/sleep", ["60"])
            defer {
                child.send(SIGKILL)
                _ = child.wait(timeout: .seconds(5))
            }
            let ids = Mutex<[pid_t]>([child.pid])
            let tree = ProcTree()
            try tree.makeDynamicDirectory("workers", names: { ids.withLock { $0 } }) { tree, pid, directory in
                let process = try tree.makeDirectory("\(pid)", in: directory)
                try tree.register("status", in: process) { "Pid:\t\(pid)\n" }
            }
            let mount = try LibraryMount(tree, directIO: directIO)
            defer { mount.cleanUp() }
            let paths = ["/proc/\(child.pid)/status", mount.path("workers/\(child.pid)/status")]
            let held = try paths.map { path in
                let descriptor = open(path, O_RDONLY)
                try #require(descriptor >= 0, "open \(path): \(SystemError(errno: errno))")
                return descriptor
            }
            defer { held.forEach { close($0) } }
            var buffer = [UInt8](repeating: 0, count: 4096)
            for (path, descriptor) in zip(paths, held) {
                #expect(pread(descriptor, &buffer, buffer.count, 0) > 0, "\(path) while it lives")
            }

            child.send(SIGKILL)
            #expect(child.wait(timeout: .seconds(5)) == 128 + SIGKILL)
            ids.withLock { $0 = [] }
            for (path, descriptor) in zip(paths, held) {
                #expect(failure(Int32(pread(descriptor, &buffer, buffer.count, 0))) == ESRCH, "\(path), held")
                var attributes = stat()
                #expect(failure(stat(path, &attributes)) == ENOENT, "\(path)")
                #expect(failure(Int32(pread(descriptor, &buffer, buffer.count, 0))) == ESRCH, "\(path), held, after the stat")
                #expect(fstat(descriptor, &attributes) == 0, "\(path): fstat \(SystemError(errno: errno))")
            }
        }

        /// `waitUntilServing()` returns once the mount answers, so a read right after it
        /// succeeds with no retry; a service that cannot serve gives its waiters its error, and
        /// one never run lets them go at the bound.
        @Test func waitUntilServingReturnsOnceTheTreeAnswers() async throws {
            try requireFuse()
            let root = try TemporaryDirectory()
            defer { root.remove() }
            let mountpoint = root.path + "/mnt"
            mkdir(mountpoint, 0o755)
            let tree = ProcTree()
            try tree.register("hello") { "world\n" }
            let service = ProcFSService(tree: tree, mountpoint: FilePath(mountpoint), defaults: [], logger: Logger(label: "test"))
            let group = ServiceGroup(services: [service], logger: Logger(label: "test"))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                try await service.waitUntilServing()
                #expect(try readText(mountpoint + "/hello") == "world\n")
                try await service.waitUntilServing()
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            #expect(!isMounted(mountpoint))
            await #expect(throws: FuseServerError.self, "after it stopped") { try await service.waitUntilServing() }

            let nowhere = ProcFSService(tree: ProcTree(), mountpoint: FilePath(root.path + "/absent"), defaults: [], logger: Logger(label: "test"))
            let run = Task { try await nowhere.run() }
            await #expect(throws: MountpointError.missing(root.path + "/absent")) { try await nowhere.waitUntilServing() }
            // Never run: the wait ends at its bound.
            let idle = ProcFSService(tree: ProcTree(), mountpoint: FilePath(mountpoint), defaults: [], logger: Logger(label: "test"))
            await #expect(throws: FuseServerError.self) { try await idle.waitUntilServing(timeout: .milliseconds(50)) }
            await #expect(throws: MountpointError.missing(root.path + "/absent")) { try await run.value }
        }

        /// The session's checks, for any program: a missing path, a file, a live mount, and two
        /// servers started on one directory at once, of which exactly one mounts. Each error is
        /// one line that says what to do.
        @Test func aServiceRefusesAMountpointAsTheCommandDoes() async throws {
            try requireFuse()
            let root = try TemporaryDirectory()
            defer { root.remove() }
            let mountpoint = root.path + "/mnt"
            mkdir(mountpoint, 0o755)
            let file = root.path + "/file"
            close(open(file, O_CREAT | O_WRONLY, 0o644))
            for (path, expected) in [
                (root.path + "/absent", MountpointError.missing(root.path + "/absent")),
                (file, .notDirectory(file)),
            ] {
                let service = ProcFSService(tree: ProcTree(), mountpoint: FilePath(path), defaults: [], logger: Logger(label: "test"))
                await #expect(throws: expected) { try await Self.bounded { try await service.run() } }
            }

            // Two at once: one serves, the other is refused (busy, or mounted already).
            let trees = [ProcTree(), ProcTree()]
            let services = trees.map {
                ProcFSService(tree: $0, mountpoint: FilePath(mountpoint), options: [.subtype("embedder")], defaults: [], logger: Logger(label: "test"))
            }
            let groups = services.map { ServiceGroup(services: [$0], logger: Logger(label: "test")) }
            final class Outcomes: Sendable { let ended = Mutex<[String]>([]) }
            let outcomes = Outcomes()
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for group in groups {
                    tasks.addTask {
                        do {
                            try await group.run()
                            outcomes.ended.withLock { $0.append("served") }
                        } catch {
                            outcomes.ended.withLock { $0.append("\(error)") }
                        }
                    }
                }
                let served = try await Self.bounded {
                    await withTaskGroup(of: Int?.self) { waits in
                        for (index, service) in services.enumerated() {
                            waits.addTask { (try? await service.waitUntilServing()) == nil ? nil : index }
                        }
                        var served: [Int] = []
                        for await index in waits { if let index { served.append(index) } }
                        return served
                    }
                }
                #expect(served.count == 1, "\(served) of two services on one directory serve")
                #expect(isMounted(mountpoint))

                // A third, after: refused with the command that unmounts.
                let third = ProcFSService(tree: ProcTree(), mountpoint: FilePath(mountpoint), defaults: [], logger: Logger(label: "test"))
                await #expect(throws: MountpointError.alreadyMounted(mountpoint, type: "fuse.embedder")) {
                    try await Self.bounded { try await third.run() }
                }
                let said = MountpointError.alreadyMounted(mountpoint, type: "fuse.embedder").description
                #expect(said == "mountpoint '\(mountpoint)' is already mounted (fuse.embedder); unmount it with: fusermount3 -u \(mountpoint)")

                for group in groups { await group.triggerGracefulShutdown() }
                try await tasks.waitForAll()
            }
            let ended = outcomes.ended.withLock { $0 }
            #expect(ended.filter { $0 == "served" }.count == 1, "\(ended)")
            #expect(ended.contains { $0.hasPrefix("mountpoint '\(mountpoint)' is already") }, "\(ended)")
            #expect(!isMounted(mountpoint))

            // The lock goes with the session, whether it ended well or failed after mounting
            // (the kernel refuses the INIT of max_read=4): a server after it mounts there.
            let refused = ProcFSService(
                tree: ProcTree(), mountpoint: FilePath(mountpoint), options: [.custom("max_read=4")], defaults: [],
                logger: Logger(label: "test"))
            await #expect(throws: FuseServerError.self) { try await Self.bounded { try await refused.run() } }
            #expect(!isMounted(mountpoint))
            let next = ProcFSService(tree: ProcTree(), mountpoint: FilePath(mountpoint), defaults: [], logger: Logger(label: "test"))
            let group = ServiceGroup(services: [next], logger: Logger(label: "test"))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                try await next.waitUntilServing()
                #expect(isMounted(mountpoint))
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }

        /// Runs `body`, failing the test if it takes more than 10 s.
        static func bounded<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
            try await withThrowingTaskGroup(of: T?.self) { tasks in
                tasks.addTask { try await body() }
                tasks.addTask {
                    try await Task.sleep(for: .seconds(10))
                    return nil
                }
                defer { tasks.cancelAll() }
                guard let first = try await tasks.next(), let value = first else {
                    Issue.record("no answer within 10 s")
                    throw CancellationError()
                }
                return value
            }
        }
    }
}
