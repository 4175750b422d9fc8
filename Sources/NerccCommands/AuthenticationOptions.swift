import ArgumentParser
import Foundation
import ServingPipeline

/// The authentication key of the encoder and the decoder (never the workers'): with it, every task
/// carries a token its result must echo, and manifests, abandonments and hedge requests carry
/// theirs; the decoder dead-letters what does not verify as `bad-token`. The key comes from a file
/// (`--auth-key-file`, env `NERCC_AUTH_KEY_FILE`) or from the environment (`NERCC_AUTH_KEY`), never
/// from a flag (a command line is visible to every user of the machine), and is never logged.
struct AuthenticationOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "A file holding the key shared by encoders and decoders, at least 32 bytes of text, e.g. from `openssl rand -hex 32` (env NERCC_AUTH_KEY_FILE; or the key itself in NERCC_AUTH_KEY).",
            discussion:
                "With a key, each task carries an HMAC-SHA256 token that its result must echo, and manifests, abandonments and hedge requests carry theirs; the decoder dead-letters results and messages whose token does not verify as bad-token, so a worker cannot answer tasks it never received. Encoders and decoders must hold the same key; workers need none (schemas/README.md, 'Authenticated tasks and results')."
        ))
    var authKeyFile: String = Environment.string("NERCC_AUTH_KEY_FILE", "")

    func validate() throws {
        _ = try authenticator()
    }

    /// The authenticator of the configured key, or nil when none is configured.
    func authenticator() throws -> MessageAuthenticator? {
        let inline = Environment.optionalString("NERCC_AUTH_KEY")
        switch (authKeyFile.isEmpty ? nil : authKeyFile, inline) {
        case (nil, nil):
            return nil
        case (.some, .some):
            throw ValidationError(
                "both --auth-key-file (or NERCC_AUTH_KEY_FILE) and NERCC_AUTH_KEY are set: give the key one way")
        case (.some(let path), nil):
            do { return try MessageAuthenticator(contentsOfFile: path) } catch {
                throw ValidationError("--auth-key-file: \(error)")
            }
        case (nil, .some(let text)):
            do { return try MessageAuthenticator(text: text) } catch {
                throw ValidationError("NERCC_AUTH_KEY: \(error)")
            }
        }
    }
}
