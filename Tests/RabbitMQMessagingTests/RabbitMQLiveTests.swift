import Foundation
import Messaging
import Testing

@testable import RabbitMQMessaging

#if canImport(Glibc)
    import Glibc
#endif

/// Integration tests against a real RabbitMQ node. They run only when the environment variable
/// `NERCC_AMQP_URL` names a broker (`ops/broker/start.sh` starts one; `ops/broker/env.sh` exports
/// the variable); otherwise Swift Testing reports the whole suite as skipped.
@Suite(
    .enabled(if: LiveBroker.url != nil, "set NERCC_AMQP_URL (e.g. via ops/broker/env.sh) to run against a live broker"),
    .serialized
)
struct RabbitMQLiveTests {
    /// Queues expire on the broker if a failing test leaves them behind.
    static let expiry: [String: HeaderValue] = ["x-expires": .int(300_000)]

    static func message(_ routingKey: String, _ text: String, exchange: String = "", mandatory: Bool = false)
        -> OutgoingMessage
    {
        OutgoingMessage(
            exchange: exchange, routingKey: routingKey, properties: MessageProperties(messageID: text),
            body: Array(text.utf8), mandatory: mandatory)
    }

    static func outcome(_ body: () async throws(MessagingError) -> Void) async -> Result<Void, MessagingError> {
        do throws(MessagingError) {
            try await body()
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    // MARK: - Topology

    @Test func declaresAQuorumTopologyWithDeadLetteringIdempotently() async throws {
        let exchange = LiveBroker.uniqueName("tasks")
        let deadExchange = LiveBroker.uniqueName("dead")
        let queue = LiveBroker.uniqueName("tasks")
        let deadQueue = LiveBroker.uniqueName("dead-letter")
        let topology = Topology(
            exchanges: [.init(name: exchange, type: "direct"), .init(name: deadExchange, type: "fanout")],
            queues: [
                .init(
                    name: queue,
                    arguments: Self.expiry.merging([
                        "x-queue-type": "quorum", "x-delivery-limit": .int(3),
                        "x-dead-letter-exchange": .string(deadExchange),
                    ]) { $1 }),
                .init(name: deadQueue, arguments: Self.expiry),
            ],
            bindings: [
                .init(queue: queue, exchange: exchange, routingKey: "model-a"),
                .init(queue: deadQueue, exchange: deadExchange, routingKey: ""),
            ])
        try await LiveBroker.withTransport { transport in
            try await transport.declare(topology)
            try await transport.declare(topology)
            #expect(transport.isReady)
            try await transport.publish(Self.message("model-a", "routed", exchange: exchange, mandatory: true))
            try await eventually("the message to reach the quorum queue") {
                try await transport.inspectQueue(queue).messageCount == 1
            }
            #expect(try await transport.deleteQueue(queue) == 1)
            _ = try await transport.deleteQueue(deadQueue)
            try await transport.deleteExchange(exchange)
            try await transport.deleteExchange(deadExchange)
            let error = await #expect(throws: MessagingError.self) { try await transport.inspectQueue(queue) }
            #expect(error?.kind == .notFound)
            #expect(error?.replyCode == 404)
        }
    }

    @Test func conflictingRedeclarationFailsWithPreconditionAndTheTransportKeepsWorking() async throws {
        let queue = LiveBroker.uniqueName("conflict")
        try await LiveBroker.withTransport { transport in
            let quorum = Topology.Queue(name: queue, arguments: Self.expiry.merging(["x-queue-type": "quorum"]) { $1 })
            try await transport.declare(Topology(queues: [quorum]))
            let classic = Topology.Queue(name: queue, arguments: Self.expiry)
            let error = await #expect(throws: MessagingError.self) {
                try await transport.declare(Topology(queues: [classic]))
            }
            #expect(error?.kind == .preconditionFailed)
            #expect(error?.replyCode == 406)
            #expect(error?.message.hasPrefix("cannot declare queue '\(queue)': PRECONDITION_FAILED") == true)
            #expect(error?.message.contains("\n") == false)
            #expect(error?.isRetryable == false)

            // The admin channel was reopened; publishing, consuming and declaring still work, and the
            // failed declaration was not remembered, so the transport is still ready.
            #expect(transport.isReady)
            try await transport.publish(Self.message(queue, "after the conflict"))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 5, consumerTag: "\(queue).consumer"))
            let deliveries = try await collector.waitFor(count: 1)
            #expect(deliveries[0].body == Array("after the conflict".utf8))
            try await transport.ack(deliveries[0].tag)
            try await transport.declare(Topology(queues: [quorum]))
            _ = try await transport.deleteQueue(queue)
        }
    }

    // MARK: - Publishing and consuming

    @Test func publishesWithConfirmsAndConsumesWithAcks() async throws {
        let queue = LiveBroker.uniqueName("work")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            for index in 1...3 {
                try await transport.publish(Self.message(queue, "job \(index)"))
            }
            #expect(try await transport.inspectQueue(queue).messageCount == 3)
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 10, consumerTag: "\(queue).consumer"))
            let deliveries = try await collector.waitFor(count: 3)
            #expect(deliveries.map { String(decoding: $0.body, as: UTF8.self) } == ["job 1", "job 2", "job 3"])
            #expect(
                deliveries.allSatisfy {
                    $0.queue == queue && !$0.redelivered && $0.tag.generation == transport.generation
                })
            for delivery in deliveries { try await transport.ack(delivery.tag) }
            try await transport.cancel(consumerTag: "\(queue).consumer")
            try await collector.waitForEnd()
            #expect(await collector.failure == nil)
        }
        // Unacknowledged messages return to the queue when their channel closes: none did.
        try await LiveBroker.withTransport { transport in
            #expect(try await transport.inspectQueue(queue).messageCount == 0)
            _ = try await transport.deleteQueue(queue)
        }
    }

    @Test func propertiesAndHeadersRoundTrip() async throws {
        let queue = LiveBroker.uniqueName("properties")
        let headers: [String: HeaderValue] = [
            "x-nercc-version": 1, "batch": "b-17", "slot": .int(-3), "scale": .double(0.125), "degraded": false,
            "raw": .bytes([0, 255, 7]), "deadline": .timestamp(1_700_000_000), "nothing": .void,
            "shape": .array([.int(2), .int(3)]),
            "nested": .table(["model": "mnist", "params": .table(["k": .int(4)])]),
        ]
        let properties = MessageProperties(
            contentType: "application/json", contentEncoding: "identity", messageID: "msg-1", correlationID: "corr-1",
            replyTo: "replies", timestamp: 1_700_000_123, expiration: "600000", type: "prediction", appID: "nercc-test",
            persistent: false, headers: headers)
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            try await transport.publish(
                OutgoingMessage(exchange: "", routingKey: queue, properties: properties, body: [1, 2, 3]))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 1, consumerTag: "\(queue).consumer"))
            let delivery = try await collector.waitFor(count: 1)[0]
            // The transport stamps the connection's user as user_id, which the broker checks.
            var stamped = properties
            stamped.userID = try RabbitMQURL(LiveBroker.url!).user
            #expect(delivery.properties == stamped)
            #expect(delivery.body == [1, 2, 3])
            #expect(delivery.exchange == "")
            #expect(delivery.routingKey == queue)
            try await transport.ack(delivery.tag)
            _ = try await transport.deleteQueue(queue)
        }
    }

    /// RabbitMQ refuses a `user_id` that is not the connection's user (what makes it trustworthy on
    /// a delivery): it closes the publishing channel, the publish fails with the broker's reason,
    /// and the transport reopens the channel and keeps working.
    @Test func aForeignUserIDIsRefusedByTheBroker() async throws {
        let queue = LiveBroker.uniqueName("user-id")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            do throws(MessagingError) {
                try await transport.publish(
                    OutgoingMessage(
                        exchange: "", routingKey: queue, properties: MessageProperties(userID: "someone-else"),
                        body: [1]))
                Issue.record("the broker accepted a user_id that is not the connection's user")
            } catch {
                #expect(error.replyCode == 406, "\(error)")
                #expect(error.message.contains("user_id property set to 'someone-else'"), "\(error.message)")
            }
            try await transport.publish(OutgoingMessage(exchange: "", routingKey: queue, body: [2]))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 1, consumerTag: "\(queue).consumer"))
            let delivery = try await collector.waitFor(count: 1)[0]
            #expect(delivery.body == [2])
            try await transport.ack(delivery.tag)
            _ = try await transport.deleteQueue(queue)
        }
    }

    @Test func bodiesLargerThanAFrameArriveIntact() async throws {
        let queue = LiveBroker.uniqueName("large")
        // Eight frames and a bit at the default frame size of 128 KiB.
        let body = (0..<(1_048_576 + 17)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            try await transport.publish(OutgoingMessage(exchange: "", routingKey: queue, body: body))
            try await transport.publish(OutgoingMessage(exchange: "", routingKey: queue, body: []))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 2, consumerTag: "\(queue).consumer"))
            let deliveries = try await collector.waitFor(count: 2)
            #expect(deliveries[0].body == body)
            #expect(deliveries[1].body.isEmpty)
            for delivery in deliveries { try await transport.ack(delivery.tag) }
            _ = try await transport.deleteQueue(queue)
        }
    }

    @Test func rejectWithoutRequeueDeadLetters() async throws {
        let deadExchange = LiveBroker.uniqueName("dlx")
        let queue = LiveBroker.uniqueName("poison")
        let deadQueue = LiveBroker.uniqueName("dead")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(
                Topology(
                    exchanges: [.init(name: deadExchange, type: "fanout")],
                    queues: [
                        .init(
                            name: queue,
                            arguments: Self.expiry.merging([
                                "x-queue-type": "quorum", "x-dead-letter-exchange": .string(deadExchange),
                            ]) { $1 }),
                        .init(name: deadQueue, arguments: Self.expiry),
                    ],
                    bindings: [.init(queue: deadQueue, exchange: deadExchange, routingKey: "")]))
            try await transport.publish(Self.message(queue, "bad input"))
            let work = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 1, consumerTag: "\(queue).consumer"))
            let delivery = try await work.waitFor(count: 1)[0]
            try await transport.reject(delivery.tag, requeue: false)

            let dead = DeliveryCollector.start(
                try await transport.consume(queue: deadQueue, prefetch: 1, consumerTag: "\(deadQueue).consumer"))
            let deadLettered = try await dead.waitFor(count: 1)[0]
            #expect(deadLettered.body == Array("bad input".utf8))
            guard case .array(let deaths)? = deadLettered.properties.headers["x-death"],
                case .table(let death)? = deaths.first
            else {
                Issue.record("no x-death header: \(deadLettered.properties.headers)")
                return
            }
            #expect(death["reason"] == .string("rejected"))
            #expect(death["queue"] == .string(queue))
            try await transport.ack(deadLettered.tag)
            #expect(try await transport.inspectQueue(queue).messageCount == 0)
            _ = try await transport.deleteQueue(queue)
            _ = try await transport.deleteQueue(deadQueue)
            try await transport.deleteExchange(deadExchange)
        }
    }

    @Test func mandatoryPublishToAnUnboundRoutingKeyIsUnroutable() async throws {
        let exchange = LiveBroker.uniqueName("routes")
        let queue = LiveBroker.uniqueName("bound")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(
                Topology(
                    exchanges: [.init(name: exchange, type: "direct", durable: false)],
                    queues: [.init(name: queue, arguments: Self.expiry)],
                    bindings: [.init(queue: queue, exchange: exchange, routingKey: "bound")]))
            // Several publishes in flight at once: only the unroutable mandatory one fails.
            async let routed: Void = transport.publish(Self.message("bound", "a", exchange: exchange, mandatory: true))
            async let unrouted = Self.outcome { () async throws(MessagingError) in
                try await transport.publish(Self.message("nobody-listens", "b", exchange: exchange, mandatory: true))
            }
            async let dropped: Void = transport.publish(Self.message("nobody-listens", "c", exchange: exchange))
            try await routed
            try await dropped
            let outcome = await unrouted
            let error = #expect(throws: MessagingError.self) { try outcome.get() }
            #expect(error?.kind == .unroutable)
            #expect(error?.replyCode == 312)
            #expect(error?.replyText == "NO_ROUTE")
            #expect(try await transport.inspectQueue(queue).messageCount == 1)
            _ = try await transport.deleteQueue(queue)
            try await transport.deleteExchange(exchange)
        }
    }

    @Test func publishingToAMissingExchangeFailsAndTheTransportKeepsWorking() async throws {
        let queue = LiveBroker.uniqueName("survivor")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            let missing = LiveBroker.uniqueName("missing")
            let error = await #expect(throws: MessagingError.self) {
                try await transport.publish(Self.message("k", "lost", exchange: missing))
            }
            #expect(error?.kind == .notFound)
            #expect(error?.replyCode == 404)
            try await transport.publish(Self.message(queue, "still fine"))
            #expect(try await transport.inspectQueue(queue).messageCount == 1)
            _ = try await transport.deleteQueue(queue)
        }
    }

    @Test func prefetchOneHoldsOnlyOneUnackedDelivery() async throws {
        let queue = LiveBroker.uniqueName("prefetch")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(
                Topology(queues: [.init(name: queue, arguments: Self.expiry.merging(["x-queue-type": "quorum"]) { $1 })]
                ))
            for index in 1...3 { try await transport.publish(Self.message(queue, "task \(index)")) }
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 1, consumerTag: "\(queue).consumer"))
            let first = try await collector.waitFor(count: 1)
            try await Task.sleep(for: .seconds(1))
            #expect(await collector.deliveries.count == 1)
            #expect(try await transport.inspectQueue(queue).messageCount == 2)
            try await transport.ack(first[0].tag)
            let second = try await collector.waitFor(count: 2)
            try await Task.sleep(for: .milliseconds(500))
            #expect(await collector.deliveries.count == 2)
            try await transport.ack(second[1].tag)
            let all = try await collector.waitFor(count: 3)
            try await transport.ack(all[2].tag)
            #expect(all.map { String(decoding: $0.body, as: UTF8.self) } == ["task 1", "task 2", "task 3"])
            _ = try await transport.deleteQueue(queue)
        }
    }

    @Test func manyConcurrentPublishesAreAllConfirmed() async throws {
        let queue = LiveBroker.uniqueName("burst")
        let count = 2000
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<count {
                    group.addTask { try await transport.publish(Self.message(queue, "message \(index)")) }
                }
                try await group.waitForAll()
            }
            let elapsed = ContinuousClock.now - started
            #expect(try await transport.inspectQueue(queue).messageCount == UInt32(count))
            #expect(try await transport.deleteQueue(queue) == UInt32(count))
            print("\(count) confirmed publishes in \(elapsed)")
        }
    }

    @Test func aBrokerCancelEndsTheStreamWithAnError() async throws {
        let queue = LiveBroker.uniqueName("deleted")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 1, consumerTag: "\(queue).consumer"))
            _ = try await transport.deleteQueue(queue)
            try await collector.waitForEnd()
            #expect(await collector.failure?.kind == .notFound)
            #expect(transport.isReady)
        }
    }

    @Test func consumingAMissingQueueFailsWithoutDisturbingOtherConsumers() async throws {
        let queue = LiveBroker.uniqueName("present")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 5, consumerTag: "\(queue).consumer"))
            let generation = transport.generation
            let error = await #expect(throws: MessagingError.self) {
                _ = try await transport.consume(
                    queue: LiveBroker.uniqueName("absent"), prefetch: 1, consumerTag: "absent.consumer")
            }
            #expect(error?.kind == .notFound)
            #expect(transport.generation == generation)
            try await transport.publish(Self.message(queue, "still consuming"))
            let delivery = try await collector.waitFor(count: 1)[0]
            try await transport.ack(delivery.tag)
            _ = try await transport.deleteQueue(queue)
        }
    }

    @Test func aChannelErrorOnTheConsumingChannelIsRecovered() async throws {
        let queue = LiveBroker.uniqueName("double-ack")
        try await LiveBroker.withTransport { transport in
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            try await transport.publish(Self.message(queue, "one"))
            try await transport.publish(Self.message(queue, "two"))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 10, consumerTag: "\(queue).consumer"))
            let first = try await collector.waitFor(count: 2)
            let generation = transport.generation

            // Acknowledging a tag twice is a channel error (PRECONDITION_FAILED - unknown delivery tag):
            // the broker closes the consuming channel and requeues its unacknowledged message.
            try await transport.ack(first[0].tag)
            try await transport.ack(first[0].tag)
            let deliveries = try await collector.waitFor(count: 3)
            #expect(transport.generation > generation)
            #expect(transport.isReady)
            let redelivered = deliveries[2]
            #expect(redelivered.body == Array("two".utf8))
            #expect(redelivered.redelivered)
            #expect(redelivered.tag.generation == transport.generation)

            // The stale tag of "two" is ignored; its new tag works; the consumer goes on.
            try await transport.ack(first[1].tag)
            try await transport.ack(redelivered.tag)
            try await transport.publish(Self.message(queue, "three"))
            let after = try await collector.waitFor(count: 4)[3]
            #expect(after.body == Array("three".utf8))
            try await transport.ack(after.tag)
            try await Task.sleep(for: .milliseconds(300))
            #expect(await collector.deliveries.count == 4)
            #expect(transport.generation == redelivered.tag.generation)
            _ = try await transport.deleteQueue(queue)
        }
    }

    // MARK: - Connecting

    @Test func aWrongPasswordFailsFastWithAuthentication() async throws {
        let good = try RabbitMQURL(LiveBroker.url!)
        var bad = good
        bad.password = "wrong-\(UUID().uuidString)"
        var configuration = try LiveBroker.configuration(name: "nercc-test-auth")
        configuration.url = bad
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        let started = ContinuousClock.now
        let error = await #expect(throws: MessagingError.self) { try await transport.connect() }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(error?.kind == .authentication)
        #expect(
            error?.message
                == "authentication failed for user '\(good.user)' on vhost '\(good.virtualHost)' at \(good.endpoint)")
        #expect(error?.replyCode == 403)
        #expect(error?.message.contains(bad.password) == false)
        #expect(error?.isRetryable == false)
        #expect(!transport.isReady)
    }

    @Test func aMissingVhostFailsFast() async throws {
        var url = try RabbitMQURL(LiveBroker.url!)
        url.virtualHost = LiveBroker.uniqueName("vhost")
        var configuration = try LiveBroker.configuration(name: "nercc-test-vhost")
        configuration.url = url
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        let error = await #expect(throws: MessagingError.self) { try await transport.connect() }
        #expect(error?.kind == .accessRefused)
        #expect(error?.replyCode == 530)
        #expect(error?.message.hasPrefix("vhost '\(url.virtualHost)' at \(url.endpoint) is not open to user") == true)
    }

    @Test func anUnreachableBrokerFailsFastAndRetriesOnlyWhenAsked() async throws {
        let port = Self.unusedPort()
        var url = try RabbitMQURL(LiveBroker.url!)
        url.host = "127.0.0.1"
        url.port = port
        var configuration = try LiveBroker.configuration(name: "nercc-test-unreachable")
        configuration.url = url
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        var started = ContinuousClock.now
        let error = await #expect(throws: MessagingError.self) { try await transport.connect() }
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(error?.kind == .unreachable)
        #expect(error?.message == "cannot reach RabbitMQ at 127.0.0.1:\(port): connection refused")
        #expect(error?.isRetryable == true)

        started = ContinuousClock.now
        let retried = await #expect(throws: MessagingError.self) {
            try await transport.connect(retryingFor: .seconds(1.5))
        }
        let elapsed = ContinuousClock.now - started
        #expect(retried?.kind == .unreachable)
        #expect(elapsed > .milliseconds(500) && elapsed < .seconds(3), "retried for \(elapsed)")
    }

    /// A list of nodes whose first refuses connections: the transport connects through the second,
    /// and after a lost connection it tries the first again, is refused, and is back through the
    /// second in the same round, without waiting out a backoff for the refused node.
    @Test func aClusterURLListFailsOverPastAnUnreachableNode() async throws {
        let good = try RabbitMQURL(LiveBroker.url!)
        var dead = good
        dead.host = "127.0.0.1"
        dead.port = Self.unusedPort()
        let queue = LiveBroker.uniqueName("failover")
        let name = "nercc-test-failover-\(UUID().uuidString.prefix(8))"
        var configuration = try LiveBroker.configuration(name: name)
        configuration.url = dead
        configuration.failoverURLs = [good]
        configuration.reconnectBackoff = .init(initialDelay: .seconds(1), maximumDelay: .seconds(2), jitter: 0)
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        try await transport.connect()
        defer { Task { await transport.close() } }
        try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
        let collector = DeliveryCollector.start(
            try await transport.consume(queue: queue, prefetch: 10, consumerTag: "\(queue).consumer"))
        try await transport.publish(Self.message(queue, "first"))
        let first = try await collector.waitFor(count: 1)[0]
        try await transport.ack(first.tag)
        let generation = transport.generation

        try await ManagementAPI().closeConnection(named: name)
        try await eventually("the transport to notice the closed connection", timeout: .seconds(5)) {
            !transport.isConnected
        }
        try await transport.publish(Self.message(queue, "second"))
        #expect(transport.generation > generation)
        let second = try await collector.waitFor(count: 2)[1]
        #expect(second.body == Array("second".utf8))
        try await transport.ack(second.tag)
        _ = try await transport.deleteQueue(queue)
    }

    // MARK: - Heartbeats and recovery

    @Test func heartbeatsAreServicedWhileTheConsumerBlocks() async throws {
        let queue = LiveBroker.uniqueName("heartbeat")
        let name = "nercc-test-heartbeat-\(UUID().uuidString.prefix(8))"
        try await LiveBroker.withTransport(name: name, heartbeat: 2) { transport in
            let record = try await ManagementAPI().connection(named: name)
            #expect(record["timeout"] as? Int == 2, "negotiated heartbeat: \(record["timeout"] ?? "none")")
            try await transport.declare(Topology(queues: [.init(name: queue, arguments: Self.expiry)]))
            try await transport.publish(Self.message(queue, "slow inference"))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 1, consumerTag: "\(queue).consumer"))
            let delivery = try await collector.waitFor(count: 1)[0]
            let generation = transport.generation

            // Compute for three heartbeat timeouts without yielding this thread: only the I/O thread
            // can keep the connection alive.
            usleep(6_000_000)

            #expect(transport.generation == generation, "the connection was re-established")
            #expect(transport.isReady)
            try await transport.ack(delivery.tag)
            try await Task.sleep(for: .milliseconds(500))
            #expect(await collector.deliveries.count == 1, "the message was redelivered")
        }
        try await LiveBroker.withTransport { transport in
            #expect(try await transport.inspectQueue(queue).messageCount == 0)
            _ = try await transport.deleteQueue(queue)
        }
    }

    @Test func reconnectsAfterTheBrokerClosesTheConnection() async throws {
        let queue = LiveBroker.uniqueName("recovery")
        let exclusive = LiveBroker.uniqueName("exclusive")
        let name = "nercc-test-reconnect-\(UUID().uuidString.prefix(8))"
        // A long first reconnect delay leaves a wide window in which the transport is disconnected.
        let configure: (inout RabbitMQConfiguration) -> Void = {
            $0.reconnectBackoff = .init(initialDelay: .seconds(1), maximumDelay: .seconds(2), jitter: 0)
        }
        try await LiveBroker.withTransport(name: name, configure: configure) { transport in
            try await transport.declare(
                Topology(queues: [
                    .init(name: queue, arguments: Self.expiry),
                    .init(name: exclusive, durable: false, exclusive: true, autoDelete: false),
                ]))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 10, consumerTag: "\(queue).consumer"))
            try await transport.publish(Self.message(queue, "before"))
            let before = try await collector.waitFor(count: 1)[0]
            let generation = transport.generation

            try await ManagementAPI().closeConnection(named: name)
            try await eventually("the transport to notice the closed connection", timeout: .seconds(5)) {
                !transport.isConnected
            }
            #expect(!transport.isReady)
            // Submitted while disconnected: the publish waits for the new connection, then is confirmed.
            let disconnected = ContinuousClock.now
            try await transport.publish(Self.message(queue, "during"))
            #expect(ContinuousClock.now - disconnected > .milliseconds(500))
            #expect(transport.generation > generation)
            #expect(transport.isReady)

            // The unacknowledged message comes back, redelivered, on the same stream.
            let deliveries = try await collector.waitFor(count: 3)
            let bodies = deliveries.map { String(decoding: $0.body, as: UTF8.self) }
            #expect(bodies[0] == "before")
            #expect(Set(bodies[1...]) == ["before", "during"])
            let redelivered = try #require(deliveries[1...].first { $0.body == Array("before".utf8) })
            #expect(redelivered.redelivered)
            #expect(redelivered.tag.generation > before.tag.generation)

            // Acknowledging the stale tag is a no-op; the new tags work.
            try await transport.ack(before.tag)
            for delivery in deliveries[1...] { try await transport.ack(delivery.tag) }
            try await transport.publish(Self.message(queue, "after"))
            let after = try await collector.waitFor(count: 4)[3]
            #expect(after.body == Array("after".utf8))
            try await transport.ack(after.tag)

            // The exclusive queue died with the old connection: it exists again only because the
            // topology was redeclared.
            _ = try await transport.inspectQueue(exclusive)
            try await Task.sleep(for: .milliseconds(300))
            #expect(await collector.deliveries.count == 4)
            _ = try await transport.deleteQueue(queue)
        }
    }

    @Test func givesUpAfterTheMaximumNumberOfReconnectAttempts() async throws {
        let vhost = LiveBroker.uniqueName("vhost")
        let management = try ManagementAPI()
        try await management.createVirtualHost(vhost)
        var url = try RabbitMQURL(LiveBroker.url!)
        url.virtualHost = vhost
        var configuration = try LiveBroker.configuration(name: "nercc-test-give-up")
        configuration.url = url
        configuration.maximumReconnectAttempts = 2
        configuration.reconnectBackoff = .init(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(100))
        let transport = RabbitMQTransport(configuration: configuration, logger: LiveBroker.logger)
        do {
            try await transport.connect()
            let queue = LiveBroker.uniqueName("doomed")
            try await transport.declare(Topology(queues: [.init(name: queue)]))
            let collector = DeliveryCollector.start(
                try await transport.consume(queue: queue, prefetch: 1, consumerTag: "\(queue).consumer"))

            // Deleting the vhost deletes the queue (the broker cancels the consumer) and closes the
            // connection; every reconnect fails, because the vhost is gone.
            try await management.deleteVirtualHost(vhost)
            try await collector.waitForEnd()
            #expect(await collector.failure?.kind == .notFound)
            try await eventually("the transport to give up", timeout: .seconds(10)) { transport.terminalError != nil }
            let failure = transport.terminalError
            #expect(failure?.kind == .connectionLost)
            #expect(failure?.isRetryable == false)
            #expect(
                failure?.message.hasPrefix("gave up reconnecting to RabbitMQ at \(url.endpoint) after 2 attempts")
                    == true)
            #expect(!transport.isReady)
            let error = await #expect(throws: MessagingError.self) {
                try await transport.publish(Self.message(queue, "too late"))
            }
            #expect(error == failure)
        } catch {
            try? await management.deleteVirtualHost(vhost)
            throw error
        }
        await transport.close()
    }

    @Test func closeFinishesStreamsAndRejectsLaterCalls() async throws {
        let queue = LiveBroker.uniqueName("closing")
        let transport = RabbitMQTransport(
            configuration: try LiveBroker.configuration(name: "nercc-test-close"), logger: LiveBroker.logger)
        try await transport.connect()
        try await transport.declare(
            Topology(queues: [.init(name: queue, autoDelete: true, arguments: Self.expiry)]))
        let collector = DeliveryCollector.start(
            try await transport.consume(queue: queue, prefetch: 1, consumerTag: "\(queue).consumer"))
        await transport.close()
        try await collector.waitForEnd(timeout: .seconds(2))
        #expect(await collector.failure == nil)
        #expect(!transport.isReady)
        let error = await #expect(throws: MessagingError.self) { try await transport.publish(Self.message(queue, "x")) }
        #expect(error?.kind == .closed)
        await transport.close()
    }

    /// A TCP port on 127.0.0.1 that nothing listens on (bound and released).
    static func unusedPort() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                _ = bind(descriptor, $0, length)
                _ = getsockname(descriptor, $0, &length)
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
