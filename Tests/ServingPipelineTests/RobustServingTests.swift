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

    @Test func partialBatchesGetTheTasksTheirToleranceNeeds() throws {
        let configuration = EncoderConfiguration(
            scheme: SchemeConfiguration(kind: .nercc, workers: 12, batchSize: 4), stragglers: 0, adversaries: 3)
        let full = try EncoderService.validate(configuration)
        let codes = try EncoderService.batchCodes(configuration, full: full)
        // One query: a vote of 2A + 1 = 7 copies; two: the spline check's 2A + 3 = 9; then 3k.
        #expect(codes.map(\.adversaries) == [3, 3, 3, 3])
        #expect(codes.map(\.code.workers) == [7, 9, 9, 12])
        #expect(codes.map(\.waitFor) == [7, 9, 9, 12])
        // The vote sends A + 1 = 4 copies at once and holds back three; nothing else is hedged.
        #expect(codes.map { $0.hedgedFirstTasks(rows: 1, hedging: true) } == [4, nil, nil, nil])
        #expect(codes[0].hedgedFirstTasks(rows: 2, hedging: true) == nil)
        #expect(codes[0].hedgedFirstTasks(rows: 1, hedging: false) == nil)
        // The cheapest piece per query is then three queries (3 tasks each, where one costs 4).
        #expect(EncoderService.partialBatchPiece(codes) == 3)
        // At (40, 10) one query's four agreeing copies cost N/K: the piece stays one query, unless
        // nothing is held back, when it costs all seven.
        let wide = EncoderConfiguration(
            scheme: SchemeConfiguration(kind: .nercc, workers: 40, batchSize: 10), stragglers: 0, adversaries: 3)
        let wideCodes = try EncoderService.batchCodes(wide, full: try EncoderService.validate(wide))
        #expect(EncoderService.partialBatchPiece(wideCodes) == 1)
        #expect(EncoderService.partialBatchPiece(wideCodes, hedging: false) == 3)
    }

    /// nercc (40, 10) with A = 3 (every batch padded to the full code, which tolerates it; the
    /// in-memory broker may hand the liar more than one task of a batch) and one of forty workers
    /// negating every output: the predictions are the model's (to the spline's approximation
    /// error), the prediction names the excluded coded index, and the decoder counts it against
    /// the worker.
    @Test(.timeLimit(.minutes(1))) func aNegatingWorkerIsExcludedAndTheAnswersStayExact() async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let decoderMetrics = ServiceMetrics()
        let liarMetrics = ServiceMetrics()
        let runs = try Self.services(
            transport, workers: 40, liar: 5, decoderMetrics: decoderMetrics, liarMetrics: liarMetrics, stop: stop
        ) { $0.padsPartialBatches = true }
        let records = try await Self.expectModelAnswers(20, step: 1, runs: runs, transport: transport, stop: stop)
        let corrupted = liarMetrics.value("results_corrupted")
        #expect(corrupted >= 1)
        let excluded = records.flatMap { $0.excluded ?? [] }
        #expect(!excluded.isEmpty)
        #expect(decoderMetrics.value("results_flagged", labels: [("worker", "liar"), ("user", "")]) == corrupted)
        #expect(records.allSatisfy { $0.excluded != nil })
    }
}

extension RobustServingTests {
    /// Sends `count` smooth queries (t = i·`step`) to forty workers and expects every answer to be
    /// the linear model's: the spline decodes it from the remaining points to within its
    /// approximation error, where a negated result left in moves the outputs by tenths.
    static func expectModelAnswers(
        _ count: Int, step: Float, runs: [@Sendable () async throws -> Void], transport: InMemoryTransport,
        stop: StopSignal
    ) async throws -> [PredictionRecord] {
        let queries: [[Float]] = (0..<count).map { i in
            let t = Float(i) * step
            return [sin(t), cos(1.3 * t), sin(0.7 * t + 1)]
        }
        let records = try await InMemoryPipelineTests.request(
            queries, of: runs, workers: 40, on: transport, stop: stop
        ) { $0.reduce(0) { $0 + $1.predictions.count } >= count }
        let model = LinearModel()
        for record in records {
            for prediction in record.predictions {
                let exact = try model.predict(flatInputs: queries[prediction.index], count: 1)
                for (got, want) in zip(prediction.outputs, exact) {
                    #expect(abs(got - want) <= 2e-2 * (1 + abs(want)), "query \(prediction.index)")
                }
            }
        }
        return records
    }

    /// An encoder of nercc (40, 10) with A = 3 and a 1 ms batch wait, a decoder, and `workers`
    /// workers with prefetch 1, of which worker `liar` negates every output.
    static func services(
        _ transport: InMemoryTransport, workers: Int, liar: Int, decoderMetrics: ServiceMetrics,
        liarMetrics: ServiceMetrics, stop: StopSignal, decoder: DecoderConfiguration = .init(),
        liarDelay: StragglerInjection = .none, configure: (inout EncoderConfiguration) -> Void = { _ in }
    ) throws -> [@Sendable () async throws -> Void] {
        try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .nercc, workers: 40, batchSize: 10), workers: workers,
            stop: stop, decoder: decoder, decoderMetrics: decoderMetrics, workerMetrics: [liar: liarMetrics],
            workerConfigurations: Dictionary(
                uniqueKeysWithValues: (0..<workers).map {
                    (
                        $0,
                        WorkerConfiguration(
                            prefetch: 1, workerID: $0 == liar ? "liar" : "honest-\($0)",
                            stragglers: $0 == liar ? liarDelay : .none,
                            byzantine: $0 == liar ? ByzantineInjection(mode: .negate) : .none)
                    )
                })
        ) {
            $0.maximumBatchWaitMilliseconds = 1
            $0.adversaries = 3
            configure(&$0)
        }
    }

    /// Thirty batches of nercc (40, 10) with A = 1, one negating worker among forty and the
    /// quarantine on: once the spline check has flagged the liar in most of the batches it answered
    /// (at least 8), the decoder quarantines it and leaves its later results out on arrival,
    /// counted against it, and decodes those batches from the honest results alone (A − 1 = 0 left
    /// to look for); no honest worker is quarantined and every answer stays the model's.
    @Test(.timeLimit(.minutes(1))) func aWorkerFlaggedInMostOfItsBatchesIsQuarantined() async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let decoderMetrics = ServiceMetrics()
        let liarMetrics = ServiceMetrics()
        let runs = try Self.services(
            transport, workers: 40, liar: 5, decoderMetrics: decoderMetrics, liarMetrics: liarMetrics, stop: stop,
            decoder: DecoderConfiguration(quarantine: DecoderConfiguration.defaultQuarantine),
            // Slowed, so that it holds one task of a batch (two would be more than A).
            liarDelay: StragglerInjection(probability: 1, delay: .fixed(milliseconds: 5))
        ) {
            $0.padsPartialBatches = true
            $0.adversaries = 1
        }
        _ = try await Self.expectModelAnswers(300, step: 1.0 / 7, runs: runs, transport: transport, stop: stop)
        let liar = [("worker", "liar"), ("user", "")]
        #expect(decoderMetrics.value("sources_quarantined", labels: liar) == 1)
        #expect(decoderMetrics.gauge("quarantined_sources") == 1)
        let left = decoderMetrics.value("results_quarantined", labels: liar)
        // Flagged in its first 8 batches, quarantined for the rest.
        #expect(left >= 1)
        // Every corrupted result was either flagged by the spline check or left out as quarantined.
        #expect(decoderMetrics.value("results_flagged", labels: liar) + left == liarMetrics.value("results_corrupted"))
        // In batches the slowed liar holds no task of, the check told A = 1 flags an honest result
        // at an end of this curve (docs/robustness.md, "Told to tolerate more adversaries"); the
        // tasks move between workers, so no honest worker is flagged in most of its batches.
        for worker in 0..<40 where worker != 5 {
            let honest = [("worker", "honest-\(worker)"), ("user", "")]
            #expect(decoderMetrics.value("sources_quarantined", labels: honest) == 0)
        }
    }

    /// Unpadded, a lone query with A = 3 is a vote of 2A + 1 = 7 copies: four go out at once, one of
    /// them to the negating worker, so they disagree; the decoder asks for the three held back and
    /// answers once four copies agree: exactly the model's output, with the liar's copies excluded
    /// and counted against it.
    @Test(.timeLimit(.minutes(1))) func aLoneQueryIsAnsweredByAVoteThatExcludesTheLiar() async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let decoderMetrics = ServiceMetrics()
        let liarMetrics = ServiceMetrics()
        // Four workers with one task each in flight: the liar holds exactly one of the first four.
        let runs = try Self.services(
            transport, workers: 4, liar: 2, decoderMetrics: decoderMetrics, liarMetrics: liarMetrics, stop: stop)
        let query: [Float] = [0.3, -1.2, 2.5]
        let records = try await InMemoryPipelineTests.request(
            [query], of: runs, workers: 4, on: transport, stop: stop
        ) { !$0.isEmpty }
        let record = try #require(records.first)
        #expect(record.status == .ok)
        #expect(record.workers == 7 && record.batchSize == 1 && record.needed == 7)
        #expect(record.received >= 5)
        let exact = try LinearModel().predict(flatInputs: query, count: 1)
        let outputs = try #require(record.predictions.first?.outputs)
        for (got, want) in zip(outputs, exact) { #expect(abs(got - want) <= 1e-5 * (1 + abs(want))) }
        let flagged = decoderMetrics.value("results_flagged", labels: [("worker", "liar"), ("user", "")])
        #expect(flagged >= 1 && flagged <= liarMetrics.value("results_corrupted"))
        #expect(Double(record.excluded?.count ?? 0) == flagged)
        #expect(decoderMetrics.value("hedge_requests_sent") == 1)
    }

    /// With every worker honest, a lone query with A = 3 costs its first A + 1 = 4 copies: they
    /// agree, the decoder answers from them (not degraded), and the three copies held back are
    /// never sent.
    @Test(.timeLimit(.minutes(1))) func aLoneQueryWithHonestWorkersCostsAPlusOneCopies() async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let decoderMetrics = ServiceMetrics()
        let workerMetrics = ServiceMetrics()
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .nercc, workers: 40, batchSize: 10), workers: 4, stop: stop,
            decoderMetrics: decoderMetrics,
            workerMetrics: [0: workerMetrics, 1: workerMetrics, 2: workerMetrics, 3: workerMetrics]
        ) {
            $0.maximumBatchWaitMilliseconds = 1
            $0.adversaries = 3
            $0.hedgeAfterMilliseconds = 2_000
        }
        let query: [Float] = [0.3, -1.2, 2.5]
        let records = try await InMemoryPipelineTests.request(
            [query], of: runs, workers: 4, on: transport, stop: stop
        ) { !$0.isEmpty }
        let record = try #require(records.first)
        #expect(record.status == .ok && record.received == 4 && record.needed == 7)
        #expect(record.excluded == [])
        #expect(workerMetrics.value("tasks_computed") == 4)
        #expect(decoderMetrics.value("hedge_requests_sent") == 0)
    }

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
