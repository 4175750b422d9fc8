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
