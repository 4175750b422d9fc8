/// The encoder's description of one batch, sent to the decoder shard before the batch's tasks
/// (JSON body, AMQP `type` = ``WireFormat/MessageType/manifest``).
///
/// It says which request and query each of the k slots holds (k ≤ the encoder's K: a partial batch
/// has a code of its own size), how the batch was coded, how many results to wait for, and by when.
public struct BatchManifest: Codable, Sendable, Equatable {
    /// The coding scheme and its parameters, as the encoder used them.
    public struct Scheme: Codable, Sendable, Equatable {
        /// Scheme name (`uncoded`, `replication`, `parity`, `lcc`, `bacc`, `nercc`, `nercc-ag`).
        public var name: String
        /// N of this batch's code.
        public var workers: Int
        /// K of this batch's code: the number of slots.
        public var batchSize: Int
        /// λ_enc (nercc).
        public var lambdaEncoder: Double
        /// λ_dec (nercc).
        public var lambdaDecoder: Double
        /// S: results the decoder does not wait for (absent from encoders before codes adapted to the
        /// batch size; `workers − wait_for` then).
        public var stragglers: Int?
        /// r (replication).
        public var replicas: Int?
        /// G (parity).
        public var groupSize: Int?
        /// λ_dec by number of results received, from a calibration profile (nercc); the decoder uses the
        /// entry nearest to the count it received, and `lambda_dec` when this is absent.
        public var lambdaDecoderByReceived: [String: Double]?
        /// A: the Byzantine results the decoder finds and excludes (bacc, nercc, nercc-ag; absent
        /// means 0). The decoder uses the spline check for nercc and nercc-ag and ApproxIFER's
        /// locator for bacc; `wait_for` is at least the bound of that decoder.
        public var adversaries: Int?

        /// Creates a scheme description.
        public init(
            name: String, workers: Int, batchSize: Int, lambdaEncoder: Double = 0, lambdaDecoder: Double = 0,
            stragglers: Int? = nil, replicas: Int? = nil, groupSize: Int? = nil,
            lambdaDecoderByReceived: [String: Double]? = nil, adversaries: Int? = nil
        ) {
            self.adversaries = adversaries
            self.lambdaDecoderByReceived = lambdaDecoderByReceived
            self.stragglers = stragglers
            self.name = name
            self.workers = workers
            self.batchSize = batchSize
            self.lambdaEncoder = lambdaEncoder
            self.lambdaDecoder = lambdaDecoder
            self.replicas = replicas
            self.groupSize = groupSize
        }

        enum CodingKeys: String, CodingKey {
            case name, workers, replicas, stragglers, adversaries
            case batchSize = "batch_size"
            case lambdaEncoder = "lambda_enc"
            case lambdaDecoder = "lambda_dec"
            case groupSize = "group_size"
            case lambdaDecoderByReceived = "lambda_dec_by_received"
        }

        /// λ_dec for `received` results: the calibrated entry nearest to it, else `lambdaDecoder`.
        public func lambdaDecoder(received: Int) -> Double {
            let table = (lambdaDecoderByReceived ?? [:]).compactMap { key, value in Int(key).map { ($0, value) } }
            // Nearest calibrated count; a tie goes to the smaller count (the dictionary's order is
            // not stable across processes, so the rule must not depend on it).
            return table.min { (abs($0.0 - received), $0.0) < (abs($1.0 - received), $1.0) }?.1 ?? lambdaDecoder
        }
    }

    /// One of the K slots of the batch.
    public struct Member: Codable, Sendable, Equatable {
        /// The request the query came from.
        public var requestID: String
        /// The query's index within its request.
        public var index: Int
        /// How many queries the request has in all.
        public var requestQueries: Int
        /// Where to send the request's predictions, if the client asked.
        public var replyTo: String?
        /// The correlation id to answer with.
        public var correlationID: String?
        /// True for slots that repeat the last query to fill a partial batch; never answered.
        public var padding: Bool
        /// When the client published the request (its `x-nercc-sent-us` header), µs since the epoch.
        public var sentMicroseconds: Int64?
        /// When the encoder received the request, µs since the epoch.
        public var receivedMicroseconds: Int64?

        /// Creates a member.
        public init(
            requestID: String, index: Int, requestQueries: Int, replyTo: String? = nil, correlationID: String? = nil,
            padding: Bool = false, sentMicroseconds: Int64? = nil, receivedMicroseconds: Int64? = nil
        ) {
            self.sentMicroseconds = sentMicroseconds
            self.receivedMicroseconds = receivedMicroseconds
            self.requestID = requestID
            self.index = index
            self.requestQueries = requestQueries
            self.replyTo = replyTo
            self.correlationID = correlationID
            self.padding = padding
        }

        enum CodingKeys: String, CodingKey {
            case index, padding
            case sentMicroseconds = "sent_us"
            case receivedMicroseconds = "received_us"
            case requestID = "request_id"
            case requestQueries = "request_queries"
            case replyTo = "reply_to"
            case correlationID = "correlation_id"
        }
    }

    /// Copies of a batch that the encoder holds back (a hedged batch): a batch whose code decodes
    /// from any one result (`wait_for` = 1; a batch of one query) goes out as its first task only;
    /// if it is not decodable `after_ms` after it was encoded, the decoder sends a ``HedgeRequest``
    /// to `queue` and the encoder publishes the `tasks` it held back.
    public struct Hedge: Codable, Sendable, Equatable {
        /// The coded indices held back.
        public var tasks: [Int]
        /// The encoder's hedge queue (default exchange, routing key = queue name).
        public var queue: String
        /// Milliseconds after `encoded_us` at which the decoder asks for them.
        public var afterMilliseconds: Int64

        /// Creates a hedge description.
        public init(tasks: [Int], queue: String, afterMilliseconds: Int64) {
            self.tasks = tasks
            self.queue = queue
            self.afterMilliseconds = afterMilliseconds
        }

        enum CodingKeys: String, CodingKey {
            case tasks, queue
            case afterMilliseconds = "after_ms"
        }
    }

    /// Where to ask for tasks of the batch again: the encoder keeps every task it published for the
    /// batch (2 s) and publishes those a ``HedgeRequest`` names in its `tasks` again. The decoder
    /// asks once, for copies of tasks it has no result of (as many as it still waits for, and a
    /// spare), when a batch of an approximate scheme has held
    /// the results of its straggler wait's first stage a few milliseconds without becoming decodable:
    /// more than S of its tasks are late, and copies of them come back sooner than the late ones.
    public struct Resend: Codable, Sendable, Equatable {
        /// The encoder's hedge queue (default exchange, routing key = queue name).
        public var queue: String

        /// Creates a resend description.
        public init(queue: String) { self.queue = queue }
    }

    /// Wire-format major version.
    public var version: Int
    /// The batch id (deterministic: derived from the members).
    public var batchID: String
    /// The model.
    public var model: String
    /// How the batch was coded.
    public var scheme: Scheme
    /// Results the decoder waits for before decoding (N − S for the coded schemes).
    public var waitFor: Int
    /// When the encoder created the batch, ms since the Unix epoch.
    public var createdMilliseconds: Int64
    /// When the decoder stops waiting, ms since the Unix epoch.
    public var deadlineMilliseconds: Int64
    /// When the encoder encoded the batch and began publishing its tasks, µs since the Unix epoch.
    public var encodedMicroseconds: Int64?
    /// Output size m of the model (elements per row of a result).
    public var outputSize: Int
    /// R: queries per slot (absent: 1). A batch of R rows is R batches of the same code that share
    /// their tasks: task n carries the R coded queries of index n, one per row, and its result the R
    /// outputs. Member j sits in slot j mod K and row j / K, so `members` holds R·K entries.
    public var rows: Int?
    /// The model's class labels, when it names them.
    public var labels: [String]?
    /// The copies held back, when the batch is hedged (absent: every task was published at once).
    public var hedge: Hedge?
    /// Where to ask for the batch's tasks again (absent: the encoder does not keep them).
    public var resend: Resend?
    /// The R·K members: row 0's K slots in order of the data points α_0..α_{K−1}, then row 1's, ….
    public var members: [Member]

    /// Creates a manifest.
    public init(
        version: Int = WireFormat.version, batchID: String, model: String, scheme: Scheme, waitFor: Int,
        createdMilliseconds: Int64, deadlineMilliseconds: Int64, encodedMicroseconds: Int64? = nil, outputSize: Int,
        labels: [String]?, members: [Member], rows: Int? = nil, hedge: Hedge? = nil,
        resend: Resend? = nil
    ) {
        self.resend = resend
        self.hedge = hedge
        self.rows = rows
        self.encodedMicroseconds = encodedMicroseconds
        self.version = version
        self.batchID = batchID
        self.model = model
        self.scheme = scheme
        self.waitFor = waitFor
        self.createdMilliseconds = createdMilliseconds
        self.deadlineMilliseconds = deadlineMilliseconds
        self.outputSize = outputSize
        self.labels = labels
        self.members = members
    }

    /// R, the rows of the batch (1 when absent).
    public var rowCount: Int { rows ?? 1 }

    /// Where member `j` sits: its slot (data point) and row.
    public func position(ofMember j: Int) -> (slot: Int, row: Int) {
        Self.position(ofMember: j, batchSize: scheme.batchSize)
    }

    /// Where member `j` of a batch of K = `batchSize` slots sits: slot j mod K, row j / K.
    public static func position(ofMember j: Int, batchSize: Int) -> (slot: Int, row: Int) {
        (j % batchSize, j / batchSize)
    }

    enum CodingKeys: String, CodingKey {
        case version, model, scheme, members, labels, rows, hedge, resend
        case batchID = "batch_id"
        case waitFor = "wait_for"
        case createdMilliseconds = "created_ms"
        case deadlineMilliseconds = "deadline_ms"
        case encodedMicroseconds = "encoded_us"
        case outputSize = "output_size"
    }
}
