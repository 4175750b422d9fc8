/// An element type of the safetensors format, named as in the file's header (`"F32"`, `"BF16"`, …).
///
/// Every standard dtype is recognised, so that a file holding, say, an `I64` step counter next to its
/// weights still opens; only the floating-point types convert to `Float` (``isConvertibleToFloat``).
public enum SafetensorsDataType: String, Sendable, Equatable, CaseIterable {
    /// Boolean, one byte.
    case bool = "BOOL"
    /// Unsigned 8-bit integer.
    case uint8 = "U8"
    /// Signed 8-bit integer.
    case int8 = "I8"
    /// 8-bit float, 5 exponent and 2 mantissa bits.
    case float8E5M2 = "F8_E5M2"
    /// 8-bit float, 4 exponent and 3 mantissa bits.
    case float8E4M3 = "F8_E4M3"
    /// Signed 16-bit integer.
    case int16 = "I16"
    /// Unsigned 16-bit integer.
    case uint16 = "U16"
    /// IEEE 754 half precision.
    case float16 = "F16"
    /// bfloat16: the upper half of an IEEE 754 single.
    case bfloat16 = "BF16"
    /// Signed 32-bit integer.
    case int32 = "I32"
    /// Unsigned 32-bit integer.
    case uint32 = "U32"
    /// IEEE 754 single precision.
    case float32 = "F32"
    /// Signed 64-bit integer.
    case int64 = "I64"
    /// Unsigned 64-bit integer.
    case uint64 = "U64"
    /// IEEE 754 double precision.
    case float64 = "F64"

    /// The size of one element in bytes.
    public var byteSize: Int {
        switch self {
        case .bool, .uint8, .int8, .float8E5M2, .float8E4M3: 1
        case .int16, .uint16, .float16, .bfloat16: 2
        case .int32, .uint32, .float32: 4
        case .int64, .uint64, .float64: 8
        }
    }

    /// Whether ``SafetensorsFile/tensor(named:)`` can load this type: F32 as is, F64 rounded to the
    /// nearest `Float`, and F16 and BF16 widened exactly.
    public var isConvertibleToFloat: Bool {
        switch self {
        case .float32, .float64, .float16, .bfloat16: true
        default: false
        }
    }

    /// Decodes `count` little-endian elements of this type starting at `bytes` into `Float`s.
    ///
    /// - Precondition: ``isConvertibleToFloat``, and `bytes` holds `count * byteSize` bytes.
    func convert(_ bytes: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<Float>) {
        let count = output.count
        precondition(bytes.count == count * byteSize, "byte count does not match the element count")
        switch self {
        case .float32:
            for i in 0..<count {
                let bits = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                output[i] = Float(bitPattern: bits)
            }
        case .float64:
            for i in 0..<count {
                let bits = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                output[i] = Float(Double(bitPattern: bits))
            }
        case .float16:
            for i in 0..<count {
                let bits = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                output[i] = SafetensorsDataType.float(halfBits: bits)
            }
        case .bfloat16:
            for i in 0..<count {
                let bits = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                output[i] = Float(bitPattern: UInt32(bits) << 16)
            }
        default:
            preconditionFailure("\(rawValue) does not convert to Float")
        }
    }

    /// The exact `Float` value of an IEEE 754 half-precision bit pattern.
    ///
    /// Written out rather than using `Float16`, which is unavailable on some platforms (macOS on
    /// x86_64). Every half value, including subnormals, infinities and NaNs, is representable.
    static func float(halfBits bits: UInt16) -> Float {
        let sign: UInt32 = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let mantissa = UInt32(bits & 0x03FF)
        switch exponent {
        case 0:
            // Zero or subnormal: mantissa · 2⁻²⁴, exact in single precision.
            let magnitude = Float(mantissa) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        default:
            return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
        }
    }
}
