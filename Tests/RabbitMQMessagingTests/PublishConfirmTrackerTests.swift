import Testing

@testable import RabbitMQMessaging

@Suite struct PublishConfirmTrackerTests {
    typealias Tracker = PublishConfirmTracker<Int>

    static let start = ContinuousClock.now

    static func entry(
        _ id: Int, exchange: String = "x", routingKey: String = "k", mandatory: Bool = false, body: [UInt8] = [],
        deadlineOffset: Duration = .seconds(30)
    ) -> Tracker.Entry {
        Tracker.Entry(
            waiter: id, exchange: exchange, routingKey: routingKey, mandatory: mandatory, messageID: nil, body: body,
            deadline: start + deadlineOffset)
    }

    @Test func sequenceNumbersStartAtOne() {
        var tracker = Tracker()
        #expect(tracker.recordPublished(Self.entry(10)) == 1)
        #expect(tracker.recordPublished(Self.entry(11)) == 2)
        #expect(tracker.outstanding == 2)
    }

    @Test func singleAcksSettleOnlyTheirTag() {
        var tracker = Tracker()
        for id in 1...3 { _ = tracker.recordPublished(Self.entry(id)) }
        let settled = tracker.settle(deliveryTag: 2, multiple: false, acked: true)
        #expect(settled.map(\.0) == [2])
        #expect(settled.map(\.1) == [.confirmed])
        #expect(tracker.outstanding == 2)
    }

    @Test func multipleAcksSettleEverythingUpToTheTag() {
        var tracker = Tracker()
        for id in 1...5 { _ = tracker.recordPublished(Self.entry(id)) }
        _ = tracker.settle(deliveryTag: 2, multiple: false, acked: true)
        let settled = tracker.settle(deliveryTag: 4, multiple: true, acked: true)
        #expect(settled.map(\.0) == [1, 3, 4])
        #expect(tracker.outstanding == 1)
        #expect(tracker.settle(deliveryTag: 4, multiple: true, acked: true).isEmpty)
    }

    @Test func nacksFailThePublishes() {
        var tracker = Tracker()
        for id in 1...3 { _ = tracker.recordPublished(Self.entry(id)) }
        let settled = tracker.settle(deliveryTag: 3, multiple: true, acked: false)
        #expect(settled.map(\.1) == [.nacked, .nacked, .nacked])
    }

    @Test func returnsMatchTheOldestOutstandingMandatoryPublish() {
        var tracker = Tracker()
        _ = tracker.recordPublished(Self.entry(1, routingKey: "a", mandatory: true, body: [1]))
        _ = tracker.recordPublished(Self.entry(2, routingKey: "nowhere", mandatory: false, body: [1]))
        _ = tracker.recordPublished(Self.entry(3, routingKey: "nowhere", mandatory: true, body: [1]))
        _ = tracker.recordPublished(Self.entry(4, routingKey: "nowhere", mandatory: true, body: [1]))
        let matched = tracker.markReturned(
            exchange: "x", routingKey: "nowhere", messageID: nil, body: [1], replyCode: 312, replyText: "NO_ROUTE")
        #expect(matched)
        let settled = tracker.settle(deliveryTag: 4, multiple: true, acked: true)
        #expect(settled.map(\.0) == [1, 2, 3, 4])
        #expect(
            settled.map(\.1) == [.confirmed, .confirmed, .returned(replyCode: 312, replyText: "NO_ROUTE"), .confirmed])
    }

    @Test func returnsThatMatchNothingAreReported() {
        var tracker = Tracker()
        _ = tracker.recordPublished(Self.entry(1, mandatory: true, body: [1]))
        let matched = tracker.markReturned(
            exchange: "x", routingKey: "k", messageID: nil, body: [2], replyCode: 312, replyText: "NO_ROUTE")
        #expect(!matched)
    }

    @Test func expiryRemovesOnlyPublishesPastTheirDeadline() {
        var tracker = Tracker()
        _ = tracker.recordPublished(Self.entry(1, deadlineOffset: .seconds(1)))
        _ = tracker.recordPublished(Self.entry(2, deadlineOffset: .seconds(2)))
        _ = tracker.recordPublished(Self.entry(3, deadlineOffset: .seconds(3)))
        #expect(tracker.earliestDeadline == Self.start + .seconds(1))
        #expect(tracker.expire(now: Self.start + .milliseconds(2500)) == [1, 2])
        #expect(tracker.earliestDeadline == Self.start + .seconds(3))
        // A late ack for an expired publish is ignored.
        #expect(tracker.settle(deliveryTag: 1, multiple: false, acked: true).isEmpty)
        #expect(tracker.settle(deliveryTag: 3, multiple: true, acked: true).map(\.0) == [3])
    }

    @Test func resetReturnsEverythingAndRestartsNumbering() {
        var tracker = Tracker()
        for id in 1...3 { _ = tracker.recordPublished(Self.entry(id)) }
        _ = tracker.settle(deliveryTag: 2, multiple: false, acked: true)
        #expect(tracker.reset().map(\.waiter) == [1, 3])
        #expect(tracker.outstanding == 0)
        #expect(tracker.recordPublished(Self.entry(9)) == 1)
    }

    @Test func aChannelCloseFor404BlamesThePublishesToExchangesNotKnownToExist() {
        var tracker = Tracker()
        // "live" accepted a publish, "declared" was declared; "" and amq.* always exist.
        _ = tracker.recordPublished(Self.entry(1, exchange: "live"))
        _ = tracker.settle(deliveryTag: 1, multiple: false, acked: true)
        tracker.exchangeExists("declared")
        for (id, exchange) in [(2, "live"), (3, "missing"), (4, "declared"), (5, ""), (6, "amq.topic")] {
            _ = tracker.recordPublished(Self.entry(id, exchange: exchange))
        }
        let closed = tracker.channelClosed(code: 404)
        #expect(closed.map(\.entry.waiter) == [2, 3, 4, 5, 6])
        #expect(closed.map(\.blamed) == [false, true, false, false, false])
        #expect(tracker.outstanding == 0)
        // Knowledge of the exchanges involved is gone: if "live" was deleted meanwhile, the retry of
        // its publish is blamed on the next close (the default exchange stays known).
        _ = tracker.recordPublished(Self.entry(7, exchange: "live"))
        _ = tracker.recordPublished(Self.entry(8, exchange: ""))
        let retried = tracker.channelClosed(code: 404)
        #expect(retried.map(\.blamed) == [true, false])
        // A deleted exchange is no longer known.
        tracker.exchangeExists("gone")
        tracker.exchangeDeleted("gone")
        #expect(!tracker.isKnown(exchange: "gone"))
    }

    @Test func otherChannelClosesBlameNoPublishAndKeepWhatIsKnown() {
        var tracker = Tracker()
        _ = tracker.recordPublished(Self.entry(1, exchange: "missing"))
        tracker.exchangeExists("kept")
        _ = tracker.recordPublished(Self.entry(2, exchange: "kept"))
        let otherClose = tracker.channelClosed(code: 406)
        #expect(otherClose.map(\.blamed) == [false, false])
        #expect(tracker.isKnown(exchange: "kept"))
        // A 403 (no write permission on the exchange) blames like a 404.
        _ = tracker.recordPublished(Self.entry(3, exchange: "forbidden"))
        let forbidden = tracker.channelClosed(code: 403)
        #expect(forbidden.map(\.blamed) == [true])
    }

    @Test func manyInterleavedConfirmsSettleEachPublishExactlyOnce() {
        var tracker = Tracker()
        var generator = SystemRandomNumberGenerator()
        for id in 1...2000 { _ = tracker.recordPublished(Self.entry(id)) }
        var settled: [Int] = []
        var pending = Array(1...2000)
        while !pending.isEmpty {
            let index = Int.random(in: 0..<pending.count, using: &generator)
            let tag = pending[index]
            let multiple = Bool.random(using: &generator)
            let result = tracker.settle(deliveryTag: UInt64(tag), multiple: multiple, acked: true)
            settled += result.map(\.0)
            let done = Set(result.map(\.0))
            pending.removeAll { done.contains($0) }
        }
        #expect(settled.sorted() == Array(1...2000))
        #expect(tracker.outstanding == 0)
    }
}
