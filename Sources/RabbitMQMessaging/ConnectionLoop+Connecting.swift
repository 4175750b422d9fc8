import Logging
import Messaging

/// Opening a connection and restoring what lived on the last one: topology, consumers, channels.
extension ConnectionLoop {
    /// Opens a connection to the first node that accepts one, in the state machine's
    /// ``ConnectionStateMachine/openingOrder``: a node that refuses or is unreachable hands over to
    /// the next at once, and only a round in which every node failed waits out the backoff. An error
    /// that no other node would change (refused credentials, a bad TLS setting) ends the round.
    private func openConnection() -> Result<(AMQPConnection, node: Int), MessagingError> {
        let count = configuration.urls.count
        var lastError: MessagingError?
        for index in machine.openingOrder {
            switch AMQPConnection.open(configuration: configuration, url: configuration.urls[index], logger: logger) {
            case .success(let opened):
                if count > 1 {
                    logger.info(
                        "connected through node \(index + 1) of \(count)",
                        metadata: ["node": "\(configuration.urls[index].endpoint)"])
                }
                return .success((opened, index))
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
        machine.roundFailed()
        return .failure(lastError!)
    }

    /// Opens a connection and restores everything: topology, consumers, confirm mode.
    func establish() -> Result<Void, MessagingError> {
        let connection: AMQPConnection
        let generation: UInt64
        switch openConnection() {
        case .success(let (opened, node)):
            connection = opened
            generation = machine.opened(through: node)
        case .failure(let error):
            return .failure(error)
        }
        self.connection = connection
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
        var complete = true
        var failure: AMQPFailure?
        func redeclare(
            _ what: String, _ metadata: Logger.Metadata, _ call: (AMQPConnection) -> Result<Void, AMQPFailure>
        ) {
            guard failure == nil, case .failure(let error) = adminCall(connection, call) else { return }
            var metadata = metadata
            metadata["error"] = "\(error)"
            logger.error("cannot redeclare \(what)", metadata: metadata)
            complete = false
            if error.isConnectionLevel { failure = error }
        }
        for exchange in topology.exchanges {
            redeclare("exchange", ["exchange": "\(exchange.name)"]) { $0.declare(exchange) }
        }
        for queueDeclaration in topology.queues {
            redeclare("queue", ["queue": "\(queueDeclaration.name)"]) { $0.declare(queueDeclaration).map { _ in } }
        }
        for binding in topology.bindings {
            redeclare("binding", ["queue": "\(binding.queue)", "exchange": "\(binding.exchange)"]) {
                $0.declare(binding)
            }
        }
        if let failure {
            return .failure(AMQPErrorMapping.error(failure, context: "cannot redeclare the topology"))
        }
        return .success(complete)
    }

    /// Re-registers every live consumer on the consuming channel. A consumer whose queue is gone
    /// ends with an error; returns false only when the connection is lost.
    func registerAllConsumers(_ connection: AMQPConnection) -> Bool {
        for tag in consumers.activeTags {
            guard let request = consumers.active(tag) else { continue }
            guard case .failure(let failure) = register(request, on: connection) else { continue }
            let action = machine.callFailed(failure)
            if action == .loseConnection { return false }
            let error = AMQPErrorMapping.error(
                failure, context: "cannot resume consumer '\(tag)' on queue '\(request.queue)'")
            logger.error("consumer ended", metadata: ["consumer": "\(tag)", "error": "\(error)"])
            consumers.remove(tag)?.continuation.finish(throwing: error)
            if case .reopenBeforeNextTurn(let channel, _) = action, channel == AMQPChannel.consume {
                // The consuming channel closed and took the consumers registered so far with it;
                // reopening it registers them again.
                return true
            }
        }
        return true
    }

    /// Checks that the queue exists (on the admin channel, so a missing queue does not close the
    /// consuming channel), sets the prefetch and starts the consumer.
    func register(_ request: ConsumerRequest, on connection: AMQPConnection) -> Result<Void, AMQPFailure> {
        let probe = Topology.Queue(name: request.queue)
        if case .failure(let failure) = adminCall(connection, { $0.declare(probe, passive: true).map { _ in } }) {
            return .failure(failure)
        }
        return connection.setPrefetch(request.prefetch).flatMap {
            connection.consume(
                queue: request.queue, tag: request.tag, arguments: request.arguments, noAck: request.autoAcknowledge)
        }
    }

    /// Runs a call on the admin channel. When the broker closed that channel the state machine says
    /// to reopen it at once (``ConnectionStateMachine/FailureAction/reopenNow(channel:)``), so the
    /// next call can use it; this is the only place that does.
    func adminCall<T>(
        _ connection: AMQPConnection, _ call: (AMQPConnection) -> Result<T, AMQPFailure>
    ) -> Result<T, AMQPFailure> {
        let result = call(connection)
        if case .failure(let failure) = result, case .reopenNow(let channel) = machine.callFailed(failure) {
            if case .failure(let reopenFailure) = connection.openChannel(channel) {
                return .failure(reopenFailure.isConnectionLevel ? reopenFailure : .library(status: .unexpectedState))
            }
        }
        return result
    }

    /// Reopens the channels the broker closed, doing what the state machine says each involves.
    /// Returns false when the connection was lost.
    func reopenChannels(_ connection: AMQPConnection) -> Bool {
        while let (channel, reopening) = machine.nextReopening() {
            if case .failure(let failure) = connection.openChannel(channel) {
                connectionLost(failure.isConnectionLevel ? failure : .library(status: .unexpectedState))
                return false
            }
            switch reopening {
            case .publishing:
                if case .failure(let failure) = connection.confirmSelect(channel) {
                    connectionLost(failure.isConnectionLevel ? failure : .library(status: .unexpectedState))
                    return false
                }
                _ = tracker.reset()
            case .consuming(let generation):
                // Delivery tags restart on a new channel: tags handed out before are now stale.
                status.update { $0.generation = generation }
                guard registerAllConsumers(connection) else {
                    connectionLost(.library(status: .connectionClosed))
                    return false
                }
            case .plain:
                break
            }
            logger.info("reopened channel", metadata: ["channel": "\(channel)", "generation": "\(generation)"])
        }
        return true
    }
}
