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

/// The whole of a file such as `/proc/self/mountinfo` or `/proc/PID/stat`, read from a fresh
/// open; `nil` if it cannot be opened (the process is gone, or in another PID namespace).
func readWholeFile(_ path: String) -> [UInt8]? {
    guard let descriptor = try? FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) else { return nil }
    defer { try? descriptor.close() }
    return readToEnd(descriptor.rawValue)
}
