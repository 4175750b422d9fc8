import Foundation
import Testing

/// The Kubernetes manifests (ops/k8s) pass ops/checks/check_k8s.py, and copies broken on purpose fail
/// it, each with a line that names what is wrong.
@Suite struct KubernetesManifestTests {
    /// One change to one file of a copy of ops/k8s, and what the checker must say about it.
    struct Breakage: Sendable, CustomTestStringConvertible {
        let name: String
        /// The file, relative to the copy of ops/k8s.
        let file: String
        /// The text replaced: its first occurrence in the file.
        let original: String
        let replacement: String
        /// Text of the `FAIL` line the checker must print.
        let message: String

        var testDescription: String { name }
    }

    static let breakages: [Breakage] = [
        Breakage(
            name: "the ScaledObject watches another queue than <prefix>.tasks.<model>",
            file: "base/keda-scaledobject.yaml", original: "queueName: nercc.tasks.mnist-mlp",
            replacement: "queueName: nercc.tasks.mnist", message: "queueName ['nercc.tasks.mnist']"),
        Breakage(
            name: "a readiness probe on a path the HealthServer does not serve", file: "base/worker.yaml",
            original: "path: /health/ready", replacement: "path: /healthz", message: "readinessProbe path /healthz"),
        Breakage(
            name: "a liveness probe on /health/ready", file: "base/encoder.yaml",
            original: "path: /health/live\n              port: http\n            periodSeconds: 10",
            replacement: "path: /health/ready\n              port: http\n            periodSeconds: 10",
            message: "livenessProbe path /health/ready"),
        Breakage(
            name: "a variable no subcommand reads", file: "base/worker.yaml", original: "          env:\n",
            replacement: "          env:\n            - name: NERCC_BATCH_SIZE\n              value: \"4\"\n",
            message: "not read by `nercc worker`: ['NERCC_BATCH_SIZE']"),
        Breakage(
            name: "a Secret without the key a container takes", file: "base/kustomization.yaml",
            original: "url=amqp://worker:", replacement: "uri=amqp://worker:",
            message: "env NERCC_AMQP_URL from Secret nercc-worker-amqp key url exists in the base"),
        Breakage(
            name: "the workers get the authentication key", file: "base/worker.yaml", original: "          env:\n",
            replacement:
                "          env:\n            - name: NERCC_AUTH_KEY\n              valueFrom:\n"
                + "                secretKeyRef:\n                  name: nercc-auth-key\n                  key: key\n",
            message: "the worker gets no authentication key"),
        Breakage(
            name: "a second standby decoder on the shard", file: "base/decoder.yaml", original: "  replicas: 2\n",
            replacement: "  replicas: 3\n", message: "shard 0 has 3 decoder(s)"),
    ]

    /// The nercc binary: NERCC_BINARY (the test script's), else the one built beside this test
    /// bundle. Passing it keeps the script from running `swift build --show-bin-path`, which would
    /// wait for the build-directory lock of the `swift test` that runs this test.
    static var binary: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("nercc").path
        return ProcessInfo.processInfo.environment["NERCC_BINARY"] ?? beside
    }

    @Test func shippedManifestsPassTheChecks() throws {
        let (status, output) = try ExternalCheck.run(["python3", "ops/checks/check_k8s.py", "--nercc", Self.binary])
        #expect(status == 0, "\(output)")
        #expect(output.contains("k8s checks:"))
    }

    @Test(arguments: KubernetesManifestTests.breakages)
    func brokenCopyFailsNamingTheProblem(_ breakage: Breakage) throws {
        let files = FileManager.default
        let copy = files.temporaryDirectory.appendingPathComponent("nercc-k8s-\(UUID().uuidString)")
        try files.createDirectory(at: copy, withIntermediateDirectories: true)
        defer { try? files.removeItem(at: copy) }
        let k8s = copy.appendingPathComponent("k8s")
        try files.copyItem(at: ExternalCheck.root.appendingPathComponent("ops/k8s"), to: k8s)
        let file = k8s.appendingPathComponent(breakage.file)
        let text = try String(contentsOf: file, encoding: .utf8)
        let range = try #require(text.range(of: breakage.original), "\(breakage.file) has no '\(breakage.original)'")
        try text.replacingCharacters(in: range, with: breakage.replacement)
            .write(to: file, atomically: true, encoding: .utf8)

        let (status, output) = try ExternalCheck.run([
            "python3", "ops/checks/check_k8s.py", "--nercc", Self.binary, "--k8s-dir", k8s.path,
        ])
        #expect(status == 1, "\(output)")
        let failures = output.split(separator: "\n").filter { $0.hasPrefix("FAIL") }
        #expect(failures.contains { $0.contains(breakage.message) }, "\(failures.joined(separator: "\n"))")
        #expect(output.contains("k8s checks:"), "\(output)")
    }
}
