import ProcFS
import ProcFSMetrics
import Synchronization
import TaskQueue

// The names that the documentation's snippets take as given: a server's own state, its other
// services, and what a snippet before it made. Every snippet is compiled against these alone.

let requests = Atomic<Int>(0)
let greeting = Mutex("hello")
let workers = Atomic<Int32>(4)
let logger = Logger(label: "snippets")
let tree = ProcTree()
let server = SimulatedWork()
let procfs = ProcFSService(tree: tree, mountpoint: "/run/myserver", logger: logger)
let group = ServiceGroup(services: [procfs, server], logger: logger)
let pool = WorkerPool()
let task = QueueTask(name: "routine") { _ in }

/// The state of the README's counterfs example.
final class State: Sendable {
    let greeting = Mutex("hello")
    let changes = Atomic<Int>(0)
}

/// The README's statusfs example's work.
struct SimulatedWork: Service {
    init() {}
    init(tree: ProcTree) throws {}
    func run() async throws {}
}

/// A pool of workers, known by number.
struct WorkerPool: Sendable {
    var workerIDs: [Int] { [1, 2] }
    func state(of id: Int) -> String { "idle" }
}
