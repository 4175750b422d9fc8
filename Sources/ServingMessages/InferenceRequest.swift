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

    /// Creates a record.
    public init(
        version: Int = WireFormat.version, requestID: String, model: String, batchID: String, status: Status,
        scheme: String, received: Int, needed: Int, requestQueries: Int, predictions: [Prediction]
    ) {
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
        case version, model, status, scheme, received, needed, predictions
        case requestID = "request_id"
        case batchID = "batch_id"
        case requestQueries = "request_queries"
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
