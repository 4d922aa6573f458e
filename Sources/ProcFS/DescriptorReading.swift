import Glibc

/// Reads `descriptor` from its current offset to the end, retrying reads that a signal
/// interrupted; what was read before an error is returned.
func readToEnd(_ descriptor: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(descriptor, &chunk, chunk.count)
        if count < 0, errno == EINTR { continue }
        guard count > 0 else { return bytes }
        bytes += chunk[0..<count]
    }
}
