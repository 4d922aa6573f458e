/// A FUSE mount option, as `mount.fuse3(8)` and libfuse know it.
///
/// ``ProcFSService`` always adds `default_permissions`: the kernel enforces each entry's mode
/// and owner, as it does in procfs.
public enum MountOption: Hashable, Sendable {
    /// Let users other than the one who mounted use the mount (`allow_other`); for an ordinary
    /// user, `/etc/fuse.conf` must allow it (`user_allow_other`).
    case allowOther
    /// Refuse every write, knobs' included (`ro`).
    case readOnly
    /// Have fusermount3 unmount the file system if the process dies without unmounting
    /// (`auto_unmount`). fusermount3 then watches the process until it exits.
    case autoUnmount
    /// The source shown in `/proc/mounts` and by `df` (`fsname=`).
    case fsName(String)
    /// The type shown as `fuse.NAME` in `/proc/mounts` (`subtype=`).
    case subtype(String)
    /// Log every request and reply to stderr (libfuse's `debug`, as `-d` gives it).
    case debug
    /// Any other option libfuse takes, as `-o` would take it, for example `max_read=4096`.
    case custom(String)

    /// The option as libfuse reads it after `-o`.
    var argument: String {
        switch self {
        case .allowOther: "allow_other"
        case .readOnly: "ro"
        case .autoUnmount: "auto_unmount"
        case .debug: "debug"
        case .fsName(let name): "fsname=\(name)"
        case .subtype(let name): "subtype=\(name)"
        case .custom(let option): option
        }
    }

    /// libfuse's command-line arguments for `options`, in their order after
    /// `default_permissions`, so that a later option overrides an earlier one.
    static func arguments(for options: [MountOption]) -> [String] {
        ["-o", (["default_permissions"] + options.map(\.argument)).joined(separator: ",")]
    }
}
