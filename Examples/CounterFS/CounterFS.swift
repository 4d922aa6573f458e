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

    static func main() async throws {
        guard CommandLine.arguments.count == 2 else {
            _ = "usage: counterfs MOUNTPOINT\n".withCString { write(STDERR_FILENO, $0, strlen($0)) }
            exit(64)
        }
        let state = State()
        let tree = ProcTree()
        let config = try tree.makeDirectory("config")
        try tree.registerKnob("greeting", in: config, content: { "\(state.greeting.withLock { $0 })\n" }) {
            text throws(Errno) in
            guard (1...64).contains(text.count) else { throw .invalidArgument }
            state.greeting.withLock { $0 = text }
            state.changes.add(1, ordering: .relaxed)
        }
        try tree.register("changes") { "\(state.changes.load(ordering: .relaxed))\n" }
        try tree.makeSymlink("hello", target: "config/greeting")
        // The path as the bytes it was given in: Linux names need not be UTF-8.
        do {
            try await ProcMount.serve(
                tree, at: FilePath(platformString: CommandLine.unsafeArgv[1]!), options: [.autoUnmount, .fsName("counterfs")],
                logger: Logger(label: "counterfs"))
        } catch {
            _ = "counterfs: \(error)\n".withCString { write(STDERR_FILENO, $0, strlen($0)) }
            exit(1)
        }
    }
}
