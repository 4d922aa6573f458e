/// The timer task queue, the userspace twin of the kernel's `tq_timer`: a ``TaskQueue`` that
/// its own ``TickSource`` runs once per tick, `hz` times a second.
///
/// ```swift
/// let timer = try TimerQueue(hz: 100)
/// timer.tasks.queue(task)      // queue_task(&task, &tq_timer)
/// try timer.start()
/// ```
///
/// A routine that re-queues itself, as `sched.c`'s does, therefore runs once a tick.
public final class TimerQueue: Sendable {
    /// The tasks waiting for the next tick.
    public let tasks: TaskQueue
    /// The ticks that run ``tasks``: their rate, lateness and count.
    public let ticks: TickSource

    /// Makes the queue and its tick source; nothing ticks until ``start(continuing:)``.
    ///
    /// - Parameters:
    ///   - latenessBounds: the buckets the tick source counts lateness in (see
    ///     ``TickSource/init(hz:latenessBounds:onTick:)``).
    ///   - observer: told of each tick once the queue's tasks have run, on the tick thread; it
    ///     must be quick. Figures to show are best read from ``ticks`` when asked for: the tick
    ///     source keeps them anyway.
    /// - Throws: ``TickSourceError`` if `hz` is out of ``TickSource/hzRange`` or the system has
    ///   no timer to give.
    public init(
        hz: Int, latenessBounds: [Duration] = [],
        observer: @escaping @Sendable (TickSource.Tick) -> Void = { _ in }
    ) throws(TickSourceError) {
        let tasks = TaskQueue()
        self.tasks = tasks
        self.ticks = try TickSource(hz: hz, latenessBounds: latenessBounds) { tick in
            tasks.run()
            observer(tick)
        }
    }

    /// Starts ticking: from one period from now, or where `position` stands (see
    /// ``TickSource/start(continuing:)``), every tick runs ``tasks``.
    public func start(continuing position: TickSource.Position? = nil) throws {
        try ticks.start(continuing: position)
    }

    /// Stops ticking, waiting at most `timeout` for the tick in progress (see
    /// ``TickSource/stop(timeout:)``).
    public func stop(timeout: Duration) -> Bool {
        ticks.stop(timeout: timeout)
    }
}
