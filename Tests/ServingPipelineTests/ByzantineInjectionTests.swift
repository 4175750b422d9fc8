import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import Testing

@testable import ServingPipeline

/// The Byzantine worker (a testing aid): each mode, the share of results it corrupts, and a worker
/// whose results reach the decoder corrupted.
@Suite struct ByzantineInjectionTests {
    @Test(arguments: [
        ("gaussian:100", ByzantineInjection.Mode.gaussian(sigma: 100)), ("negate", .negate),
        ("constant:5", .constant(5)), ("scale:-2.5", .scale(-2.5)), ("gaussian:0", .gaussian(sigma: 0)),
    ])
    func modesParse(text: String, mode: ByzantineInjection.Mode) throws {
        #expect(try ByzantineInjection.Mode.parse(text) == mode)
    }

    @Test(arguments: [
        ("gaussian", "needs a finite number"), ("gaussian:-1", "σ must be ≥ 0"), ("negate:2", "takes no argument"),
        ("constant:nan", "needs a finite number"), ("scale:", "needs a finite number"),
        ("flip", "not a Byzantine mode"),
    ])
    func badModesAreRefusedWithTheProblemNamed(text: String, mention: String) {
        #expect {
            try ByzantineInjection.Mode.parse(text)
        } throws: { error in
            "\(error)".contains(mention)
        }
    }

    @Test func eachModeCorruptsEveryValueAsDocumented() throws {
        var rng = SeededGenerator(seed: 3)
        let values: [Float] = [1, -2, 0.5]
        let negated = ByzantineInjection(mode: .negate).corrupt(values, using: &rng)
        #expect(negated == [-1, 2, -0.5])
        let constant = ByzantineInjection(mode: .constant(7)).corrupt(values, using: &rng)
        #expect(constant == [7, 7, 7])
        let scaled = ByzantineInjection(mode: .scale(3)).corrupt(values, using: &rng)
        #expect(scaled == [3, -6, 1.5])
        let honest = ByzantineInjection.none.corrupt(values, using: &rng)
        #expect(honest == nil)
    }

    @Test func gaussianNoiseHasTheRequestedSpread() throws {
        var rng = SeededGenerator(seed: 11)
        let noisy = try #require(
            ByzantineInjection(mode: .gaussian(sigma: 100)).corrupt([Float](repeating: 0, count: 20_000), using: &rng))
        let mean = noisy.reduce(0) { $0 + Double($1) } / Double(noisy.count)
        let sd = (noisy.reduce(0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(noisy.count)).squareRoot()
        // 20,000 draws: the mean's standard error is 0.7, the deviation's about 0.5.
        #expect(abs(mean) < 3 && abs(sd - 100) < 3, "mean \(mean), sd \(sd)")
    }

    @Test func aShareOfTheResultsIsCorrupted() {
        var rng = SeededGenerator(seed: 5)
        let injection = ByzantineInjection(mode: .negate, probability: 0.25)
        let corrupted = (0..<4_000).count { _ in injection.corrupt([1], using: &rng) != nil }
        // Binomial(4000, 0.25): mean 1,000, standard deviation 27.
        #expect((900...1_100).contains(corrupted), "\(corrupted) of 4000")
    }

    /// Uncoded serving with a worker that negates every output: the decoder publishes the negated
    /// predictions (an uncoded decoder cannot tell), and the worker counts what it corrupted.
    @Test(.timeLimit(.minutes(1))) func aByzantineWorkersResultsReachTheDecoderCorrupted() async throws {
        let transport = InMemoryTransport()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let topology = ServingTopology()
        let stop = StopSignal()
        let encoder = try EncoderService(
            transport: transport,
            configuration: EncoderConfiguration(
                scheme: SchemeConfiguration(kind: .uncoded, workers: 1, batchSize: 1), stragglers: 0,
                maximumBatchWaitMilliseconds: 1),
            topology: topology, models: [LinearModel()], logger: logger)
        let decoder = DecoderService(
            transport: transport, configuration: DecoderConfiguration(), topology: topology, logger: logger)
        let metrics = ServiceMetrics()
        let worker = WorkerService(
            transport: transport,
            configuration: WorkerConfiguration(workerID: "liar", byzantine: ByzantineInjection(mode: .negate)),
            topology: topology, model: LinearModel(), logger: logger, metrics: metrics)
        let query: [Float] = [1, 2, -1]
        let runs: [@Sendable () async throws -> Void] = [
            { try await encoder.run(stop: stop) }, { try await decoder.run(stop: stop) },
            { try await worker.run(stop: stop) },
        ]
        let records = try await InMemoryPipelineTests.request(
            [query], of: runs, workers: 1, on: transport, stop: stop
        ) { $0.reduce(0) { $0 + $1.predictions.count } >= 1 }
        let exact = try LinearModel().predict(flatInputs: query, count: 1)
        #expect(records.first?.predictions.first?.outputs == exact.map { -$0 })
        #expect(metrics.value("results_corrupted") == 1)
    }
}
