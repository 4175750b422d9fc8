import Foundation

/// A small SVG line chart: several named series of (x, y) points, linear or logarithmic axes.
struct LineChart {
    struct Series {
        var name: String
        var points: [(Double, Double)]
    }

    var title: String
    var xLabel: String
    var yLabel: String
    var logX = false
    var logY = false
    var series: [Series]

    static let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22",
    ]

    /// The chart as an SVG document. Non-finite points, and non-positive ones on a log axis, are
    /// left out.
    func svg() -> String {
        let width = 680.0
        let height = 420.0
        let left = 70.0
        let right = 190.0
        let top = 40.0
        let bottom = 50.0
        func tx(_ v: Double) -> Double? { logX ? (v > 0 ? log10(v) : nil) : (v.isFinite ? v : nil) }
        func ty(_ v: Double) -> Double? { logY ? (v > 0 ? log10(v) : nil) : (v.isFinite ? v : nil) }
        let xs = series.flatMap { $0.points.compactMap { tx($0.0) } }
        let ys = series.flatMap { $0.points.compactMap { ty($0.1) } }
        var (xMin, xMax) = (xs.min() ?? 0, xs.max() ?? 1)
        var (yMin, yMax) = (ys.min() ?? 0, ys.max() ?? 1)
        if logY {
            yMin = yMin.rounded(.down)
            yMax = yMax.rounded(.up)
        } else {
            yMin = min(0, yMin)
        }
        if logX {
            xMin = xMin.rounded(.down)
            xMax = xMax.rounded(.up)
        }
        if xMax - xMin < 1e-9 { (xMin, xMax) = (xMin - 0.5, xMax + 0.5) }
        if yMax - yMin < 1e-9 { (yMin, yMax) = (yMin - 0.5, yMax + 0.5) }
        func px(_ x: Double) -> Double { left + (width - left - right) * (x - xMin) / (xMax - xMin) }
        func py(_ y: Double) -> Double { top + (height - top - bottom) * (1 - (y - yMin) / (yMax - yMin)) }
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        }
        func label(_ v: Double, log: Bool) -> String {
            log ? (v >= 0 && v < 6 ? String(format: "%g", pow(10, v)) : "1e\(Int(v))") : String(format: "%.3g", v)
        }
        var out = [
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">",
            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            "<text x=\"\(Int((left + width - right) / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(escape(title))</text>",
            "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"black\"/>",
            "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>",
            "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">\(escape(xLabel))</text>",
            "<text x=\"16\" y=\"\((top + height - bottom) / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 16 \((top + height - bottom) / 2))\">\(escape(yLabel))</text>",
        ]
        let yTicks =
            logY
            ? Array(stride(from: yMin, through: yMax, by: 1)) : (0...4).map { yMin + (yMax - yMin) * Double($0) / 4 }
        for y in yTicks {
            out.append("<line x1=\"\(left)\" y1=\"\(py(y))\" x2=\"\(width - right)\" y2=\"\(py(y))\" stroke=\"#ddd\"/>")
            out.append("<text x=\"\(left - 6)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(label(y, log: logY))</text>")
        }
        let xTicks =
            logX
            ? Array(stride(from: xMin, through: xMax, by: 1)) : (0...4).map { xMin + (xMax - xMin) * Double($0) / 4 }
        for x in xTicks {
            out.append(
                "<text x=\"\(px(x))\" y=\"\(height - bottom + 16)\" text-anchor=\"middle\">\(label(x, log: logX))</text>"
            )
        }
        for (i, s) in series.enumerated() {
            let color = Self.colors[i % Self.colors.count]
            let dash = i < Self.colors.count ? "" : " stroke-dasharray=\"6 3\""
            let points = s.points.compactMap { p -> String? in
                guard let x = tx(p.0), let y = ty(p.1) else { return nil }
                return String(format: "%.1f,%.1f", px(x), py(y))
            }
            out.append(
                "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(dash) points=\"\(points.joined(separator: " "))\"/>"
            )
            if points.count <= 12 {
                for p in points {
                    let xy = p.split(separator: ",")
                    out.append("<circle cx=\"\(xy[0])\" cy=\"\(xy[1])\" r=\"3\" fill=\"\(color)\"/>")
                }
            }
            let ly = top + 18 * Double(i)
            out.append(
                "<line x1=\"\(width - right + 10)\" y1=\"\(ly)\" x2=\"\(width - right + 30)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>"
            )
            out.append("<text x=\"\(width - right + 35)\" y=\"\(ly + 4)\">\(escape(s.name))</text>")
        }
        out.append("</svg>")
        return out.joined(separator: "\n") + "\n"
    }
}
