/// Constants of the nercc wire format (see `schemas/README.md`).
///
/// Versioning rule: every message carries the major version in the `x-nercc-version` header (and
/// JSON bodies in their `version` field). Within a major version, changes are additive only —
/// new optional fields and headers, which readers ignore when they do not know them. Anything
/// else is a new major version; services dead-letter messages of a version they do not speak,
/// with the reason `unsupported-version`.
public enum WireFormat {
    /// The wire format's major version.
    public static let version = 1

    /// The most rows a task, a result or a manifest may declare (`x-nercc-rows`, `rows`).
    public static let maximumRows = 1_024

    /// Content type of JSON bodies (requests, manifests, predictions, error records).
    public static let jsonContentType = "application/json"
    /// Content type of binary tensor bodies: little-endian float32, C order, shape in `x-nercc-shape`.
    public static let tensorContentType = "application/x-nercc-tensor"

    /// AMQP `type` property values, which tell messages sharing a queue apart.
    public enum MessageType {
        /// An inference request.
        public static let request = "nercc.request"
        /// A batch manifest, from the encoder to the decoder.
        public static let manifest = "nercc.manifest"
        /// A coded task, from the encoder to the workers.
        public static let task = "nercc.task"
        /// A worker's result for one coded task.
        public static let result = "nercc.result"
        /// Predictions for (part of) a request.
        public static let prediction = "nercc.prediction"
        /// An error record answering a request that could not be served.
        public static let error = "nercc.error"
        /// The decoder's notice that batches are finished: their outstanding tasks need not run.
        public static let cancellation = "nercc.cancel"
        /// The decoder's request that an encoder publish the copies it held back for a batch.
        public static let hedge = "nercc.hedge"
        /// The encoder's notice that it gave up on a batch (``BatchAbandonment``), to the decoder.
        public static let abandon = "nercc.abandon"
    }

    /// Header names.
    public enum Header {
        /// Major version of the wire format (integer).
        public static let version = "x-nercc-version"
        /// Batch identifier (string).
        public static let batchID = "x-nercc-batch-id"
        /// Index n of the coded task / worker point β_n (integer).
        public static let codedIndex = "x-nercc-coded-index"
        /// N, coded tasks per batch (integer).
        public static let workers = "x-nercc-workers"
        /// K, queries per batch (integer).
        public static let batchSize = "x-nercc-batch-size"
        /// Scheme name (string).
        public static let scheme = "x-nercc-scheme"
        /// Model name (string).
        public static let model = "x-nercc-model"
        /// Deadline, milliseconds since the Unix epoch (integer): a task's batch deadline; on a
        /// request (optional), the time after which it is answered `expired` instead of served.
        public static let deadline = "x-nercc-deadline-ms"
        /// Tensor shape of a binary body, without the batch dimension, e.g. `"784"` or `"1,28,28"`.
        public static let shape = "x-nercc-shape"
        /// Rows of a task's or result's body (absent: 1): the body holds this many tensors of
        /// `x-nercc-shape`, one after another.
        public static let rows = "x-nercc-rows"
        /// Which worker produced a result (string).
        public static let worker = "x-nercc-worker"
        /// Time the worker spent computing, in microseconds (integer).
        public static let computeMicroseconds = "x-nercc-compute-us"
        /// When the sender published the message, microseconds since the Unix epoch (integer;
        /// optional on requests, set on results). Informational: it feeds the stage breakdown.
        public static let sentMicroseconds = "x-nercc-sent-us"
        /// When the worker received the task a result answers, microseconds since the Unix epoch.
        public static let receivedMicroseconds = "x-nercc-received-us"
        /// A copy of the batch manifest (its JSON body as a string) on tasks, which workers copy onto
        /// their results, so the decoder can answer before the manifest message itself arrives.
        public static let manifest = "x-nercc-manifest"
        /// The authentication token of a message (string, 64 lowercase hex digits), set when the
        /// encoder and decoder share an authentication key: on a task, the MAC of its message id,
        /// which its result echoes; on a manifest, an abandonment or a hedge request, the MAC of its
        /// body (schemas/README.md, "Authenticated tasks and results").
        public static let token = "x-nercc-token"
        /// The token of the manifest copy (``manifest``) a task carries, copied onto its result:
        /// the manifest message's own ``token``.
        public static let manifestToken = "x-nercc-manifest-token"
        /// Stable error code of a dead-lettered message (string).
        public static let errorCode = "x-nercc-error-code"
        /// Human-readable reason of a dead-lettered message (string).
        public static let errorReason = "x-nercc-error-reason"
        /// The service that dead-lettered a message (string).
        public static let rejectedBy = "x-nercc-rejected-by"
        /// Exchange, routing key and queue the dead-lettered message came from (strings).
        public static let originalExchange = "x-nercc-original-exchange"
        /// See ``originalExchange``.
        public static let originalRoutingKey = "x-nercc-original-routing-key"
        /// See ``originalExchange``.
        public static let originalQueue = "x-nercc-original-queue"
        /// The AMQP `user_id` of a dead-lettered message (the broker user that published it), which
        /// the dead letter cannot keep as its own `user_id` (string; absent when it had none).
        public static let originalUserID = "x-nercc-original-user-id"
    }
}
