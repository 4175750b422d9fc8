import CRabbitMQ
import Messaging

extension MessageProperties {
    /// Copies the properties of a received message (`amqp_basic_properties_t`, whose `_flags` say
    /// which fields are present).
    init(amqp properties: amqp_basic_properties_t) {
        let flags = properties._flags
        func string(_ flag: Int32, _ value: amqp_bytes_t) -> String? {
            flags & amqp_flags_t(flag) != 0 ? FieldTableDecoding.string(value) : nil
        }
        self.init(
            contentType: string(AMQP_BASIC_CONTENT_TYPE_FLAG, properties.content_type),
            contentEncoding: string(AMQP_BASIC_CONTENT_ENCODING_FLAG, properties.content_encoding),
            messageID: string(AMQP_BASIC_MESSAGE_ID_FLAG, properties.message_id),
            correlationID: string(AMQP_BASIC_CORRELATION_ID_FLAG, properties.correlation_id),
            replyTo: string(AMQP_BASIC_REPLY_TO_FLAG, properties.reply_to),
            timestamp: flags & amqp_flags_t(AMQP_BASIC_TIMESTAMP_FLAG) != 0 ? properties.timestamp : nil,
            expiration: string(AMQP_BASIC_EXPIRATION_FLAG, properties.expiration),
            type: string(AMQP_BASIC_TYPE_FLAG, properties.type),
            appID: string(AMQP_BASIC_APP_ID_FLAG, properties.app_id),
            userID: string(AMQP_BASIC_USER_ID_FLAG, properties.user_id),
            persistent: flags & amqp_flags_t(AMQP_BASIC_DELIVERY_MODE_FLAG) != 0
                && properties.delivery_mode == UInt8(AMQP_DELIVERY_PERSISTENT.rawValue),
            headers: flags & amqp_flags_t(AMQP_BASIC_HEADERS_FLAG) != 0
                ? FieldTableDecoding.decode(properties.headers) : [:]
        )
    }

    /// Builds the C properties for a publish; strings and headers are copied into `arena`.
    func amqpProperties(in arena: AMQPArena) -> amqp_basic_properties_t {
        var properties = amqp_basic_properties_t()
        var flags = amqp_flags_t(AMQP_BASIC_DELIVERY_MODE_FLAG)
        properties.delivery_mode = UInt8(
            persistent ? AMQP_DELIVERY_PERSISTENT.rawValue : AMQP_DELIVERY_NONPERSISTENT.rawValue)
        func set(_ value: String?, _ flag: Int32, _ field: inout amqp_bytes_t) {
            guard let value else { return }
            field = arena.bytes(value)
            flags |= amqp_flags_t(flag)
        }
        set(contentType, AMQP_BASIC_CONTENT_TYPE_FLAG, &properties.content_type)
        set(contentEncoding, AMQP_BASIC_CONTENT_ENCODING_FLAG, &properties.content_encoding)
        set(messageID, AMQP_BASIC_MESSAGE_ID_FLAG, &properties.message_id)
        set(correlationID, AMQP_BASIC_CORRELATION_ID_FLAG, &properties.correlation_id)
        set(replyTo, AMQP_BASIC_REPLY_TO_FLAG, &properties.reply_to)
        set(expiration, AMQP_BASIC_EXPIRATION_FLAG, &properties.expiration)
        set(type, AMQP_BASIC_TYPE_FLAG, &properties.type)
        set(appID, AMQP_BASIC_APP_ID_FLAG, &properties.app_id)
        set(userID, AMQP_BASIC_USER_ID_FLAG, &properties.user_id)
        if let timestamp {
            properties.timestamp = timestamp
            flags |= amqp_flags_t(AMQP_BASIC_TIMESTAMP_FLAG)
        }
        if !headers.isEmpty {
            properties.headers = arena.table(headers)
            flags |= amqp_flags_t(AMQP_BASIC_HEADERS_FLAG)
        }
        properties._flags = flags
        return properties
    }
}
