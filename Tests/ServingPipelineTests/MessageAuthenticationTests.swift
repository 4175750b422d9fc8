import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import ServingPipeline
import Testing

/// Tokens: the rule reproduces Python's hmac (schemas/token-vectors.json, written by
/// ops/schemas/tokens.py), and verification refuses anything else.
@Suite struct MessageAuthenticatorTests {
    struct Vector: Decodable {
        var keyText: String
        var purpose: String
        var data: String
        var token: String

        enum CodingKeys: String, CodingKey {
            case keyText = "key_text"
            case purpose, data, token
        }
    }

    static let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

    @Test func tokensReproducePythonsHMAC() throws {
        struct File: Decodable { var vectors: [Vector] }
        let data = try Data(contentsOf: ExternalCheck.root.appendingPathComponent("schemas/token-vectors.json"))
        let vectors = try JSONDecoder().decode(File.self, from: data).vectors
        #expect(vectors.count >= 7)
        for v in vectors {
            let authenticator = try MessageAuthenticator(text: v.keyText)
            #expect(authenticator.token(purpose: v.purpose, bytes: Array(v.data.utf8)) == v.token, "\(v.purpose)")
            #expect(authenticator.verifies(v.token, purpose: v.purpose, bytes: Array(v.data.utf8)))
        }
    }

    @Test func thePythonReferenceAgreesWithTheCommittedVectors() throws {
        let (status, output) = try ExternalCheck.run(["python3", "ops/schemas/tokens.py"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("vectors agree"))
    }

    @Test func aTaskTokenIsTheMACOfTheTasksMessageID() throws {
        let authenticator = try MessageAuthenticator(text: Self.key)
        let batch = "631cdfdcfd70cfeea98fd370aea5ec1a"
        let token = authenticator.taskToken(batchID: batch, index: 5)
        #expect(token == authenticator.token(purpose: WireFormat.MessageType.task, bytes: Array("\(batch)/5".utf8)))
        #expect(authenticator.verifiesTask(token, batchID: batch, index: 5))
        #expect(!authenticator.verifiesTask(token, batchID: batch, index: 6), "another index")
        #expect(!authenticator.verifiesTask(token, batchID: "7" + batch.dropFirst(), index: 5), "another batch")
    }

    @Test func verificationRefusesEverythingElse() throws {
        let authenticator = try MessageAuthenticator(text: Self.key)
        let body = Array("{\"version\":1}".utf8)
        let token = authenticator.token(purpose: WireFormat.MessageType.manifest, bytes: body)
        #expect(token.count == 64)
        #expect(authenticator.verifies(token, purpose: WireFormat.MessageType.manifest, bytes: body))
        // Another purpose, another body, another key, an altered digit, the wrong case, short, not hex.
        #expect(!authenticator.verifies(token, purpose: WireFormat.MessageType.abandon, bytes: body))
        #expect(!authenticator.verifies(token, purpose: WireFormat.MessageType.manifest, bytes: body + [0x20]))
        let other = try MessageAuthenticator(text: String(Self.key.reversed()))
        #expect(!other.verifies(token, purpose: WireFormat.MessageType.manifest, bytes: body))
        let altered = String(token.dropLast()) + (token.hasSuffix("0") ? "1" : "0")
        for bad in [altered, token.uppercased(), String(token.prefix(62)), String(token.dropLast(2)) + "zz", ""] {
            #expect(!authenticator.verifies(bad, purpose: WireFormat.MessageType.manifest, bytes: body), "\(bad)")
        }
    }

    @Test func keysAreCheckedAndNeverShown() throws {
        #expect(throws: MessageAuthenticator.KeyError.self) { try MessageAuthenticator(text: "short") }
        do {
            _ = try MessageAuthenticator(text: "  thirty-one bytes of key text!!!\n")
            Issue.record("a 31-byte key was accepted")
        } catch {
            #expect(error.description.contains("31 bytes; it needs at least 32"), "\(error)")
        }
        do {
            _ = try MessageAuthenticator(contentsOfFile: "/nonexistent/nercc.key")
            Issue.record("a missing key file was accepted")
        } catch {
            #expect(error.description.contains("cannot read the authentication key file '/nonexistent/nercc.key'"))
        }
        let a = try MessageAuthenticator(text: Self.key)
        // White space around the key does not change it; the key id tells keys apart.
        #expect(try MessageAuthenticator(text: "\n  \(Self.key)\n").keyID == a.keyID)
        #expect(try MessageAuthenticator(text: String(Self.key.reversed())).keyID != a.keyID)
        #expect(a.keyID.count == 8 && !Self.key.contains(a.keyID))
        // The id schemas/README.md gives for the example key (the first 8 digits of its token of no
        // data for `nercc.key-id`, which ops/schemas/validate.py computes too).
        #expect(a.keyID == "9b58d2f7")
    }
}

/// With a key, the decoder accepts only what verifies: results that echo their task's token,
/// manifests and abandonments with theirs, and manifest copies with their token; the rest is
/// dead-lettered as `bad-token` (copies are ignored), and the batch is decoded from the real results.
@Suite(.timeLimit(.minutes(1))) struct AuthenticatedDecoderTests {
    static let topology = ServingTopology()
    static let key = try! MessageAuthenticator(text: MessageAuthenticatorTests.key)

    static func result(
        _ index: Int, batchID: String, values: [Float]? = nil, token: String?, copy: BatchManifest? = nil,
        copyToken: String? = nil, signsCopy: Bool = false
    ) throws -> OutgoingMessage {
        var message = try ManifestCopyDecoderTests.result(index, batchID: batchID, copy: copy)
        if let token { message.properties.headers[WireFormat.Header.token] = .string(token) }
        if let copyToken { message.properties.headers[WireFormat.Header.manifestToken] = .string(copyToken) }
        if signsCopy, let text = message.properties.headers[WireFormat.Header.manifest]?.stringValue {
            message.properties.headers[WireFormat.Header.manifestToken] = .string(
                key.token(purpose: WireFormat.MessageType.manifest, bytes: Array(text.utf8)))
        }
        if let values { message.body = TensorBody.encode(values) }
        return message
    }

    /// The manifest message of `manifest` with `token` (nil: none), or with the token of its body
    /// (`signed`); one encoding, so the token is that of the bytes sent.
    static func manifestMessage(_ manifest: BatchManifest, token: String? = nil, signed: Bool = false) throws
        -> OutgoingMessage
    {
        let body = Array(try JSONEncoder().encode(manifest))
        let token = signed ? key.token(purpose: WireFormat.MessageType.manifest, bytes: body) : token
        var headers: [String: HeaderValue] = [WireFormat.Header.version: .int(1)]
        if let token { headers[WireFormat.Header.token] = .string(token) }
        return OutgoingMessage(
            exchange: topology.resultsExchange, routingKey: "0",
            properties: MessageProperties(
                correlationID: manifest.batchID, type: WireFormat.MessageType.manifest, headers: headers),
            body: body)
    }

    /// Runs a keyed decoder through `scenario`; returns the predictions, the dead letters' error codes
    /// and types ("bad-token nercc.result") and the metrics.
    static func run(
        _ scenario: @Sendable (InMemoryTransport) async throws -> Void, until answers: Int
    ) async throws -> (predictions: [PredictionRecord], dead: [String], metrics: ServiceMetrics) {
        let (predictions, metrics, dead) = try await ManifestCopyDecoderTests.run(
            scenario, until: answers, configuration: DecoderConfiguration(authenticator: key))
        return (predictions, dead, metrics)
    }

    @Test func forgedAndUnsignedResultsAreDeadLetteredAndTheBatchDecodesFromTheRealOnes() async throws {
        let manifest = ManifestCopyDecoderTests.manifest()
        let id = manifest.batchID
        let (predictions, dead, metrics) = try await Self.run(
            { transport in
                // First, for both indices the batch will decode from: a result signed with another
                // key, one whose token is that of another index, and one with none, all with huge values.
                let other = try MessageAuthenticator(text: String(MessageAuthenticatorTests.key.reversed()))
                for n in [0, 3] {
                    for token in [
                        other.taskToken(batchID: id, index: n), Self.key.taskToken(batchID: id, index: 1), nil,
                    ] {
                        try await transport.publish(
                            try Self.result(n, batchID: id, values: [1e6, 1e6], token: token))
                    }
                }
                try await transport.publish(try Self.manifestMessage(manifest, signed: true))
                for n in [0, 3] {
                    try await transport.publish(
                        try Self.result(n, batchID: id, token: Self.key.taskToken(batchID: id, index: n)))
                }
            }, until: 1)
        #expect(dead == Array(repeating: "bad-token nercc.result", count: 6))
        #expect(metrics.value("bad_tokens", labels: [("type", WireFormat.MessageType.result)]) == 6)
        let record = try #require(predictions.first)
        #expect(record.status == .ok && record.received == 2)
        // bacc (4, 2) from the results [0, 1] and [3, 1]: nothing near the forged 1e6.
        #expect(record.predictions.allSatisfy { $0.outputs.allSatisfy { abs($0) < 10 } }, "\(record)")
    }

    @Test func aManifestWithoutAValidTokenIsDeadLetteredAndACopyWithoutOneIsIgnored() async throws {
        let manifest = ManifestCopyDecoderTests.manifest()
        let id = manifest.batchID
        let (predictions, dead, metrics) = try await Self.run(
            { transport in
                // A manifest with no token and one with the task rule's token: both dead-lettered.
                try await transport.publish(try Self.manifestMessage(manifest, token: nil))
                try await transport.publish(
                    try Self.manifestMessage(manifest, token: Self.key.taskToken(batchID: id, index: 0)))
                // Signed results whose copies carry no token, or a wrong one: the copies are ignored.
                try await transport.publish(
                    try Self.result(
                        0, batchID: id, token: Self.key.taskToken(batchID: id, index: 0), copy: manifest))
                try await transport.publish(
                    try Self.result(
                        3, batchID: id, token: Self.key.taskToken(batchID: id, index: 3), copy: manifest,
                        copyToken: Self.key.taskToken(batchID: id, index: 3)))
                try await Task.sleep(for: .milliseconds(100))
                #expect(transport.readyMessages(in: "reply").isEmpty, "answered from an unsigned manifest")
                // A result whose copy is signed makes the batch decodable.
                try await transport.publish(
                    try Self.result(
                        1, batchID: id, token: Self.key.taskToken(batchID: id, index: 1), copy: manifest,
                        signsCopy: true))
            }, until: 1)
        #expect(dead == ["bad-token nercc.manifest", "bad-token nercc.manifest"])
        #expect(metrics.value("bad_tokens", labels: [("type", WireFormat.MessageType.manifest)]) == 2)
        #expect(metrics.value("manifest_copies_ignored") == 2)
        #expect(predictions.first?.received == 2, "decoded from the first two results once a signed copy came")
    }

    @Test func aForgedAbandonmentIsDeadLetteredAndTheBatchIsStillAnswered() async throws {
        let manifest = ManifestCopyDecoderTests.manifest()
        let id = manifest.batchID
        let (predictions, dead, _) = try await Self.run(
            { transport in
                try await transport.publish(try Self.manifestMessage(manifest, signed: true))
                // An abandonment "from the encoder" with an error verdict, signed with another key.
                let notice = Array(
                    try JSONEncoder().encode(
                        BatchAbandonment(
                            manifest: manifest, error: .init(code: "overloaded", message: "forged"))))
                let other = try MessageAuthenticator(text: String(MessageAuthenticatorTests.key.reversed()))
                try await transport.publish(
                    OutgoingMessage(
                        exchange: Self.topology.resultsExchange, routingKey: "0",
                        properties: MessageProperties(
                            correlationID: id, type: WireFormat.MessageType.abandon,
                            headers: [
                                WireFormat.Header.version: .int(1), WireFormat.Header.batchID: .string(id),
                                WireFormat.Header.token: .string(
                                    other.token(purpose: WireFormat.MessageType.abandon, bytes: notice)),
                            ]),
                        body: notice))
                try await Task.sleep(for: .milliseconds(50))
                for n in [0, 3] {
                    try await transport.publish(
                        try Self.result(n, batchID: id, token: Self.key.taskToken(batchID: id, index: n)))
                }
            }, until: 1)
        #expect(dead == ["bad-token nercc.abandon"])
        #expect(predictions.count == 1 && predictions.first?.status == .ok, "the forged abandonment was honoured")
    }
}

/// Encoder, workers and decoder sharing a key, in memory: tasks carry tokens, workers echo them,
/// and every query is answered; a decoder with another key dead-letters every result instead.
@Suite(.timeLimit(.minutes(1))) struct AuthenticatedPipelineTests {
    static func serve(encoderKey: MessageAuthenticator?, decoderKey: MessageAuthenticator?, queries: Int) async throws
        -> (answered: Int, dead: [String], tokens: [String?])
    {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .nercc, workers: 6, batchSize: 2), workers: 3, stop: stop,
            stragglers: 1, decoder: DecoderConfiguration(authenticator: decoderKey)
        ) { $0.authenticator = encoderKey }
        var answered = 0
        var dead: [String] = []
        var tokens: [String?] = []
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 3)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            for i in 0..<queries {
                let request = InferenceRequest(requestID: "r\(i)", model: "linear", queries: [[1, Double(i), 3]])
                try await transport.publish(
                    OutgoingMessage(
                        exchange: "nercc.requests", routingKey: "linear",
                        properties: MessageProperties(
                            contentType: "application/json", messageID: "r\(i)", replyTo: "reply"),
                        body: Array(try JSONEncoder().encode(request))))
            }
            if decoderKey == nil || encoderKey != nil && decoderKey?.keyID == encoderKey?.keyID {
                try await WorkerWindowTests.eventually { transport.readyMessages(in: "reply").count >= queries }
            } else {
                try await WorkerWindowTests.eventually {
                    transport.readyMessages(in: "nercc.dead-letter").count >= queries
                }
            }
            answered = transport.readyMessages(in: "reply").count
            let letters = transport.readyMessages(in: "nercc.dead-letter")
            dead = letters.compactMap { $0.properties.headers[WireFormat.Header.errorCode]?.stringValue }
            tokens = letters.map { $0.properties.headers[WireFormat.Header.token]?.stringValue }
            stop.stop()
            try await group.waitForAll()
        }
        return (answered, dead, tokens)
    }

    /// Hedge requests, decoder → encoder, are signed too: with a shared key a silent first task is
    /// still hedged, and the encoder dead-letters a request it cannot verify.
    @Test func hedgeRequestsAreSignedAndVerified() async throws {
        let key = try MessageAuthenticator(text: MessageAuthenticatorTests.key)
        let encoderMetrics = ServiceMetrics()
        let (record, published) = try await HedgingTests.serveOneQuery(
            hedgeAfterMilliseconds: 15, silentFirst: true, encoderMetrics: encoderMetrics,
            decoderMetrics: ServiceMetrics(), key: key)
        #expect(record.status == .ok && encoderMetrics.value("hedge_tasks_published") == 2)
        let request = try #require(published.first { $0.properties.type == WireFormat.MessageType.hedge })
        let token = try #require(request.properties.headers[WireFormat.Header.token]?.stringValue)
        #expect(key.verifies(token, purpose: WireFormat.MessageType.hedge, bytes: request.body))
        // Every task of the batch carries its own task token.
        for task in published where task.properties.type == WireFormat.MessageType.task {
            let index = try #require(task.properties.headers[WireFormat.Header.codedIndex]?.intValue)
            let batch = try #require(task.properties.correlationID)
            #expect(
                task.properties.headers[WireFormat.Header.token]?.stringValue
                    == key.taskToken(batchID: batch, index: Int(index)))
        }
    }

    @Test(arguments: [nil, "0" as String?])
    func anUnverifiedHedgeRequestIsDeadLetteredAsBadToken(token: String?) async throws {
        let key = try MessageAuthenticator(text: MessageAuthenticatorTests.key)
        let body = Array("{\"version\": 1, \"batch_id\": \"0123456789abcdef0123456789abcdef\"}".utf8)
        var headers: [String: HeaderValue] = [:]
        // A wrong token: the MAC of the body under the task rule.
        if token != nil { headers[WireFormat.Header.token] = .string(key.token(purpose: "nercc.task", bytes: body)) }
        let dead = try await HedgingRejectionTests.deadLetters(
            after: OutgoingMessage(
                exchange: "", routingKey: "nercc.hedge.encoder",
                properties: MessageProperties(
                    contentType: WireFormat.jsonContentType, type: WireFormat.MessageType.hedge, headers: headers),
                body: body),
            key: key)
        #expect(dead.count == 1)
        #expect(dead.first?.properties.headers[WireFormat.Header.errorCode] == .string("bad-token"))
    }

    @Test func aSharedKeyServesEveryQuery() async throws {
        let key = try MessageAuthenticator(text: MessageAuthenticatorTests.key)
        let (answered, dead, _) = try await Self.serve(encoderKey: key, decoderKey: key, queries: 6)
        #expect(answered == 6)
        #expect(dead.isEmpty)
    }

    @Test func aDecoderWithAnotherKeyDeadLettersTheResults() async throws {
        let key = try MessageAuthenticator(text: MessageAuthenticatorTests.key)
        let other = try MessageAuthenticator(text: String(MessageAuthenticatorTests.key.reversed()))
        let (answered, dead, tokens) = try await Self.serve(encoderKey: key, decoderKey: other, queries: 2)
        #expect(answered == 0)
        #expect(!dead.isEmpty && dead.allSatisfy { $0 == "bad-token" })
        // The workers echoed the encoder's tokens: present, just not this decoder's.
        #expect(tokens.allSatisfy { $0?.count == 64 })
    }
}
