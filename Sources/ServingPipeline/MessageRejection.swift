import Foundation
import Messaging
import ServingMessages

/// Dead-letters a message with its reason and answers its sender, so that bad input is never
/// silently dropped: the original body and properties are republished to the dead-letter exchange
/// with `x-nercc-error-code` / `x-nercc-error-reason` headers (RabbitMQ's own dead-lettering cannot
/// add a reason), an ``ErrorRecord`` goes to `reply_to` when there is one, and only after both are
/// confirmed is the original acknowledged.
struct MessageRejection: Sendable {
    let transport: any MessageTransport
    let topology: ServingTopology
    let service: String

    /// Dead-letters `delivery` and acknowledges it; `answer` sends an ``ErrorRecord`` to its
    /// `reply_to` first (for client requests — never for tasks or results, whose `reply_to` is
    /// another service's queue).
    func reject(_ delivery: Delivery, code: String, reason: String, requestID: String?, answer: Bool = false)
        async throws(MessagingError)
    {
        var properties = delivery.properties
        properties.headers[WireFormat.Header.errorCode] = .string(code)
        properties.headers[WireFormat.Header.errorReason] = .string(reason)
        properties.headers[WireFormat.Header.rejectedBy] = .string(service)
        properties.headers[WireFormat.Header.originalExchange] = .string(delivery.exchange)
        properties.headers[WireFormat.Header.originalRoutingKey] = .string(delivery.routingKey)
        properties.headers[WireFormat.Header.originalQueue] = .string(delivery.queue)
        // The broker refuses a `user_id` other than this connection's user: keep the sender's in a
        // header, and let the transport stamp this service's.
        if let user = properties.userID {
            properties.headers[WireFormat.Header.originalUserID] = .string(user)
            properties.userID = nil
        }
        properties.persistent = true
        try await transport.publish(
            OutgoingMessage(
                exchange: topology.deadExchange, routingKey: delivery.routingKey, properties: properties,
                body: delivery.body))
        if answer, let replyTo = delivery.properties.replyTo, !replyTo.isEmpty {
            let record = ErrorRecord(requestID: requestID, code: code, message: reason)
            let id =
                requestID ?? delivery.properties.messageID
                ?? StableHash.identifier(String(decoding: delivery.body, as: UTF8.self))
            let reply = OutgoingMessage(
                exchange: "", routingKey: replyTo,
                properties: MessageProperties(
                    contentType: WireFormat.jsonContentType, messageID: "\(id)/error",
                    correlationID: delivery.properties.correlationID ?? requestID,
                    timestamp: UInt64(Date().timeIntervalSince1970), type: WireFormat.MessageType.error,
                    headers: [WireFormat.Header.version: .int(Int64(WireFormat.version))]),
                body: JSONBody.encode(record))
            // The reply queue may be gone (client disconnected); the dead letter already keeps the message.
            try? await transport.publish(reply)
        }
        try await transport.ack(delivery.tag)
    }
}
