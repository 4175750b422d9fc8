import AccuracyStudy
import Testing

@testable import NerccCommands

@Suite struct EvaluateGridTests {
    @Test func partialBatchesAddTheCodeOfEverySmallerBatchSize() throws {
        let grid = try EvaluateCommand.grid(settings: [(12, 4)], shares: [25], partialBatches: true)
        #expect(
            grid == [
                StudySetting(workers: 12, batchSize: 4, stragglers: 3),
                StudySetting(workers: 9, batchSize: 3, stragglers: 3),
                StudySetting(workers: 6, batchSize: 2, stragglers: 2),
                StudySetting(workers: 3, batchSize: 1, stragglers: 2),
            ])
        #expect(try EvaluateCommand.grid(settings: [(12, 4)], shares: [25], partialBatches: false).count == 1)
    }

    @Test func aSettingWhereNoSplineCanDecodeIsLeftOut() throws {
        // S = N − 1 leaves one result: enough for K = 1 only.
        #expect(try EvaluateCommand.grid(settings: [(4, 2)], shares: [75], partialBatches: false).isEmpty)
        #expect(try EvaluateCommand.grid(settings: [(4, 1)], shares: [75], partialBatches: false).count == 1)
    }
}

@Suite struct EvaluateAdversaryOptionTests {
    @Test func countsAndSharesOfNResolvePerSetting() throws {
        let command = try EvaluateCommand.parse(["--adversaries", "0,3,10%"])
        let specs = try command.parsedAdversaries()
        #expect(specs.map { $0.resolve(workers: 40) } == [0, 3, 4])
        #expect(specs.map { $0.resolve(workers: 200) } == [0, 3, 20])
        #expect(try command.parsedAttacks().map(\.name) == ["gaussian:100.0", "negate"])
    }

    @Test(arguments: [
        (["--adversaries", "two"], "--adversaries: 'two'"),
        (["--adversaries", "60%"], "[0%, 50%)"),
        (["--adversaries", "1", "--byzantine", "flip"], "--byzantine: 'flip' is not a Byzantine mode"),
        (["--adversaries", "1", "--tolerate=-1"], "--tolerate must be ≥ 0"),
        (["--adversaries", "1", "--spline-threshold", "0"], "--spline-threshold"),
    ])
    func badValuesAreRefusedNamingTheOption(_ arguments: [String], _ message: String) {
        #expect {
            _ = try EvaluateCommand.parse(arguments)
        } throws: { error in
            EvaluateCommand.message(for: error).contains(message)
        }
    }

    @Test func theAttacksCorruptAsTheWorkerDoes() throws {
        let command = try EvaluateCommand.parse([
            "--adversaries", "1", "--byzantine", "scale:2", "--byzantine", "negate",
        ])
        let attacks = try command.parsedAttacks()
        #expect(attacks[0].corrupt([1, -2.5], 1) == [2, -5])
        #expect(attacks[1].corrupt([1, -2.5], 1) == [-1, 2.5])
    }
}
