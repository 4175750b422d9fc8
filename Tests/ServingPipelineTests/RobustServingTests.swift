import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import Testing

@testable import ServingPipeline

/// Serving with A > 0: the encoder's configuration and manifests, and a decoder that excludes a
/// Byzantine worker's results (in memory; the live suite runs the same against RabbitMQ).
@Suite struct RobustServingTests {
    @Test func theEncoderRefusesAdversariesItsCodeCannotTolerate() {
        func refusal(_ kind: SchemeKind, n: Int, k: Int, s: Int, a: Int) -> String? {
            do {
                _ = try EncoderService.validate(
                    EncoderConfiguration(
                        scheme: SchemeConfiguration(kind: kind, workers: n, batchSize: k), stragglers: s, adversaries: a
                    ))
                return nil
            } catch { return error.message }
        }
        #expect(refusal(.nercc, n: 12, k: 4, s: 3, a: 3) == nil)
        // 2A + 3 = 11 > N − S = 9.
        #expect(refusal(.nercc, n: 12, k: 4, s: 3, a: 4)?.contains("2A + 3 = 11") == true)
        // ApproxIFER's locator: 2(K + A) − 1 = 11 > 10.
        #expect(refusal(.bacc, n: 12, k: 4, s: 2, a: 2)?.contains("2(K + A) − 1 = 11") == true)
        #expect(refusal(.uncoded, n: 4, k: 4, s: 0, a: 1)?.contains("only for bacc, nercc or nercc-ag") == true)
        #expect(refusal(.nercc, n: 12, k: 4, s: 0, a: -1) != nil)
    }

    @Test func partialBatchesTolerateWhatTheirOwnWaitAllows() throws {
        let configuration = EncoderConfiguration(
            scheme: SchemeConfiguration(kind: .nercc, workers: 12, batchSize: 4), stragglers: 0, adversaries: 3)
        let full = try EncoderService.validate(configuration)
        let codes = try EncoderService.batchCodes(configuration, full: full)
        // N_k = 3k tasks, all waited for: 2A + 3 ≤ 3k.
        #expect(codes.map(\.adversaries) == [0, 1, 3, 3])
    }

    /// nercc (40, 10) with A = 3 (every batch padded to the full code, which tolerates it; the
    /// in-memory broker may hand the liar more than one task of a batch) and one of forty workers
    /// negating every output: the predictions are the model's (to the spline's approximation
    /// error), the prediction names the excluded coded index, and the decoder counts it against
    /// the worker.
    @Test(.timeLimit(.minutes(1))) func aNegatingWorkerIsExcludedAndTheAnswersStayExact() async throws {
        let transport = InMemoryTransport()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let topology = ServingTopology()
        let stop = StopSignal()
        let encoder = try EncoderService(
            transport: transport,
            configuration: EncoderConfiguration(
                scheme: SchemeConfiguration(kind: .nercc, workers: 40, batchSize: 10), stragglers: 0,
                maximumBatchWaitMilliseconds: 1, padsPartialBatches: true, adversaries: 3),
            topology: topology, models: [LinearModel()], logger: logger)
        let decoderMetrics = ServiceMetrics()
        let decoder = DecoderService(
            transport: transport, configuration: DecoderConfiguration(), topology: topology, logger: logger,
            metrics: decoderMetrics)
        let liarMetrics = ServiceMetrics()
        var runs: [@Sendable () async throws -> Void] = [
            { try await encoder.run(stop: stop) }, { try await decoder.run(stop: stop) },
        ]
        for w in 0..<40 {
            let liar = w == 5
            let worker = WorkerService(
                transport: transport,
                configuration: WorkerConfiguration(
                    prefetch: 1, workerID: liar ? "liar" : "honest-\(w)",
                    byzantine: liar ? ByzantineInjection(mode: .negate) : .none),
                topology: topology, model: LinearModel(), logger: logger,
                metrics: liar ? liarMetrics : ServiceMetrics())
            runs.append { try await worker.run(stop: stop) }
        }
        let queries: [[Float]] = (0..<20).map { i in
            let t = Float(i)
            return [sin(t), cos(1.3 * t), sin(0.7 * t + 1)]
        }
        let records = try await InMemoryPipelineTests.request(
            queries, of: runs, workers: 40, on: transport, stop: stop
        ) { $0.reduce(0) { $0 + $1.predictions.count } >= 20 }
        let model = LinearModel()
        for record in records {
            for prediction in record.predictions {
                let exact = try model.predict(flatInputs: queries[prediction.index], count: 1)
                // The spline decodes a linear model from the remaining points to within its
                // approximation error; a negated result left in moves the outputs by tenths.
                for (got, want) in zip(prediction.outputs, exact) {
                    #expect(abs(got - want) <= 2e-2 * (1 + abs(want)), "query \(prediction.index)")
                }
            }
        }
        let corrupted = liarMetrics.value("results_corrupted")
        #expect(corrupted >= 1)
        let excluded = records.flatMap { $0.excluded ?? [] }
        #expect(!excluded.isEmpty)
        #expect(decoderMetrics.value("results_flagged", labels: [("worker", "liar"), ("user", "")]) == corrupted)
        #expect(records.allSatisfy { $0.excluded != nil })
    }
}

extension RobustServingTests {
    /// A manifest asking for a robust decode the decoder cannot give is dead-lettered, not decoded.
    @Test(arguments: [("uncoded", 4, 4, 1), ("nercc", 12, 4, -1)])
    func aManifestWithImpossibleAdversariesIsDeadLettered(scheme: String, n: Int, k: Int, a: Int) async throws {
        let members = (0..<k).map { BatchManifest.Member(requestID: "r", index: $0, requestQueries: k) }
        let manifest = BatchManifest(
            batchID: batchIdentifier(members: members), model: "linear",
            scheme: .init(name: scheme, workers: n, batchSize: k, stragglers: 0, adversaries: a), waitFor: n,
            createdMilliseconds: 1_000, deadlineMilliseconds: 600_000, outputSize: 2, labels: nil, members: members)
        try await HedgingRejectionTests.expectRejected(manifest, mentioning: "adversaries")
    }
}
