import Foundation
import ONNXProto

/// ONNX element types (`TensorProto.DataType`) that the runtime reads.
enum ONNXElementType: Int32 {
    case float = 1
    case uint8 = 2
    case int8 = 3
    case int32 = 6
    case int64 = 7
    case bool = 9
    case float16 = 10
    case double = 11

    /// The name ONNX gives the type, for messages.
    static func name(_ code: Int32) -> String {
        let names: [Int32: String] = [
            0: "undefined", 1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
            8: "string", 9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64", 14: "complex64",
            15: "complex128", 16: "bfloat16",
        ]
        return names[code] ?? "type \(code)"
    }
}

extension GraphValue {
    /// Reads a `TensorProto`: its values stored inline (`raw_data` or the typed fields) or, for
    /// external data, in a file next to the model (`location` relative to `directory`, with
    /// `offset` and `length`). Float types become float32, integer and boolean types int64.
    ///
    /// - Throws: ``ModelError`` naming the tensor when its type is unsupported, its data size does
    ///   not match its shape, or its external file is missing, outside the model's directory or too
    ///   short.
    init(proto: Onnx_TensorProto, directory: URL?) throws(ModelError) {
        let name = proto.name.isEmpty ? "a constant tensor" : "tensor '\(proto.name)'"
        guard proto.dims.allSatisfy({ $0 >= 0 }) else {
            throw ModelError(.tensorShapeMismatch, "\(name) has negative dimensions \(proto.dims)")
        }
        let shape = proto.dims.map { Int($0) }
        let count = Tensor.elementCount(of: shape)
        guard let type = ONNXElementType(rawValue: proto.dataType) else {
            throw ModelError(
                .unsupportedDataType,
                "\(name) has element type \(ONNXElementType.name(proto.dataType)); the runtime reads float, "
                    + "float16, double, int8, uint8, int32, int64 and bool")
        }
        var raw: Data? = nil
        if proto.dataLocation == .external {
            raw = try Self.externalBytes(of: proto, name: name, directory: directory)
        } else if proto.hasRawData {
            raw = proto.rawData
        }
        if let raw {
            let size: Int
            switch type {
            case .float, .int32: size = 4
            case .int64, .double: size = 8
            case .float16: size = 2
            case .uint8, .int8, .bool: size = 1
            }
            guard raw.count == count * size else {
                throw ModelError(
                    .tensorSizeMismatch,
                    "\(name) holds \(raw.count) bytes; shape \(shape) of \(ONNXElementType.name(proto.dataType)) needs \(count * size)"
                )
            }
            self = Self.decode(raw, type: type, shape: shape, count: count)
            return
        }
        switch type {
        case .float:
            guard proto.floatData.count == count else { throw Self.countMismatch(name, proto.floatData.count, shape) }
            self = .float(Tensor(shape: shape, elements: proto.floatData))
        case .double:
            guard proto.doubleData.count == count else { throw Self.countMismatch(name, proto.doubleData.count, shape) }
            self = .float(Tensor(shape: shape, elements: proto.doubleData.map { Float($0) }))
        case .float16:
            guard proto.int32Data.count == count else { throw Self.countMismatch(name, proto.int32Data.count, shape) }
            self = .float(
                Tensor(
                    shape: shape,
                    elements: proto.int32Data.map { Float(Float16(bitPattern: UInt16(truncatingIfNeeded: $0))) }))
        case .int64:
            guard proto.int64Data.count == count else { throw Self.countMismatch(name, proto.int64Data.count, shape) }
            self = .int64(IntTensor(shape: shape, values: proto.int64Data))
        case .int32, .int8, .uint8, .bool:
            guard proto.int32Data.count == count else { throw Self.countMismatch(name, proto.int32Data.count, shape) }
            self = .int64(IntTensor(shape: shape, values: proto.int32Data.map { Int64($0) }))
        }
    }

    private static func countMismatch(_ name: String, _ got: Int, _ shape: [Int]) -> ModelError {
        ModelError(
            .tensorSizeMismatch, "\(name) holds \(got) values; shape \(shape) needs \(Tensor.elementCount(of: shape))")
    }

    /// Little-endian bytes to a value.
    private static func decode(_ raw: Data, type: ONNXElementType, shape: [Int], count: Int) -> GraphValue {
        raw.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> GraphValue in
            switch type {
            case .float:
                return .float(
                    Tensor(shape: shape) { out in
                        for i in 0..<count {
                            out[i] = Float(
                                bitPattern: UInt32(
                                    littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                        }
                    })
            case .double:
                return .float(
                    Tensor(shape: shape) { out in
                        for i in 0..<count {
                            out[i] = Float(
                                Double(
                                    bitPattern: UInt64(
                                        littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                        }
                    })
            case .float16:
                return .float(
                    Tensor(shape: shape) { out in
                        for i in 0..<count {
                            out[i] = Float(
                                Float16(
                                    bitPattern: UInt16(
                                        littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
                        }
                    })
            case .int64:
                return .int64(
                    IntTensor(
                        shape: shape,
                        values: (0..<count).map {
                            Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))
                        }))
            case .int32:
                return .int64(
                    IntTensor(
                        shape: shape,
                        values: (0..<count).map {
                            Int64(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)))
                        }))
            case .int8:
                return .int64(IntTensor(shape: shape, values: (0..<count).map { Int64(Int8(bitPattern: bytes[$0])) }))
            case .uint8, .bool:
                return .int64(IntTensor(shape: shape, values: (0..<count).map { Int64(bytes[$0]) }))
            }
        }
    }

    /// The bytes of an externally stored tensor.
    private static func externalBytes(of proto: Onnx_TensorProto, name: String, directory: URL?) throws(ModelError)
        -> Data
    {
        var entries: [String: String] = [:]
        for entry in proto.externalData { entries[entry.key] = entry.value }
        guard let location = entries["location"], !location.isEmpty else {
            throw ModelError(.invalidDescription, "\(name) is stored externally but names no location")
        }
        guard let directory else {
            throw ModelError(
                .invalidDescription, "\(name) is stored externally, but the model was not read from a file")
        }
        guard !location.hasPrefix("/"), !location.split(separator: "/").contains("..") else {
            throw ModelError(
                .invalidDescription, "\(name) is stored in '\(location)', outside the model's directory")
        }
        let offset = Int(entries["offset"] ?? "0") ?? -1
        let length = entries["length"].map { Int($0) ?? -1 }
        guard offset >= 0, length.map({ $0 >= 0 }) ?? true else {
            throw ModelError(.invalidDescription, "\(name) has an invalid external offset or length")
        }
        let path = directory.appendingPathComponent(location).path
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ModelError(.fileUnreadable, "\(name) is stored in '\(path)', which cannot be read")
        }
        defer { try? handle.close() }
        do {
            try handle.seek(toOffset: UInt64(offset))
            let data = try length.map { try handle.read(upToCount: $0) ?? Data() } ?? handle.readToEnd() ?? Data()
            if let length, data.count != length {
                throw ModelError(
                    .tensorOffsetsOutOfRange, "\(name): '\(path)' ends before offset \(offset) + length \(length)")
            }
            return data
        } catch let error as ModelError {
            throw error
        } catch {
            throw ModelError(.fileUnreadable, "\(name): reading '\(path)' failed: \(error)")
        }
    }
}
