import Foundation
import Testing

/// Every service reads its flags' `NERCC_*` twins from the environment, and a twin that does not
/// parse stops the process with one line naming the variable, before it connects to anything
/// (instead of falling back to a default without a word). Runs the built binary (`NERCC_BINARY`).
@Suite(.enabled(if: LiveSystem.binary != nil, "needs NERCC_BINARY (ops/test.sh sets it)"))
struct EnvironmentValidationTests {
    /// Runs `nercc <arguments>` with `environment` added; returns the exit status and stderr.
    static func run(_ arguments: [String], environment: [String: String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: LiveSystem.binary!)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.currentDirectoryURL = LiveSystem.root
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test(arguments: [
        (["worker", "--model", "models/mnist-mlp/model.json"], "NERCC_SEED", "-1", "is not a non-negative integer"),
        (["worker", "--model", "models/mnist-mlp/model.json"], "NERCC_NEVER_REPLY", "sometimes", "is not a boolean"),
        (["encoder", "--model", "models/mnist-mlp/model.json"], "NERCC_WORKERS", "3.5", "is not an integer"),
        (
            ["encoder", "--model", "models/mnist-mlp/model.json"], "NERCC_MAX_REQUEST_BYTES", "16MB",
            "is not an integer"
        ),
        (["encoder", "--model", "models/mnist-mlp/model.json"], "NERCC_LAMBDA_ENC", "small", "is not a number"),
        (["encoder", "--model", "models/mnist-mlp/model.json"], "NERCC_HEDGE_AFTER_MS", "soon", "is not an integer"),
        (["encoder", "--model", "models/mnist-mlp/model.json"], "NERCC_ADVERSARIES", "few", "is not an integer"),
        (
            ["worker", "--model", "models/mnist-mlp/model.json"], "NERCC_BYZANTINE_PROBABILITY", "half",
            "is not a number"
        ),
        (["decoder"], "NERCC_HTTP_PORT", "http", "is not an integer"),
        (["submit"], "NERCC_SUBMIT_CONCURRENCY", "many", "is not an integer"),
        (["submit"], "NERCC_SUBMIT_QUIET", "maybe", "is not a boolean"),
    ])
    func anUnparsableTwinIsNamedAndStopsTheProcess(
        arguments: [String], variable: String, value: String, problem: String
    ) throws {
        let (status, errors) = try Self.run(
            arguments + ["--url", "amqp://guest:guest@127.0.0.1:1/"], environment: [variable: value])
        #expect(status != 0)
        #expect(errors.contains("environment variable \(variable)='\(value)' \(problem)"), "\(errors)")
        #expect(!errors.contains("cannot reach RabbitMQ"), "it must fail before connecting")
    }

    /// A Byzantine mode that does not parse stops the worker before it connects, naming the problem
    /// (from the flag and from its twin alike).
    @Test(arguments: [(["--byzantine", "flip"], [String: String]()), ([], ["NERCC_BYZANTINE": "gaussian:-3"])])
    func aBadByzantineModeIsRefusedBeforeConnecting(flags: [String], environment: [String: String]) throws {
        let (status, errors) = try Self.run(
            ["worker", "--model", "models/mnist-mlp/model.json", "--url", "amqp://guest:guest@127.0.0.1:1/"] + flags,
            environment: environment)
        #expect(status != 0)
        #expect(errors.contains("--byzantine: '"), "\(errors)")
        #expect(errors.contains("not a Byzantine mode") || errors.contains("σ must be ≥ 0"), "\(errors)")
        #expect(!errors.contains("cannot reach RabbitMQ"))
    }

    /// A bad authentication key stops the encoder or decoder before it connects, naming the problem
    /// and never the key: too short, an unreadable file, or given two ways.
    @Test(arguments: [
        (["decoder"], ["NERCC_AUTH_KEY": "short key"], "NERCC_AUTH_KEY: the authentication key has 9 bytes"),
        (
            ["encoder", "--model", "models/mnist-mlp/model.json", "--auth-key-file", "/nonexistent/nercc.key"],
            [:], "cannot read the authentication key file '/nonexistent/nercc.key'"
        ),
        (
            ["decoder"], ["NERCC_AUTH_KEY": String(repeating: "k", count: 40), "NERCC_AUTH_KEY_FILE": "/etc/hostname"],
            "give the key one way"
        ),
    ])
    func aBadAuthenticationKeyIsRefusedBeforeConnecting(
        arguments: [String], environment: [String: String], problem: String
    ) throws {
        let (status, errors) = try Self.run(
            arguments + ["--url", "amqp://guest:guest@127.0.0.1:1/"], environment: environment)
        #expect(status != 0)
        #expect(errors.contains(problem), "\(errors)")
        #expect(!errors.contains("short key") && !errors.contains("kkkk"), "the key is never shown")
        #expect(!errors.contains("cannot reach RabbitMQ"))
    }

    /// A twin that parses takes effect: the encoder's S comes from NERCC_STRAGGLERS, and a value the
    /// scheme cannot afford is refused before connecting, naming the allowed range.
    @Test func aParsedTwinTakesEffect() throws {
        let (status, errors) = try Self.run(
            [
                "encoder", "--model", "models/mnist-mlp/model.json", "--scheme", "parity", "--workers", "6", "--batch",
                "4", "--group", "2", "--url", "amqp://guest:guest@127.0.0.1:1/",
            ], environment: ["NERCC_STRAGGLERS": "5"])
        #expect(status != 0)
        #expect(errors.contains("stragglers must be in 0...2 for parity with N = 6, got 5"), "\(errors)")
        #expect(!errors.contains("cannot reach RabbitMQ"))
    }
}
