// swift-tools-version: 6.2
import PackageDescription

// Module graph (dependency direction is the architecture):
//
//   CBLAS (system: OpenBLAS) ──▶ CodedComputing (pure numerics: points, splines, schemes)
//   CBLAS, CKernels (C: convolution kernels, on CBLAS), ONNXProto (generated from onnx.proto; swift-protobuf)
//     ──▶ NeuralInference (pure: tensors,
//     layers, safetensors, model descriptions, ONNX graphs)
//   NumPyFormat (pure: .npy bytes ⇄ arrays)
//   Messaging (transport protocol and message types; no I/O)
//   CRabbitMQ (C: rabbitmq-c 0.11 + shim) ──▶ RabbitMQMessaging (the only importer of CRabbitMQ)
//   CodedComputing, NeuralInference, Messaging, ServingMessages, swift-collections,
//     swift-metrics, swift-prometheus, swift-crypto (HMAC-SHA256) ──▶ ServingPipeline
//   all of the above + ArgumentParser, Hummingbird, swift-service-lifecycle ──▶ NerccCommands
//     ──▶ nercc (executable)
// Warnings are errors in this package's own targets. `treatAllWarnings` is not an unsafe flag, so
// the libraries stay usable as dependencies (SwiftPM ignores warning settings of dependencies).
let strict: [SwiftSetting] = [
    .treatAllWarnings(as: .error)
]

let package = Package(
    name: "nercc",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "nercc", targets: ["nercc"]),
        .library(name: "CodedComputing", targets: ["CodedComputing"]),
        .library(name: "NumPyFormat", targets: ["NumPyFormat"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(
            name: "CodedComputing",
            dependencies: ["CBLAS"],
            swiftSettings: strict
        ),
        .target(
            name: "NumPyFormat",
            swiftSettings: strict
        ),
        // onnx.proto's message types, generated once by ops/models/generate_onnx_proto.sh and
        // committed (the generator is not part of the build).
        .target(
            name: "ONNXProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        // Convolution kernels in C (vectorised by the compiler, with an AVX2+FMA copy chosen at
        // run time).
        .target(name: "CKernels", dependencies: ["CBLAS"]),
        .target(
            name: "NeuralInference",
            dependencies: ["CBLAS", "CKernels", "ONNXProto"],
            swiftSettings: strict
        ),
        .target(
            name: "AccuracyStudy",
            dependencies: ["CodedComputing"],
            swiftSettings: strict
        ),
        .target(
            name: "Messaging",
            swiftSettings: strict
        ),
        .target(
            name: "ServingMessages",
            swiftSettings: strict
        ),
        .target(
            name: "CRabbitMQ",
            linkerSettings: [.linkedLibrary("rabbitmq")]
        ),
        .target(
            name: "ServingPipeline",
            dependencies: [
                "CodedComputing", "NeuralInference", "Messaging", "ServingMessages",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "RabbitMQMessaging",
            dependencies: [
                "CRabbitMQ", "Messaging",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NerccCommands",
            dependencies: [
                "CodedComputing",
                "NumPyFormat",
                "NeuralInference",
                "AccuracyStudy",
                "Messaging",
                "ServingMessages",
                "ServingPipeline",
                "RabbitMQMessaging",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "nercc",
            dependencies: ["NerccCommands", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CodedComputingTests",
            dependencies: ["CodedComputing"],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NeuralInferenceTests",
            dependencies: [
                "NeuralInference", "NumPyFormat", "ONNXProto", .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RabbitMQMessagingTests",
            dependencies: [
                "RabbitMQMessaging", "Messaging",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ServingPipelineTests",
            dependencies: [
                "ServingPipeline", "ServingMessages", "Messaging", "CodedComputing",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "CodedComputing", "Messaging", "RabbitMQMessaging", "ServingMessages", "NeuralInference", "NumPyFormat",
                "ServingPipeline",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "AccuracyStudyTests",
            dependencies: ["AccuracyStudy", "CodedComputing"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NumPyFormatTests",
            dependencies: ["NumPyFormat"],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NerccCommandsTests",
            dependencies: [
                "NerccCommands", "CodedComputing", "NumPyFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
