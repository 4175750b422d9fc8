import ArgumentParser

/// The `nercc` command-line tool: one binary for every role and offline tool.
public struct NerccCommand: AsyncParsableCommand {
    /// The tool's description and subcommands.
    public static let configuration = CommandConfiguration(
        commandName: "nercc",
        abstract: "Straggler-resilient prediction serving with nested-regression coded computing.",
        discussion: """
            Services: `nercc encoder`, `nercc worker` (scale horizontally) and `nercc decoder` talk through \
            RabbitMQ; `nercc submit` is the client. `nercc code` runs the coding mathematics offline on NumPy \
            files; `nercc bench` measures it. Every service flag also reads an environment variable NERCC_….
            """,
        version: "0.1.0",
        subcommands: [
            EncoderCommand.self, WorkerCommand.self, DecoderCommand.self, SubmitCommand.self, CodeCommand.self,
            EvaluateCommand.self, CalibrateCommand.self,
            BenchCommand.self, ChaosCommand.self,
        ]
    )

    /// Creates the command (used by the argument parser).
    public init() {}
}
