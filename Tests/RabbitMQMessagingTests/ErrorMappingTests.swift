import Messaging
import Testing

@testable import RabbitMQMessaging

@Suite struct ErrorMappingTests {
    @Test(arguments: [
        (UInt16(403), MessagingError.Kind.accessRefused, false),
        (404, .notFound, false),
        (405, .preconditionFailed, true),
        (406, .preconditionFailed, false),
        (312, .unroutable, false),
        (320, .connectionLost, true),
        (530, .accessRefused, false),
        (541, .connectionLost, true),
        (504, .protocolError, false),
    ])
    func replyCodesMapToKinds(code: UInt16, kind: MessagingError.Kind, retryable: Bool) {
        let classified = AMQPErrorMapping.classify(replyCode: code)
        #expect(classified.kind == kind)
        #expect(classified.isRetryable == retryable)
    }

    @Test func channelErrorsKeepTheReplyCodeAndText() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/'"
        let error = AMQPErrorMapping.error(
            .channelClosed(channel: 3, code: 406, text: text), context: "cannot declare queue 'q'")
        #expect(error.kind == .preconditionFailed)
        #expect(error.replyCode == 406)
        #expect(error.replyText == text)
        #expect(error.message == "cannot declare queue 'q': \(text) (406)")
        #expect(!error.isRetryable)
    }

    @Test func connectionClosesAreConnectionLossUnlessTheRequestWasWrong() {
        let forced = AMQPErrorMapping.error(
            .connectionClosed(code: 320, text: "CONNECTION_FORCED - Closed via management plugin"), context: "x")
        #expect(forced.kind == .connectionLost)
        #expect(forced.isRetryable)
        #expect(forced.replyCode == 320)

        let reusedTag = AMQPErrorMapping.error(
            .connectionClosed(code: 530, text: "NOT_ALLOWED - attempt to reuse consumer tag"), context: "x")
        #expect(reusedTag.kind == .accessRefused)
        #expect(!reusedTag.isRetryable)
    }

    @Test func libraryStatusesDuringOperationMeanReconnecting() {
        let heartbeat = AMQPErrorMapping.error(.library(status: .heartbeatTimeout), context: "connection lost")
        #expect(heartbeat.kind == .connectionLost)
        #expect(heartbeat.isRetryable)
        #expect(heartbeat.libraryStatus == -0x000F)  // AMQP_STATUS_HEARTBEAT_TIMEOUT in amqp.h
        #expect(heartbeat.message == "connection lost: missed heartbeats from the broker; reconnecting")

        let timeout = AMQPErrorMapping.error(.library(status: .timeout), context: "cannot declare queue 'q'")
        #expect(timeout.kind == .timeout)
        #expect(timeout.isRetryable)
    }

    @Test(arguments: [
        (AMQPStatus.timeout, MessagingError.Kind.timeout, true),
        (.hostnameResolutionFailed, .unreachable, true),
        (.socketError, .connectionLost, true),
        (.tlsPeerVerificationFailed, .tls, false),
        (.tlsHostnameVerificationFailed, .tls, false),
        (.tlsHandshakeFailed, .tls, true),
        (.brokerUnsupportedSASLMethod, .authentication, false),
        (.tableTooBig, .protocolError, false),
        (AMQPStatus(-0x0777), .protocolError, false),
    ])
    func libraryStatusesMapToKinds(status: AMQPStatus, kind: MessagingError.Kind, retryable: Bool) {
        let classified = AMQPErrorMapping.classify(status: status)
        #expect(classified.kind == kind)
        #expect(classified.isRetryable == retryable)
    }

    /// The names are rabbitmq-c 0.11's statuses: the values its header gives them, each described.
    @Test func statusNamesAreTheLibrarysValues() {
        #expect(AMQPStatus.timeout.rawValue == -0x000D)
        #expect(AMQPStatus.heartbeatTimeout.rawValue == -0x000F)
        #expect(AMQPStatus.tlsHandshakeFailed.rawValue == -0x0203)
        #expect(AMQPStatus.unexpectedState.description == "unexpected protocol state")
        #expect(AMQPStatus(-0x0777).description == "rabbitmq-c status -1911")
    }

    @Test func unreachableBrokersAreNamedWithTheReason() throws {
        let configuration = try RabbitMQConfiguration(url: "amqp://u:secret@10.0.0.1:5999/")
        let refused = AMQPConnection.openFailure(
            status: .socketError, osError: 111, endpoint: "10.0.0.1:5999", configuration: configuration)
        #expect(refused.kind == .unreachable)
        #expect(refused.message == "cannot reach RabbitMQ at 10.0.0.1:5999: connection refused")
        let timedOut = AMQPConnection.openFailure(
            status: .timeout, osError: 0, endpoint: "10.0.0.1:5999", configuration: configuration)
        #expect(timedOut.message == "cannot reach RabbitMQ at 10.0.0.1:5999: connect timed out after 5.0 seconds")
        let tls = AMQPConnection.openFailure(
            status: .tlsPeerVerificationFailed, osError: 0, endpoint: "10.0.0.1:5999", configuration: configuration)
        #expect(tls.kind == .tls)
        #expect(!tls.isRetryable)
    }

    @Test func loginFailuresNameUserVhostAndEndpointButNotThePassword() throws {
        let url = try RabbitMQURL("amqp://alice:secret@h:5672/prod")
        let denied = AMQPConnection.loginFailure(
            .connectionClosed(
                code: 403, text: "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"),
            url: url)
        #expect(denied.kind == .authentication)
        #expect(denied.message == "authentication failed for user 'alice' on vhost 'prod' at h:5672")
        #expect(!denied.isRetryable)

        let missing = AMQPConnection.loginFailure(
            .connectionClosed(code: 530, text: "NOT_ALLOWED - vhost prod not found"), url: url)
        #expect(missing.kind == .accessRefused)
        #expect(
            missing.message
                == "vhost 'prod' at h:5672 is not open to user 'alice' (it does not exist, or the user has no "
                + "permission on it): NOT_ALLOWED - vhost prod not found (530)")

        let forbidden = AMQPConnection.loginFailure(
            .connectionClosed(code: 530, text: "NOT_ALLOWED - access to vhost 'prod' refused for user 'alice'"),
            url: url)
        #expect(forbidden.kind == .accessRefused)
        #expect(forbidden.message.hasSuffix("NOT_ALLOWED - access to vhost 'prod' refused for user 'alice' (530)"))
        for error in [denied, missing, forbidden] {
            #expect(!error.message.contains("secret"))
            #expect(!error.message.contains("\n"))
        }
    }
}
