/// The model-agnostic smoothing rule of the `nercc-ag` scheme.
///
/// A smoothing spline with the (1/n)-normalised objective acts like a kernel smoother whose
/// bandwidth is about λ^{1/4}·(local density of knots)^{−1/4} (Silverman, 1984). Over n knots on
/// [−1, 1] the spacing is of order 2/n, so λ = c·(2/n)⁴ smooths over a fixed number of neighbouring
/// knots whatever the model, the data or the scale of the outputs (λ is scale-free: multiplying the
/// values by s multiplies both terms of the objective by s²). The rule therefore depends only on
/// N, K and |F|:
///
///     λ_enc = c_enc · (2/K)⁴ ,      λ_dec = c_dec · (2/|F|)⁴ · (N / |F|)⁴ .
///
/// The extra factor (N/|F|)⁴ widens the decoder's bandwidth as stragglers thin the knots out, since
/// the missing workers make the spacing N/|F| times coarser on average. The constants were chosen on
/// synthetic smooth models (see docs/numerics.md, "The nercc-ag rule", and `nercc code demo`).
public enum AgnosticSmoothing {
    /// c_enc, the encoder's bandwidth constant.
    public static let encoderConstant = 1e-5
    /// c_dec, the decoder's bandwidth constant.
    public static let decoderConstant = 1e-5

    /// λ_enc for a batch of K queries.
    public static func encoderLambda(batchSize: Int) -> Double {
        let spacing = 2 / Double(max(batchSize, 1))
        return encoderConstant * pow4(spacing)
    }

    /// λ_dec for N workers of which `received` replied.
    public static func decoderLambda(workers: Int, received: Int) -> Double {
        let r = Double(max(received, 1))
        return decoderConstant * pow4(2 / r) * pow4(Double(workers) / r)
    }

    private static func pow4(_ x: Double) -> Double { (x * x) * (x * x) }
}
