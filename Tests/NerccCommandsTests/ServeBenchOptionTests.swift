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
}
