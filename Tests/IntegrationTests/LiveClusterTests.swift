import Foundation
import Messaging
import ServingMessages
import ServingPipeline
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Several encoders and sharded decoders with hot standbys, on the three-node RabbitMQ cluster that
/// ops/test.sh starts (ops/broker/cluster.sh) and describes in `NERCC_CLUSTER_URLS` and
/// `NERCC_CLUSTER_MGMT_URLS`. Every service gets every node's URL and the cluster's queue settings.
@Suite(
    .serialized,
    .enabled(
        if: LiveCluster.isAvailable,
        "needs the three-node cluster: ops/test.sh runs it with NERCC_CLUSTER_URLS and NERCC_CLUSTER_MGMT_URLS"))
struct LiveClusterTests {
    static let images = LivePipelineTests.images

    /// Two encoders and two decoder shards, each with a standby, serve one model: every batch the
    /// encoders publish is decoded once, by the active decoder of its shard (both shards take part,
    /// the standbys decode nothing), and every request gets one answer. Then the active decoder of
    /// shard 0 is killed mid-load: its standby takes the shard over, and no request is lost or
    /// answered under two message ids.
    @Test func twoEncodersAndTwoShardedDecodersDecodeEachBatchOnceAndAStandbyTakesOverAShard() async throws {
        let prefix = LiveSystem.prefix()
        let url = LiveCluster.urls!
        let common = ["--shards", "2", "--coded-queues", "quorum", "--quorum-group-size", "3"]
        let ports = LiveCluster.basePort
        func service(_ name: String, _ arguments: [String], port: Int) throws -> ServiceProcess {
            try ServiceProcess(
                arguments + common + ["--http-port", "\(port)"], prefix: prefix, name: name, url: url)
        }
        let decoderArguments = { (shard: Int) in ["decoder", "--shard", "\(shard)"] }
        var decoders = [
            try service("decoder0", decoderArguments(0), port: ports),
            try service("decoder1", decoderArguments(1), port: ports + 1),
        ]
        #expect(try await LiveCluster.waitForConsumers("\(prefix).results.0", 1), "decoder 0 did not start")
        #expect(try await LiveCluster.waitForConsumers("\(prefix).results.1", 1), "decoder 1 did not start")
        // Started second, so the broker makes them the standbys (single active consumer).
        decoders += [
            try service("decoder0-standby", decoderArguments(0), port: ports + 2),
            try service("decoder1-standby", decoderArguments(1), port: ports + 3),
        ]
        #expect(try await LiveCluster.waitForConsumers("\(prefix).results.0", 2), "standby 0 did not start")
        #expect(try await LiveCluster.waitForConsumers("\(prefix).results.1", 2), "standby 1 did not start")
        let scheme = [
            "encoder", "--model", LiveSystem.modelPath, "--scheme", "nercc", "--workers", "6", "--batch", "2",
            "--stragglers", "1", "--deadline-ms", "15000",
        ]
        let encoders = [
            try service("encoder0", scheme, port: ports + 4), try service("encoder1", scheme, port: ports + 5),
        ]
        var workers: [ServiceProcess] = []
        for i in 0..<3 {
            workers.append(
                try service(
                    "worker\(i)", ["worker", "--model", LiveSystem.modelPath, "--worker-id", "\(prefix)-w\(i)"],
                    port: ports + 6 + i))
        }
        #expect(try await LiveCluster.waitForConsumers("\(prefix).requests.mnist-mlp", 2), "the encoders did not start")
        #expect(try await LiveCluster.waitForConsumers("\(prefix).tasks.mnist-mlp", 3), "the workers did not start")
        _ = (encoders, workers)

        let client = try await TestClient.connect(prefix: prefix, url: url)
        var topology = ServingTopology()
        topology.shards = 2

        // Phase 1: steady load, nothing fails.
        let first = (0..<80).map { "a\($0)-\(prefix)" }
        for (i, id) in first.enumerated() {
            try await client.send(queries: [Self.images[i % Self.images.count]], id: id)
            try await Task.sleep(for: .milliseconds(15))
        }
        let phase1 = try await client.collect(seconds: 90) { Set(Self.answeredIDs($0)).count >= first.count }
        try Self.expectOneAnswerEach(first, in: phase1)
        #expect(Set(first.map(topology.shard(of:))) == [0, 1], "the requests did not cover both shards")

        // Counters are read once every answer is out; each batch is decoded by exactly one decoder.
        let encoded = try await encoders.indices.asyncMap {
            try await LiveCluster.metric(port: ports + 4 + $0, "nercc_encoder_batches_encoded_total")
        }
        let decoded = try await (0..<4).asyncMap {
            try await LiveCluster.metric(port: ports + $0, "nercc_decoder_batches_decoded_total")
        }
        #expect(encoded.allSatisfy { $0 > 0 }, "an encoder published no batch: \(encoded)")
        #expect(decoded[0] > 0 && decoded[1] > 0, "a shard's active decoder decoded nothing: \(decoded)")
        #expect(decoded[2] == 0 && decoded[3] == 0, "a standby decoded while its active decoder ran: \(decoded)")
        #expect(decoded.reduce(0, +) == encoded.reduce(0, +), "decoded \(decoded), encoded \(encoded)")

        // Phase 2: the active decoder of shard 0 dies mid-load; its standby takes the shard over.
        let second = (0..<80).map { "b\($0)-\(prefix)" }
        for (i, id) in second.enumerated() {
            if i == 30 {
                decoders[0].signal(SIGKILL)
                #expect(try await decoders[0].waitForExit(10) != nil)
            }
            try await client.send(queries: [Self.images[i % Self.images.count]], id: id)
            try await Task.sleep(for: .milliseconds(15))
        }
        let phase2 = try await client.collect(seconds: 120) { Set(Self.answeredIDs($0)).count >= second.count }
        try Self.expectOneAnswerEach(second, in: phase2)
        #expect(second[30...].contains { topology.shard(of: $0) == 0 }, "no request after the kill was for shard 0")
        let standby = try await LiveCluster.metric(port: ports + 2, "nercc_decoder_batches_decoded_total")
        #expect(standby > 0, "the standby of shard 0 decoded nothing after the active decoder died")
        let dead = try await LiveCluster.queue("\(prefix).dead-letter")["messages"] as? Int ?? -1
        #expect(dead == 0, "\(dead) messages were dead-lettered")
        await client.transport.close()
    }

    /// The request ids of every prediction and error record among `deliveries`.
    static func answeredIDs(_ deliveries: [Delivery]) -> [String] {
        deliveries.compactMap { $0.properties.correlationID }
    }

    /// Every request in `ids` has answers under exactly one message id (a repeat of the same message
    /// id after a decoder's crash is allowed by the contract), and every answer is a prediction.
    static func expectOneAnswerEach(_ ids: [String], in deliveries: [Delivery]) throws {
        var messageIDs: [String: Set<String>] = [:]
        for d in deliveries {
            guard let id = d.properties.correlationID else { continue }
            messageIDs[id, default: []].insert(d.properties.messageID ?? "")
            #expect(d.properties.type == WireFormat.MessageType.prediction, "\(id) answered \(d.properties.type ?? "")")
        }
        let lost = ids.filter { messageIDs[$0] == nil }
        let duplicated = ids.filter { (messageIDs[$0]?.count ?? 0) > 1 }
        #expect(lost.isEmpty, "\(lost.count) requests were not answered, e.g. \(lost.prefix(3))")
        #expect(duplicated.isEmpty, "\(duplicated.count) requests were answered under two message ids")
        #expect(Set(messageIDs.keys).isSubset(of: Set(ids)), "answers to requests never sent")
    }
}

/// The cluster's addresses, from ops/test.sh.
enum LiveCluster {
    static let urls = ProcessInfo.processInfo.environment["NERCC_CLUSTER_URLS"]
    static let managementURLs =
        ProcessInfo.processInfo.environment["NERCC_CLUSTER_MGMT_URLS"]?.split(separator: ",").map {
            String($0.hasSuffix("/") ? $0.dropLast() : $0)
        } ?? []
    static var isAvailable: Bool { urls != nil && !managementURLs.isEmpty && LiveSystem.binary != nil }
    /// The first of the services' /metrics ports.
    static let basePort = 19_640

    static func queue(_ name: String) async throws -> [String: Any] {
        try await LiveSystem.queue(name, bases: managementURLs)
    }

    static func waitForConsumers(_ queue: String, _ count: Int) async throws -> Bool {
        try await LiveSystem.waitForConsumers(queue, count, bases: managementURLs, seconds: 60)
    }

    /// One unlabelled sample of a service's /metrics.
    static func metric(port: Int, _ name: String) async throws -> Double {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
        let text = String(decoding: data, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.split(separator: " ")[1]) ?? .nan
        }
        return 0
    }
}

extension Collection {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
