import Messaging
import Testing

@testable import RabbitMQMessaging

@Suite struct FieldTableTests {
    static let everyType: [String: HeaderValue] = [
        "string": "héllo wörld",
        "empty-string": "",
        "int": .int(-42),
        "big-int": .int(Int64.max),
        "small-int": .int(Int64.min),
        "double": .double(3.25),
        "negative-double": .double(-1e-300),
        "true": true,
        "false": false,
        "bytes": .bytes([0, 1, 2, 254, 255]),
        "empty-bytes": .bytes([]),
        "timestamp": .timestamp(1_700_000_000),
        "void": .void,
        "array": .array(["a", .int(1), .array([.bool(true), .void]), .table(["k": "v"])]),
        "empty-array": .array([]),
        "table": .table(["nested": .table(["deeper": .array([.double(0.5)])]), "x-count": .int(3)]),
        "empty-table": .table([:]),
    ]

    @Test func everyHeaderTypeSurvivesTheWireCodec() throws {
        let encoded = try #require(FieldTableWire.encode(Self.everyType))
        let decoded = try #require(FieldTableWire.decode(encoded))
        #expect(decoded == Self.everyType)
    }

    @Test func encodingIsDeterministic() {
        #expect(FieldTableWire.encode(Self.everyType) == FieldTableWire.encode(Self.everyType))
    }

    @Test func anEmptyTableIsFourZeroBytes() {
        #expect(FieldTableWire.encode([:]) == [0, 0, 0, 0])
    }

    @Test func integersUseTheSigned64BitType() throws {
        // x-delivery-limit and friends must reach RabbitMQ as integers: type 'l' (signed 64-bit).
        let encoded = try #require(FieldTableWire.encode(["n": .int(5)]))
        #expect(encoded == [0, 0, 0, 11, 1, UInt8(ascii: "n"), UInt8(ascii: "l"), 0, 0, 0, 0, 0, 0, 0, 5])
    }

    /// Other clients send narrower integers, floats, decimals and unsigned values: hand-built frames.
    @Test(arguments: [
        ([UInt8(ascii: "b"), 0xFE], HeaderValue.int(-2)),
        ([UInt8(ascii: "B"), 0xFE], .int(254)),
        ([UInt8(ascii: "s"), 0xFF, 0xFE], .int(-2)),
        ([UInt8(ascii: "u"), 0xFF, 0xFE], .int(65534)),
        ([UInt8(ascii: "I"), 0xFF, 0xFF, 0xFF, 0xFE], .int(-2)),
        ([UInt8(ascii: "i"), 0xFF, 0xFF, 0xFF, 0xFE], .int(4_294_967_294)),
        ([UInt8(ascii: "L"), 0, 0, 0, 0, 0, 0, 0, 9], .int(9)),
        ([UInt8(ascii: "L"), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], .double(Double(UInt64.max))),
        ([UInt8(ascii: "f"), 0x3F, 0xC0, 0, 0], .double(1.5)),
        ([UInt8(ascii: "D"), 2, 0, 0, 0x04, 0xD2], .double(12.34)),
        ([UInt8(ascii: "S"), 0, 0, 0, 2, 0xFF, 0xFE], .bytes([0xFF, 0xFE])),
    ])
    func decodesForeignFieldTypes(payload: [UInt8], expected: HeaderValue) throws {
        let entry = [1, UInt8(ascii: "k")] + payload
        let length = UInt32(entry.count)
        let frame =
            [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + entry
        let decoded = try #require(FieldTableWire.decode(frame))
        #expect(decoded == ["k": expected])
    }

    @Test func malformedTablesAreRejected() {
        #expect(FieldTableWire.decode([0, 0, 0, 9, 1, UInt8(ascii: "k"), UInt8(ascii: "?")]) == nil)
    }

    @Test func tablesTooLargeForTheBufferAreRejected() {
        let large: [String: HeaderValue] = ["blob": .bytes([UInt8](repeating: 7, count: 5000))]
        #expect(FieldTableWire.encode(large, capacity: 4096) == nil)
        #expect(FieldTableWire.encode(large, capacity: 8192) != nil)
    }

    @Test func propertiesSurviveTheCRepresentation() {
        let properties = MessageProperties(
            contentType: "application/json", contentEncoding: "identity", messageID: "m-1", correlationID: "c-1",
            replyTo: "replies", timestamp: 1_700_000_123, expiration: "60000", type: "prediction", appID: "nercc",
            persistent: false, headers: ["x-nercc-version": 1, "slot": .int(3)])
        let arena = AMQPArena()
        let c = properties.amqpProperties(in: arena)
        #expect(MessageProperties(amqp: c) == properties)

        let minimal = MessageProperties()
        #expect(MessageProperties(amqp: minimal.amqpProperties(in: arena)) == minimal)
    }
}
