import Messaging

/// The rules of a transport's connection as a pure state machine: ``ConnectionLoop`` reports what
/// happened (a connection opened or was lost, the broker closed a channel, a call failed, a command
/// arrived) and performs the action it gets back. Nothing here calls rabbitmq-c or reads a clock,
/// so every rule is unit-tested without a broker.
///
/// - **Lifecycle.** A lost connection schedules the first reconnect after the backoff's first
///   delay. While disconnected, ``nextStep(now:)`` says whether to wait, to try now, to give up
///   (after `maximumAttempts` failed attempts) or to finish (the application closed the
///   transport). A failed attempt schedules the next one after the backoff's delay for it.
/// - **Nodes.** A round of opening tries every node once, from ``nodeIndex`` on
///   (``openingOrder``); a lost connection, or a round in which every node failed, starts the next
///   round with the following node.
/// - **Generations.** Every new connection, and every reopened consuming channel, starts a new
///   ``generation``: delivery tags of an older one are stale, and acknowledging them is a no-op
///   (``isCurrent(_:)``).
/// - **Channels.** A channel the broker closed is answered with close-ok once and reopened before
///   the next turn's commands; a second `channel.close` for a channel already waiting to be reopened
///   (RabbitMQ 3.10.8 sends two for one consumer timeout) is not answered, since a second close-ok
///   would cost the connection. The administrative channel is reopened at once, because
///   declarations run several calls in a row.
/// - **Commands.** While connected they run (or fail once the transport is closing); while
///   disconnected publishes wait, acknowledgements are dropped (the broker redelivers), a cancel
///   ends its consumer locally, and everything else waits for the connection.
struct ConnectionStateMachine {
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
        /// Open a connection now (attempt ``attempt``), trying the nodes in ``openingOrder``.
        case connect
        /// Stop reconnecting: ``attempt`` attempts failed; end with ``lastFailure``.
        case giveUp
        /// The application closed the transport: end it.
        case finish
    }

    /// How to answer a `channel.close` from the broker.
    enum ChannelCloseReply: Equatable {
        /// Send close-ok and reopen the channel before the next commands. `failsPublishes`: the
        /// publishing channel closed, so the publishes awaiting its confirms fail (the tracker says
        /// which one the close blames).
        case acknowledgeAndReopen(failsPublishes: Bool)
        /// A repeated close for a channel already closed: send nothing.
        case ignoreRepeated
    }

    /// What a failed call costs.
    enum FailureAction: Equatable {
        /// The connection is unusable: tear it down and reconnect.
        case loseConnection
        /// A channel closed: reopen it at once (the administrative channel) — the caller does.
        case reopenNow(channel: UInt16)
        /// A channel closed: it is reopened before the next turn's commands. `failsPublishes`: it
        /// was the publishing channel, so the publishes awaiting its confirms fail.
        case reopenBeforeNextTurn(channel: UInt16, failsPublishes: Bool)
    }

    /// What reopening a channel involves besides `channel.open`.
    enum Reopening: Equatable {
        /// The publishing channel: put it in confirm mode; publish sequence numbers restart.
        case publishing
        /// The consuming channel: delivery tags restart (a new ``generation``); re-register every
        /// active consumer.
        case consuming(generation: UInt64)
        /// Any other channel: nothing more.
        case plain
    }

    /// A command's kind, as far as the rules care.
    enum CommandKind: Equatable {
        case publish
        case acknowledgement
        case cancel
        case close
        /// Declarations, consumers, queue inspection and deletion: calls that need the broker.
        case call
    }

    /// What to do with a command.
    enum Disposition: Equatable {
        /// Run it on the connection.
        case execute
        /// Fail it: the transport is closing.
        case failClosing
        /// Keep the publish until it can be written (or its deadline passes).
        case holdPublish
        /// Answer success without sending anything: a delivery tag of a lost connection is stale,
        /// and the broker redelivers the message.
        case dropAcknowledgement
        /// End the consumer locally: it no longer exists on the broker.
        case endConsumerLocally
        /// Mark the transport closing.
        case close
        /// Keep the call until a connection is open (or its deadline passes).
        case deferUntilConnected
    }

    /// The delays between attempts.
    let backoff: RabbitMQConfiguration.Backoff
    /// The most reconnect attempts after a loss (nil: forever).
    let maximumAttempts: Int?
    /// How many broker nodes the transport may connect through.
    let nodeCount: Int
    /// The channel reopened at once when a call on it fails.
    let adminChannel: UInt16
    /// The channel in confirm mode.
    let publishChannel: UInt16
    /// The channel consumers run on.
    let consumeChannel: UInt16

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
    /// The node connected through, or tried first in the next round.
    private(set) var nodeIndex = 0
    /// Channels the broker closed, waiting to be reopened.
    private(set) var channelsToReopen: Set<UInt16> = []

    /// A state machine that has not connected yet.
    init(
        backoff: RabbitMQConfiguration.Backoff, maximumAttempts: Int?, nodeCount: Int = 1,
        channels: (admin: UInt16, publish: UInt16, consume: UInt16) = (
            AMQPChannel.admin, AMQPChannel.publish, AMQPChannel.consume
        ),
        now: ContinuousClock.Instant
    ) {
        precondition(nodeCount >= 1, "a transport needs at least one node")
        self.backoff = backoff
        self.maximumAttempts = maximumAttempts
        self.nodeCount = nodeCount
        adminChannel = channels.admin
        publishChannel = channels.publish
        consumeChannel = channels.consume
        nextAttempt = now
        disconnectedSince = now
    }

    // MARK: - Connecting

    /// The nodes to try in one round of opening, in order: each once, from ``nodeIndex`` on.
    var openingOrder: [Int] { (0..<nodeCount).map { (nodeIndex + $0) % nodeCount } }

    /// A connection was opened through node `node`: returns its generation.
    mutating func opened(through node: Int = 0) -> UInt64 {
        precondition((0..<nodeCount).contains(node), "node \(node) is not one of \(nodeCount)")
        nodeIndex = node
        phase = .connected
        generation += 1
        isBlocked = false
        channelsToReopen = []
        return generation
    }

    /// Every node of a round failed: the next round starts with the following node.
    mutating func roundFailed() {
        nodeIndex = (nodeIndex + 1) % nodeCount
    }

    /// The connection was dropped while it was being set up (the attempt then fails).
    mutating func dropped() {
        if phase == .connected { phase = .disconnected }
        isBlocked = false
        channelsToReopen = []
    }

    /// The open connection was lost for `reason`. Returns false (and changes nothing) when it was
    /// not connected, so a loss is handled once. The node may be the one that failed, so the next
    /// round starts with the following one. `unitRandom` ∈ [0, 1) jitters the backoff.
    mutating func lost(_ reason: MessagingError, now: ContinuousClock.Instant, unitRandom: Double) -> Bool {
        guard phase == .connected else { return false }
        phase = .disconnected
        isBlocked = false
        channelsToReopen = []
        attempt = 0
        lastFailure = reason
        disconnectedSince = now
        nextAttempt = now + backoff.delay(beforeAttempt: 1, unitRandom: unitRandom)
        nodeIndex = (nodeIndex + 1) % nodeCount
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

    // MARK: - Channels

    /// The broker sent `channel.close` for `channel`.
    mutating func brokerClosed(channel: UInt16) -> ChannelCloseReply {
        guard phase == .connected, !channelsToReopen.contains(channel) else { return .ignoreRepeated }
        channelsToReopen.insert(channel)
        return .acknowledgeAndReopen(failsPublishes: channel == publishChannel)
    }

    /// A call failed with `failure` (rabbitmq-c has answered a channel close already).
    mutating func callFailed(_ failure: AMQPFailure) -> FailureAction {
        guard case .channelClosed(let channel, _, _) = failure else { return .loseConnection }
        if channel == adminChannel { return .reopenNow(channel: channel) }
        channelsToReopen.insert(channel)
        return .reopenBeforeNextTurn(channel: channel, failsPublishes: channel == publishChannel)
    }

    /// The next channel to reopen, lowest first, with what reopening it involves; nil when none
    /// waits. Reopening the consuming channel starts a new generation.
    mutating func nextReopening() -> (channel: UInt16, reopening: Reopening)? {
        guard phase == .connected, let channel = channelsToReopen.min() else { return nil }
        channelsToReopen.remove(channel)
        switch channel {
        case publishChannel:
            return (channel, .publishing)
        case consumeChannel:
            generation += 1
            return (channel, .consuming(generation: generation))
        default:
            return (channel, .plain)
        }
    }

    /// Whether an acknowledgement with `tag` belongs to the current connection and consuming
    /// channel (a no-ack delivery has generation 0 and never does).
    func isCurrent(_ tag: DeliveryTag) -> Bool { tag.generation == generation && generation != 0 }

    // MARK: - A turn of the loop

    /// What to do with a command that arrived.
    func disposition(of kind: CommandKind) -> Disposition {
        switch phase {
        case .connected:
            return closeRequested ? .failClosing : .execute
        case .disconnected, .finished:
            switch kind {
            case .publish: return .holdPublish
            case .acknowledgement: return .dropAcknowledgement
            case .cancel: return .endConsumerLocally
            case .close: return .close
            case .call: return .deferUntilConnected
            }
        }
    }

    /// Whether waiting publishes may be written now (the broker has not blocked publishers).
    var mayPublish: Bool { phase == .connected && !isBlocked }

    /// Whether the loop may sleep until the socket, a command or a deadline wakes it: nothing is
    /// buffered inside rabbitmq-c, no channel waits to be reopened, and no publish could be written.
    func mayIdle(framesBuffered: Bool, publishesWaiting: Bool) -> Bool {
        !framesBuffered && channelsToReopen.isEmpty && !(mayPublish && publishesWaiting)
    }

    // MARK: - Closing and blocking

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
        channelsToReopen = []
    }
}
