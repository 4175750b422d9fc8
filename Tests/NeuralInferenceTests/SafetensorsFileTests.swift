import Foundation
import NeuralInference
import Testing

@Suite struct SafetensorsFileTests {
    @Test func readsFloat32TensorsAndMetadata() throws {
        let bytes = SafetensorsBytes.float32(
            [("b", [2], [0.5, -0.25]), ("a", [2, 3], [1, 2, 3, 4, 5, 6]), ("scalar", [], [9])],
            metadata: ["format": "pt"])
        let file = try SafetensorsFile(bytes: bytes, source: "test.safetensors")
        #expect(file.tensorNames == ["a", "b", "scalar"])
        #expect(file.metadata == ["format": "pt"])
        #expect(file.entries["a"]?.dataType == .float32)
        #expect(try file.tensor(named: "a") == Tensor(shape: [2, 3], elements: [1, 2, 3, 4, 5, 6]))
        #expect(try file.tensor(named: "b") == Tensor(shape: [2], elements: [0.5, -0.25]))
        #expect(try file.tensor(named: "scalar") == Tensor(shape: [], elements: [9]))
    }

    @Test func convertsFloat64Float16AndBFloat16ToFloat() throws {
        let doubles: [Double] = [0.1, -3, 1e-3]
        let halves: [UInt16] = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x8000]
        let brains: [UInt16] = [0x3F80, 0xC040, 0x0000]
        let f64 = doubles.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) } }
        let f16 = halves.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        let bf16 = brains.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        let header = JSONValue.object([
            "d": SafetensorsBytes.entry("F64", [3], 0, 24),
            "h": SafetensorsBytes.entry("F16", [2, 3], 24, 36),
            "b": SafetensorsBytes.entry("BF16", [3], 36, 42),
        ])
        let file = try SafetensorsFile(
            bytes: SafetensorsBytes.file(header: header, data: f64 + f16 + bf16), source: "mixed.safetensors")
        #expect(try file.tensor(named: "d").elements == doubles.map { Float($0) })
        #expect(try file.tensor(named: "h").elements == [1, -2, 65504, 0x1p-24, .infinity, -0.0])
        #expect(try file.tensor(named: "h").elements[5].sign == .minus)
        #expect(try file.tensor(named: "b").elements == [1, -3, 0])
    }

    @Test func readsTheCommittedMNISTWeights() throws {
        let file = try SafetensorsFile(contentsOfFile: Repository.path("models/mnist-mlp/model.safetensors"))
        #expect(file.entries["fc1.weight"]?.shape == [256, 784])
        #expect(file.entries["fc3.bias"]?.shape == [10])
        #expect(try file.tensor(named: "fc2.weight").shape == [128, 256])
    }

    struct MalformedCase: Sendable, CustomTestStringConvertible {
        let name: String
        let bytes: [UInt8]
        let code: ModelError.Code
        let mentions: [String]
        var testDescription: String { name }
    }

    static let validData = [UInt8](repeating: 0, count: 48)

    static let malformed: [MalformedCase] = [
        MalformedCase(
            name: "file shorter than the length field", bytes: [1, 2, 3], code: .invalidSafetensors,
            mentions: ["3 bytes", "too short"]),
        MalformedCase(
            name: "truncated header",
            bytes: SafetensorsBytes.file(
                header: .object(["w": SafetensorsBytes.entry("F32", [12], 0, 48)]), data: validData,
                headerLength: 4096),
            code: .invalidSafetensors, mentions: ["header length 4096", "truncated"]),
        MalformedCase(
            name: "header not JSON",
            bytes: Array(withUnsafeBytes(of: UInt64(8).littleEndian) { Array($0) } + Array("{\"w\": [}".utf8)),
            code: .invalidSafetensors, mentions: ["not valid JSON"]),
        MalformedCase(
            name: "header not an object", bytes: SafetensorsBytes.file(header: .array([]), data: []),
            code: .invalidSafetensors, mentions: ["array, not an object"]),
        MalformedCase(
            name: "entry without data_offsets",
            bytes: SafetensorsBytes.file(
                header: .object(["w": .object(["dtype": .string("F32"), "shape": .array([])])]), data: validData),
            code: .invalidSafetensors, mentions: ["'w'", "data_offsets"]),
        MalformedCase(
            name: "offsets beyond the data",
            bytes: SafetensorsBytes.file(
                header: .object(["w": SafetensorsBytes.entry("F32", [12], 40, 88)]), data: validData),
            code: .tensorOffsetsOutOfRange, mentions: ["'w'", "[40, 88]", "48-byte"]),
        MalformedCase(
            name: "reversed offsets",
            bytes: SafetensorsBytes.file(
                header: .object(["w": SafetensorsBytes.entry("F32", [0], 8, 4)]), data: validData),
            code: .tensorOffsetsOutOfRange, mentions: ["'w'", "reversed"]),
        MalformedCase(
            name: "overlapping tensors",
            bytes: SafetensorsBytes.file(
                header: .object([
                    "a": SafetensorsBytes.entry("F32", [8], 0, 32), "b": SafetensorsBytes.entry("F32", [8], 16, 48),
                ]), data: validData),
            code: .tensorOffsetsOutOfRange, mentions: ["'a'", "'b'", "overlap"]),
        MalformedCase(
            name: "unknown dtype",
            bytes: SafetensorsBytes.file(
                header: .object(["w": SafetensorsBytes.entry("F33", [12], 0, 48)]), data: validData),
            code: .unsupportedDataType, mentions: ["'w'", "'F33'", "F32"]),
        MalformedCase(
            name: "shape and size disagree",
            bytes: SafetensorsBytes.file(
                header: .object(["w": SafetensorsBytes.entry("F32", [3, 5], 0, 48)]), data: validData),
            code: .tensorSizeMismatch, mentions: ["'w'", "48 bytes", "[3, 5]", "needs 60"]),
        MalformedCase(
            name: "metadata value not a string",
            bytes: SafetensorsBytes.file(header: .object(["__metadata__": .object(["n": .integer(1)])]), data: []),
            code: .invalidSafetensors, mentions: ["metadata 'n'"]),
    ]

    @Test(arguments: malformed)
    func rejectsMalformedFilesNamingTheProblem(_ malformed: MalformedCase) {
        let error = modelError { try SafetensorsFile(bytes: malformed.bytes, source: "bad.safetensors") }
        #expect(error?.code == malformed.code)
        let message = error?.message ?? ""
        #expect(message.hasPrefix("bad.safetensors"))
        for mention in malformed.mentions {
            #expect(message.contains(mention), "message: \(message)")
        }
    }

    @Test func refusesToConvertIntegerTensorsButStillOpensTheFile() throws {
        let header = JSONValue.object([
            "steps": SafetensorsBytes.entry("I64", [1], 0, 8), "w": SafetensorsBytes.entry("F32", [2], 8, 16),
        ])
        let file = try SafetensorsFile(
            bytes: SafetensorsBytes.file(header: header, data: [UInt8](repeating: 0, count: 16)), source: "int.st")
        #expect(try file.tensor(named: "w").elements == [0, 0])
        let error = modelError { try file.tensor(named: "steps") }
        #expect(error?.code == .unsupportedDataType)
        #expect(error?.message.contains("'steps' has dtype I64") == true)
    }

    @Test func namesTheMissingTensorAndListsTheOthers() throws {
        let file = try SafetensorsFile(bytes: SafetensorsBytes.float32([("a", [1], [1])]), source: "one.st")
        let error = modelError { try file.tensor(named: "fc1.weight") }
        #expect(error?.code == .missingTensor)
        #expect(error?.message == "one.st holds no tensor 'fc1.weight' (it holds: a)")
    }

    @Test func reportsAnUnreadableFile() {
        let error = modelError { try SafetensorsFile(contentsOfFile: "/nonexistent/model.safetensors") }
        #expect(error?.code == .fileUnreadable)
        #expect(error?.message.contains("/nonexistent/model.safetensors") == true)
    }
}
