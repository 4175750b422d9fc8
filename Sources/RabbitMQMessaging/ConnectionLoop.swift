import CRabbitMQ
import Logging
import Messaging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The I/O thread of one ``RabbitMQTransport``: it owns the rabbitmq-c connection and makes every
/// rabbitmq-c call.
///
/// The thread runs one loop. While connected, each turn (1) reads every available frame
/// (`amqp_simple_wait_frame_noblock`, which also sends heartbeats and detects missed ones) and
/// dispatches it: deliveries to their consumer's stream, confirms and returns to the publish
/// tracker, closes and cancels to recovery; (2) reopens channels the broker closed; (3) runs the
/// commands callers submitted; (4) writes waiting publishes without waiting for their confirms;
/// (5) expires deadlines; and (6) sleeps in `poll()` on the socket and the command queue's wake-up
/// pipe, for at most a quarter of the heartbeat interval. While disconnected, it holds publishes and
/// calls, and reconnects with backoff.
///
/// `@unchecked Sendable`: the instance is handed to its thread once, and after that only that
/// thread touches its mutable state; other threads reach it only through the ``CommandQueue`` and
/// ``TransportStatus`` it shares, which are locked.
final class ConnectionLoop: @unchecked Sendable {
    private let configuration: RabbitMQConfiguration
    private let logger: Logger
    private let queue: CommandQueue
    private let status: TransportStatus

    private var connection: AMQPConnection?
    /// Connected, lost, reconnecting, finished: the pure state machine this loop executes.
    private var lifecycle: ConnectionLifecycle
    private var phase: ConnectionLifecycle.Phase { lifecycle.phase }
    private var generation: UInt64 { lifecycle.generation }
    private var blocked: Bool { lifecycle.isBlocked }
    private var closeRequested: Bool { lifecycle.closeRequested }
    /// Every topology item declared successfully so far, redeclared on every reconnect.
    private var topology = Topology()
    private var consumers = ConsumerRegistry<ConsumerRequest>()
    private var tracker = PublishConfirmTracker<Reply<Void>>()
    /// Publishes not yet written (disconnected, blocked, or not yet flushed).
    private var waitingPublishes = DeadlineQueue<PublishRequest>(deadline: \.deadline)
    /// Calls that wait for a connection.
    private var deferred: DeadlineQueue<QueuedCommand>
    private var channelsToReopen: Set<UInt16> = []
    /// The last ``TransportStatus/Snapshot/oldestPublishDeadline`` reported.
    private var reportedPublishDeadline: ContinuousClock.Instant?
    /// Scratch space to check that message headers fit in a frame before publishing.
    private var headerScratch: UnsafeMutableRawBufferPointer
    private var randomGenerator = SystemRandomNumberGenerator()
    /// The node connected to, or tried next: an index into ``RabbitMQConfiguration/urls``.
    private var nodeIndex = 0
    private var node: RabbitMQURL { configuration.urls[nodeIndex] }

    init(configuration: RabbitMQConfiguration, logger: Logger, queue: CommandQueue, status: TransportStatus) {
        self.configuration = configuration
        self.logger = logger
        self.queue = queue
        self.status = status
        headerScratch = .allocate(byteCount: configuration.frameMax, alignment: 8)
        let timeout = configuration.publishTimeout
        deferred = DeadlineQueue { $0.submitted + timeout }
        lifecycle = ConnectionLifecycle(
            backoff: configuration.reconnectBackoff, maximumAttempts: configuration.maximumReconnectAttempts,
            now: .now)
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
                for queued in queue.takeAll() {
                    if case .close = queued.command {
                        lifecycle.requestClose()
                    } else {
                        deferred.append(queued)
                    }
                }
                if closeRequested {
                    return .failure(
                        MessagingError(.closed, "the transport was closed while connecting", isRetryable: false))
                }
            }
        }
    }

    // MARK: - Connecting

    /// Opens a connection to the first node that accepts one, trying each once from ``nodeIndex``
    /// on: a node that refuses or is unreachable hands over to the next at once, and only a round
    /// in which every node failed waits out the backoff. An error that no other node would change
    /// (refused credentials, a bad TLS setting) ends the round.
    private func openConnection() -> Result<AMQPConnection, MessagingError> {
        let count = configuration.urls.count
        var lastError: MessagingError?
        for step in 0..<count {
            let index = (nodeIndex + step) % count
            switch AMQPConnection.open(configuration: configuration, url: configuration.urls[index], logger: logger) {
            case .success(let opened):
                nodeIndex = index
                if count > 1 {
                    logger.info(
                        "connected through node \(index + 1) of \(count)", metadata: ["node": "\(node.endpoint)"])
                }
                return .success(opened)
            case .failure(let error):
                lastError = error
                if count > 1 {
                    logger.warning(
                        "node \(index + 1) of \(count) refused the connection",
                        metadata: ["node": "\(configuration.urls[index].endpoint)", "error": "\(error)"])
                }
                guard error.isRetryable else { return .failure(error) }
            }
        }
        nodeIndex = (nodeIndex + 1) % count
        return .failure(lastError!)
    }

    /// Opens a connection and restores everything: topology, consumers, confirm mode.
    private func establish() -> Result<Void, MessagingError> {
        let connection: AMQPConnection
        switch openConnection() {
        case .success(let opened): connection = opened
        case .failure(let error): return .failure(error)
        }
        self.connection = connection
        let generation = lifecycle.opened()
        channelsToReopen = []
        _ = tracker.reset()
        status.update {
            $0.isConnected = true
            $0.isBlocked = false
            $0.topologyInPlace = false
            $0.generation = generation
        }

        let topologyInPlace: Bool
        switch redeclareTopology(connection) {
        case .success(let complete): topologyInPlace = complete
        case .failure(let error):
            dropConnection()
            return .failure(error)
        }
        status.update { $0.topologyInPlace = topologyInPlace }
        if !registerAllConsumers(connection) {
            dropConnection()
            return .failure(
                MessagingError(.connectionLost, "connection lost while re-registering consumers", isRetryable: true))
        }
        logger.info(
            "connected to RabbitMQ",
            metadata: [
                "heartbeat": "\(connection.heartbeat)s", "generation": "\(generation)",
                "consumers": "\(consumers.count)",
            ])
        return .success(())
    }

    /// Redeclares the remembered topology. Returns whether every item succeeded; fails only when
    /// the connection is lost.
    private func redeclareTopology(_ connection: AMQPConnection) -> Result<Bool, MessagingError> {
        guard !topology.exchanges.isEmpty || !topology.queues.isEmpty || !topology.bindings.isEmpty else {
            return .success(true)
        }
        var complete = true
        var failure: AMQPFailure?
        for exchange in topology.exchanges where failure == nil {
            if case .failure(let error) = adminCall(connection, { $0.declare(exchange) }) {
                logger.error(
                    "cannot redeclare exchange", metadata: ["exchange": "\(exchange.name)", "error": "\(error)"])
                complete = false
                if error.isConnectionLevel { failure = error }
            }
        }
        for queueDeclaration in topology.queues where failure == nil {
            if case .failure(let error) = adminCall(connection, { $0.declare(queueDeclaration).map { _ in } }) {
                logger.error(
                    "cannot redeclare queue", metadata: ["queue": "\(queueDeclaration.name)", "error": "\(error)"])
                complete = false
                if error.isConnectionLevel { failure = error }
            }
        }
        for binding in topology.bindings where failure == nil {
            if case .failure(let error) = adminCall(connection, { $0.declare(binding) }) {
                logger.error(
                    "cannot redeclare binding",
                    metadata: ["queue": "\(binding.queue)", "exchange": "\(binding.exchange)", "error": "\(error)"])
                complete = false
                if error.isConnectionLevel { failure = error }
            }
        }
        if let failure {
            return .failure(AMQPErrorMapping.error(failure, context: "cannot redeclare the topology"))
        }
        return .success(complete)
    }

    /// Re-registers every live consumer on the consuming channel. A consumer whose queue is gone
    /// ends with an error; returns false only when the connection is lost.
    private func registerAllConsumers(_ connection: AMQPConnection) -> Bool {
        for tag in consumers.activeTags {
            guard let request = consumers.active(tag) else { continue }
            switch register(request, on: connection) {
            case .success:
                continue
            case .failure(let failure) where failure.isConnectionLevel:
                return false
            case .failure(let failure):
                let error = AMQPErrorMapping.error(
                    failure, context: "cannot resume consumer '\(tag)' on queue '\(request.queue)'")
                logger.error("consumer ended", metadata: ["consumer": "\(tag)", "error": "\(error)"])
                consumers.remove(tag)?.continuation.finish(throwing: error)
                if case .channelClosed(let channel, _, _) = failure, channel == AMQPChannel.consume {
                    // The consuming channel closed and took the consumers registered so far with it.
                    channelsToReopen.insert(AMQPChannel.consume)
                    return true
                }
            }
        }
        return true
    }

    /// Checks that the queue exists (on the admin channel, so a missing queue does not close the
    /// consuming channel), sets the prefetch and starts the consumer.
    private func register(_ request: ConsumerRequest, on connection: AMQPConnection) -> Result<Void, AMQPFailure> {
        let probe = Topology.Queue(name: request.queue)
        if case .failure(let failure) = adminCall(connection, { $0.declare(probe, passive: true).map { _ in } }) {
            return .failure(failure)
        }
        return connection.setPrefetch(request.prefetch).flatMap {
            connection.consume(
                queue: request.queue, tag: request.tag, arguments: request.arguments, noAck: request.autoAcknowledge)
        }
    }

    /// Runs a call on the admin channel and reopens that channel at once when the broker closed it,
    /// so the next call can use it.
    private func adminCall<T>(
        _ connection: AMQPConnection, _ call: (AMQPConnection) -> Result<T, AMQPFailure>
    ) -> Result<T, AMQPFailure> {
        let result = call(connection)
        if case .failure(.channelClosed(let channel, _, _)) = result, channel == AMQPChannel.admin {
            if case .failure(let reopenFailure) = connection.openChannel(AMQPChannel.admin) {
                return .failure(reopenFailure.isConnectionLevel ? reopenFailure : .library(status: .unexpectedState))
            }
        }
        return result
    }

    // MARK: - Connected

    private func serviceConnection() {
        guard let connection else {
            lifecycle.dropped()
            return
        }
        guard drainFrames(connection), reopenChannels(connection) else { return }
        processCommands(connection)
        guard phase == .connected else { return }
        if closeRequested {
            closeGracefully(connection)
            return
        }
        guard flushPublishes(connection, limit: 256) else { return }
        expireDeadlines(now: .now)

        let busy =
            amqp_frames_enqueued(connection.state) != 0 || amqp_data_in_buffer(connection.state) != 0
            || !channelsToReopen.isEmpty || (!blocked && !waitingPublishes.isEmpty)
        if !busy {
            waitForEvents(socket: connection.socketDescriptor, until: nextDeadline())
        }
    }

    /// Reads and dispatches every frame available now. Returns false when the connection was lost.
    private func drainFrames(_ connection: AMQPConnection) -> Bool {
        var budget = 2048
        while budget > 0 {
            budget -= 1
            var frame = amqp_frame_t()
            // One microsecond rather than zero: with a zero timeout rabbitmq-c 0.11 never compares
            // against the heartbeat receive deadline, so missed heartbeats would go unnoticed.
            var timeout = timeval(tv_sec: 0, tv_usec: 1)
            let result = amqp_simple_wait_frame_noblock(connection.state, &frame, &timeout)
            if result == AMQP_STATUS_TIMEOUT.rawValue { break }
            guard result == AMQP_STATUS_OK.rawValue else {
                connectionLost(.library(status: AMQPStatus(result)))
                return false
            }
            guard handle(frame, connection) else { return false }
            amqp_maybe_release_buffers(connection.state)
        }
        if amqp_frames_enqueued(connection.state) == 0 {
            finishCancelledConsumers()
        }
        return true
    }

    private func handle(_ frame: amqp_frame_t, _ connection: AMQPConnection) -> Bool {
        guard Int32(frame.frame_type) == AMQP_FRAME_METHOD else {
            logger.debug(
                "ignoring a stray frame", metadata: ["type": "\(frame.frame_type)", "channel": "\(frame.channel)"])
            return true
        }
        let method = frame.payload.method
        let channel = frame.channel
        guard let decoded = method.decoded else { return true }
        switch method.id {
        case NERCC_AMQP_BASIC_DELIVER:
            return handleDelivery(
                decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee, channel, connection)
        case NERCC_AMQP_BASIC_ACK:
            let ack = decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            settle(tag: ack.delivery_tag, multiple: ack.multiple != 0, acked: true, channel: channel)
        case NERCC_AMQP_BASIC_NACK:
            let nack = decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            settle(tag: nack.delivery_tag, multiple: nack.multiple != 0, acked: false, channel: channel)
        case NERCC_AMQP_BASIC_RETURN:
            return handleReturn(decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee, channel, connection)
        case NERCC_AMQP_BASIC_CANCEL:
            let cancel = decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            brokerCancelled(FieldTableDecoding.string(cancel.consumer_tag))
        case NERCC_AMQP_CHANNEL_CLOSE:
            let close = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let text = FieldTableDecoding.string(close.reply_text)
            // RabbitMQ 3.10.8 can send two channel.close frames for one consumer timeout. The
            // channel is closed on both sides after the first close-ok; a second close-ok would be
            // a protocol error that costs the whole connection. So a close for a channel that is
            // waiting to be reopened is not answered.
            guard !channelsToReopen.contains(channel) else {
                logger.warning(
                    "ignoring a repeated channel.close for a channel already closed",
                    metadata: ["channel": "\(channel)", "code": "\(close.reply_code)", "text": "\(text)"])
                break
            }
            connection.sendChannelCloseOK(channel)
            channelClosed(channel, code: close.reply_code, text: text)
        case NERCC_AMQP_CONNECTION_CLOSE:
            let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = FieldTableDecoding.string(close.reply_text)
            connection.sendConnectionCloseOK()
            connectionLost(.connectionClosed(code: close.reply_code, text: text))
            return false
        case NERCC_AMQP_CONNECTION_BLOCKED:
            let reason = FieldTableDecoding.string(
                decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee.reason)
            lifecycle.setBlocked(true)
            status.update { $0.isBlocked = true }
            logger.warning("RabbitMQ blocked publishing on this connection", metadata: ["reason": "\(reason)"])
        case NERCC_AMQP_CONNECTION_UNBLOCKED:
            lifecycle.setBlocked(false)
            status.update { $0.isBlocked = false }
            logger.info("RabbitMQ unblocked publishing on this connection")
        default:
            logger.debug("ignoring a method", metadata: ["method": "\(method.id)", "channel": "\(channel)"])
        }
        return true
    }

    private func handleDelivery(
        _ deliver: amqp_basic_deliver_t, _ channel: UInt16, _ connection: AMQPConnection
    ) -> Bool {
        let consumerTag = FieldTableDecoding.string(deliver.consumer_tag)
        let deliveryTag = deliver.delivery_tag
        let redelivered = deliver.redelivered != 0
        let exchange = FieldTableDecoding.string(deliver.exchange)
        let routingKey = FieldTableDecoding.string(deliver.routing_key)

        guard let content = readMessage(channel, connection) else { return phase == .connected }
        let (properties, body) = content
        guard channel == AMQPChannel.consume, let consumer = consumers.request(for: consumerTag) else {
            logger.warning(
                "delivery for an unknown consumer; requeueing it", metadata: ["consumer": "\(consumerTag)"])
            _ = amqp_basic_reject(connection.state, channel, deliveryTag, 1)
            return true
        }
        // A no-ack delivery is acknowledged already: generation 0 makes any ack or reject of it a no-op
        // (acknowledging it on the channel would be a channel error).
        let delivery = Delivery(
            tag: DeliveryTag(generation: consumer.autoAcknowledge ? 0 : generation, value: deliveryTag),
            redelivered: redelivered,
            exchange: exchange, routingKey: routingKey, queue: consumer.queue, properties: properties,
            body: body)
        if case .terminated = consumer.continuation.yield(delivery), !consumer.autoAcknowledge {
            // Nobody reads this consumer's stream any more: give the message back to the queue.
            _ = amqp_basic_reject(connection.state, channel, deliveryTag, 1)
        }
        return true
    }

    private func handleReturn(_ returned: amqp_basic_return_t, _ channel: UInt16, _ connection: AMQPConnection) -> Bool
    {
        let code = returned.reply_code
        let text = FieldTableDecoding.string(returned.reply_text)
        let exchange = FieldTableDecoding.string(returned.exchange)
        let routingKey = FieldTableDecoding.string(returned.routing_key)
        // The returned message's header and body follow the method; they must be read either way.
        guard let content = readMessage(channel, connection) else { return phase == .connected }
        let (properties, body) = content
        let matched = tracker.markReturned(
            exchange: exchange, routingKey: routingKey, messageID: properties.messageID, body: body, replyCode: code,
            replyText: text)
        if !matched {
            logger.warning(
                "the broker returned a message that matches no outstanding publish",
                metadata: ["exchange": "\(exchange)", "routingKey": "\(routingKey)"])
        }
        return true
    }

    /// Reads the content (header and body frames) that follows a deliver or return. Returns nil
    /// when that failed, after handling the failure.
    private func readMessage(_ channel: UInt16, _ connection: AMQPConnection) -> (MessageProperties, [UInt8])? {
        var message = amqp_message_t()
        let reply = amqp_read_message(connection.state, channel, &message, 0)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            let failure = connection.failure(from: reply, channel: channel)
            switch failure {
            case .channelClosed(let closed, let code, let text):
                channelClosed(closed, code: code, text: text)
            default:
                connectionLost(failure)
            }
            return nil
        }
        defer { amqp_destroy_message(&message) }
        return (MessageProperties(amqp: message.properties), FieldTableDecoding.bytes(message.body))
    }

    private func settle(tag: UInt64, multiple: Bool, acked: Bool, channel: UInt16) {
        guard channel == AMQPChannel.publish else { return }
        for (reply, outcome) in tracker.settle(deliveryTag: tag, multiple: multiple, acked: acked) {
            switch outcome {
            case .confirmed:
                reply.resume(returning: .success(()))
            case .nacked:
                reply.resume(
                    returning: .failure(
                        MessagingError(
                            .nacked,
                            "RabbitMQ nacked the publish (queue full with reject-publish, or an internal error)",
                            isRetryable: true)))
            case .returned(let code, let text):
                reply.resume(
                    returning: .failure(
                        MessagingError(
                            .unroutable,
                            "RabbitMQ returned the mandatory message: \(AMQPErrorMapping.oneLine(text)) (\(code))",
                            replyCode: code, replyText: text, isRetryable: false)))
            }
        }
    }

    private func brokerCancelled(_ tag: String) {
        guard let consumer = consumers.active(tag) else { return }
        let error = MessagingError(
            .notFound,
            "RabbitMQ cancelled consumer '\(tag)' on queue '\(consumer.queue)' "
                + "(the queue was deleted or is unavailable)",
            isRetryable: false)
        logger.warning("consumer cancelled by the broker", metadata: ["consumer": "\(tag)"])
        consumers.remove(tag)
        consumer.continuation.finish(throwing: error)
    }

    /// The broker closed a channel (close-ok already sent): fail what depended on it and reopen it.
    private func channelClosed(_ channel: UInt16, code: UInt16, text: String) {
        logger.error(
            "RabbitMQ closed a channel", metadata: ["channel": "\(channel)", "code": "\(code)", "text": "\(text)"])
        channelsToReopen.insert(channel)
        guard channel == AMQPChannel.publish else { return }
        let failure = AMQPFailure.channelClosed(channel: channel, code: code, text: text)
        for (entry, blamed) in tracker.channelClosed(code: code) {
            let error: MessagingError
            if blamed {
                error = AMQPErrorMapping.error(failure, context: "cannot publish to exchange '\(entry.exchange)'")
            } else {
                error = MessagingError(
                    .connectionLost,
                    "publish not confirmed: RabbitMQ closed the publishing channel: "
                        + "\(AMQPErrorMapping.oneLine(text)) (\(code))",
                    replyCode: code, replyText: text, isRetryable: true)
            }
            entry.waiter.resume(returning: .failure(error))
        }
    }

    private func reopenChannels(_ connection: AMQPConnection) -> Bool {
        while let channel = channelsToReopen.min() {
            channelsToReopen.remove(channel)
            if case .failure(let failure) = connection.openChannel(channel) {
                connectionLost(failure.isConnectionLevel ? failure : .library(status: .unexpectedState))
                return false
            }
            switch channel {
            case AMQPChannel.publish:
                if case .failure(let failure) = connection.confirmSelect(channel) {
                    connectionLost(failure.isConnectionLevel ? failure : .library(status: .unexpectedState))
                    return false
                }
                _ = tracker.reset()
            case AMQPChannel.consume:
                // Delivery tags restart on a new channel: tags handed out before are now stale.
                let generation = lifecycle.consumingChannelReopened()
                status.update { $0.generation = generation }
                guard registerAllConsumers(connection) else {
                    connectionLost(.library(status: .connectionClosed))
                    return false
                }
            default:
                break
            }
            logger.info("reopened channel", metadata: ["channel": "\(channel)", "generation": "\(generation)"])
        }
        return true
    }

    // MARK: - Commands

    private func processCommands(_ connection: AMQPConnection) {
        var batch = deferred.removeAll()
        batch += queue.takeAll()
        for (index, queued) in batch.enumerated() {
            if closeRequested {
                queued.command.fail(MessagingError(.closed, "the transport is closing", isRetryable: false))
                continue
            }
            guard phase == .connected else {
                deferred.append(contentsOf: batch[index...])
                return
            }
            execute(queued, connection)
        }
    }

    private func execute(_ queued: QueuedCommand, _ connection: AMQPConnection) {
        switch queued.command {
        case .publish(let request):
            waitingPublishes.append(request)
        case .declare(let declaration, let reply):
            reply.resume(returning: declare(declaration, connection))
        case .consume(let request, let reply):
            reply.resume(returning: startConsumer(request, connection))
        case .cancel(let tag, let reply):
            let result = cancelConsumer(tag, connection)
            reply?.resume(returning: result)
        case .ack(let tag, let reply):
            reply.resume(returning: acknowledge(tag, connection) { amqp_basic_ack($0, AMQPChannel.consume, $1, 0) })
        case .reject(let tag, let requeue, let reply):
            reply.resume(
                returning: acknowledge(tag, connection) {
                    amqp_basic_reject($0, AMQPChannel.consume, $1, requeue ? 1 : 0)
                })
        case .inspectQueue(let name, let reply):
            let result = adminCall(connection) { $0.declare(Topology.Queue(name: name), passive: true) }
            reply.resume(returning: mapAdmin(result, context: "cannot inspect queue '\(name)'"))
        case .deleteQueue(let name, let ifUnused, let ifEmpty, let reply):
            let result = adminCall(connection) { $0.deleteQueue(name, ifUnused: ifUnused, ifEmpty: ifEmpty) }
            if case .success = result { forget(queue: name) }
            reply.resume(returning: mapAdmin(result, context: "cannot delete queue '\(name)'"))
        case .deleteExchange(let name, let ifUnused, let reply):
            let result = adminCall(connection) { $0.deleteExchange(name, ifUnused: ifUnused) }
            if case .success = result {
                forget(exchange: name)
                tracker.exchangeDeleted(name)
            }
            reply.resume(returning: mapAdmin(result, context: "cannot delete exchange '\(name)'"))
        case .close:
            lifecycle.requestClose()
            for remaining in queue.shutDown() {
                remaining.command.fail(MessagingError(.closed, "the transport is closing", isRetryable: false))
            }
        }
    }

    private func mapAdmin<T>(_ result: Result<T, AMQPFailure>, context: String) -> Result<T, MessagingError> {
        result.mapError { failure in
            if failure.isConnectionLevel { connectionLost(failure) }
            return AMQPErrorMapping.error(failure, context: context)
        }
    }

    private func declare(_ declaration: Topology, _ connection: AMQPConnection) -> Result<Void, MessagingError> {
        for exchange in declaration.exchanges {
            let result = adminCall(connection) { $0.declare(exchange) }
            if case .failure(let error) = mapAdmin(result, context: "cannot declare exchange '\(exchange.name)'") {
                return .failure(error)
            }
            topology = topology.merged(with: Topology(exchanges: [exchange]))
            tracker.exchangeExists(exchange.name)
        }
        for queueDeclaration in declaration.queues {
            let result = adminCall(connection) { $0.declare(queueDeclaration).map { _ in } }
            if case .failure(let error) = mapAdmin(result, context: "cannot declare queue '\(queueDeclaration.name)'") {
                return .failure(error)
            }
            topology = topology.merged(with: Topology(queues: [queueDeclaration]))
        }
        for binding in declaration.bindings {
            let result = adminCall(connection) { $0.declare(binding) }
            let context = "cannot bind queue '\(binding.queue)' to exchange '\(binding.exchange)'"
            if case .failure(let error) = mapAdmin(result, context: context) {
                return .failure(error)
            }
            topology = topology.merged(with: Topology(bindings: [binding]))
        }
        return .success(())
    }

    private func startConsumer(_ request: ConsumerRequest, _ connection: AMQPConnection) -> Result<Void, MessagingError>
    {
        if consumers.contains(request.tag) {
            let error = MessagingError(
                .preconditionFailed, "consumer tag '\(request.tag)' is already in use on this connection",
                isRetryable: false)
            request.continuation.finish(throwing: error)
            return .failure(error)
        }
        switch register(request, on: connection) {
        case .success:
            _ = consumers.add(request.tag, request)
            logger.debug(
                "consumer started",
                metadata: [
                    "consumer": "\(request.tag)", "queue": "\(request.queue)", "prefetch": "\(request.prefetch)",
                ])
            return .success(())
        case .failure(let failure):
            let error = AMQPErrorMapping.error(failure, context: "cannot consume queue '\(request.queue)'")
            request.continuation.finish(throwing: error)
            switch failure {
            case .channelClosed(let channel, _, _) where channel == AMQPChannel.consume:
                channelsToReopen.insert(channel)
            case .channelClosed:
                break
            default:
                connectionLost(failure)
            }
            return .failure(error)
        }
    }

    private func cancelConsumer(_ tag: String, _ connection: AMQPConnection) -> Result<Void, MessagingError> {
        guard let consumer = consumers.active(tag) else { return .success(()) }
        switch connection.cancel(consumerTag: tag) {
        case .success:
            // Deliveries the broker sent before cancel-ok may still be queued inside rabbitmq-c: the
            // stream ends once they have been handed over.
            consumers.markCancelled(tag)
            return .success(())
        case .failure(let failure):
            if case .channelClosed(let channel, _, _) = failure {
                channelsToReopen.insert(channel)
            } else {
                connectionLost(failure)
            }
            // Either way the consumer no longer exists on the broker.
            consumers.remove(tag)
            consumer.continuation.finish()
            return failure.isConnectionLevel
                ? .success(()) : .failure(AMQPErrorMapping.error(failure, context: "cannot cancel consumer '\(tag)'"))
        }
    }

    private func acknowledge(
        _ tag: DeliveryTag, _ connection: AMQPConnection, _ send: (amqp_connection_state_t, UInt64) -> Int32
    ) -> Result<Void, MessagingError> {
        guard tag.generation == generation else {
            logger.debug(
                "ignoring the acknowledgement of a delivery from an earlier connection or channel",
                metadata: ["tag": "\(tag)", "generation": "\(generation)"])
            return .success(())
        }
        let result = send(connection.state, tag.value)
        guard result == AMQP_STATUS_OK.rawValue else {
            connectionLost(.library(status: AMQPStatus(result)))
            return .failure(
                MessagingError(
                    .connectionLost,
                    "acknowledgement not sent: the connection to RabbitMQ was lost "
                        + "(the broker will redeliver the message)",
                    libraryStatus: result, isRetryable: false))
        }
        return .success(())
    }

    private func forget(queue name: String) {
        topology.queues.removeAll { $0.name == name }
        topology.bindings.removeAll { $0.queue == name }
    }

    private func forget(exchange name: String) {
        topology.exchanges.removeAll { $0.name == name }
        topology.bindings.removeAll { $0.exchange == name }
    }

    private func finishCancelledConsumers() {
        for request in consumers.removeCancelled() { request.continuation.finish() }
    }

    // MARK: - Publishing

    /// Writes up to `limit` waiting publishes (unless the broker blocked publishing). Confirms are
    /// not awaited here: they arrive later and are handled by ``drainFrames(_:)``. Returns false
    /// when the connection was lost.
    private func flushPublishes(_ connection: AMQPConnection, limit: Int) -> Bool {
        guard !blocked else { return true }
        var sent = 0
        while sent < limit, let request = waitingPublishes.popFirst() {
            sent += 1
            guard publish(request, connection) else { return false }
        }
        return true
    }

    private func publish(_ request: PublishRequest, _ connection: AMQPConnection) -> Bool {
        let message = request.message
        let arena = AMQPArena()
        var properties = message.properties.amqpProperties(in: arena)
        if !message.properties.headers.isEmpty {
            // rabbitmq-c writes the method frame before it encodes the headers: headers too large
            // for a frame would leave half a message on the wire. Check first.
            var offset = 0
            let buffer = amqp_bytes_t(len: headerScratch.count - 512, bytes: headerScratch.baseAddress)
            if amqp_encode_table(buffer, &properties.headers, &offset) != AMQP_STATUS_OK.rawValue {
                request.reply.resume(
                    returning: .failure(
                        MessagingError(
                            .protocolError, "message headers do not fit in one frame (\(configuration.frameMax) bytes)",
                            isRetryable: false)))
                return true
            }
        }
        let status = message.body.withUnsafeBytes { body in
            amqp_basic_publish(
                connection.state, AMQPChannel.publish, arena.bytes(message.exchange), arena.bytes(message.routingKey),
                message.mandatory ? 1 : 0, 0, &properties,
                amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            request.reply.resume(
                returning: .failure(
                    MessagingError(
                        .connectionLost,
                        "publish failed: \(AMQPStatus(status)); "
                            + "the connection is being re-established",
                        libraryStatus: status, isRetryable: true)))
            connectionLost(.library(status: AMQPStatus(status)))
            return false
        }
        _ = tracker.recordPublished(
            .init(
                waiter: request.reply, exchange: message.exchange, routingKey: message.routingKey,
                mandatory: message.mandatory, messageID: message.properties.messageID, body: message.body,
                deadline: request.deadline))
        return true
    }

    // MARK: - Deadlines

    /// Tells other threads how long the oldest waiting publish has waited (readiness probes).
    private func reportOldestPublish() {
        let oldest = [tracker.earliestDeadline, waitingPublishes.earliestDeadline].compactMap { $0 }.min()
        guard oldest != reportedPublishDeadline else { return }
        reportedPublishDeadline = oldest
        status.update { $0.oldestPublishDeadline = oldest }
    }

    private func expireDeadlines(now: ContinuousClock.Instant) {
        defer { reportOldestPublish() }
        for reply in tracker.expire(now: now) {
            reply.resume(
                returning: .failure(
                    MessagingError(
                        .timeout, "no publisher confirm from RabbitMQ within \(configuration.publishTimeout)",
                        isRetryable: true)))
        }
        let reason = blocked ? "RabbitMQ is blocking publishers" : "not connected to RabbitMQ"
        for request in waitingPublishes.expire(now: now) {
            request.reply.resume(
                returning: .failure(
                    MessagingError(
                        .timeout, "publish timed out after \(configuration.publishTimeout): \(reason)",
                        isRetryable: true)))
        }
        for queued in deferred.expire(now: now) {
            queued.command.fail(
                MessagingError(
                    .connectionLost,
                    "not connected to RabbitMQ at \(node.endpoint) for \(configuration.publishTimeout)",
                    isRetryable: true))
        }
    }

    private func nextDeadline() -> ContinuousClock.Instant? {
        var candidates: [ContinuousClock.Instant] = []
        if let deadline = tracker.earliestDeadline { candidates.append(deadline) }
        if let deadline = waitingPublishes.earliestDeadline { candidates.append(deadline) }
        if let deadline = deferred.earliestDeadline { candidates.append(deadline) }
        return candidates.min()
    }

    // MARK: - Losing and regaining the connection

    /// Tears the connection down after a failure and schedules a reconnect. Publishes awaiting a
    /// confirm fail (retryably); consumers stay registered and resume after the reconnect.
    private func connectionLost(_ failure: AMQPFailure) {
        guard phase == .connected else { return }
        let reason = AMQPErrorMapping.error(
            failure, context: "connection to RabbitMQ at \(node.endpoint) lost")
        _ = lifecycle.lost(reason, now: .now, unitRandom: unitRandom())
        // The node may be the one that failed: reconnect through the next one first.
        nodeIndex = (nodeIndex + 1) % configuration.urls.count
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

    private func dropConnection() {
        connection = nil
        lifecycle.dropped()
        channelsToReopen = []
        status.update {
            $0.isConnected = false
            $0.isBlocked = false
        }
    }

    private func serviceDisconnected() {
        for queued in queue.takeAll() {
            switch queued.command {
            case .publish(let request):
                waitingPublishes.append(request)
            case .ack(let tag, let reply), .reject(let tag, _, let reply):
                logger.debug("ignoring an acknowledgement while disconnected", metadata: ["tag": "\(tag)"])
                reply.resume(returning: .success(()))
            case .cancel(let tag, let reply):
                consumers.remove(tag)?.continuation.finish()
                reply?.resume(returning: .success(()))
            case .close:
                lifecycle.requestClose()
            default:
                deferred.append(queued)
            }
        }
        let now = ContinuousClock.now
        if !closeRequested { expireDeadlines(now: now) }
        switch lifecycle.nextStep(now: now) {
        case .finish:
            finish(error: nil)
        case .giveUp:
            giveUp()
        case .wait(let until):
            waitForEvents(socket: nil, until: [until, nextDeadline()].compactMap { $0 }.min())
        case .connect:
            switch establish() {
            case .success:
                let (attempts, downtime) = lifecycle.reconnected(now: .now)
                logger.info(
                    "reconnected to RabbitMQ", metadata: ["attempts": "\(attempts)", "downtime": "\(downtime)"])
            case .failure(let error):
                let attempt = lifecycle.attempt
                switch lifecycle.attemptFailed(error, now: .now, unitRandom: unitRandom()) {
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

    /// Ends the transport after ``RabbitMQConfiguration/maximumReconnectAttempts`` failed attempts.
    private func giveUp() {
        let lastFailure = lifecycle.lastFailure
        let last = lastFailure?.message ?? "connection lost"
        let final = MessagingError(
            .connectionLost,
            "gave up reconnecting to RabbitMQ at \(configuration.urls.map(\.endpoint).joined(separator: ", ")) "
                + "after \(lifecycle.attempt) attempts: \(last)",
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
        while phase == .connected, !blocked, !waitingPublishes.isEmpty,
            ContinuousClock.now < deadline
        {
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
    private func finish(error: MessagingError?) {
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
        lifecycle.finished()
        status.terminate(error: error)
    }

    // MARK: - Waiting

    /// Sleeps in `poll()` until the socket is readable, a command arrives, `deadline` passes, or
    /// a quarter of the heartbeat interval elapses (so heartbeats are sent and checked in time).
    private func waitForEvents(socket: Int32?, until deadline: ContinuousClock.Instant?) {
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
