/// How the kernel reads the tree's files.
///
/// | behaviour | ``directIO`` (default) | ``pageCache`` |
/// |---|---|---|
/// | a held file re-read from offset 0 shows the current text | yes | yes |
/// | one read is one whole text | yes | yes, but for a read that races a change of the text's length: it can get the old text and NUL bytes up to the new length |
/// | a sequence of reads from 0 to the end is one text, even across a change | yes | no: after a change the reads go on in the new text |
/// | `fstat` gives the size of the text a re-read from offset 0 gets | yes | yes |
/// | `splice` and `sendfile` see the current text | yes | only after a `read` has asked since the change |
/// | poll wakes with `POLLPRI\|POLLERR` on a change | yes | yes, for polls that sleep |
/// | a read costs a round trip to the daemon | always | only the first after a change |
public enum ReadMode: String, Sendable {
    /// The kernel handles `open` and `release` itself (`FUSE_CAP_NO_OPEN_SUPPORT`) and serves
    /// reads from its page cache, which all opens of a file share; when a file announces a
    /// change, the server has the kernel ask for its attributes again, and the kernel then
    /// drops the stale pages (see `PageCacheCopy`). `cat` then costs no round trip to the daemon
    /// between changes.
    case pageCache = "page cache"
    /// Every open and read is a round trip to the daemon (`direct_io`), and each open reads
    /// as a procfs `seq_file` (see `OpenFile`), exactly as `/proc` files read.
    case directIO = "direct_io"

    /// The mode the server uses: the page-cache mode only where it is asked for and the kernel
    /// offers what it needs (`FUSE_CAP_NO_OPEN_SUPPORT` and `FUSE_CAP_AUTO_INVAL_DATA`).
    static func choose(kernelOffersPageCache: Bool, requested: ReadMode) -> ReadMode {
        kernelOffersPageCache && requested == .pageCache ? .pageCache : .directIO
    }
}
