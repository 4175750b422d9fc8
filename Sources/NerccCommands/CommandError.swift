import CodedComputing
import NumPyFormat

/// An error a command reports to its user: one line that names the problem.
struct CommandError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }

    /// Wraps the library errors so that the user sees their message, prefixed by the input it concerns.
    static func wrapping(_ context: String, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as CodingSchemeError {
            throw CommandError("\(context): \(error)")
        } catch let error as NumPyFormatError {
            throw CommandError("\(context): \(error)")
        }
    }
}
