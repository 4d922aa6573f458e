import Glibc
import KernelSync
import ProcFS
import SystemPackage

/// How `schedfs --upgrade MNT` reaches the keeper of the mount on MNT: a Unix socket in the
/// abstract namespace, named by the mount's device (`schedfs-upgrade:0:52`), on which the
/// command asks for an upgrade and reads the outcome, one line. Only the keeper's own user and
/// root may ask.
struct UpgradeControl {
    /// The listening socket.
    let descriptor: Int32

    /// Listens for the mount on `mountpoint`.
    init(listeningFor mountpoint: FilePath) throws(KeeperError) {
        guard let device = MountTable.fuseMount(at: mountpoint)?.device else {
            throw .server("the mount on \(mountpoint) is not in the mount table")
        }
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw .system("socket", Errno(rawValue: errno)) }
        var address = Self.address(device)
        // A keeper of an earlier mount that had this device may still be exiting: wait for it.
        let deadline = ContinuousClock.now + .seconds(2)
        while true {
            let bound = withUnsafePointer(to: &address.address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, address.length) }
            }
            if bound == 0 { break }
            let error = errno
            guard error == EADDRINUSE, ContinuousClock.now < deadline else {
                Glibc.close(descriptor)
                throw .system("bind \(device)", Errno(rawValue: error))
            }
            usleep(10_000)
        }
        guard listen(descriptor, 4) == 0 else {
            let error = errno
            Glibc.close(descriptor)
            throw .system("listen", Errno(rawValue: error))
        }
    }

    /// Stops listening, before the mount goes: its device may be given to the next mount.
    func close() {
        Glibc.close(descriptor)
    }

    /// The request waiting, if it comes from the keeper's user or root.
    func accept() -> Request? {
        let connection = Glibc.accept(descriptor, nil, nil)
        guard connection >= 0 else { return nil }
        _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
        // struct ucred: pid, uid, gid (Glibc hides the type without _GNU_SOURCE).
        var credentials: (pid: Int32, uid: UInt32, gid: UInt32) = (0, UInt32.max, UInt32.max)
        var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        let request = Request(descriptor: connection)
        guard getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0,
            credentials.uid == 0 || credentials.uid == getuid()
        else {
            request.answer("error: only the user who mounted, or root, may upgrade the daemon")
            return nil
        }
        // The request itself is one line, "upgrade"; a peer that sends nothing in time is answered anyway.
        var line = [UInt8](repeating: 0, count: 64)
        var ready = pollfd(fd: connection, events: Int16(POLLIN), revents: 0)
        if (try? retryingOnInterrupt { poll(&ready, 1, 1000) }) == 1 { _ = read(connection, &line, line.count) }
        return request
    }

    /// One asker, answered once.
    struct Request {
        let descriptor: Int32

        func answer(_ line: String) {
            var bytes = Array("\(line)\n".utf8)
            _ = write(descriptor, &bytes, bytes.count)
            Glibc.close(descriptor)
        }
    }

    /// Asks the keeper of the mount on `mountpoint` for an upgrade, and returns its answer.
    static func requestUpgrade(of mountpoint: FilePath, timeout: Duration) throws(KeeperError) -> String {
        guard let device = MountTable.fuseMount(at: mountpoint)?.device else {
            throw .server("\(mountpoint) is not a schedfs mount")
        }
        let connection = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard connection >= 0 else { throw .system("socket", Errno(rawValue: errno)) }
        defer { Glibc.close(connection) }
        var address = Self.address(device)
        let connected = withUnsafePointer(to: &address.address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(connection, $0, address.length) }
        }
        guard connected == 0 else {
            throw .server("no schedfs daemon that can upgrade holds \(mountpoint) (\(Errno(rawValue: errno)))")
        }
        var request = Array("upgrade\n".utf8)
        _ = write(connection, &request, request.count)
        guard let answer = Background.readReport(from: connection, timeout: timeout), !answer.isEmpty else {
            throw .server("the daemon on \(mountpoint) did not answer within \(timeout)")
        }
        return answer
    }

    /// The abstract socket address for the mount `device`.
    private static func address(_ device: String) -> (address: sockaddr_un, length: socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let name = Array("schedfs-upgrade:\(device)".utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            // A leading NUL puts the name in the abstract namespace: no file, gone with the socket.
            path[0] = 0
            for (index, byte) in name.enumerated() where index + 1 < path.count { path[index + 1] = byte }
        }
        let length = MemoryLayout<sa_family_t>.size + 1 + name.count
        return (address, socklen_t(length))
    }
}
