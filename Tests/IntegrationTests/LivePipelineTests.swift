import CodedComputing
import Foundation
import Messaging
import NeuralInference
import NumPyFormat
import RabbitMQMessaging
import ServingMessages
import Testing

/// The serving system end to end: real `nercc` processes on a real RabbitMQ broker (started by
/// ops/test.sh, which sets NERCC_AMQP_URL, NERCC_MGMT_URL and NERCC_BINARY), serving the shipped
/// MNIST model.
@Suite(
    .serialized, .enabled(if: LiveSystem.isAvailable, "needs NERCC_AMQP_URL and NERCC_BINARY (ops/test.sh sets them)"))
struct LivePipelineTests {
    static let model = try! Model.load(descriptionPath: LiveSystem.modelPath)
    static let images: [[Float]] = {
        let url = LiveSystem.root.appendingPathComponent("data/mnist/test-images.npy")
        let array = try! NumPyArray(npyBytes: [UInt8](Data(contentsOf: url)))
        return (0..<64).map { r in array.values[(r * 784)..<((r + 1) * 784)].map { Float($0) } }
    }()

    /// nercc (40, 10) with `--adversaries 3`, padded batches, two honest workers and a third that
    /// negates every output (slowed, so that it holds few tasks of a batch), connected as
    /// `liarURL`'s user when given.
    static func systemWithLiar(
        prefix: String, decoder: [String], liarURL: String? = nil, liarMode: String = "negate", encoder: [String] = []
    ) async throws -> [ServiceProcess] {
        var services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "nercc", "--workers", "40", "--batch", "10", "--stragglers", "0", "--deadline-ms",
                "60000", "--adversaries", "3", "--partial-batches", "pad",
            ] + encoder,
            workers: [[], []], decoder: decoder)
        services.append(
            try ServiceProcess(
                [
                    "worker", "--model", LiveSystem.modelPath, "--worker-id", "\(prefix)-liar", "--byzantine", liarMode,
                    "--prefetch", "1", "--straggler-probability", "1", "--straggler-delay-ms", "40",
                ], prefix: prefix, name: "liar", url: liarURL))
        #expect(try await LiveSystem.waitForConsumers("\(prefix).tasks.mnist-mlp", 3), "the liar did not start")
        return services
    }

    /// How many predictions of `records` have the local model's class for their query.
    static func agreeing(_ records: [PredictionRecord], queries: [[Float]]) throws -> Int {
        var agree = 0
        for record in records {
            for prediction in record.predictions {
                let local = try Self.model.predict(flatRows: queries[prediction.index], count: 1)
                let best = local.indices.max { local[$0] < local[$1] } ?? 0
                if best == prediction.predictedClass { agree += 1 }
            }
        }
        return agree
    }

    /// A decoder counter summed over the series of one worker id, from /metrics lines.
    static func counted(_ lines: [Substring], _ name: String, worker: String) -> Double {
        lines.filter { $0.hasPrefix("nercc_decoder_\(name)_total") && $0.contains("worker=\"\(worker)\"") }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
    }

    /// Starts a decoder, an encoder and workers; waits until they all consume.
    static func system(
        prefix: String, scheme: [String], workers: [[String]], waitForWorkers: Int? = nil, decoder: [String] = [],
        model: String = LiveSystem.modelPath, modelName: String = "mnist-mlp"
    ) async throws -> [ServiceProcess] {
        var services = [
            try ServiceProcess(["decoder"] + decoder, prefix: prefix, name: "decoder"),
            try ServiceProcess(["encoder", "--model", model] + scheme, prefix: prefix, name: "encoder"),
        ]
        for (i, extra) in workers.enumerated() {
            services.append(
                try ServiceProcess(
                    ["worker", "--model", model, "--worker-id", "\(prefix)-w\(i)"] + extra,
                    prefix: prefix,
                    name: "worker\(i)"))
        }
        #expect(try await LiveSystem.waitForConsumers("\(prefix).results.0", 1), "the decoder did not start")
        #expect(
            try await LiveSystem.waitForConsumers("\(prefix).requests.\(modelName)", 1), "the encoder did not start")
        #expect(
            try await LiveSystem.waitForConsumers("\(prefix).tasks.\(modelName)", waitForWorkers ?? workers.count),
            "the workers did not start")
        return services
    }

    @Test func uncodedPredictionsEqualTheLocalModel() async throws {
        let prefix = LiveSystem.prefix()
        let services = try await Self.system(
            prefix: prefix, scheme: ["--scheme", "uncoded", "--workers", "4", "--batch", "4", "--stragglers", "0"],
            workers: [[], []])
        let client = try await TestClient.connect(prefix: prefix)
        for i in 0..<10 { try await client.send(queries: [Self.images[i]], id: "r\(i)") }
        try await client.send(queries: Array(Self.images[10..<16]), id: "multi")
        let replies = try await client.collect { TestClient.answered($0) >= 16 }
        let records = TestClient.predictions(replies)
        #expect(TestClient.answered(replies) == 16)
        for record in records {
            #expect(record.status == .ok)
            for p in record.predictions {
                let image = record.requestID == "multi" ? 10 + p.index : Int(record.requestID.dropFirst())!
                // A worker runs the tasks waiting for it as one forward pass, and OpenBLAS sums a
                // batch in another order than a single sample (docs/inference.md, batch invariance):
                // equal up to that rounding, and the same class.
                let local = try Self.model.predict(flatRows: Self.images[image], count: 1)
                let gap = zip(p.outputs, local).map { abs($0 - $1) }.max() ?? .infinity
                #expect(p.outputs.count == local.count && gap <= 1e-4, "request \(record.requestID) query \(p.index)")
                #expect(p.predictedClass == local.indices.max { local[$0] < local[$1] })
            }
        }
        await client.transport.close()
        _ = services
    }

    @Test func nerccPredictionsEqualTheLocalDecodeOfTheSameBatch() async throws {
        let prefix = LiveSystem.prefix()
        // S = 0: the decoder waits for all N results, so the decoding matrix is known.
        let services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "nercc", "--workers", "10", "--batch", "4", "--stragglers", "0", "--batch-wait-ms", "200",
            ],
            workers: [[], [], []])
        let client = try await TestClient.connect(prefix: prefix)
        let queries = Array(Self.images[0..<4])
        try await client.send(queries: queries, id: "batch")
        let replies = try await client.collect { TestClient.answered($0) >= 4 }
        let record = try #require(TestClient.predictions(replies).first)
        let code = try LinearCode(SchemeConfiguration(kind: .nercc, workers: 10, batchSize: 4))
        let coded = try code.encode(Matrix(rows: 4, columns: 784, float32Elements: queries.flatMap { $0 }))
        let outputs = try Self.model.predict(flatRows: coded.elements.map { Float($0) }, count: 10)
        let expected = try code.decode(Matrix(rows: 10, columns: 10, float32Elements: outputs), received: Array(0..<10))
        for p in record.predictions {
            for j in 0..<10 {
                #expect(abs(Double(p.outputs[j]) - expected[p.index, j]) <= 1e-3, "query \(p.index) output \(j)")
            }
        }
        // And the coded estimate agrees with the uncoded model on most of these queries.
        let exact = try queries.map { try Self.model.predict(flatRows: $0, count: 1) }
        let agree = record.predictions.filter { p in
            p.predictedClass == exact[p.index].indices.max { exact[p.index][$0] < exact[p.index][$1] }
        }
        #expect(agree.count >= 3)
        await client.transport.close()
        _ = services
    }

    /// A ResNet-18 exported from PyTorch to ONNX (torchvision's architecture, generated weights,
    /// models/onnx/) served with nercc coding: the encoder and three workers load the `.onnx` file
    /// and its sidecar, and the predictions equal the decode, computed here with the same graph, of
    /// the same coded batch.
    @Test func aResNet18FromOnnxIsServedWithNerccCoding() async throws {
        struct Reference: Decodable { let inputs: [[Float]] }
        let path = LiveSystem.repositoryPath("models/onnx/resnet18.onnx")
        let reference = try JSONDecoder().decode(
            Reference.self,
            from: Data(
                contentsOf: URL(fileURLWithPath: LiveSystem.repositoryPath("models/onnx/resnet18.reference.json"))))
        let prefix = LiveSystem.prefix()
        let services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "nercc", "--workers", "10", "--batch", "4", "--stragglers", "0", "--batch-wait-ms", "200",
            ],
            workers: [[], [], []], model: path, modelName: "resnet18-onnx")
        let client = try await TestClient.connect(prefix: prefix)
        let queries = Array(reference.inputs[0..<4])
        try await client.send(queries: queries, id: "resnet", model: "resnet18-onnx")
        let replies = try await client.collect { TestClient.answered($0) >= 4 }
        let record = try #require(TestClient.predictions(replies).first)
        #expect(record.model == "resnet18-onnx" && record.scheme == "nercc" && record.predictions.count == 4)
        let graph = try ONNXModel.load(path: path)
        let code = try LinearCode(SchemeConfiguration(kind: .nercc, workers: 10, batchSize: 4))
        let coded = try code.encode(Matrix(rows: 4, columns: 3 * 32 * 32, float32Elements: queries.flatMap { $0 }))
        let outputs = try graph.predict(flatRows: coded.elements.map { Float($0) }, count: 10)
        let expected = try code.decode(Matrix(rows: 10, columns: 10, float32Elements: outputs), received: Array(0..<10))
        for p in record.predictions {
            for j in 0..<10 {
                #expect(abs(Double(p.outputs[j]) - expected[p.index, j]) <= 1e-3, "query \(p.index) output \(j)")
            }
        }
        await client.transport.close()
        _ = services
    }

    /// Sixteen queries waiting at once go as one batch of four rows of K = 4 (`--max-rows 4`): ten
    /// task messages of four coded queries each, and every row decodes as a batch of its own would.
    @Test func aBacklogGoesAsRowsThatShareTasksAndEachRowDecodesAsItsOwnBatch() async throws {
        let prefix = LiveSystem.prefix()
        let services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "nercc", "--workers", "10", "--batch", "4", "--stragglers", "0", "--max-rows", "4",
            ],
            workers: [[], [], []])
        let client = try await TestClient.connect(prefix: prefix)
        let queries = Array(Self.images[0..<16])
        try await client.send(queries: queries, id: "rows")
        let replies = try await client.collect { TestClient.answered($0) >= 16 }
        let records = TestClient.predictions(replies)
        // One batch answered all sixteen: one prediction message, of a code with K = 4.
        #expect(records.count == 1)
        let record = try #require(records.first)
        #expect(record.batchSize == 4 && record.workers == 10)
        #expect(record.predictions.map(\.index) == Array(0..<16))
        let code = try LinearCode(SchemeConfiguration(kind: .nercc, workers: 10, batchSize: 4))
        for row in 0..<4 {
            let x = Matrix(rows: 4, columns: 784, float32Elements: queries[(4 * row)..<(4 * row + 4)].flatMap { $0 })
            let outputs = try Self.model.predict(flatRows: try code.encode(x).elements.map { Float($0) }, count: 10)
            let expected = try code.decode(
                Matrix(rows: 10, columns: 10, float32Elements: outputs), received: Array(0..<10))
            for p in record.predictions where p.index / 4 == row {
                for j in 0..<10 {
                    #expect(
                        abs(Double(p.outputs[j]) - expected[p.index % 4, j]) <= 1e-3, "query \(p.index) output \(j)")
                }
            }
        }
        await client.transport.close()
        _ = services
    }

    @Test func aWorkerThatNeverRepliesDoesNotStopACodedBatch() async throws {
        let prefix = LiveSystem.prefix()
        let services = try await Self.system(
            prefix: prefix, scheme: ["--scheme", "bacc", "--workers", "8", "--batch", "4", "--stragglers", "2"],
            workers: [["--never-reply", "--prefetch", "1"], [], []])
        let client = try await TestClient.connect(prefix: prefix)
        for i in 0..<12 { try await client.send(queries: [Self.images[i]], id: "r\(i)") }
        let replies = try await client.collect { TestClient.answered($0) >= 12 }
        #expect(TestClient.answered(replies) == 12)
        // The silent worker holds one task (prefetch 1) and never answers it; every batch still
        // decodes from the N_k − S_k results its code waits for (6 of 8 for a full batch, 1 of 2 for
        // a batch of one query), before its deadline. (Results that arrive before their manifest are
        // all decoded from, so a batch can use more than it waits for.)
        for record in TestClient.predictions(replies) {
            let k = try #require(record.batchSize)
            let expectedWait = [1: 1, 2: 3, 3: 4, 4: 6][k]
            #expect(
                record.status == .ok && record.received >= record.needed && record.needed == expectedWait,
                "\(record.requestID): \(record.status) from \(record.received) of \(record.needed), k = \(k)")
        }
        let held = try await LiveSystem.waitForUnacknowledgedTask(prefix: prefix)
        #expect(held, "the silent worker should hold its task unacknowledged")
        await client.transport.close()
        _ = services
    }

    /// A batch of one query is hedged: its first task goes to a worker that never answers, the
    /// decoder asks for the two copies the encoder held back, and a copy answers the query. A second
    /// query, answered by its first task, never has its copies published.
    @Test func aBatchOfOneIsAnsweredByItsHedgedCopiesWhenItsFirstTaskIsSilent() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        var services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "nercc", "--workers", "12", "--batch", "4", "--stragglers", "3", "--deadline-ms", "60000",
                "--hedge-after-ms", "200", "--http-port", "\(port)",
            ],
            workers: [["--never-reply", "--prefetch", "1"]])
        let client = try await TestClient.connect(prefix: prefix)
        try await client.send(queries: [Self.images[0]], id: "first")
        let held = try await LiveSystem.waitForUnacknowledgedTask(prefix: prefix)
        #expect(held, "the silent worker never took the first task")
        services.append(
            try ServiceProcess(
                ["worker", "--model", LiveSystem.modelPath, "--worker-id", "\(prefix)-good"], prefix: prefix,
                name: "good"))
        var replies = try await client.collect { TestClient.answered($0) >= 1 }
        try await client.send(queries: [Self.images[1]], id: "second")
        replies += try await client.collect { TestClient.answered($0) >= 1 }
        let records = TestClient.predictions(replies)
        #expect(records.count == 2)
        for record in records {
            let local = try Self.model.predict(flatRows: Self.images[record.requestID == "first" ? 0 : 1], count: 1)
            let outputs = try #require(record.predictions.first?.outputs)
            #expect(
                record.status == .ok && record.workers == 3 && record.needed == 1
                    && zip(outputs, local).allSatisfy { abs($0 - $1) <= 1e-4 },
                "\(record.requestID): \(record.status), \(record.received) of \(record.workers ?? 0)")
        }
        let (_, metrics) = try await LiveObservabilityTests.get("http://127.0.0.1:\(port)/metrics")
        func counter(_ name: String) -> Double? {
            metrics.split(separator: "\n").first { $0.hasPrefix("nercc_encoder_\(name)_total ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect(counter("tasks_held_back") == 4, "two copies held back per query")
        #expect(counter("hedge_requests") == 1, "only the first query's copies were asked for")
        #expect(counter("hedge_tasks_published") == 2)
        #expect(counter("tasks_published") == 4)
        await client.transport.close()
        _ = services
    }

    /// The hedge delay adapts: with the encoder's `--hedge-after-ms` at 10 s, the decoder learns
    /// from 40 batches of one query answered by their first task that first results come within
    /// milliseconds (its `hedge_delay_ms` gauge), and a query whose first task then goes to a worker
    /// that never answers is answered by its copies within 10 s (the copies are kept 2 s, so
    /// without adapting it would not be answered before its one-minute deadline).
    @Test func theHedgeDelayAdaptsToHowSoonFirstResultsCome() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        var services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "nercc", "--workers", "12", "--batch", "4", "--stragglers", "3", "--deadline-ms", "60000",
                "--hedge-after-ms", "10000",
            ],
            workers: [[]], decoder: ["--http-port", "\(port)"])
        let client = try await TestClient.connect(prefix: prefix)
        func gauge(_ name: String) async throws -> Double? {
            let (_, metrics) = try await LiveObservabilityTests.get("http://127.0.0.1:\(port)/metrics")
            return metrics.split(separator: "\n").first { $0.hasPrefix("nercc_decoder_\(name) ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        for i in 0..<40 {
            try await client.send(queries: [Self.images[i]], id: "warm\(i)")
            _ = try await client.collect { TestClient.answered($0) >= 1 }
        }
        let delay = try #require(try await gauge("hedge_delay_ms"))
        #expect(delay > 0 && delay < 2_000, "the adapted hedge delay is \(delay) ms")
        services.append(
            try ServiceProcess(
                [
                    "worker", "--model", LiveSystem.modelPath, "--worker-id", "\(prefix)-silent", "--never-reply",
                    "--prefetch", "1",
                ], prefix: prefix, name: "silent"))
        #expect(
            try await LiveSystem.waitForConsumers("\(prefix).tasks.mnist-mlp", 2), "the silent worker did not start")
        var hedged = false
        for i in 0..<20 where !hedged {
            try await client.send(queries: [Self.images[i]], id: "q\(i)")
            let replies = try await client.collect(seconds: 10) { TestClient.answered($0) >= 1 }
            let record = try #require(TestClient.predictions(replies).first, "q\(i) was not answered within 10 s")
            #expect(record.status == .ok, "q\(i): \(record.status)")
            hedged = (try await gauge("hedge_requests_sent_total") ?? 0) >= 1
        }
        #expect(hedged, "no query's first task went to the silent worker")
        await client.transport.close()
        _ = services
    }

    /// nercc (40, 10) with `--adversaries 3` and a worker process that negates every output (slowed,
    /// so that it holds few tasks of a batch): the predictions agree with the local model, every
    /// prediction says what it excluded, and the decoder's /metrics count the liar's results
    /// against its worker id.
    @Test func aByzantineWorkerIsExcludedAndFlagged() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        // The liar connects as a broker user of its own, which its results' user_id then names.
        let user = "\(prefix)-liar-user"
        #expect(
            try await LivePermissionTests.managementPUT("/api/users/\(user)", ["password": "pw", "tags": ""]) / 100 == 2
        )
        defer { Task { await LivePermissionTests.managementDELETE("/api/users/\(user)") } }
        #expect(
            try await LivePermissionTests.managementPUT(
                "/api/permissions/%2F/\(user)", ["configure": ".*", "write": ".*", "read": ".*"]) / 100 == 2)
        let base = try RabbitMQURL(LiveSystem.amqpURL!)
        let services = try await Self.systemWithLiar(
            prefix: prefix, decoder: ["--http-port", "\(port)"],
            liarURL: "amqp://\(user):pw@\(base.host):\(base.port)/%2F")
        let client = try await TestClient.connect(prefix: prefix)
        try await client.send(queries: Array(Self.images[0..<20]), id: "robust")
        let replies = try await client.collect { TestClient.answered($0) >= 20 }
        let records = TestClient.predictions(replies)
        var agree = 0
        for record in records {
            #expect(record.excluded != nil, "a robustly decoded batch says what it excluded")
            for prediction in record.predictions {
                let local = try Self.model.predict(flatRows: Self.images[prediction.index], count: 1)
                let best = local.indices.max { local[$0] < local[$1] } ?? 0
                if best == prediction.predictedClass { agree += 1 }
            }
        }
        #expect(agree >= 19, "\(agree) of 20 predictions agree with the local model")
        let excluded = records.flatMap { $0.excluded ?? [] }
        #expect(!excluded.isEmpty, "the liar's results were excluded")
        let (_, metrics) = try await LiveObservabilityTests.get("http://127.0.0.1:\(port)/metrics")
        let flagged = metrics.split(separator: "\n").filter { $0.hasPrefix("nercc_decoder_results_flagged_total") }
        // Told to tolerate three while the liar holds one or two tasks of a batch, the check may
        // also exclude an honest result where the curve bends (docs/robustness.md, "Told to
        // tolerate more"); the liar's results are the ones it must find.
        #expect(
            flagged.contains { $0.contains("worker=\"\(prefix)-liar\"") && $0.contains("user=\"\(user)\"") },
            "the liar is flagged under its broker user: \(flagged)")
        // The predictions say which broker user published them: the decoder's.
        #expect(replies.allSatisfy { $0.properties.userID == base.user }, "\(replies.map(\.properties.userID))")
        await client.transport.close()
        _ = services
    }

    /// The quarantine against RabbitMQ: nercc (40, 10) with `--adversaries 3`, a decoder with
    /// `--quarantine-seconds 600`, and a worker process that negates every output (slowed, so that
    /// it holds one or two tasks of a batch). Over thirty-two batches the liar is flagged in most of its
    /// first, then quarantined: the decoder counts the quarantine and the results it left out
    /// against the liar's worker id and no honest worker's, and every answer agrees with the local
    /// model.
    @Test func aWorkerFlaggedInMostOfItsBatchesIsQuarantined() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        let services = try await Self.systemWithLiar(
            prefix: prefix, decoder: ["--http-port", "\(port)", "--quarantine-seconds", "600"])
        let client = try await TestClient.connect(prefix: prefix)
        let queries = (0..<320).map { Self.images[$0 % Self.images.count] }
        try await client.send(queries: queries, id: "quarantine")
        let records = TestClient.predictions(try await client.collect { TestClient.answered($0) >= 320 })
        let agree = try Self.agreeing(records, queries: queries)
        #expect(agree >= 312, "\(agree) of 320 predictions agree with the local model")
        let (_, metrics) = try await LiveObservabilityTests.get("http://127.0.0.1:\(port)/metrics")
        let lines = metrics.split(separator: "\n")
        func counted(_ name: String, _ worker: String) -> Double { Self.counted(lines, name, worker: worker) }
        #expect(counted("sources_quarantined", "\(prefix)-liar") == 1, "\(lines.filter { $0.contains("quarantin") })")
        #expect(counted("results_quarantined", "\(prefix)-liar") >= 1)
        for honest in ["\(prefix)-w0", "\(prefix)-w1"] {
            #expect(counted("sources_quarantined", honest) == 0, "\(honest) was quarantined")
        }
        #expect(metrics.contains("nercc_decoder_quarantined_sources 1"), "one worker in quarantine")
        await client.transport.close()
        _ = services
    }

    /// The output check against RabbitMQ: the encoder and the decoder given the MNIST MLP's (40, 10)
    /// calibration profile, which holds its output check, and a worker process that answers every
    /// task with a constant. The decoder leaves the constant results out before the spline check,
    /// counts them under `results_failed_output_check` against the liar's worker id (never an honest
    /// one's) and among its flagged results, and every answer agrees with the local model.
    @Test func resultsOfAnotherShapeFailTheOutputCheckFromTheProfile() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        let profile = LiveSystem.root.appendingPathComponent("profiles/mnist-mlp-N40-K10.json").path
        let services = try await Self.systemWithLiar(
            prefix: prefix, decoder: ["--http-port", "\(port)", "--profile", profile], liarMode: "constant:0.5",
            encoder: ["--profile", profile])
        let client = try await TestClient.connect(prefix: prefix)
        let queries = (0..<40).map { Self.images[$0 % Self.images.count] }
        try await client.send(queries: queries, id: "output-check")
        let records = TestClient.predictions(try await client.collect { TestClient.answered($0) >= 40 })
        let agree = try Self.agreeing(records, queries: queries)
        #expect(agree >= 39, "\(agree) of 40 predictions agree with the local model")
        let (_, metrics) = try await LiveObservabilityTests.get("http://127.0.0.1:\(port)/metrics")
        let lines = metrics.split(separator: "\n")
        func counted(_ name: String, _ worker: String) -> Double { Self.counted(lines, name, worker: worker) }
        let failed = counted("results_failed_output_check", "\(prefix)-liar")
        #expect(failed >= 1, "\(lines.filter { $0.contains("output_check") })")
        #expect(counted("results_flagged", "\(prefix)-liar") >= failed)
        for honest in ["\(prefix)-w0", "\(prefix)-w1"] {
            #expect(counted("results_failed_output_check", honest) == 0, "\(honest) failed the output check")
        }
        await client.transport.close()
        _ = services
    }

    /// Unpadded, with `--adversaries 2`, a lone query is a vote of 2A + 1 = 5 copies: the first
    /// three go to the three workers (prefetch 1), one of which negates, so they disagree; the
    /// decoder asks for the two held back and answers once three agree. Every answer is the local
    /// model's, and the liar is flagged.
    @Test func aLoneQueryIsAnsweredByAVoteOfCopiesDespiteALiar() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        var services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "nercc", "--workers", "12", "--batch", "4", "--stragglers", "0", "--deadline-ms", "60000",
                "--adversaries", "2",
            ],
            workers: [["--prefetch", "1"], ["--prefetch", "1"]], decoder: ["--http-port", "\(port)"])
        services.append(
            try ServiceProcess(
                [
                    "worker", "--model", LiveSystem.modelPath, "--worker-id", "\(prefix)-liar", "--byzantine", "negate",
                    "--prefetch", "1",
                ], prefix: prefix, name: "liar"))
        #expect(try await LiveSystem.waitForConsumers("\(prefix).tasks.mnist-mlp", 3), "the liar did not start")
        let client = try await TestClient.connect(prefix: prefix)
        var records: [PredictionRecord] = []
        for i in 0..<6 {
            // One at a time, so that every batch holds one query.
            try await client.send(queries: [Self.images[i]], id: "vote-\(i)")
            records += TestClient.predictions(try await client.collect { TestClient.answered($0) >= 1 })
        }
        #expect(records.count == 6)
        for record in records {
            #expect(record.batchSize == 1 && record.workers == 5 && record.needed == 5, "\(record)")
            #expect(record.received >= 3 && record.excluded != nil)
            let prediction = try #require(record.predictions.first)
            let local = try Self.model.predict(flatRows: Self.images[Int(record.requestID.dropFirst(5))!], count: 1)
            for (got, want) in zip(prediction.outputs, local) {
                #expect(abs(got - want) <= 1e-4 * (1 + abs(want)), "\(record.requestID)")
            }
        }
        let (_, metrics) = try await LiveObservabilityTests.get("http://127.0.0.1:\(port)/metrics")
        let flagged = metrics.split(separator: "\n").filter { $0.hasPrefix("nercc_decoder_results_flagged_total") }
        #expect(flagged.contains { $0.contains("worker=\"\(prefix)-liar\"") }, "the liar is flagged: \(flagged)")
        #expect(
            !flagged.contains { $0.contains("-w0") || $0.contains("-w1") }, "no honest worker is flagged: \(flagged)")
        await client.transport.close()
        _ = services
    }

    /// With an authentication key, a result must echo its task's token: a forged result for a real
    /// task (the right batch and coded index, read off the task itself, with a wrong token or none)
    /// that reaches the decoder before the honest one is dead-lettered as `bad-token`, never
    /// decoded, and the query is answered from the honest worker's result.
    @Test func aForgedResultIsDeadLetteredAsBadTokenNotDecoded() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        let keyFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix).key")
        try Data((0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined().utf8)
            .write(to: keyFile)
        defer { try? FileManager.default.removeItem(at: keyFile) }
        let key = ["--auth-key-file", keyFile.path]
        let decoder = try ServiceProcess(
            ["decoder", "--http-port", "\(port)"] + key, prefix: prefix, name: "decoder")
        let encoder = try ServiceProcess(
            [
                "encoder", "--model", LiveSystem.modelPath, "--scheme", "uncoded", "--workers", "1", "--batch", "1",
                "--stragglers", "0", "--deadline-ms", "60000",
            ] + key, prefix: prefix, name: "encoder")
        // The honest worker holds its task for 1.5 s, so the forged results arrive first.
        let worker = try ServiceProcess(
            [
                "worker", "--model", LiveSystem.modelPath, "--straggler-probability", "1", "--straggler-delay-ms",
                "1500",
            ], prefix: prefix, name: "worker")
        #expect(try await LiveSystem.waitForConsumers("\(prefix).results.0", 1), "the decoder did not start")
        #expect(try await LiveSystem.waitForConsumers("\(prefix).tasks.mnist-mlp", 1), "the worker did not start")
        let client = try await TestClient.connect(prefix: prefix)
        // A copy of every task, as an eavesdropper on the tasks exchange would see it.
        let snoop = "\(prefix).snoop"
        try await client.transport.declare(
            Topology(
                queues: [.init(name: snoop, durable: false, exclusive: true, autoDelete: true)],
                bindings: [.init(queue: snoop, exchange: "\(prefix).tasks", routingKey: "mnist-mlp")]))
        var tasks = try await client.transport.consume(queue: snoop, prefetch: 10, consumerTag: "snoop")
            .makeAsyncIterator()
        try await client.send(queries: [Self.images[3]], id: "signed")
        let task = try #require(try await tasks.next(before: .now + .seconds(30)), "no task was published")
        let batchID = try #require(task.properties.headers[WireFormat.Header.batchID]?.stringValue)
        let index = try #require(task.properties.headers[WireFormat.Header.codedIndex]?.intValue)
        let token = try #require(
            task.properties.headers[WireFormat.Header.token]?.stringValue, "the task carries no token")
        // The right batch and index; a token with its last digit changed, and no token at all.
        let wrong = String(token.dropLast()) + (token.hasSuffix("0") ? "1" : "0")
        for forged in [wrong, nil] {
            var headers: [String: HeaderValue] = [
                WireFormat.Header.version: 1, WireFormat.Header.batchID: .string(batchID),
                WireFormat.Header.codedIndex: .int(index), WireFormat.Header.shape: "10",
                WireFormat.Header.worker: "forger",
            ]
            if let forged { headers[WireFormat.Header.token] = .string(forged) }
            try await client.transport.publish(
                OutgoingMessage(
                    exchange: "", routingKey: "\(prefix).worker-results.0",
                    properties: MessageProperties(
                        contentType: WireFormat.tensorContentType, messageID: "\(batchID)/\(index)/result",
                        correlationID: batchID, type: WireFormat.MessageType.result, persistent: false,
                        headers: headers),
                    body: TensorBody.encode([Float](repeating: 100, count: 10))))
        }
        var dead = try await client.transport.consume(
            queue: "\(prefix).dead-letter", prefetch: 10, consumerTag: "dead"
        ).makeAsyncIterator()
        var codes: [String] = []
        for _ in 0..<2 {
            let letter = try await dead.next(before: .now + .seconds(20))
            codes.append(letter?.properties.headers[WireFormat.Header.errorCode]?.stringValue ?? "none")
            #expect(letter?.properties.headers[WireFormat.Header.batchID]?.stringValue == batchID)
        }
        #expect(codes == ["bad-token", "bad-token"], "\(decoder.output)")
        let replies = try await client.collect { TestClient.answered($0) >= 1 }
        let record = try #require(TestClient.predictions(replies).first, "no prediction: \(decoder.output)")
        let local = try Self.model.predict(flatRows: Self.images[3], count: 1)
        let outputs = record.predictions[0].outputs
        #expect(zip(outputs, local).allSatisfy { abs($0 - $1) < 1e-3 }, "decoded from a forged result: \(outputs)")
        let (_, metrics) = try await LiveObservabilityTests.get("http://127.0.0.1:\(port)/metrics")
        let counted = metrics.split(separator: "\n").first {
            $0.hasPrefix("nercc_decoder_bad_tokens_total{type=\"nercc.result\"}")
        }
        #expect(counted.flatMap { $0.split(separator: " ").last.flatMap { Double($0) } } == 2, "\(metrics)")
        await client.transport.close()
        _ = (encoder, worker)
    }

    @Test func killingAWorkerMidTaskLosesNothing() async throws {
        let prefix = LiveSystem.prefix()
        var services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "uncoded", "--workers", "2", "--batch", "2", "--stragglers", "0", "--deadline-ms", "60000",
            ],
            workers: [["--straggler-probability", "1", "--straggler-delay-ms", "30000"]])
        let client = try await TestClient.connect(prefix: prefix)
        for i in 0..<4 { try await client.send(queries: [Self.images[i]], id: "r\(i)") }
        let holding = try await LiveSystem.waitForUnacknowledgedTask(prefix: prefix)
        #expect(holding, "the slow worker never took a task")
        services[2].signal(SIGKILL)
        #expect(try await services[2].waitForExit(10) != nil)
        services.append(
            try ServiceProcess(["worker", "--model", LiveSystem.modelPath], prefix: prefix, name: "replacement"))
        let replies = try await client.collect { TestClient.answered($0) >= 4 }
        #expect(TestClient.answered(replies) == 4)
        let dead = try await LiveSystem.queue("\(prefix).dead-letter")["messages"] as? Int ?? 0
        #expect(dead == 0)
        await client.transport.close()
    }

    /// A decoder alone, fed a hand-made batch: bacc with N = 4, K = 2 that waits for 3 results, then
    /// the results with the coded indices given, in that order (the batch's output size is 2).
    /// Returns the client (its replies are still to collect), the batch id and the decoder.
    static func forgedBatch(prefix: String, results indices: [Int]) async throws -> (
        TestClient, String, ServiceProcess
    ) {
        let decoder = try ServiceProcess(["decoder"], prefix: prefix, name: "decoder")
        #expect(try await LiveSystem.waitForConsumers("\(prefix).results.0", 1))
        let client = try await TestClient.connect(prefix: prefix)
        let batchID = "forged-\(prefix)"
        let manifest = BatchManifest(
            batchID: batchID, model: "m", scheme: .init(name: "bacc", workers: 4, batchSize: 2), waitFor: 3,
            createdMilliseconds: Int64(Date().timeIntervalSince1970 * 1000),
            deadlineMilliseconds: Int64(Date().timeIntervalSince1970 * 1000) + 60_000, outputSize: 2, labels: nil,
            members: [
                .init(requestID: "a", index: 0, requestQueries: 2, replyTo: client.replyQueue),
                .init(requestID: "a", index: 1, requestQueries: 2, replyTo: client.replyQueue),
            ])
        try await client.transport.publish(
            OutgoingMessage(
                exchange: "\(prefix).results", routingKey: "0",
                properties: MessageProperties(
                    contentType: WireFormat.jsonContentType, messageID: "\(batchID)/manifest",
                    type: WireFormat.MessageType.manifest, headers: [WireFormat.Header.version: 1]),
                body: Array(try JSONEncoder().encode(manifest))))
        for n in indices {
            try await client.transport.publish(
                OutgoingMessage(
                    exchange: "", routingKey: "\(prefix).results.0",
                    properties: MessageProperties(
                        contentType: WireFormat.tensorContentType, messageID: "\(batchID)/\(n)/result",
                        correlationID: batchID,
                        type: WireFormat.MessageType.result,
                        headers: [
                            WireFormat.Header.version: 1, WireFormat.Header.batchID: .string(batchID),
                            WireFormat.Header.codedIndex: .int(Int64(n)), WireFormat.Header.shape: "2",
                        ]),
                    body: TensorBody.encode([Float(n), 1])))
        }
        return (client, batchID, decoder)
    }

    @Test func aDuplicatedResultIsDecodedOnce() async throws {
        let prefix = LiveSystem.prefix()
        // Worker 1's result twice (a redelivery), then two more: the decoder needs three distinct ones.
        let (client, _, decoder) = try await Self.forgedBatch(prefix: prefix, results: [1, 1, 0, 3, 2])
        let replies = try await client.collect(seconds: 5) { _ in false }
        let records = TestClient.predictions(replies)
        #expect(records.count == 1, "expected exactly one prediction for the batch, got \(records.count)")
        #expect(records.first?.received == 3)
        #expect(
            try await LiveSystem.eventually(10) {
                (try await LiveSystem.queue("\(prefix).results.0")["messages"] as? Int ?? -1) == 0
            }, "the duplicate and the late result were not acknowledged")
        await client.transport.close()
        _ = decoder
    }

    @Test func aResultWithAnOutOfRangeIndexIsDeadLetteredAndTheBatchDecodes() async throws {
        let prefix = LiveSystem.prefix()
        // A misbehaving worker's result for coded index 12 of a batch of N = 4, then three valid ones.
        let (client, batchID, decoder) = try await Self.forgedBatch(prefix: prefix, results: [12, 0, 1, 3])
        let replies = try await client.collect(seconds: 5) { TestClient.answered($0) >= 2 }
        let records = TestClient.predictions(replies)
        #expect(records.count == 1 && records.first?.status == .ok, "the batch did not decode: \(replies.count)")
        #expect(records.first?.received == 3)
        var dead = try await client.transport.consume(
            queue: "\(prefix).dead-letter", prefetch: 10, consumerTag: "dead"
        ).makeAsyncIterator()
        let letter = try await dead.next(before: ContinuousClock.now + .seconds(10))
        #expect(letter?.properties.messageID == "\(batchID)/12/result", "the bad result was not dead-lettered")
        #expect(letter?.properties.headers[WireFormat.Header.errorCode]?.stringValue == "bad-header")
        #expect(letter?.properties.headers[WireFormat.Header.rejectedBy]?.stringValue == "decoder")
        await client.transport.close()
        _ = decoder
    }

    @Test func aMalformedRequestIsDeadLetteredAndAnswered() async throws {
        let prefix = LiveSystem.prefix()
        let services = try await Self.system(
            prefix: prefix, scheme: ["--scheme", "nercc", "--workers", "6", "--batch", "2", "--stragglers", "1"],
            workers: [[]])
        let client = try await TestClient.connect(prefix: prefix)
        try await client.send(Array("{\"version\": 1, \"model\": ".utf8), id: "broken")
        try await client.send(
            Array("{\"version\": 1, \"model\": \"mnist-mlp\", \"queries\": [[1, 2]]}".utf8), id: "short")
        try await client.send(
            Array("{\"version\": 1, \"model\": \"other\", \"queries\": [[1]]}".utf8), id: "unknown", model: "other")
        let replies = try await client.collect { $0.count >= 3 }
        let errors = replies.compactMap { try? JSONDecoder().decode(ErrorRecord.self, from: Data($0.body)) }
        #expect(Set(errors.map(\.code)) == ["malformed-json", "wrong-shape", "unknown-model"])
        #expect(Set(replies.compactMap(\.properties.correlationID)) == ["broken", "short", "unknown"])
        let dead = try await client.transport.consume(queue: "\(prefix).dead-letter", prefetch: 10, consumerTag: "dead")
        var reasons: [String: String] = [:]
        for try await d in dead {
            reasons[d.properties.messageID ?? "?"] = d.properties.headers[WireFormat.Header.errorCode]?.stringValue
            try await client.transport.ack(d.tag)
            if reasons.count == 3 { break }
        }
        #expect(reasons == ["broken": "malformed-json", "short": "wrong-shape", "unknown": "unknown-model"])
        await client.transport.close()
        _ = services
    }

    /// A request that the encoders holding it keep failing on (here: returned to its queue by a
    /// stand-in that rejects it with requeue) is answered `redelivered` and dead-lettered on its
    /// last delivery, when its `x-delivery-count` has reached `x-delivery-limit`, instead of being
    /// dropped unanswered by the broker on the next return.
    @Test func aRequestOnItsLastDeliveryIsAnsweredRedeliveredAndDeadLettered() async throws {
        let prefix = LiveSystem.prefix()
        let limit = ["--delivery-limit", "2"]
        let scheme = ["--scheme", "uncoded", "--workers", "1", "--batch", "1", "--stragglers", "0"]
        let requests = "\(prefix).requests.mnist-mlp"
        let decoder = try ServiceProcess(["decoder"] + limit, prefix: prefix, name: "decoder")
        let first = try ServiceProcess(
            ["encoder", "--model", LiveSystem.modelPath] + scheme + limit, prefix: prefix, name: "encoder")
        #expect(try await LiveSystem.waitForConsumers("\(prefix).results.0", 1), "the decoder did not start")
        #expect(try await LiveSystem.waitForConsumers(requests, 1), "the encoder did not start")
        // The topology exists; stop the encoder, then play a failing one.
        first.signal(SIGTERM)
        #expect(try await first.waitForExit(30) != nil)
        let client = try await TestClient.connect(prefix: prefix)
        try await client.send(queries: [Self.images[0]], id: "looping")
        let stream = try await client.transport.consume(queue: requests, prefetch: 1, consumerTag: "failing encoder")
        var counts: [Int64] = []
        for try await d in stream {
            counts.append(d.properties.headers["x-delivery-count"]?.intValue ?? 0)
            // Cancel before the second return, so the broker cannot deliver it to this consumer again.
            if counts.count == 2 { try await client.transport.cancel(consumerTag: "failing encoder") }
            try await client.transport.reject(d.tag, requeue: true)
            if counts.count == 2 { break }
        }
        #expect(counts == [0, 1])
        // Returned twice with a limit of 2: one more return would drop it. The next encoder answers it.
        let second = try ServiceProcess(
            ["encoder", "--model", LiveSystem.modelPath] + scheme + limit, prefix: prefix, name: "encoder2")
        let replies = try await client.collect { $0.count >= 1 }
        let errors = replies.compactMap { try? JSONDecoder().decode(ErrorRecord.self, from: Data($0.body)) }
        #expect(errors.map(\.code) == ["redelivered"], "\(second.output)")
        #expect(replies.first?.properties.correlationID == "looping")
        let dead = try await client.transport.consume(queue: "\(prefix).dead-letter", prefetch: 10, consumerTag: "dead")
        var iterator = dead.makeAsyncIterator()
        let letter = try await iterator.next(before: .now + .seconds(30))
        #expect(letter?.properties.messageID == "looping")
        #expect(letter?.properties.headers[WireFormat.Header.errorCode]?.stringValue == "redelivered")
        if let letter { try await client.transport.ack(letter.tag) }
        // Nothing else was answered: one answer for the query.
        #expect(try await client.collect(seconds: 2) { _ in false }.isEmpty)
        await client.transport.close()
        _ = (decoder, second)
    }

    @Test func sigtermDrainsAWorkerWithoutRedeliveries() async throws {
        let prefix = LiveSystem.prefix()
        let services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "uncoded", "--workers", "1", "--batch", "1", "--stragglers", "0", "--deadline-ms", "60000",
            ],
            workers: [["--straggler-probability", "1", "--straggler-delay-ms", "5000"]])
        let client = try await TestClient.connect(prefix: prefix)
        try await client.send(queries: [Self.images[0]], id: "slow")
        #expect(
            try await LiveSystem.waitForUnacknowledgedTask(prefix: prefix))
        services[2].signal(SIGTERM)
        let status = try await services[2].waitForExit(15)
        #expect(status == 0, "the worker did not drain and exit cleanly: \(services[2].output.suffix(800))")
        let replies = try await client.collect(seconds: 20) { TestClient.answered($0) >= 1 }
        #expect(TestClient.answered(replies) == 1)
        // The task left the queue settled: delivered once, not requeued, not dead-lettered. The ack
        // counter itself is not asserted: a channel that closes right after its ack can take the
        // counter's last increment with it, while the queue's depth is exact.
        var stats: [String: Any] = [:]
        let settled = try await LiveSystem.eventually(20) {
            stats = try await LiveSystem.queue("\(prefix).tasks.mnist-mlp")
            let delivered = (stats["message_stats"] as? [String: Any])?["deliver"] as? Int ?? 0
            return delivered >= 1 && (stats["messages"] as? Int ?? -1) == 0
                && (stats["messages_unacknowledged"] as? Int ?? -1) == 0
        }
        #expect(settled, "the task was not settled: \(stats)")
        let redelivered = (stats["message_stats"] as? [String: Any])?["redeliver"] as? Int ?? 0
        #expect(redelivered == 0)
        let dead = try await LiveSystem.queue("\(prefix).dead-letter")
        #expect((dead["messages"] as? Int ?? -1) == 0, "the task was dead-lettered: \(dead)")
        await client.transport.close()
    }

    @Test func parityServesPredictionsThroughParityWorkers() async throws {
        let prefix = LiveSystem.prefix()
        let parityModel = LiveSystem.root.appendingPathComponent("models/mnist-mlp-parity-k2/model.json").path
        var services = try await Self.system(
            prefix: prefix,
            scheme: [
                "--scheme", "parity", "--workers", "6", "--batch", "4", "--group", "2", "--stragglers", "0",
                "--deadline-ms", "20000",
            ],
            workers: [[], ["--never-reply", "--prefetch", "1"]], waitForWorkers: 2)
        services.append(
            try ServiceProcess(
                ["worker", "--model", parityModel, "--worker-id", "\(prefix)-parity"], prefix: prefix, name: "parity"))
        #expect(try await LiveSystem.waitForConsumers("\(prefix).tasks.mnist-mlp-parity-k2", 1), "no parity worker")
        let client = try await TestClient.connect(prefix: prefix)
        for i in 0..<8 { try await client.send(queries: [Self.images[i]], id: "r\(i)") }
        let replies = try await client.collect { TestClient.answered($0) >= 8 }
        #expect(TestClient.answered(replies) == 8)
        // The silent base worker holds one task: its query is rebuilt from the parity model's output.
        #expect(TestClient.predictions(replies).allSatisfy { $0.status == .ok && $0.scheme == "parity" })
        // Received queries are copied exactly; a rebuilt one is approximate (ParM's degraded mode).
        var agree = 0
        for record in TestClient.predictions(replies) {
            let image = Int(record.requestID.dropFirst())!
            let local = try Self.model.predict(flatRows: Self.images[image], count: 1)
            let best = local.indices.max { local[$0] < local[$1] }!
            if record.predictions.first?.predictedClass == best { agree += 1 }
        }
        #expect(agree >= 7, "only \(agree) of 8 predictions agree with the local model")
        await client.transport.close()
    }
}
