/// Rebuilds a value of either element type from a gather of its elements: `indices[i]` is the source
/// element of output element i.
func gathered(_ value: GraphValue, shape: [Int], indices: [Int]) -> GraphValue {
    switch value {
    case .float(let t):
        return .float(
            Tensor(shape: shape) { out in
                t.withUnsafeBufferPointer { source in for (i, j) in indices.enumerated() { out[i] = source[j] } }
            })
    case .int64(let t):
        return .int64(IntTensor(shape: shape, values: indices.map { t.values[$0] }))
    }
}

/// The same elements under another shape.
func reshapedValue(_ value: GraphValue, _ shape: [Int]) -> GraphValue {
    switch value {
    case .float(let t): .float(t.reshaped(shape))
    case .int64(let t): .int64(IntTensor(shape: shape, values: t.values))
    }
}

/// Steps a multi-index to the next element of `shape` in row-major order (the last axis fastest).
func advance(_ index: inout [Int], within shape: [Int]) {
    var axis = shape.count - 1
    while axis >= 0 {
        index[axis] += 1
        if index[axis] < shape[axis] { return }
        index[axis] = 0
        axis -= 1
    }
}

/// Row-major strides of `shape`.
func rowMajorStrides(_ shape: [Int]) -> [Int] {
    var strides = Array(repeating: 1, count: shape.count)
    var step = 1
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[axis] = step
        step *= shape[axis]
    }
    return strides
}

/// Reshape (the target shape as an int64 input; 0 copies the input's extent unless `allowzero`,
/// −1 is inferred).
struct ReshapeOperator: GraphOperator {
    let allowZero: Bool

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let data = try inputs.value(0, "data")
        let requested = try inputs.value(1, "shape").integers("shape")
        let count = Tensor.elementCount(of: data.shape)
        var shape = requested
        var inferred: Int? = nil
        for (axis, extent) in requested.enumerated() {
            if extent == 0 && !allowZero {
                guard axis < data.shape.count else {
                    throw ModelError(
                        .layerShapeMismatch, "Reshape: 0 at axis \(axis) of \(requested) for input \(data.shape)")
                }
                shape[axis] = data.shape[axis]
            } else if extent == -1 {
                guard inferred == nil else {
                    throw ModelError(.invalidLayerParameter, "Reshape: more than one −1 in \(requested)")
                }
                inferred = axis
            } else if extent < 0 {
                throw ModelError(.invalidLayerParameter, "Reshape: negative extent in \(requested)")
            }
        }
        if let inferred {
            let known = shape.enumerated().filter { $0.offset != inferred }.reduce(1) { $0 * $1.element }
            guard known > 0, count % known == 0 else {
                throw ModelError(
                    .layerShapeMismatch, "Reshape: cannot fit \(count) elements of \(data.shape) into \(requested)")
            }
            shape[inferred] = count / known
        }
        guard Tensor.elementCount(of: shape) == count else {
            throw ModelError(
                .layerShapeMismatch,
                "Reshape: \(data.shape) has \(count) elements, \(requested) needs \(Tensor.elementCount(of: shape))")
        }
        return [reshapedValue(data, shape)]
    }
}

/// Flatten: `[d₀ … d_{axis−1}, d_axis … ]` to 2-D `[∏ d_{<axis}, ∏ d_{≥axis}]`.
struct FlattenOperator: GraphOperator {
    let axis: Int

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let data = try inputs.value(0, "input")
        let rank = data.shape.count
        let a = axis < 0 ? axis + rank : axis
        guard a >= 0 && a <= rank else {
            throw ModelError(.invalidLayerParameter, "Flatten: axis \(axis) for rank \(rank)")
        }
        let outer = Tensor.elementCount(of: Array(data.shape.prefix(a)))
        let inner = Tensor.elementCount(of: Array(data.shape.dropFirst(a)))
        return [reshapedValue(data, [outer, inner])]
    }
}

/// Squeeze (axes from the input since opset 13; all extents of 1 when absent) and Unsqueeze.
struct SqueezeOperator: GraphOperator {
    let unsqueeze: Bool
    /// Axes from the attribute (opset < 13).
    let attributeAxes: [Int]?

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let data = try inputs.value(0, "data")
        let axes = try inputs.optionalIntegers(1, "axes") ?? attributeAxes
        var shape = data.shape
        if unsqueeze {
            guard let axes else { throw ModelError(.invalidLayerParameter, "Unsqueeze needs axes") }
            let rank = shape.count + axes.count
            var normalized: [Int] = []
            for axis in axes { normalized.append(try normalizedAxis(axis, rank: rank)) }
            for axis in normalized.sorted() { shape.insert(1, at: axis) }
        } else if let axes {
            var normalized: [Int] = []
            for axis in axes { normalized.append(try normalizedAxis(axis, rank: shape.count)) }
            for axis in normalized.sorted(by: >) {
                guard shape[axis] == 1 else {
                    throw ModelError(.layerShapeMismatch, "Squeeze: axis \(axis) of \(data.shape) is not 1")
                }
                shape.remove(at: axis)
            }
        } else {
            shape.removeAll { $0 == 1 }
        }
        return [reshapedValue(data, shape)]
    }
}

/// Transpose by `perm` (reversed axes when absent).
struct TransposeOperator: GraphOperator {
    let permutation: [Int]?

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let data = try inputs.value(0, "data")
        let shape = data.shape
        let perm = permutation ?? Array((0..<shape.count).reversed())
        guard perm.count == shape.count, Set(perm) == Set(0..<shape.count) else {
            throw ModelError(.invalidLayerParameter, "Transpose: perm \(perm) for rank \(shape.count)")
        }
        if perm == Array(0..<shape.count) { return [data] }
        let outShape = perm.map { shape[$0] }
        let inStrides = rowMajorStrides(shape)
        let strides = perm.map { inStrides[$0] }
        switch data {
        case .float(let t):
            return [
                .float(
                    Tensor(shape: outShape) { out in
                        t.withUnsafeBufferPointer { Self.permute($0, outShape, strides, into: out) }
                    })
            ]
        case .int64(let t):
            var values = [Int64](repeating: 0, count: t.values.count)
            t.values.withUnsafeBufferPointer { source in
                values.withUnsafeMutableBufferPointer { Self.permute(source, outShape, strides, into: $0) }
            }
            return [.int64(IntTensor(shape: outShape, values: values))]
        }
    }

    /// Writes `source` read with `strides` (one per output axis) into `out` in row-major order of
    /// `shape`: an odometer over the outer axes, a strided copy along the last.
    static func permute<T>(
        _ source: UnsafeBufferPointer<T>, _ shape: [Int], _ strides: [Int], into out: UnsafeMutableBufferPointer<T>
    ) {
        let count = out.count
        guard count > 0 else { return }
        let rank = shape.count
        let inner = shape[rank - 1]
        let step = strides[rank - 1]
        var index = Array(repeating: 0, count: rank)
        var offset = 0
        var o = 0
        let base = source.baseAddress!
        let target = out.baseAddress!
        while o < count {
            if step == 1 {
                (target + o).update(from: base + offset, count: inner)
            } else {
                var p = base + offset
                for j in 0..<inner {
                    target[o &+ j] = p.pointee
                    p += step
                }
            }
            o += inner
            var axis = rank - 2
            while axis >= 0 {
                index[axis] += 1
                offset += strides[axis]
                if index[axis] < shape[axis] { break }
                offset -= strides[axis] * shape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }
}

/// Concat along `axis` (float or int64 inputs, all of one type).
struct ConcatOperator: GraphOperator {
    let axis: Int

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let parts = inputs.values.compactMap { $0 }
        guard let first = parts.first else { throw ModelError(.invalidLayerParameter, "Concat needs inputs") }
        let rank = first.shape.count
        let a = try normalizedAxis(axis, rank: rank)
        var shape = first.shape
        shape[a] = 0
        for part in parts {
            guard part.shape.count == rank,
                part.shape.enumerated().allSatisfy({ $0.offset == a || $0.element == first.shape[$0.offset] })
            else {
                throw ModelError(.layerShapeMismatch, "Concat on axis \(a): \(parts.map(\.shape)) do not fit")
            }
            shape[a] += part.shape[a]
        }
        let outer = Tensor.elementCount(of: Array(first.shape.prefix(a)))
        let blocks = parts.map { Tensor.elementCount(of: Array($0.shape.dropFirst(a))) }
        switch first {
        case .float:
            var tensors: [Tensor] = []
            for part in parts { tensors.append(try part.float("input")) }
            return [
                .float(
                    Tensor(shape: shape) { out in
                        var o = 0
                        for row in 0..<outer {
                            for (t, block) in zip(tensors, blocks) {
                                t.withUnsafeBufferPointer { p in
                                    (out.baseAddress! + o).update(from: p.baseAddress! + row * block, count: block)
                                }
                                o += block
                            }
                        }
                    })
            ]
        case .int64:
            var tensors: [IntTensor] = []
            for part in parts { tensors.append(try part.int64("input")) }
            var values: [Int64] = []
            for row in 0..<outer {
                for (t, block) in zip(tensors, blocks) { values += t.values[(row * block)..<((row + 1) * block)] }
            }
            return [.int64(IntTensor(shape: shape, values: values))]
        }
    }
}

/// Slice(data, starts, ends, axes?, steps?) with ONNX's clamping, negative indices and steps.
struct SliceOperator: GraphOperator {
    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let data = try inputs.value(0, "data")
        let starts = try inputs.value(1, "starts").integers("starts")
        let ends = try inputs.value(2, "ends").integers("ends")
        let rank = data.shape.count
        let axesInput = try inputs.optionalIntegers(3, "axes") ?? Array(0..<starts.count)
        let steps = try inputs.optionalIntegers(4, "steps") ?? Array(repeating: 1, count: starts.count)
        guard ends.count == starts.count, axesInput.count == starts.count, steps.count == starts.count else {
            throw ModelError(.invalidLayerParameter, "Slice: starts, ends, axes and steps differ in length")
        }
        var begin = Array(repeating: 0, count: rank)
        var step = Array(repeating: 1, count: rank)
        var shape = data.shape
        for (i, axis0) in axesInput.enumerated() {
            let axis = try normalizedAxis(axis0, rank: rank)
            let n = data.shape[axis]
            let s = steps[i]
            guard s != 0 else { throw ModelError(.invalidLayerParameter, "Slice: step 0") }
            var start = starts[i] < 0 ? starts[i] + n : starts[i]
            var end = ends[i] < 0 ? ends[i] + n : ends[i]
            if s > 0 {
                start = min(max(start, 0), n)
                end = min(max(end, 0), n)
                shape[axis] = max(0, (end - start + s - 1) / s)
            } else {
                start = min(max(start, 0), n - 1)
                end = min(max(end, -1), n - 1)
                shape[axis] = max(0, (start - end + (-s) - 1) / (-s))
            }
            begin[axis] = start
            step[axis] = s
        }
        let strides = rowMajorStrides(data.shape)
        let count = Tensor.elementCount(of: shape)
        var indices: [Int] = []
        indices.reserveCapacity(count)
        if count > 0 {
            var index = Array(repeating: 0, count: rank)
            for _ in 0..<count {
                var offset = 0
                for axis in 0..<rank { offset += (begin[axis] + index[axis] * step[axis]) * strides[axis] }
                indices.append(offset)
                advance(&index, within: shape)
            }
        }
        return [gathered(data, shape: shape, indices: indices)]
    }
}

/// Gather(data, indices) along `axis`: output shape data[..axis] + indices + data[axis+1..].
struct GatherOperator: GraphOperator {
    let axis: Int

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let data = try inputs.value(0, "data")
        let indices = try inputs.value(1, "indices").int64("indices")
        let rank = data.shape.count
        let a = try normalizedAxis(axis, rank: rank)
        let n = data.shape[a]
        let outer = Tensor.elementCount(of: Array(data.shape.prefix(a)))
        let inner = Tensor.elementCount(of: Array(data.shape.dropFirst(a + 1)))
        var picks: [Int] = []
        for value in indices.values {
            let i = Int(value) < 0 ? Int(value) + n : Int(value)
            guard i >= 0 && i < n else {
                throw ModelError(
                    .layerShapeMismatch, "Gather: index \(value) out of range for axis \(a) of \(data.shape)")
            }
            picks.append(i)
        }
        let shape = Array(data.shape.prefix(a)) + indices.shape + Array(data.shape.dropFirst(a + 1))
        var sources: [Int] = []
        sources.reserveCapacity(outer * picks.count * inner)
        for o in 0..<outer {
            for i in picks {
                let base = (o * n + i) * inner
                for j in 0..<inner { sources.append(base + j) }
            }
        }
        return [gathered(data, shape: shape, indices: sources)]
    }
}

/// Shape(data) as a 1-D int64 tensor, sliced by `start` and `end` (opset 15).
struct ShapeOperator: GraphOperator {
    let start: Int
    let end: Int?

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let shape = try inputs.value(0, "data").shape
        let rank = shape.count
        func clamp(_ v: Int) -> Int { min(max(v < 0 ? v + rank : v, 0), rank) }
        let s = clamp(start)
        let e = clamp(end ?? rank)
        return [.int64(IntTensor(vector: s < e ? shape[s..<e].map { Int64($0) } : []))]
    }
}

/// A value fixed when the model is loaded: Constant, and the outputs of nodes whose inputs are all
/// constant (folded at load).
struct ConstantOperator: GraphOperator {
    let value: GraphValue

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] { [value] }
}

/// ConstantOfShape(shape): a tensor of that shape filled with `value` (float 0 by default).
struct ConstantOfShapeOperator: GraphOperator {
    let value: GraphValue

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let shape = try inputs.value(0, "input").integers("input")
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw ModelError(.invalidLayerParameter, "ConstantOfShape: negative extent \(shape)")
        }
        switch value {
        case .float(let t): return [.float(Tensor(shape: shape, repeating: t.elements.first ?? 0))]
        case .int64(let t):
            return [
                .int64(
                    IntTensor(
                        shape: shape,
                        values: Array(repeating: t.values.first ?? 0, count: Tensor.elementCount(of: shape))))
            ]
        }
    }
}

/// Expand(input, shape): broadcast to the shape.
struct ExpandOperator: GraphOperator {
    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let data = try inputs.value(0, "input")
        let target = try broadcastShape(data.shape, try inputs.value(1, "shape").integers("shape"))
        switch data {
        case .float(let t):
            return [
                .float(Tensor(shape: target, elements: WhereOperator.expand(t.elements, from: t.shape, to: target)))
            ]
        case .int64(let t):
            return [.int64(IntTensor(shape: target, values: WhereOperator.expand(t.values, from: t.shape, to: target)))]
        }
    }
}

/// Identity, Dropout in inference (its mask output is not supported), and Cast between float and
/// integer types.
struct PassOperator: GraphOperator {
    enum Target { case same, float, int64 }
    let target: Target

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let data = try inputs.value(0, "input")
        switch (target, data) {
        case (.same, _), (.float, .float), (.int64, .int64): return [data]
        case (.float, .int64(let t)): return [.float(Tensor(shape: t.shape, elements: t.values.map { Float($0) }))]
        case (.int64, .float(let t)):
            return [
                .int64(
                    IntTensor(
                        shape: t.shape, values: t.elements.map { $0.isFinite ? Int64($0.rounded(.towardZero)) : 0 }))
            ]
        }
    }
}

/// Pad in `constant` mode (opset 11+: the pads `[x1_begin, x2_begin, …, x1_end, x2_end, …]` and an
/// optional constant value as inputs; negative pads crop).
struct PadOperator: GraphOperator {
    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let x = try inputs.float(0, "data")
        let pads = try inputs.value(1, "pads").integers("pads")
        let fill = try inputs.optionalFloat(2, "constant_value")?.elements.first ?? 0
        let rank = x.rank
        var axes = Array(0..<rank)
        if let requested = try inputs.optionalIntegers(3, "axes") {
            axes = []
            for axis in requested { axes.append(try normalizedAxis(axis, rank: rank)) }
        }
        guard pads.count == 2 * axes.count else {
            throw ModelError(.invalidLayerParameter, "Pad: \(pads.count) pads for \(axes.count) axes")
        }
        var begin = Array(repeating: 0, count: rank)
        var end = Array(repeating: 0, count: rank)
        for (i, axis) in axes.enumerated() {
            begin[axis] = pads[i]
            end[axis] = pads[i + axes.count]
        }
        let shape = (0..<rank).map { x.shape[$0] + begin[$0] + end[$0] }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw ModelError(.layerShapeMismatch, "Pad: \(pads) crops \(x.shape) below zero")
        }
        let count = Tensor.elementCount(of: shape)
        var out = [Float](repeating: fill, count: count)
        guard count > 0, x.count > 0, rank > 0 else { return [.float(Tensor(shape: shape, elements: out))] }
        // Row by row of the input (the last axis contiguous): each row lands, shifted by the pads and
        // cropped by negative ones, at one place in the output.
        let outStrides = rowMajorStrides(shape)
        let width = x.shape[rank - 1]
        let (shift, outWidth) = (begin[rank - 1], shape[rank - 1])
        let first = max(0, -shift)
        let last = min(width, outWidth - shift)
        x.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                var index = Array(repeating: 0, count: rank - 1)
                let outerShape = Array(x.shape.dropLast())
                for row in 0..<(x.count / width) {
                    defer { advance(&index, within: outerShape) }
                    guard first < last else { continue }
                    var offset = 0
                    var inside = true
                    for axis in 0..<(rank - 1) {
                        let o = index[axis] + begin[axis]
                        if o < 0 || o >= shape[axis] {
                            inside = false
                            break
                        }
                        offset += o * outStrides[axis]
                    }
                    guard inside else { continue }
                    (target.baseAddress! + offset + first + shift).update(
                        from: source.baseAddress! + row * width + first, count: last - first)
                }
            }
        }
        return [.float(Tensor(shape: shape, elements: out))]
    }
}
