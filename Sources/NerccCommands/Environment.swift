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

    /// Checks that every `NERCC_*` variable that is set parses, so a typo in a container spec is
    /// reported instead of silently falling back to a default.
    static func validateNumbers(_ names: [String]) throws {
        for name in names {
            if let v = optionalString(name), Double(v) == nil {
                throw CommandError("environment variable \(name)='\(v)' is not a number")
            }
        }
    }
}
