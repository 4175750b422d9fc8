import ArgumentParser
import CodedComputing
import Foundation
import Logging
import Messaging
import RabbitMQMessaging
import ServingMessages
import ServingPipeline

#if canImport(Glibc)
    import Glibc
#endif

/// `nercc chaos`: the fault-injection suite. Each scenario runs a system of its own (one encoder,
/// one decoder, several workers of this binary) on a fresh topology prefix, loads it with
/// one-query requests, injects a fault mid-run and checks that every confirmed request got exactly
/// one answer (see docs/faults.md).
struct ChaosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Inject faults into a nercc system of its own and check that every confirmed query gets one answer.",
        discussion: """
            For each scenario, starts an encoder, a decoder and --workers workers of this binary on a fresh \
            topology prefix of the broker at --url, publishes one-query requests (Poisson arrivals at --rate per \
            second, for --seconds) with publisher confirms, injects the scenario's fault mid-run, waits for the \
            answers, and checks every confirmed request: lost (no answer), duplicated (answers under more than one \
            message_id), conflicting (a prediction and an error record, or predictions that differ), unexpected \
            (answers to requests never sent). A second delivery under the same message_id is a repeat: allowed, and \
            reported. Prints one line per scenario and a summary line; exits 1 if a scenario failed.

            Scenarios: kill-worker, kill-encoder, kill-decoder (kill -9, then a restart), close-connections (the \
            management API closes every service connection), memory-alarm (the broker's memory watermark is set to \
            1 byte for 10 s), bad-worker (an extra worker answers tasks with a coded index outside the batch), \
            full-task-queue (a max-length policy with reject-publish on the task queue, slowed workers), \
            broker-restart (the private broker is stopped and started), node-loss (on a three-node cluster: the node \
            that leads the task queue is stopped, restarted, and must rejoin with every queue of the scenario back \
            to its replicas). memory-alarm and broker-restart run the scripts of --broker-scripts, which must \
            describe the broker at --url (ops/chaos.sh does that); node-loss runs cluster.sh of --broker-scripts, \
            needs --url and --management-url to list every node (comma-separated) and --coded-queues quorum, and \
            is not part of 'all'. close-connections, memory-alarm, full-task-queue and node-loss use the \
            management API (--management-url).
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(
        help:
            "The broker's management API, http://[user:password@]host:port/, or one per cluster node, comma-separated, tried in turn; guest/guest when the URL has no credentials (env NERCC_MGMT_URL)."
    )
    var managementUrl: String = Environment.string("NERCC_MGMT_URL", "http://127.0.0.1:15672/")

    @Option(help: "Scenarios to run, comma-separated, or 'all'.")
    var scenarios = "all"

    @Option(help: "Requests per second (one query each; Poisson arrivals).")
    var rate = 40.0

    @Option(help: "Seconds of load per scenario; the fault comes at 30 % of it.")
    var seconds = 20.0

    @Option(help: "Batch deadline of the encoder, ms.")
    var deadlineMs = 3_000

    @Option(help: "Worker processes per scenario.")
    var workers = 4

    @Option(help: "The encoder's scheme, scheme:N:K[:S] (not parity).")
    var scheme = "nercc:12:4:3"

    @Option(help: "The model description.")
    var model = "models/mnist-mlp/model.json"

    @Option(help: "Queries (.npy, 2-D), one per row; request i carries row i.")
    var input = "data/mnist/test-images.npy"

    @Option(
        help:
            "Directory of the private broker's start.sh, stop.sh and env.sh (broker-restart, memory-alarm) and of cluster.sh (node-loss)."
    )
    var brokerScripts = "ops/broker"

    @Option(help: "Seconds to wait for the answers after the load; default 2 × deadline + 10.")
    var drainSeconds: Double?

    @Option(
        help:
            "Seconds to keep listening once every confirmed query is answered (late duplicates); default deadline + 2.")
    var settleSeconds: Double?

    @Option(help: "First port of the services' /metrics endpoints (encoder, decoder, then the workers).")
    var metricsPort = 19_600

    @Option(
        help:
            "full-task-queue: how long the workers hold every task, ms; the deadline must leave room for twice this plus the encoder's publish retries."
    )
    var slowTaskMs = 750

    @Option(help: "kill-* and close-connections: faults per scenario, from 30 % to 90 % of the load.")
    var faultCount = 2

    @Option(help: "Seed of the arrivals and of the workers' straggler draws.")
    var seed: UInt64 = 1

    @Option(help: "Extra argument for the encoder (repeatable), e.g. --encoder-arg=--publish-attempts=1.")
    var encoderArg: [String] = []

    @Option(help: "Extra argument for every worker (repeatable).")
    var workerArg: [String] = []

    @Option(help: "Extra argument for the decoder (repeatable).")
    var decoderArg: [String] = []

    @Option(help: "Write a report of the run: JSON when the name ends in .json, else Markdown.")
    var output: String?

    @Option(help: "Directory for the services' logs and each scenario's findings.")
    var logDir = ".build/chaos"

    func validate() throws {
        _ = try parsedScenarios()
        guard rate > 0, seconds >= 2 else { throw ValidationError("--rate must be > 0 and --seconds ≥ 2") }
        guard deadlineMs >= 100 else { throw ValidationError("--deadline-ms must be ≥ 100") }
        guard workers >= 1 else { throw ValidationError("--workers must be ≥ 1") }
        guard (1...50).contains(faultCount) else { throw ValidationError("--fault-count must be in 1...50") }
        guard connection.shards == 1 else {
            throw ValidationError("--shards must be 1: each scenario runs one decoder")
        }
        guard (drainSeconds ?? 0) >= 0, (settleSeconds ?? 0) >= 0 else {
            throw ValidationError("--drain-seconds and --settle-seconds must be ≥ 0")
        }
        if try parsedScenarios().contains(where: \.needsCluster) {
            guard connection.codedQueues == "quorum" else {
                throw ValidationError(
                    "node-loss needs --coded-queues quorum: a classic task queue lives on one node and goes with it")
            }
            guard (try? RabbitMQURL.list(connection.url).count) ?? 0 >= 2 else {
                throw ValidationError("node-loss needs the --url of every cluster node, comma-separated")
            }
        }
        let spec = try BenchServeCommand.scheme(scheme)
        guard spec.kind != .parity else {
            throw ValidationError("--scheme: parity needs a parity model; chaos serves one model")
        }
    }

    func parsedScenarios() throws -> [ChaosScenario] {
        let names = scenarios.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if names == ["all"] { return ChaosScenario.allCases.filter { !$0.needsCluster } }
        guard !names.isEmpty else { throw ValidationError("--scenarios is empty") }
        return try names.map { name in
            guard let s = ChaosScenario(rawValue: name) else {
                throw ValidationError(
                    "--scenarios: unknown scenario '\(name)'; known: all, \(ChaosScenario.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            return s
        }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let chosen = try parsedScenarios()
        let spec = try BenchServeCommand.scheme(scheme)
        let loaded = try loadModels([model])[0]
        let queries = try MatrixFiles.read(input)
        guard queries.columns == loaded.inputSize else {
            throw CommandError("'\(input)' has \(queries.columns) columns; the model takes \(loaded.inputSize)")
        }
        let amqp: RabbitMQURL
        let client: RabbitMQConfiguration
        do {
            amqp = try RabbitMQURL.list(connection.url)[0]
            // The client waits out a broker restart: its publishes may wait a minute for a connection.
            client = try RabbitMQConfiguration(
                url: connection.url, connectionName: ServiceRunner.processName("chaos"),
                heartbeat: connection.heartbeat,
                publishTimeout: .seconds(60),
                tls: .init(
                    caCertificatePath: connection.tlsCa.isEmpty ? nil : connection.tlsCa,
                    verifyPeer: !connection.tlsInsecure, verifyHostname: !connection.tlsInsecure,
                    clientCertificatePath: connection.tlsCert.isEmpty ? nil : connection.tlsCert,
                    clientKeyPath: connection.tlsKey.isEmpty ? nil : connection.tlsKey))
        } catch {
            throw CommandError(error.message)
        }
        let management = try ManagementAPI(url: managementUrl, virtualHost: amqp.virtualHost)
        do {
            _ = try management.json("GET", "/api/overview")
        } catch {
            throw CommandError("the management API at \(managementUrl) does not answer: \(error)")
        }
        let broker = BrokerScripts(directory: brokerScripts)
        if chosen.contains(where: \.usesBrokerScripts) {
            try await broker.check(amqpPort: amqp.port)
        }
        if chosen.contains(where: \.needsCluster),
            !FileManager.default.isExecutableFile(atPath: "\(brokerScripts)/cluster.sh")
        {
            throw CommandError("\(brokerScripts)/cluster.sh is missing or not executable; node-loss runs it")
        }
        let logRoot = URL(fileURLWithPath: logDir)
        try FileManager.default.createDirectory(at: logRoot, withIntermediateDirectories: true)
        let machine = ServeReport.machineDescription()
        let deadline = Double(deadlineMs) / 1_000
        var plan = ChaosPlan(
            rate: rate, seconds: seconds, deadlineMilliseconds: deadlineMs,
            drainSeconds: drainSeconds ?? 2 * deadline + 10, settleSeconds: settleSeconds ?? deadline + 2,
            workers: workers, modelPath: model, model: loaded, queries: queries,
            encoderFlags: [
                "--scheme", spec.kind.rawValue, "--workers", "\(spec.workers)", "--batch", "\(spec.batchSize)",
                "--stragglers", "\(spec.stragglers)", "--deadline-ms", "\(deadlineMs)",
            ] + encoderArg, workerFlags: workerArg, decoderFlags: decoderArg, metricsPort: metricsPort,
            slowTaskMilliseconds: slowTaskMs, faultCount: faultCount, seed: seed, client: client,
            logger: connection.logger("nercc.chaos"),
            management: management, broker: broker, serviceArguments: [], topology: ServingTopology(),
            prefix: "")
        Self.note("nercc chaos: \(machine); \(chosen.count) scenarios, \(rate) requests/s for \(seconds) s each")
        var outcomes: [ChaosOutcome] = []
        for scenario in chosen {
            let prefix = "\(connection.topologyPrefix)-chaos-\(UUID().uuidString.lowercased().prefix(6))"
            plan.prefix = prefix
            plan.topology = connection.topology(prefix: prefix)
            plan.serviceArguments = connection.serviceArguments(prefix: prefix) + ["--log-level", "info"]
            let directory = logRoot.appendingPathComponent(scenario.rawValue)
            try? FileManager.default.removeItem(at: directory)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let outcome = await ChaosRun(scenario: scenario, plan: plan, directory: directory).execute()
            print(outcome.summaryLine)
            for line in outcome.detailLines { print("  \(line)") }
            fflush(nil)
            outcomes.append(outcome)
        }
        let failed = outcomes.filter { !$0.passed }.map(\.scenario)
        print(
            "chaos: \(outcomes.count) scenarios, \(outcomes.count - failed.count) passed"
                + (failed.isEmpty ? "" : ", failed: \(failed.joined(separator: ", "))"))
        if let output {
            let report = ChaosReport(
                machine: machine, command: CommandLine.arguments.dropFirst().joined(separator: " "),
                outcomes: outcomes)
            try report.write(to: output)
            Self.note("wrote \(output)")
        }
        if !failed.isEmpty { throw ExitCode.failure }
    }

    /// A progress line, on stderr (stdout carries only the result lines).
    static func note(_ text: String) {
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }
}

/// A fault the suite injects.
enum ChaosScenario: String, CaseIterable, Sendable, Codable {
    case killWorker = "kill-worker"
    case killEncoder = "kill-encoder"
    case killDecoder = "kill-decoder"
    case closeConnections = "close-connections"
    case memoryAlarm = "memory-alarm"
    case badWorker = "bad-worker"
    case fullTaskQueue = "full-task-queue"
    case brokerRestart = "broker-restart"
    case nodeLoss = "node-loss"

    /// Whether it runs the private broker's scripts (start.sh, stop.sh, rabbitmqctl through env.sh).
    var usesBrokerScripts: Bool { self == .brokerRestart || self == .memoryAlarm }
    /// Whether it needs a three-node cluster (ops/broker/cluster.sh); `all` leaves it out.
    var needsCluster: Bool { self == .nodeLoss }
}

/// Everything a scenario needs, fixed for the whole run but the topology prefix.
struct ChaosPlan: Sendable {
    var rate: Double
    var seconds: Double
    var deadlineMilliseconds: Int
    var drainSeconds: Double
    var settleSeconds: Double
    var workers: Int
    var modelPath: String
    var model: NativeModel
    var queries: Matrix
    var encoderFlags: [String]
    var workerFlags: [String]
    var decoderFlags: [String]
    var metricsPort: Int
    var slowTaskMilliseconds: Int
    var faultCount: Int
    var seed: UInt64
    var client: RabbitMQConfiguration
    var logger: Logger
    var management: ManagementAPI
    var broker: BrokerScripts
    /// Connection and topology flags of every service of the scenario.
    var serviceArguments: [String]
    var topology: ServingTopology
    var prefix: String
}

/// One scenario: its services, its client, its fault and its verdict.
final class ChaosRun: @unchecked Sendable {
    let scenario: ChaosScenario
    let plan: ChaosPlan
    let directory: URL
    let started = ContinuousClock.now
    /// What happened when, for the report (guarded by `lock`).
    private var events: [String] = []
    private var injectionFailure: String?
    private let lock = NSLock()

    init(scenario: ChaosScenario, plan: ChaosPlan, directory: URL) {
        self.scenario = scenario
        self.plan = plan
        self.directory = directory
    }

    private func event(_ text: String, at seconds: Double) {
        let line = String(format: "%6.1f s  %@", seconds, text)
        lock.withLock { events.append(line) }
        ChaosCommand.note("chaos \(scenario.rawValue): \(line)")
    }

    /// Runs the scenario; every failure becomes part of the outcome.
    func execute() async -> ChaosOutcome {
        var outcome = ChaosOutcome(scenario: scenario.rawValue, prefix: plan.prefix)
        let transport = RabbitMQTransport(configuration: plan.client, logger: plan.logger)
        var services: ChaosServices? = nil
        var client: ChaosClient? = nil
        var policy: String? = nil
        do {
            try await transport.connect(retryingFor: .seconds(30))
            if scenario == .fullTaskQueue {
                // The task queue holds at most 5 tasks; the broker refuses (nacks) any further publish.
                let name = "\(plan.prefix)-full-task-queue"
                let pattern = "^" + NSRegularExpression.escapedPattern(for: "\(plan.topology.tasksQueuePrefix).")
                try plan.management.setPolicy(
                    name: name, pattern: pattern, definition: ["max-length": 5, "overflow": "reject-publish"])
                policy = name
            }
            // full-task-queue: slow workers with small windows (4 workers × 4 tasks held
            // --slow-task-ms each serve far fewer tasks than the load brings), so the queue fills.
            let straggling =
                scenario == .fullTaskQueue
                ? [
                    "--straggler-probability", "1", "--straggler-delay-ms", "\(plan.slowTaskMilliseconds)",
                    "--prefetch",
                    "4",
                ] : []
            let s = try ChaosServices(plan: plan, directory: directory, workerFlags: straggling)
            services = s
            try await s.waitUntilReady(transport)
            let c = try await ChaosClient(transport: transport, plan: plan)
            client = c
            event("services ready (prefix \(plan.prefix)); load starts", at: 0)
            c.resetClock()
            let injection = Task { await self.inject(services: s, client: c) }
            await c.publishLoad(rate: plan.rate, seconds: plan.seconds, seed: plan.seed)
            let badWorker = await injection.value
            if let failure = lock.withLock({ injectionFailure }) {
                outcome.notes.append("the fault could not be injected: \(failure)")
            }
            if let badWorker {
                let answered = await badWorker.stop()
                event("bad worker stopped after answering \(answered) tasks with a bad coded index", at: c.elapsed())
            }
            event("load ended: \(c.sentCount) requests sent, \(c.confirmedCount) confirmed", at: c.elapsed())
            let drainEnd = ContinuousClock.now + .seconds(plan.drainSeconds)
            while c.openCount > 0 && ContinuousClock.now < drainEnd {
                try? await Task.sleep(for: .milliseconds(100))
            }
            let open = c.openCount
            event(
                open == 0
                    ? "every confirmed request answered; listening \(plan.settleSeconds) s more"
                    : "\(open) confirmed requests still unanswered after \(plan.drainSeconds) s; listening \(plan.settleSeconds) s more",
                at: c.elapsed())
            try? await Task.sleep(for: .seconds(plan.settleSeconds))
            outcome.counters = s.counters()
            outcome.crashes = s.crashes()
            await s.stopAll()
            outcome.deadLetters = await Self.readDeadLetters(transport, queue: plan.topology.deadLetterQueue)
            c.analyse(into: &outcome)
        } catch {
            outcome.notes.append("the scenario could not run: \(error)")
        }
        if let services { await services.stopAll() }
        await client?.close()
        if let policy { try? plan.management.deletePolicy(name: policy) }
        await cleanUp(transport, extraQueues: client.map { [$0.replyQueue, $0.tapQueue] } ?? [])
        await transport.close()
        outcome.events = lock.withLock { events }
        outcome.seconds = Self.seconds(started.duration(to: .now))
        outcome.judge(scenario)
        writeFindings(outcome)
        return outcome
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Injects the scenario's fault, mid-run. Returns the bad worker, which runs until the load ends.
    private func inject(services: ChaosServices, client: ChaosClient) async -> BadWorker? {
        let first = plan.seconds * 0.3
        // Kills and connection closes repeat: at 30 % and 65 % of the load by default, more often
        // with --fault-count (evenly from 30 % to 90 %).
        let count = plan.faultCount
        let spacing = count > 1 ? min(0.35, 0.6 / Double(count - 1)) : 0
        let repeated = (0..<count).map { plan.seconds * (0.3 + spacing * Double($0)) }
        func sleepUntil(_ t: Double) async {
            let remaining = t - client.elapsed()
            if remaining > 0 { try? await Task.sleep(for: .seconds(remaining)) }
        }
        do {
            switch scenario {
            case .killWorker, .killEncoder, .killDecoder:
                let role: ChaosServices.Role =
                    scenario == .killWorker ? .worker(0) : scenario == .killEncoder ? .encoder : .decoder
                for (i, t) in repeated.enumerated() {
                    await sleepUntil(t)
                    let target: ChaosServices.Role = if case .worker = role { .worker(i % plan.workers) } else { role }
                    let pid = try await services.crash(target)
                    event("kill -9 \(target.name) (pid \(pid))", at: client.elapsed())
                    try? await Task.sleep(for: .seconds(1))
                    let restarted = try services.restart(target)
                    event("\(target.name) restarted (pid \(restarted))", at: client.elapsed())
                }
            case .closeConnections:
                for t in repeated {
                    await sleepUntil(t)
                    let names = services.connectionNames()
                    event("closing the connections of \(names.count) services", at: client.elapsed())
                    var closed: [String] = []
                    // The management API lists a connection about a second after it opens.
                    let giveUp = ContinuousClock.now + .seconds(5)
                    while closed.count < names.count && ContinuousClock.now < giveUp {
                        closed += try plan.management.closeConnections(named: names.subtracting(closed))
                        if closed.count < names.count { try? await Task.sleep(for: .milliseconds(300)) }
                    }
                    event(
                        "closed \(closed.count) of \(names.count) service connections through the management API",
                        at: client.elapsed())
                }
            case .memoryAlarm:
                await sleepUntil(first)
                let hold = max(2, min(10, plan.seconds * 0.5))
                event("setting the memory watermark to 1 byte (rabbitmqctl)", at: client.elapsed())
                try await plan.broker.ctl("set_vm_memory_high_watermark absolute 1", log: directory)
                let raised = await plan.management.waitForMemoryAlarm(true, seconds: 10)
                event(
                    "memory alarm \(raised ? "raised" : "NOT seen in /api/nodes"); held for \(hold) s",
                    at: client.elapsed())
                try? await Task.sleep(for: .seconds(hold))
                event("setting the memory watermark back to 0.4", at: client.elapsed())
                try await plan.broker.ctl("set_vm_memory_high_watermark 0.4", log: directory)
                let cleared = await plan.management.waitForMemoryAlarm(false, seconds: 15)
                event(
                    "memory alarm \(cleared ? "cleared" : "still raised")",
                    at: client.elapsed())
            case .brokerRestart:
                await sleepUntil(first)
                event("stopping the broker (\(plan.broker.directory)/stop.sh)", at: client.elapsed())
                try await plan.broker.run("stop.sh", log: directory)
                event("broker stopped; starting it", at: client.elapsed())
                try? await Task.sleep(for: .seconds(1))
                try await plan.broker.run("start.sh", log: directory)
                event("broker started", at: client.elapsed())
            case .badWorker:
                await sleepUntil(first)
                let worker = try await BadWorker(plan: plan)
                event("bad worker consuming the task queue (coded index N + 7 on every result)", at: client.elapsed())
                await sleepUntil(plan.seconds)
                return worker
            case .nodeLoss:
                try await loseTheTaskQueueLeader(client: client, restartAt: plan.seconds * 0.65, sleepUntil: first)
            case .fullTaskQueue:
                event(
                    "task queue limited to 5 messages (reject-publish) for the whole run; workers hold every task \(plan.slowTaskMilliseconds) ms, 4 at a time",
                    at: client.elapsed())
            }
        } catch {
            event("the fault could not be injected: \(error)", at: client.elapsed())
            lock.withLock { injectionFailure = "\(error)" }
        }
        return nil
    }

    /// node-loss: at `sleepUntil` s, stops the cluster node that leads the task queue
    /// (`cluster.sh stop-node`), restarts it at `restartAt` s, and waits until every quorum queue of
    /// the scenario has its members online again; a queue that does not is a failure.
    private func loseTheTaskQueueLeader(client: ChaosClient, restartAt: Double, sleepUntil start: Double) async throws {
        while client.elapsed() < start { try? await Task.sleep(for: .milliseconds(50)) }
        let t = plan.topology
        let tasks = t.tasksQueue(model: plan.model.name)
        let queues = [
            tasks, t.requestsQueue(model: plan.model.name), t.resultsQueue(shard: 0), t.workerResultsQueue(shard: 0),
        ]
        let before = try plan.management.quorumMembers(queues)
        let leader = try plan.management.queueLeader(tasks)
        event("stopping \(leader), the leader of \(tasks) (cluster.sh stop-node)", at: client.elapsed())
        try await plan.broker.run(
            #""$NERCC_CHAOS_SCRIPTS/cluster.sh" stop-node "# + leader, log: directory, script: false)
        let successor = (try? plan.management.queueLeader(tasks)) ?? "unknown"
        event("\(leader) stopped; \(tasks) is led by \(successor)", at: client.elapsed())
        while client.elapsed() < restartAt { try? await Task.sleep(for: .milliseconds(50)) }
        try await plan.broker.run(
            #""$NERCC_CHAOS_SCRIPTS/cluster.sh" start-node "# + leader, log: directory, script: false)
        event("\(leader) started again", at: client.elapsed())
        let giveUp = ContinuousClock.now + .seconds(120)
        var now = try plan.management.quorumMembers(queues)
        while now.values.contains(where: { $0.online < $0.members }) && ContinuousClock.now < giveUp {
            try? await Task.sleep(for: .milliseconds(500))
            now = (try? plan.management.quorumMembers(queues)) ?? now
        }
        let summary = queues.map { q in
            "\(q) \(now[q]?.online ?? 0)/\(now[q]?.members ?? 0) (before \(before[q]?.members ?? 0))"
        }
        event("members online: \(summary.joined(separator: ", "))", at: client.elapsed())
        let short = queues.filter { (now[$0]?.online ?? 0) < (before[$0]?.members ?? 0) }
        if !short.isEmpty {
            lock.withLock {
                injectionFailure =
                    "\(short.joined(separator: ", ")) not back to \(before[short[0]]?.members ?? 0) replicas online within 120 s"
            }
        }
    }

    /// Reads what the dead-letter queue holds, counted by message type and reason.
    static func readDeadLetters(_ transport: RabbitMQTransport, queue: String) async -> [String: Int] {
        guard let status = try? await transport.inspectQueue(queue), status.messageCount > 0 else { return [:] }
        let expected = Int(status.messageCount)
        let tag = "chaos dead letters \(queue)"
        guard let stream = try? await transport.consume(queue: queue, prefetch: 2_000, consumerTag: tag) else {
            return ["unreadable": expected]
        }
        let reader = Task { () -> [String: Int] in
            var counts: [String: Int] = [:]
            var read = 0
            do {
                for try await d in stream {
                    let headers = d.properties.headers
                    let reason =
                        headers[WireFormat.Header.errorCode]?.stringValue
                        ?? headers["x-first-death-reason"]?.stringValue ?? "unknown"
                    let type = (d.properties.type ?? "message").replacingOccurrences(of: "nercc.", with: "")
                    counts["\(type)/\(reason)", default: 0] += 1
                    read += 1
                    if read >= expected { break }
                }
            } catch {}
            return counts
        }
        let timer = Task {
            try? await Task.sleep(for: .seconds(5))
            try? await transport.cancel(consumerTag: tag)
        }
        let counts = await reader.value
        timer.cancel()
        try? await transport.cancel(consumerTag: tag)
        return counts
    }

    /// Deletes the scenario's queues and exchanges.
    private func cleanUp(_ transport: RabbitMQTransport, extraQueues: [String]) async {
        let t = plan.topology
        var queues = [
            t.requestsQueue(model: plan.model.name), t.unroutedQueue, t.deadLetterQueue,
            t.tasksQueue(model: plan.model.name),
        ]
        queues += (0..<t.shards).flatMap { [t.resultsQueue(shard: $0), t.workerResultsQueue(shard: $0)] }
        for queue in queues + extraQueues { _ = try? await transport.deleteQueue(queue) }
        for exchange in [
            t.requestsExchange, t.unroutedExchange, t.tasksExchange, t.resultsExchange, t.cancelExchange,
            t.predictionsExchange, t.deadExchange,
        ] {
            try? await transport.deleteExchange(exchange)
        }
    }

    private func writeFindings(_ outcome: ChaosOutcome) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if let data = try? encoder.encode(outcome) {
            try? data.write(to: directory.appendingPathComponent("findings.json"))
        }
    }
}

/// The services of one scenario: child processes of this binary, which can be killed and restarted.
final class ChaosServices: @unchecked Sendable {
    enum Role: Sendable, Equatable {
        case encoder, decoder
        case worker(Int)

        var name: String {
            switch self {
            case .encoder: "encoder"
            case .decoder: "decoder"
            case .worker(let i): "worker\(i)"
            }
        }
    }

    let plan: ChaosPlan
    let directory: URL
    let workerFlags: [String]
    private(set) var encoder: ChildService
    private(set) var decoder: ChildService
    private(set) var workers: [ChildService] = []
    /// Starts of each role so far (names the logs of restarts).
    private var starts: [String: Int] = [:]
    private var stopped = false

    init(plan: ChaosPlan, directory: URL, workerFlags: [String]) throws {
        self.plan = plan
        self.directory = directory
        self.workerFlags = workerFlags
        // Placeholders until the real processes start (Swift needs every property set first).
        decoder = try Self.launch(Role.decoder, plan: plan, directory: directory, flags: [], start: 0)
        encoder = decoder
        starts["decoder"] = 1
        do {
            for i in 0..<plan.workers { workers.append(try launch(.worker(i))) }
            encoder = try launch(.encoder)
        } catch {
            for s in [decoder] + workers where s.isRunning { s.process.terminate() }
            throw error
        }
    }

    func workerID(_ i: Int) -> String { "\(plan.prefix)-w\(i)" }

    private func launch(_ role: Role) throws -> ChildService {
        let n = starts[role.name, default: 0]
        starts[role.name] = n + 1
        return try Self.launch(role, plan: plan, directory: directory, flags: workerFlags, start: n)
    }

    private static func launch(_ role: Role, plan: ChaosPlan, directory: URL, flags: [String], start: Int) throws
        -> ChildService
    {
        var arguments: [String]
        switch role {
        case .encoder:
            arguments =
                ["encoder", "--model", plan.modelPath, "--http-port", "\(plan.metricsPort)"] + plan.encoderFlags
        case .decoder:
            arguments = ["decoder", "--http-port", "\(plan.metricsPort + 1)"] + plan.decoderFlags
        case .worker(let i):
            arguments =
                [
                    "worker", "--model", plan.modelPath, "--worker-id", "\(plan.prefix)-w\(i)",
                    "--seed", "\(plan.seed &+ UInt64(i) &* 7919)", "--http-port", "\(plan.metricsPort + 2 + i)",
                ] + flags + plan.workerFlags
        }
        let name = start == 0 ? role.name : "\(role.name)-restart\(start)"
        return try ChildService(
            name: name, arguments: arguments + plan.serviceArguments, logDirectory: directory)
    }

    var all: [ChildService] { [encoder, decoder] + workers }

    private func service(_ role: Role) -> ChildService {
        switch role {
        case .encoder: encoder
        case .decoder: decoder
        case .worker(let i): workers[i]
        }
    }

    /// Waits until the workers, the decoder and the encoder consume their queues.
    func waitUntilReady(_ transport: RabbitMQTransport) async throws {
        let t = plan.topology
        let checks = [
            (t.tasksQueue(model: plan.model.name), plan.workers), (t.resultsQueue(shard: 0), 1),
            (t.requestsQueue(model: plan.model.name), 1),
        ]
        let deadline = ContinuousClock.now + .seconds(60)
        for (queue, count) in checks {
            while true {
                if let dead = all.first(where: { !$0.isRunning }) {
                    throw CommandError("\(dead.name) exited:\n\(dead.tail())")
                }
                if let status = try? await transport.inspectQueue(queue), Int(status.consumerCount) >= count { break }
                guard ContinuousClock.now < deadline else {
                    throw CommandError("the services did not start consuming '\(queue)' within 60 s")
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// kill -9 of a service; returns its pid once it is gone.
    func crash(_ role: Role) async throws -> Int32 {
        let victim = service(role)
        let pid = victim.process.processIdentifier
        Glibc.kill(pid, SIGKILL)
        let giveUp = ContinuousClock.now + .seconds(10)
        while victim.isRunning && ContinuousClock.now < giveUp { try await Task.sleep(for: .milliseconds(10)) }
        return pid
    }

    /// Starts a service again (after ``crash(_:)``); returns its pid.
    func restart(_ role: Role) throws -> Int32 {
        let fresh = try launch(role)
        switch role {
        case .encoder: encoder = fresh
        case .decoder: decoder = fresh
        case .worker(let i): workers[i] = fresh
        }
        return fresh.process.processIdentifier
    }

    /// The connection names of the running services, as the management API shows them.
    func connectionNames() -> Set<String> {
        let host = ProcessInfo.processInfo.hostName
        return Set(
            [
                "encoder@\(host):\(encoder.process.processIdentifier)",
                "decoder@\(host):\(decoder.process.processIdentifier)",
            ]
                + (0..<workers.count).map { "worker \(workerID($0))" })
    }

    /// Services that exited though nobody stopped them.
    func crashes() -> [String] {
        all.filter { !$0.isRunning }.map {
            "\($0.name) exited on its own (status \($0.process.terminationStatus)): \($0.tail(3))"
        }
    }

    /// The counters of the encoder and the decoder (since their last start).
    func counters() -> [String: Double] {
        var out: [String: Double] = [:]
        for port in [plan.metricsPort, plan.metricsPort + 1] {
            for (name, value) in MetricsScrape.counters(port: port) where name.hasSuffix("_total") && value != 0 {
                out[name] = value
            }
        }
        return out
    }

    /// Stops every service (SIGTERM, then SIGKILL after 15 s).
    func stopAll() async {
        guard !stopped else { return }
        stopped = true
        for s in [encoder] + workers + [decoder] { await s.stop() }
    }
}

/// The scenario's client: publishes one-query requests with confirms, and records every answer on
/// its reply queue and, as a cross-check, on the predictions exchange.
final class ChaosClient: @unchecked Sendable {
    /// One request the client published.
    struct Sent {
        var row: Int
        var sentAt: Double
        var confirmedAt: Double?
        var failure: String?
    }

    /// One delivery of an answer.
    struct Copy: Codable, Sendable {
        var messageID: String
        /// `prediction` or `error`.
        var kind: String
        /// ok / degraded for a prediction, the code of an error record.
        var status: String
        /// Predicted class and outputs by query index.
        var classes: [Int: Int] = [:]
        var outputs: [Int: [Float]] = [:]
        /// Seconds since the load started.
        var at: Double
        /// The message of an error record.
        var message: String?

        func agrees(with other: Copy) -> Bool {
            guard kind == other.kind, classes == other.classes else { return false }
            if kind == "error" { return status == other.status }
            for (index, a) in outputs {
                guard let b = other.outputs[index], a.count == b.count else { return false }
                for (x, y) in zip(a, b) where abs(x - y) > 1e-5 * max(1, abs(x)) { return false }
            }
            return true
        }

        var label: String { kind == "prediction" ? "prediction \(status)" : "error \(status)" }

        /// How the later deliveries of one message_id differ from the first, for the findings.
        static func difference(_ copies: [Copy]) -> String {
            guard copies.dropFirst().contains(where: { !$0.agrees(with: copies[0]) }) else { return "" }
            var parts: [String] = []
            for copy in copies.dropFirst() {
                var largest: Float = 0
                for (index, a) in copies[0].outputs {
                    for (x, y) in zip(a, copy.outputs[index] ?? []) { largest = max(largest, abs(x - y)) }
                }
                parts.append(
                    "\(copy.label) at \(String(format: "%.2f", copy.at)) s, classes \(copy.classes.sorted { $0.key < $1.key }.map(\.value)) vs \(copies[0].classes.sorted { $0.key < $1.key }.map(\.value)), largest output difference \(largest)"
                )
            }
            return ", differing: " + parts.joined(separator: "; ")
        }
    }

    let transport: RabbitMQTransport
    let plan: ChaosPlan
    let replyQueue: String
    let tapQueue: String
    private let lock = NSLock()
    // Guarded by `lock`.
    private var start = ContinuousClock.now
    private var sent: [String: Sent] = [:]
    private var answers: [String: [String: [Copy]]] = [:]
    private var tap: [String: [String: Double]] = [:]
    private var clientRedeliveries = 0
    private var unreadable = 0
    private var consumers: [Task<Void, Never>] = []
    private let tags: [String]

    init(transport: RabbitMQTransport, plan: ChaosPlan) async throws {
        self.transport = transport
        self.plan = plan
        let t = plan.topology
        // Durable queues, so that answers survive a broker restart; deleted with the scenario.
        replyQueue = "\(plan.prefix).reply.chaos"
        tapQueue = "\(plan.prefix).predictions.chaos"
        tags = ["chaos \(replyQueue)", "chaos \(tapQueue)"]
        // On a cluster (quorum coded queues) they are quorum queues too, so that a node loss keeps them.
        var kind: [String: HeaderValue] = ["x-queue-type": t.codedQueues == .quorum ? "quorum" : "classic"]
        if t.codedQueues == .quorum, let size = t.quorumGroupSize {
            kind["x-quorum-initial-group-size"] = .int(Int64(size))
        }
        try await transport.declare(
            Topology(
                exchanges: [.init(name: t.predictionsExchange, type: "topic")],
                queues: [.init(name: replyQueue, arguments: kind), .init(name: tapQueue, arguments: kind)],
                bindings: [.init(queue: tapQueue, exchange: t.predictionsExchange, routingKey: "#")]))
        for (queue, tag, isReply) in [(replyQueue, tags[0], true), (tapQueue, tags[1], false)] {
            let stream = try await transport.consume(queue: queue, prefetch: 1_000, consumerTag: tag)
            consumers.append(
                Task { [weak self] in
                    do {
                        for try await d in stream { await self?.receive(d, isReply: isReply) }
                    } catch {}
                })
        }
    }

    func resetClock() { lock.withLock { start = .now } }

    /// Seconds since the load started.
    func elapsed() -> Double { ChaosRun.seconds(lock.withLock { start }.duration(to: .now)) }

    var sentCount: Int { lock.withLock { sent.count } }
    var confirmedCount: Int { lock.withLock { sent.values.count { $0.confirmedAt != nil } } }
    /// Confirmed requests without an answer yet.
    var openCount: Int {
        lock.withLock { sent.filter { $0.value.confirmedAt != nil && answers[$0.key] == nil }.count }
    }

    func close() async {
        for tag in tags { try? await transport.cancel(consumerTag: tag) }
        for c in consumers { c.cancel() }
    }

    private func receive(_ delivery: Delivery, isReply: Bool) async {
        let at = elapsed()
        if let parsed = Self.parse(delivery, at: at) {
            let (id, copy) = parsed
            lock.withLock {
                if isReply {
                    // A delivery the broker gives this client again (its connection dropped before
                    // the ack) is not a repeat by the system.
                    if delivery.redelivered, answers[id]?[copy.messageID] != nil {
                        clientRedeliveries += 1
                    } else {
                        answers[id, default: [:]][copy.messageID, default: []].append(copy)
                    }
                } else if tap[id]?[copy.messageID] == nil {
                    tap[id, default: [:]][copy.messageID] = at
                }
            }
        } else {
            lock.withLock { unreadable += 1 }
        }
        try? await transport.ack(delivery.tag)
    }

    static func parse(_ d: Delivery, at: Double) -> (String, Copy)? {
        let messageID = d.properties.messageID ?? "(no message_id)"
        switch d.properties.type {
        case WireFormat.MessageType.error:
            guard let record = try? JSONDecoder().decode(ErrorRecord.self, from: Data(d.body)),
                let id = record.requestID ?? d.properties.correlationID
            else { return nil }
            return (id, Copy(messageID: messageID, kind: "error", status: record.code, at: at, message: record.message))
        case WireFormat.MessageType.prediction:
            guard let record = try? JSONDecoder().decode(PredictionRecord.self, from: Data(d.body)) else { return nil }
            var copy = Copy(messageID: messageID, kind: "prediction", status: record.status.rawValue, at: at)
            for p in record.predictions {
                copy.classes[p.index] = p.predictedClass
                copy.outputs[p.index] = p.outputs
            }
            return (record.requestID, copy)
        default:
            return nil
        }
    }

    /// Publishes requests as a Poisson process of `rate` per second for `seconds`; returns once
    /// every publish is confirmed or failed.
    func publishLoad(rate: Double, seconds: Double, seed: UInt64) async {
        var rng = SeededGenerator(seed: seed)
        let begin = lock.withLock { start }
        let encoder = JSONEncoder()
        var due = 0.0
        await withTaskGroup(of: Void.self) { group in
            var i = 0
            while true {
                due += -log(Double.random(in: Double.ulpOfOne..<1, using: &rng)) / rate
                guard due < seconds else { break }
                try? await Task.sleep(until: begin + .seconds(due), clock: .continuous)
                let id = "\(plan.prefix)-\(i)"
                let row = i % plan.queries.rows
                let request = InferenceRequest(
                    requestID: id, model: plan.model.name,
                    queries: [plan.queries.row(row).map { Double(Float($0)) }])
                let body = (try? encoder.encode(request)).map { Array($0) } ?? []
                let message = OutgoingMessage(
                    exchange: plan.topology.requestsExchange, routingKey: plan.model.name,
                    properties: MessageProperties(
                        contentType: WireFormat.jsonContentType, messageID: id, correlationID: id, replyTo: replyQueue,
                        type: WireFormat.MessageType.request,
                        headers: [
                            WireFormat.Header.version: .int(Int64(WireFormat.version)),
                            WireFormat.Header.sentMicroseconds: .int(
                                Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())),
                        ]),
                    body: body)
                let at = elapsed()
                lock.withLock { sent[id] = Sent(row: row, sentAt: at) }
                group.addTask {
                    var failure: String? = nil
                    do throws(MessagingError) {
                        try await self.transport.publish(message)
                    } catch {
                        failure = error.message
                    }
                    let done = self.elapsed()
                    self.lock.withLock {
                        if let failure {
                            self.sent[id]?.failure = failure
                        } else {
                            self.sent[id]?.confirmedAt = done
                        }
                    }
                }
                i += 1
            }
            await group.waitForAll()
        }
    }

    /// Checks every request against the answers, into `outcome`.
    func analyse(into outcome: inout ChaosOutcome) {
        lock.withLock {
            outcome.sent = sent.count
            outcome.clientRedeliveries = clientRedeliveries
            outcome.unreadableAnswers = unreadable
            var kinds: [String: Int] = [:]
            func describe(_ id: String) -> String {
                let s = sent[id]
                var text = id
                if let s {
                    text += String(format: " (published at %.2f s", s.sentAt)
                    text += s.confirmedAt.map { String(format: ", confirmed at %.2f s)", $0) } ?? ", not confirmed)"
                }
                let seen = (answers[id] ?? [:]).sorted { $0.value[0].at < $1.value[0].at }
                if seen.isEmpty {
                    text += ": no answer on the reply queue"
                } else {
                    text +=
                        ": "
                        + seen.map { mid, copies in
                            String(format: "%@ %@ at %.2f s", mid, copies[0].label, copies[0].at)
                                + (copies.count > 1 ? " (×\(copies.count)\(Copy.difference(copies)))" : "")
                                + (copies[0].message.map { " [\($0)]" } ?? "")
                        }.joined(separator: "; ")
                }
                let tapped = (tap[id] ?? [:]).filter { answers[id]?[$0.key] == nil }
                if !tapped.isEmpty {
                    text +=
                        "; only on the predictions exchange: "
                        + tapped.sorted { $0.value < $1.value }.map { String(format: "%@ at %.2f s", $0.key, $0.value) }
                        .joined(separator: ", ")
                }
                return text
            }
            for (id, request) in sent.sorted(by: { $0.value.sentAt < $1.value.sentAt }) {
                let byMessage = answers[id] ?? [:]
                guard request.confirmedAt != nil else {
                    outcome.unconfirmed += 1
                    if !byMessage.isEmpty { outcome.unconfirmedAnswered += 1 }
                    if outcome.unconfirmedExamples.count < 5 {
                        outcome.unconfirmedExamples.append("\(id): \(request.failure ?? "no confirm")")
                    }
                    continue
                }
                outcome.confirmed += 1
                guard !byMessage.isEmpty else {
                    outcome.lost += 1
                    outcome.lostQueries.append(describe(id))
                    continue
                }
                outcome.answered += 1
                let distinct = byMessage.values.map { $0[0] }.sorted { $0.at < $1.at }
                kinds[distinct[0].status, default: 0] += 1
                for copy in distinct where copy.status == "timeout" { outcome.timeoutRecords += 1 }
                if distinct.contains(where: { $0.kind == "error" && $0.status != "overloaded" }),
                    outcome.errorQueries.count < 200
                {
                    outcome.errorQueries.append(describe(id))
                }
                if distinct.count > 1 {
                    outcome.duplicated += 1
                    outcome.duplicatedQueries.append(describe(id))
                }
                if distinct.dropFirst().contains(where: { !$0.agrees(with: distinct[0]) }) {
                    outcome.conflicting += 1
                    outcome.conflictingQueries.append(describe(id))
                }
                for copies in byMessage.values where copies.count > 1 {
                    outcome.repeats += copies.count - 1
                    if copies.dropFirst().contains(where: { !$0.agrees(with: copies[0]) }) {
                        outcome.differingRepeats += 1
                        outcome.differingRepeatQueries.append(describe(id))
                    }
                }
            }
            for id in answers.keys.sorted() where sent[id] == nil {
                outcome.unexpected += 1
                outcome.unexpectedAnswers.append(describe(id))
            }
            outcome.kinds = kinds
            // The cross-check: answers the predictions exchange carried and the reply queue did not.
            for (id, seen) in tap {
                outcome.onlyOnPredictionsExchange += seen.keys.count { answers[id]?[$0] == nil }
            }
        }
    }
}

/// A worker that misbehaves: it competes for tasks and answers each with a result whose coded index
/// is N + 7, outside every batch, with every other header a real worker sets. The decoder must
/// dead-letter those results (`bad-header`) and answer the batches from the other results.
final class BadWorker: @unchecked Sendable {
    let transport: RabbitMQTransport
    let tag: String
    private var loop: Task<Int, Never>?

    init(plan: ChaosPlan) async throws {
        var configuration = plan.client
        configuration.connectionName = "worker \(plan.prefix)-bad"
        let transport = RabbitMQTransport(configuration: configuration, logger: plan.logger)
        try await transport.connect(retryingFor: .seconds(30))
        let topology = plan.topology
        let model = plan.model
        let tag = "worker \(plan.prefix)-bad"
        let stream: AsyncThrowingStream<Delivery, any Error>
        do {
            stream = try await transport.consume(
                queue: topology.tasksQueue(model: model.name), prefetch: 1, consumerTag: tag)
        } catch {
            await transport.close()
            throw error
        }
        self.transport = transport
        self.tag = tag
        loop = Task {
            var answered = 0
            do {
                for try await task in stream {
                    let received = Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())
                    let headers = task.properties.headers
                    guard let replyTo = task.properties.replyTo, let n = headers[WireFormat.Header.workers]?.intValue,
                        let batchID = headers[WireFormat.Header.batchID]?.stringValue
                    else {
                        try? await transport.ack(task.tag)
                        continue
                    }
                    let input = (try? TensorBody.decode(task.body, shape: model.inputShape)) ?? []
                    let output =
                        (try? model.predict(flatInputs: input, count: 1))
                        ?? [Float](repeating: 0, count: model.outputSize)
                    var resultHeaders: [String: HeaderValue] = [
                        WireFormat.Header.version: .int(Int64(WireFormat.version)),
                        WireFormat.Header.batchID: .string(batchID),
                        WireFormat.Header.codedIndex: .int(n + 7),
                        WireFormat.Header.model: .string(model.name),
                        WireFormat.Header.shape: .string(TensorBody.shapeHeader(model.outputShape)),
                        WireFormat.Header.worker: .string("\(topology.tasksQueuePrefix)-bad-worker"),
                        WireFormat.Header.computeMicroseconds: .int(0),
                        WireFormat.Header.receivedMicroseconds: .int(received),
                        WireFormat.Header.sentMicroseconds: .int(
                            Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())),
                    ]
                    if let copy = headers[WireFormat.Header.manifest] {
                        resultHeaders[WireFormat.Header.manifest] = copy
                    }
                    let result = OutgoingMessage(
                        exchange: "", routingKey: replyTo,
                        properties: MessageProperties(
                            contentType: WireFormat.tensorContentType, messageID: "\(batchID)/\(n + 7)/result",
                            correlationID: batchID, timestamp: UInt64(Date().timeIntervalSince1970),
                            type: WireFormat.MessageType.result, persistent: topology.codedMessagesArePersistent,
                            headers: resultHeaders),
                        body: TensorBody.encode(output), mandatory: true)
                    if (try? await transport.publish(result)) != nil { answered += 1 }
                    // It takes a share of the tasks, not all of them: one task per 100 ms.
                    try? await Task.sleep(for: .milliseconds(100))
                    try? await transport.ack(task.tag)
                }
            } catch {}
            return answered
        }
    }

    /// Stops consuming and closes; returns how many bad results it published.
    func stop() async -> Int {
        try? await transport.cancel(consumerTag: tag)
        let answered = await loop?.value ?? 0
        await transport.close()
        return answered
    }
}

/// What a scenario found.
struct ChaosOutcome: Codable, Sendable {
    var scenario: String
    var prefix: String
    var passed = false
    var failures: [String] = []
    var notes: [String] = []
    /// Wall-clock seconds of the whole scenario (start-up, load, drain, settle, clean-up).
    var seconds = 0.0
    var sent = 0
    var confirmed = 0
    var unconfirmed = 0
    var unconfirmedAnswered = 0
    var answered = 0
    /// First answer of each answered query, by status (ok, degraded) or error code.
    var kinds: [String: Int] = [:]
    var lost = 0
    var duplicated = 0
    var conflicting = 0
    var unexpected = 0
    var repeats = 0
    var differingRepeats = 0
    var timeoutRecords = 0
    var clientRedeliveries = 0
    var unreadableAnswers = 0
    var onlyOnPredictionsExchange = 0
    var deadLetters: [String: Int] = [:]
    var counters: [String: Double] = [:]
    var crashes: [String] = []
    var events: [String] = []
    var lostQueries: [String] = []
    var duplicatedQueries: [String] = []
    var conflictingQueries: [String] = []
    var unexpectedAnswers: [String] = []
    var differingRepeatQueries: [String] = []
    /// Queries answered with an error record other than `overloaded` (timeouts, decode failures; at most 200).
    var errorQueries: [String] = []
    var unconfirmedExamples: [String] = []

    /// Decides pass or fail: no lost, duplicated, conflicting or unexpected answers, plus the
    /// scenario's own expectation.
    mutating func judge(_ scenario: ChaosScenario) {
        var f: [String] = []
        if sent == 0 || confirmed == 0 { f.append("no request was confirmed") }
        for (count, what) in [
            (lost, "lost"), (duplicated, "duplicated"), (conflicting, "conflicting"), (unexpected, "unexpected"),
        ] where count > 0 {
            f.append("\(count) \(what)")
        }
        switch scenario {
        case .fullTaskQueue:
            if (kinds["overloaded"] ?? 0) == 0 { f.append("no overloaded record") }
            if timeoutRecords > 0 {
                f.append("\(timeoutRecords) timeout records (a full queue must answer overloaded)")
            }
        case .badWorker:
            if deadLetters.filter({ $0.key.hasSuffix("/bad-header") && $0.key.hasPrefix("result") }).isEmpty {
                f.append("no bad-header result in the dead-letter queue")
            }
            let errors = kinds.filter { $0.key != "ok" && $0.key != "degraded" }.values.reduce(0, +)
            if errors > 0 { f.append("\(errors) queries answered with an error record instead of a prediction") }
        default:
            break
        }
        f += crashes
        f += notes
        failures = f
        passed = f.isEmpty
    }

    /// Answer kinds in a fixed order: ok, degraded, timeout, overloaded, then the others.
    var kindsText: String {
        let order = ["ok", "degraded", "timeout", "overloaded"]
        let known = order.compactMap { k in kinds[k].map { "\($0) \(k)" } }
        let others = kinds.keys.filter { !order.contains($0) }.sorted().map { "\(kinds[$0]!) \($0)" }
        return (known + others).joined(separator: ", ")
    }

    var summaryLine: String {
        var line = "chaos \(scenario): \(confirmed) confirmed, \(answered) answered"
        if !kinds.isEmpty { line += " (\(kindsText))" }
        line +=
            ", \(lost) lost, \(duplicated) duplicated, \(conflicting) conflicting, \(unexpected) unexpected, \(repeats) repeats"
        line += passed ? " — pass" : " — FAIL"
        line += String(format: " (%.0f s)", seconds)
        return line
    }

    /// What a reader needs beside the summary line: why it failed, and a few examples.
    var detailLines: [String] {
        var lines = failures.map { "failed: \($0)" }
        if unconfirmed > 0 {
            lines.append(
                "\(unconfirmed) requests were not confirmed (\(unconfirmedAnswered) of them answered all the same)")
        }
        if differingRepeats > 0 {
            lines.append(
                "\(differingRepeats) repeats carried another answer than the first delivery of their message_id")
        }
        if onlyOnPredictionsExchange > 0 {
            lines.append(
                "\(onlyOnPredictionsExchange) answers reached the predictions exchange but not the reply queue")
        }
        for (title, list) in [
            ("lost", lostQueries), ("duplicated", duplicatedQueries), ("conflicting", conflictingQueries),
            ("unexpected", unexpectedAnswers), ("differing repeat", differingRepeatQueries),
        ] {
            for item in list.prefix(5) { lines.append("\(title): \(item)") }
            if list.count > 5 { lines.append("… \(list.count - 5) more \(title) in findings.json") }
        }
        return lines
    }
}

/// The report of `--output`.
struct ChaosReport: Codable {
    var machine: String
    var command: String
    var outcomes: [ChaosOutcome]

    func write(to path: String) throws {
        let url = URL(fileURLWithPath: path)
        if path.hasSuffix(".json") {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(self).write(to: url)
        } else {
            try markdown().write(to: url, atomically: true, encoding: .utf8)
        }
    }

    func markdown() -> String {
        var text = "# nercc chaos\n\n\(machine)\n\n`nercc \(command)`\n\n"
        text +=
            "| scenario | confirmed | answered | answers | lost | duplicated | conflicting | unexpected | repeats | result | s |\n"
        text += "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|\n"
        for o in outcomes {
            text +=
                "| \(o.scenario) | \(o.confirmed) | \(o.answered) | \(o.kindsText) | \(o.lost) | \(o.duplicated) | \(o.conflicting) | \(o.unexpected) | \(o.repeats) | \(o.passed ? "pass" : "FAIL") | \(String(format: "%.0f", o.seconds)) |\n"
        }
        text += "\n```\n"
        for o in outcomes {
            text += o.summaryLine + "\n"
            for line in o.detailLines { text += "  \(line)\n" }
        }
        text += "chaos: \(outcomes.count) scenarios, \(outcomes.count { $0.passed }) passed\n```\n"
        for o in outcomes {
            text += "\n## \(o.scenario)\n\n"
            text += o.events.map { "    \($0)" }.joined(separator: "\n") + "\n"
            if !o.deadLetters.isEmpty {
                text +=
                    "\nDead letters: "
                    + o.deadLetters.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                    + "\n"
            }
        }
        return text
    }
}

/// The private broker's scripts: stop.sh, start.sh, and rabbitmqctl with the settings of env.sh.
struct BrokerScripts: Sendable {
    let directory: String

    /// Refuses scripts that describe another broker than the one at `--url` (they would restart it).
    func check(amqpPort: Int) async throws {
        guard FileManager.default.fileExists(atPath: "\(directory)/env.sh") else {
            throw CommandError("\(directory)/env.sh does not exist; pass --broker-scripts DIR (ops/broker)")
        }
        let (status, output) = try await shell(
            #". "$NERCC_CHAOS_SCRIPTS/env.sh" >/dev/null 2>&1; echo "$NERCC_AMQP_PORT""#)
        let port = output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, port == "\(amqpPort)" else {
            throw CommandError(
                "the broker of \(directory)/env.sh listens on AMQP port \(port), --url on \(amqpPort): memory-alarm and broker-restart would act on another broker; set the NERCC_* variables of ops/broker/env.sh (ops/chaos.sh does) or leave those scenarios out"
            )
        }
    }

    /// Runs `rabbitmqctl -n <node> <arguments>` with the node's cookie and PATH from env.sh.
    func ctl(_ arguments: String, log: URL) async throws {
        try await run(
            #". "$NERCC_CHAOS_SCRIPTS/env.sh" && timeout 60 rabbitmqctl -q -n "$RABBITMQ_NODENAME" "# + arguments,
            log: log, script: false)
    }

    /// Runs one of the scripts (stop.sh, start.sh), or a shell command line; its output goes to
    /// `<log>/broker.log`.
    func run(_ command: String, log: URL, script: Bool = true) async throws {
        let line = script ? #""$NERCC_CHAOS_SCRIPTS/"# + command + "\"" : command
        let (status, output) = try await shell(line)
        let file = log.appendingPathComponent("broker.log")
        let entry = "$ \(command)\n\(output)\n"
        if let handle = try? FileHandle(forWritingTo: file) {
            handle.seekToEndOfFile()
            handle.write(Data(entry.utf8))
            try? handle.close()
        } else {
            try? entry.write(to: file, atomically: true, encoding: .utf8)
        }
        guard status == 0 else {
            throw CommandError(
                "'\(command)' failed (status \(status)): \(output.split(separator: "\n").suffix(3).joined(separator: " / "))"
            )
        }
    }

    private func shell(_ line: String) async throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        // The shell first closes every descriptor it inherited beyond stdin, stdout and stderr, so that a
        // daemon it starts (start.sh launches the broker) does not keep them open: not this process's
        // broker connections, nor the descriptor by which this process learns that the shell exited.
        let closeInherited =
            #"for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null; "#
        process.arguments = ["-c", closeInherited + line]
        var environment = ProcessInfo.processInfo.environment
        environment["NERCC_CHAOS_SCRIPTS"] = URL(fileURLWithPath: directory).path
        process.environment = environment
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("nercc-chaos-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: output) }
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let giveUp = ContinuousClock.now + .seconds(300)
        while process.isRunning {
            if ContinuousClock.now > giveUp {
                process.terminate()
                try? handle.close()
                throw CommandError("'\(line)' did not finish within 300 s")
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        try? handle.close()
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        return (process.terminationStatus, text)
    }
}

/// A minimal client of RabbitMQ's management HTTP API (plain HTTP/1.0 with basic authentication).
struct ManagementAPI: Sendable {
    /// One node's management listener.
    struct Endpoint: Sendable {
        let host: String
        let port: Int
        let basePath: String
        let authorization: String
    }
    /// Every node given, tried in turn: a node that does not accept the connection hands over to
    /// the next.
    let endpoints: [Endpoint]
    /// The virtual host, percent-encoded for paths.
    let virtualHost: String

    init(url: String, virtualHost: String) throws {
        endpoints = try url.split(separator: ",").map { part in
            let text = part.trimmingCharacters(in: .whitespaces)
            guard let components = URLComponents(string: text), components.scheme == "http",
                let host = components.host
            else {
                throw CommandError("--management-url must be http://[user:password@]host:port/, got '\(text)'")
            }
            var path = components.path
            while path.hasSuffix("/") { path.removeLast() }
            let credentials = "\(components.user ?? "guest"):\(components.password ?? "guest")"
            return Endpoint(
                host: host, port: components.port ?? 15_672, basePath: path,
                authorization: Data(credentials.utf8).base64EncodedString())
        }
        guard !endpoints.isEmpty else { throw CommandError("--management-url is empty") }
        self.virtualHost = virtualHost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "%2F"
    }

    /// The node that leads a quorum queue.
    func queueLeader(_ queue: String) throws -> String {
        let info = try json("GET", "/api/queues/\(virtualHost)/\(Self.encode(queue))") as? [String: Any]
        guard let leader = info?["leader"] as? String else {
            throw CommandError("management API: \(queue) has no leader (not a quorum queue?)")
        }
        return leader
    }

    /// Each quorum queue's members and how many of them are online.
    func quorumMembers(_ queues: [String]) throws -> [String: (members: Int, online: Int)] {
        var result: [String: (members: Int, online: Int)] = [:]
        for queue in queues {
            let info = try json("GET", "/api/queues/\(virtualHost)/\(Self.encode(queue))") as? [String: Any]
            let members = info?["members"] as? [String] ?? []
            let online = Set(info?["online"] as? [String] ?? [])
            result[queue] = (members.count, members.filter(online.contains).count)
        }
        return result
    }

    /// `method path` with a JSON body; returns the decoded JSON answer (nil for an empty one).
    @discardableResult
    func json(_ method: String, _ path: String, body: Any? = nil) throws -> Any? {
        let payload = try body.map { try JSONSerialization.data(withJSONObject: $0) }.map { [UInt8]($0) } ?? []
        let (status, answer) = try request(method, path, body: payload)
        guard (200..<300).contains(status) else {
            throw CommandError(
                "management API: \(method) \(path) answered \(status): \(String(decoding: answer.prefix(300), as: UTF8.self))"
            )
        }
        return answer.isEmpty ? nil : try JSONSerialization.jsonObject(with: Data(answer))
    }

    func setPolicy(name: String, pattern: String, definition: [String: Any]) throws {
        try json(
            "PUT", "/api/policies/\(virtualHost)/\(Self.encode(name))",
            body: ["pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 100])
    }

    func deletePolicy(name: String) throws {
        try json("DELETE", "/api/policies/\(virtualHost)/\(Self.encode(name))")
    }

    /// Closes every connection whose client-provided name is in `names`; returns the names closed.
    func closeConnections(named names: Set<String>) throws -> [String] {
        guard let list = try json("GET", "/api/connections") as? [[String: Any]] else { return [] }
        var closed: [String] = []
        for connection in list {
            let provided =
                connection["user_provided_name"] as? String
                ?? (connection["client_properties"] as? [String: Any])?["connection_name"] as? String
            guard let provided, names.contains(provided), let name = connection["name"] as? String else { continue }
            // A connection can go away between the listing and the DELETE (404): it is not counted.
            let path = "/api/connections/\(Self.encode(name))"
            let (status, answer) = try request("DELETE", path, body: [])
            if status == 404 { continue }
            guard (200..<300).contains(status) else {
                throw CommandError(
                    "management API: DELETE \(path) answered \(status): \(String(decoding: answer.prefix(300), as: UTF8.self))"
                )
            }
            closed.append(provided)
        }
        return closed
    }

    /// Waits until every node's memory alarm is `raised` (or not); false after `seconds`.
    func waitForMemoryAlarm(_ raised: Bool, seconds: Double) async -> Bool {
        let giveUp = ContinuousClock.now + .seconds(seconds)
        repeat {
            if let nodes = try? json("GET", "/api/nodes") as? [[String: Any]], !nodes.isEmpty,
                nodes.allSatisfy({ ($0["mem_alarm"] as? Bool) == raised })
            {
                return true
            }
            try? await Task.sleep(for: .milliseconds(250))
        } while ContinuousClock.now < giveUp
        return false
    }

    static func encode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// One request on a fresh connection to the first node that accepts one; returns the status and
    /// the body.
    func request(_ method: String, _ path: String, body: [UInt8]) throws -> (Int, [UInt8]) {
        var failure: (any Error)?
        for endpoint in endpoints {
            do {
                return try request(method, path, body: body, on: endpoint)
            } catch let error as Unreachable {
                failure = error.underlying
            }
        }
        throw failure ?? CommandError("management API: no node given")
    }

    /// A node that did not accept the connection (the next one may).
    private struct Unreachable: Error { let underlying: CommandError }

    private func request(_ method: String, _ path: String, body: [UInt8], on endpoint: Endpoint) throws -> (
        Int, [UInt8]
    ) {
        let (host, port, basePath, authorization) = (
            endpoint.host, endpoint.port, endpoint.basePath, endpoint.authorization
        )
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(host, "\(port)", &hints, &list) == 0, let first = list else {
            throw Unreachable(underlying: CommandError("management API: cannot resolve \(host)"))
        }
        defer { freeaddrinfo(list) }
        var fd: Int32 = -1
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let address = cursor, fd < 0 {
            let s = socket(address.pointee.ai_family, address.pointee.ai_socktype, address.pointee.ai_protocol)
            if s >= 0 {
                var timeout = timeval(tv_sec: 15, tv_usec: 0)
                setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                if Glibc.connect(s, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 {
                    fd = s
                } else {
                    Glibc.close(s)
                }
            }
            cursor = address.pointee.ai_next
        }
        guard fd >= 0 else {
            throw Unreachable(underlying: CommandError("management API: cannot connect to \(host):\(port)"))
        }
        defer { Glibc.close(fd) }
        var head =
            "\(method) \(basePath)\(path) HTTP/1.0\r\nHost: \(host):\(port)\r\nAuthorization: Basic \(authorization)\r\n"
            + "Accept: application/json\r\nX-Reason: nercc chaos\r\n"
        if method == "PUT" || method == "POST" {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        }
        let outgoing = Array((head + "\r\n").utf8) + body
        var written = 0
        while written < outgoing.count {
            let n = outgoing[written...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw CommandError("management API: the connection to \(host):\(port) broke") }
            written += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard let split = (0..<max(0, response.count - 3)).first(where: { Array(response[$0..<($0 + 4)]) == separator })
        else {
            throw CommandError("management API: no answer from \(host):\(port) to \(method) \(path)")
        }
        let headers = String(decoding: response[..<split], as: UTF8.self)
        let status = headers.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        var payload = Array(response[(split + 4)...])
        if headers.lowercased().contains("transfer-encoding: chunked") { payload = Self.dechunk(payload) }
        return (status, payload)
    }

    static func dechunk(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            guard let end = (i..<(bytes.count - 1)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }) else {
                break
            }
            let sizeText = String(decoding: bytes[i..<end], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size > 0 else { break }
            let start = end + 2
            guard start + size <= bytes.count else { break }
            out += bytes[start..<(start + size)]
            i = start + size + 2
        }
        return out
    }
}
