import Foundation
import NumPyFormat
import Testing

/// Files written by numpy itself (`ops/fixtures/make_npy_fixtures.py`).
@Suite struct NumPyArrayTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures")

    struct Expected: Decodable {
        let shape: [Int]
        let descr: String
        let values: [Double]
    }

    static let expected: [String: Expected] = {
        let data = try! Data(contentsOf: directory.appendingPathComponent("expected.json"))
        return try! JSONDecoder().decode([String: Expected].self, from: data)
    }()

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: directory.appendingPathComponent(name)))
    }

    @Test(arguments: expected.keys.sorted())
    func readsWhatNumPyWrote(file: String) throws {
        let array = try NumPyArray(npyBytes: Self.bytes(file))
        let want = try #require(Self.expected[file])
        #expect(array.shape == want.shape)
        #expect(array.elementType.rawValue == want.descr)
        #expect(array.values.count == want.values.count)
        for (a, b) in zip(array.values, want.values) {
            #expect(a == b || (a.isNaN && b.isNaN))
        }
    }

    @Test(arguments: ["f8_v1.npy", "f4_v1.npy", "u1_1d.npy", "i8_1d.npy", "f8_3d.npy", "f8_empty.npy"])
    func roundTripsThroughItsOwnWriter(file: String) throws {
        let array = try NumPyArray(npyBytes: Self.bytes(file))
        let again = try NumPyArray(npyBytes: array.npyBytes())
        #expect(again == array)
    }

    @Test func writesHeadersAlignedTo64Bytes() throws {
        let bytes = NumPyArray(shape: [3, 2], elementType: .float64, values: [1, 2, 3, 4, 5, 6]).npyBytes()
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        #expect((10 + headerLength) % 64 == 0)
        #expect(bytes[10 + headerLength - 1] == UInt8(ascii: "\n"))
    }

    @Test(arguments: [
        ("f8_fortran.npy", "Fortran"),
        ("f8_bigendian.npy", "big-endian"),
        ("i4.npy", "'<i4'"),
        ("c16.npy", "'<c16'"),
        ("truncated.npy", "needs 48"),
        ("not_npy.npy", "magic"),
    ])
    func refusesWhatItCannotReadAndSaysWhatItFound(file: String, mention: String) throws {
        let bytes = try Self.bytes(file)
        #expect {
            try NumPyArray(npyBytes: bytes)
        } throws: { error in
            (error as? NumPyFormatError)?.message.contains(mention) == true
        }
    }

    @Test func refusesUnknownVersions() {
        var bytes = NumPyArray(shape: [1, 1], elementType: .float64, values: [1]).npyBytes()
        bytes[6] = 4
        #expect { try NumPyArray(npyBytes: bytes) } throws: {
            ($0 as? NumPyFormatError)?.message.contains("version 4.0") == true
        }
    }

    @Test(arguments: [
        ("f8_3d.npy", "found shape (2, 3, 4)"), ("f8_1d.npy", "found shape (5,)"), ("u1_1d.npy", "'|u1'"),
    ])
    func matrixShapeRequiresTwoDimensionalFloats(file: String, mention: String) throws {
        let array = try NumPyArray(npyBytes: Self.bytes(file))
        #expect { try array.floatingPointMatrixShape() } throws: {
            ($0 as? NumPyFormatError)?.message.contains(mention) == true
        }
    }
}
