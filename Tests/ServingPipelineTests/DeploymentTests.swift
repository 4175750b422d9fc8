import Foundation
import Messaging
import ServingPipeline
import Testing

/// The shipped RabbitMQ definitions declare exactly the topology the services declare (RabbitMQ
/// refuses a redeclaration with other arguments), and the compose file and Dockerfile hold together.
@Suite struct DeploymentTests {
    struct Definitions: Decodable {
        struct Exchange: Decodable {
            let name: String
            let type: String
            let durable: Bool
            let arguments: [String: AnyJSON]
        }
        struct Queue: Decodable {
            let name: String
            let durable: Bool
            let arguments: [String: AnyJSON]
        }
        struct Binding: Decodable {
            let source: String
            let destination: String
            let routingKey: String
            enum CodingKeys: String, CodingKey {
                case source, destination
                case routingKey = "routing_key"
            }
        }
        struct User: Decodable { let name: String }
        let exchanges: [Exchange]
        let queues: [Queue]
        let bindings: [Binding]
        let users: [User]
    }

    /// A JSON scalar, compared with header values.
    enum AnyJSON: Decodable, Equatable {
        case string(String), int(Int64), bool(Bool)
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) {
                self = .bool(b)
            } else if let i = try? c.decode(Int64.self) {
                self = .int(i)
            } else {
                self = .string(try c.decode(String.self))
            }
        }
        init(_ value: HeaderValue) {
            switch value {
            case .bool(let b): self = .bool(b)
            case .int(let i): self = .int(i)
            default: self = .string(value.stringValue ?? "\(value)")
            }
        }
    }

    /// definitions.json for one node and the default services; definitions-cluster.json for a
    /// three-node cluster, whose services run with `--coded-queues quorum --quorum-group-size 3`.
    @Test(arguments: ["definitions.json", "definitions-cluster.json"])
    func definitionsMatchTheTopologyTheServicesDeclare(file: String) throws {
        let url = ExternalCheck.root.appendingPathComponent("ops/rabbitmq/\(file)")
        let definitions = try JSONDecoder().decode(Definitions.self, from: Data(contentsOf: url))
        var topology = ServingTopology()
        if file == "definitions-cluster.json" {
            topology.codedQueues = .quorum
            topology.quorumGroupSize = 3
        }
        let declared = topology.encoder(models: ["mnist-mlp"]).merged(with: topology.taskQueue(model: "mnist-mlp"))
            .merged(with: topology.decoder())
        #expect(Set(definitions.exchanges.map(\.name)) == Set(declared.exchanges.map(\.name)))
        for e in declared.exchanges {
            let d = try #require(definitions.exchanges.first { $0.name == e.name })
            #expect(d.type == e.type && d.durable == e.durable, "\(e.name)")
            #expect(d.arguments == e.arguments.mapValues(AnyJSON.init), "\(e.name) arguments")
        }
        #expect(Set(definitions.queues.map(\.name)) == Set(declared.queues.map(\.name)))
        for q in declared.queues {
            let d = try #require(definitions.queues.first { $0.name == q.name })
            #expect(d.durable == q.durable, "\(q.name)")
            #expect(d.arguments == q.arguments.mapValues(AnyJSON.init), "\(q.name) arguments")
        }
        let bindings = Set(definitions.bindings.map { "\($0.source)->\($0.destination):\($0.routingKey)" })
        #expect(bindings == Set(declared.bindings.map { "\($0.exchange)->\($0.queue):\($0.routingKey)" }))
        #expect(
            Set(definitions.users.map(\.name)).isSuperset(of: ["encoder", "worker", "decoder", "client", "monitor"]))
    }

    @Test func composeFileAndDockerfileAreConsistent() throws {
        // The nercc binary: NERCC_BINARY (the test script's), else the one built beside this test
        // bundle. Passing it keeps the script from running `swift build --show-bin-path`, which
        // would wait for the build-directory lock of the `swift test` that runs this test.
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("nercc").path
        let binary = ProcessInfo.processInfo.environment["NERCC_BINARY"] ?? beside
        let (status, output) = try ExternalCheck.run(["python3", "ops/checks/check_deploy.py", "--nercc", binary])
        #expect(status == 0, "\(output)")
        #expect(output.contains("deploy checks:"))
    }
}
