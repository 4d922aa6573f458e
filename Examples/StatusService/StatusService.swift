import Glibc
import Logging
import ProcFS
import ServiceLifecycle
import Synchronization
import SystemPackage

/// `statusfs MOUNTPOINT`: a small server that shows its live state as files, the way a Swift
/// server embeds ProcFS. It runs on swift-service-lifecycle's `ServiceGroup` beside the work it
/// reports on, and stops on SIGTERM or SIGINT, or when the mount is unmounted.
///
///     requests          requests handled so far (announces each change: poll it)
///     rate              a knob: requests a second, 1 to 1000
///     clients/          one file per client connected now, holding its requests
@main
struct StatusService {
    static func main() async throws {
        guard CommandLine.arguments.count == 2 else {
            let standardError = FileDescriptor.standardError
            _ = try? standardError.writeAll("usage: statusfs MOUNTPOINT\n".utf8)
            exit(64)
        }
        var logger = Logger(label: "statusfs")
        logger.logLevel = .info
        let tree = ProcTree()
        let work = try SimulatedWork(tree: tree)
        let procfs = ProcFSService(
            tree: tree, mountpoint: FilePath(CommandLine.arguments[1]), options: [.autoUnmount, .fsName("statusfs")],
            logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    // Unmounted from outside: the whole server stops.
                    .init(service: procfs, successTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: work),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }
}

/// Requests handled at a rate, by clients that connect and leave: the live state shown.
struct SimulatedWork: Service {
    final class State: Sendable {
        let requests = Atomic<Int>(0)
        let rate = Atomic<Int32>(100)
    }

    let state = State()
    let tree: ProcTree
    let requestsFile: ProcEntry
    let clients: ProcEntry

    init(tree: ProcTree) throws {
        let state = self.state
        self.tree = tree
        requestsFile = try tree.register("requests", announcesChanges: true) {
            "\(state.requests.load(ordering: .relaxed))\n"
        }
        try tree.registerIntegerKnob("rate", value: { state.rate.load(ordering: .relaxed) }) { rate throws(Errno) in
            guard (1...1000).contains(rate) else { throw .invalidArgument }
            state.rate.store(rate, ordering: .relaxed)
        }
        clients = try tree.makeDirectory("clients")
    }

    /// Handles requests until graceful shutdown. A client connects every 50 requests and
    /// leaves 200 requests later; its file holds the requests handled since it connected.
    func run() async throws {
        let state = self.state
        do {
            try await cancelWhenGracefulShutdown {
                var client = 0
                while true {
                    try await Task.sleep(for: .seconds(1) / Int(state.rate.load(ordering: .relaxed)))
                    let handled = state.requests.add(1, ordering: .relaxed).newValue
                    requestsFile.changed()
                    guard handled % 50 == 0 else { continue }
                    client += 1
                    try tree.register("client-\(client)", in: clients) {
                        "\(state.requests.load(ordering: .relaxed) - handled)\n"
                    }
                    // A client's file has a trivial closure: its rundown is at once. (A slow one
                    // would hold this task's thread for up to the timeout.)
                    if client > 4 { try tree.remove("client-\(client - 4)", in: clients, timeout: .milliseconds(100)) }
                }
            }
        } catch is CancellationError {}
    }
}
