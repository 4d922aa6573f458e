import Glibc

/// The mounts this process sees, from `/proc/self/mountinfo`.
///
/// A mount is found again by its device number, which stays while its path can change (a
/// parent directory renamed, a bind mount moved).
public enum MountTable {
    /// One mount.
    public struct Mount: Sendable, Equatable {
        /// The device, as `major:minor` (`0:52` for a FUSE connection).
        public let device: String
        /// Where it is mounted now.
        public let mountpoint: String
        /// The file system type, for example `fuse.schedfs`.
        public let type: String
    }

    /// Every mount, in the order of the table (a later one may stack over an earlier one).
    public static func mounts() -> [Mount] {
        guard let table = readTable() else { return [] }
        return table.split(separator: "\n").compactMap { line in
            // Fields: id parent major:minor root mountpoint options [optional...] - fstype source super
            let fields = line.split(separator: " ")
            guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return nil }
            return Mount(device: String(fields[2]), mountpoint: unescape(String(fields[4])), type: String(fields[dash + 1]))
        }
    }

    /// The mount of `device`, if it is still mounted.
    public static func mount(of device: String) -> Mount? {
        mounts().last { $0.device == device }
    }

    /// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
    private static func unescape(_ field: String) -> String {
        var bytes: [UInt8] = []
        var rest = Substring(field).utf8[...]
        while let byte = rest.first {
            if byte == UInt8(ascii: "\\"), rest.count >= 4,
                let code = UInt8(String(decoding: rest.dropFirst().prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(code)
                rest = rest.dropFirst(4)
            } else {
                bytes.append(byte)
                rest = rest.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readTable() -> String? {
        let descriptor = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(descriptor, &chunk, chunk.count)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
