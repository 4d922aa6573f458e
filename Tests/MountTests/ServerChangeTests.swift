import Dispatch
import Glibc
import Logging
import ProcFS
import Synchronization
import SystemPackage
import Testing

/// A mount that a keeper in this process holds, served in turn by servers this process starts
/// on the keeper's connection, as schedfs's keeper starts them in processes of their own: what
/// a server change (an upgrade to a new build, or a replacement after a crash) does to what the
/// kernel holds, seen through real system calls.
final class SharedConnectionMount: Sendable {
    static let watchdogTimeout: Duration = .seconds(60)

    let root: TemporaryDirectory
    let mountpoint: String
    let keeper: FuseKeeper
    let readMode: ReadMode
    private let done = Atomic<Bool>(false)

    init(readMode: ReadMode) throws {
        try requireFuse()
        root = try TemporaryDirectory()
        mountpoint = root.path + "/mnt"
        mkdir(mountpoint, 0o755)
        self.readMode = readMode
        keeper = try FuseKeeper(options: [.subtype("procfs-test")], logger: Logger(label: "test"))
        try keeper.mount(at: FilePath(mountpoint))
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.watchdogTimeout.dispatchSeconds) { [self] in
            guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
            Issue.record("the test hung on \(mountpoint); aborting the mount")
            // A forced unmount aborts the connection: calls stuck on it return ENOTCONN.
            _ = umount2(mountpoint, Int32(MNT_FORCE | MNT_DETACH))
        }
    }

    /// Starts a server of `tree` on the keeper's connection, after the last one stopped.
    func serve(_ tree: ProcTree) throws -> FuseServer {
        let server = try FuseServer(
            tree: tree, options: [.subtype("procfs-test")], readMode: readMode, logger: Logger(label: "test"),
            takingOver: keeper.carried)
        // The server's session closes the descriptor it is given; the keeper keeps its own.
        try server.takeOver(connection: FileDescriptor(rawValue: dup(keeper.connection.rawValue)), mountpoint: FilePath(mountpoint))
        _ = try server.resumeServing(threads: 2) {}
        return server
    }

    /// The path of `name` inside the mount.
    func path(_ name: String) -> String { mountpoint + "/" + name }

    /// Unmounts and removes the directory; call after the last server stopped.
    func cleanUp() {
        if !done.exchange(true, ordering: .acquiringAndReleasing) { keeper.unmount() }
        root.remove()
    }
}

extension MountTests {
    @Suite struct ServerChange {
        static let modes: [ReadMode] = [.directIO, .pageCache]

        /// A tree of files named `paths` (in that order), each reading its own path.
        static func tree(_ paths: [String]) throws -> ProcTree {
            let tree = ProcTree()
            for path in paths {
                let parts = path.split(separator: "/").map(String.init)
                var directory = tree.root
                for name in parts.dropLast() {
                    directory = try tree.entry(named: name, in: directory) ?? tree.makeDirectory(name, in: directory)
                }
                try tree.register(parts.last!, in: directory) { path + "\n" }
            }
            return tree
        }

        /// The server that takes the mount over builds its tree in another order, with an extra
        /// entry first and one entry dropped. Every file held open goes on reading its own text
        /// with its own inode number; the dropped one reads `EIO` and its name is gone; the new
        /// one has a number the kernel never held.
        @Test(arguments: modes)
        func eachPathKeepsItsInodeAcrossAServerChange(mode: ReadMode) throws {
            let mount = try SharedConnectionMount(readMode: mode)
            defer { mount.cleanUp() }
            let kept = ["a", "dir/b", "dir/c", "dir/deeper/d"]
            var first: FuseServer? = try mount.serve(Self.tree(kept + ["gone"]))
            defer { _ = first?.stop(timeout: .seconds(5)) }

            var held: [String: (descriptor: Int32, inode: ino_t)] = [:]
            defer { for (descriptor, _) in held.values { close(descriptor) } }
            for path in kept + ["gone"] {
                let descriptor = open(mount.path(path), O_RDONLY)
                try #require(descriptor >= 0, "open \(path): \(SystemError(errno: errno))")
                var attributes = stat()
                #expect(fstat(descriptor, &attributes) == 0)
                held[path] = (descriptor, attributes.st_ino)
                #expect(try Self.reread(descriptor) == path + "\n")
            }
            #expect(first?.stop(timeout: .seconds(5)) == true)
            first = nil

            let second = try mount.serve(Self.tree(["extra", "dir/deeper/d", "dir/c", "dir/b", "a"]))
            defer { _ = second.stop(timeout: .seconds(5)) }
            for path in kept {
                let (descriptor, inode) = try #require(held[path])
                #expect(try Self.reread(descriptor) == path + "\n", "the held \(path)")
                var now = stat()
                #expect(fstat(descriptor, &now) == 0 && now.st_ino == inode, "the held \(path)'s inode")
                #expect(stat(mount.path(path), &now) == 0 && now.st_ino == inode, "\(path)'s inode")
                #expect(try readOnce(mount.path(path)) == path + "\n")
            }
            let gone = try #require(held["gone"]).descriptor
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(pread(gone, &buffer, buffer.count, 0) == -1 && errno == EIO, "the dropped file reads EIO")
            var attributes = stat()
            #expect(stat(mount.path("gone"), &attributes) == -1 && errno == ENOENT, "the dropped name is gone")
            #expect(stat(mount.path("extra"), &attributes) == 0)
            #expect(!held.values.map(\.inode).contains(attributes.st_ino), "the new entry's number \(attributes.st_ino) is one the kernel held")
            #expect(try readOnce(mount.path("extra")) == "extra\n")
        }

        /// Reads `descriptor` whole from offset 0, as a held /proc file is re-read.
        static func reread(_ descriptor: Int32) throws -> String {
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = pread(descriptor, &buffer, buffer.count, off_t(bytes.count))
                if count < 0 { throw SystemError(errno: errno) }
                if count == 0 { return String(decoding: bytes, as: UTF8.self) }
                bytes += buffer[0..<count]
            }
        }
    }
}
