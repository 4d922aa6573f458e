import Glibc
import SystemPackage

/// The mounts this process sees, from `/proc/self/mountinfo`.
///
/// A mount is found again by its device number, which stays while its path can change (a
/// parent directory renamed, a bind mount moved). Paths are kept as the bytes they are: Linux
/// names need not be UTF-8.
package enum MountTable {
    /// One mount.
    package struct Mount: Sendable, Equatable {
        /// The device, as `major:minor` (`0:52` for a FUSE connection).
        package let device: String
        /// Where it is mounted now.
        package let mountpoint: FilePath
        /// The file system type, for example `fuse.schedfs`.
        package let type: String
        /// For a FUSE mount, the user who mounted it (its `user_id=` option).
        package let owner: uid_t?
    }

    /// Every mount, in the order of the table (a later one may stack over an earlier one).
    package static func mounts() -> [Mount] {
        readTable().split(separator: UInt8(ascii: "\n")).compactMap { line in
            // Fields: id parent major:minor root mountpoint options [optional...] - fstype source super
            let fields = line.split(separator: UInt8(ascii: " "))
            guard fields.count > 4, let dash = fields.firstIndex(of: [UInt8(ascii: "-")]), dash + 1 < fields.count
            else { return nil }
            let superOptions = dash + 3 < fields.count ? fields[dash + 3].split(separator: UInt8(ascii: ",")) : []
            let owner = superOptions.lazy.compactMap { option -> uid_t? in
                let text = String(decoding: option, as: UTF8.self)
                return text.hasPrefix("user_id=") ? uid_t(text.dropFirst("user_id=".count)) : nil
            }.first
            return Mount(
                device: String(decoding: fields[2], as: UTF8.self), mountpoint: unescape(fields[4]),
                type: String(decoding: fields[dash + 1], as: UTF8.self), owner: owner)
        }
    }

    /// The mount of `device`, if it is still mounted.
    package static func mount(of device: String) -> Mount? {
        mounts().last { $0.device == device }
    }

    /// The topmost FUSE mount at `path`, if there is one: of type `fuse`, `fuse.SUBTYPE` or
    /// `fuseblk` (not `fusectl`, the connections' control file system).
    package static func fuseMount(at path: FilePath) -> Mount? {
        mounts().last { mount in
            mount.mountpoint == path && (mount.type == "fuse" || mount.type == "fuseblk" || mount.type.hasPrefix("fuse."))
        }
    }

    /// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
    private static func unescape(_ field: ArraySlice<UInt8>) -> FilePath {
        var bytes: [CChar] = []
        var rest = field
        while let byte = rest.first {
            if byte == UInt8(ascii: "\\"), rest.count >= 4,
                let code = UInt8(String(decoding: rest.dropFirst().prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(CChar(bitPattern: code))
                rest = rest.dropFirst(4)
            } else {
                bytes.append(CChar(bitPattern: byte))
                rest = rest.dropFirst()
            }
        }
        return (bytes + [0]).withUnsafeBufferPointer { FilePath(platformString: $0.baseAddress!) }
    }

    private static func readTable() -> [UInt8] {
        readWholeFile("/proc/self/mountinfo") ?? []
    }
}
