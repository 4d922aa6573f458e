import CFuse3
import CLinux
import Glibc
import KernelSync
import Logging
import SystemPackage

/// Holds a FUSE mount for servers that come and go, so that the mount outlives any one of
/// them: a server replaced by a newer binary, or killed.
///
/// The keeper mounts (through fusermount3, as any libfuse program) and reads the kernel's
/// `INIT` into its ``carried`` state; it serves nothing. Each server it starts inherits the
/// connection (``connection``) and the state (``CarriedState/descriptor``), and takes the
/// connection over (``FuseServer/takeOver(connection:mountpoint:)``). While
/// the keeper lives, the kernel's connection and fusermount3's `auto_unmount` watch stay open
/// whatever happens to a server; requests a dead server read and never answered are sent again
/// to the next. When the keeper exits, the mount goes as it would with one process.
package final class FuseKeeper: @unchecked Sendable {
    // @unchecked: `session` is a C pointer, used only from the thread that owns the keeper
    // (mount, read of INIT, unmount).
    private let session: OpaquePointer
    private let logger: Logger
    /// What the keeper's servers share.
    package let carried: CarriedState
    /// Where it is mounted, resolved; set by ``mount(at:)``.
    package private(set) var mountpoint: FilePath?

    /// Makes the keeper's libfuse session for `options` (as ``FuseServer`` takes them) and
    /// its state.
    ///
    /// - Throws: ``FuseServerError/session(_:)`` with what libfuse said, or
    ///   ``FuseServerError/system(_:_:)`` if the state cannot be made.
    package init(options: [MountOption], logger: Logger) throws(FuseServerError) {
        session = try FuseServer.newSession(
            options: options, operations: fuse_lowlevel_ops(), userData: nil, logger: logger)
        self.logger = logger
        do {
            carried = try CarriedState()
        } catch {
            fuse_session_destroy(session)
            throw .system("memfd_create", error)
        }
    }

    deinit {
        fuse_session_destroy(session)
    }

    /// Mounts at `mountpoint`, and reads the kernel's `INIT` into ``carried``, waiting at most
    /// `timeout` for it.
    ///
    /// - Throws: ``FuseServerError/mount(_:_:)`` with what libfuse or fusermount3 said, or if
    ///   no `INIT` came in time.
    package func mount(at given: FilePath, timeout: Duration = .seconds(5)) throws(FuseServerError) {
        let resolved = try FuseServer.mount(session, at: given, logger: logger)
        mountpoint = resolved
        let descriptor = fuse_session_fd(session)
        // Servers inherit it, by number.
        _ = fcntl(descriptor, F_SETFD, 0)
        var ready = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let polled = (try? retryingOnInterrupt { poll(&ready, 1, milliseconds) }) ?? -1
        // Room for any request: the kernel refuses reads shorter than its largest write.
        var buffer = [UInt8](repeating: 0, count: 1 << 20 | 1 << 12)
        let count = polled > 0 ? buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) } : -1
        guard count >= 40, buffer[4] == 26 /* FUSE_INIT */ else {
            throw .mount(given.description, "the kernel sent no INIT request within \(timeout)")
        }
        carried.initRequest = Array(buffer[..<count])
    }

    /// The connection's descriptor (`/dev/fuse`), which servers inherit.
    package var connection: FileDescriptor { FileDescriptor(rawValue: fuse_session_fd(session)) }

    /// A watch that finds a server of this mount stuck for `timeout` (see ``StallWatch``);
    /// `nil` if the state has no room for the count it needs.
    package func stallWatch(timeout: Duration) -> StallWatch? {
        StallWatch(connection: connection, carried: carried, timeout: timeout)
    }

    /// Unmounts, if still mounted, and closes the connection.
    package func unmount() {
        fuse_session_unmount(session)
    }
}
