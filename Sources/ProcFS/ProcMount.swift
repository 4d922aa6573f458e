import Logging
import SystemPackage

/// Serves a ``ProcTree`` for a program whose job is just that, in one call.
///
/// ```swift
/// let tree = ProcTree()
/// try tree.register("hello") { "world\n" }
/// try ProcMount.serve(tree, at: "mnt", logger: Logger(label: "hello"))
/// ```
public enum ProcMount {
    /// How long stopping waits for files to close and for the request threads.
    public static let stopTimeout: Duration = .seconds(1)

    /// Mounts `tree` at `mountpoint` and serves it until the file system is unmounted
    /// (`fusermount3 -u`, `umount`) or the process gets SIGINT, SIGTERM or SIGHUP; then stops
    /// serving and unmounts.
    ///
    /// It blocks those signals in the calling thread, and they must be blocked in every thread
    /// of the process: call it before starting other threads, or call
    /// ``ShutdownEvents/blockSignals()`` first thing in `main`.
    ///
    /// - Parameters:
    ///   - fuseOptions: `-o` options for libfuse beside `default_permissions` (the kernel
    ///     enforces each entry's mode and owner) and `auto_unmount`, for example `allow_other`.
    ///   - threads: how many threads answer requests.
    ///   - readMode: how the kernel reads files (see ``ReadMode``).
    /// - Throws: ``FuseServerError``, or the `Errno` of the descriptors that watch for signals, when it cannot start.
    public static func serve(
        _ tree: ProcTree, at mountpoint: FilePath, fuseOptions: [String] = [], threads: Int = 2,
        readMode: ReadMode = .directIO, logger: Logger
    ) throws {
        ShutdownEvents.blockSignals()
        let events = try ShutdownEvents()
        let options = (["default_permissions", "auto_unmount"] + fuseOptions).joined(separator: ",")
        let server = try FuseServer(tree: tree, arguments: ["-o", options], readMode: readMode, logger: logger)
        try server.mount(at: mountpoint)
        try server.serve(threads: threads) { [events] in events.sessionEnded() }
        do {
            try server.confirmServing()
        } catch {
            _ = server.shutDown(timeout: stopTimeout)
            throw error
        }
        logger.info("serving on \(mountpoint)")
        logger.info("stopping: \(events.next())")
        let serving = server.shutDown(timeout: stopTimeout)
        if !serving.detached { logger.warning("files stayed open; aborting the connection") }
        if !serving.stopped { logger.error("a request thread was still busy after \(stopTimeout)") }
    }
}
