extension NumPyArray {
    /// Reads an array from the bytes of a `.npy` file.
    ///
    /// Reads format versions 1.0, 2.0 and 3.0, C order, element types `<f8`, `<f4`, `|u1` and `<i8`.
    ///
    /// - Throws: ``NumPyFormatError`` naming what was found: a missing magic string, an unsupported
    ///   version, a big-endian or otherwise unsupported dtype, Fortran order, or a data section whose
    ///   length does not match the shape.
    public init(npyBytes bytes: [UInt8]) throws(NumPyFormatError) {
        let header = try NumPyHeader.parse(bytes)
        guard let type = ElementType(rawValue: header.descr == "<u1" ? "|u1" : header.descr) else {
            let hint = header.descr.hasPrefix(">") ? " (big-endian data is not supported)" : ""
            throw NumPyFormatError(
                "unsupported dtype '\(header.descr)'\(hint); supported: '<f8', '<f4', '|u1', '<i8'")
        }
        guard !header.fortranOrder else {
            throw NumPyFormatError("the array is in Fortran (column-major) order; save it in C order")
        }
        let count = header.shape.reduce(1, *)
        let expected = count * type.size
        let available = bytes.count - header.dataOffset
        guard available == expected else {
            throw NumPyFormatError(
                "the data section has \(available) bytes but shape \(NumPyHeader.shapeLiteral(header.shape)) of "
                    + "'\(header.descr)' needs \(expected)")
        }
        let offset = header.dataOffset
        let values: [Double] = bytes.withUnsafeBytes { raw in
            (0..<count).map { i -> Double in
                let at = offset + i * type.size
                switch type {
                case .float64:
                    return Double(
                        bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)))
                case .float32:
                    return Double(
                        Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self))))
                case .uint8:
                    return Double(raw[at])
                case .int64:
                    return Double(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self)))
                }
            }
        }
        self.init(shape: header.shape, elementType: type, values: values)
    }

    /// The bytes of a version 1.0 `.npy` file holding this array in C order with its element type.
    ///
    /// Float32 output rounds each value to the nearest `Float`; integer types truncate toward zero.
    public func npyBytes() -> [UInt8] {
        var out = NumPyHeader.encode(descr: elementType.rawValue, shape: shape)
        out.reserveCapacity(out.count + values.count * elementType.size)
        for v in values {
            switch elementType {
            case .float64: withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 }
            case .float32: withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { out += $0 }
            case .uint8: out.append(UInt8(clamping: Int(v)))
            case .int64: withUnsafeBytes(of: Int64(v).littleEndian) { out += $0 }
            }
        }
        return out
    }
}
