import SystemPackage

/// Reads `descriptor` from its current offset to the end (swift-system retries reads that a
/// signal interrupted); what was read before an error is returned.
func readToEnd(_ descriptor: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = (try? chunk.withUnsafeMutableBytes { try FileDescriptor(rawValue: descriptor).read(into: $0) }) ?? 0
        guard count > 0 else { return bytes }
        bytes += chunk[0..<count]
    }
}
