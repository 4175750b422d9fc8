import Foundation

/// Numpy-style broadcasting of two shapes (ONNX's multidirectional broadcasting).
func broadcastShape(_ a: [Int], _ b: [Int]) throws(ModelError) -> [Int] {
    let rank = max(a.count, b.count)
    let pa = Array(repeating: 1, count: rank - a.count) + a
    let pb = Array(repeating: 1, count: rank - b.count) + b
    var out: [Int] = []
    for (x, y) in zip(pa, pb) {
        guard x == y || x == 1 || y == 1 else {
            throw ModelError(.layerShapeMismatch, "shapes \(a) and \(b) do not broadcast")
        }
        out.append(x == 1 ? y : x)
    }
    return out
}

/// Strides (in elements) of `shape` read as `target` under broadcasting: 0 along broadcast axes.
func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
    let padded = Array(repeating: 1, count: target.count - shape.count) + shape
    var strides = Array(repeating: 0, count: target.count)
    var step = 1
    for axis in stride(from: target.count - 1, through: 0, by: -1) {
        strides[axis] = padded[axis] == 1 && target[axis] != 1 ? 0 : step
        step *= padded[axis]
    }
    return strides
}

/// The element offset, in an operand of `shape` broadcast to `target`, of each element of `target`
/// in row-major order, times `scale` (the size of the block each element stands for: 1 for
/// elements, M·K for the matrices of a batched product).
func broadcastOffsets(_ shape: [Int], to target: [Int], scale: Int = 1) -> [Int] {
    guard !target.isEmpty else { return [0] }
    let strides = broadcastStrides(shape, to: target).map { $0 * scale }
    let count = Tensor.elementCount(of: target)
    var offsets: [Int] = []
    offsets.reserveCapacity(count)
    var index = Array(repeating: 0, count: target.count)
    var offset = 0
    for _ in 0..<count {
        offsets.append(offset)
        var axis = target.count - 1
        while axis >= 0 {
            index[axis] += 1
            offset += strides[axis]
            if index[axis] < target[axis] { break }
            offset -= strides[axis] * target[axis]
            index[axis] = 0
            axis -= 1
        }
    }
    return offsets
}

/// `f` applied element by element to two broadcast operands: the innermost axis runs as a tight loop,
/// the others by an odometer over the output.
@inline(__always)
func broadcastBinary<T, U>(
    _ aShape: [Int], _ a: UnsafeBufferPointer<T>, _ bShape: [Int], _ b: UnsafeBufferPointer<T>,
    into out: UnsafeMutableBufferPointer<U>, shape: [Int], _ f: (T, T) -> U
) {
    let count = out.count
    guard count > 0 else { return }
    if aShape == bShape {
        for i in 0..<count { out[i] = f(a[i], b[i]) }
        return
    }
    if b.count == 1 {
        let y = b[0]
        for i in 0..<count { out[i] = f(a[i], y) }
        return
    }
    if a.count == 1 {
        let x = a[0]
        for i in 0..<count { out[i] = f(x, b[i]) }
        return
    }
    let rank = shape.count
    let sa = broadcastStrides(aShape, to: shape)
    let sb = broadcastStrides(bShape, to: shape)
    let inner = shape[rank - 1]
    let (ia, ib) = (sa[rank - 1], sb[rank - 1])
    var index = Array(repeating: 0, count: rank)
    var (oa, ob) = (0, 0)
    var o = 0
    while o < count {
        if ia == 1 && ib == 1 {
            for j in 0..<inner { out[o + j] = f(a[oa + j], b[ob + j]) }
        } else {
            for j in 0..<inner { out[o + j] = f(a[oa + j * ia], b[ob + j * ib]) }
        }
        o += inner
        // Advance the odometer over the outer axes.
        var axis = rank - 2
        while axis >= 0 {
            index[axis] += 1
            oa += sa[axis]
            ob += sb[axis]
            if index[axis] < shape[axis] { break }
            oa -= sa[axis] * shape[axis]
            ob -= sb[axis] * shape[axis]
            index[axis] = 0
            axis -= 1
        }
    }
}

/// Add, Sub, Mul, Div, Pow (float), and the integer arithmetic and comparisons of shape
/// computations (Add, Sub, Mul, Div, Equal, Less, Greater on int64; booleans as 0 and 1).
struct BinaryOperator: GraphOperator {
    enum Kind: String {
        case add = "Add", sub = "Sub", mul = "Mul", div = "Div", pow = "Pow", equal = "Equal", less = "Less", greater =
            "Greater"
    }
    let kind: Kind

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let a = try inputs.value(0, "A")
        let b = try inputs.value(1, "B")
        let shape = try broadcastShape(a.shape, b.shape)
        switch (a, b) {
        case (.float(let x), .float(let y)):
            switch kind {
            case .add: return [.float(Self.combine(x, y, shape, +))]
            case .sub: return [.float(Self.combine(x, y, shape, -))]
            case .mul: return [.float(Self.combine(x, y, shape, *))]
            case .div: return [.float(Self.combine(x, y, shape, /))]
            case .pow:
                if y.count == 1 {
                    let e = y.elements[0]
                    if e == 2 { return [.float(Self.map(x) { $0 * $0 })] }
                    if e == 0.5 { return [.float(Self.map(x) { $0.squareRoot() })] }
                    if e == 1 { return [.float(x)] }
                }
                return [.float(Self.combine(x, y, shape) { Foundation.pow($0, $1) })]
            case .equal, .less, .greater:
                let c: (Float, Float) -> Int64 =
                    kind == .equal ? { $0 == $1 ? 1 : 0 } : kind == .less ? { $0 < $1 ? 1 : 0 } : { $0 > $1 ? 1 : 0 }
                var values = [Int64](repeating: 0, count: Tensor.elementCount(of: shape))
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeBufferPointer { yp in
                        values.withUnsafeMutableBufferPointer {
                            broadcastBinary(x.shape, xp, y.shape, yp, into: $0, shape: shape, c)
                        }
                    }
                }
                return [.int64(IntTensor(shape: shape, values: values))]
            }
        case (.int64(let x), .int64(let y)):
            let f: (Int64, Int64) -> Int64
            switch kind {
            case .add: f = (&+)
            case .sub: f = (&-)
            case .mul: f = (&*)
            case .div:
                guard !y.values.contains(0) else {
                    throw ModelError(.invalidLayerParameter, "integer division by zero")
                }
                f = (/)
            case .pow: throw ModelError(.layerShapeMismatch, "Pow takes float32 tensors, got int64")
            case .equal: f = { $0 == $1 ? 1 : 0 }
            case .less: f = { $0 < $1 ? 1 : 0 }
            case .greater: f = { $0 > $1 ? 1 : 0 }
            }
            var values = [Int64](repeating: 0, count: Tensor.elementCount(of: shape))
            x.values.withUnsafeBufferPointer { xp in
                y.values.withUnsafeBufferPointer { yp in
                    values.withUnsafeMutableBufferPointer {
                        broadcastBinary(x.shape, xp, y.shape, yp, into: $0, shape: shape, f)
                    }
                }
            }
            return [.int64(IntTensor(shape: shape, values: values))]
        default:
            throw ModelError(
                .layerShapeMismatch, "\(kind.rawValue) takes two tensors of one type, got \(a.summary) and \(b.summary)"
            )
        }
    }

    /// `f` of two float tensors under broadcasting (specialised for each operator at its call).
    @inline(__always)
    static func combine(_ x: Tensor, _ y: Tensor, _ shape: [Int], _ f: (Float, Float) -> Float) -> Tensor {
        Tensor(shape: shape) { out in
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeBufferPointer { yp in broadcastBinary(x.shape, xp, y.shape, yp, into: out, shape: shape, f)
                }
            }
        }
    }

    @inline(__always)
    static func map(_ x: Tensor, _ f: (Float) -> Float) -> Tensor {
        Tensor(shape: x.shape) { out in
            x.withUnsafeBufferPointer { xp in for i in 0..<xp.count { out[i] = f(xp[i]) } }
        }
    }
}

/// Element-wise functions of one float tensor: Relu, Sigmoid, Tanh, Erf, Sqrt, Exp, Neg, Abs,
/// Reciprocal, Gelu (exact or tanh), LeakyRelu, HardSigmoid, HardSwish, and Clip with constant
/// bounds. Each runs as its own loop (no call per element).
struct UnaryOperator: GraphOperator {
    enum Function: Sendable {
        case relu, sigmoid, tanh, erf, sqrt, exp, neg, abs, reciprocal, hardSwish
        case gelu(exact: Bool)
        case leakyRelu(Float)
        case hardSigmoid(Float, Float)
        case clip(Float, Float)
    }
    let function: Function

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        [.float(Self.apply(function, try inputs.float(0, "X")))]
    }

    static func apply(_ function: Function, _ x: Tensor) -> Tensor {
        typealias M = BinaryOperator
        switch function {
        case .relu: return M.map(x) { max($0, 0) }
        case .sigmoid: return M.map(x) { 1 / (1 + fastExp(-$0)) }
        case .tanh: return M.map(x) { Foundation.tanh($0) }
        case .erf: return M.map(x) { fastErf($0) }
        case .sqrt: return M.map(x) { $0.squareRoot() }
        case .exp: return M.map(x) { fastExp($0) }
        case .neg: return M.map(x) { -$0 }
        case .abs: return M.map(x) { Swift.abs($0) }
        case .reciprocal: return M.map(x) { 1 / $0 }
        case .hardSwish: return M.map(x) { $0 * min(max($0 / 6 + 0.5, 0), 1) }
        case .gelu(let exact):
            if exact {
                let r = 1 / Float(2).squareRoot()
                return M.map(x) { 0.5 * $0 * (1 + fastErf($0 * r)) }
            }
            let c = Float((2 / Double.pi).squareRoot())
            return M.map(x) { 0.5 * $0 * (1 + Foundation.tanh(c * ($0 + 0.044715 * $0 * $0 * $0))) }
        case .leakyRelu(let alpha): return M.map(x) { $0 >= 0 ? $0 : alpha * $0 }
        case .hardSigmoid(let alpha, let beta): return M.map(x) { min(max(alpha * $0 + beta, 0), 1) }
        case .clip(let low, let high): return M.map(x) { min(max($0, low), high) }
        }
    }

    /// Applies `function` in place (used when it is fused into the operator that produces its input).
    static func applyInPlace(_ function: Function, _ y: UnsafeMutableBufferPointer<Float>) {
        switch function {
        case .relu: for i in 0..<y.count { y[i] = max(y[i], 0) }
        case .clip(let low, let high): for i in 0..<y.count { y[i] = min(max(y[i], low), high) }
        default:
            let t = apply(function, Tensor(shape: [y.count], elements: Array(y)))
            t.withUnsafeBufferPointer { for i in 0..<y.count { y[i] = $0[i] } }
        }
    }
}

/// Clip with its bounds as optional inputs (opset 11+); constant bounds are folded into the
/// function when the model is loaded.
struct ClipOperator: GraphOperator {
    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let x = try inputs.float(0, "input")
        let low = try inputs.optionalFloat(1, "min").map { $0.elements.first ?? -.infinity } ?? -.infinity
        let high = try inputs.optionalFloat(2, "max").map { $0.elements.first ?? .infinity } ?? .infinity
        return [.float(UnaryOperator.apply(.clip(low, high), x))]
    }
}

/// Where(condition, X, Y) with broadcasting, for float or int64 X and Y.
struct WhereOperator: GraphOperator {
    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let condition = try inputs.value(0, "condition").int64("condition")
        let x = try inputs.value(1, "X")
        let y = try inputs.value(2, "Y")
        let shape = try broadcastShape(try broadcastShape(condition.shape, x.shape), y.shape)
        let count = Tensor.elementCount(of: shape)
        func pick<T>(_ xs: [T], _ xShape: [Int], _ ys: [T], _ yShape: [Int]) -> [T] {
            let c = Self.expand(condition.values, from: condition.shape, to: shape)
            let a = Self.expand(xs, from: xShape, to: shape)
            let b = Self.expand(ys, from: yShape, to: shape)
            return (0..<count).map { c[$0] != 0 ? a[$0] : b[$0] }
        }
        switch (x, y) {
        case (.float(let a), .float(let b)):
            return [.float(Tensor(shape: shape, elements: pick(a.elements, a.shape, b.elements, b.shape)))]
        case (.int64(let a), .int64(let b)):
            return [.int64(IntTensor(shape: shape, values: pick(a.values, a.shape, b.values, b.shape)))]
        default:
            throw ModelError(.layerShapeMismatch, "Where takes X and Y of one type, got \(x.summary) and \(y.summary)")
        }
    }

    /// `values` of `shape` broadcast to `target`, materialised.
    static func expand<T>(_ values: [T], from shape: [Int], to target: [Int]) -> [T] {
        if shape == target { return values }
        return broadcastOffsets(shape, to: target).map { values[$0] }
    }
}
