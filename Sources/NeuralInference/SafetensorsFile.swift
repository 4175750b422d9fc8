import Foundation

/// A safetensors file, parsed and validated: named tensors with their dtypes, shapes and data.
///
/// The layout is
///
/// 1. an 8-byte little-endian `UInt64` N, the header length;
/// 2. N bytes of JSON: `{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
///    "__metadata__": {string: string}}` (the metadata is optional);
/// 3. the data: each tensor's little-endian, C-order elements at bytes `begin..<end`, counted from
///    the end of the header.
///
/// Everything is checked when the file is opened — the header length against the file size, every
/// entry's fields, the dtype, that `end - begin` equals the shape's element count times the dtype
/// size, that the range lies inside the data and overlaps no other tensor — so a later
/// ``tensor(named:)`` can fail only for a missing name or a dtype that does not convert to `Float`.
public struct SafetensorsFile: Sendable {
    /// What the header says about one tensor.
    public struct Entry: Sendable, Equatable {
        /// The element type.
        public let dataType: SafetensorsDataType
        /// The extents, outermost first.
        public let shape: [Int]
        /// The byte range of the elements, relative to the start of the data section.
        public let byteRange: Range<Int>
    }

    /// The name used in error messages: the file's path, or what the caller passed as `source`.
    public let source: String
    /// The header's `__metadata__` map (empty if absent).
    public let metadata: [String: String]
    /// The header entries, by tensor name.
    public let entries: [String: Entry]
    private let bytes: [UInt8]
    private let dataStart: Int

    /// The tensor names, sorted.
    public var tensorNames: [String] { entries.keys.sorted() }

    /// Reads and validates the file at `path`.
    ///
    /// - Throws: ``ModelError/Code/fileUnreadable`` if the file cannot be read, or any error of
    ///   ``init(bytes:source:)``.
    public init(contentsOfFile path: String) throws(ModelError) {
        try self.init(bytes: try readFile(path), source: path)
    }

    /// Parses and validates safetensors bytes; `source` names them in error messages.
    ///
    /// - Throws: ``ModelError`` with code ``ModelError/Code/invalidSafetensors`` (truncated file or
    ///   header, malformed JSON or entries), ``ModelError/Code/unsupportedDataType`` (an unknown
    ///   dtype), ``ModelError/Code/tensorSizeMismatch`` (byte size ≠ element count × dtype size) or
    ///   ``ModelError/Code/tensorOffsetsOutOfRange`` (reversed, out-of-range or overlapping offsets).
    public init(bytes: [UInt8], source: String) throws(ModelError) {
        self.source = source
        self.bytes = bytes
        guard bytes.count >= 8 else {
            throw ModelError(
                .invalidSafetensors,
                "\(source): the file is \(bytes.count) bytes, too short for the 8-byte header length")
        }
        let headerLength = bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let available = bytes.count - 8
        guard headerLength <= UInt64(available) else {
            throw ModelError(
                .invalidSafetensors,
                "\(source): the header length \(headerLength) exceeds the \(available) bytes that follow it "
                    + "(truncated file?)")
        }
        dataStart = 8 + Int(headerLength)
        let header: JSONValue
        do {
            header = try JSONValue(jsonBytes: bytes[8..<dataStart])
        } catch {
            throw ModelError(.invalidSafetensors, "\(source): the header is \(error.message)")
        }
        guard case .object(let members) = header else {
            throw ModelError(.invalidSafetensors, "\(source): the header is a JSON \(header.typeName), not an object")
        }
        metadata = try SafetensorsFile.parseMetadata(members["__metadata__"], source: source)
        let dataSize = bytes.count - dataStart
        var entries: [String: Entry] = [:]
        for (name, value) in members where name != "__metadata__" {
            entries[name] = try SafetensorsFile.parseEntry(value, name: name, dataSize: dataSize, source: source)
        }
        try SafetensorsFile.checkNoOverlap(entries, source: source)
        self.entries = entries
    }

    /// The tensor `name`, converted to `Float`.
    ///
    /// - Throws: ``ModelError/Code/missingTensor`` if the file holds no tensor of that name, or
    ///   ``ModelError/Code/unsupportedDataType`` if its dtype does not convert to `Float`.
    public func tensor(named name: String) throws(ModelError) -> Tensor {
        guard let entry = entries[name] else {
            throw ModelError(
                .missingTensor, "\(source) holds no tensor '\(name)' (it holds: \(listing(tensorNames)))")
        }
        guard entry.dataType.isConvertibleToFloat else {
            throw ModelError(
                .unsupportedDataType,
                "\(source): tensor '\(name)' has dtype \(entry.dataType.rawValue), which does not convert to "
                    + "float32 (supported: F32, F64, F16, BF16)")
        }
        let range = (dataStart + entry.byteRange.lowerBound)..<(dataStart + entry.byteRange.upperBound)
        return Tensor(shape: entry.shape) { output in
            bytes.withUnsafeBytes { raw in
                entry.dataType.convert(UnsafeRawBufferPointer(rebasing: raw[range]), into: output)
            }
        }
    }

    private static func parseMetadata(_ value: JSONValue?, source: String) throws(ModelError) -> [String: String] {
        guard let value else { return [:] }
        guard case .object(let members) = value else {
            throw ModelError(
                .invalidSafetensors, "\(source): '__metadata__' is a JSON \(value.typeName), not an object")
        }
        var metadata: [String: String] = [:]
        for (key, member) in members {
            guard case .string(let text) = member else {
                throw ModelError(
                    .invalidSafetensors,
                    "\(source): metadata '\(key)' is a JSON \(member.typeName); metadata values must be strings")
            }
            metadata[key] = text
        }
        return metadata
    }

    private static func parseEntry(
        _ value: JSONValue, name: String, dataSize: Int, source: String
    ) throws(ModelError) -> Entry {
        func malformed(_ problem: String) -> ModelError {
            ModelError(.invalidSafetensors, "\(source): tensor '\(name)': \(problem)")
        }
        guard case .object(let fields) = value else {
            throw malformed("the entry is a JSON \(value.typeName), not an object")
        }
        guard let dtypeName = fields["dtype"]?.stringValue else {
            throw malformed("'dtype' is missing or not a string")
        }
        guard let dataType = SafetensorsDataType(rawValue: dtypeName) else {
            throw ModelError(
                .unsupportedDataType,
                "\(source): tensor '\(name)' has unknown dtype '\(dtypeName)' (known: "
                    + SafetensorsDataType.allCases.map(\.rawValue).joined(separator: ", ") + ")")
        }
        guard let shapeValues = fields["shape"]?.arrayValue else {
            throw malformed("'shape' is missing or not an array")
        }
        var shape: [Int] = []
        for extent in shapeValues {
            guard let extent = extent.intValue, extent >= 0 else {
                throw malformed("'shape' must hold non-negative integers")
            }
            shape.append(extent)
        }
        guard let offsets = fields["data_offsets"]?.arrayValue, offsets.count == 2,
            let begin = offsets[0].intValue, let end = offsets[1].intValue, begin >= 0, end >= 0
        else {
            throw malformed("'data_offsets' must be an array of two non-negative integers")
        }
        if let unknown = fields.keys.first(where: { !["dtype", "shape", "data_offsets"].contains($0) }) {
            throw malformed("unknown field '\(unknown)'")
        }
        guard begin <= end else {
            throw ModelError(
                .tensorOffsetsOutOfRange, "\(source): tensor '\(name)' has reversed data_offsets [\(begin), \(end)]")
        }
        var byteSize = dataType.byteSize
        for extent in shape {
            let (product, overflow) = byteSize.multipliedReportingOverflow(by: extent)
            guard !overflow else { throw malformed("shape \(shape) is too large") }
            byteSize = product
        }
        guard end - begin == byteSize else {
            throw ModelError(
                .tensorSizeMismatch,
                "\(source): tensor '\(name)' spans \(end - begin) bytes (data_offsets [\(begin), \(end)]) but its "
                    + "shape \(shape) of \(dtypeName) needs \(byteSize)")
        }
        guard end <= dataSize else {
            throw ModelError(
                .tensorOffsetsOutOfRange,
                "\(source): tensor '\(name)' has data_offsets [\(begin), \(end)] beyond the \(dataSize)-byte data "
                    + "section (truncated file?)")
        }
        return Entry(dataType: dataType, shape: shape, byteRange: begin..<end)
    }

    private static func checkNoOverlap(_ entries: [String: Entry], source: String) throws(ModelError) {
        let sorted = entries.filter { !$0.value.byteRange.isEmpty }.sorted {
            ($0.value.byteRange.lowerBound, $0.key) < ($1.value.byteRange.lowerBound, $1.key)
        }
        for (previous, next) in zip(sorted, sorted.dropFirst())
        where next.value.byteRange.lowerBound < previous.value.byteRange.upperBound {
            throw ModelError(
                .tensorOffsetsOutOfRange,
                "\(source): tensors '\(previous.key)' \(previous.value.byteRange) and '\(next.key)' "
                    + "\(next.value.byteRange) overlap")
        }
    }
}

/// The whole content of the file at `path`.
func readFile(_ path: String) throws(ModelError) -> [UInt8] {
    do {
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    } catch {
        throw ModelError(.fileUnreadable, "cannot read \(path): \(error.localizedDescription)")
    }
}

/// Up to `limit` names joined by commas, with a count of the rest.
func listing(_ names: [String], limit: Int = 12) -> String {
    if names.isEmpty { return "none" }
    let shown = names.prefix(limit).joined(separator: ", ")
    return names.count > limit ? "\(shown), … \(names.count - limit) more" : shown
}
