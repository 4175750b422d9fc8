import Crypto
import Foundation
import ServingMessages

/// Authenticates what the encoder sends (tasks, manifests, abandonments) and what the decoder asks
/// of the encoder (hedge requests) with HMAC-SHA256 under a key that only the encoder and the
/// decoder hold — never the workers. A task's token is the MAC of its message id
/// (`<batch id>/<coded index>`); a worker copies it onto its result, so the decoder accepts a
/// result only for a task that was really sent, and a worker cannot answer tasks it never received
/// nor pose as other workers. Manifests and abandonments carry the MAC of their body, so a
/// connection that can publish to a decoder's queue cannot forge them either.
///
/// Every token is the lowercase hex of HMAC-SHA256(key, purpose ‖ 0x00 ‖ bytes), the purpose
/// being the AMQP type of the message it authenticates (`nercc.task`, `nercc.manifest`,
/// `nercc.abandon`, `nercc.hedge`), so a token of one kind never passes for another.
/// Verification compares in constant time. The key is never logged; ``keyID`` is a fingerprint
/// that tells two services' keys apart.
public struct MessageAuthenticator: Sendable {
    /// The shortest key accepted, in bytes.
    public static let minimumKeyBytes = 32
    /// The longest key accepted, in bytes.
    public static let maximumKeyBytes = 4_096

    private let key: SymmetricKey

    /// A key problem, with a message that names it (never the key).
    public struct KeyError: Error, Sendable, CustomStringConvertible {
        /// The message.
        public let description: String
    }

    /// Creates an authenticator from the key's bytes: at least ``minimumKeyBytes``, for instance
    /// the 64 hex digits of `openssl rand -hex 32`.
    public init(key bytes: [UInt8]) throws(KeyError) {
        guard bytes.count >= Self.minimumKeyBytes else {
            throw KeyError(
                description:
                    "the authentication key has \(bytes.count) bytes; it needs at least \(Self.minimumKeyBytes) (e.g. `openssl rand -hex 32`)"
            )
        }
        guard bytes.count <= Self.maximumKeyBytes else {
            throw KeyError(
                description:
                    "the authentication key has \(bytes.count) bytes; the most accepted is \(Self.maximumKeyBytes)")
        }
        key = SymmetricKey(data: bytes)
    }

    /// Creates an authenticator from a key given as text (a key file's contents or an environment
    /// variable): its UTF-8 bytes without leading and trailing white space.
    public init(text: String) throws(KeyError) {
        try self.init(key: Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8))
    }

    /// Reads the key from a file (its contents as text, see ``init(text:)``).
    public init(contentsOfFile path: String) throws(KeyError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeyError(description: "cannot read the authentication key file '\(path)'")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw KeyError(description: "the authentication key file '\(path)' is not text (UTF-8)")
        }
        do {
            try self.init(text: text)
        } catch {
            throw KeyError(description: "\(error.description) (file '\(path)')")
        }
    }

    /// A fingerprint of the key (8 hex digits), for logs: two services with the same key show the
    /// same id. It reveals nothing useful about the key.
    public var keyID: String { String(token(purpose: "nercc.key-id", bytes: []).prefix(8)) }

    /// The token of `bytes` for `purpose`: the lowercase hex of HMAC-SHA256(key, purpose ‖ 0x00 ‖ bytes).
    public func token(purpose: String, bytes: some Collection<UInt8>) -> String {
        var hmac = HMAC<SHA256>(key: key)
        hmac.update(data: Array(purpose.utf8) + [0])
        hmac.update(data: Array(bytes))
        return Self.hex(hmac.finalize())
    }

    /// Whether `token` is the token of `bytes` for `purpose` (compared in constant time; anything
    /// that is not 64 hex digits fails).
    public func verifies(_ token: String, purpose: String, bytes: some Collection<UInt8>) -> Bool {
        guard let mac = Self.bytes(ofHex: token), mac.count == SHA256.byteCount else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(
            mac, authenticating: Array(purpose.utf8) + [0] + Array(bytes), using: key)
    }

    /// The token of coded task `index` of batch `batchID`: the MAC of its message id
    /// `<batch id>/<index>` for `nercc.task`. Its result must echo it.
    public func taskToken(batchID: String, index: Int) -> String {
        token(purpose: WireFormat.MessageType.task, bytes: Array("\(batchID)/\(index)".utf8))
    }

    /// Whether `token` is the token of coded task `index` of batch `batchID`.
    public func verifiesTask(_ token: String, batchID: String, index: Int) -> Bool {
        verifies(token, purpose: WireFormat.MessageType.task, bytes: Array("\(batchID)/\(index)".utf8))
    }

    private static func hex(_ mac: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(2 * SHA256.byteCount)
        for byte in mac {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of a lowercase hex string, or nil.
    static func bytes(ofHex text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let high = nibble(utf8[i]), let low = nibble(utf8[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }
}
