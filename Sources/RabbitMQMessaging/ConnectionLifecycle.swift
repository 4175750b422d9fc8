import Messaging

/// The lifecycle of a transport's connection — connected, lost, reconnecting with backoff, given
/// up, closed — as a pure state machine: ``ConnectionLoop`` reports what happened and performs the
/// ``Action`` it gets back, so the rules are unit-tested without a broker or a clock.
///
/// - A lost connection schedules the first reconnect after the backoff's first delay.
/// - While disconnected, ``nextStep(now:)`` says whether to wait, to try now, to give up (after
///   `maximumAttempts` failed attempts) or to finish (the application closed the transport).
/// - A failed attempt schedules the next one after the backoff's delay for it, or gives up.
/// - Every new connection, and every reopened consuming channel, starts a new ``generation``
///   (delivery tags of an older one are stale).
struct ConnectionLifecycle {
    /// Where the connection stands.
    enum Phase: Equatable {
        /// Open: frames are read, commands run.
        case connected
        /// Lost or not yet open: commands wait, reconnects are scheduled.
        case disconnected
        /// The transport ended (closed, or gave up); nothing more happens.
        case finished
    }

    /// What the executor must do next while disconnected.
    enum Action: Equatable {
        /// Nothing until this instant (or until a command arrives).
        case wait(until: ContinuousClock.Instant)
        /// Open a connection now (attempt ``attempt``).
        case connect
        /// Stop reconnecting: ``attempt`` attempts failed; end with ``lastFailure``.
        case giveUp
        /// The application closed the transport: end it.
        case finish
    }

    /// The delays between attempts.
    let backoff: RabbitMQConfiguration.Backoff
    /// The most reconnect attempts after a loss (nil: forever).
    let maximumAttempts: Int?

    private(set) var phase = Phase.disconnected
    /// Increases with every connection and every reopened consuming channel.
    private(set) var generation: UInt64 = 0
    /// Reconnect attempts since the connection was lost.
    private(set) var attempt = 0
    /// When the next reconnect attempt is due.
    private(set) var nextAttempt: ContinuousClock.Instant
    /// When the connection was lost.
    private(set) var disconnectedSince: ContinuousClock.Instant
    /// Why the connection was lost, or why the last attempt failed.
    private(set) var lastFailure: MessagingError?
    /// The application asked to close the transport.
    private(set) var closeRequested = false
    /// The broker blocks this connection's publishers (`connection.blocked`).
    private(set) var isBlocked = false

    /// A lifecycle that has not connected yet.
    init(backoff: RabbitMQConfiguration.Backoff, maximumAttempts: Int?, now: ContinuousClock.Instant) {
        self.backoff = backoff
        self.maximumAttempts = maximumAttempts
        nextAttempt = now
        disconnectedSince = now
    }

    /// A connection was opened: returns its generation.
    mutating func opened() -> UInt64 {
        phase = .connected
        generation += 1
        isBlocked = false
        return generation
    }

    /// The consuming channel was reopened (its delivery tags restart): returns the new generation.
    mutating func consumingChannelReopened() -> UInt64 {
        generation += 1
        return generation
    }

    /// The connection was dropped while it was being set up (the attempt then fails).
    mutating func dropped() {
        if phase == .connected { phase = .disconnected }
        isBlocked = false
    }

    /// The open connection was lost for `reason`. Returns false (and changes nothing) when it was
    /// not connected, so a loss is handled once. `unitRandom` ∈ [0, 1) jitters the backoff.
    mutating func lost(_ reason: MessagingError, now: ContinuousClock.Instant, unitRandom: Double) -> Bool {
        guard phase == .connected else { return false }
        phase = .disconnected
        isBlocked = false
        attempt = 0
        lastFailure = reason
        disconnectedSince = now
        nextAttempt = now + backoff.delay(beforeAttempt: 1, unitRandom: unitRandom)
        return true
    }

    /// What to do while disconnected; `.connect` counts an attempt.
    mutating func nextStep(now: ContinuousClock.Instant) -> Action {
        if closeRequested { return .finish }
        guard now >= nextAttempt else { return .wait(until: nextAttempt) }
        if let maximumAttempts, attempt >= maximumAttempts { return .giveUp }
        attempt += 1
        return .connect
    }

    /// The attempt succeeded: returns how many attempts it took and the downtime.
    mutating func reconnected(now: ContinuousClock.Instant) -> (attempts: Int, downtime: Duration) {
        let result = (attempt, now - disconnectedSince)
        attempt = 0
        lastFailure = nil
        return result
    }

    /// The attempt failed with `error`: the next one is scheduled (`.wait`), or reconnecting ends
    /// (`.giveUp`).
    mutating func attemptFailed(_ error: MessagingError, now: ContinuousClock.Instant, unitRandom: Double) -> Action {
        lastFailure = error
        if let maximumAttempts, attempt >= maximumAttempts { return .giveUp }
        nextAttempt = now + backoff.delay(beforeAttempt: attempt + 1, unitRandom: unitRandom)
        return .wait(until: nextAttempt)
    }

    /// The application closed the transport.
    mutating func requestClose() {
        closeRequested = true
    }

    /// The broker blocked or unblocked the connection's publishers.
    mutating func setBlocked(_ blocked: Bool) {
        isBlocked = blocked
    }

    /// The transport ended.
    mutating func finished() {
        phase = .finished
        isBlocked = false
    }
}
