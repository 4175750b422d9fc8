import CRabbitMQ
import Messaging

/// Memory for C structures handed to rabbitmq-c: strings, field tables and properties built from
/// Swift values live in one `amqp_pool_t` that is emptied when the arena is released.
///
/// rabbitmq-c serialises what it is given before a call returns, so an arena only has to outlive
/// the call it was built for. It is used on one thread at a time (the connection's I/O thread, or a
/// test), which is why it is not `Sendable`.
final class AMQPArena {
    private let pool: UnsafeMutablePointer<amqp_pool_t>

    /// Creates an empty arena.
    init() {
        pool = .allocate(capacity: 1)
        init_amqp_pool(pool, 4096)
    }

    deinit {
        empty_amqp_pool(pool)
        pool.deallocate()
    }

    /// The underlying pool, for rabbitmq-c functions that allocate into one.
    var poolPointer: UnsafeMutablePointer<amqp_pool_t> { pool }

    /// Copies bytes into the arena.
    func bytes<Bytes: Collection<UInt8>>(_ source: Bytes) -> amqp_bytes_t {
        let count = source.count
        guard count > 0 else { return amqp_bytes_t(len: 0, bytes: nil) }
        guard let memory = amqp_pool_alloc(pool, count) else {
            fatalError("rabbitmq-c pool allocation of \(count) bytes failed")
        }
        let buffer = UnsafeMutableRawBufferPointer(start: memory, count: count)
        buffer.copyBytes(from: source)
        return amqp_bytes_t(len: count, bytes: memory)
    }

    /// Copies a string's UTF-8 bytes into the arena.
    func bytes(_ string: String) -> amqp_bytes_t {
        bytes(string.utf8)
    }

    /// A NUL-terminated copy of a string, for C functions taking `const char *`.
    func cString(_ string: String) -> UnsafePointer<CChar> {
        let utf8 = Array(string.utf8) + [0]
        let copy = bytes(utf8)
        return UnsafePointer(copy.bytes!.assumingMemoryBound(to: CChar.self))
    }

    /// Builds an AMQP field table. Keys are written in sorted order, so encodings are deterministic.
    func table(_ values: [String: HeaderValue]) -> amqp_table_t {
        guard !values.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let entries = allocate(amqp_table_entry_t.self, count: values.count)
        for (index, key) in values.keys.sorted().enumerated() {
            entries[index] = amqp_table_entry_t(key: bytes(key), value: field(values[key]!))
        }
        return amqp_table_t(num_entries: Int32(values.count), entries: entries)
    }

    /// Builds an AMQP field value.
    ///
    /// Integers are written as signed 64-bit (`l`), doubles as `d`, strings as long strings (`S`),
    /// bytes as byte arrays (`x`), timestamps as `T`: the types RabbitMQ accepts for every argument
    /// that nercc uses (`x-delivery-limit`, `x-expires`, `x-message-ttl`, …).
    func field(_ value: HeaderValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch value {
        case .string(let string):
            field.kind = FieldKind.utf8
            field.value.bytes = bytes(string)
        case .int(let integer):
            field.kind = FieldKind.i64
            field.value.i64 = integer
        case .double(let double):
            field.kind = FieldKind.f64
            field.value.f64 = double
        case .bool(let bool):
            field.kind = FieldKind.boolean
            field.value.boolean = bool ? 1 : 0
        case .bytes(let data):
            field.kind = FieldKind.bytes
            field.value.bytes = bytes(data)
        case .timestamp(let seconds):
            field.kind = FieldKind.timestamp
            field.value.u64 = seconds
        case .array(let elements):
            field.kind = FieldKind.array
            if elements.isEmpty {
                field.value.array = amqp_array_t(num_entries: 0, entries: nil)
            } else {
                let storage = allocate(amqp_field_value_t.self, count: elements.count)
                for (index, element) in elements.enumerated() {
                    storage[index] = self.field(element)
                }
                field.value.array = amqp_array_t(num_entries: Int32(elements.count), entries: storage)
            }
        case .table(let nested):
            field.kind = FieldKind.table
            field.value.table = table(nested)
        case .void:
            field.kind = FieldKind.void
        }
        return field
    }

    private func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let size = MemoryLayout<T>.stride * count
        guard let memory = amqp_pool_alloc(pool, size) else {
            fatalError("rabbitmq-c pool allocation of \(size) bytes failed")
        }
        // amqp_pool_alloc aligns every allocation to 8 bytes, enough for the C structures used here.
        return memory.bindMemory(to: T.self, capacity: count)
    }
}

/// The AMQP field type tags (`amqp_field_value_kind_t`) as the `kind` byte stores them.
enum FieldKind {
    static let boolean = UInt8(ascii: "t")
    static let i8 = UInt8(ascii: "b")
    static let u8 = UInt8(ascii: "B")
    static let i16 = UInt8(ascii: "s")
    static let u16 = UInt8(ascii: "u")
    static let i32 = UInt8(ascii: "I")
    static let u32 = UInt8(ascii: "i")
    static let i64 = UInt8(ascii: "l")
    static let u64 = UInt8(ascii: "L")
    static let f32 = UInt8(ascii: "f")
    static let f64 = UInt8(ascii: "d")
    static let decimal = UInt8(ascii: "D")
    static let utf8 = UInt8(ascii: "S")
    static let array = UInt8(ascii: "A")
    static let timestamp = UInt8(ascii: "T")
    static let table = UInt8(ascii: "F")
    static let void = UInt8(ascii: "V")
    static let bytes = UInt8(ascii: "x")
}

/// Conversion from rabbitmq-c's decoded C values to Swift values. The C memory belongs to the
/// connection or a message pool, so everything is copied.
enum FieldTableDecoding {
    /// Decodes a field table.
    static func decode(_ table: amqp_table_t) -> [String: HeaderValue] {
        var result: [String: HeaderValue] = [:]
        guard table.num_entries > 0, let entries = table.entries else { return result }
        result.reserveCapacity(Int(table.num_entries))
        for index in 0..<Int(table.num_entries) {
            let entry = entries[index]
            result[string(entry.key)] = decode(entry.value)
        }
        return result
    }

    /// Decodes one field value.
    ///
    /// Integers of every width become `.int` (an unsigned 64-bit value above `Int64.max` becomes
    /// `.double`); 32- and 64-bit floats become `.double`; a decimal (`value · 10^−decimals`) becomes
    /// the nearest `.double`; a long string that is not valid UTF-8 becomes `.bytes`.
    static func decode(_ value: amqp_field_value_t) -> HeaderValue {
        switch value.kind {
        case FieldKind.boolean: return .bool(value.value.boolean != 0)
        case FieldKind.i8: return .int(Int64(value.value.i8))
        case FieldKind.u8: return .int(Int64(value.value.u8))
        case FieldKind.i16: return .int(Int64(value.value.i16))
        case FieldKind.u16: return .int(Int64(value.value.u16))
        case FieldKind.i32: return .int(Int64(value.value.i32))
        case FieldKind.u32: return .int(Int64(value.value.u32))
        case FieldKind.i64: return .int(value.value.i64)
        case FieldKind.u64:
            let unsigned = value.value.u64
            if let signed = Int64(exactly: unsigned) { return .int(signed) }
            return .double(Double(unsigned))
        case FieldKind.f32: return .double(Double(value.value.f32))
        case FieldKind.f64: return .double(value.value.f64)
        case FieldKind.decimal:
            let decimal = value.value.decimal
            return .double(Double(decimal.value) / pow10(Int(decimal.decimals)))
        case FieldKind.utf8:
            let raw = bytes(value.value.bytes)
            if let text = String(validating: raw, as: UTF8.self) { return .string(text) }
            return .bytes(raw)
        case FieldKind.bytes: return .bytes(bytes(value.value.bytes))
        case FieldKind.timestamp: return .timestamp(value.value.u64)
        case FieldKind.table: return .table(decode(value.value.table))
        case FieldKind.array:
            let array = value.value.array
            guard array.num_entries > 0, let entries = array.entries else { return .array([]) }
            return .array((0..<Int(array.num_entries)).map { decode(entries[$0]) })
        default: return .void
        }
    }

    /// Copies C bytes.
    static func bytes(_ bytes: amqp_bytes_t) -> [UInt8] {
        guard bytes.len > 0, let pointer = bytes.bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: bytes.len))
    }

    /// Copies C bytes as a string (invalid UTF-8 is repaired).
    static func string(_ bytes: amqp_bytes_t) -> String {
        guard bytes.len > 0, let pointer = bytes.bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: bytes.len), as: UTF8.self)
    }

    private static func pow10(_ exponent: Int) -> Double {
        var result = 1.0
        for _ in 0..<exponent { result *= 10 }
        return result
    }
}

/// AMQP wire encoding of field tables, through rabbitmq-c's own codec (`amqp_encode_table`,
/// `amqp_decode_table`). These functions touch no connection, so they may run on any thread.
enum FieldTableWire {
    /// Encodes a table as it appears in a frame (a 32-bit length, then the entries); nil when it
    /// does not fit in `capacity` bytes.
    static func encode(_ values: [String: HeaderValue], capacity: Int = 131_072) -> [UInt8]? {
        let arena = AMQPArena()
        var table = arena.table(values)
        var buffer = [UInt8](repeating: 0, count: capacity)
        var offset = 0
        let status = buffer.withUnsafeMutableBytes { raw in
            amqp_encode_table(amqp_bytes_t(len: raw.count, bytes: raw.baseAddress), &table, &offset)
        }
        guard status == AMQP_STATUS_OK.rawValue else { return nil }
        return Array(buffer[..<offset])
    }

    /// Decodes an encoded table; nil when the bytes are malformed.
    static func decode(_ encoded: [UInt8]) -> [String: HeaderValue]? {
        let arena = AMQPArena()
        var table = amqp_table_t()
        var offset = 0
        var copy = encoded
        let status = copy.withUnsafeMutableBytes { raw in
            amqp_decode_table(amqp_bytes_t(len: raw.count, bytes: raw.baseAddress), arena.poolPointer, &table, &offset)
        }
        guard status == AMQP_STATUS_OK.rawValue else { return nil }
        return FieldTableDecoding.decode(table)
    }
}
