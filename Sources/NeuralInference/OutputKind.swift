/// What a model's output values mean.
public enum OutputKind: String, Sendable, Equatable, CaseIterable {
    /// Unnormalised class scores; apply ``Softmax`` for probabilities.
    case logits
    /// Class probabilities (the model ends with a softmax).
    case probabilities
    /// Anything else (regression outputs, embeddings, …).
    case values
}
