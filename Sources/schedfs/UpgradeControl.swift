import Glibc
import KernelSync
import ProcFS
import SystemPackage

/// How `schedfs --upgrade MNT` reaches the keeper of the mount on MNT: a Unix socket named by
/// the mount's device (`upgrade-0:52`) in a directory that only the user who mounted may
/// write: `/run/schedfs-upgrade` for root, `/run/user/UID/schedfs-upgrade` for another user
/// (under the runtime directory that systemd-logind makes for each user, mode 0700, and
/// removes at the user's last logout). On it the command asks for an upgrade and reads the
/// outcome, one line.
///
/// No other local user can take the name first, or answer in the keeper's place: the asker
/// checks that the directory and the socket are the mount owner's and that the process it
/// reached runs as that user (`SO_PEERCRED`), and the keeper answers only its own user and
/// root. (The name was once in the abstract namespace, where anyone may bind any name first.)
struct UpgradeControl: UpgradeRequests {
    /// The listening socket.
    let descriptor: Int32
    /// Where it is bound, and the inode it was bound as: closing removes only that one.
    private let path: FilePath
    private let inode: ino_t

    /// Listens for the mount on `mountpoint`.
    ///
    /// - Throws: ``KeeperError`` when there is no private directory for the socket (an
    ///   ordinary user with no runtime directory, say) or the socket cannot be made; the
    ///   keeper serves on without it, and SIGUSR2 still upgrades.
    init(listeningFor mountpoint: FilePath) throws(KeeperError) {
        guard let device = MountTable.fuseMount(at: mountpoint)?.device else {
            throw .server("the mount on \(mountpoint) is not in the mount table")
        }
        // A look into the mount itself would wait for a server that is not there yet.
        guard !Self.directory(for: getuid()).starts(with: mountpoint) else {
            throw .server("the mount covers \(Self.directory(for: getuid()))")
        }
        let directory = try Self.makeDirectory(for: getuid())
        path = directory.appending("upgrade-\(device)")
        // One left by a keeper that was killed: this user's own, in this user's directory.
        var found = stat()
        if path.withPlatformString({ lstat($0, &found) }) == 0 {
            guard found.st_mode & S_IFMT == S_IFSOCK, found.st_uid == getuid() else {
                throw .server("\(path) is not a socket of this user's")
            }
            _ = path.withPlatformString { unlink($0) }
        }
        let listening = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listening >= 0 else { throw .system("socket", Errno(rawValue: errno)) }
        var (address, length) = Self.address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listening, $0, length) }
        }
        var made = stat()
        guard bound == 0, listen(listening, 4) == 0, path.withPlatformString({ lstat($0, &made) }) == 0 else {
            let error = errno
            Glibc.close(listening)
            throw .system("listen on \(path)", Errno(rawValue: error))
        }
        descriptor = listening
        inode = made.st_ino
    }

    /// Stops listening and removes the socket, before the mount goes: its device may be given
    /// to the next mount, whose keeper makes a socket of that name.
    func close() {
        Glibc.close(descriptor)
        var found = stat()
        if path.withPlatformString({ lstat($0, &found) }) == 0, found.st_ino == inode {
            _ = path.withPlatformString { unlink($0) }
        }
    }

    /// The request waiting, if it comes from the keeper's user or root.
    func accept() -> Request? {
        let connection = Glibc.accept(descriptor, nil, nil)
        guard connection >= 0 else { return nil }
        _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
        let request = Request(descriptor: connection)
        guard let asker = Self.peer(of: connection), asker == 0 || asker == getuid() else {
            request.answer("error: only the user who mounted, or root, may upgrade the daemon")
            return nil
        }
        // The request itself is one line, "upgrade"; a peer that sends nothing in time is answered anyway.
        var line = [UInt8](repeating: 0, count: 64)
        var ready = pollfd(fd: connection, events: Int16(POLLIN), revents: 0)
        if (try? retryingOnInterrupt { poll(&ready, 1, 1000) }) == 1 { _ = read(connection, &line, line.count) }
        return request
    }

    func acceptRequest() -> (any UpgradeRequest)? { accept() }

    /// One asker, answered once.
    struct Request: UpgradeRequest {
        let descriptor: Int32

        func answer(_ line: String) {
            var bytes = Array("\(line)\n".utf8)
            _ = write(descriptor, &bytes, bytes.count)
            Glibc.close(descriptor)
        }
    }

    /// Asks the keeper of the mount on `mountpoint` for an upgrade, and returns its answer.
    static func requestUpgrade(of mountpoint: FilePath, timeout: Duration) throws(KeeperError) -> String {
        guard let mount = MountTable.fuseMount(at: mountpoint), let owner = mount.owner else {
            throw .server("\(mountpoint) is not a schedfs mount")
        }
        // Only what the mount's owner made: a directory no one else may write, and its socket.
        // A keeper started before the socket moved there listens on the abstract name it had,
        // which anyone may bind: what answers there must run as the mount's owner too.
        let path = try? privateDirectory(for: owner).appending("upgrade-\(mount.device)")
        var found = stat()
        let address: (sockaddr_un, socklen_t)
        if let path, path.withPlatformString({ lstat($0, &found) }) == 0 {
            guard found.st_mode & S_IFMT == S_IFSOCK, found.st_uid == owner else {
                throw .server("\(path) is not a socket of the user who mounted \(mountpoint) (uid \(owner))")
            }
            address = Self.address(path)
        } else {
            address = Self.abstractAddress("schedfs-upgrade:\(mount.device)")
        }
        let connection = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard connection >= 0 else { throw .system("socket", Errno(rawValue: errno)) }
        defer { Glibc.close(connection) }
        var socketAddress = address.0
        let connected = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(connection, $0, address.1) }
        }
        guard connected == 0 else {
            throw .server("no schedfs daemon that can upgrade holds \(mountpoint) (\(Errno(rawValue: errno))); "
                + "SIGUSR2 to the daemon upgrades it")
        }
        guard Self.peer(of: connection) == owner else {
            throw .server("what answers for \(mountpoint) does not run as the user who mounted it (uid \(owner))")
        }
        var request = Array("upgrade\n".utf8)
        _ = write(connection, &request, request.count)
        guard let answer = Readiness.readReport(from: connection, timeout: timeout), !answer.isEmpty else {
            throw .server("the daemon on \(mountpoint) did not answer within \(timeout)")
        }
        return answer
    }

    /// The directory of `uid`'s upgrade sockets: root's under `/run`, another user's under
    /// that user's runtime directory.
    static func directory(for uid: uid_t) -> FilePath {
        uid == 0 ? "/run/schedfs-upgrade" : FilePath("/run/user/\(uid)/schedfs-upgrade")
    }

    /// Makes (or finds) this user's directory, after checking that no other user could have
    /// made or changed it, nor its parent.
    private static func makeDirectory(for uid: uid_t) throws(KeeperError) -> FilePath {
        let directory = directory(for: uid)
        _ = try privateDirectory(directory.removingLastComponent(), owners: [0, uid])
        if directory.withPlatformString({ mkdir($0, 0o700) }) != 0 && errno != EEXIST {
            throw .system("mkdir \(directory)", Errno(rawValue: errno))
        }
        return try privateDirectory(for: uid)
    }

    /// `uid`'s directory, if it is one that only `uid` (or root) could have made and written.
    private static func privateDirectory(for uid: uid_t) throws(KeeperError) -> FilePath {
        try privateDirectory(directory(for: uid), owners: [uid])
    }

    /// `path`, if it is a directory (not a link) owned by one of `owners` that no one else may
    /// write.
    private static func privateDirectory(_ path: FilePath, owners: Set<uid_t>) throws(KeeperError) -> FilePath {
        var found = stat()
        guard path.withPlatformString({ lstat($0, &found) }) == 0 else {
            throw .server("\(path): \(Errno(rawValue: errno))")
        }
        guard found.st_mode & S_IFMT == S_IFDIR, owners.contains(found.st_uid), found.st_mode & 0o022 == 0 else {
            throw .server("\(path) is not a directory that only its owner may write")
        }
        return path
    }

    /// The user at the other end of `connection`.
    private static func peer(of connection: Int32) -> uid_t? {
        // struct ucred: pid, uid, gid (Glibc hides the type without _GNU_SOURCE).
        var credentials: (pid: Int32, uid: UInt32, gid: UInt32) = (0, UInt32.max, UInt32.max)
        var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        guard getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else { return nil }
        return credentials.uid
    }

    /// The address of the socket at `path`, and its length.
    private static func address(_ path: FilePath) -> (sockaddr_un, socklen_t) {
        address(Array(path.description.utf8), abstract: false)
    }

    /// The address of `name` in the abstract namespace, where a leading NUL stands for the name
    /// being no file, and its length: the name is exactly these bytes.
    private static func abstractAddress(_ name: String) -> (sockaddr_un, socklen_t) {
        address(Array(name.utf8), abstract: true)
    }

    private static func address(_ name: [UInt8], abstract: Bool) -> (sockaddr_un, socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let start = abstract ? 1 : 0
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            // One byte left for a path's closing NUL.
            for (index, byte) in name.enumerated() where start + index + 1 < buffer.count { buffer[start + index] = byte }
        }
        return (address, socklen_t(MemoryLayout<sa_family_t>.size + start + name.count + (abstract ? 0 : 1)))
    }
}
