import Testing

@testable import RabbitMQMessaging

@Suite struct ConsumerRegistryTests {
    @Test func consumersKeepTheirStartOrderAndATagIsUsedOnce() {
        var registry = ConsumerRegistry<String>()
        let added = [registry.add("a", "queue-a"), registry.add("b", "queue-b"), registry.add("c", "queue-c")]
        #expect(added == [true, true, true])
        let again = registry.add("b", "other")
        #expect(!again)
        #expect(registry.request(for: "b") == "queue-b")
        #expect(registry.activeTags == ["a", "b", "c"])
        let removed = registry.remove("a")
        #expect(removed == "queue-a")
        let removedAgain = registry.remove("a")
        #expect(removedAgain == nil)
        #expect(registry.activeTags == ["b", "c"])
        #expect(registry.count == 2)
    }

    @Test func aCancelledConsumerStillTakesDeliveriesUntilItIsRemoved() {
        var registry = ConsumerRegistry<String>()
        _ = registry.add("a", "queue-a")
        _ = registry.add("b", "queue-b")
        let cancelledNow = registry.markCancelled("a")
        #expect(cancelledNow)
        // Cancelled once only, and no longer active: not re-registered or cancelled again.
        let cancelledAgain = registry.markCancelled("a")
        let cancelledMissing = registry.markCancelled("missing")
        #expect(!cancelledAgain && !cancelledMissing)
        #expect(registry.active("a") == nil)
        #expect(registry.activeTags == ["b"])
        // Deliveries sent before the cancel-ok still find it.
        #expect(registry.request(for: "a") == "queue-a")
        #expect(registry.contains("a"))
        let cancelled = registry.removeCancelled()
        #expect(cancelled == ["queue-a"])
        #expect(!registry.contains("a"))
        let rest = registry.removeAll()
        #expect(rest == ["queue-b"])
        #expect(registry.count == 0)
    }
}
