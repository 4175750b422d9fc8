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

    static func bool(_ name: String) -> Bool {
        guard let v = optionalString(name)?.lowercased() else { return false }
        return ["1", "true", "yes", "on"].contains(v)
    }

    static func list(_ name: String) -> [String] {
        optionalString(name)?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } ?? []
    }

    static func unsigned(_ name: String, _ fallback: UInt64) -> UInt64 {
        optionalString(name).flatMap { UInt64($0) } ?? fallback
    }

    /// Checks that every `NERCC_*` variable that is set parses, so a typo in a container spec is
    /// reported instead of silently falling back to a default.
    static func validateNumbers(_ names: [String]) throws {
        for name in names {
            if let v = optionalString(name), Double(v) == nil {
                throw CommandError("environment variable \(name)='\(v)' is not a number")
            }
        }
    }

    /// Checks that every integer `NERCC_*` variable that is set is an integer (`3.5` or `abc` would
    /// otherwise fall back to the default without a word).
    static func validateIntegers(_ names: [String]) throws {
        for name in names {
            if let v = optionalString(name), Int(v) == nil {
                throw CommandError("environment variable \(name)='\(v)' is not an integer")
            }
        }
    }

    /// Checks that every unsigned `NERCC_*` variable that is set is a non-negative integer.
    static func validateUnsigned(_ names: [String]) throws {
        for name in names {
            if let v = optionalString(name), UInt64(v) == nil {
                throw CommandError("environment variable \(name)='\(v)' is not a non-negative integer")
            }
        }
    }

    /// Checks that every boolean `NERCC_*` variable that is set is one of the accepted spellings.
    static func validateBooleans(_ names: [String]) throws {
        let accepted = ["1", "true", "yes", "on", "0", "false", "no", "off"]
        for name in names {
            if let v = optionalString(name), !accepted.contains(v.lowercased()) {
                throw CommandError(
                    "environment variable \(name)='\(v)' is not a boolean (use \(accepted.joined(separator: ", ")))")
            }
        }
    }
}
