import CBLAS
import Foundation

/// BatchNormalization in inference: y = (x − mean) / √(var + ε) · scale + B along axis 1, as one
/// multiply-add per channel.
struct BatchNormalizationOperator: GraphOperator {
    let epsilon: Float

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let x = try inputs.float(0, "X")
        let scale = try inputs.float(1, "scale").elements
        let bias = try inputs.float(2, "B").elements
        let mean = try inputs.float(3, "input_mean").elements
        let variance = try inputs.float(4, "input_var").elements
        guard x.rank >= 2 else {
            throw ModelError(.layerShapeMismatch, "BatchNormalization takes [N, C, …], got \(x.shape)")
        }
        let channels = x.shape[1]
        guard [scale, bias, mean, variance].allSatisfy({ $0.count == channels }) else {
            throw ModelError(.layerShapeMismatch, "BatchNormalization: parameters do not have \(channels) channels")
        }
        let a = (0..<channels).map { scale[$0] / (variance[$0] + epsilon).squareRoot() }
        let b = (0..<channels).map { bias[$0] - mean[$0] * a[$0] }
        let inner = Tensor.elementCount(of: Array(x.shape.dropFirst(2)))
        let y = Tensor(shape: x.shape) { out in
            x.withUnsafeBufferPointer { xp in
                var o = 0
                for _ in 0..<x.shape[0] {
                    for c in 0..<channels {
                        let (ac, bc) = (a[c], b[c])
                        for j in 0..<inner { out[o + j] = xp[o + j] * ac + bc }
                        o += inner
                    }
                }
            }
        }
        return [.float(y)]
    }
}

/// LayerNormalization (opset 17) over the axes from `axis` to the last, with optional scale and
/// bias broadcast over them; the mean and inverse-deviation outputs are not supported.
struct LayerNormalizationOperator: GraphOperator {
    let axis: Int
    let epsilon: Float

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let x = try inputs.float(0, "X")
        let scale = try inputs.optionalFloat(1, "Scale")
        let bias = try inputs.optionalFloat(2, "B")
        let a = try normalizedAxis(axis, rank: x.rank)
        let inner = Tensor.elementCount(of: Array(x.shape.dropFirst(a)))
        let outer = x.count / max(inner, 1)
        let gamma = try scale.map { s throws(ModelError) in try Self.expanded(s, to: Array(x.shape.dropFirst(a))) }
        let beta = try bias.map { b throws(ModelError) in try Self.expanded(b, to: Array(x.shape.dropFirst(a))) }
        // Absent parameters as ones and zeros, so the normalising loop has no branch and vectorises.
        let scales = gamma ?? [Float](repeating: 1, count: inner)
        let shifts = beta ?? [Float](repeating: 0, count: inner)
        let y = Tensor(shape: x.shape) { out in
            x.withUnsafeBufferPointer { xp in
                scales.withUnsafeBufferPointer { g in
                    shifts.withUnsafeBufferPointer { b in
                        for r in 0..<outer {
                            let (row, target) = (xp.baseAddress! + r * inner, out.baseAddress! + r * inner)
                            let mean = vectorSum(row, inner) / Float(inner)
                            let variance = vectorSquaredDeviations(row, inner, from: mean) / Float(inner)
                            let inverse = 1 / (variance + epsilon).squareRoot()
                            for j in 0..<inner { target[j] = (row[j] - mean) * inverse * g[j] + b[j] }
                        }
                    }
                }
            }
        }
        return [.float(y)]
    }

    static func expanded(_ t: Tensor, to shape: [Int]) throws(ModelError) -> [Float] {
        guard try broadcastShape(t.shape, shape) == shape else {
            throw ModelError(
                .layerShapeMismatch, "LayerNormalization: parameter \(t.shape) for normalised shape \(shape)")
        }
        return WhereOperator.expand(t.elements, from: t.shape, to: shape)
    }
}

/// Softmax and LogSoftmax along one axis (opset 13: only that axis).
struct SoftmaxOperator: GraphOperator {
    let axis: Int
    let logarithm: Bool

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let x = try inputs.float(0, "input")
        let a = try normalizedAxis(axis, rank: x.rank)
        let n = x.shape[a]
        let inner = Tensor.elementCount(of: Array(x.shape.dropFirst(a + 1)))
        let outer = Tensor.elementCount(of: Array(x.shape.prefix(a)))
        let log = logarithm
        let y = Tensor(shape: x.shape) { out in
            x.withUnsafeBufferPointer { xp in
                if inner == 1 && !log {
                    // Over the last axis (attention scores, class scores): contiguous rows.
                    for o in 0..<outer {
                        let (row, target) = (xp.baseAddress! + o * n, out.baseAddress! + o * n)
                        let top = vectorMaximum(row, n)
                        for k in 0..<n { target[k] = fastExp(row[k] - top) }
                        let inverse = 1 / vectorSum(target, n)
                        for k in 0..<n { target[k] *= inverse }
                    }
                    return
                }
                for o in 0..<outer {
                    for i in 0..<inner {
                        let base = o * n * inner + i
                        var top = -Float.infinity
                        for k in 0..<n { top = max(top, xp[base + k * inner]) }
                        var sum: Float = 0
                        for k in 0..<n {
                            let e = fastExp(xp[base + k * inner] - top)
                            out[base + k * inner] = e
                            sum += e
                        }
                        if log {
                            let shift = top + Foundation.log(sum)
                            for k in 0..<n { out[base + k * inner] = xp[base + k * inner] - shift }
                        } else {
                            let inv = 1 / sum
                            for k in 0..<n { out[base + k * inner] *= inv }
                        }
                    }
                }
            }
        }
        return [.float(y)]
    }
}

/// ReduceMean, ReduceSum, ReduceMax over axes (from the attribute up to opset 17, from the input
/// from opset 18; all axes when absent unless `noop_with_empty_axes`).
struct ReduceOperator: GraphOperator {
    enum Kind { case mean, sum, max }
    let kind: Kind
    let keepDims: Bool
    let attributeAxes: [Int]?
    let noopWithEmptyAxes: Bool

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let x = try inputs.float(0, "data")
        let requested = try inputs.optionalIntegers(1, "axes") ?? attributeAxes ?? []
        if requested.isEmpty && noopWithEmptyAxes { return [.float(x)] }
        var axes = Set<Int>()
        for axis in requested.isEmpty ? Array(0..<x.rank) : requested {
            axes.insert(try normalizedAxis(axis, rank: x.rank))
        }
        var outShape: [Int] = []
        for (axis, extent) in x.shape.enumerated() {
            if axes.contains(axis) {
                if keepDims { outShape.append(1) }
            } else {
                outShape.append(extent)
            }
        }
        let keptShape = x.shape.enumerated().map { axes.contains($0.offset) ? 1 : $0.element }
        let outCount = Tensor.elementCount(of: keptShape)
        let strides = rowMajorStrides(keptShape)
        var result = [Float](repeating: kind == .max ? -.infinity : 0, count: outCount)
        let reduced = axes.reduce(1) { $0 * x.shape[$1] }
        x.withUnsafeBufferPointer { xp in
            var index = Array(repeating: 0, count: x.rank)
            for i in 0..<x.count {
                var o = 0
                for axis in 0..<x.rank where !axes.contains(axis) { o += index[axis] * strides[axis] }
                if kind == .max { result[o] = Swift.max(result[o], xp[i]) } else { result[o] += xp[i] }
                advance(&index, within: x.shape)
            }
        }
        if kind == .mean { result = result.map { $0 / Float(max(reduced, 1)) } }
        return [.float(Tensor(shape: outShape, elements: result))]
    }
}

/// MaxPool, AveragePool (2-D, with explicit padding, strides, dilations for max, `ceil_mode` and
/// `count_include_pad`) and GlobalAveragePool / GlobalMaxPool.
struct PoolOperator: GraphOperator {
    /// Max pooling with a 2×2 window at stride 2 inside the image (the common case): each output the
    /// larger of two pairs, in one pass over the two input rows.
    static func maxPool2x2(_ x: Tensor, planes: Int, height: Int, width: Int, oh: Int, ow: Int) -> Tensor {
        Tensor(shape: [planes, oh, ow]) { out in
            x.withUnsafeBufferPointer { xp in
                for plane in 0..<planes {
                    let source = xp.baseAddress! + plane * height * width
                    let target = out.baseAddress! + plane * oh * ow
                    for r in 0..<oh {
                        let (top, bottom, row) = (source + 2 * r * width, source + (2 * r + 1) * width, target + r * ow)
                        var c = 0
                        while c < ow {
                            row[c] = max(max(top[2 * c], top[2 * c + 1]), max(bottom[2 * c], bottom[2 * c + 1]))
                            c += 1
                        }
                    }
                }
            }
        }.reshaped(x.shape.prefix(2) + [oh, ow])
    }

    /// Global pooling of `planes` contiguous planes of `size` elements: the average is one
    /// matrix-vector product with a vector of 1/size, the maximum one pass per plane.
    static func global(_ kind: Kind, _ x: Tensor, planes: Int, size: Int) -> Tensor {
        Tensor(shape: [planes]) { out in
            x.withUnsafeBufferPointer { xp in
                switch kind {
                case .average:
                    let weights = [Float](repeating: 1 / Float(size), count: size)
                    cblas_sgemv(
                        CblasRowMajor, CblasNoTrans, Int32(planes), Int32(size), 1, xp.baseAddress, Int32(size),
                        weights, 1, 0, out.baseAddress, 1)
                case .max:
                    for plane in 0..<planes {
                        out[plane] =
                            UnsafeBufferPointer(rebasing: xp[(plane * size)..<((plane + 1) * size)]).max()
                            ?? -.infinity
                    }
                }
            }
        }
    }

    enum Kind { case max, average }
    let kind: Kind
    /// nil: global pooling over the whole image.
    let kernel: (Int, Int)?
    let strides: (Int, Int)
    let dilations: (Int, Int)
    /// Top, left, bottom, right.
    let pads: (Int, Int, Int, Int)
    let ceilMode: Bool
    let countIncludePad: Bool

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let x = try inputs.float(0, "X")
        guard x.rank == 4 else {
            throw ModelError(.layerShapeMismatch, "pooling supports 2-D images [N, C, H, W], got \(x.shape)")
        }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw) = kernel ?? (h, w)
        let (sh, sw) = kernel == nil ? (1, 1) : strides
        let (dh, dw) = kernel == nil ? (1, 1) : dilations
        let (pt, pl, pb, pr) = kernel == nil ? (0, 0, 0, 0) : pads
        func extent(_ size: Int, _ k: Int, _ s: Int, _ d: Int, _ p0: Int, _ p1: Int) -> Int {
            let span = d * (k - 1) + 1
            let room = size + p0 + p1 - span
            guard room >= 0 else { return 0 }
            var out = (ceilMode ? (room + s - 1) / s : room / s) + 1
            // With ceil_mode, the last window must start inside the input or the left padding.
            if ceilMode && (out - 1) * s >= size + p0 { out -= 1 }
            return out
        }
        let oh = extent(h, kh, sh, dh, pt, pb)
        let ow = extent(w, kw, sw, dw, pl, pr)
        guard oh > 0 && ow > 0 else {
            throw ModelError(.layerShapeMismatch, "pooling: input \(x.shape) is smaller than one window")
        }
        let kind = self.kind
        let include = countIncludePad
        // Global pooling, or a window that covers the whole unpadded image once (the same).
        if kernel == nil || ((kh, kw) == (h, w) && (pt, pl, pb, pr) == (0, 0, 0, 0) && (dh, dw) == (1, 1)) {
            return [.float(Self.global(kind, x, planes: n * c, size: h * w).reshaped([n, c, 1, 1]))]
        }
        // Every window inside the image (no padding, no ceil overhang): no bounds checks. Max pooling
        // with padding reads a copy of each plane padded with −∞, which no window can pick.
        let inside = pt == 0 && pl == 0 && (oh - 1) * sh + dh * (kh - 1) < h && (ow - 1) * sw + dw * (kw - 1) < w
        if !inside && kind == .max {
            let ph = max(h + pt + pb, (oh - 1) * sh + dh * (kh - 1) + 1)
            let pw = max(w + pl + pr, (ow - 1) * sw + dw * (kw - 1) + 1)
            var padded = [Float](repeating: -.infinity, count: n * c * ph * pw)
            x.withUnsafeBufferPointer { xp in
                padded.withUnsafeMutableBufferPointer { pp in
                    for plane in 0..<(n * c) {
                        for r in 0..<h {
                            (pp.baseAddress! + plane * ph * pw + (r + pt) * pw + pl).update(
                                from: xp.baseAddress! + plane * h * w + r * w, count: w)
                        }
                    }
                }
            }
            let unpadded = PoolOperator(
                kind: .max, kernel: (kh, kw), strides: (sh, sw), dilations: (dh, dw), pads: (0, 0, 0, 0),
                ceilMode: false,
                countIncludePad: false)
            let result = try unpadded.run(
                NodeInputs(values: [.float(Tensor(shape: [n, c, ph, pw], elements: padded))]))
            guard result[0].shape == [n, c, oh, ow] else {
                throw ModelError(
                    .layerShapeMismatch, "pooling: padded input gave \(result[0].shape), expected \([n, c, oh, ow])")
            }
            return result
        }
        if inside && kind == .max && (kh, kw, sh, sw, dh, dw) == (2, 2, 2, 2, 1, 1) {
            return [.float(Self.maxPool2x2(x, planes: n * c, height: h, width: w, oh: oh, ow: ow))]
        }
        if inside {
            let scale = 1 / Float(kh * kw)
            return [
                .float(
                    Tensor(shape: [n, c, oh, ow]) { out in
                        x.withUnsafeBufferPointer { xp in
                            for plane in 0..<(n * c) {
                                let source = xp.baseAddress! + plane * h * w
                                let target = out.baseAddress! + plane * oh * ow
                                for r in 0..<oh {
                                    let row = target + r * ow
                                    if kind == .max {
                                        row.update(repeating: -.infinity, count: ow)
                                    } else {
                                        row.update(repeating: 0, count: ow)
                                    }
                                    for i in 0..<kh {
                                        let line = source + (r * sh + i * dh) * w
                                        for j in 0..<kw {
                                            let start = line + j * dw
                                            if kind == .max {
                                                if sw == 1 {
                                                    for col in 0..<ow { row[col] = max(row[col], start[col]) }
                                                } else {
                                                    var p = start
                                                    for col in 0..<ow {
                                                        row[col] = max(row[col], p.pointee)
                                                        p += sw
                                                    }
                                                }
                                            } else {
                                                var p = start
                                                for col in 0..<ow {
                                                    row[col] += p.pointee
                                                    p += sw
                                                }
                                            }
                                        }
                                    }
                                    if kind == .average { for col in 0..<ow { row[col] *= scale } }
                                }
                            }
                        }
                    })
            ]
        }
        let y = Tensor(shape: [n, c, oh, ow]) { out in
            x.withUnsafeBufferPointer { xp in
                for plane in 0..<(n * c) {
                    let source = plane * h * w
                    let target = plane * oh * ow
                    for r in 0..<oh {
                        for col in 0..<ow {
                            var best = -Float.infinity
                            var sum: Float = 0
                            var counted = 0
                            var padded = 0
                            for i in 0..<kh {
                                let yy = r * sh - pt + i * dh
                                for j in 0..<kw {
                                    let xx = col * sw - pl + j * dw
                                    if yy >= 0 && yy < h && xx >= 0 && xx < w {
                                        let v = xp[source + yy * w + xx]
                                        best = max(best, v)
                                        sum += v
                                        counted += 1
                                    } else if yy < h + pb && xx < w + pr {
                                        padded += 1
                                    }
                                }
                            }
                            if kind == .max {
                                out[target + r * ow + col] = best
                            } else {
                                let divisor = include ? counted + padded : counted
                                out[target + r * ow + col] = divisor > 0 ? sum / Float(divisor) : 0
                            }
                        }
                    }
                }
            }
        }
        return [.float(y)]
    }
}
