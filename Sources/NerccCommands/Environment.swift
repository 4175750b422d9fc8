import Foundation

/// Environment-variable defaults: every service flag `--some-flag` can also be set as
/// `NERCC_SOME_FLAG`, which containers prefer. A flag on the command line wins.
enum Environment {
    static func string(_ name: String, _ fallback: String) -> String {
        ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 } ?? fallback
    }

    static func optionalString(_ name: String) -> String? {
        ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
    }

    static func int(_ name: String, _ fallback: Int) -> Int {
        optionalString(name).flatMap(Int.init) ?? fallback
    }

    static func double(_ name: String, _ fallback: Double) -> Double {
        optionalString(name).flatMap(Double.init) ?? fallback
    }

    static func bool(_ name: String, _ fallback: Bool = false) -> Bool {
        guard let v = optionalString(name)?.lowercased() else { return fallback }
        return ["1", "true", "yes", "on"].contains(v)
    }

    static func list(_ name: String) -> [String] {
        optionalString(name)?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } ?? []
    }

    static func unsigned(_ name: String, _ fallback: UInt64) -> UInt64 {
        optionalString(name).flatMap { UInt64($0) } ?? fallback
    }

    /// The value type of an environment twin, for ``validate(_:as:)``.
    enum Kind {
        case number, integer, unsigned, boolean

        static let booleans = ["1", "true", "yes", "on", "0", "false", "no", "off"]

        func accepts(_ value: String) -> Bool {
            switch self {
            case .number: Double(value) != nil
            case .integer: Int(value) != nil
            case .unsigned: UInt64(value) != nil
            case .boolean: Self.booleans.contains(value.lowercased())
            }
        }

        var expected: String {
            switch self {
            case .number: "a number"
            case .integer: "an integer"
            case .unsigned: "a non-negative integer"
            case .boolean: "a boolean (use \(Self.booleans.joined(separator: ", ")))"
            }
        }
    }

    /// Checks that every `NERCC_*` variable in `names` that is set parses as `kind`, so a typo in a
    /// container spec (`3.5` for an integer, `maybe` for a boolean) stops the process with one line
    /// naming it instead of silently falling back to a default.
    static func validate(_ names: [String], as kind: Kind) throws {
        for name in names {
            if let v = optionalString(name), !kind.accepts(v) {
                throw CommandError("environment variable \(name)='\(v)' is not \(kind.expected)")
            }
        }
    }
}
