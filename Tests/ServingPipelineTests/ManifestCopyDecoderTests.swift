import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import ServingPipeline
import Testing

/// The decoder answers from the manifest copies results carry, and only from copies that belong to
/// the batch: a copy whose members do not hash to its batch id is ignored.
@Suite(.timeLimit(.minutes(1))) struct ManifestCopyDecoderTests {
    static let topology = ServingTopology()

    static func manifest(requestID: String = "r", batchID: String? = nil) -> BatchManifest {
        let members = (0..<2).map {
            BatchManifest.Member(requestID: requestID, index: $0, requestQueries: 2, replyTo: "reply")
        }
        return BatchManifest(
            batchID: batchID ?? batchIdentifier(members: members), model: "linear",
            scheme: .init(name: "bacc", workers: 4, batchSize: 2, stragglers: 2), waitFor: 2,
            createdMilliseconds: MillisecondClock.system.now(),
            deadlineMilliseconds: MillisecondClock.system.now() + 30_000, outputSize: 2, labels: nil,
            members: members)
    }

    static func result(_ index: Int, batchID: String, copy: BatchManifest?) throws -> OutgoingMessage {
        var headers: [String: HeaderValue] = [
            WireFormat.Header.version: .int(1), WireFormat.Header.batchID: .string(batchID),
            WireFormat.Header.codedIndex: .int(Int64(index)), WireFormat.Header.shape: .string("2"),
        ]
        if let copy {
            headers[WireFormat.Header.manifest] = .string(
                String(decoding: try JSONEncoder().encode(copy), as: UTF8.self))
        }
        return OutgoingMessage(
            exchange: "", routingKey: topology.workerResultsQueue(shard: 0),
            properties: MessageProperties(
                correlationID: batchID, type: WireFormat.MessageType.result, persistent: false, headers: headers),
            body: TensorBody.encode([Float(index), 1]))
    }

    /// Runs a decoder, lets `scenario` publish, and returns the predictions that reached `reply`,
    /// the metrics, and the dead letters' error codes and types ("bad-token nercc.result").
    static func run(
        _ scenario: @Sendable (InMemoryTransport) async throws -> Void, until answers: Int,
        configuration: DecoderConfiguration = DecoderConfiguration()
    ) async throws -> (predictions: [PredictionRecord], metrics: ServiceMetrics, dead: [String]) {
        let transport = InMemoryTransport()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let metrics = ServiceMetrics()
        let decoder = DecoderService(
            transport: transport, configuration: configuration, topology: topology, logger: logger,
            metrics: metrics)
        let stop = StopSignal()
        var got: [PredictionRecord] = []
        var dead: [String] = []
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await decoder.run(stop: stop) }
            await transport.waitForConsumers(on: "nercc.results.0")
            await transport.waitForConsumers(on: "nercc.worker-results.0")
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            try await scenario(transport)
            try await WorkerWindowTests.eventually { transport.readyMessages(in: "reply").count >= answers }
            got = try transport.readyMessages(in: "reply").map {
                try JSONDecoder().decode(PredictionRecord.self, from: Data($0.body))
            }
            dead = transport.readyMessages(in: topology.deadLetterQueue).map {
                "\($0.properties.headers[WireFormat.Header.errorCode]?.stringValue ?? "none") \($0.properties.type ?? "none")"
            }
            stop.stop()
            try await group.waitForAll()
        }
        return (got, metrics, dead)
    }

    @Test func aBatchIsAnsweredFromItsResultsCopiesBeforeItsManifestMessage() async throws {
        let manifest = Self.manifest()
        let (predictions, metrics, _) = try await Self.run(
            { transport in
                for n in [0, 3] {
                    try await transport.publish(try Self.result(n, batchID: manifest.batchID, copy: manifest))
                }
            }, until: 1)
        #expect(predictions.map(\.requestID) == ["r"])
        #expect(predictions.first?.status == .ok && predictions.first?.received == 2)
        #expect(metrics.value("manifest_copies_ignored") == 0)
    }

    @Test func aCopyWhoseMembersDoNotHashToItsBatchIsIgnored() async throws {
        let manifest = Self.manifest()
        // The forged copy claims the batch but names another request's slots.
        let forged = Self.manifest(requestID: "someone-else", batchID: manifest.batchID)
        let (predictions, metrics, _) = try await Self.run(
            { transport in
                for n in [0, 3] {
                    try await transport.publish(try Self.result(n, batchID: manifest.batchID, copy: forged))
                }
                try await Task.sleep(for: .milliseconds(100))
                #expect(transport.readyMessages(in: "reply").isEmpty, "answered from a forged copy")
                // The manifest message itself then lets the batch decode, for its real requests.
                try await transport.publish(
                    OutgoingMessage(
                        exchange: Self.topology.resultsExchange, routingKey: "0",
                        properties: MessageProperties(
                            correlationID: manifest.batchID, type: WireFormat.MessageType.manifest,
                            headers: [WireFormat.Header.version: .int(1)]),
                        body: Array(try JSONEncoder().encode(manifest))))
            }, until: 1)
        #expect(predictions.map(\.requestID) == ["r"])
        #expect(metrics.value("manifest_copies_ignored") == 2)
    }
}
