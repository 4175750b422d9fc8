import Foundation

/// The Gaussian error linear unit, element-wise: `y = x · Φ(x) = ½ x (1 + erf(x / √2))`, or with
/// `approximate: "tanh"`, `y = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (PyTorch's two variants).
///
/// - Shapes: any input `[B, …]` → output of the same shape.
/// - Accuracy: evaluated in double precision and rounded once to float32.
///
/// Description entry: `{"type": "gelu"}` or `{"type": "gelu", "approximate": "tanh"}`.
public struct GELU: Layer {
    /// Which formula to evaluate.
    public enum Approximation: String, Sendable, Equatable, CaseIterable {
        /// The exact form with `erf`.
        case none
        /// The tanh approximation used by GPT-2 and BERT.
        case tanh
    }

    /// The formula used.
    public let approximation: Approximation

    /// Creates a GELU layer.
    public init(approximation: Approximation = .none) {
        self.approximation = approximation
    }

    /// Returns `inputShape` unchanged.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] { inputShape }

    /// Applies GELU to every element, in place when the caller gave up its copy of `input`.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        var output = input
        let approximation = approximation
        output.withUnsafeMutableBufferPointer { values in
            for i in values.indices {
                let x = Double(values[i])
                switch approximation {
                case .none:
                    values[i] = Float(0.5 * x * (1 + Foundation.erf(x * 0.707_106_781_186_547_6)))
                case .tanh:
                    values[i] = Float(
                        0.5 * x * (1 + Foundation.tanh(0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x))))
                }
            }
        }
        return output
    }
}

extension GELU: DescribableLayer {
    static let typeName = "gelu"
    static let parameterNames: Set<String> = ["approximate"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        let name = try description.choice(
            "approximate", of: Approximation.allCases.map(\.rawValue), default: Approximation.none.rawValue)
        self.init(approximation: Approximation(rawValue: name)!)
    }
}
