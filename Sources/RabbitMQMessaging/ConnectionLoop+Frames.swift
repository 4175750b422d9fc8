import CRabbitMQ
import Messaging

/// Reading frames and dispatching them: deliveries to their consumer's stream, confirms and
/// returns to the publish tracker, closes, cancels and flow control to the state machine.
extension ConnectionLoop {
    /// Reads and dispatches every frame available now. Returns false when the connection was lost.
    func drainFrames(_ connection: AMQPConnection) -> Bool {
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
            switch machine.brokerClosed(channel: channel) {
            case .ignoreRepeated:
                logger.warning(
                    "ignoring a repeated channel.close for a channel already closed",
                    metadata: ["channel": "\(channel)", "code": "\(close.reply_code)", "text": "\(text)"])
            case .acknowledgeAndReopen(let failsPublishes):
                connection.sendChannelCloseOK(channel)
                channelClosed(channel, code: close.reply_code, text: text, failsPublishes: failsPublishes)
            }
        case NERCC_AMQP_CONNECTION_CLOSE:
            let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = FieldTableDecoding.string(close.reply_text)
            connection.sendConnectionCloseOK()
            connectionLost(.connectionClosed(code: close.reply_code, text: text))
            return false
        case NERCC_AMQP_CONNECTION_BLOCKED:
            let reason = FieldTableDecoding.string(
                decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee.reason)
            machine.setBlocked(true)
            status.update { $0.isBlocked = true }
            logger.warning("RabbitMQ blocked publishing on this connection", metadata: ["reason": "\(reason)"])
        case NERCC_AMQP_CONNECTION_UNBLOCKED:
            machine.setBlocked(false)
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
            absorb(connection.failure(from: reply, channel: channel))
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

    /// Does what a failed call costs, as the state machine decides: the connection is lost, or a
    /// channel is reopened (the admin channel by ``adminCall(_:_:)`` already, any other before the
    /// next turn's commands). Returns false when the connection was lost.
    @discardableResult
    func absorb(_ failure: AMQPFailure) -> Bool {
        switch machine.callFailed(failure) {
        case .loseConnection:
            connectionLost(failure)
            return false
        case .reopenNow:
            return true
        case .reopenBeforeNextTurn(let channel, let failsPublishes):
            if case .channelClosed(_, let code, let text) = failure {
                channelClosed(channel, code: code, text: text, failsPublishes: failsPublishes)
            }
            return true
        }
    }

    /// The broker closed a channel (close-ok already sent, reopening scheduled): fail the publishes
    /// that depended on it.
    private func channelClosed(_ channel: UInt16, code: UInt16, text: String, failsPublishes: Bool) {
        logger.error(
            "RabbitMQ closed a channel", metadata: ["channel": "\(channel)", "code": "\(code)", "text": "\(text)"])
        guard failsPublishes else { return }
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
}
