import Messaging
import ServingMessages
import ServingPipeline
import Testing

@Suite struct QueryBatcherTests {
    static func queries(_ request: String, count: Int, tag: UInt64) -> [PendingQuery] {
        (0..<count).map {
            PendingQuery(
                member: .init(requestID: request, index: $0, requestQueries: count), values: [Float($0)],
                tag: DeliveryTag(generation: 1, value: tag))
        }
    }

    @Test func emitsAFullBatchAsSoonAsKQueriesArrive() {
        var batcher = QueryBatcher(batchSize: 4, maximumWaitMilliseconds: 50)
        #expect(batcher.add(Self.queries("a", count: 3, tag: 1), now: 0).isEmpty)
        let ready = batcher.add(Self.queries("b", count: 2, tag: 2), now: 10)
        #expect(ready.count == 1)
        #expect(ready[0].queries.map(\.member.requestID) == ["a", "a", "a", "b"])
        #expect(batcher.pendingCount == 1)
    }

    @Test func flushesAPartialBatchAfterTheMaximumWaitPaddedWithTheLastQuery() {
        var batcher = QueryBatcher(batchSize: 4, maximumWaitMilliseconds: 50)
        _ = batcher.add(Self.queries("a", count: 2, tag: 1), now: 100)
        #expect(batcher.flushIfDue(now: 149) == nil)
        guard let batch = batcher.flushIfDue(now: 150) else {
            Issue.record("the partial batch was not flushed")
            return
        }
        #expect(batch.queries.count == 4)
        #expect(batch.queries.map(\.member.padding) == [false, false, true, true])
        #expect(batch.queries[3].values == batch.queries[1].values)
        #expect(batch.shares == [DeliveryTag(generation: 1, value: 1): 2])
    }

    @Test func acknowledgesARequestOnlyWhenAllItsBatchesAreConfirmed() {
        var batcher = QueryBatcher(batchSize: 2, maximumWaitMilliseconds: 50)
        let first = batcher.add(Self.queries("a", count: 3, tag: 7), now: 0)
        #expect(first.count == 1)
        let second = batcher.add(Self.queries("b", count: 1, tag: 8), now: 0)
        #expect(second.count == 1)
        #expect(batcher.batchConfirmed(second[0]).map(\.value) == [8])
        #expect(batcher.batchConfirmed(first[0]).map(\.value) == [7])
    }

    @Test func aFailedBatchGivesItsRequestsBackAndTheyAreNeverAckedLater() {
        var batcher = QueryBatcher(batchSize: 2, maximumWaitMilliseconds: 50)
        let batches = batcher.add(Self.queries("a", count: 4, tag: 3), now: 0)
        #expect(batcher.batchFailed(batches[0]).map(\.value) == [3])
        #expect(batcher.batchConfirmed(batches[1]).isEmpty)
        #expect(batcher.outstandingRequests == 0)
    }
}

@Suite struct RequestValidatorTests {
    static func delivery(_ body: String) -> Delivery {
        Delivery(
            tag: DeliveryTag(generation: 1, value: 1), redelivered: false, exchange: "nercc.requests",
            routingKey: "m", queue: "q", properties: MessageProperties(messageID: "id-1"), body: Array(body.utf8))
    }

    @Test func oversizeBodiesAreRefusedBeforeParsing() {
        let validator = RequestValidator(inputSizes: ["m": 2], maximumBodyBytes: 16)
        let result = validator.validate(Self.delivery("{\"version\": 1, \"model\": \"m\", \"queries\": [[1, 2]]}"))
        guard case .failure(let error) = result else {
            Issue.record("an oversize body was accepted")
            return
        }
        #expect(error.code == .oversize)
        #expect(error.message.contains("limit is 16"))
    }

    @Test func theRequestIDComesFromTheBodyThenTheMessageID() throws {
        let validator = RequestValidator(inputSizes: ["m": 2])
        let named = validator.validate(
            Self.delivery("{\"version\": 1, \"request_id\": \"mine\", \"model\": \"m\", \"queries\": [[1, 2]]}"))
        #expect((try? named.get())?.requestID == "mine")
        let unnamed = validator.validate(Self.delivery("{\"version\": 1, \"model\": \"m\", \"queries\": [[1, 2]]}"))
        #expect((try? unnamed.get())?.requestID == "id-1")
    }
}
