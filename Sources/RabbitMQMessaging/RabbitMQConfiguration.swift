import Messaging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Everything ``RabbitMQTransport`` needs to reach and use a broker.
///
/// Build it from a URL and adjust the properties; ``validate()`` (called by the initialisers and
/// again by ``RabbitMQTransport/connect(retryingFor:)``) rejects invalid settings with a
/// `.configuration` error whose one-line message names the setting.
public struct RabbitMQConfiguration: Sendable {
    /// Reconnect backoff: exponential from ``initialDelay`` to ``maximumDelay``, with jitter.
    public struct Backoff: Sendable, Hashable {
        /// The delay before the first reconnect attempt.
        public var initialDelay: Duration
        /// The largest delay between attempts.
        public var maximumDelay: Duration
        /// The factor applied to the delay after each failed attempt (≥ 1).
        public var multiplier: Double
        /// The fraction of each delay that is randomised, in [0, 1]: the delay is
        /// `d · (1 − jitter · u)` with `u` uniform in [0, 1), so a fleet of clients does not
        /// reconnect in lock-step after a broker restart.
        public var jitter: Double

        /// Creates a backoff (defaults: 0.2 s doubling to 5 s, 20 % jitter).
        public init(
            initialDelay: Duration = .milliseconds(200), maximumDelay: Duration = .seconds(5), multiplier: Double = 2,
            jitter: Double = 0.2
        ) {
            self.initialDelay = initialDelay
            self.maximumDelay = maximumDelay
            self.multiplier = multiplier
            self.jitter = jitter
        }

        /// The delay before reconnect attempt `attempt` (1 for the first), given a uniform random
        /// number `unitRandom` in [0, 1).
        ///
        /// Without jitter the delays are `initial · multiplierᵏ` for k = 0, 1, …, capped at the
        /// maximum; jitter shortens each by at most `jitter · 100` %.
        public func delay(beforeAttempt attempt: Int, unitRandom: Double) -> Duration {
            let initial = initialDelay.seconds
            let maximum = maximumDelay.seconds
            let exponent = Double(max(attempt, 1) - 1)
            let base = min(initial * pow(multiplier, exponent), maximum)
            let jittered = base * (1 - jitter * min(max(unitRandom, 0), 1))
            return .nanoseconds(Int64((jittered * 1e9).rounded()))
        }
    }

    /// TLS settings, used when the URL scheme is `amqps`.
    public struct TLS: Sendable, Hashable {
        /// A PEM file of CA certificates to trust. When nil, the system's default CA locations
        /// are loaded (rabbitmq-c 0.11 would otherwise trust nothing).
        public var caCertificatePath: String?
        /// Verify the broker's certificate chain (default true).
        public var verifyPeer: Bool
        /// Verify that the broker's certificate names the host of the URL (default true).
        public var verifyHostname: Bool
        /// A PEM client certificate for mutual TLS; needs ``clientKeyPath``.
        public var clientCertificatePath: String?
        /// The PEM private key of ``clientCertificatePath``.
        public var clientKeyPath: String?

        /// Creates TLS settings (verification on by default).
        public init(
            caCertificatePath: String? = nil, verifyPeer: Bool = true, verifyHostname: Bool = true,
            clientCertificatePath: String? = nil, clientKeyPath: String? = nil
        ) {
            self.caCertificatePath = caCertificatePath
            self.verifyPeer = verifyPeer
            self.verifyHostname = verifyHostname
            self.clientCertificatePath = clientCertificatePath
            self.clientKeyPath = clientKeyPath
        }
    }

    /// The broker URL: the first node to connect to.
    public var url: RabbitMQURL
    /// Further nodes of the same cluster, tried in turn after ``url`` when a connection attempt
    /// fails or the connection is lost (empty: one node). They may differ from ``url`` only in host
    /// and port (``RabbitMQURL/list(_:)``).
    public var failoverURLs: [RabbitMQURL] = []
    /// Every node, ``url`` first.
    public var urls: [RabbitMQURL] { [url] + failoverURLs }
    /// The client-provided connection name (client property `connection_name`), shown in the
    /// management UI's connection list. Name the service and host, e.g. `"nercc-worker@host-3"`.
    public var connectionName: String
    /// The heartbeat timeout to request, in seconds (1…65535, default 20).
    ///
    /// It must be positive: rabbitmq-c 0.11 negotiates `min(server, client)` unless the client asks
    /// for 0, and 0 disables heartbeats entirely, so a dead peer behind a silent network would go
    /// unnoticed for ~11 minutes (TCP retransmission timeout) while unacknowledged deliveries sat
    /// with this process. The broker's own value (60 s by default) caps it. Values below 5 s risk
    /// false positives on a loaded machine.
    public var heartbeat: Int
    /// Timeout of every synchronous AMQP call (declare, qos, consume, cancel, channel open, …);
    /// rabbitmq-c waits forever by default. A timed-out call closes the connection, which is then
    /// re-established. Default 10 s.
    public var rpcTimeout: Duration
    /// Timeout of the TCP (and TLS) connect. Default 5 s.
    public var connectTimeout: Duration
    /// How long a publish may wait for a connection (while reconnecting or while the broker blocks
    /// publishers) plus its confirm before it fails with a retryable `.timeout`. Also bounds other
    /// calls made while disconnected. Default 30 s.
    public var publishTimeout: Duration
    /// How long ``RabbitMQTransport/close()`` waits for outstanding publisher confirms. Default 5 s.
    public var closeTimeout: Duration
    /// Delays between reconnect attempts.
    public var reconnectBackoff: Backoff
    /// Give up after this many failed reconnect attempts in a row (nil: never give up; 0: do not
    /// reconnect at all). After giving up, streams end and calls fail with a non-retryable
    /// `.connectionLost` (see ``RabbitMQTransport/terminalError``).
    public var maximumReconnectAttempts: Int?
    /// TLS settings for `amqps` URLs.
    public var tls: TLS
    /// The largest frame to negotiate, in bytes (default 131072, the broker's default).
    public var frameMax: Int
    /// Set the AMQP `user_id` of every published message that has none to the URL's user (default
    /// true). RabbitMQ refuses a `user_id` other than the connection's user, so consumers can rely
    /// on it to tell who published a message (a worker's result, the decoder's predictions).
    public var stampsUserID = true

    /// Creates a configuration from a URL string, or from a comma-separated list of the URLs of one
    /// cluster's nodes (the first is ``url``, the others ``failoverURLs``).
    ///
    /// Query parameters in the URL (`heartbeat`, `connection_timeout`, `cacertfile`, `certfile`,
    /// `keyfile`, `verify`, `server_name_indication`) override the corresponding arguments.
    ///
    /// - Throws: `.configuration` for an invalid URL or setting.
    public init(
        url: String, connectionName: String = "nercc", heartbeat: Int = 20, rpcTimeout: Duration = .seconds(10),
        connectTimeout: Duration = .seconds(5), publishTimeout: Duration = .seconds(30),
        closeTimeout: Duration = .seconds(5), reconnectBackoff: Backoff = Backoff(),
        maximumReconnectAttempts: Int? = nil, tls: TLS = TLS()
    ) throws(MessagingError) {
        let urls = try RabbitMQURL.list(url)
        try self.init(
            url: urls[0], connectionName: connectionName, heartbeat: heartbeat, rpcTimeout: rpcTimeout,
            connectTimeout: connectTimeout, publishTimeout: publishTimeout, closeTimeout: closeTimeout,
            reconnectBackoff: reconnectBackoff, maximumReconnectAttempts: maximumReconnectAttempts, tls: tls)
        failoverURLs = Array(urls.dropFirst())
    }

    /// Creates a configuration from a parsed URL; the other arguments are as for the URL-string
    /// initialiser, and query parameters in the URL override them in the same way.
    public init(
        url: RabbitMQURL, connectionName: String = "nercc", heartbeat: Int = 20, rpcTimeout: Duration = .seconds(10),
        connectTimeout: Duration = .seconds(5), publishTimeout: Duration = .seconds(30),
        closeTimeout: Duration = .seconds(5), reconnectBackoff: Backoff = Backoff(),
        maximumReconnectAttempts: Int? = nil, tls: TLS = TLS()
    ) throws(MessagingError) {
        self.url = url
        self.connectionName = connectionName
        self.heartbeat = heartbeat
        self.rpcTimeout = rpcTimeout
        self.connectTimeout = connectTimeout
        self.publishTimeout = publishTimeout
        self.closeTimeout = closeTimeout
        self.reconnectBackoff = reconnectBackoff
        self.maximumReconnectAttempts = maximumReconnectAttempts
        self.tls = tls
        self.frameMax = 131_072
        try applyQueryParameters()
        try validate()
    }

    private mutating func applyQueryParameters() throws(MessagingError) {
        let query = url.queryParameters
        if let text = query["heartbeat"] {
            guard let value = Int(text) else { throw Self.invalid("URL parameter heartbeat must be an integer") }
            heartbeat = value
        }
        if let text = query["connection_timeout"] {
            guard let value = Int(text), value > 0 else {
                throw Self.invalid("URL parameter connection_timeout must be a positive number of milliseconds")
            }
            connectTimeout = .milliseconds(value)
        }
        if let path = query["cacertfile"] { tls.caCertificatePath = path }
        if let path = query["certfile"] { tls.clientCertificatePath = path }
        if let path = query["keyfile"] { tls.clientKeyPath = path }
        if let verify = query["verify"] {
            switch verify {
            case "verify_peer": tls.verifyPeer = true
            case "verify_none":
                tls.verifyPeer = false
                tls.verifyHostname = false
            default: throw Self.invalid("URL parameter verify must be verify_peer or verify_none")
            }
        }
        if let sni = query["server_name_indication"], sni == "disable" {
            tls.verifyHostname = false
        }
    }

    /// Checks every setting.
    ///
    /// - Throws: `.configuration` with a one-line message naming the first invalid setting.
    public func validate() throws(MessagingError) {
        guard (1...65535).contains(heartbeat) else {
            throw Self.invalid(
                "heartbeat must be between 1 and 65535 seconds, got \(heartbeat) "
                    + "(0 would disable heartbeats in rabbitmq-c, leaving dead connections undetected)")
        }
        try Self.requirePositive(rpcTimeout, "rpcTimeout")
        try Self.requirePositive(connectTimeout, "connectTimeout")
        try Self.requirePositive(publishTimeout, "publishTimeout")
        try Self.requirePositive(closeTimeout, "closeTimeout")
        try Self.requirePositive(reconnectBackoff.initialDelay, "reconnectBackoff.initialDelay")
        guard reconnectBackoff.maximumDelay >= reconnectBackoff.initialDelay else {
            throw Self.invalid("reconnectBackoff.maximumDelay must not be shorter than reconnectBackoff.initialDelay")
        }
        guard reconnectBackoff.multiplier >= 1, reconnectBackoff.multiplier.isFinite else {
            throw Self.invalid("reconnectBackoff.multiplier must be a finite number ≥ 1")
        }
        guard (0...1).contains(reconnectBackoff.jitter) else {
            throw Self.invalid("reconnectBackoff.jitter must be between 0 and 1")
        }
        if let attempts = maximumReconnectAttempts, attempts < 0 {
            throw Self.invalid("maximumReconnectAttempts must be nil (retry forever) or ≥ 0, got \(attempts)")
        }
        guard (4096...Int(Int32.max)).contains(frameMax) else {
            throw Self.invalid("frameMax must be between 4096 and \(Int32.max) bytes, got \(frameMax)")
        }
        guard !url.user.utf8.contains(0), !url.password.utf8.contains(0), !url.virtualHost.utf8.contains(0),
            !urls.contains(where: { $0.host.utf8.contains(0) })
        else {
            throw Self.invalid("URL parts must not contain NUL characters")
        }
        for other in failoverURLs
        where other.usesTLS != url.usesTLS || other.user != url.user || other.password != url.password
            || other.virtualHost != url.virtualHost
        {
            throw Self.invalid(
                "failover URL \(other.redacted) differs from \(url.redacted) in scheme, user, password or virtual host")
        }
        let paths = [tls.caCertificatePath, tls.clientCertificatePath, tls.clientKeyPath]
        if !url.usesTLS, paths.contains(where: { $0 != nil }) {
            throw Self.invalid("TLS certificate files are set but the URL scheme is amqp; use amqps")
        }
        if (tls.clientCertificatePath == nil) != (tls.clientKeyPath == nil) {
            throw Self.invalid("tls.clientCertificatePath and tls.clientKeyPath must be set together")
        }
        for (name, path) in [
            ("tls.caCertificatePath", tls.caCertificatePath), ("tls.clientCertificatePath", tls.clientCertificatePath),
            ("tls.clientKeyPath", tls.clientKeyPath),
        ] {
            if let path, access(path, R_OK) != 0 {
                throw Self.invalid("\(name) '\(path)' is not a readable file")
            }
        }
    }

    private static func requirePositive(_ duration: Duration, _ name: String) throws(MessagingError) {
        guard duration > .zero else { throw invalid("\(name) must be positive, got \(duration)") }
    }

    private static func invalid(_ message: String) -> MessagingError {
        MessagingError(.configuration, message, isRetryable: false)
    }
}

extension Duration {
    /// The duration in seconds, as a double.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
