import CRabbitMQ
import Messaging

/// Running the commands callers submitted, writing publishes, and expiring what waited too long.
extension ConnectionLoop {
    // MARK: - Commands

    /// Runs the calls that waited for a connection, then the commands that arrived.
    func runCommands() {
        for queued in deferred.removeAll() + queue.takeAll() { dispose(queued) }
    }

    /// Does with a command what the state machine says: run it, hold it, drop it, fail it.
    func dispose(_ queued: QueuedCommand) {
        switch machine.disposition(of: queued.command.kind) {
        case .execute:
            guard let connection else {
                deferred.append(queued)
                return
            }
            execute(queued, connection)
        case .failClosing:
            queued.command.fail(MessagingError(.closed, "the transport is closing", isRetryable: false))
        case .holdPublish:
            if case .publish(let request) = queued.command { waitingPublishes.append(request) }
        case .dropAcknowledgement:
            if case .ack(let tag, let reply) = queued.command {
                logger.debug("ignoring an acknowledgement while disconnected", metadata: ["tag": "\(tag)"])
                reply.resume(returning: .success(()))
            } else if case .reject(let tag, _, let reply) = queued.command {
                logger.debug("ignoring a rejection while disconnected", metadata: ["tag": "\(tag)"])
                reply.resume(returning: .success(()))
            }
        case .endConsumerLocally:
            if case .cancel(let tag, let reply) = queued.command {
                consumers.remove(tag)?.continuation.finish()
                reply?.resume(returning: .success(()))
            }
        case .close:
            machine.requestClose()
        case .deferUntilConnected:
            deferred.append(queued)
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
            machine.requestClose()
            for remaining in queue.shutDown() {
                remaining.command.fail(MessagingError(.closed, "the transport is closing", isRetryable: false))
            }
        }
    }

    private func mapAdmin<T>(_ result: Result<T, AMQPFailure>, context: String) -> Result<T, MessagingError> {
        result.mapError { failure in
            absorb(failure)
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
            absorb(failure)
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
            absorb(failure)
            // Either way the consumer no longer exists on the broker.
            consumers.remove(tag)
            consumer.continuation.finish()
            return failure.isConnectionLevel
                ? .success(()) : .failure(AMQPErrorMapping.error(failure, context: "cannot cancel consumer '\(tag)'"))
        }
    }

    /// Sends an ack or reject, unless the state machine says the tag is stale (from an earlier
    /// connection or consuming channel, or a no-ack delivery): then it is a no-op.
    private func acknowledge(
        _ tag: DeliveryTag, _ connection: AMQPConnection, _ send: (amqp_connection_state_t, UInt64) -> Int32
    ) -> Result<Void, MessagingError> {
        guard machine.isCurrent(tag) else {
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

    func finishCancelledConsumers() {
        for request in consumers.removeCancelled() { request.continuation.finish() }
    }

    // MARK: - Publishing

    /// Writes up to `limit` waiting publishes (unless the broker blocked publishing). Confirms are
    /// not awaited here: they arrive later and are handled by ``drainFrames(_:)``. Returns false
    /// when the connection was lost.
    func flushPublishes(_ connection: AMQPConnection, limit: Int) -> Bool {
        guard machine.mayPublish else { return true }
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

    func expireDeadlines(now: ContinuousClock.Instant) {
        defer { reportOldestPublish() }
        for reply in tracker.expire(now: now) {
            reply.resume(
                returning: .failure(
                    MessagingError(
                        .timeout, "no publisher confirm from RabbitMQ within \(configuration.publishTimeout)",
                        isRetryable: true)))
        }
        let reason = machine.isBlocked ? "RabbitMQ is blocking publishers" : "not connected to RabbitMQ"
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

    func nextDeadline() -> ContinuousClock.Instant? {
        var candidates: [ContinuousClock.Instant] = []
        if let deadline = tracker.earliestDeadline { candidates.append(deadline) }
        if let deadline = waitingPublishes.earliestDeadline { candidates.append(deadline) }
        if let deadline = deferred.earliestDeadline { candidates.append(deadline) }
        return candidates.min()
    }
}
