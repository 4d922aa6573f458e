import Dispatch

/// Where the tasks that make async texts run (see `ProcTree.registerAwaiting`): Dispatch
/// threads of their own, not Swift's cooperative pool, which has one thread per core and which
/// the program (or a test) may be blocking. A read that awaits then starts, and resumes after
/// each `await`, whatever the rest of the program does with the pool.
final class AwaitingExecutor: TaskExecutor {
    /// The one executor of the library.
    static let shared = AwaitingExecutor()

    private let queue = DispatchQueue(label: "procfs.awaiting", attributes: .concurrent)

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
