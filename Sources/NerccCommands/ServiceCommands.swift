import AccuracyStudy
import ArgumentParser
import CodedComputing
import Foundation
import Logging
import ServingPipeline

/// Loads the model descriptions named on the command line.
func loadModels(_ paths: [String]) throws -> [NativeModel] {
    guard !paths.isEmpty else {
        throw CommandError("no model: pass --model PATH/model.json or PATH/model.onnx (env NERCC_MODELS)")
    }
    return try paths.map { path in
        do { return try NativeModel(descriptionPath: path) } catch { throw CommandError("\(error)") }
    }
}

/// `nercc encoder`.
struct EncoderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encoder",
        abstract: "Batch incoming requests, encode each batch and publish its manifest and coded tasks.")

    @OptionGroup var connection: ConnectionOptions

    @OptionGroup var authentication: AuthenticationOptions

    @Option(
        name: .customLong("model"),
        help: "A model to serve: a model.json or an ONNX graph (.onnx) (repeatable; env NERCC_MODELS, comma-separated)."
    )
    var models: [String] = Environment.list("NERCC_MODELS")

    @Option(help: "Scheme: uncoded, replication, parity, lcc, bacc, nercc, nercc-ag (env NERCC_SCHEME).")
    var scheme: String = Environment.string("NERCC_SCHEME", "nercc")

    @Option(name: .long, help: "N, coded tasks per batch (env NERCC_WORKERS).")
    var workers: Int = Environment.int("NERCC_WORKERS", 12)

    @Option(name: .long, help: "K, queries per batch (env NERCC_BATCH).")
    var batch: Int = Environment.int("NERCC_BATCH", 4)

    @Option(help: "S, stragglers the coded schemes do not wait for: decode after N − S results (env NERCC_STRAGGLERS).")
    var stragglers: Int = Environment.int("NERCC_STRAGGLERS", 3)

    @Option(name: .customLong("lambda-enc"), help: "λ_enc for nercc (env NERCC_LAMBDA_ENC).")
    var lambdaEncoder: Double = Environment.double("NERCC_LAMBDA_ENC", 0)

    @Option(name: .customLong("lambda-dec"), help: "λ_dec for nercc (env NERCC_LAMBDA_DEC).")
    var lambdaDecoder: Double = Environment.double("NERCC_LAMBDA_DEC", 0)

    @Option(help: "r for replication; 0: N / K (env NERCC_REPLICAS).")
    var replicas: Int = Environment.int("NERCC_REPLICAS", 0)

    @Option(help: "G for parity; 0: the smallest G with N = K + ⌈K/G⌉ (env NERCC_GROUP).")
    var group: Int = Environment.int("NERCC_GROUP", 0)

    @Option(
        name: .customLong("profile"),
        help: ArgumentHelp(
            "A calibration profile from `nercc calibrate`; repeatable (env NERCC_PROFILE, comma-separated).",
            discussion:
                "One profile must match N and K: it sets λ_enc, and λ_dec per results received. Profiles of the smaller codes that partial batches use (see docs/architecture.md) set theirs; sizes without a profile use the model-agnostic rule."
        ))
    var profiles: [String] = Environment.list("NERCC_PROFILE")

    @Option(
        help:
            "Longest wait of a partial batch for more queries, ms; it waits only while queries arrive fast enough to fill it in that time; under load, when rows wait, it waits with --row-wait-ms instead (env NERCC_BATCH_WAIT_MS)."
    )
    var batchWaitMs: Int = Environment.int("NERCC_BATCH_WAIT_MS", 2)

    @Option(
        help:
            "Partial batches: 'adaptive' gives a batch of k < K queries a code of its own size (⌈N·k/K⌉ tasks); 'pad' fills it to K with copies (N tasks; for comparisons) (env NERCC_PARTIAL_BATCHES)."
    )
    var partialBatches: String = Environment.string("NERCC_PARTIAL_BATCHES", "adaptive")

    @Flag(
        inversion: .prefixedNo,
        help:
            "Copy each batch's manifest onto its tasks, so the decoder can answer from the results before the manifest arrives (env NERCC_MANIFEST_IN_TASKS)."
    )
    var manifestInTasks: Bool = Environment.bool("NERCC_MANIFEST_IN_TASKS", true)

    @Flag(
        inversion: .prefixedNo,
        help:
            "Cut a partial batch into the smallest batches that cost no more tasks per query (one query when N/K is whole) instead of sending it whole (env NERCC_SPLIT_PARTIAL_BATCHES)."
    )
    var splitPartialBatches: Bool = Environment.bool("NERCC_SPLIT_PARTIAL_BATCHES", true)

    @Flag(
        inversion: .prefixedNo,
        help:
            "For uncoded and replication, send each slot of a batch as a batch of its own, so a query waits only for its own tasks; --no-slot-batches sends batches whole, one manifest for all their slots (env NERCC_SLOT_BATCHES)."
    )
    var slotBatches: Bool = Environment.bool("NERCC_SLOT_BATCHES", true)

    @Option(help: "How long the decoder waits for a batch's results, ms (env NERCC_DEADLINE_MS).")
    var deadlineMs: Int = Environment.int("NERCC_DEADLINE_MS", 5_000)

    @Option(help: "Requests held at once (env NERCC_PREFETCH).")
    var prefetch: Int = Environment.int("NERCC_PREFETCH", 256)

    @Option(help: "Largest accepted request body in bytes (env NERCC_MAX_REQUEST_BYTES).")
    var maxRequestBytes: Int = Environment.int("NERCC_MAX_REQUEST_BYTES", 16 << 20)

    @Option(
        help:
            "Times a batch is published while the broker refuses it (nacks: a full queue with reject-publish) before its queries are answered 'overloaded' (env NERCC_PUBLISH_ATTEMPTS)."
    )
    var publishAttempts: Int = Environment.int("NERCC_PUBLISH_ATTEMPTS", 3)

    @Option(
        help:
            "Wait before publishing a refused batch again, ms, doubled at each further attempt (env NERCC_PUBLISH_RETRY_MS)."
    )
    var publishRetryMs: Int = Environment.int("NERCC_PUBLISH_RETRY_MS", 200)

    @Option(
        help: ArgumentHelp(
            "Most rows of K queries in one batch (env NERCC_MAX_ROWS).",
            discussion:
                "When K or more queries wait, their whole rows go as one batch whose N tasks carry one coded query per row (x-nercc-rows), so a backlog costs fewer messages per query; 1 sends every K queries as a batch of their own. Workers must read x-nercc-rows (schemas/README.md)."
        ))
    var maxRows: Int = Environment.int("NERCC_MAX_ROWS", 8)

    @Option(
        help:
            "Longest wait of whole rows for another row (and, under load, of a partial batch, as the next batch's first row), ms from the batch's first query; they wait only while queries arrive fast enough to complete it in that time and the steady rate brings two rows within it; 0 never waits (env NERCC_ROW_WAIT_MS)."
    )
    var rowWaitMs: Int = Environment.int("NERCC_ROW_WAIT_MS", 30)

    @Option(
        help: ArgumentHelp(
            "Hedged batches: publish a batch that any one result decodes (a batch of one query) as its first task only, and its other copies when the decoder asks for them, this many ms after it was encoded if it is not decodable by then; 0 publishes every copy at once (env NERCC_HEDGE_AFTER_MS).",
            discussion:
                "At light load a query then costs one task and one result instead of N/K; a slow first task costs the hedge delay. The encoder declares its own hedge queue for the decoders' requests (schemas/README.md)."
        ))
    var hedgeAfterMs: Int = Environment.int("NERCC_HEDGE_AFTER_MS", 15)

    @Flag(
        inversion: .prefixedNo,
        help: ArgumentHelp(
            "For bacc, nercc and nercc-ag: keep each batch's tasks for 2 s and publish those a decoder asks for again, when more than S of them are late; --no-resend does not keep them (env NERCC_RESEND).",
            discussion:
                "Decoders ask (unless run with --resend-after-ms 0), once per batch, through this encoder's hedge queue, which the encoder then declares even with --hedge-after-ms 0 (schemas/README.md)."
        ))
    var resend: Bool = Environment.bool("NERCC_RESEND", true)

    @Option(
        help: ArgumentHelp(
            "Byzantine workers to tolerate: each batch's decoder finds and excludes up to this many wrong results, with the spline check (nercc, nercc-ag) or ApproxIFER's locator (bacc); 0 decodes plainly (env NERCC_ADVERSARIES).",
            discussion:
                "N − S must meet the decoder's bound (2A + 3 results for the spline check, 2(K + A) − 1 for the locator). Partial batches' smaller codes tolerate what their own wait allows. Predictions name the excluded coded indices (schemas/README.md); docs/robustness.md measures the decoders."
        ))
    var adversaries: Int = Environment.int("NERCC_ADVERSARIES", 0)

    func validate() throws {
        guard batchWaitMs >= 0 else { throw ValidationError("--batch-wait-ms must be ≥ 0") }
        guard ["adaptive", "pad"].contains(partialBatches) else {
            throw ValidationError("--partial-batches must be adaptive or pad, got '\(partialBatches)'")
        }
        guard deadlineMs >= 1 else { throw ValidationError("--deadline-ms must be ≥ 1") }
        guard (1...65_535).contains(prefetch) else { throw ValidationError("--prefetch must be in 1...65535") }
        guard maxRequestBytes >= 1 else { throw ValidationError("--max-request-bytes must be ≥ 1") }
        guard (1...20).contains(publishAttempts) else { throw ValidationError("--publish-attempts must be in 1...20") }
        guard (0...60_000).contains(publishRetryMs) else {
            throw ValidationError("--publish-retry-ms must be in 0...60000")
        }
        guard (1...64).contains(maxRows) else { throw ValidationError("--max-rows must be in 1...64") }
        guard (0...10_000).contains(rowWaitMs) else { throw ValidationError("--row-wait-ms must be in 0...10000") }
        guard (0...10_000).contains(hedgeAfterMs) else {
            throw ValidationError("--hedge-after-ms must be in 0...10000, got \(hedgeAfterMs)")
        }
        guard adversaries >= 0 else { throw ValidationError("--adversaries must be ≥ 0, got \(adversaries)") }
        try Environment.validate(["NERCC_LAMBDA_ENC", "NERCC_LAMBDA_DEC"], as: .number)
        try Environment.validate(
            [
                "NERCC_WORKERS", "NERCC_BATCH", "NERCC_STRAGGLERS", "NERCC_BATCH_WAIT_MS", "NERCC_DEADLINE_MS",
                "NERCC_PREFETCH", "NERCC_REPLICAS", "NERCC_GROUP", "NERCC_MAX_REQUEST_BYTES", "NERCC_PUBLISH_ATTEMPTS",
                "NERCC_PUBLISH_RETRY_MS", "NERCC_MAX_ROWS", "NERCC_ROW_WAIT_MS", "NERCC_HEDGE_AFTER_MS",
                "NERCC_ADVERSARIES",
            ], as: .integer)
        try Environment.validate(
            ["NERCC_MANIFEST_IN_TASKS", "NERCC_SPLIT_PARTIAL_BATCHES", "NERCC_SLOT_BATCHES", "NERCC_RESEND"],
            as: .boolean)
    }

    func run() async throws {
        let logger = connection.logger("nercc.encoder")
        BLAS.useCallingThreadOnly()
        ProcessMemory.keepLargeBlocksInHeap()
        var kind = SchemeKind.nercc
        try CommandError.wrapping("--scheme") { kind = try SchemeKind.parse(scheme) }
        var config = EncoderConfiguration(
            scheme: SchemeConfiguration(
                kind: kind, workers: workers, batchSize: batch, lambdaEncoder: lambdaEncoder,
                lambdaDecoder: lambdaDecoder, replicas: replicas > 0 ? replicas : nil,
                groupSize: group > 0 ? group : nil),
            stragglers: stragglers, maximumBatchWaitMilliseconds: Int64(batchWaitMs),
            padsPartialBatches: partialBatches == "pad", deadlineMilliseconds: Int64(deadlineMs),
            prefetch: UInt16(prefetch), maximumRequestBytes: maxRequestBytes,
            consumerTag: ServiceRunner.processName("encoder"), copiesManifestIntoTasks: manifestInTasks,
            splitsPartialBatches: splitPartialBatches, publishAttempts: publishAttempts,
            publishRetryMilliseconds: Int64(publishRetryMs), maximumRows: maxRows,
            maximumRowWaitMilliseconds: Int64(rowWaitMs), sendsSlotsAlone: slotBatches,
            hedgeAfterMilliseconds: Int64(hedgeAfterMs), resendsTasks: resend, adversaries: adversaries,
            authenticator: try authentication.authenticator())
        let loaded = try loadModels(models)
        // Calibration profiles override the λs: the one for (N, K) those of full batches, the others
        // those of the partial batches whose code has their size.
        if !profiles.isEmpty {
            guard kind == .nercc else {
                throw CommandError("--profile calibrates nercc; this encoder runs \(kind.rawValue)")
            }
            var fullSize = false
            for path in profiles {
                let calibrated = try loadProfile(path)
                guard loaded.contains(where: { $0.name == calibrated.model }), calibrated.batchSize <= batch else {
                    throw CommandError(
                        "profile '\(path)' is for model \(calibrated.model) with N = \(calibrated.workers), K = \(calibrated.batchSize); this encoder serves \(loaded.map(\.name).joined(separator: ", ")) with N = \(workers), K = \(batch)"
                    )
                }
                config.profiles.append(
                    CalibratedLambdas(
                        workers: calibrated.workers, batchSize: calibrated.batchSize,
                        lambdaEncoder: calibrated.lambdaEncoder,
                        lambdaDecoder: calibrated.lambdaDecoder(received: calibrated.workers),
                        lambdaDecoderByReceived: calibrated.lambdaDecoderByReceived))
                if calibrated.workers == workers && calibrated.batchSize == batch {
                    fullSize = true
                    config.scheme.lambdaEncoder = calibrated.lambdaEncoder
                    config.scheme.lambdaDecoder = calibrated.lambdaDecoder(received: workers - stragglers)
                    config.lambdaDecoderByReceived = calibrated.lambdaDecoderByReceived
                }
            }
            guard fullSize else {
                throw CommandError(
                    "no --profile is for N = \(workers), K = \(batch): calibrate that setting (`nercc calibrate --workers \(workers) --batch \(batch)`)"
                )
            }
        }
        // Refuse a bad configuration before connecting, so the error is not lost among retries.
        do {
            _ = try EncoderService.validate(config)
        } catch {
            throw CommandError("\(error)")
        }
        let name = ServiceRunner.processName("encoder")
        let transport = try connection.transport(name: name, logger: logger)
        let metrics = ServiceMetrics(prefix: "nercc_encoder")
        let service: EncoderService
        do {
            service = try EncoderService(
                transport: transport, configuration: config, topology: connection.topology, models: loaded,
                logger: logger, metrics: metrics)
        } catch {
            await transport.close()
            throw CommandError("\(error)")
        }
        logger.info(
            "encoder starting",
            metadata: [
                "models": "\(loaded.map(\.name))", "scheme": "\(kind.rawValue)", "N": "\(workers)", "K": "\(batch)",
                "authentication": "\(config.authenticator.map { "key \($0.keyID)" } ?? "off")",
            ])
        try await ServiceRunner.run(
            transport: transport, logger: logger, connection: connection, role: "encoder", metrics: metrics
        ) { stop in try await service.run(stop: stop) }
    }
}

/// `nercc worker`.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a model on coded tasks and reply with the results (stateless; scale horizontally).")

    @OptionGroup var connection: ConnectionOptions

    @Option(
        name: .customLong("model"),
        help:
            "A model to run, a model.json or an ONNX graph (.onnx); repeatable, e.g. a model and its ParM parity model (env NERCC_MODEL, comma-separated)."
    )
    var models: [String] = Environment.list("NERCC_MODEL")

    @Option(
        help:
            "Tasks held at once per model: waiting for a forward pass, delayed, or awaiting their result's confirm (env NERCC_PREFETCH)."
    )
    var prefetch: Int = Environment.int("NERCC_PREFETCH", 16)

    @Option(help: "B: most tasks of one model run as one forward pass (env NERCC_MAX_BATCH).")
    var maxBatch: Int = Environment.int("NERCC_MAX_BATCH", 16)

    @Option(
        help:
            "How long a task may wait for others to join its forward pass, µs; 0: run what has arrived as soon as nothing else waits to be read (env NERCC_MAX_BATCH_DELAY_US)."
    )
    var maxBatchDelayUs: Int = Environment.int("NERCC_MAX_BATCH_DELAY_US", 0)

    @Flag(
        inversion: .prefixedNo,
        help: "Skip tasks of batches the decoder has finished (its cancellation notices) (env NERCC_CANCELLATIONS).")
    var cancellations: Bool = Environment.bool("NERCC_CANCELLATIONS", true)

    @Option(help: "Worker identity in results and the management UI (env NERCC_WORKER_ID).")
    var workerId: String = Environment.string("NERCC_WORKER_ID", ServiceRunner.processName("worker"))

    @Option(help: "Testing aid: probability that a task is delayed (env NERCC_STRAGGLER_PROBABILITY).")
    var stragglerProbability: Double = Environment.double("NERCC_STRAGGLER_PROBABILITY", 0)

    @Option(help: "Testing aid: delay of a delayed task in ms; the minimum for pareto (env NERCC_STRAGGLER_DELAY_MS).")
    var stragglerDelayMs: Double = Environment.double("NERCC_STRAGGLER_DELAY_MS", 0)

    @Option(help: "Testing aid: fixed or pareto (heavy-tailed) delays (env NERCC_STRAGGLER_DISTRIBUTION).")
    var stragglerDistribution: String = Environment.string("NERCC_STRAGGLER_DISTRIBUTION", "fixed")

    @Option(help: "Testing aid: shape α of pareto delays (env NERCC_STRAGGLER_PARETO_SHAPE).")
    var stragglerParetoShape: Double = Environment.double("NERCC_STRAGGLER_PARETO_SHAPE", 1.5)

    @Flag(help: "Testing aid: never reply; hold the tasks taken (env NERCC_NEVER_REPLY).")
    var neverReply: Bool = Environment.bool("NERCC_NEVER_REPLY")

    @Option(
        help:
            "Testing aid: a Byzantine worker, answering on time with wrong values: gaussian:σ (adds N(0, σ²) noise to every output), negate, constant:v or scale:c; empty: honest (env NERCC_BYZANTINE)."
    )
    var byzantine: String = Environment.string("NERCC_BYZANTINE", "")

    @Option(
        help: "Testing aid: probability that a result is corrupted by --byzantine (env NERCC_BYZANTINE_PROBABILITY).")
    var byzantineProbability: Double = Environment.double("NERCC_BYZANTINE_PROBABILITY", 1)

    @Option(help: "Seed of the straggler draws (env NERCC_SEED).")
    var seed: UInt64 = Environment.unsigned("NERCC_SEED", 1)

    func validate() throws {
        guard (1...65_535).contains(prefetch) else { throw ValidationError("--prefetch must be in 1...65535") }
        guard maxBatch >= 1 else { throw ValidationError("--max-batch must be ≥ 1, got \(maxBatch)") }
        guard maxBatchDelayUs >= 0 else { throw ValidationError("--max-batch-delay-us must be ≥ 0") }
        guard (0...1).contains(stragglerProbability) else {
            throw ValidationError("--straggler-probability must be in 0...1, got \(stragglerProbability)")
        }
        guard stragglerDelayMs >= 0 else { throw ValidationError("--straggler-delay-ms must be ≥ 0") }
        guard ["fixed", "pareto"].contains(stragglerDistribution) else {
            throw ValidationError("--straggler-distribution must be fixed or pareto, got '\(stragglerDistribution)'")
        }
        guard stragglerParetoShape > 0 else { throw ValidationError("--straggler-pareto-shape must be > 0") }
        if !byzantine.isEmpty {
            do {
                _ = try ByzantineInjection.Mode.parse(byzantine)
            } catch {
                throw ValidationError("--byzantine: \(error)")
            }
        }
        guard byzantineProbability.isFinite, (0...1).contains(byzantineProbability) else {
            throw ValidationError("--byzantine-probability must be in 0...1, got \(byzantineProbability)")
        }
        try Environment.validate(
            [
                "NERCC_STRAGGLER_PROBABILITY", "NERCC_STRAGGLER_DELAY_MS", "NERCC_STRAGGLER_PARETO_SHAPE",
                "NERCC_BYZANTINE_PROBABILITY",
            ], as: .number)
        try Environment.validate(["NERCC_PREFETCH", "NERCC_MAX_BATCH", "NERCC_MAX_BATCH_DELAY_US"], as: .integer)
        try Environment.validate(["NERCC_SEED"], as: .unsigned)
        try Environment.validate(["NERCC_NEVER_REPLY", "NERCC_CANCELLATIONS"], as: .boolean)
    }

    func run() async throws {
        let logger = connection.logger("nercc.worker")
        BLAS.useCallingThreadOnly()
        ProcessMemory.keepLargeBlocksInHeap()
        guard !models.isEmpty else {
            throw CommandError("no model: pass --model PATH/model.json or PATH/model.onnx (env NERCC_MODEL)")
        }
        let loaded = try loadModels(models)
        let delay: StragglerInjection.Delay =
            stragglerDistribution == "pareto"
            ? .pareto(minimumMilliseconds: stragglerDelayMs, shape: stragglerParetoShape)
            : .fixed(milliseconds: stragglerDelayMs)
        let injection = StragglerInjection(probability: stragglerProbability, delay: delay, neverReply: neverReply)
        if injection.isActive {
            logger.warning("straggler injection is on (testing aid)", metadata: ["injection": "\(injection)"])
        }
        var mode: ByzantineInjection.Mode? = nil
        if !byzantine.isEmpty {
            do {
                mode = try ByzantineInjection.Mode.parse(byzantine)
            } catch {
                throw CommandError("--byzantine: \(error)")
            }
        }
        let corruption = ByzantineInjection(mode: mode, probability: byzantineProbability)
        if corruption.isActive {
            logger.warning(
                "Byzantine injection is on: this worker answers with wrong values (testing aid)",
                metadata: ["mode": "\(corruption.mode!)", "probability": "\(corruption.probability)"])
        }
        let transport = try connection.transport(name: "worker \(workerId)", logger: logger)
        let metrics = ServiceMetrics(prefix: "nercc_worker")
        let service = WorkerService(
            transport: transport,
            configuration: WorkerConfiguration(
                prefetch: UInt16(prefetch), workerID: workerId, stragglers: injection, seed: seed,
                maximumBatch: maxBatch, maximumBatchDelayMicroseconds: Int64(maxBatchDelayUs),
                followsCancellations: cancellations, byzantine: corruption),
            topology: connection.topology, models: loaded, logger: logger, metrics: metrics)
        logger.info("worker starting", metadata: ["models": "\(loaded.map(\.name))", "id": "\(workerId)"])
        try await ServiceRunner.run(
            transport: transport, logger: logger, connection: connection, role: "worker", metrics: metrics
        ) { stop in try await service.run(stop: stop) }
    }
}

/// `nercc decoder`.
struct DecoderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decoder",
        abstract: "Reconstruct each batch's predictions from the first results and publish them.")

    @OptionGroup var connection: ConnectionOptions

    @OptionGroup var authentication: AuthenticationOptions

    @Option(help: "The shard this decoder serves, 0 ≤ shard < --shards (env NERCC_SHARD).")
    var shard: Int = Environment.int("NERCC_SHARD", 0)

    @Option(
        help: "Messages held at once per queue: manifests, and results of open batches (env NERCC_PREFETCH).")
    var prefetch: Int = Environment.int("NERCC_PREFETCH", 4_000)

    @Flag(
        inversion: .prefixedNo,
        help:
            "Tell the workers which batches are finished, so they skip their outstanding tasks (env NERCC_CANCEL_LEFTOVERS)."
    )
    var cancelLeftovers: Bool = Environment.bool("NERCC_CANCEL_LEFTOVERS", true)

    @Option(
        help:
            "Announce a finished batch only if results are still missing this many ms after it finished: its other tasks are then queued or held by slow workers (env NERCC_CANCEL_AFTER_MS)."
    )
    var cancelAfterMs: Int = Environment.int("NERCC_CANCEL_AFTER_MS", 10)

    @Flag(
        inversion: .prefixedNo,
        help:
            "Answer a batch from the manifest copy its results carry, without waiting for the manifest message; off where workers are not trusted to pass copies on unchanged (env NERCC_MANIFEST_COPIES)."
    )
    var manifestCopies: Bool = Environment.bool("NERCC_MANIFEST_COPIES", true)

    @Flag(
        inversion: .prefixedNo,
        help:
            "Decode a batch of an approximate scheme (bacc, nercc) from fewer results than it waits for, marked degraded, when the rest are late: the straggler wait (env NERCC_EARLY_DECODE)."
    )
    var earlyDecode: Bool = Environment.bool("NERCC_EARLY_DECODE", true)

    @Option(
        help:
            "The straggler wait: how long a batch that could be answered approximately waits for the rest of its results, in ms (env NERCC_EARLY_DECODE_AFTER_MS)."
    )
    var earlyDecodeAfterMs: Int = Environment.int("NERCC_EARLY_DECODE_AFTER_MS", 30)

    @Option(
        help:
            "How many results beyond S a batch may lose when decoded early, as a share of S, rounded up: 0.5 decodes (12, 4, 3) from 7 of its 12 results (env NERCC_EARLY_DECODE_EXTRA_SHARE)."
    )
    var earlyDecodeExtraShare: Double = Environment.double("NERCC_EARLY_DECODE_EXTRA_SHARE", 0.5)

    @Option(
        help:
            "The floor of the straggler wait: a batch that holds N − 2S results (at least K), fewer than the wait allows, is decoded from them after this many ms, marked degraded; 0: off (env NERCC_EARLY_DECODE_FLOOR_AFTER_MS)."
    )
    var earlyDecodeFloorAfterMs: Int = Environment.int("NERCC_EARLY_DECODE_FLOOR_AFTER_MS", 100)

    @Option(
        help:
            "Resending: a batch whose encoder keeps its tasks, and that has held the results the straggler wait's first stage needs for this many ms without becoming decodable, asks the encoder once to publish again as many of the tasks it has no result of as it still waits for, and a spare; with the adaptive trigger (--resend-gap-multiple) the least it waits; 0: off (env NERCC_RESEND_AFTER_MS)."
    )
    var resendAfterMs: Int = Environment.int("NERCC_RESEND_AFTER_MS", 5)

    @Option(
        help:
            "The adaptive resend trigger: a batch asks after this multiple of the upper quartile of how long recent batches took from holding the first stage's results to being decodable, and never before --resend-after-ms; a trigger at or beyond the straggler wait asks for nothing. 0: the fixed --resend-after-ms (env NERCC_RESEND_GAP_MULTIPLE)."
    )
    var resendGapMultiple: Double = Environment.double("NERCC_RESEND_GAP_MULTIPLE", 3)

    @Option(
        help:
            "The adaptive hedge delay: a hedged batch (one whose encoder held its other copies back) is asked for after this multiple of the upper quartile of how long recent hedged batches took from being encoded to being decodable, never before --hedge-least-ms and never after its manifest's after_ms (the encoder's --hedge-after-ms). 0: the manifest's after_ms (env NERCC_HEDGE_GAP_MULTIPLE)."
    )
    var hedgeGapMultiple: Double = Environment.double("NERCC_HEDGE_GAP_MULTIPLE", 2)

    @Option(help: "The shortest adaptive hedge delay, ms (env NERCC_HEDGE_LEAST_MS).")
    var hedgeLeastMs: Int = Environment.int("NERCC_HEDGE_LEAST_MS", 2)

    @Option(
        help:
            "The quarantine of Byzantine workers: for batches decoded with --adversaries, a worker (x-nercc-worker with its user_id) that the robust decoder flagged in more than half of the last 16 batches it answered (at least 8) has its results left out for this many seconds, and each batch it answers tolerates one adversary fewer among the rest; 0: off (env NERCC_QUARANTINE_SECONDS)."
    )
    var quarantineSeconds: Int = Environment.int("NERCC_QUARANTINE_SECONDS", 0)

    @Option(
        name: .customLong("profile"),
        help:
            "A calibration profile from `nercc calibrate` (repeatable; env NERCC_PROFILE, comma-separated, as the encoder's): its output check leaves out, in batches decoded with --adversaries, results that do not have the shape of the model's outputs."
    )
    var profiles: [String] = Environment.list("NERCC_PROFILE")

    func validate() throws {
        guard earlyDecodeAfterMs >= 0 else { throw ValidationError("--early-decode-after-ms must be ≥ 0") }
        guard earlyDecodeExtraShare.isFinite, (0...1).contains(earlyDecodeExtraShare) else {
            throw ValidationError("--early-decode-extra-share must be in 0...1, got \(earlyDecodeExtraShare)")
        }
        guard (0...600_000).contains(earlyDecodeFloorAfterMs) else {
            throw ValidationError("--early-decode-floor-after-ms must be in 0...600000 (0: off)")
        }
        guard (0...600_000).contains(resendAfterMs) else {
            throw ValidationError("--resend-after-ms must be in 0...600000 (0: off), got \(resendAfterMs)")
        }
        try Environment.validate(
            ["NERCC_EARLY_DECODE_AFTER_MS", "NERCC_EARLY_DECODE_FLOOR_AFTER_MS", "NERCC_RESEND_AFTER_MS"], as: .integer)
        guard resendGapMultiple.isFinite, (0...1_000).contains(resendGapMultiple) else {
            throw ValidationError(
                "--resend-gap-multiple must be in 0...1000 (0: a fixed trigger), got \(resendGapMultiple)")
        }
        guard hedgeGapMultiple.isFinite, (0...1_000).contains(hedgeGapMultiple) else {
            throw ValidationError(
                "--hedge-gap-multiple must be in 0...1000 (0: the manifests' after_ms), got \(hedgeGapMultiple)")
        }
        guard (0...10_000).contains(hedgeLeastMs) else {
            throw ValidationError("--hedge-least-ms must be in 0...10000, got \(hedgeLeastMs)")
        }
        try Environment.validate(
            ["NERCC_EARLY_DECODE_EXTRA_SHARE", "NERCC_RESEND_GAP_MULTIPLE", "NERCC_HEDGE_GAP_MULTIPLE"], as: .number)
        try Environment.validate(["NERCC_HEDGE_LEAST_MS"], as: .integer)
        guard (0...86_400).contains(quarantineSeconds) else {
            throw ValidationError("--quarantine-seconds must be in 0...86400 (0: off), got \(quarantineSeconds)")
        }
        try Environment.validate(["NERCC_QUARANTINE_SECONDS"], as: .integer)
        try Environment.validate(["NERCC_EARLY_DECODE"], as: .boolean)
        guard shard >= 0, shard < connection.shards else {
            throw ValidationError("--shard must be in 0..<\(connection.shards), got \(shard)")
        }
        guard (1...65_535).contains(prefetch) else { throw ValidationError("--prefetch must be in 1...65535") }
        guard cancelAfterMs >= 0 else { throw ValidationError("--cancel-after-ms must be ≥ 0") }
        try Environment.validate(["NERCC_SHARD", "NERCC_PREFETCH", "NERCC_CANCEL_AFTER_MS"], as: .integer)
        try Environment.validate(["NERCC_CANCEL_LEFTOVERS", "NERCC_MANIFEST_COPIES"], as: .boolean)
    }

    func run() async throws {
        let logger = connection.logger("nercc.decoder")
        BLAS.useCallingThreadOnly()
        ProcessMemory.keepLargeBlocksInHeap()
        let authenticator = try authentication.authenticator()
        var outputChecks: [ModelOutputCheck] = []
        for path in profiles {
            let profile = try loadProfile(path)
            guard let check = profile.outputCheck else {
                logger.warning(
                    "the profile has no output check: `nercc calibrate --output-check-only` adds one",
                    metadata: ["profile": "\(path)"])
                continue
            }
            outputChecks.append(
                ModelOutputCheck(
                    model: profile.model, workers: profile.workers, batchSize: profile.batchSize, check: check))
        }
        let name = ServiceRunner.processName("decoder")
        let transport = try connection.transport(name: name, logger: logger)
        let metrics = ServiceMetrics(prefix: "nercc_decoder")
        let service = DecoderService(
            transport: transport,
            configuration: DecoderConfiguration(
                shard: shard, prefetch: UInt16(prefetch), consumerTag: name, cancelsLeftovers: cancelLeftovers,
                cancelGraceMilliseconds: Int64(cancelAfterMs), acceptsManifestCopies: manifestCopies,
                earlyDecodeAfterMilliseconds: earlyDecode ? Int64(earlyDecodeAfterMs) : nil,
                earlyDecodeExtraShare: earlyDecodeExtraShare,
                earlyDecodeFloorAfterMilliseconds: earlyDecodeFloorAfterMs > 0 ? Int64(earlyDecodeFloorAfterMs) : nil,
                resendAfterMilliseconds: resendAfterMs > 0 ? Int64(resendAfterMs) : nil,
                resendGapMultiple: resendGapMultiple, hedgeGapMultiple: hedgeGapMultiple,
                hedgeLeastMilliseconds: Int64(hedgeLeastMs), authenticator: authenticator,
                quarantine: quarantineSeconds > 0
                    ? DecoderConfiguration.defaultQuarantine.lasting(Int64(quarantineSeconds) * 1_000) : nil,
                outputChecks: outputChecks),
            topology: connection.topology, logger: logger, metrics: metrics)
        logger.info(
            "decoder starting",
            metadata: [
                "shard": "\(shard)", "authentication": "\(authenticator.map { "key \($0.keyID)" } ?? "off")",
                "output_checks": "\(outputChecks.map { "\($0.model) N=\($0.workers) K=\($0.batchSize)" })",
            ])
        try await ServiceRunner.run(
            transport: transport, logger: logger, connection: connection, role: "decoder", metrics: metrics
        ) { stop in try await service.run(stop: stop) }
    }
}

/// Reads a calibration profile written by `nercc calibrate`.
func loadProfile(_ path: String) throws -> CalibrationProfile {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CommandError("cannot read the profile '\(path)'")
    }
    do {
        return try JSONDecoder().decode(CalibrationProfile.self, from: data)
    } catch {
        throw CommandError("'\(path)' is not a calibration profile: \(error)")
    }
}
