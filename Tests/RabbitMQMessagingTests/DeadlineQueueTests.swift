import Testing

@testable import RabbitMQMessaging

@Suite struct DeadlineQueueTests {
    static let t0 = ContinuousClock.now

    /// Elements are their deadlines in milliseconds after t0.
    static func queue(_ deadlines: [Int]) -> DeadlineQueue<Int> {
        var queue = DeadlineQueue<Int> { t0 + .milliseconds($0) }
        queue.append(contentsOf: deadlines)
        return queue
    }

    @Test func elementsLeaveInOrderAndTheFrontHasTheEarliestDeadline() {
        var queue = Self.queue([10, 20, 30])
        #expect(queue.count == 3)
        #expect(queue.earliestDeadline == Self.t0 + .milliseconds(10))
        let first = queue.popFirst()
        #expect(first == 10)
        #expect(queue.earliestDeadline == Self.t0 + .milliseconds(20))
        queue.append(40)
        let rest = queue.removeAll()
        #expect(rest == [20, 30, 40])
        #expect(queue.isEmpty)
        #expect(queue.earliestDeadline == nil)
        let none = queue.popFirst()
        #expect(none == nil)
    }

    @Test func expiryRemovesExactlyTheElementsPastTheirDeadline() {
        var queue = Self.queue([10, 20, 30, 40])
        let early = queue.expire(now: Self.t0 + .milliseconds(5))
        #expect(early.isEmpty)
        let due = queue.expire(now: Self.t0 + .milliseconds(20))
        #expect(due == [10, 20])
        #expect(queue.count == 2)
        let next = queue.popFirst()
        #expect(next == 30)
        let last = queue.expire(now: Self.t0 + .seconds(1))
        #expect(last == [40])
        #expect(queue.isEmpty)
    }

    @Test func manyTakesKeepTheOrder() {
        var queue = DeadlineQueue<Int> { _ in Self.t0 }
        var taken: [Int] = []
        for i in 0..<5_000 {
            queue.append(i)
            if i % 3 != 0, let element = queue.popFirst() { taken.append(element) }
        }
        taken += queue.removeAll()
        #expect(taken == Array(0..<5_000))
    }
}
