import Messaging
import Testing

@testable import RabbitMQMessaging

@Suite struct RabbitMQConfigurationTests {
    @Test func hasDocumentedDefaults() throws {
        let configuration = try RabbitMQConfiguration(url: "amqp://h/")
        #expect(configuration.heartbeat == 20)
        #expect(configuration.rpcTimeout == .seconds(10))
        #expect(configuration.connectTimeout == .seconds(5))
        #expect(configuration.publishTimeout == .seconds(30))
        #expect(configuration.reconnectBackoff.initialDelay == .milliseconds(200))
        #expect(configuration.reconnectBackoff.maximumDelay == .seconds(5))
        #expect(configuration.maximumReconnectAttempts == nil)
        #expect(configuration.tls.verifyPeer)
        #expect(configuration.tls.verifyHostname)
    }

    @Test func queryParametersOverrideArguments() throws {
        let configuration = try RabbitMQConfiguration(
            url: "amqps://h/?heartbeat=7&connection_timeout=1500&verify=verify_none", heartbeat: 30)
        #expect(configuration.heartbeat == 7)
        #expect(configuration.connectTimeout == .milliseconds(1500))
        #expect(!configuration.tls.verifyPeer)
        #expect(!configuration.tls.verifyHostname)
    }

    @Test(arguments: [0, -1, 65536])
    func rejectsHeartbeatsOutsideOneTo65535(heartbeat: Int) {
        let error = #expect(throws: MessagingError.self) {
            try RabbitMQConfiguration(url: "amqp://h/", heartbeat: heartbeat)
        }
        #expect(error?.kind == .configuration)
        #expect(error?.message.hasPrefix("heartbeat must be between 1 and 65535 seconds") == true)
    }

    @Test func rejectsInvalidSettingsNamingThem() {
        let cases: [(() throws(MessagingError) -> RabbitMQConfiguration, String)] = [
            (
                { () throws(MessagingError) in try RabbitMQConfiguration(url: "amqp://h/", rpcTimeout: .zero) },
                "rpcTimeout"
            ),
            (
                { () throws(MessagingError) in try RabbitMQConfiguration(url: "amqp://h/", connectTimeout: .seconds(-1))
                }, "connectTimeout"
            ),
            (
                { () throws(MessagingError) in try RabbitMQConfiguration(url: "amqp://h/", maximumReconnectAttempts: -1)
                }, "maximumReconnectAttempts"
            ),
            (
                { () throws(MessagingError) in
                    try RabbitMQConfiguration(
                        url: "amqp://h/", reconnectBackoff: .init(initialDelay: .seconds(2), maximumDelay: .seconds(1)))
                }, "reconnectBackoff.maximumDelay"
            ),
            (
                { () throws(MessagingError) in
                    try RabbitMQConfiguration(url: "amqp://h/", tls: .init(caCertificatePath: "/etc/hostname"))
                }, "URL scheme is amqp"
            ),
            (
                { () throws(MessagingError) in
                    try RabbitMQConfiguration(url: "amqps://h/", tls: .init(clientCertificatePath: "/etc/hostname"))
                }, "must be set together"
            ),
            (
                { () throws(MessagingError) in
                    try RabbitMQConfiguration(url: "amqps://h/", tls: .init(caCertificatePath: "/nonexistent/ca.pem"))
                }, "tls.caCertificatePath '/nonexistent/ca.pem' is not a readable file"
            ),
        ]
        for (make, expected) in cases {
            let error = #expect(throws: MessagingError.self) { try make() }
            #expect(error?.kind == .configuration)
            #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
        }
    }

    @Test func backoffDoublesFromTheInitialDelayUpToTheMaximum() {
        let backoff = RabbitMQConfiguration.Backoff(jitter: 0)
        let delays = (1...8).map { backoff.delay(beforeAttempt: $0, unitRandom: 0.5) }
        #expect(
            delays == [
                .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600), .milliseconds(3200),
                .seconds(5), .seconds(5), .seconds(5),
            ])
    }

    @Test func jitterShortensDelaysByAtMostItsFraction() {
        let backoff = RabbitMQConfiguration.Backoff(jitter: 0.2)
        #expect(backoff.delay(beforeAttempt: 3, unitRandom: 0) == .milliseconds(800))
        let shortest = backoff.delay(beforeAttempt: 3, unitRandom: 0.999_999_999)
        #expect(shortest >= .milliseconds(640) && shortest < .milliseconds(641))
        #expect(backoff.delay(beforeAttempt: 20, unitRandom: 0.5) == .seconds(4.5))
    }
}
