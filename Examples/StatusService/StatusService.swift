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
///     clients/          one file per client connected now, holding its requests: a
///                       directory computed each time it is looked in
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
        /// The clients connected now, by name, each with the requests handled when it connected.
        let clients = Mutex<[String: Int]>([:])
    }

    let state = State()
    let requestsFile: ProcEntry

    init(tree: ProcTree) throws {
        let state = self.state
        requestsFile = try tree.register("requests", announcesChanges: true) {
            "\(state.requests.load(ordering: .relaxed))\n"
        }
        try tree.registerIntegerKnob("rate", value: { state.rate.load(ordering: .relaxed) }) { rate throws(Errno) in
            guard (1...1000).contains(rate) else { throw .invalidArgument }
            state.rate.store(rate, ordering: .relaxed)
        }
        // Computed when looked in, as /proc/<pid> is: the work only keeps its own list.
        try tree.makeDynamicDirectory("clients", names: { state.clients.withLock { Array($0.keys) } }) {
            tree, name, directory throws(ProcTreeError) in
            guard let since = state.clients.withLock({ $0[name] }) else { return }
            try tree.register(name, in: directory) { "\(state.requests.load(ordering: .relaxed) - since)\n" }
        }
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
                    state.clients.withLock { clients in
                        clients["client-\(client)"] = handled
                        clients["client-\(client - 4)"] = nil
                    }
                }
            }
        } catch is CancellationError {}
    }
}
