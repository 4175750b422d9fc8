import Foundation
import NeuralInference
import Testing

/// Paths of committed files, found from this file's location (`Tests/NeuralInferenceTests/…`).
enum Repository {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    static func bytes(_ relative: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: root.appendingPathComponent(relative)))
    }
}

/// A directory under the system's temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("nercc-nn-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    func write(_ bytes: [UInt8], to name: String) throws {
        try Data(bytes).write(to: url.appendingPathComponent(name))
    }

    func write(_ text: String, to name: String) throws {
        try write(Array(text.utf8), to: name)
    }

    func remove() {
        try? FileManager.default.removeItem(at: url)
    }
}

/// Builds safetensors files byte by byte, including malformed ones.
enum SafetensorsBytes {
    /// A header entry.
    static func entry(_ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> JSONValue {
        .object([
            "dtype": .string(dtype), "shape": .array(shape.map { .integer($0) }),
            "data_offsets": .array([.integer(begin), .integer(end)]),
        ])
    }

    /// The file: the little-endian header length (or `headerLength` if given), the header, the data.
    static func file(header: JSONValue, data: [UInt8], headerLength: UInt64? = nil) -> [UInt8] {
        var headerBytes = Array(header.description.utf8)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }
        let length = headerLength ?? UInt64(headerBytes.count)
        return withUnsafeBytes(of: length.littleEndian) { Array($0) } + headerBytes + data
    }

    /// A well-formed file holding float32 tensors laid out one after another.
    static func float32(_ tensors: [(name: String, shape: [Int], values: [Float])], metadata: [String: String] = [:])
        -> [UInt8]
    {
        var members: [String: JSONValue] = [:]
        var data: [UInt8] = []
        for tensor in tensors {
            let bytes = tensor.values.flatMap { value in
                withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
            }
            members[tensor.name] = entry("F32", tensor.shape, data.count, data.count + bytes.count)
            data += bytes
        }
        if !metadata.isEmpty { members["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
        return file(header: .object(members), data: data)
    }
}

/// A deterministic pseudo-random generator (SplitMix64), so that test data is reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func floats(_ count: Int, in range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<count).map { _ in Float.random(in: range, using: &self) }
    }
}

/// Runs `body` and returns the `ModelError` it throws, recording a failure if it throws none or
/// another error.
func modelError<T>(_ body: () throws -> T, sourceLocation: SourceLocation = #_sourceLocation) -> ModelError? {
    do {
        _ = try body()
        Issue.record("expected a ModelError, but the call succeeded", sourceLocation: sourceLocation)
        return nil
    } catch let error as ModelError {
        return error
    } catch {
        Issue.record("expected a ModelError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// The index of the largest element of `values[range]`, relative to the range's start.
func argmax(_ values: ArraySlice<Float>) -> Int {
    var best = values.startIndex
    for i in values.indices where values[i] > values[best] { best = i }
    return best - values.startIndex
}
