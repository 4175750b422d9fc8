/// The `.npy` header: magic, version, and the Python-literal dictionary that describes the array.
///
/// Format (NumPy's NEP 1): the 6 bytes `\x93NUMPY`, a major and minor version byte, the header
/// length (2 bytes little-endian for version 1.0; 4 bytes for 2.0 and 3.0), then the header: an
/// ASCII (UTF-8 for 3.0) Python dict literal such as
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`, padded with spaces and a newline
/// so that the data starts at a multiple of 64 bytes.
enum NumPyHeader {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]

    struct Parsed {
        var descr: String
        var fortranOrder: Bool
        var shape: [Int]
        var dataOffset: Int
    }

    static func parse(_ bytes: [UInt8]) throws(NumPyFormatError) -> Parsed {
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw NumPyFormatError("not a NumPy .npy file (missing the \\x93NUMPY magic string)")
        }
        let major = bytes[6]
        let minor = bytes[7]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw NumPyFormatError("truncated .npy header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw NumPyFormatError("unsupported .npy format version \(major).\(minor); versions 1.0 to 3.0 are read")
        }
        guard minor == 0 else {
            throw NumPyFormatError("unsupported .npy format version \(major).\(minor); versions 1.0 to 3.0 are read")
        }
        guard bytes.count >= headerStart + headerLength else {
            throw NumPyFormatError("truncated .npy header: it declares \(headerLength) bytes")
        }
        let text = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        var parser = LiteralParser(text)
        guard case .dict(let entries) = try parser.parseValue() else {
            throw NumPyFormatError("the .npy header is not a dictionary: \(text.trimmed)")
        }
        guard case .string(let descr)? = entries["descr"] else {
            throw NumPyFormatError(
                "the .npy header has no string 'descr' (structured dtypes are not supported): \(text.trimmed)")
        }
        guard case .bool(let fortran)? = entries["fortran_order"] else {
            throw NumPyFormatError("the .npy header has no boolean 'fortran_order': \(text.trimmed)")
        }
        guard case .tuple(let dims)? = entries["shape"] else {
            throw NumPyFormatError("the .npy header has no tuple 'shape': \(text.trimmed)")
        }
        var shape: [Int] = []
        for dim in dims {
            guard case .int(let d) = dim, d >= 0 else {
                throw NumPyFormatError("the .npy shape holds a non-integer or negative dimension: \(text.trimmed)")
            }
            shape.append(d)
        }
        return Parsed(descr: descr, fortranOrder: fortran, shape: shape, dataOffset: headerStart + headerLength)
    }

    /// A version 1.0 header for a C-order array (version 2.0 when the header exceeds 65535 bytes).
    static func encode(descr: String, shape: [Int]) -> [UInt8] {
        let dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeLiteral(shape)), }"
        var header = Array(dict.utf8)
        let prefix = 10
        let total = (prefix + header.count + 1 + 63) / 64 * 64
        header += Array(repeating: UInt8(ascii: " "), count: total - prefix - header.count - 1)
        header.append(UInt8(ascii: "\n"))
        precondition(header.count <= 65535, "header too long")
        return magic + [1, 0, UInt8(header.count & 0xFF), UInt8(header.count >> 8)] + header
    }

    /// Python's spelling of a shape tuple: `()`, `(3,)`, `(3, 4)`.
    static func shapeLiteral(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }
}

extension String {
    fileprivate var trimmed: String {
        var s = Substring(self)
        while let last = s.last, last == " " || last == "\n" || last == "\0" { s = s.dropLast() }
        return String(s)
    }
}

/// A parser for the small subset of Python literals found in `.npy` headers.
struct LiteralParser {
    enum Value: Equatable {
        case string(String)
        case int(Int)
        case bool(Bool)
        case tuple([Value])
        case dict([String: Value])
    }

    private let characters: [Character]
    private var index = 0

    init(_ text: String) { characters = Array(text) }

    mutating func parseValue() throws(NumPyFormatError) -> Value {
        skipSpace()
        guard index < characters.count else { throw NumPyFormatError("unexpected end of the .npy header") }
        switch characters[index] {
        case "{":
            index += 1
            var entries: [String: Value] = [:]
            while true {
                skipSpace()
                if peek("}") { index += 1; break }
                guard case .string(let key) = try parseValue() else {
                    throw NumPyFormatError("a .npy header key is not a string")
                }
                try expect(":")
                entries[key] = try parseValue()
                skipSpace()
                if peek(",") { index += 1 }
            }
            return .dict(entries)
        case "(":
            index += 1
            var items: [Value] = []
            while true {
                skipSpace()
                if peek(")") { index += 1; break }
                items.append(try parseValue())
                skipSpace()
                if peek(",") { index += 1 }
            }
            return .tuple(items)
        case "'", "\"":
            let quote = characters[index]
            index += 1
            var s = ""
            while index < characters.count, characters[index] != quote {
                s.append(characters[index])
                index += 1
            }
            guard index < characters.count else { throw NumPyFormatError("unterminated string in the .npy header") }
            index += 1
            return .string(s)
        default:
            var word = ""
            while index < characters.count, characters[index].isLetter || characters[index].isNumber {
                word.append(characters[index])
                index += 1
            }
            if word == "True" { return .bool(true) }
            if word == "False" { return .bool(false) }
            if let n = Int(word.hasSuffix("L") ? String(word.dropLast()) : word) { return .int(n) }
            throw NumPyFormatError(
                "unexpected token '\(word.isEmpty ? String(characters[index]) : word)' in the .npy header")
        }
    }

    private mutating func skipSpace() {
        while index < characters.count, characters[index].isWhitespace { index += 1 }
    }

    private func peek(_ c: Character) -> Bool { index < characters.count && characters[index] == c }

    private mutating func expect(_ c: Character) throws(NumPyFormatError) {
        skipSpace()
        guard peek(c) else { throw NumPyFormatError("expected '\(c)' in the .npy header") }
        index += 1
    }
}
