import Logging
import ServiceLifecycle
import SystemPackage

/// Serves a `ProcTree` for a program whose job is just that, in one call.
///
/// ```swift
/// let tree = ProcTree()
/// try tree.register("hello") { "world\n" }
/// try await ProcMount.serve(tree, at: "mnt", logger: Logger(label: "hello"))
/// ```
public enum ProcMount {
    /// Mounts `tree` at `mountpoint` and serves it until the file system is unmounted
    /// (`fusermount3 -u`, `umount`) or the process gets SIGINT, SIGTERM or SIGHUP; then stops
    /// as ``ProcFSService`` stops, which this runs alone in a `ServiceGroup` that owns those
    /// signals.
    ///
    /// - Parameters: as for ``ProcFSService/init(tree:mountpoint:options:defaults:readMode:threads:logger:)``.
    /// - Throws: what ``ProcFSService/run()`` throws.
    public static func serve(
        _ tree: ProcTree, at mountpoint: FilePath, options: [MountOption] = [],
        defaults: [MountOption] = ProcFSService.defaultOptions, readMode: ReadMode = .directIO, threads: Int = 2,
        logger: Logger
    ) async throws {
        let service = ProcFSService(
            tree: tree, mountpoint: mountpoint, options: options, defaults: defaults, readMode: readMode,
            threads: threads, logger: logger)
        // The group's own lines are for its failures only.
        var groupLogger = logger
        groupLogger.logLevel = .warning
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint, .sighup],
                logger: groupLogger))
        try await group.run()
    }
}
