import Messaging
import Testing

@testable import RabbitMQMessaging

@Suite struct RabbitMQURLTests {
    @Test func aCommaSeparatedListNamesTheNodesOfOneCluster() throws {
        let urls = try RabbitMQURL.list("amqp://svc:pw@n1:5672/prod, amqp://svc:pw@n2:5673/prod,amqp://svc:pw@n3/prod")
        #expect(urls.map(\.endpoint) == ["n1:5672", "n2:5673", "n3:5672"])
        #expect(Set(urls.map(\.user)) == ["svc"] && Set(urls.map(\.virtualHost)) == ["prod"])
        #expect(try RabbitMQURL.list("amqp://h/").count == 1)
        let configuration = try RabbitMQConfiguration(url: "amqp://svc:pw@n1/,amqp://svc:pw@n2/")
        #expect(configuration.url.host == "n1")
        #expect(configuration.failoverURLs.map(\.host) == ["n2"])
        #expect(configuration.urls.count == 2)
    }

    @Test(arguments: [
        ("amqp://a@n1/,amqp://b@n2/", "URL 2 of 2: differs from the first"),
        ("amqp://n1/v,amqp://n2/w", "URL 2 of 2: differs from the first"),
        ("amqp://n1/,amqps://n2/", "URL 2 of 2: differs from the first"),
        ("amqp://n1/,,amqp://n2/", "URL 2 of 3: empty"),
        ("amqp://n1/,http://n2/", "URL 2 of 2: unsupported URL scheme 'http'"),
    ])
    func aListWhoseNodesDifferBeyondHostAndPortIsRefused(text: String, message: String) {
        let error = #expect(throws: MessagingError.self) { try RabbitMQURL.list(text) }
        #expect(error?.message.hasPrefix(message) == true, "\(error?.message ?? "")")
        #expect(error?.kind == .configuration)
    }

    @Test func parsesAFullURL() throws {
        let url = try RabbitMQURL("amqp://worker:s3cret@broker.example:5673/predict")
        #expect(!url.usesTLS)
        #expect(url.host == "broker.example")
        #expect(url.port == 5673)
        #expect(url.user == "worker")
        #expect(url.password == "s3cret")
        #expect(url.virtualHost == "predict")
        #expect(url.endpoint == "broker.example:5673")
    }

    @Test(arguments: [
        ("amqp://h", 5672, false), ("amqp://h/", 5672, false), ("amqps://h", 5671, true), ("AMQPS://h/", 5671, true),
    ])
    func defaultsThePortByScheme(text: String, port: Int, usesTLS: Bool) throws {
        let url = try RabbitMQURL(text)
        #expect(url.port == port)
        #expect(url.usesTLS == usesTLS)
        #expect(url.virtualHost == "/")
        #expect(url.user == "guest")
        #expect(url.password == "guest")
    }

    @Test(arguments: [
        ("amqp://h", "/"), ("amqp://h/", "/"), ("amqp://h/%2F", "/"), ("amqp://h/%2f", "/"),
        ("amqp://h/%2Fprod", "/prod"), ("amqp://h/my%20vhost", "my vhost"), ("amqp://h/predict?heartbeat=5", "predict"),
    ])
    func decodesTheVirtualHost(text: String, vhost: String) throws {
        #expect(try RabbitMQURL(text).virtualHost == vhost)
    }

    @Test func percentDecodesCredentialsAndHost() throws {
        let url = try RabbitMQURL("amqp://us%40er:p%3Aa%2Fss%25@my%2Dhost:1/v")
        #expect(url.user == "us@er")
        #expect(url.password == "p:a/ss%")
        #expect(url.host == "my-host")
        #expect(url.port == 1)
    }

    @Test func parsesIPv6Hosts() throws {
        let url = try RabbitMQURL("amqp://u:p@[::1]:5679/")
        #expect(url.host == "::1")
        #expect(url.port == 5679)
        #expect(url.endpoint == "[::1]:5679")
    }

    @Test func emptyHostMeansLocalhost() throws {
        let url = try RabbitMQURL("amqp://")
        #expect(url.host == "localhost")
        #expect(url.port == 5672)
    }

    @Test func readsSupportedQueryParameters() throws {
        let url = try RabbitMQURL("amqps://h/v?heartbeat=7&cacertfile=%2Fetc%2Fca.pem&verify=verify_peer")
        #expect(url.queryParameters == ["heartbeat": "7", "cacertfile": "/etc/ca.pem", "verify": "verify_peer"])
    }

    @Test(arguments: [
        ("http://h/", "unsupported URL scheme 'http'"),
        ("broker:5672", "URL must start with amqp:// or amqps://"),
        ("amqp://h:0/", "invalid port '0'"),
        ("amqp://h:70000/", "invalid port '70000'"),
        ("amqp://h:abc/", "invalid port 'abc'"),
        ("amqp://h:/", "invalid port ''"),
        ("amqp://u:p%zz@h/", "invalid percent-encoding in the URL's password"),
        ("amqp://u%4@h/", "invalid percent-encoding in the URL's user name"),
        ("amqp://h/a/b", "single vhost segment"),
        ("amqp://h/%ff", "invalid percent-encoding in the URL's vhost"),
        ("amqp://[::1/", "unterminated IPv6 address"),
        ("amqp://h/?frame_max=1", "unsupported URL query parameter 'frame_max'"),
        ("amqp://h/#x", "must not contain a fragment"),
    ])
    func rejectsBadURLsNamingTheProblem(text: String, expected: String) {
        let error = #expect(throws: MessagingError.self) { try RabbitMQURL(text) }
        #expect(error?.kind == .configuration)
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
        #expect(error?.message.contains("\n") == false)
        #expect(error?.isRetryable == false)
    }

    @Test func errorsNeverContainTheCredentials() {
        let error = #expect(throws: MessagingError.self) {
            try RabbitMQURL("amqp://alice:topsecret%zz@h/")
        }
        #expect(error?.message.contains("topsecret") == false)
        #expect(error?.message.contains("alice") == false)
    }

    @Test func descriptionsRedactThePassword() throws {
        let url = try RabbitMQURL("amqp://alice:topsecret@h:5672/%2Fprod")
        #expect(url.redacted == "amqp://alice:***@h:5672/%2Fprod")
        #expect("\(url)" == url.redacted)
        #expect(String(reflecting: url) == url.redacted)
        var dumped = ""
        dump(url, to: &dumped)
        #expect(!dumped.contains("topsecret"))
    }
}
