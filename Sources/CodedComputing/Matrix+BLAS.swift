import CBLAS

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension Matrix {
    /// The product `self · other`, computed by BLAS `dgemm` (OpenBLAS).
    ///
    /// Cost: 2·rows·columns·other.columns floating-point operations. Coding matrices are small
    /// (N×K, K×|F|) and the data matrices wide (K×d with d in the hundreds to thousands), so every
    /// encode and decode of a batch is one GEMM.
    ///
    /// - Precondition: `columns == other.rows`.
    public func multiplied(by other: Matrix) -> Matrix {
        precondition(columns == other.rows, "cannot multiply \(rows)×\(columns) by \(other.rows)×\(other.columns)")
        var result = Matrix(rows: rows, columns: other.columns)
        multiply(by: other, into: &result)
        return result
    }

    /// Writes `self · other` into `result`, reusing its storage.
    ///
    /// - Precondition: `columns == other.rows`, and `result` is `rows × other.columns`.
    public func multiply(by other: Matrix, into result: inout Matrix) {
        precondition(columns == other.rows, "cannot multiply \(rows)×\(columns) by \(other.rows)×\(other.columns)")
        precondition(result.rows == rows && result.columns == other.columns, "result has the wrong shape")
        let m = rows
        let n = other.columns
        let k = columns
        if m == 0 || n == 0 { return }
        if k == 0 {
            result = Matrix(rows: m, columns: n)
            return
        }
        withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                result.withUnsafeMutableBufferPointer { c in
                    cblas_dgemm(
                        CblasRowMajor, CblasNoTrans, CblasNoTrans,
                        Int32(m), Int32(n), Int32(k),
                        1.0, a.baseAddress, Int32(k),
                        b.baseAddress, Int32(n),
                        0.0, c.baseAddress, Int32(n))
                }
            }
        }
    }

    /// The element-wise difference `self − other`.
    ///
    /// - Precondition: both matrices have the same shape.
    public static func - (lhs: Matrix, rhs: Matrix) -> Matrix {
        precondition(lhs.rows == rhs.rows && lhs.columns == rhs.columns, "shape mismatch")
        return Matrix(rows: lhs.rows, columns: lhs.columns, elements: zip(lhs.elements, rhs.elements).map { $0 - $1 })
    }
}

/// Settings of the BLAS library behind the GEMMs.
public enum BLAS {
    /// Makes every BLAS call run on the calling thread. Serving processes do this: their GEMMs are
    /// small, they run many at once (workers scale by processes), and OpenBLAS's own threads would
    /// spin and hand work between cores for each call. An explicit `OPENBLAS_NUM_THREADS` in the
    /// environment is left alone.
    public static func useCallingThreadOnly() {
        guard getenv("OPENBLAS_NUM_THREADS") == nil else { return }
        openblas_set_num_threads(1)
    }
}
