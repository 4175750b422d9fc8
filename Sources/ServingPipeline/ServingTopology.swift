import Messaging

/// The names and arguments of every exchange and queue of the system (DESIGN §3.2), with each
/// service's share of the topology. Every name is configurable; the defaults are what the shipped
/// `ops/rabbitmq/definitions.json` declares.
public struct ServingTopology: Sendable, Equatable {
    /// Where coded tasks and worker results travel.
    ///
    /// Both are redundant by construction — a lost task is one more straggler — so they need not pay
    /// for replication and disk. Requests, manifests and predictions are durable and confirmed
    /// either way.
    public enum CodedQueues: String, Sendable, CaseIterable {
        /// Durable classic queues (not replicated) holding transient messages: a broker restart
        /// drops the tasks and results in flight, and their batches decode from what arrives after,
        /// or time out.
        case classic
        /// Quorum queues holding persistent messages, with `x-delivery-limit`: they survive a broker
        /// restart, at the cost of a replicated, fsynced write per task and per result.
        case quorum
    }

    /// The kind of the task and worker-result queues, and whether their messages are persistent.
    public var codedQueues = CodedQueues.classic
    /// Whether tasks and results are published persistent (quorum queues) or transient (classic).
    public var codedMessagesArePersistent: Bool { codedQueues == .quorum }
    /// Direct exchange where clients publish requests (routing key = model name).
    public var requestsExchange = "nercc.requests"
    /// Prefix of the per-model request queues (`<prefix>.<model>`).
    public var requestsQueuePrefix = "nercc.requests"
    /// Alternate exchange of the requests exchange: requests for a model no queue is bound for
    /// land in its queue, where the encoder dead-letters them as `unknown-model`.
    public var unroutedExchange = "nercc.requests.unrouted"
    /// The queue of unroutable requests.
    public var unroutedQueue = "nercc.requests.unrouted"
    /// Direct exchange of coded tasks (routing key = model name).
    public var tasksExchange = "nercc.tasks"
    /// Prefix of the per-model task queues (`<prefix>.<model>`).
    public var tasksQueuePrefix = "nercc.tasks"
    /// Direct exchange of manifests (routing key = shard number).
    public var resultsExchange = "nercc.results"
    /// Prefix of the decoder shard queues of manifests (`<prefix>.<shard>`).
    public var resultsQueuePrefix = "nercc.results"
    /// Prefix of the decoder shard queues of worker results (`<prefix>.<shard>`): the `reply_to` of
    /// every task.
    public var workerResultsQueuePrefix = "nercc.worker-results"
    /// Fanout exchange of cancellation notices (decoder → every worker).
    public var cancelExchange = "nercc.cancel"
    /// Prefix of the workers' own cancellation queues (`<prefix>.<worker id>`).
    public var cancelQueuePrefix = "nercc.cancel"
    /// Prefix of the encoders' own hedge queues (`<prefix>.<encoder id>`), where decoders ask for
    /// the copies of hedged batches.
    public var hedgeQueuePrefix = "nercc.hedge"
    /// Number of decoder shards.
    public var shards = 1
    /// The replicas of every quorum queue (`x-quorum-initial-group-size`), for a cluster; nil leaves
    /// it to the broker, which makes every cluster node a member. Only a queue's creation reads it,
    /// but RabbitMQ compares it on every redeclaration, so every service and the definitions file
    /// must agree.
    public var quorumGroupSize: Int?
    /// Topic exchange of predictions (routing key `<model>.<request id>`).
    public var predictionsExchange = "nercc.predictions"
    /// Fanout exchange of rejected and poison messages.
    public var deadExchange = "nercc.dead"
    /// The queue that keeps them.
    public var deadLetterQueue = "nercc.dead-letter"
    /// Deliveries of a task or request before it is dead-lettered as poison.
    public var deliveryLimit: Int64 = 5

    /// The defaults.
    public init() {}

    /// The request queue of a model.
    public func requestsQueue(model: String) -> String { "\(requestsQueuePrefix).\(model)" }
    /// The task queue of a model.
    public func tasksQueue(model: String) -> String { "\(tasksQueuePrefix).\(model)" }
    /// The manifest queue of a decoder shard.
    public func resultsQueue(shard: Int) -> String { "\(resultsQueuePrefix).\(shard)" }
    /// The worker-result queue of a decoder shard (the `reply_to` of its tasks).
    public func workerResultsQueue(shard: Int) -> String { "\(workerResultsQueuePrefix).\(shard)" }
    /// A worker's own queue of cancellation notices.
    public func cancelQueue(worker: String) -> String { "\(cancelQueuePrefix).\(worker)" }
    /// An encoder's own hedge queue.
    public func hedgeQueue(encoder: String) -> String { "\(hedgeQueuePrefix).\(encoder)" }

    /// How long a cancellation notice is kept for a worker that has not read it: past this, the
    /// tasks it names have long been taken or passed their deadline.
    public static let cancelNoticeTTLMilliseconds: Int64 = 10_000
    /// Most notices a worker's cancellation queue holds (older ones are dropped first).
    public static let cancelQueueLength: Int64 = 10_000
    /// A worker's cancellation queue is deleted after this long without a consumer (ms).
    public static let cancelQueueExpiry: Int64 = 60_000
    /// How long a hedge request is kept for an encoder that has not read it (ms): past this, the
    /// copies it asks for have expired in the encoder.
    public static let hedgeRequestTTLMilliseconds: Int64 = 2_000

    /// An encoder's hedge queue: classic, transient, deleted once its encoder is gone (auto-delete,
    /// and `x-expires` for an encoder that never consumed); no binding: decoders publish to it
    /// through the default exchange.
    public func hedges(encoder: String) -> Topology {
        Topology(queues: [
            // Not exclusive, for the reason given for the cancellation queues.
            .init(
                name: hedgeQueue(encoder: encoder), durable: false, exclusive: false, autoDelete: true,
                arguments: [
                    "x-queue-type": "classic", "x-message-ttl": .int(Self.hedgeRequestTTLMilliseconds),
                    "x-max-length": .int(Self.cancelQueueLength), "x-expires": .int(Self.cancelQueueExpiry),
                ])
        ])
    }

    /// The decoder shard of a request: a stable hash of its request id (FNV-1a). The encoder batches
    /// the queries of each shard apart, so every batch a query ever lands in — and every message of
    /// that batch — reaches the same decoder, whatever the broker does.
    public func shard(of requestID: String) -> Int {
        Int(StableHash.fnv1a(requestID) % UInt64(max(shards, 1)))
    }

    private func quorum(_ name: String, extra: [String: HeaderValue] = [:]) -> Topology.Queue {
        var arguments: [String: HeaderValue] = [
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": .string(deadExchange),
            "x-delivery-limit": .int(deliveryLimit),
        ]
        arguments.merge(extra) { $1 }
        arguments.merge(quorumGroup) { $1 }
        return Topology.Queue(name: name, arguments: arguments)
    }

    /// `x-quorum-initial-group-size` when ``quorumGroupSize`` is set.
    private var quorumGroup: [String: HeaderValue] {
        quorumGroupSize.map { ["x-quorum-initial-group-size": .int(Int64($0))] } ?? [:]
    }

    private var deadLetters: Topology {
        Topology(
            exchanges: [.init(name: deadExchange, type: "fanout")],
            queues: [.init(name: deadLetterQueue, arguments: ["x-queue-type": "quorum"].merging(quorumGroup) { $1 })],
            bindings: [.init(queue: deadLetterQueue, exchange: deadExchange, routingKey: "")])
    }

    /// A queue of coded messages (tasks or worker results), of the ``codedQueues`` kind.
    private func coded(_ name: String, extra: [String: HeaderValue] = [:]) -> Topology.Queue {
        switch codedQueues {
        case .quorum:
            return quorum(name, extra: extra)
        case .classic:
            var arguments: [String: HeaderValue] = [
                "x-queue-type": "classic", "x-dead-letter-exchange": .string(deadExchange),
            ]
            arguments.merge(extra) { $1 }
            return Topology.Queue(name: name, arguments: arguments)
        }
    }

    private func shardQueues() -> Topology {
        Topology(
            exchanges: [.init(name: resultsExchange, type: "direct")],
            queues: (0..<shards).flatMap {
                [
                    quorum(resultsQueue(shard: $0), extra: ["x-single-active-consumer": true]),
                    coded(workerResultsQueue(shard: $0), extra: ["x-single-active-consumer": true]),
                ]
            },
            bindings: (0..<shards).map {
                .init(queue: resultsQueue(shard: $0), exchange: resultsExchange, routingKey: "\($0)")
            })
    }

    /// A model's task queue, bound to the tasks exchange.
    public func taskQueue(model: String) -> Topology {
        Topology(
            exchanges: [.init(name: tasksExchange, type: "direct")],
            queues: [coded(tasksQueue(model: model))],
            bindings: [.init(queue: tasksQueue(model: model), exchange: tasksExchange, routingKey: model)])
    }

    /// What an encoder for these models declares: request queues (its input), task queues and
    /// decoder shards (its outputs), and the dead letters.
    public func encoder(models: [String]) -> Topology {
        var t = deadLetters.merged(with: shardQueues())
        t = t.merged(
            with: Topology(
                exchanges: [
                    .init(name: unroutedExchange, type: "fanout"),
                    .init(
                        name: requestsExchange, type: "direct",
                        arguments: ["alternate-exchange": .string(unroutedExchange)]),
                ],
                queues: [quorum(unroutedQueue)],
                bindings: [.init(queue: unroutedQueue, exchange: unroutedExchange, routingKey: "")]))
        for model in models {
            t = t.merged(with: taskQueue(model: model))
            t = t.merged(
                with: Topology(
                    queues: [quorum(requestsQueue(model: model))],
                    bindings: [.init(queue: requestsQueue(model: model), exchange: requestsExchange, routingKey: model)]
                ))
        }
        return t
    }

    /// What a worker declares: its models' task queues, its own cancellation queue (auto-delete, so
    /// it goes away with the worker) bound to the cancellation exchange when it follows
    /// cancellations, and the dead letters.
    public func worker(models: [String], workerID: String, followsCancellations: Bool = true) -> Topology {
        var t = followsCancellations ? deadLetters.merged(with: cancellations(worker: workerID)) : deadLetters
        for model in models { t = t.merged(with: taskQueue(model: model)) }
        return t
    }

    private func cancellations(worker: String) -> Topology {
        let queue = cancelQueue(worker: worker)
        return Topology(
            exchanges: [.init(name: cancelExchange, type: "fanout")],
            queues: [
                // Not exclusive: after a lost connection the broker may not have noticed the old one
                // yet, and redeclaring an exclusive queue would fail (RESOURCE_LOCKED). Auto-delete and
                // x-expires remove it once its worker is gone.
                .init(
                    name: queue, durable: false, exclusive: false, autoDelete: true,
                    arguments: [
                        "x-queue-type": "classic", "x-message-ttl": .int(Self.cancelNoticeTTLMilliseconds),
                        "x-max-length": .int(Self.cancelQueueLength), "x-expires": .int(Self.cancelQueueExpiry),
                    ])
            ],
            bindings: [.init(queue: queue, exchange: cancelExchange, routingKey: "")])
    }

    /// What a decoder declares: the shard queues, the predictions and cancellation exchanges and the
    /// dead letters.
    public func decoder() -> Topology {
        deadLetters.merged(with: shardQueues()).merged(
            with: Topology(
                exchanges: [
                    .init(name: predictionsExchange, type: "topic"), .init(name: cancelExchange, type: "fanout"),
                ]))
    }
}

/// Stable 64-bit hashes (the standard library's `Hasher` is seeded per process).
public enum StableHash {
    /// FNV-1a over the UTF-8 bytes.
    public static func fnv1a(_ text: String, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var h = seed
        for b in text.utf8 {
            h ^= UInt64(b)
            h &*= 0x100_0000_01b3
        }
        return h
    }

    /// A 128-bit identifier as 32 hex digits: two FNV-1a hashes with different seeds.
    public static func identifier(_ text: String) -> String {
        let a = fnv1a(text)
        let b = fnv1a(text, seed: 0x8422_2325_cbf2_9ce4 ^ 0x9E37_79B9_7F4A_7C15)
        return hex(a) + hex(b)
    }

    private static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
