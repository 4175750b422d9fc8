/// A dense, row-major tensor of `Float` values: the currency of the inference runtime.
///
/// The first axis is the batch: a batch of B inputs of shape `[784]` is a tensor of shape `[B, 784]`,
/// and row b is `elements[b * 784 ..< (b + 1) * 784]`. Element `(i₀, i₁, …, iₙ)` is stored at
/// `((i₀ · s₁ + i₁) · s₂ + …) · sₙ + iₙ` for shape `[s₀, s₁, …, sₙ]` (C order, as in numpy and
/// safetensors), so a batch goes to BLAS as one matrix without copying.
///
/// `Tensor` is a value type with copy-on-write storage; the storage itself is reached only through
/// ``withUnsafeBufferPointer(_:)`` and ``withUnsafeMutableBufferPointer(_:)``, or copied out with
/// ``elements``.
public struct Tensor: Sendable, Equatable {
    /// The extent of each axis, outermost (the batch) first. An empty shape is a scalar.
    public let shape: [Int]
    private var storage: [Float]

    /// Creates a tensor from row-major elements.
    ///
    /// - Precondition: every extent is non-negative and `elements.count` is the product of `shape`.
    public init(shape: [Int], elements: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "tensor extents must be non-negative: \(shape)")
        precondition(
            elements.count == Tensor.elementCount(of: shape),
            "shape \(shape) needs \(Tensor.elementCount(of: shape)) elements, got \(elements.count)")
        self.shape = shape
        self.storage = elements
    }

    /// Creates a tensor of the given shape with every element equal to `value`.
    ///
    /// - Precondition: every extent is non-negative.
    public init(shape: [Int], repeating value: Float = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "tensor extents must be non-negative: \(shape)")
        self.shape = shape
        self.storage = Array(repeating: value, count: Tensor.elementCount(of: shape))
    }

    /// Creates a tensor whose elements `initializer` writes into uninitialised storage.
    ///
    /// `initializer` must initialise every one of the `shape`-product elements. Layers use it to
    /// produce their outputs without zero-filling first.
    public init(
        shape: [Int], initializingWith initializer: (inout UnsafeMutableBufferPointer<Float>) -> Void
    ) {
        precondition(shape.allSatisfy { $0 >= 0 }, "tensor extents must be non-negative: \(shape)")
        let count = Tensor.elementCount(of: shape)
        self.shape = shape
        self.storage = Array(unsafeUninitializedCapacity: count) { buffer, initializedCount in
            initializer(&buffer)
            initializedCount = count
        }
    }

    /// The number of elements: the product of the extents (1 for a scalar).
    public var count: Int { storage.count }

    /// The number of axes.
    public var rank: Int { shape.count }

    /// The elements in row-major order (a copy-on-write copy of the storage).
    public var elements: [Float] { storage }

    /// The number of elements per item of the first axis: `count / shape[0]` (for a batch, the size
    /// of one sample).
    ///
    /// - Precondition: the tensor has at least one axis.
    public var rowSize: Int {
        precondition(!shape.isEmpty, "a scalar has no rows")
        return Tensor.elementCount(of: shape.dropFirst())
    }

    /// Item `index` of the first axis (for a batch, sample `index`) as a flat array.
    ///
    /// - Precondition: `0 <= index < shape[0]`.
    public func row(_ index: Int) -> [Float] {
        precondition(!shape.isEmpty && index >= 0 && index < shape[0], "row \(index) is out of range for \(shape)")
        let size = rowSize
        return Array(storage[(index * size)..<((index + 1) * size)])
    }

    /// The same elements viewed with another shape of the same element count (no copy).
    ///
    /// - Precondition: the new shape has the same number of elements.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(
            newShape.allSatisfy { $0 >= 0 } && Tensor.elementCount(of: newShape) == count,
            "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: newShape, elements: storage)
    }

    /// Calls `body` with a pointer to the row-major elements.
    public func withUnsafeBufferPointer<Result, Failure: Error>(
        _ body: (UnsafeBufferPointer<Float>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try storage.withUnsafeBufferPointer(body)
    }

    /// Calls `body` with a mutable pointer to the row-major elements (copying the storage first if it
    /// is shared).
    public mutating func withUnsafeMutableBufferPointer<Result, Failure: Error>(
        _ body: (inout UnsafeMutableBufferPointer<Float>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try storage.withUnsafeMutableBufferPointer(body)
    }

    /// The product of `shape`'s extents (1 for an empty shape).
    public static func elementCount(of shape: some Collection<Int>) -> Int {
        shape.reduce(1, *)
    }
}

extension Tensor: CustomStringConvertible {
    /// A short summary: the shape and the first few elements.
    public var description: String {
        let shown = storage.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(shape: \(shape), elements: [\(shown)\(storage.count > 8 ? ", …" : "")])"
    }
}
