// swift-tools-version: 6.1
import PackageDescription

// Module graph (dependency direction is the architecture):
//
//   CBLAS (system: OpenBLAS) ──▶ CodedComputing (pure numerics: points, splines, schemes)
//   NumPyFormat (pure: .npy bytes ⇄ arrays)
//   all of the above + ArgumentParser ──▶ NerccCommands ──▶ nercc (executable)
let strict: [SwiftSetting] = [
    .unsafeFlags(["-warnings-as-errors"])
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
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
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
        .target(
            name: "NerccCommands",
            dependencies: [
                "CodedComputing",
                "NumPyFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
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
