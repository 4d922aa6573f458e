import Glibc
import Logging
import ProcFS
import Synchronization
import SystemPackage

/// `counterfs MOUNTPOINT`: a tree of its own, served until `fusermount3 -u MOUNTPOINT` or Ctrl-C.
///
///     config/greeting    a knob: write 1 to 64 characters to change it
///     changes            a counter: how many times the greeting has changed
///     hello -> config/greeting
@main
enum CounterFS {
    final class State: Sendable {
        let greeting = Mutex("hello")
        let changes = Atomic<Int>(0)
    }

    static func main() async {
        guard CommandLine.arguments.count == 2 else { fail("usage: counterfs MOUNTPOINT", status: 64) }
        do {
            let state = State()
            let tree = ProcTree()
            let config = try tree.makeDirectory("config")
            try tree.registerKnob("greeting", in: config, content: { "\(state.greeting.withLock { $0 })\n" }) { text in
                guard (1...64).contains(text.count) else { throw Errno.invalidArgument }
                state.greeting.withLock { $0 = text }
                state.changes.add(1, ordering: .relaxed)
            }
            try tree.register("changes") { "\(state.changes.load(ordering: .relaxed))\n" }
            try tree.makeSymlink("hello", target: "config/greeting")
            // The path as the bytes it was given in: Linux names need not be UTF-8.
            try await ProcMount.serve(
                tree, at: FilePath(platformString: CommandLine.unsafeArgv[1]!), options: [.fsName("counterfs")],
                logger: Logger(label: "counterfs"))
        } catch {
            fail("counterfs: \(error)", status: 1)
        }
    }

    static func fail(_ message: String, status: Int32) -> Never {
        _ = try? FileDescriptor.standardError.writeAll("\(message)\n".utf8)
        exit(status)
    }
}
