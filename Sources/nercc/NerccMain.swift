import ArgumentParser
import NerccCommands

/// The `nercc` executable: the root command's configuration and subcommands live in `NerccCommands`,
/// so tests can drive exactly what the binary runs.
@main
struct NerccMain: AsyncParsableCommand {
    static let configuration = NerccCommand.configuration
}
