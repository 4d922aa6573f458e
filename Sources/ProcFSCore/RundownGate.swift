import KernelSync
import Synchronization

/// Counts the callers inside one entry, and lets its removal wait until they have all left.
///
/// This is procfs's `use_pde`/`unuse_pde` and `proc_entry_rundown`: once the gate is closed no
/// caller can enter, and ``drain(timeout:)`` returns when the last one already inside has left.
package final class RundownGate: Sendable {
    private struct State {
        var users = 0
        var closed = false
    }

    private let state = Mutex(State())
    private let drained = WaitQueue()

    package init() {}

    /// Enters the gate, unless it is closed.
    ///
    /// - Returns: whether the caller is inside and must call ``leave()``.
    package func enter() -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.users += 1
            return true
        }
    }

    /// Leaves the gate; the last caller out of a closed gate wakes its remover.
    package func leave() {
        let lastOut = state.withLock { state in
            state.users -= 1
            return state.closed && state.users == 0
        }
        if lastOut { drained.wakeUp() }
    }

    /// Whether the gate has been closed.
    package var isClosed: Bool { state.withLock { $0.closed } }

    /// Closes the gate: no caller enters from now on.
    package func close() {
        state.withLock { $0.closed = true }
    }

    /// Waits at most `timeout` for the callers inside a closed gate to leave.
    ///
    /// - Returns: how many callers are still inside: 0 once the entry is drained.
    package func drain(timeout: Duration) -> Int {
        _ = drained.wait(timeout: timeout) { state.withLock { $0.users == 0 } }
        return state.withLock { $0.users }
    }
}
