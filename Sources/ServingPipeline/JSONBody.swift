import Foundation

/// JSON bodies of the messages the services emit.
enum JSONBody {
    /// Encodes a wire type. The wire types hold only strings, integers and finite numbers (callers
    /// check finiteness first), so encoding cannot fail; a failure is a defect and stops the process.
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        do {
            return Array(try JSONEncoder().encode(value))
        } catch {
            preconditionFailure("a wire message could not be encoded as JSON: \(error)")
        }
    }

    /// The `request_id` field of a JSON object body, if it has one, whatever else is wrong with it.
    static func requestID(in body: [UInt8]) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
        return object["request_id"] as? String
    }
}
