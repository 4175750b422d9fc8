import ArgumentParser

/// The `nercc` command-line tool: one binary for every role and offline tool.
public struct NerccCommand: AsyncParsableCommand {
    /// The tool's description and subcommands.
    public static let configuration = CommandConfiguration(
        commandName: "nercc",
        abstract: "Straggler-resilient prediction serving with nested-regression coded computing.",
        discussion: """
            `nercc code` runs the coding mathematics offline on NumPy files; `nercc bench` measures it.
            """,
        version: "0.1.0",
        subcommands: [
            CodeCommand.self, BenchCommand.self,
        ]
    )

    /// Creates the command (used by the argument parser).
    public init() {}
}
