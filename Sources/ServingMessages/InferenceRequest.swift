/// A client's inference request: one or more queries for one model (JSON body).
///
/// Published to the requests exchange with the model name as routing key. The AMQP `message_id`
/// is the request id unless the body names one; `reply_to` (optional) receives the predictions or
/// an error record, matched by `correlation_id` (defaults to the request id).
public struct InferenceRequest: Codable, Sendable, Equatable {
    /// Wire-format major version; must be ``WireFormat/version``.
    public var version: Int
    /// Client-chosen request id; unique per request, used to deduplicate.
    public var requestID: String?
    /// The model to run.
    public var model: String
    /// The queries, each a flat vector of the model's input size (C order). Read as JSON numbers of
    /// any magnitude, so that a value outside float32's range is reported as such, not as bad JSON.
    public var queries: [[Double]]

    /// Creates a request.
    public init(version: Int = WireFormat.version, requestID: String? = nil, model: String, queries: [[Double]]) {
        self.version = version
        self.requestID = requestID
        self.model = model
        self.queries = queries
    }

    enum CodingKeys: String, CodingKey {
        case version
        case requestID = "request_id"
        case model
        case queries
    }
}

/// Predictions for some or all queries of one request (JSON body).
///
/// A request whose queries span several batches is answered by one prediction message per batch;
/// together they cover every query index exactly once. Published to the predictions exchange with
/// routing key `<model>.<request id>` and to the request's `reply_to`.
public struct PredictionRecord: Codable, Sendable, Equatable {
    /// One query's prediction.
    public struct Prediction: Codable, Sendable, Equatable {
        /// Index of the query within its request.
        public var index: Int
        /// The decoded model outputs (logits for classifiers).
        public var outputs: [Float]
        /// Argmax of the outputs.
        public var predictedClass: Int
        /// The label of the predicted class, when the model names its classes.
        public var label: String?

        /// Creates a prediction.
        public init(index: Int, outputs: [Float], predictedClass: Int, label: String?) {
            self.index = index
            self.outputs = outputs
            self.predictedClass = predictedClass
            self.label = label
        }

        enum CodingKeys: String, CodingKey {
            case index, outputs, label
            case predictedClass = "class"
        }
    }

    /// How the batch was decoded.
    public enum Status: String, Codable, Sendable {
        /// Decoded from the results the scheme needs.
        case ok
        /// Decoded at the deadline from fewer results than needed: approximate, less accurate.
        case degraded
    }

    /// When each stage of the batch ended, µs since the Unix epoch, from the timestamps its
    /// messages carry: the stage breakdown of end-to-end latency.
    public struct Timing: Codable, Sendable, Equatable {
        /// The client published the request (its `x-nercc-sent-us` header), when it said.
        public var sentMicroseconds: Int64?
        /// The encoder received the request.
        public var receivedMicroseconds: Int64?
        /// The encoder encoded the batch and began publishing its tasks and manifest.
        public var encodedMicroseconds: Int64?
        /// The decoder received the batch's manifest.
        public var manifestReceivedMicroseconds: Int64?
        /// A worker received the decisive task: the one whose result completed the set decoded from.
        public var taskReceivedMicroseconds: Int64?
        /// That worker published the decisive result.
        public var resultSentMicroseconds: Int64?
        /// The decoder held the results it waits for (or the deadline passed).
        public var readyMicroseconds: Int64?
        /// The decoder finished decoding and began publishing.
        public var decodedMicroseconds: Int64?

        /// Creates a timing record.
        public init(
            sentMicroseconds: Int64? = nil, receivedMicroseconds: Int64? = nil, encodedMicroseconds: Int64? = nil,
            manifestReceivedMicroseconds: Int64? = nil, taskReceivedMicroseconds: Int64? = nil,
            resultSentMicroseconds: Int64? = nil,
            readyMicroseconds: Int64? = nil, decodedMicroseconds: Int64? = nil
        ) {
            self.sentMicroseconds = sentMicroseconds
            self.receivedMicroseconds = receivedMicroseconds
            self.encodedMicroseconds = encodedMicroseconds
            self.manifestReceivedMicroseconds = manifestReceivedMicroseconds
            self.taskReceivedMicroseconds = taskReceivedMicroseconds
            self.resultSentMicroseconds = resultSentMicroseconds
            self.readyMicroseconds = readyMicroseconds
            self.decodedMicroseconds = decodedMicroseconds
        }

        enum CodingKeys: String, CodingKey {
            case sentMicroseconds = "sent_us"
            case receivedMicroseconds = "received_us"
            case encodedMicroseconds = "encoded_us"
            case manifestReceivedMicroseconds = "manifest_received_us"
            case taskReceivedMicroseconds = "task_received_us"
            case resultSentMicroseconds = "result_sent_us"
            case readyMicroseconds = "ready_us"
            case decodedMicroseconds = "decoded_us"
        }
    }

    /// Wire-format major version.
    public var version: Int
    /// The request these predictions answer.
    public var requestID: String
    /// The model.
    public var model: String
    /// The batch that produced them.
    public var batchID: String
    /// `ok` or `degraded`.
    public var status: Status
    /// The scheme that coded the batch.
    public var scheme: String
    /// Results used to decode.
    public var received: Int
    /// Results the scheme waits for.
    public var needed: Int
    /// Number of queries in the whole request.
    public var requestQueries: Int
    /// The predictions of this part.
    public var predictions: [Prediction]
    /// N of the batch's code (tasks published).
    public var workers: Int?
    /// K of the batch's code: its slots, which are its real queries unless the encoder pads partial
    /// batches (`--partial-batches pad`).
    public var batchSize: Int?
    /// When each stage ended.
    public var timing: Timing?
    /// The coded indices whose results the decoder excluded as Byzantine, when the batch was decoded
    /// robustly (its manifest's `adversaries` > 0); absent otherwise.
    public var excluded: [Int]?

    /// Creates a record.
    public init(
        version: Int = WireFormat.version, requestID: String, model: String, batchID: String, status: Status,
        scheme: String, received: Int, needed: Int, requestQueries: Int, predictions: [Prediction],
        workers: Int? = nil, batchSize: Int? = nil, timing: Timing? = nil, excluded: [Int]? = nil
    ) {
        self.excluded = excluded
        self.workers = workers
        self.batchSize = batchSize
        self.timing = timing
        self.version = version
        self.requestID = requestID
        self.model = model
        self.batchID = batchID
        self.status = status
        self.scheme = scheme
        self.received = received
        self.needed = needed
        self.requestQueries = requestQueries
        self.predictions = predictions
    }

    enum CodingKeys: String, CodingKey {
        case version, model, status, scheme, received, needed, predictions, workers, timing, excluded
        case requestID = "request_id"
        case batchID = "batch_id"
        case requestQueries = "request_queries"
        case batchSize = "batch_size"
    }
}

/// An error answering a request that cannot be served (JSON body), sent to its `reply_to`.
public struct ErrorRecord: Codable, Sendable, Equatable {
    /// Wire-format major version.
    public var version: Int
    /// The request, when its id could be read.
    public var requestID: String?
    /// Stable code, e.g. `unknown-model`, `wrong-shape`, `non-finite`, `malformed-json`.
    public var code: String
    /// A message naming the problem.
    public var message: String

    /// Creates an error record.
    public init(version: Int = WireFormat.version, requestID: String?, code: String, message: String) {
        self.version = version
        self.requestID = requestID
        self.code = code
        self.message = message
    }

    enum CodingKeys: String, CodingKey {
        case version, code, message
        case requestID = "request_id"
    }
}
