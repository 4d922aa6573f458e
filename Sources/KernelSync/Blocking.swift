import Dispatch
import Synchronization

/// Runs `body`, which blocks for a bounded time (a kernel wait, an unmount), on a Dispatch
/// thread, so that it holds none of the few threads that run Swift tasks.
///
/// What `body` captures is released as it returns, before the caller resumes, not whenever
/// Dispatch frees its block: an object `body` holds is gone by the time the caller goes on,
/// even if the process exits at once.
package func runBlocking<Result: Sendable>(
    _ body: @escaping @Sendable () throws -> Result
) async throws -> Result {
    try await runBlocking(OneShot(body))
}

/// Runs `work` as ``runBlocking(_:)-(()->Result)`` runs a closure; for an owner that keeps the
/// work and must not keep what it holds once it has run.
package func runBlocking<Result: Sendable>(_ work: OneShot<Result>) async throws -> Result {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: work.run()) }
    }
}

/// A closure that runs once and is dropped as it returns, so that what it holds goes with it,
/// whoever still holds the `OneShot`.
package final class OneShot<Value: Sendable>: Sendable {
    private let body: Mutex<(@Sendable () throws -> Value)?>

    package init(_ body: @escaping @Sendable () throws -> Value) {
        self.body = Mutex(body)
    }

    /// Runs the closure and drops it; it must be called once only.
    package func run() -> Swift.Result<Value, any Error> {
        guard let body = body.withLock({ $0.take() }) else { fatalError("a OneShot closure ran twice") }
        return Swift.Result { try body() }
    }
}
