import CKernels
import Foundation
import ONNXProto
import Testing

@testable import NeuralInference

/// Small ONNX graphs built here with the protobuf types, loaded from a file like a user's model:
/// operators checked against the native layers (independently tested against numpy) and against
/// hand computations, and the load-time refusals.
@Suite struct ONNXGraphTests {
    /// A graph builder: one float input `x` of shape [batch] + `input`, one output `y`.
    struct Graph {
        var model = Onnx_ModelProto()

        init(input: [Int], opset: Int64 = 17) {
            model.irVersion = 8
            var opsetImport = Onnx_OperatorSetIdProto()
            opsetImport.domain = ""
            opsetImport.version = opset
            model.opsetImport = [opsetImport]
            model.graph.name = "test"
            model.graph.input = [Self.valueInfo("x", dims: [nil] + input.map { Int64($0) })]
            model.graph.output = [Self.valueInfo("y", dims: [])]
        }

        static func valueInfo(_ name: String, dims: [Int64?]) -> Onnx_ValueInfoProto {
            var info = Onnx_ValueInfoProto()
            info.name = name
            var tensor = Onnx_TypeProto.Tensor()
            tensor.elemType = 1
            for d in dims {
                var dim = Onnx_TensorShapeProto.Dimension()
                if let d { dim.dimValue = d } else { dim.dimParam = "batch" }
                tensor.shape.dim.append(dim)
            }
            info.type.tensorType = tensor
            return info
        }

        mutating func initializer(_ name: String, _ shape: [Int], _ values: [Float]) {
            var t = Onnx_TensorProto()
            t.name = name
            t.dims = shape.map { Int64($0) }
            t.dataType = 1
            t.floatData = values
            model.graph.initializer.append(t)
        }

        mutating func integers(_ name: String, _ values: [Int64]) {
            var t = Onnx_TensorProto()
            t.name = name
            t.dims = [Int64(values.count)]
            t.dataType = 7
            t.int64Data = values
            model.graph.initializer.append(t)
        }

        mutating func node(
            _ op: String, _ inputs: [String], _ outputs: [String], name: String = "",
            ints: [String: [Int64]] = [:], int: [String: Int64] = [:], float: [String: Float] = [:]
        ) {
            var n = Onnx_NodeProto()
            n.opType = op
            n.name = name
            n.input = inputs
            n.output = outputs
            for (key, value) in ints.sorted(by: { $0.key < $1.key }) {
                var a = Onnx_AttributeProto()
                a.name = key
                a.type = .ints
                a.ints = value
                n.attribute.append(a)
            }
            for (key, value) in int.sorted(by: { $0.key < $1.key }) {
                var a = Onnx_AttributeProto()
                a.name = key
                a.type = .int
                a.i = value
                n.attribute.append(a)
            }
            for (key, value) in float.sorted(by: { $0.key < $1.key }) {
                var a = Onnx_AttributeProto()
                a.name = key
                a.type = .float
                a.f = value
                n.attribute.append(a)
            }
            model.graph.node.append(n)
        }

        func load(sidecar: String? = nil) throws -> ONNXModel {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            try directory.write(try model.serializedBytes() as [UInt8], to: "model.onnx")
            if let sidecar { try directory.write(sidecar, to: "model.onnx.json") }
            return try ONNXModel.load(path: directory.path("model.onnx"))
        }
    }

    /// Deterministic values in [−1, 1).
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Double(state >> 11) / Double(1 << 53) * 2 - 1)
        }
    }

    static func close(_ a: [Float], _ b: [Float], tolerance: Float = 1e-5) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= tolerance * (1 + abs($1)) }
    }

    @Test func aConvolutionMatchesTheNativeConvolutionLayer() throws {
        let (c, h, w, m) = (4, 9, 8, 6)
        let weights = Self.values(m * c * 3 * 2, seed: 1)
        let bias = Self.values(m, seed: 2)
        var graph = Graph(input: [c, h, w])
        graph.initializer("W", [m, c, 3, 2], weights)
        graph.initializer("B", [m], bias)
        graph.node(
            "Conv", ["x", "W", "B"], ["y"], name: "conv",
            ints: ["strides": [2, 1], "pads": [1, 2, 1, 2], "dilations": [1, 2]])
        let model = try graph.load()
        let x = Tensor(shape: [3, c, h, w], elements: Self.values(3 * c * h * w, seed: 3))
        let native = try Conv2D(
            weight: Tensor(shape: [m, c, 3, 2], elements: weights), bias: Tensor(shape: [m], elements: bias),
            stride: (2, 1), padding: (1, 2), dilation: (1, 2))
        let want = native(x)
        let got = try model.predict(x)
        #expect(got.shape == want.shape)
        #expect(Self.close(got.elements, want.elements))
        #expect(model.inputShape == [c, h, w] && model.outputShape == Array(want.shape.dropFirst()))
    }

    /// A convolution at stride 1 over 16 channels (one GEMM per tap over zero-padded planes, no patch matrix) with a
    /// 3×2 kernel, asymmetric padding and a bias, against the native layer on hand-padded input; at
    /// 110 samples it runs in two chunks, the second shorter.
    @Test func aStrideOneConvolutionRunsAsOneProductPerTap() throws {
        let (c, h, w, m, batch) = (16, 8, 6, 6, 110)
        let pads = [1, 0, 2, 1]  // top, left, bottom, right
        let weights = Self.values(m * c * 3 * 2, seed: 71)
        let bias = Self.values(m, seed: 72)
        var graph = Graph(input: [c, h, w])
        graph.initializer("W", [m, c, 3, 2], weights)
        graph.initializer("B", [m], bias)
        graph.node("Conv", ["x", "W", "B"], ["y"], ints: ["pads": pads.map(Int64.init)])
        let model = try graph.load()
        let x = Tensor(shape: [batch, c, h, w], elements: Self.values(batch * c * h * w, seed: 73))
        let got = try model.predict(x)
        let (ph, pw) = (h + pads[0] + pads[2], w + pads[1] + pads[3])
        var padded = [Float](repeating: 0, count: batch * c * ph * pw)
        for plane in 0..<(batch * c) {
            for r in 0..<h {
                for col in 0..<w {
                    padded[(plane * ph + r + pads[0]) * pw + col + pads[1]] = x.elements[(plane * h + r) * w + col]
                }
            }
        }
        let native = try Conv2D(
            weight: Tensor(shape: [m, c, 3, 2], elements: weights), bias: Tensor(shape: [m], elements: bias))
        let want = native(Tensor(shape: [batch, c, ph, pw], elements: padded))
        #expect(got.shape == want.shape)
        #expect(Self.close(got.elements, want.elements))
    }

    /// Convolutions over inputs with no more positions than taps run as one dense matrix built at
    /// load (``ConvOperator/Unrolled``): 2×2 and 1×1 planes (ResNet-18's deep layers at 32×32), a
    /// stride of 2, asymmetric padding with a dilation, and a fused Relu, each against a direct
    /// loop over the window; a 4×4 plane under a 3×3 window is not unrolled.
    @Test(arguments: [
        (2, 2, 3, 3, [1, 1, 1, 1], (1, 1), (1, 1)),
        (1, 1, 3, 3, [1, 1, 1, 1], (1, 1), (1, 1)),
        (2, 2, 3, 3, [1, 1, 1, 1], (2, 2), (1, 1)),
        (3, 3, 3, 3, [2, 1, 0, 2], (1, 2), (2, 1)),
    ])
    func smallInputsRunAsOneDenseMatrix(
        h: Int, w: Int, kh: Int, kw: Int, pads: [Int], strides: (Int, Int), dilations: (Int, Int)
    ) throws {
        let (c, m, batch) = (5, 7, 9)
        let weights = Self.values(m * c * kh * kw, seed: 81)
        let bias = Self.values(m, seed: 82)
        var graph = Graph(input: [c, h, w])
        graph.initializer("W", [m, c, kh, kw], weights)
        graph.initializer("B", [m], bias)
        graph.node(
            "Conv", ["x", "W", "B"], ["z"],
            ints: [
                "pads": pads.map(Int64.init), "strides": [Int64(strides.0), Int64(strides.1)],
                "dilations": [Int64(dilations.0), Int64(dilations.1)],
            ])
        graph.node("Relu", ["z"], ["y"])
        let model = try graph.load()
        #expect(model.nodes.count == 1 && (model.nodes[0].op as? ConvOperator)?.unrolled != nil)
        let x = Tensor(shape: [batch, c, h, w], elements: Self.values(batch * c * h * w, seed: 83))
        let got = try model.predict(x)
        let (want, oh, ow) = Self.directConvolution(
            x, weights: weights, bias: bias, outChannels: m, kernel: (kh, kw), pads: pads, strides: strides,
            dilations: dilations)
        #expect(got.shape == [batch, m, oh, ow])
        #expect(Self.close(got.elements, want.map { max($0, 0) }))
    }

    /// A convolution by its definition (one group): every output position sums its window's products
    /// over the input positions inside the image. Returns the outputs and their plane's extents.
    static func directConvolution(
        _ x: Tensor, weights: [Float], bias: [Float], outChannels m: Int, kernel: (Int, Int), pads: [Int],
        strides: (Int, Int), dilations: (Int, Int)
    ) -> (values: [Float], oh: Int, ow: Int) {
        let (batch, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw) = kernel
        let oh = (h + pads[0] + pads[2] - dilations.0 * (kh - 1) - 1) / strides.0 + 1
        let ow = (w + pads[1] + pads[3] - dilations.1 * (kw - 1) - 1) / strides.1 + 1
        var want = [Float](repeating: 0, count: batch * m * oh * ow)
        let elements = x.elements
        for s in 0..<batch {
            for o in 0..<m {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var sum = bias[o]
                        for ch in 0..<c {
                            for i in 0..<kh {
                                for j in 0..<kw {
                                    let iy = oy * strides.0 - pads[0] + i * dilations.0
                                    let ix = ox * strides.1 - pads[1] + j * dilations.1
                                    guard (0..<h).contains(iy), (0..<w).contains(ix) else { continue }
                                    sum +=
                                        weights[((o * c + ch) * kh + i) * kw + j]
                                        * elements[((s * c + ch) * h + iy) * w + ix]
                                }
                            }
                        }
                        want[((s * m + o) * oh + oy) * ow + ox] = sum
                    }
                }
            }
        }
        return (want, oh, ow)
    }

    /// 3×3 convolutions at stride 1 over at least 16 channels run by Winograd's F(2×2, 3×3) with
    /// weights transformed at load: against the definition, with odd output extents (partial tiles),
    /// asymmetric padding, 8 and 12 output channels (a whole and a short block), a fused Relu, 50
    /// samples (two chunks), and with the CPU's kernels then the baseline ones.
    @Test(arguments: [(16, 8, 5, 7, [1, 1, 1, 1]), (20, 12, 6, 5, [1, 0, 2, 1]), (16, 8, 4, 4, [0, 0, 0, 0])])
    func threeByThreeConvolutionsRunByWinograd(shape: (Int, Int, Int, Int, [Int])) throws {
        let (c, m, h, w, pads) = shape
        let batch = 50
        let weights = Self.values(m * c * 9, seed: 91)
        let bias = Self.values(m, seed: 92)
        var graph = Graph(input: [c, h, w])
        graph.initializer("W", [m, c, 3, 3], weights)
        graph.initializer("B", [m], bias)
        graph.node("Conv", ["x", "W", "B"], ["z"], ints: ["pads": pads.map(Int64.init)])
        graph.node("Relu", ["z"], ["y"])
        let model = try graph.load()
        #expect(model.nodes.count == 1 && (model.nodes[0].op as? ConvOperator)?.winograd != nil)
        let x = Tensor(shape: [batch, c, h, w], elements: Self.values(batch * c * h * w, seed: 93))
        let (want, oh, ow) = Self.directConvolution(
            x, weights: weights, bias: bias, outChannels: m, kernel: (3, 3), pads: pads, strides: (1, 1),
            dilations: (1, 1))
        for baseline in [false, true] {
            nercc_kernels_force_baseline(baseline ? 1 : 0)
            defer { nercc_kernels_force_baseline(0) }
            let got = try model.predict(x)
            #expect(got.shape == [batch, m, oh, ow])
            #expect(Self.close(got.elements, want.map { max($0, 0) }, tolerance: 1e-4), "baseline: \(baseline)")
        }
    }

    @Test func aWindowSmallerThanItsPlaneIsNotUnrolled() throws {
        var graph = Graph(input: [3, 4, 4])
        graph.initializer("W", [2, 3, 3, 3], Self.values(54, seed: 84))
        graph.node("Conv", ["x", "W"], ["y"], ints: ["pads": [1, 1, 1, 1]])
        let model = try graph.load()
        #expect((model.nodes[0].op as? ConvOperator).map { $0.unrolled == nil } == true)
    }

    /// A 1×1 convolution at stride 1 without padding (read in place, one GEMM per sample and group),
    /// with one group and with two, against the native layer per group, with a bias and a fused Relu.
    @Test(arguments: [1, 2])
    func pointwiseConvolutionsMatchTheNativeLayer(groups: Int) throws {
        let (c, h, w, m) = (6, 5, 7, 4)
        let (perGroup, outPerGroup) = (c / groups, m / groups)
        let weights = Self.values(m * perGroup, seed: 11)
        let bias = Self.values(m, seed: 12)
        var graph = Graph(input: [c, h, w])
        graph.initializer("W", [m, perGroup, 1, 1], weights)
        graph.initializer("B", [m], bias)
        graph.node("Conv", ["x", "W", "B"], ["z"], int: ["group": Int64(groups)])
        graph.node("Relu", ["z"], ["y"])
        let model = try graph.load()
        let x = Tensor(shape: [3, c, h, w], elements: Self.values(3 * c * h * w, seed: 13))
        let got = try model.predict(x)
        #expect(got.shape == [3, m, h, w])
        let plane = h * w
        for g in 0..<groups {
            let conv = try Conv2D(
                weight: Tensor(
                    shape: [outPerGroup, perGroup, 1, 1],
                    elements: Array(weights[(g * outPerGroup * perGroup)..<((g + 1) * outPerGroup * perGroup)])),
                bias: Tensor(shape: [outPerGroup], elements: Array(bias[(g * outPerGroup)..<((g + 1) * outPerGroup)])))
            for s in 0..<3 {
                let part = Array(x.elements[((s * c + g * perGroup) * plane)..<((s * c + (g + 1) * perGroup) * plane)])
                let want = conv(Tensor(shape: [1, perGroup, h, w], elements: part)).elements.map { max($0, 0) }
                let start = (s * m + g * outPerGroup) * plane
                #expect(Self.close(Array(got.elements[start..<(start + want.count)]), want), "group \(g) sample \(s)")
            }
        }
    }

    /// Two groups, and depthwise (one channel per group), against per-group native convolutions.
    @Test(arguments: [2, 4])
    func groupedConvolutionsMatchOneConvolutionPerGroup(groups: Int) throws {
        let (c, h, w) = (4, 7, 6)
        let m = groups == 4 ? 4 : 6
        let perGroup = c / groups
        let weights = Self.values(m * perGroup * 9, seed: 5)
        var graph = Graph(input: [c, h, w])
        graph.initializer("W", [m, perGroup, 3, 3], weights)
        graph.node(
            "Conv", ["x", "W"], ["y"], ints: ["pads": [1, 1, 1, 1], "strides": [1, 2]], int: ["group": Int64(groups)])
        let model = try graph.load()
        let x = Tensor(shape: [2, c, h, w], elements: Self.values(2 * c * h * w, seed: 6))
        let got = try model.predict(x)
        let outPerGroup = m / groups
        for g in 0..<groups {
            let conv = try Conv2D(
                weight: Tensor(
                    shape: [outPerGroup, perGroup, 3, 3],
                    elements: Array(weights[(g * outPerGroup * perGroup * 9)..<((g + 1) * outPerGroup * perGroup * 9)])),
                stride: (1, 2), padding: (1, 1))
            for s in 0..<2 {
                let plane = h * w
                let part = Array(x.elements[((s * c + g * perGroup) * plane)..<((s * c + (g + 1) * perGroup) * plane)])
                let want = conv(Tensor(shape: [1, perGroup, h, w], elements: part))
                let positions = want.count / outPerGroup
                let start = (s * m + g * outPerGroup) * positions
                #expect(
                    Self.close(Array(got.elements[start..<(start + want.count)]), want.elements),
                    "group \(g) sample \(s)")
            }
        }
    }

    /// The rational erf that Erf and exact Gelu use, against libm's double-precision erf on a dense
    /// grid: within 5·10⁻⁷ everywhere, odd, and ±1 far out.
    @Test func fastErfMatchesLibm() {
        var worst = 0.0
        var odd = true
        for step in -80_000...80_000 {
            let x = Float(Double(step) * 1e-4)
            worst = max(worst, abs(Double(fastErf(x)) - Foundation.erf(Double(x))))
            odd = odd && fastErf(-x) == -fastErf(x)
        }
        #expect(worst < 5e-7, "largest error \(worst)")
        #expect(odd)
        #expect(abs(fastErf(30) - 1) < 1e-6 && abs(fastErf(-.greatestFiniteMagnitude) + 1) < 1e-6)
    }

    /// Add(MatMul(x, W), b) with constant W [K, N] and b [N] — a Linear layer on [B, T, K] as PyTorch
    /// exports it — runs as one node that starts from the bias rows, with the product on either side
    /// of the Add; a bias of another shape is left to the Add.
    @Test(arguments: [true, false])
    func aBiasAddFollowingAMatMulIsFoldedIntoIt(productFirst: Bool) throws {
        let (t, k, n, batch) = (3, 4, 5, 2)
        let w = Self.values(k * n, seed: 41)
        let b = Self.values(n, seed: 42)
        var graph = Graph(input: [t, k])
        graph.initializer("W", [k, n], w)
        graph.initializer("b", [n], b)
        graph.node("MatMul", ["x", "W"], ["p"], name: "linear")
        graph.node("Add", productFirst ? ["p", "b"] : ["b", "p"], ["y"], name: "bias")
        let model = try graph.load()
        let x = Self.values(batch * t * k, seed: 43)
        let got = try model.predict(Tensor(shape: [batch, t, k], elements: x))
        var want: [Float] = []
        for row in 0..<(batch * t) {
            for column in 0..<n {
                want.append((0..<k).reduce(b[column]) { $0 + x[row * k + $1] * w[$1 * n + column] })
            }
        }
        #expect(got.shape == [batch, t, n])
        #expect(Self.close(got.elements, want))
        let nodes = try model.profile(Tensor(shape: [1, t, k], elements: Array(x.prefix(t * k))), repetitions: 1)
        #expect(nodes.map(\.label) == ["node 'linear' (MatMul) + node 'bias' (Add)"])
    }

    /// LayerNormalization over the last axis with and without scale and bias, and Softmax over the
    /// last axis (contiguous rows) and over a middle one, against direct double-precision loops.
    @Test func layerNormalizationAndSoftmaxMatchDirectLoops() throws {
        let (t, d, batch) = (3, 11, 2)
        let x = Self.values(batch * t * d, seed: 51).map { $0 * 3 + 0.5 }
        let gamma = Self.values(d, seed: 52)
        let beta = Self.values(d, seed: 53)
        let rows = (0..<(batch * t)).map { Array(x[($0 * d)..<(($0 + 1) * d)]).map(Double.init) }
        func normalized(_ row: [Double]) -> [Double] {
            let mean = row.reduce(0, +) / Double(d)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d)
            return row.map { ($0 - mean) / (variance + 1e-5).squareRoot() }
        }
        for withParameters in [true, false] {
            var graph = Graph(input: [t, d])
            graph.initializer("g", [d], gamma)
            graph.initializer("b", [d], beta)
            graph.node(
                "LayerNormalization", withParameters ? ["x", "g", "b"] : ["x"], ["y"], int: ["axis": -1],
                float: ["epsilon": 1e-5])
            let got = try graph.load().predict(Tensor(shape: [batch, t, d], elements: x))
            let want = rows.flatMap { row in
                normalized(row).enumerated().map { j, v in
                    Float(withParameters ? v * Double(gamma[j]) + Double(beta[j]) : v)
                }
            }
            #expect(Self.close(got.elements, want), "with scale and bias: \(withParameters)")
        }
        for axis in [2, 1] {
            var graph = Graph(input: [t, d])
            graph.node("Softmax", ["x"], ["y"], int: ["axis": Int64(axis)])
            let got = try graph.load().predict(Tensor(shape: [batch, t, d], elements: x))
            var want = [Float](repeating: 0, count: x.count)
            let (n, inner) = axis == 2 ? (d, 1) : (t, d)
            for s in 0..<batch {
                for i in 0..<(axis == 2 ? t : d) {
                    let base = axis == 2 ? (s * t + i) * d : s * t * d + i
                    let values = (0..<n).map { Double(x[base + $0 * inner]) }
                    let top = values.max()!
                    let total = values.map { Foundation.exp($0 - top) }.reduce(0, +)
                    for k in 0..<n { want[base + k * inner] = Float(Foundation.exp(values[k] - top) / total) }
                }
            }
            #expect(Self.close(got.elements, want), "axis \(axis)")
        }
    }

    /// Pad with positive pads (a constant fill) and negative ones (a crop) on every axis, against
    /// an element-by-element reference.
    @Test func padShiftsAndCropsEveryAxis() throws {
        let (c, h, w, batch) = (2, 3, 5, 2)
        let x = Self.values(batch * c * h * w, seed: 61)
        // Begin and end per axis [N, C, H, W]: no pad on the batch, grow C, crop-and-grow H and W.
        let pads: [Int64] = [0, 1, -1, 2, 0, 0, 1, -2]
        var graph = Graph(input: [c, h, w])
        graph.integers("pads", pads)
        graph.initializer("fill", [], [7])
        graph.node("Pad", ["x", "pads", "fill"], ["y"])
        let got = try graph.load().predict(Tensor(shape: [batch, c, h, w], elements: x))
        let begin = pads[0..<4].map(Int.init)
        let shape = [batch, c, h, w].enumerated().map { $1 + Int(pads[$0]) + Int(pads[$0 + 4]) }
        #expect(got.shape == shape)
        var want: [Float] = []
        for n in 0..<shape[0] {
            for ch in 0..<shape[1] {
                for r in 0..<shape[2] {
                    for col in 0..<shape[3] {
                        let (i, j, k, l) = (n - begin[0], ch - begin[1], r - begin[2], col - begin[3])
                        let inside =
                            (0..<batch).contains(i) && (0..<c).contains(j) && (0..<h).contains(k)
                            && (0..<w).contains(l)
                        want.append(inside ? x[((i * c + j) * h + k) * w + l] : 7)
                    }
                }
            }
        }
        #expect(got.elements == want)
    }

    /// The exp that Softmax, Sigmoid and Exp use, against libm's double-precision exp: within one
    /// float ulp over [−87, 88], and clamped (never 0, never ∞) outside.
    @Test func fastExpMatchesLibm() {
        var worst = 0.0
        for step in -87_000...88_000 {
            let x = Float(Double(step) * 1e-3)
            let exact = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(fastExp(x)) - exact) / exact)
        }
        #expect(worst < 1.2e-7, "largest relative error \(worst)")
        #expect(fastExp(0) == 1)
        #expect(fastExp(-1_000) > 0 && fastExp(-1_000) <= Float.leastNormalMagnitude * 1.0001)
        #expect(fastExp(1_000).isFinite)
    }

    /// A Clip fused into a depthwise convolution is applied by the kernel as it writes the planes
    /// (with the bias): the same values as the convolution alone, clamped; with the CPU's kernels,
    /// then with the baseline ones (one after the other, in one test, since the choice is global).
    @Test func aFusedClipIsAppliedByTheDepthwiseKernelInBothInstructionSets() throws {
        let (c, h, w, batch) = (11, 12, 17, 3)
        func model(clipped: Bool) throws -> ONNXModel {
            var graph = Graph(input: [c, h, w])
            graph.initializer("W", [c, 1, 3, 3], Self.values(c * 9, seed: 31))
            graph.initializer("B", [c], Self.values(c, seed: 32))
            graph.initializer("lo", [], [-0.25])
            graph.initializer("hi", [], [0.5])
            let output = clipped ? "z" : "y"
            graph.node(
                "Conv", ["x", "W", "B"], [output], ints: ["pads": [1, 0, 1, 2], "strides": [2, 1]],
                int: ["group": Int64(c)])
            if clipped { graph.node("Clip", ["z", "lo", "hi"], ["y"]) }
            return try graph.load()
        }
        let x = Tensor(shape: [batch, c, h, w], elements: Self.values(batch * c * h * w, seed: 33))
        let (clipped, plain) = (try model(clipped: true), try model(clipped: false))
        #expect(clipped.nodes.count == 1)
        for baseline in [false, true] {
            nercc_kernels_force_baseline(baseline ? 1 : 0)
            defer { nercc_kernels_force_baseline(0) }
            let want = try plain.predict(x).elements.map { min(max($0, -0.25), 0.5) }
            #expect(Self.close(try clipped.predict(x).elements, want), "baseline: \(baseline)")
        }
    }

    /// Depthwise convolutions (the channels-last C kernel) against one native convolution per
    /// channel: at stride 1, strided and dilated, with asymmetric padding, a bias and kernels of 3×3
    /// and 5×3; over 3 channels (one short block of eight), 8 (one whole block) and 11 (a whole block
    /// and a short one); on planes 9×7, whose rows are shorter than one transposed block of eight
    /// columns, and 12×17, whose rows span three.
    @Test(
        arguments: [
            (kernel: [3, 3], strides: [1, 1], dilations: [1, 1], pads: [1, 2, 0, 1]),
            (kernel: [5, 3], strides: [1, 1], dilations: [1, 1], pads: [2, 1, 2, 1]),
            (kernel: [3, 3], strides: [2, 2], dilations: [1, 1], pads: [1, 1, 1, 1]),
            (kernel: [3, 3], strides: [1, 1], dilations: [2, 1], pads: [2, 1, 2, 1]),
        ], [(3, 9, 7), (8, 12, 17), (11, 9, 7), (11, 12, 17)])
    func depthwiseConvolutionsMatchOneConvolutionPerChannel(
        window: (kernel: [Int], strides: [Int], dilations: [Int], pads: [Int]), planes: (Int, Int, Int)
    ) throws {
        let (kernel, strides, dilations, pads) = window
        let (c, h, w) = planes
        let batch = 4
        let (kh, kw) = (kernel[0], kernel[1])
        let weights = Self.values(c * kh * kw, seed: 21)
        let bias = Self.values(c, seed: 22)
        var graph = Graph(input: [c, h, w])
        graph.initializer("W", [c, 1, kh, kw], weights)
        graph.initializer("B", [c], bias)
        graph.node(
            "Conv", ["x", "W", "B"], ["y"],
            ints: [
                "strides": strides.map(Int64.init), "dilations": dilations.map(Int64.init),
                "pads": pads.map(Int64.init),
            ],
            int: ["group": Int64(c)])
        let model = try graph.load()
        let x = Tensor(shape: [batch, c, h, w], elements: Self.values(batch * c * h * w, seed: 23))
        let got = try model.predict(x)
        let plane = h * w
        for ch in 0..<c {
            // The native layer takes symmetric padding: pad the input by hand for the asymmetric part.
            let conv = try Conv2D(
                weight: Tensor(shape: [1, 1, kh, kw], elements: Array(weights[(ch * kh * kw)..<((ch + 1) * kh * kw)])),
                bias: Tensor(shape: [1], elements: [bias[ch]]), stride: (strides[0], strides[1]),
                dilation: (dilations[0], dilations[1]))
            let (ph, pw) = (h + pads[0] + pads[2], w + pads[1] + pads[3])
            for s in 0..<batch {
                var padded = [Float](repeating: 0, count: ph * pw)
                for r in 0..<h {
                    for col in 0..<w {
                        padded[(r + pads[0]) * pw + col + pads[1]] = x.elements[(s * c + ch) * plane + r * w + col]
                    }
                }
                let want = conv(Tensor(shape: [1, 1, ph, pw], elements: padded))
                let outPlane = want.count
                #expect(got.shape == [batch, c] + Array(want.shape.suffix(2)))
                let start = (s * c + ch) * outPlane
                #expect(
                    Self.close(Array(got.elements[start..<(start + outPlane)]), want.elements),
                    "channel \(ch) sample \(s)")
            }
        }
    }

    /// Global pooling, an AveragePool whose window is the whole image (the same), and the 2×2
    /// stride-2 MaxPool fast path, against direct loops.
    @Test func poolingFastPathsMatchDirectLoops() throws {
        let (c, h, w, batch) = (3, 6, 8, 2)
        let x = Tensor(shape: [batch, c, h, w], elements: Self.values(batch * c * h * w, seed: 31))
        func plane(_ s: Int, _ ch: Int) -> ArraySlice<Float> {
            x.elements[((s * c + ch) * h * w)..<((s * c + ch + 1) * h * w)]
        }
        let planes = (0..<batch).flatMap { s in (0..<c).map { ch in plane(s, ch) } }
        let means = planes.map { $0.reduce(0, +) / Float(h * w) }
        let maxima = planes.map { $0.max()! }
        for (op, attributes, want) in [
            ("GlobalAveragePool", [String: [Int64]](), means),
            ("GlobalMaxPool", [:], maxima),
            ("AveragePool", ["kernel_shape": [Int64(h), Int64(w)], "strides": [Int64(h), Int64(w)]], means),
            ("MaxPool", ["kernel_shape": [Int64(h), Int64(w)]], maxima),
        ] {
            var graph = Graph(input: [c, h, w])
            graph.node(op, ["x"], ["y"], ints: attributes)
            let got = try graph.load().predict(x)
            #expect(got.shape == [batch, c, 1, 1], "\(op)")
            #expect(Self.close(got.elements, want), "\(op)")
        }
        var graph = Graph(input: [c, h, w])
        graph.node("MaxPool", ["x"], ["y"], ints: ["kernel_shape": [2, 2], "strides": [2, 2]])
        let got = try graph.load().predict(x)
        #expect(got.shape == [batch, c, h / 2, w / 2])
        var want: [Float] = []
        for s in 0..<batch {
            for ch in 0..<c {
                let p = Array(plane(s, ch))
                for r in 0..<(h / 2) {
                    for col in 0..<(w / 2) {
                        want.append(
                            [
                                p[2 * r * w + 2 * col], p[2 * r * w + 2 * col + 1], p[(2 * r + 1) * w + 2 * col],
                                p[(2 * r + 1) * w + 2 * col + 1],
                            ].max()!)
                    }
                }
            }
        }
        #expect(got.elements == want)
    }

    /// A flatten written as torch exports it for a dynamic batch (Shape → Gather → Unsqueeze →
    /// Concat → Reshape), then Gemm with a transposed weight, Relu and Softmax.
    @Test func aDynamicBatchReshapeChainRunsForEveryBatchSize() throws {
        var graph = Graph(input: [2, 3])
        graph.integers("zero", [0])
        graph.integers("minus", [-1])
        graph.initializer("W", [4, 6], Self.values(24, seed: 7))
        graph.initializer("b", [4], [0.1, -0.2, 0.3, 0])
        graph.node("Shape", ["x"], ["shape"])
        graph.node("Gather", ["shape", "zero"], ["batch"], int: ["axis": 0])
        graph.node("Concat", ["batch", "minus"], ["target"], int: ["axis": 0])
        graph.node("Reshape", ["x", "target"], ["flat"])
        graph.node("Gemm", ["flat", "W", "b"], ["z"], int: ["transB": 1])
        graph.node("Relu", ["z"], ["r"])
        graph.node("Softmax", ["r"], ["y"], int: ["axis": -1])
        let model = try graph.load(
            sidecar: #"{"name": "tiny", "output": "probabilities", "labels": ["a", "b", "c", "d"]}"#)
        #expect(model.name == "tiny" && model.outputKind == .probabilities && model.labels?.count == 4)
        #expect(model.outputShape == [4])
        let w = Self.values(24, seed: 7)
        for batch in [1, 5] {
            let x = Self.values(batch * 6, seed: UInt64(10 + batch))
            let got = try model.predict(flatRows: x, count: batch)
            for s in 0..<batch {
                var z = (0..<4).map { o in
                    max(0, (0..<6).reduce([0.1, -0.2, 0.3, 0][o] as Float) { $0 + w[o * 6 + $1] * x[s * 6 + $1] })
                }
                let top = z.max()!
                z = z.map { exp($0 - top) }
                let sum = z.reduce(0, +)
                #expect(Self.close(Array(got[(s * 4)..<(s * 4 + 4)]), z.map { $0 / sum }))
            }
        }
    }

    @Test func sliceTransposeAndGatherFollowNumpy() throws {
        var graph = Graph(input: [3, 4])
        graph.integers("starts", [-1, 0])
        graph.integers("ends", [-100, 4])
        graph.integers("axes", [1, 2])
        graph.integers("steps", [-2, 3])
        graph.integers("pick", [1, 0])
        graph.node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"])  // x[:, ::-2, 0:4:3] → [B, 2, 2]
        graph.node("Transpose", ["s"], ["t"], ints: ["perm": [0, 2, 1]])
        graph.node("Gather", ["t", "pick"], ["y"], int: ["axis": 2])
        let model = try graph.load()
        let x = (0..<12).map(Float.init)
        let got = try model.predict(flatRows: x, count: 1)
        // s = [[x[2,0], x[2,3]], [x[0,0], x[0,3]]] = [[8, 11], [0, 3]]; t = [[8, 0], [11, 3]];
        // gather columns [1, 0] → [[0, 8], [3, 11]].
        #expect(got == [0, 8, 3, 11])
    }

    @Test func anUnsupportedOperatorFailsAtLoadNamingTheOperatorTheNodeAndTheOpset() throws {
        var graph = Graph(input: [4])
        graph.node("Relu", ["x"], ["a"])
        graph.node("NonMaxSuppression", ["a"], ["b"], name: "boxes")
        graph.node("TopK", ["b"], ["y"], name: "best")
        let error = #expect(throws: ModelError.self) { try graph.load() }
        #expect(error?.code == .unsupportedOperator)
        let message = error?.message ?? ""
        #expect(message.contains("operator 'NonMaxSuppression'") && message.contains("node 'boxes'"))
        #expect(message.contains("opset 17") && message.contains("1 more node(s)") && message.contains("TopK"))
        #expect(!message.contains("\n"))
    }

    @Test func loadRefusesWhatItCannotRun() throws {
        var old = Graph(input: [4], opset: 9)
        old.node("Relu", ["x"], ["y"])
        #expect((#expect(throws: ModelError.self) { try old.load() })?.message.contains("opset 9") == true)

        var dangling = Graph(input: [4])
        dangling.node("Add", ["x", "nowhere"], ["y"], name: "add")
        let missing = #expect(throws: ModelError.self) { try dangling.load() }
        #expect(missing?.code == .invalidONNX && missing?.message.contains("'nowhere'") == true)

        var training = Graph(input: [2, 3, 3])
        for name in ["s", "b", "m", "v"] { training.initializer(name, [2], [1, 1]) }
        training.node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name: "bn", int: ["training_mode": 1])
        let bn = #expect(throws: ModelError.self) { try training.load() }
        #expect(bn?.code == .invalidLayerParameter && bn?.message.contains("node 'bn'") == true)

        var fixed = Graph(input: [4])
        fixed.integers("shape", [1, 4])
        fixed.node("Reshape", ["x", "shape"], ["y"])
        let batch = #expect(throws: ModelError.self) { try fixed.load() }
        #expect(batch?.message.contains("dynamic batch axis") == true)

        var relu = Graph(input: [4])
        relu.node("Relu", ["x"], ["y"])
        let sidecar = #expect(throws: ModelError.self) { try relu.load(sidecar: #"{"nmae": "typo"}"#) }
        #expect(sidecar?.code == .invalidDescription && sidecar?.message.contains("nmae") == true)

        let garbage = try TemporaryDirectory()
        defer { garbage.remove() }
        try garbage.write("not a model", to: "model.onnx")
        #expect(
            (#expect(throws: ModelError.self) { try ONNXModel.load(path: garbage.path("model.onnx")) })?.code
                == .invalidONNX)
    }

    @Test func externalDataLoadsFromBesideTheModelAndNeverFromOutside() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var graph = Graph(input: [3])
        var weight = Onnx_TensorProto()
        weight.name = "k"
        weight.dims = [3]
        weight.dataType = 1
        weight.dataLocation = .external
        for (key, value) in [("location", "weights.bin"), ("offset", "4"), ("length", "12")] {
            var entry = Onnx_StringStringEntryProto()
            entry.key = key
            entry.value = value
            weight.externalData.append(entry)
        }
        graph.model.graph.initializer.append(weight)
        graph.node("Mul", ["x", "k"], ["y"])
        var bytes: [UInt8] = [0, 0, 0, 0]
        for v: Float in [2, -1, 0.5] { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        try directory.write(bytes, to: "weights.bin")
        try directory.write(try graph.model.serializedBytes() as [UInt8], to: "model.onnx")
        let model = try ONNXModel.load(path: directory.path("model.onnx"))
        #expect(try model.predict(flatRows: [1, 2, 3], count: 1) == [2, -2, 1.5])

        graph.model.graph.initializer[0].externalData[0].value = "../weights.bin"
        try directory.write(try graph.model.serializedBytes() as [UInt8], to: "model.onnx")
        let outside = #expect(throws: ModelError.self) { try ONNXModel.load(path: directory.path("model.onnx")) }
        #expect(outside?.message.contains("outside the model's directory") == true)
    }
}
