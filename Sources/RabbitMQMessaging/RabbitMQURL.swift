import Messaging

/// A parsed `amqp://` or `amqps://` URL, following the RabbitMQ URI specification.
///
/// The form is `amqp[s]://[user[:password]@]host[:port][/vhost][?query]`. User, password, host and
/// vhost are percent-decoded; the port defaults to 5672 (`amqp`) or 5671 (`amqps`); an empty path or
/// `/` selects the default vhost `/`, which can also be written `%2F`. A vhost is a single path
/// segment: a literal `/` inside it must be encoded as `%2F`.
///
/// Credentials never leave this type in text form: ``description``, ``redacted`` and the mirror used
/// by `dump` replace the password with `***`, and parse errors name the part that is wrong, never
/// its value.
public struct RabbitMQURL: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// Whether the URL uses TLS (`amqps`).
    public var usesTLS: Bool
    /// The broker's host name or IP address (IPv6 without brackets).
    public var host: String
    /// The TCP port.
    public var port: Int
    /// The user name (default `guest`, as in the RabbitMQ URI specification).
    public var user: String
    /// The password (default `guest`). Never logged.
    public var password: String
    /// The virtual host, decoded (`/` for the default vhost).
    public var virtualHost: String
    /// Query parameters, decoded. Only those listed in ``supportedQueryParameters`` are accepted.
    public var queryParameters: [String: String]

    /// The query parameters this type accepts (a subset of the RabbitMQ URI query parameters):
    /// `heartbeat` (seconds), `connection_timeout` (milliseconds), `cacertfile`, `certfile`,
    /// `keyfile`, `verify` (`verify_peer` or `verify_none`) and `server_name_indication`
    /// (`disable` turns off hostname verification).
    public static let supportedQueryParameters: Set<String> = [
        "heartbeat", "connection_timeout", "cacertfile", "certfile", "keyfile", "verify",
        "server_name_indication",
    ]

    /// Parses a URL.
    ///
    /// - Throws: ``MessagingError`` of kind `.configuration` with a one-line message naming the
    ///   problem (unsupported scheme, invalid port, bad percent-encoding, a vhost with an unencoded
    ///   `/`, an unsupported query parameter, …). The message never contains the credentials.
    public init(_ string: String) throws(MessagingError) {
        guard let separator = string.range(of: "://") else {
            throw Self.invalid("URL must start with amqp:// or amqps://")
        }
        let scheme = string[..<separator.lowerBound].lowercased()
        switch scheme {
        case "amqp": usesTLS = false
        case "amqps": usesTLS = true
        default:
            throw Self.invalid("unsupported URL scheme '\(scheme)' (expected amqp or amqps)")
        }
        var rest = Substring(string[separator.upperBound...])
        if rest.contains("#") {
            throw Self.invalid("URL must not contain a fragment ('#'); percent-encode '#' as %23")
        }
        var query: Substring = ""
        if let questionMark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: questionMark)...]
            rest = rest[..<questionMark]
        }
        let authority: Substring
        let path: Substring
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[slash...]
        } else {
            authority = rest
            path = ""
        }

        var hostPart = authority
        user = "guest"
        password = "guest"
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            hostPart = authority[authority.index(after: at)...]
            let rawUser: Substring
            var rawPassword: Substring?
            if let colon = userInfo.firstIndex(of: ":") {
                rawUser = userInfo[..<colon]
                rawPassword = userInfo[userInfo.index(after: colon)...]
            } else {
                rawUser = userInfo
            }
            guard let decodedUser = Self.percentDecoded(rawUser) else {
                throw Self.invalid("invalid percent-encoding in the URL's user name")
            }
            user = decodedUser
            if let rawPassword {
                guard let decodedPassword = Self.percentDecoded(rawPassword) else {
                    throw Self.invalid("invalid percent-encoding in the URL's password")
                }
                password = decodedPassword
            }
        }

        var rawHost: Substring
        var rawPort: Substring?
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else {
                throw Self.invalid("unterminated IPv6 address in URL (missing ']')")
            }
            rawHost = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
            let afterBracket = hostPart[hostPart.index(after: close)...]
            if afterBracket.hasPrefix(":") {
                rawPort = afterBracket.dropFirst()
            } else if !afterBracket.isEmpty {
                throw Self.invalid("unexpected characters after the IPv6 address in URL")
            }
        } else if let colon = hostPart.lastIndex(of: ":") {
            rawHost = hostPart[..<colon]
            rawPort = hostPart[hostPart.index(after: colon)...]
        } else {
            rawHost = hostPart
        }
        guard let decodedHost = Self.percentDecoded(rawHost) else {
            throw Self.invalid("invalid percent-encoding in the URL's host")
        }
        host = decodedHost.isEmpty ? "localhost" : decodedHost

        if let rawPort {
            guard !rawPort.isEmpty, rawPort.allSatisfy(\.isASCII), rawPort.allSatisfy(\.isNumber),
                let value = Int(rawPort), (1...65535).contains(value)
            else {
                throw Self.invalid("invalid port '\(rawPort)' in URL (expected 1-65535)")
            }
            port = value
        } else {
            port = usesTLS ? 5671 : 5672
        }

        if path.isEmpty || path == "/" {
            virtualHost = "/"
        } else {
            let segment = path.dropFirst()
            if segment.contains("/") {
                throw Self.invalid("the URL path must be a single vhost segment; encode '/' in a vhost name as %2F")
            }
            guard let decoded = Self.percentDecoded(segment) else {
                throw Self.invalid("invalid percent-encoding in the URL's vhost")
            }
            virtualHost = decoded
        }

        queryParameters = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = Self.percentDecoded(parts[0]),
                let value = Self.percentDecoded(parts.count > 1 ? parts[1] : "")
            else {
                throw Self.invalid("invalid percent-encoding in the URL's query")
            }
            guard Self.supportedQueryParameters.contains(key) else {
                throw Self.invalid(
                    "unsupported URL query parameter '\(key)' (supported: "
                        + Self.supportedQueryParameters.sorted().joined(separator: ", ") + ")")
            }
            queryParameters[key] = value
        }
    }

    /// Parses a comma-separated list of URLs, the nodes of one cluster, as other AMQP clients
    /// accept them: `amqp://u:p@node-1:5672/,amqp://u:p@node-2:5672/`.
    ///
    /// Every URL must name the same user, password, virtual host, scheme and query parameters as the
    /// first: only the host and port may differ, since a connection fails over to the next node as
    /// the same client. A comma inside a password must be percent-encoded (`%2C`).
    ///
    /// - Throws: `.configuration` naming the entry that is empty, does not parse, or differs.
    public static func list(_ string: String) throws(MessagingError) -> [RabbitMQURL] {
        let parts = string.split(separator: ",", omittingEmptySubsequences: false).map {
            String($0.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
        }
        var urls: [RabbitMQURL] = []
        for (i, part) in parts.enumerated() {
            let place = parts.count > 1 ? "URL \(i + 1) of \(parts.count): " : ""
            guard !part.isEmpty else { throw invalid("\(place)empty; separate broker URLs with single commas") }
            let url: RabbitMQURL
            do throws(MessagingError) {
                url = try RabbitMQURL(part)
            } catch {
                throw invalid(place + error.message)
            }
            if let first = urls.first {
                guard url.usesTLS == first.usesTLS, url.user == first.user, url.password == first.password,
                    url.virtualHost == first.virtualHost, url.queryParameters == first.queryParameters
                else {
                    throw invalid(
                        "\(place)differs from the first in its scheme, user, password, virtual host or query; "
                            + "the URLs of a cluster may differ only in host and port")
                }
            }
            urls.append(url)
        }
        return urls
    }

    /// `host:port`, with brackets around an IPv6 address; used in log and error messages.
    public var endpoint: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The URL with the password replaced by `***`: safe to log.
    public var redacted: String {
        let scheme = usesTLS ? "amqps" : "amqp"
        let vhost = virtualHost == "/" ? "" : Self.percentEncoded(virtualHost)
        var text = "\(scheme)://\(Self.percentEncoded(user)):***@\(endpoint)/\(vhost)"
        if !queryParameters.isEmpty {
            text +=
                "?" + queryParameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "&")
        }
        return text
    }

    /// The redacted URL.
    public var description: String { redacted }

    /// The redacted URL.
    public var debugDescription: String { redacted }

    /// A mirror without the password, so `dump` and debuggers do not reveal it either.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "usesTLS": usesTLS, "host": host, "port": port, "user": user, "password": "***",
                "virtualHost": virtualHost, "queryParameters": queryParameters,
            ])
    }

    private static func invalid(_ message: String) -> MessagingError {
        MessagingError(.configuration, message, isRetryable: false)
    }

    /// Decodes `%XY` escapes; `nil` when an escape is malformed or the result is not UTF-8.
    static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters.
    static func percentEncoded(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                result += byte < 16 ? "%0\(hex)" : "%\(hex)"
            }
        }
        return result
    }
}
