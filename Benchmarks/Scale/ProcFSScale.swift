import Glibc
import KernelSync
import Logging
import ProcFS
import SystemPackage

/// `procfs-scale MOUNTPOINT DIRECTORIES FILES [ANNOUNCING HZ] [page_cache]`: for `make bench`,
/// a ProcFS tree of DIRECTORIES × FILES files, `d<i>/f<j>` holding `<i> <j>\n`, served until
/// unmounted, in direct_io mode or with `page_cache` in that mode. With ANNOUNCING, that many
/// files announce a change HZ times a second, as a counter each.
///
/// It prints one line before it serves, `rss_kib_empty=E rss_kib_full=F entries=N`: its
/// resident memory before and after making the tree.
@main
enum ProcFSScale {
    static func main() async throws {
        var arguments = CommandLine.arguments
        let readMode: ReadMode = arguments.last == "page_cache" ? .pageCache : .directIO
        if readMode == .pageCache { arguments.removeLast() }
        guard arguments.count == 4 || arguments.count == 6,
            let directories = Int(arguments[2]), let files = Int(arguments[3])
        else {
            _ = try? FileDescriptor.standardError.writeAll("usage: procfs-scale MOUNTPOINT DIRECTORIES FILES [ANNOUNCING HZ] [page_cache]\n".utf8)
            exit(64)
        }
        let announcing = arguments.count == 6 ? Int(arguments[4]) ?? 0 : 0
        let hz = arguments.count == 6 ? Int(arguments[5]) ?? 100 : 100
        let empty = residentKiB()
        let tree = ProcTree()
        var announcers: [ProcEntry] = []
        for directory in 0..<directories {
            let parent = try tree.makeDirectory("d\(directory)")
            for file in 0..<files {
                let entry = try tree.register("f\(file)", in: parent, announcesChanges: announcers.count < announcing) {
                    "\(directory) \(file)\n"
                }
                if announcers.count < announcing { announcers.append(entry) }
            }
        }
        let full = residentKiB()
        _ = try FileDescriptor.standardOutput.writeAll(
            "rss_kib_empty=\(empty) rss_kib_full=\(full) entries=\(directories * (files + 1))\n".utf8)
        if !announcers.isEmpty {
            let all = announcers
            // Runs until the process exits.
            _ = try JoinableThread(name: "announce") {
                while true {
                    usleep(useconds_t(1_000_000 / hz))
                    for entry in all { entry.changed() }
                }
            }
        }
        try await ProcMount.serve(tree, at: FilePath(arguments[1]), readMode: readMode, logger: Logger(label: "procfs-scale"))
    }

    /// VmRSS of this process, in KiB.
    static func residentKiB() -> Int {
        let status = (try? FileDescriptor.open("/proc/self/status", .readOnly)).map { descriptor in
            defer { try? descriptor.close() }
            var buffer = [UInt8](repeating: 0, count: 8192)
            let count = (try? buffer.withUnsafeMutableBytes { try descriptor.read(into: $0) }) ?? 0
            return String(decoding: buffer[..<count], as: UTF8.self)
        } ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }
}
