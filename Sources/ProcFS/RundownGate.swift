import KernelSync
import Synchronization

/// Counts the callers inside something that is going away, and lets its end wait until they
/// have all left: once the gate is closed no caller can enter, and ``drain(timeout:)`` returns
/// when the last one already inside has left (the pattern of procfs's `proc_entry_rundown`).
/// The server guards its writes of notifications to the FUSE device with one.
final class RundownGate: Sendable {
    private struct State {
        var users = 0
        var closed = false
    }

    private let state = Mutex(State())
    private let drained = WaitQueue()

    init() {}

    /// Enters the gate, unless it is closed.
    ///
    /// - Returns: whether the caller is inside and must call ``leave()``.
    func enter() -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.users += 1
            return true
        }
    }

    /// Leaves the gate; the last caller out of a closed gate wakes its remover.
    func leave() {
        let lastOut = state.withLock { state in
            state.users -= 1
            return state.closed && state.users == 0
        }
        if lastOut { drained.wakeUp() }
    }

    /// Closes the gate: no caller enters from now on.
    func close() {
        state.withLock { $0.closed = true }
    }

    /// Waits at most `timeout` for the callers inside a closed gate to leave.
    ///
    /// - Returns: how many callers are still inside: 0 once the entry is drained.
    func drain(timeout: Duration) -> Int {
        _ = drained.wait(timeout: timeout) { state.withLock { $0.users == 0 } }
        return state.withLock { $0.users }
    }
}
