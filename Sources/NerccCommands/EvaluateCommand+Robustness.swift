import AccuracyStudy
import ArgumentParser
import CodedComputing
import Foundation
import ServingPipeline

/// `nercc evaluate --adversaries`: the robustness study (docs/robustness.md).
extension EvaluateCommand {
    /// One item of `--adversaries`: a count, or a share of N in percent.
    enum AdversarySpec: Equatable {
        case count(Int)
        case share(Double)

        /// A for N workers (a share rounds to the nearest count).
        func resolve(workers: Int) -> Int {
            switch self {
            case .count(let a): a
            case .share(let p): Int((Double(workers) * p / 100).rounded())
            }
        }
    }

    func parsedAdversaries() throws -> [AdversarySpec] {
        guard !adversaries.isEmpty else { return [] }
        return try adversaries.split(separator: ",", omittingEmptySubsequences: false).map { item in
            if item.hasSuffix("%") {
                guard let p = Double(item.dropLast()), p >= 0, p < 50 else {
                    throw ValidationError("--adversaries: '\(item)' is not a share of N in [0%, 50%)")
                }
                return .share(p)
            }
            guard let a = Int(item), a >= 0 else {
                throw ValidationError("--adversaries: '\(item)' is neither a count ≥ 0 nor a share such as 10%")
            }
            return .count(a)
        }
    }

    func parsedAttacks() throws -> [StudyAttack] {
        guard !byzantine.isEmpty else { throw ValidationError("--byzantine: give at least one attack") }
        return try byzantine.map { text in
            let mode: ByzantineInjection.Mode
            do { mode = try ByzantineInjection.Mode.parse(text) } catch {
                throw ValidationError("--byzantine: \(error)")
            }
            let injection = ByzantineInjection(mode: mode)
            return StudyAttack(name: mode.description) { values, seed in
                var rng = SeededGenerator(seed: seed)
                let corrupted = injection.corrupt(values.map { Float($0) }, using: &rng) ?? values.map { Float($0) }
                return corrupted.map(Double.init)
            }
        }
    }

    /// The decoders of the robustness study: bacc plain and with ApproxIFER's locator; nercc (the
    /// calibrated profile where one covers (N, K), else the tuned λs) plain, with the spline check,
    /// with the locator, and with the median of subsets.
    static func robustDecoders(lambdaEncoder: Double, lambdaDecoder: Double, profiles: [CalibrationProfile])
        -> [RobustStudyDecoder]
    {
        let bacc: @Sendable (Int, Int) -> SchemeConfiguration? = { n, k in
            SchemeConfiguration(kind: .bacc, workers: n, batchSize: k)
        }
        let nercc: @Sendable (Int, Int) -> SchemeConfiguration? = { n, k in
            if let p = profiles.first(where: { $0.workers == n && $0.batchSize == k }) {
                return SchemeConfiguration(kind: .nercc, workers: n, batchSize: k, lambdaEncoder: p.lambdaEncoder)
            }
            return SchemeConfiguration(
                kind: .nercc, workers: n, batchSize: k, lambdaEncoder: lambdaEncoder, lambdaDecoder: lambdaDecoder)
        }
        let lambda: @Sendable (Int, Int, Int) -> Double = { n, k, received in
            profiles.first { $0.workers == n && $0.batchSize == k }?.lambdaDecoder(received: received) ?? lambdaDecoder
        }
        return [
            RobustStudyDecoder(label: "bacc", code: "bacc", configure: bacc, method: nil),
            RobustStudyDecoder(label: "bacc + ApproxIFER locator", code: "bacc", configure: bacc, method: .locator),
            RobustStudyDecoder(label: "nercc", code: "nercc", configure: nercc, decoderLambda: lambda, method: nil),
            RobustStudyDecoder(
                label: "nercc + spline check", code: "nercc", configure: nercc, decoderLambda: lambda, method: .spline),
            RobustStudyDecoder(
                label: "nercc + ApproxIFER locator", code: "nercc", configure: nercc, decoderLambda: lambda,
                method: .locator),
            RobustStudyDecoder(
                label: "nercc + median of 2A+1", code: "nercc", configure: nercc, decoderLambda: lambda,
                method: .median),
        ]
    }

    /// The study's quarantine: serving's window, minimum and share, one tick per trial, and a
    /// quarantine of 1,000 trials (serving's 60 s are thousands of batches under load).
    static let studyQuarantine = DecoderConfiguration.defaultQuarantine.lasting(1_000)

    func runRobustness(
        queries: Matrix, labels truth: [Int], grid: [StudySetting], profiles: [CalibrationProfile],
        calibration: Matrix? = nil
    ) throws {
        let specs = try parsedAdversaries()
        let attacks = try parsedAttacks()
        var all: [RobustnessResult] = []
        for path in models {
            let (model, study) = try study(of: path, queries: queries, labels: truth)
            let started = Date()
            var decoders = Self.robustDecoders(
                lambdaEncoder: lambdaEncoder, lambdaDecoder: lambdaDecoder,
                profiles: profiles.filter { $0.model == model.name })
            if persistentAdversaries, var quarantined = decoders.first(where: { $0.method == .spline }) {
                quarantined.label += " + quarantine"
                quarantined.quarantine = Self.studyQuarantine
                decoders.append(quarantined)
            }
            if let calibration {
                guard calibration.columns == queries.columns else {
                    throw CommandError(
                        "--output-check: the calibration queries have \(calibration.columns) values each, the evaluation queries \(queries.columns)"
                    )
                }
                for base in decoders.filter({ $0.method == .spline }) {
                    var checked = base
                    checked.label = base.label.replacingOccurrences(
                        of: "spline check", with: "output check + spline check")
                    checked.outputCheck = true
                    decoders.append(checked)
                }
            }
            for i in decoders.indices {
                decoders[i].threshold = splineThreshold
                decoders[i].detectionSmoothing = detectionSmoothing
            }
            let results = try study.runRobustness(
                settings: grid,
                adversaryCounts: { setting in
                    Array(Set(specs.map { $0.resolve(workers: setting.workers) })).sorted()
                        .filter { $0 <= setting.workers - setting.stragglers }
                },
                attacks: attacks, decoders: decoders, trials: trials, seed: seed, tolerate: tolerate,
                persistentAdversaries: persistentAdversaries, calibration: calibration
            ) { done, total in
                if !quiet && (done % 10 == 0 || done == total) {
                    FileHandle.standardError.write(Data("\r\(model.name): \(done)/\(total) trials".utf8))
                }
            }
            if !quiet {
                FileHandle.standardError.write(
                    Data(String(format: "\r\(model.name): done in %.1f s\n", Date().timeIntervalSince(started)).utf8))
            }
            all += results
        }
        try writeRobustness(all)
        printRobustnessSummary(all)
    }

    static func robustnessCSV(_ results: [RobustnessResult]) -> String {
        var lines = [
            "model,scheme,N,K,S,A,tolerated,attack,trials,refused,logit_mse_mean,logit_mse_std,relative_accuracy_mean,"
                + "relative_accuracy_std,label_accuracy_mean,precision,recall,true_positives,false_positives,"
                + "adversaries_present"
        ]
        for r in results {
            let cells: [String] = [
                r.model, "\"\(r.scheme)\"", "\(r.setting.workers)", "\(r.setting.batchSize)", "\(r.setting.stragglers)",
                "\(r.adversaries)", "\(r.tolerated)", r.attack, "\(r.trials)", "\(r.refused)", "\(r.logitMSE.mean)",
                "\(r.logitMSE.standardDeviation)", "\(r.relativeAccuracy.mean)",
                "\(r.relativeAccuracy.standardDeviation)", "\(r.labelAccuracy.mean)",
                r.precision.map { "\($0)" } ?? "", r.recall.map { "\($0)" } ?? "",
                r.truePositives.map { "\($0)" } ?? "", r.falsePositives.map { "\($0)" } ?? "",
                "\(r.adversariesPresent)",
            ]
            lines.append(cells.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func writeRobustness(_ results: [RobustnessResult]) throws {
        let directory = URL(fileURLWithPath: output)
        do {
            try Self.writeTables(
                results, json: "robustness.json", csv: Self.robustnessCSV(results), csvName: "robustness.csv",
                in: directory)
            // One plot per model, (N, K) and attack, at the smallest straggler count: relative
            // accuracy against A.
            var groups: [String: [RobustnessResult]] = [:]
            for r in results {
                groups["\(r.model)-N\(r.setting.workers)-K\(r.setting.batchSize)-\(r.attack)", default: []].append(r)
            }
            for (name, rows) in groups {
                let s = rows.map(\.setting.stragglers).min() ?? 0
                let kept = rows.filter { $0.setting.stragglers == s }
                let schemes = Array(Set(kept.map(\.scheme))).sorted()
                let first = kept[0]
                let chart = LineChart(
                    title:
                        "\(first.model): N=\(first.setting.workers), K=\(first.setting.batchSize), S=\(s), \(first.attack)",
                    xLabel: "Byzantine workers A", yLabel: "relative accuracy",
                    series: schemes.map { scheme in
                        LineChart.Series(
                            name: scheme,
                            points: kept.filter { $0.scheme == scheme && $0.refused < $0.trials }
                                .sorted { $0.adversaries < $1.adversaries }
                                .map { (Double($0.adversaries), $0.relativeAccuracy.mean) })
                    })
                let file = name.replacingOccurrences(of: ":", with: "") + "-robustness.svg"
                try chart.svg().write(to: directory.appendingPathComponent(file), atomically: true, encoding: .utf8)
            }
        } catch {
            throw CommandError("cannot write the results to '\(output)': \(error.localizedDescription)")
        }
    }

    func printRobustnessSummary(_ results: [RobustnessResult]) {
        let header = [
            "model", "N", "K", "S", "A", "attack", "decoder", "logit MSE", "rel. acc.", "precision", "recall",
            "refused",
        ]
        let rows = results.map { r in
            let decoded = r.trials - r.refused
            let metrics =
                decoded == 0
                ? ["-", "-"]
                : [String(format: "%.3e", r.logitMSE.mean), String(format: "%.1f%%", 100 * r.relativeAccuracy.mean)]
            let detection = [r.precision, r.recall].map { v in v.map { String(format: "%.1f%%", 100 * $0) } ?? "" }
            return [
                r.model, "\(r.setting.workers)", "\(r.setting.batchSize)", "\(r.setting.stragglers)",
                "\(r.adversaries)",
                r.attack, r.scheme,
            ] + metrics + detection + [r.refused == 0 ? "" : "\(r.refused)/\(r.trials)"]
        }
        print(TextTable.render(header: header, rows: rows))
        print(
            "\nMetrics are over the trials a decoder accepted; 'refused' counts trials where its bound does not hold "
                + "(ApproxIFER's locator needs N − S ≥ 2(K + A) − 1). Precision and recall pool every accepted trial.")
        print("written: \(output)/robustness.json, robustness.csv and SVG plots")
    }
}
