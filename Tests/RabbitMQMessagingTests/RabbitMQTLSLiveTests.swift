import Foundation
import Messaging
import Testing

@testable import RabbitMQMessaging

/// TLS against a live broker with a TLS listener. Runs only when `NERCC_AMQPS_URL` (e.g.
/// `amqps://guest:guest@localhost:5671/`) and `NERCC_AMQPS_CA_FILE` (the PEM CA that signed the
/// broker's certificate, issued for the URL's host) are set; otherwise reported as skipped.
@Suite(
    .enabled(
        if: TLSBroker.url != nil && TLSBroker.caFile != nil,
        "set NERCC_AMQPS_URL and NERCC_AMQPS_CA_FILE to run against a broker's TLS listener"),
    .serialized
)
struct RabbitMQTLSLiveTests {
    @Test func connectsAndVerifiesTheBrokerWithTheGivenCA() async throws {
        var configuration = try RabbitMQConfiguration(url: TLSBroker.url!, connectionName: "nercc-test-tls")
        configuration.tls.caCertificatePath = TLSBroker.caFile
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        try await transport.connect()
        let queue = LiveBroker.uniqueName("tls")
        try await transport.declare(Topology(queues: [.init(name: queue, arguments: ["x-expires": .int(60_000)])]))
        try await transport.publish(OutgoingMessage(exchange: "", routingKey: queue, body: Array("over TLS".utf8)))
        #expect(try await transport.inspectQueue(queue).messageCount == 1)
        #expect(transport.isReady)
        _ = try await transport.deleteQueue(queue)
        await transport.close()
    }

    @Test func anUntrustedCertificateIsRejected() async throws {
        // Without a CA file the system's CA store is used, which does not contain the test CA.
        let configuration = try RabbitMQConfiguration(url: TLSBroker.url!, connectionName: "nercc-test-tls-untrusted")
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        let error = await #expect(throws: MessagingError.self) { try await transport.connect() }
        #expect(error?.kind == .tls)
        #expect(error?.isRetryable == false)
        #expect(error?.message.contains("TLS peer certificate verification failed") == true, "\(error?.message ?? "")")
    }

    /// Also needs `NERCC_AMQPS_CLIENT_CERT_FILE` and `NERCC_AMQPS_CLIENT_KEY_FILE` (a client
    /// certificate the broker's CA signed).
    @Test(.enabled(if: TLSBroker.clientCertificate != nil && TLSBroker.clientKey != nil))
    func presentsAClientCertificate() async throws {
        let name = "nercc-test-mtls-\(UUID().uuidString.prefix(8))"
        var configuration = try RabbitMQConfiguration(url: TLSBroker.url!, connectionName: name)
        configuration.tls = .init(
            caCertificatePath: TLSBroker.caFile, clientCertificatePath: TLSBroker.clientCertificate,
            clientKeyPath: TLSBroker.clientKey)
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        try await transport.connect()
        #expect(transport.isReady)
        if LiveBroker.url != nil {
            // The broker saw the certificate (the management API reports its subject).
            let record = try await ManagementAPI().connection(named: name)
            #expect(
                (record["peer_cert_subject"] as? String)?.isEmpty == false, "\(record["peer_cert_subject"] ?? "none")")
        }
        await transport.close()
    }

    @Test func verificationCanBeTurnedOff() async throws {
        var configuration = try RabbitMQConfiguration(url: TLSBroker.url!, connectionName: "nercc-test-tls-noverify")
        configuration.tls.verifyPeer = false
        configuration.tls.verifyHostname = false
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        try await transport.connect()
        #expect(transport.isReady)
        await transport.close()
    }
}

enum TLSBroker {
    static let url = variable("NERCC_AMQPS_URL")
    static let caFile = variable("NERCC_AMQPS_CA_FILE")
    static let clientCertificate = variable("NERCC_AMQPS_CLIENT_CERT_FILE")
    static let clientKey = variable("NERCC_AMQPS_CLIENT_KEY_FILE")

    private static func variable(_ name: String) -> String? {
        ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
    }
}
