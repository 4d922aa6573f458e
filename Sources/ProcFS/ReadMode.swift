/// How the kernel reads the tree's files.
public enum ReadMode: String, Sendable {
    /// The kernel handles `open` and `release` itself (`FUSE_CAP_NO_OPEN_SUPPORT`) and serves
    /// reads from its page cache; the server invalidates a file's cached text when the file
    /// says it ``ProcEntry/changed()``. `cat` then makes no round trip to the daemon.
    case pageCache = "page cache"
    /// Every open takes a snapshot in the daemon and every read is a round trip to it
    /// (`direct_io`), as LXCFS does.
    case directIO = "direct_io"

    /// The page-cache mode where the kernel offers it, unless direct I/O is asked for.
    public static func choose(kernelOffersNoOpen: Bool, directIORequested: Bool) -> ReadMode {
        kernelOffersNoOpen && !directIORequested ? .pageCache : .directIO
    }
}
