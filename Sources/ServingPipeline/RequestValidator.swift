import Foundation
import Messaging
import ServingMessages

/// A request that passed validation.
public struct ValidatedRequest: Sendable, Equatable {
    /// The request id (from the body, else `message_id`, else a hash of the body).
    public var requestID: String
    /// The model.
    public var model: String
    /// The queries.
    public var queries: [[Float]]
    /// Where to answer.
    public var replyTo: String?
    /// The correlation id to answer with.
    public var correlationID: String?
}

/// Checks an incoming request against the wire format and the served models: size, JSON shape,
/// version, model, number of queries, each query's size and finiteness. Every failure names the
/// problem and carries the stable code used as the dead-letter reason.
public struct RequestValidator: Sendable {
    /// Input size of every served model, by name.
    public var inputSizes: [String: Int]
    /// Largest accepted body, in bytes.
    public var maximumBodyBytes: Int
    /// Most queries in one request.
    public var maximumQueries: Int

    /// Creates a validator.
    public init(inputSizes: [String: Int], maximumBodyBytes: Int = 16 << 20, maximumQueries: Int = 10_000) {
        self.inputSizes = inputSizes
        self.maximumBodyBytes = maximumBodyBytes
        self.maximumQueries = maximumQueries
    }

    /// The request id a delivery would be known by, even when it fails validation.
    public static func requestID(of delivery: Delivery, bodyID: String?) -> String {
        if let bodyID, !bodyID.isEmpty { return bodyID }
        if let id = delivery.properties.messageID, !id.isEmpty { return id }
        return StableHash.identifier(String(decoding: delivery.body, as: UTF8.self))
    }

    /// Validates a delivery.
    public func validate(_ delivery: Delivery) -> Result<ValidatedRequest, WireFormatError> {
        guard delivery.body.count <= maximumBodyBytes else {
            return .failure(
                WireFormatError(
                    .oversize, "the request body has \(delivery.body.count) bytes; the limit is \(maximumBodyBytes)"))
        }
        if let v = delivery.properties.headers[WireFormat.Header.version]?.intValue, v != Int64(WireFormat.version) {
            return .failure(
                WireFormatError(
                    .unsupportedVersion,
                    "wire-format version \(v) is not supported; this service speaks \(WireFormat.version)"))
        }
        let request: InferenceRequest
        do {
            // The common form in one pass; anything else through JSONDecoder, which names the problem.
            request =
                try InferenceRequest.fastParse(delivery.body)
                ?? JSONDecoder().decode(InferenceRequest.self, from: Data(delivery.body))
        } catch let DecodingError.dataCorrupted(context) {
            return .failure(WireFormatError(.malformedJSON, "the body is not valid JSON: \(Self.describe(context))"))
        } catch let DecodingError.keyNotFound(key, _) {
            return .failure(WireFormatError(.malformedJSON, "the request has no '\(key.stringValue)' field"))
        } catch let DecodingError.typeMismatch(_, context) {
            return .failure(
                WireFormatError(.malformedJSON, "wrong type at '\(Self.path(context))': \(context.debugDescription)"))
        } catch let DecodingError.valueNotFound(_, context) {
            return .failure(WireFormatError(.malformedJSON, "null at '\(Self.path(context))'"))
        } catch {
            return .failure(WireFormatError(.malformedJSON, "the body is not a request: \(error)"))
        }
        guard request.version == WireFormat.version else {
            return .failure(
                WireFormatError(
                    .unsupportedVersion,
                    "wire-format version \(request.version) is not supported; this service speaks \(WireFormat.version)"
                ))
        }
        guard let size = inputSizes[request.model] else {
            let served = inputSizes.keys.sorted().joined(separator: ", ")
            return .failure(WireFormatError(.unknownModel, "unknown model '\(request.model)'; served here: \(served)"))
        }
        guard !request.queries.isEmpty, request.queries.count <= maximumQueries else {
            return .failure(
                WireFormatError(
                    .badRequest, "a request needs 1 to \(maximumQueries) queries, got \(request.queries.count)"))
        }
        var queries: [[Float]] = []
        queries.reserveCapacity(request.queries.count)
        for (i, q) in request.queries.enumerated() {
            guard q.count == size else {
                return .failure(
                    WireFormatError(
                        .wrongShape, "query \(i) has \(q.count) values; model '\(request.model)' takes \(size)"))
            }
            let values = q.map { Float($0) }
            if let j = values.firstIndex(where: { !$0.isFinite }) {
                return .failure(
                    WireFormatError(.nonFinite, "query \(i) value \(j) is \(q[j]), which is not a finite float32"))
            }
            queries.append(values)
        }
        return .success(
            ValidatedRequest(
                requestID: Self.requestID(of: delivery, bodyID: request.requestID), model: request.model,
                queries: queries, replyTo: delivery.properties.replyTo,
                correlationID: delivery.properties.correlationID))
    }

    private static func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }

    private static func describe(_ context: DecodingError.Context) -> String {
        if let underlying = context.underlyingError as NSError? {
            return underlying.userInfo[NSDebugDescriptionErrorKey] as? String ?? context.debugDescription
        }
        return context.debugDescription
    }
}
