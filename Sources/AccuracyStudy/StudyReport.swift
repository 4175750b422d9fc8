import Foundation

/// Tables and plots of study results.
public enum StudyReport {
    /// CSV with one row per (model, scheme, N, K, S).
    public static func csv(_ results: [StudyResult]) -> String {
        var lines = [
            "model,scheme,N,K,S,trials,undecodable,logit_mse_mean,logit_mse_std,softmax_mse_mean,softmax_mse_std,"
                + "relative_accuracy_mean,relative_accuracy_std,label_accuracy_mean,label_accuracy_std,uncoded_label_accuracy"
        ]
        for r in results {
            let cells: [String] = [
                r.model, "\"\(r.scheme)\"", "\(r.setting.workers)", "\(r.setting.batchSize)", "\(r.setting.stragglers)",
                "\(r.trials)", "\(r.undecodable)", "\(r.logitMSE.mean)", "\(r.logitMSE.standardDeviation)",
                "\(r.softmaxMSE.mean)", "\(r.softmaxMSE.standardDeviation)", "\(r.relativeAccuracy.mean)",
                "\(r.relativeAccuracy.standardDeviation)", "\(r.labelAccuracy.mean)",
                "\(r.labelAccuracy.standardDeviation)", "\(r.uncodedLabelAccuracy.mean)",
            ]
            lines.append(cells.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// An SVG line chart of one metric against the straggler share, one line per scheme, for one
    /// model and one (N, K).
    ///
    /// With `logScale` (for MSE) the axis spans whole decades from a decade below the smallest
    /// positive value up to at most ``logCeiling``: exact reconstructions (MSE 0, uncoded and
    /// replication) lie on the bottom edge, labelled 0, and values above the ceiling (LCC blowing up)
    /// on the top edge, labelled "≥ 1e4". Lines differ in colour and, past ten schemes, in dash pattern.
    public static func svg(
        _ results: [StudyResult], model: String, workers: Int, batchSize: Int, metric: String, logScale: Bool,
        value: (StudyResult) -> Double
    ) -> String {
        let rows = results.filter {
            $0.model == model && $0.setting.workers == workers && $0.setting.batchSize == batchSize
        }
        let schemes = Array(Set(rows.map(\.scheme))).sorted()
        let width = 640.0
        let height = 400.0
        let left = 70.0
        let right = 170.0
        let top = 40.0
        let bottom = 50.0
        let xs = rows.map { 100 * Double($0.setting.stragglers) / Double(workers) }
        let xMax = max(xs.max() ?? 1, 1)
        let values = rows.map(value).filter(\.isFinite)
        var yMin: Double
        var yMax: Double
        if logScale {
            let positive = values.filter { $0 > 0 }.map(log10)
            yMin = ((positive.min() ?? -1).rounded(.down)) - 1
            yMax = min((positive.max() ?? 0).rounded(.up), logCeiling)
        } else {
            yMin = values.min() ?? 0
            yMax = values.max() ?? 1
        }
        if yMax - yMin < 1e-9 {
            yMin -= 0.5
            yMax += 0.5
        }
        func transform(_ v: Double) -> Double? {
            guard v.isFinite || (logScale && v == .infinity) else { return nil }
            guard logScale else { return v }
            return v <= 0 ? yMin : min(log10(v), yMax)
        }
        func px(_ x: Double) -> Double { left + (width - left - right) * x / xMax }
        func py(_ y: Double) -> Double { top + (height - top - bottom) * (1 - (y - yMin) / (yMax - yMin)) }
        let colors = [
            "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
            "#bcbd22",
        ]
        var svg = [
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">",
            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            "<text x=\"\(Int(width / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(model): \(metric), N=\(workers), K=\(batchSize)</text>",
            "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"black\"/>",
            "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>",
            "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">stragglers (% of N)</text>",
        ]
        let ticks: [Double]
        if logScale {
            // Whole decades down from the top, every `step` decades, and always the bottom (0).
            let step = max(1, ((yMax - yMin) / 6).rounded(.up))
            ticks = Array(stride(from: yMax, to: yMin + 0.5, by: -step)) + [yMin]
        } else {
            ticks = (0...4).map { yMin + (yMax - yMin) * Double($0) / 4 }
        }
        for y in ticks {
            let label: String
            if logScale {
                label = y == yMin ? "0" : (y == logCeiling ? "≥ 1e\(Int(y))" : "1e\(Int(y))")
            } else {
                label = String(format: "%.3g", y)
            }
            svg.append("<text x=\"\(left - 6)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(label)</text>")
            svg.append("<line x1=\"\(left)\" y1=\"\(py(y))\" x2=\"\(width - right)\" y2=\"\(py(y))\" stroke=\"#ddd\"/>")
        }
        for x in Set(xs).sorted() {
            svg.append(
                "<text x=\"\(px(x))\" y=\"\(height - bottom + 16)\" text-anchor=\"middle\">\(Int(x.rounded()))</text>")
        }
        for (i, scheme) in schemes.enumerated() {
            let color = colors[i % colors.count]
            let dash = i < colors.count ? "" : " stroke-dasharray=\"6 3\""
            let points = rows.filter { $0.scheme == scheme }.sorted { $0.setting.stragglers < $1.setting.stragglers }
                .compactMap { r -> String? in
                    guard let y = transform(value(r)) else { return nil }
                    return "\(px(100 * Double(r.setting.stragglers) / Double(workers))),\(py(min(max(y, yMin), yMax)))"
                }
            svg.append(
                "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(dash) points=\"\(points.joined(separator: " "))\"/>"
            )
            let ly = top + 18 * Double(i)
            svg.append(
                "<line x1=\"\(width - right + 10)\" y1=\"\(ly)\" x2=\"\(width - right + 30)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>"
            )
            svg.append(
                "<text x=\"\(width - right + 35)\" y=\"\(ly + 4)\">\(scheme.replacingOccurrences(of: "<", with: "&lt;"))</text>"
            )
        }
        svg.append("</svg>")
        return svg.joined(separator: "\n") + "\n"
    }

    /// The top of a log-scale axis, as a decade (10⁴): larger values are drawn on the top edge.
    public static let logCeiling = 4.0
}
