import Testing

@testable import NerccCommands

/// `nercc bench serve` takes A as a fifth field of a scheme and Byzantine workers as a worker model,
/// so that plain and robust decoding, with and without a wrong worker, run on the same workers in
/// one run.
@Suite struct ServeBenchOptionTests {
    @Test func aSchemeTakesTheAdversariesItsEncoderTolerates() throws {
        #expect(try BenchServeCommand.scheme("nercc:40:10:0:3").adversaries == 3)
        #expect(try BenchServeCommand.scheme("nercc:12:4:3").adversaries == 0)
        // 2A + 3 = 11 results for A = 4, but N − S = 9: refused with the bound.
        #expect(throws: (any Error).self) { try BenchServeCommand.scheme("nercc:12:4:3:4") }
        do {
            _ = try BenchServeCommand.scheme("uncoded:4:4:0:1")
            Issue.record("uncoded with adversaries was accepted")
        } catch {
            #expect("\(error)".contains("only for bacc, nercc or nercc-ag"), "\(error)")
        }
    }

    /// A variant of a scheme names its own encoder flags after '+', so that one run compares it
    /// with the plain scheme on the same workers; the label keeps the whole item.
    @Test func aVariantPassesItsFlagsToItsEncoder() throws {
        let plain = try BenchServeCommand.scheme("nercc:12:4:3")
        #expect(plain.encoderFlags.isEmpty && plain.label == "nercc:12:4:3")
        let variant = try BenchServeCommand.scheme("nercc:12:4:3+no-resend+hedge-after-ms=0")
        #expect(variant.encoderFlags == ["--no-resend", "--hedge-after-ms=0"])
        #expect(variant.label == "nercc:12:4:3+no-resend+hedge-after-ms=0" && variant.stragglers == 3)
        for bad in ["nercc:12:4:3+", "nercc:12:4:3+-x", "nercc:12:4:3+no resend", "nercc:12:4:3+=1"] {
            do {
                _ = try BenchServeCommand.scheme(bad)
                Issue.record("'\(bad)' was accepted")
            } catch {
                #expect("\(error)".contains("is not an encoder flag"), "\(error)")
            }
        }
    }

    /// In rounds, every straggler model is measured in every round (the services restarted with
    /// its injection), in an order that rotates, after every model's saturation runs; in one
    /// round, each model once.
    @Test func roundsTakeEveryStragglerModelInTurn() {
        let none = BenchServeCommand.StragglerModel(name: "none", flags: { _, _ in [] })
        let slow = BenchServeCommand.StragglerModel(name: "tasks:0.15:400", flags: { _, _ in [] })
        func plan(_ rounds: Int, saturation: Bool) -> [String] {
            BenchServeCommand.phases(models: [none, slow], rounds: rounds, saturation: saturation).map {
                switch $0.1 {
                case .everything: "\($0.0.name)"
                case .saturation: "\($0.0.name) saturation"
                case .round(let r): "\($0.0.name) r\(r)"
                }
            }
        }
        #expect(plan(1, saturation: true) == ["none", "tasks:0.15:400"])
        #expect(
            plan(3, saturation: true) == [
                "none saturation", "tasks:0.15:400 saturation", "none r1", "tasks:0.15:400 r1", "tasks:0.15:400 r2",
                "none r2", "none r3", "tasks:0.15:400 r3",
            ])
        #expect(plan(2, saturation: false) == ["none r1", "tasks:0.15:400 r1", "tasks:0.15:400 r2", "none r2"])
    }

    /// In rounds, each scheme's saturation is measured up to three times, and the reference rate is
    /// the median of the first scheme's runs: one fast minute does not set every offered load.
    @Test func theReferenceIsTheMedianOfTheFirstSchemesSaturationRuns() {
        #expect(BenchServeCommand.saturationRepeats(rounds: 1) == 1)
        #expect(BenchServeCommand.saturationRepeats(rounds: 2) == 2)
        #expect(BenchServeCommand.saturationRepeats(rounds: 5) == 3)
        #expect(BenchServeCommand.median([2_380, 1_649, 1_700]) == 1_700)
        #expect(BenchServeCommand.median([1_600, 1_700]) == 1_650)
        #expect(BenchServeCommand.median([]) == nil)
    }

    @Test func byzantineWorkersAreTheFirstCountOfThePool() throws {
        let command = try BenchServeCommand.parse([
            "--stragglers", "none,byzantine:1:negate,byzantine:2:gaussian:100", "--rates", "10",
        ])
        let models = try command.parsedStragglers()
        #expect(models.map(\.name) == ["none", "byzantine:1:negate", "byzantine:2:gaussian:100"])
        #expect(models[1].flags(0, 8) == ["--byzantine", "negate"])
        #expect(models[1].flags(1, 8).isEmpty)
        #expect(models[2].flags(1, 8) == ["--byzantine", "gaussian:100"])
        #expect(models[2].flags(2, 8).isEmpty)
        // Refused when the options are validated, naming the forms.
        for bad in ["byzantine:x:negate", "byzantine:1:flip", "byzantine:1"] {
            do {
                _ = try BenchServeCommand.parse(["--stragglers", bad, "--rates", "10"])
                Issue.record("'\(bad)' was accepted")
            } catch {
                #expect("\(error)".contains("byzantine:COUNT:MODE"), "\(error)")
            }
        }
    }

    /// A point measured in rounds appears once in the tables, with the median of its rounds'
    /// percentiles, and every round is listed.
    @Test func roundsAreSummarisedByTheirMedian() throws {
        let spec = try BenchServeCommand.scheme("nercc:12:4:3")
        func point(round: Int?, p50: Double, p99: Double, max: Double, degraded: Int) -> ServePoint {
            var p = ServePoint(
                records: [], labels: nil, straggler: "none", scheme: spec, mode: "open", offeredRate: 100,
                concurrency: nil, duration: 1, counters: [:])
            p.round = round
            p.latency.p50 = p50
            p.latency.p90 = p50 * 2
            p.latency.p99 = p99
            p.latency.p999 = p99 * 2
            p.latency.max = max
            p.degraded = degraded
            return p
        }
        let report = ServeReport(
            points: [
                point(round: 1, p50: 5, p99: 30, max: 40, degraded: 1),
                point(round: 2, p50: 7, p99: 10, max: 12, degraded: 2),
                point(round: 3, p50: 6, p99: 20, max: 25, degraded: 0),
            ], machine: "test", command: "bench serve", reference: nil)
        let shown = report.summaryPoints
        #expect(shown.count == 1 && report.roundCount == 3)
        #expect(shown[0].latency.p50 == 6 && shown[0].latency.p99 == 20 && shown[0].latency.p999 == 40)
        #expect(shown[0].latency.max == 40 && shown[0].degraded == 3)
        let markdown = report.markdown()
        #expect(markdown.contains("| none | nercc:12:4:3 | 100/s | 5.0 / 30.0 | 7.0 / 10.0 | 6.0 / 20.0 |"))
        // One round: the points as they are.
        let single = ServeReport(
            points: [point(round: nil, p50: 5, p99: 30, max: 40, degraded: 1)], machine: "test", command: "",
            reference: nil)
        #expect(single.summaryPoints[0].latency.p99 == 30 && single.roundCount == 1)
        #expect(!single.markdown().contains("### Rounds"))
        #expect(throws: (any Error).self) { try BenchServeCommand.parse(["--rounds", "0", "--rates", "10"]) }
    }
}
