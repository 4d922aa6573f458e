import Glibc
import Logging
import ProcFS
import ServiceLifecycle
import Synchronization
import SystemPackage

/// `statusfs [--kept] MOUNTPOINT`: a small server that shows its live state as files, the way a
/// Swift server embeds ProcFS. It runs on swift-service-lifecycle's `ServiceGroup` beside the
/// work it reports on, and stops on SIGTERM, SIGINT or SIGHUP, or when the mount is unmounted.
///
/// With `--kept`, a keeper holds the mount and runs the server as a process of its own
/// (``ProcFSKeeper``): `kill -9` of the server, or a server that hangs, costs readers nothing,
/// SIGUSR2 to the keeper upgrades the server to the binary now on disk, and `requests` goes on
/// from where the last server left it.
///
///     requests          requests handled so far (announces each change: poll it)
///     rate              a knob: requests a second, 1 to 1000
///     clients/N/requests  one directory per client connected now, by number, with the
///                       requests handled since it came: computed each time it is looked in
///     report            a text that takes 3 s to make, as a query of another service would:
///                       made by an async closure, so no request thread waits for it
@main
struct StatusService {
    static func main() async {
        let arguments = CommandLine.arguments.dropFirst()
        let keptMount = arguments.first == "--kept"
        guard arguments.count == (keptMount ? 2 : 1) else { fail("usage: statusfs [--kept] MOUNTPOINT", status: 64) }
        let mountpoint = FilePath(arguments.last!)
        var logger = Logger(label: "statusfs")
        logger.logLevel = .info
        do {
            // In the process started, this keeps the mount and does not return.
            let kept = keptMount
                ? try await ProcFSKeeper.keepOrTakeOver(mountpoint: mountpoint, options: [.fsName("statusfs")], logger: logger)
                : nil
            let tree = ProcTree()
            let work = try SimulatedWork(tree: tree, carried: kept?.value(named: "requests"))
            // Kept, the work counts only in this server's turn: during an upgrade the old and
            // the new server run at once, and the count must not go up twice as fast.
            let procfs = kept.map { kept in
                ProcFSService(
                    tree: tree, continuing: kept, logger: logger,
                    beginTurn: { work.state.counting.store(true, ordering: .relaxed) },
                    endTurn: { work.state.counting.store(false, ordering: .relaxed) })
            }
                ?? ProcFSService(tree: tree, mountpoint: mountpoint, options: [.fsName("statusfs")], logger: logger)
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [
                        // Unmounted from outside: the whole server stops.
                        .init(service: procfs, successTerminationBehavior: .gracefullyShutdownGroup),
                        .init(service: work),
                    ],
                    gracefulShutdownSignals: [.sigterm, .sigint, .sighup],
                    logger: logger))
            try await group.run()
        } catch {
            // A missing mount point, a mount refused: one line, as a command says it.
            fail("statusfs: \(error)", status: 1)
        }
    }

    static func fail(_ message: String, status: Int32) -> Never {
        _ = try? FileDescriptor.standardError.writeAll("\(message)\n".utf8)
        exit(status)
    }
}

/// Requests handled at a rate, by clients that connect and leave: the live state shown.
struct SimulatedWork: Service {
    final class State: Sendable {
        let requests: RequestCount
        /// Whether requests are handled now: kept, from the server's turn to its handover.
        let counting: Atomic<Bool>
        let rate = Atomic<Int32>(100)
        /// The clients connected now, by number, each with the requests handled when it connected.
        let clients = Mutex<[Int: Int]>([:])

        init(requests: RequestCount, counting: Bool) {
            self.requests = requests
            self.counting = Atomic(counting)
        }
    }

    /// How long `report` takes to make.
    static let reportTime: Duration = .seconds(3)

    let state: State
    let requestsFile: ProcEntry

    /// The work, with its count of requests kept in `carried` if given.
    init(tree: ProcTree, carried: CarriedValue?) throws {
        let state = State(requests: RequestCount(carried: carried), counting: carried == nil)
        self.state = state
        requestsFile = try tree.register("requests", announcesChanges: true) {
            "\(state.requests.value)\n"
        }
        // A write outside 1...1000 is refused with EINVAL, as proc_dointvec_minmax refuses it.
        try tree.registerIntegerKnob("rate", range: 1...1000, value: { state.rate.load(ordering: .relaxed) }) {
            state.rate.store($0, ordering: .relaxed)
        }
        // Slow to make, and awaited: the mount answers everything else meanwhile (and, kept,
        // its keeper does not take the wait for a hang).
        try tree.registerAwaiting("report") {
            try? await Task.sleep(for: SimulatedWork.reportTime)
            return "\(state.requests.value) requests, reported after \(SimulatedWork.reportTime)\n"
        }
        // Computed when looked in, as /proc/<pid> is: the work only keeps its own list.
        try tree.makeDynamicDirectory("clients", names: { state.clients.withLock { Array($0.keys) } }) {
            tree, client, directory in
            guard let since = state.clients.withLock({ $0[client] }) else { return }
            let files = try tree.makeDirectory("\(client)", in: directory)
            try tree.register("requests", in: files) { "\(state.requests.value - since)\n" }
        }
    }

    /// Handles requests until graceful shutdown. A client connects every 50 requests and
    /// leaves 200 requests later; its `requests` file holds the requests handled since it
    /// connected.
    func run() async throws {
        let state = self.state
        do {
            try await cancelWhenGracefulShutdown {
                var client = 0
                while true {
                    try await Task.sleep(for: .seconds(1) / Int(state.rate.load(ordering: .relaxed)))
                    guard state.counting.load(ordering: .relaxed) else { continue }
                    let handled = state.requests.add()
                    requestsFile.changed()
                    guard handled % 50 == 0 else { continue }
                    client += 1
                    state.clients.withLock { clients in
                        clients[client] = handled
                        clients[client - 4] = nil
                    }
                }
            }
        } catch is CancellationError {}
    }
}

/// Requests handled so far: in this process, or in the keeper's memory, where it outlives
/// each server.
final class RequestCount: Sendable {
    private let carried: CarriedValue?
    private let local = Atomic<Int>(0)

    init(carried: CarriedValue?) {
        self.carried = carried
    }

    var value: Int { carried.map { Int($0.load()) } ?? local.load(ordering: .relaxed) }

    /// Counts one more, and returns the count.
    func add() -> Int {
        if let carried { return Int(carried.add(1)) }
        return local.add(1, ordering: .relaxed).newValue
    }
}
