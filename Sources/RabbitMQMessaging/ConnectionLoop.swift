import CRabbitMQ
import Logging
import Messaging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The I/O thread of one ``RabbitMQTransport``: the executor of its ``ConnectionStateMachine``. It
/// owns the rabbitmq-c connection and makes every rabbitmq-c call; the rules — when to reconnect
/// and through which node, what a channel close or a failed call costs, which channel to reopen and
/// how, what to do with a command, when the loop may sleep — are the state machine's.
///
/// The thread runs one loop. While connected, each turn (1) reads every available frame
/// (`amqp_simple_wait_frame_noblock`, which also sends heartbeats and detects missed ones) and
/// dispatches it: deliveries to their consumer's stream, confirms and returns to the publish
/// tracker, closes and cancels to the state machine (`ConnectionLoop+Frames.swift`); (2) reopens
/// channels the broker closed; (3) runs the commands callers submitted
/// (`ConnectionLoop+Commands.swift`); (4) writes waiting publishes without waiting for their
/// confirms; (5) expires deadlines; and (6) sleeps in `poll()` on the socket and the command
/// queue's wake-up pipe, for at most a quarter of the heartbeat interval. While disconnected, it
/// holds publishes and calls, and reconnects with backoff (`ConnectionLoop+Connecting.swift`).
///
/// `@unchecked Sendable`: the instance is handed to its thread once, and after that only that
/// thread touches its mutable state; other threads reach it only through the ``CommandQueue`` and
/// ``TransportStatus`` it shares, which are locked. Its members are internal only so that the
/// extensions in the other files can reach them; nothing outside this type uses them.
final class ConnectionLoop: @unchecked Sendable {
    let configuration: RabbitMQConfiguration
    let logger: Logger
    let queue: CommandQueue
    let status: TransportStatus

    var connection: AMQPConnection?
    /// The rules this loop executes.
    var machine: ConnectionStateMachine
    var phase: ConnectionStateMachine.Phase { machine.phase }
    var generation: UInt64 { machine.generation }
    /// The node connected to, or tried first next.
    var node: RabbitMQURL { configuration.urls[machine.nodeIndex] }
    /// Every topology item declared successfully so far, redeclared on every reconnect.
    var topology = Topology()
    var consumers = ConsumerRegistry<ConsumerRequest>()
    var tracker = PublishConfirmTracker<Reply<Void>>()
    /// Publishes not yet written (disconnected, blocked, or not yet flushed).
    var waitingPublishes = DeadlineQueue<PublishRequest>(deadline: \.deadline)
    /// Calls that wait for a connection.
    var deferred: DeadlineQueue<QueuedCommand>
    /// The last ``TransportStatus/Snapshot/oldestPublishDeadline`` reported.
    var reportedPublishDeadline: ContinuousClock.Instant?
    /// Scratch space to check that message headers fit in a frame before publishing.
    let headerScratch: UnsafeMutableRawBufferPointer
    var randomGenerator = SystemRandomNumberGenerator()

    init(configuration: RabbitMQConfiguration, logger: Logger, queue: CommandQueue, status: TransportStatus) {
        self.configuration = configuration
        self.logger = logger
        self.queue = queue
        self.status = status
        headerScratch = .allocate(byteCount: configuration.frameMax, alignment: 8)
        let timeout = configuration.publishTimeout
        deferred = DeadlineQueue { $0.submitted + timeout }
        machine = ConnectionStateMachine(
            backoff: configuration.reconnectBackoff, maximumAttempts: configuration.maximumReconnectAttempts,
            nodeCount: configuration.urls.count, now: .now)
    }

    deinit {
        headerScratch.deallocate()
    }

    // MARK: - Thread entry

    /// Runs the thread: connects (retrying until `retryDeadline`, if given), resumes `initialReply`,
    /// then serves until the transport is closed or gives up reconnecting.
    func run(initialReply: Reply<Void>, retryDeadline: ContinuousClock.Instant?) {
        switch initialConnect(retryDeadline: retryDeadline) {
        case .success:
            initialReply.resume(returning: .success(()))
        case .failure(let error):
            initialReply.resume(returning: .failure(error))
            finish(error: error)
            return
        }
        while true {
            switch phase {
            case .connected: serviceConnection()
            case .disconnected: serviceDisconnected()
            case .finished: return
            }
        }
    }

    private func initialConnect(retryDeadline: ContinuousClock.Instant?) -> Result<Void, MessagingError> {
        var attempt = 0
        while true {
            attempt += 1
            let error: MessagingError
            switch establish() {
            case .success: return .success(())
            case .failure(let failure): error = failure
            }
            let delay = backoffDelay(beforeAttempt: attempt + 1)
            guard let retryDeadline, error.isRetryable, ContinuousClock.now + delay < retryDeadline else {
                return .failure(error)
            }
            logger.warning(
                "cannot connect to RabbitMQ, retrying",
                metadata: ["error": "\(error)", "attempt": "\(attempt)", "delay": "\(delay)"])
            let wakeAt = ContinuousClock.now + delay
            while ContinuousClock.now < wakeAt {
                waitForEvents(socket: nil, until: wakeAt)
                for queued in queue.takeAll() { dispose(queued) }
                if machine.closeRequested {
                    return .failure(
                        MessagingError(.closed, "the transport was closed while connecting", isRetryable: false))
                }
            }
        }
    }

    // MARK: - Turns

    /// One turn while connected.
    private func serviceConnection() {
        guard let connection else {
            machine.dropped()
            return
        }
        guard drainFrames(connection), reopenChannels(connection) else { return }
        runCommands()
        guard phase == .connected else { return }
        if machine.closeRequested {
            closeGracefully(connection)
            return
        }
        guard flushPublishes(connection, limit: 256) else { return }
        expireDeadlines(now: .now)

        let framesBuffered =
            amqp_frames_enqueued(connection.state) != 0 || amqp_data_in_buffer(connection.state) != 0
        if machine.mayIdle(framesBuffered: framesBuffered, publishesWaiting: !waitingPublishes.isEmpty) {
            waitForEvents(socket: connection.socketDescriptor, until: nextDeadline())
        }
    }

    /// One turn while disconnected: take in commands, expire what waited too long, and do what the
    /// state machine says (wait, connect, give up, finish).
    private func serviceDisconnected() {
        for queued in queue.takeAll() { dispose(queued) }
        let now = ContinuousClock.now
        if !machine.closeRequested { expireDeadlines(now: now) }
        switch machine.nextStep(now: now) {
        case .finish:
            finish(error: nil)
        case .giveUp:
            giveUp()
        case .wait(let until):
            waitForEvents(socket: nil, until: [until, nextDeadline()].compactMap { $0 }.min())
        case .connect:
            switch establish() {
            case .success:
                let (attempts, downtime) = machine.reconnected(now: .now)
                logger.info(
                    "reconnected to RabbitMQ", metadata: ["attempts": "\(attempts)", "downtime": "\(downtime)"])
            case .failure(let error):
                let attempt = machine.attempt
                switch machine.attemptFailed(error, now: .now, unitRandom: unitRandom()) {
                case .wait(let until):
                    logger.warning(
                        "reconnect failed",
                        metadata: [
                            "attempt": "\(attempt)", "error": "\(error)",
                            "retryIn": "\(ContinuousClock.now.duration(to: until))",
                        ])
                default:
                    giveUp()
                }
            }
        }
    }

    // MARK: - Losing the connection

    /// Tears the connection down after a failure and schedules a reconnect (through the next node
    /// first). Publishes awaiting a confirm fail (retryably); consumers stay registered and resume
    /// after the reconnect.
    func connectionLost(_ failure: AMQPFailure) {
        guard phase == .connected else { return }
        let reason = AMQPErrorMapping.error(
            failure, context: "connection to RabbitMQ at \(node.endpoint) lost")
        _ = machine.lost(reason, now: .now, unitRandom: unitRandom())
        logger.error("connection lost", metadata: ["error": "\(reason)"])
        let error = MessagingError(
            .connectionLost, "publish not confirmed: \(reason.message)", replyCode: reason.replyCode,
            replyText: reason.replyText, libraryStatus: reason.libraryStatus, isRetryable: true)
        for entry in tracker.reset() {
            entry.waiter.resume(returning: .failure(error))
        }
        dropConnection()
        finishCancelledConsumers()
    }

    /// Forgets the connection (lost, or dropped while being set up).
    func dropConnection() {
        connection = nil
        machine.dropped()
        status.update {
            $0.isConnected = false
            $0.isBlocked = false
        }
    }

    /// Ends the transport after ``RabbitMQConfiguration/maximumReconnectAttempts`` failed attempts.
    private func giveUp() {
        let lastFailure = machine.lastFailure
        let last = lastFailure?.message ?? "connection lost"
        let final = MessagingError(
            .connectionLost,
            "gave up reconnecting to RabbitMQ at \(configuration.urls.map(\.endpoint).joined(separator: ", ")) "
                + "after \(machine.attempt) attempts: \(last)",
            replyCode: lastFailure?.replyCode, replyText: lastFailure?.replyText,
            libraryStatus: lastFailure?.libraryStatus, isRetryable: false)
        logger.critical("giving up reconnecting", metadata: ["error": "\(final)"])
        finish(error: final)
    }

    private func backoffDelay(beforeAttempt attempt: Int) -> Duration {
        configuration.reconnectBackoff.delay(beforeAttempt: attempt, unitRandom: unitRandom())
    }

    /// A uniform draw from [0, 1) to jitter the backoff.
    private func unitRandom() -> Double {
        Double.random(in: 0..<1, using: &randomGenerator)
    }

    // MARK: - Closing

    /// Publishes what is waiting, cancels the consumers, waits (bounded) for outstanding confirms,
    /// and closes the connection.
    private func closeGracefully(_ connection: AMQPConnection) {
        let deadline = ContinuousClock.now + configuration.closeTimeout
        while machine.mayPublish, !waitingPublishes.isEmpty, ContinuousClock.now < deadline {
            guard flushPublishes(connection, limit: 256), drainFrames(connection) else { break }
        }
        if phase == .connected {
            for tag in consumers.activeTags {
                if case .failure(let failure) = connection.cancel(consumerTag: tag), failure.isConnectionLevel {
                    connectionLost(failure)
                    break
                }
                consumers.markCancelled(tag)
            }
        }
        while phase == .connected, tracker.outstanding > 0 || amqp_frames_enqueued(connection.state) != 0,
            ContinuousClock.now < deadline
        {
            guard drainFrames(connection) else { break }
            if tracker.outstanding > 0 {
                waitForEvents(socket: connection.socketDescriptor, until: min(deadline, .now + .milliseconds(50)))
            }
        }
        if phase == .connected {
            connection.close()
            logger.info("closed the connection to RabbitMQ")
        }
        finish(error: nil)
    }

    /// Ends the thread: fails whatever still waits, ends every consumer stream (with `error`, or
    /// normally when the application closed the transport) and releases the connection.
    func finish(error: MessagingError?) {
        let closed = MessagingError(.closed, "the transport was closed", isRetryable: false)
        let unconfirmed = MessagingError(
            .closed, "publish not confirmed before the transport closed", isRetryable: true)
        for entry in tracker.reset() {
            entry.waiter.resume(returning: .failure(error ?? unconfirmed))
        }
        for request in waitingPublishes.removeAll() {
            request.reply.resume(returning: .failure(error ?? closed))
        }
        for queued in deferred.removeAll() + queue.shutDown() {
            queued.command.fail(error ?? closed)
        }
        for request in consumers.removeAll() {
            if let error {
                request.continuation.finish(throwing: error)
            } else {
                request.continuation.finish()
            }
        }
        connection = nil
        machine.finished()
        status.terminate(error: error)
    }

    // MARK: - Waiting

    /// Sleeps in `poll()` until the socket is readable, a command arrives, `deadline` passes, or
    /// a quarter of the heartbeat interval elapses (so heartbeats are sent and checked in time).
    func waitForEvents(socket: Int32?, until deadline: ContinuousClock.Instant?) {
        let heartbeat = connection.map { $0.heartbeat > 0 ? $0.heartbeat : 4 } ?? configuration.heartbeat
        let tickMilliseconds = max(50, min(1000, heartbeat * 250))
        var timeout = tickMilliseconds
        if let deadline {
            let remaining = ContinuousClock.now.duration(to: deadline)
            let milliseconds = remaining <= .zero ? 0 : Int((remaining.seconds * 1000).rounded(.up))
            timeout = min(timeout, milliseconds)
        }
        var descriptors = [pollfd(fd: queue.wakeDescriptor, events: Int16(POLLIN), revents: 0)]
        if let socket, socket >= 0 {
            descriptors.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0))
        }
        _ = poll(&descriptors, nfds_t(descriptors.count), Int32(timeout))
    }
}
