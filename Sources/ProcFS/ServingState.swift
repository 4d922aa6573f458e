import Synchronization

/// Whether a ``ProcFSService`` serves its tree yet, for the callers of
/// ``ProcFSService/waitUntilServing()``: they wait until it serves, or get the error that kept
/// it from serving.
final class ServingState: Sendable {
    private enum Phase {
        case starting
        case serving
        case ended(any Error)
    }

    private struct State {
        var phase = Phase.starting
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())

    /// The tree is served: every waiter returns.
    func serving() {
        finish(.serving)
    }

    /// The service will not serve (again): every waiter, and every later one, gets `error`.
    func ended(_ error: any Error) {
        finish(.ended(error))
    }

    private func finish(_ phase: Phase) {
        let waiters = state.withLock { state in
            state.phase = phase
            defer { state.waiters = [:] }
            return state.waiters.values
        }
        for waiter in waiters {
            if case .ended(let error) = phase { waiter.resume(throwing: error) } else { waiter.resume() }
        }
    }

    /// Returns once the tree is served; throws what ended the service, or `CancellationError`.
    func wait() async throws {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
                let now: Result<Void, any Error>? = state.withLock { state in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    switch state.phase {
                    case .serving: return .success(())
                    case .ended(let error): return .failure(error)
                    case .starting:
                        state.waiters[id] = waiter
                        return nil
                    }
                }
                if let now { waiter.resume(with: now) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }
}
