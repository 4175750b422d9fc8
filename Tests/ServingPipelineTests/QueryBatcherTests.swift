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

    @Test func aPartialBatchGoesAtOnceWithoutPaddingWhenQueriesArriveTooSlowlyToFillIt() {
        var batcher = QueryBatcher(batchSize: 4, maximumWaitMilliseconds: 50)
        // The first arrival gives no rate yet: waiting is not known to pay off.
        _ = batcher.add(Self.queries("a", count: 1, tag: 1), now: 0)
        #expect(batcher.partialBatchDecision(now: 0) == .flushNow)
        // One query every 100 ms cannot fill three more slots within 50 ms.
        _ = batcher.add(Self.queries("b", count: 1, tag: 2), now: 100)
        #expect(batcher.partialBatchDecision(now: 100) == .flushNow)
        let batch = batcher.flushIfDue(now: 100).first
        #expect(batcher.flushIfDue(now: 100).isEmpty)
        #expect(batch?.queries.map(\.member.requestID) == ["a", "b"])
        #expect(batch?.queries.allSatisfy { !$0.member.padding } == true)
        #expect(batch?.openedMilliseconds == 0)
        #expect(batcher.partialBatchDecision(now: 100) == .nothing)
    }

    @Test func aPartialBatchWaitsOnlyWhileTheArrivalRatePredictsItFillsInTime() {
        var batcher = QueryBatcher(batchSize: 4, maximumWaitMilliseconds: 10)
        // One query per millisecond: the two missing queries are expected within 2 ms.
        _ = batcher.add(Self.queries("a", count: 1, tag: 1), now: 100)
        _ = batcher.add(Self.queries("b", count: 1, tag: 2), now: 101)
        #expect(batcher.expectedFillMilliseconds == 2)
        #expect(batcher.partialBatchDecision(now: 101) == .waitUntil(110))
        #expect(batcher.flushIfDue(now: 105).isEmpty)
        // At the end of the wait the partial batch goes, whatever the rate says.
        #expect(batcher.flushIfDue(now: 110).map(\.queries.count) == [2])
        // The rate is weighted towards recent gaps: a lull makes waiting not worth it.
        _ = batcher.add(Self.queries("c", count: 1, tag: 3), now: 300)
        #expect(batcher.partialBatchDecision(now: 300) == .flushNow)
    }

    @Test func aPartialBatchIsCutIntoPiecesWhileFullBatchesStayWhole() {
        var batcher = QueryBatcher(batchSize: 4, maximumWaitMilliseconds: 0, partialBatchPiece: 1)
        // Four waiting queries make a full batch at once; three make three batches of one.
        #expect(batcher.add(Self.queries("a", count: 4, tag: 1), now: 0).map(\.queries.count) == [4])
        _ = batcher.add(Self.queries("b", count: 3, tag: 2), now: 1)
        #expect(batcher.flushNow().map(\.queries.count) == [1, 1, 1])
        var pairs = QueryBatcher(batchSize: 8, maximumWaitMilliseconds: 0, partialBatchPiece: 2)
        _ = pairs.add(Self.queries("c", count: 5, tag: 3), now: 0)
        let batches = pairs.flushNow()
        #expect(batches.map(\.queries.count) == [2, 2, 1])
        #expect(batches.flatMap { $0.queries.map(\.member.index) } == [0, 1, 2, 3, 4])
        // The request is acknowledged once all its pieces are confirmed.
        #expect(batches.dropLast().flatMap { pairs.batchConfirmed($0) }.isEmpty)
        #expect(pairs.batchConfirmed(batches.last!).map(\.value) == [3])
    }

    @Test func aBacklogOfWholeRowsGoesAsOneBatchAndNeverWaits() {
        var batcher = QueryBatcher(batchSize: 4, maximumWaitMilliseconds: 50, partialBatchPiece: 1, maximumRows: 3)
        // Ten waiting queries: no batch while they are being read (fewer than R·K = 12)…
        #expect(batcher.add(Self.queries("a", count: 10, tag: 1), now: 0).isEmpty)
        // …and once they are read, whole rows go at once, whatever the wait allows.
        #expect(batcher.partialBatchDecision(now: 0) == .flushNow)
        let sent = batcher.flushIfDue(now: 0)
        #expect(sent.map(\.rows) == [2, 1, 1])
        #expect(sent.map(\.queries.count) == [8, 1, 1])
        #expect(sent[0].queries.map(\.member.index) == Array(0..<8))
        // R·K waiting queries form a batch of R rows as they arrive.
        let full = batcher.add(Self.queries("b", count: 13, tag: 2), now: 1)
        #expect(full.map(\.rows) == [3])
        #expect(full.first?.queries.map(\.member.index) == Array(0..<12))
        #expect(batcher.pendingCount == 1)
        // The request is acknowledged when the batches holding all its queries are confirmed.
        #expect(batcher.batchConfirmed(sent[0]).isEmpty)
        #expect(batcher.batchConfirmed(sent[1]).isEmpty)
        #expect(batcher.batchConfirmed(sent[2]).map(\.value) == [1])
    }

    @Test func wholeRowsWaitForAnotherOnlyWhileArrivalsCompleteItWithinTheRowWait() {
        var batcher = QueryBatcher(
            batchSize: 4, maximumWaitMilliseconds: 2, partialBatchPiece: 1, maximumRows: 3,
            maximumRowWaitMilliseconds: 10)
        // One query per millisecond from t = 100: at t = 104 a row and one query wait, and the
        // three missing for the next row are expected by t = 107, within the wait (t = 110).
        for t in 0..<5 { _ = batcher.add(Self.queries("q\(t)", count: 1, tag: UInt64(t + 1)), now: 100 + Int64(t)) }
        #expect(batcher.partialBatchDecision(now: 104) == .waitUntil(110))
        #expect(batcher.flushIfDue(now: 104).isEmpty)
        // At t = 107 two rows wait; a third would take 4 ms more, past the wait: both go now.
        for t in 5..<8 { _ = batcher.add(Self.queries("q\(t)", count: 1, tag: UInt64(t + 1)), now: 100 + Int64(t)) }
        #expect(batcher.partialBatchDecision(now: 107) == .flushNow)
        let sent = batcher.flushIfDue(now: 107)
        #expect(sent.map(\.rows) == [2])
        #expect(sent.first?.queries.map(\.member.requestID) == (0..<8).map { "q\($0)" })
        // After a lull the rate predicts no row in time: a whole row goes at once.
        _ = batcher.add(Self.queries("late", count: 4, tag: 9), now: 300)
        #expect(batcher.partialBatchDecision(now: 300) == .flushNow)
        #expect(batcher.flushIfDue(now: 300).map(\.rows) == [1])
        // R·K waiting queries go at once, whatever the rate.
        #expect(batcher.add(Self.queries("burst", count: 12, tag: 10), now: 301).map(\.rows) == [3])
    }

    @Test func atLightLoadABurstNeverHoldsWholeRowsBack() {
        var batcher = QueryBatcher(
            batchSize: 4, maximumWaitMilliseconds: 2, partialBatchPiece: 1, maximumRows: 3,
            maximumRowWaitMilliseconds: 30)
        // A steady query every 8 ms (125/s): two rows would take 64 ms, more than the row wait.
        var t: Int64 = 0
        for i in 0..<60 {
            _ = batcher.add(Self.queries("s\(i)", count: 1, tag: UInt64(i + 1)), now: t)
            #expect(batcher.flushIfDue(now: t).map(\.queries.count) == [1])
            t += 8
        }
        #expect(!batcher.rowsWaitAtThisRate)
        // A burst of five, 1 ms apart: the recent gaps would predict the next row within the wait,
        // but the steady rate says the machine is far from needing rows, so the row goes at once.
        for i in 0..<5 {
            _ = batcher.add(Self.queries("b\(i)", count: 1, tag: UInt64(100 + i)), now: t + Int64(i))
        }
        #expect(batcher.partialBatchDecision(now: t + 4) == .flushNow)
        #expect(batcher.flushIfDue(now: t + 4).first.map { [$0.rows, $0.queries.count] } == [1, 4])
        // At a steady query per millisecond the same row waits for the next one.
        var busy = QueryBatcher(
            batchSize: 4, maximumWaitMilliseconds: 2, partialBatchPiece: 1, maximumRows: 3,
            maximumRowWaitMilliseconds: 30)
        for i in 0..<5 { _ = busy.add(Self.queries("f\(i)", count: 1, tag: UInt64(i + 1)), now: Int64(i)) }
        #expect(busy.rowsWaitAtThisRate)
        #expect(busy.partialBatchDecision(now: 4) == .waitUntil(30))
    }

    @Test func underLoadAPartialBatchWaitsAsLongAsRowsWouldInsteadOfGoingAlone() {
        // A steady query per millisecond with a batch wait of 2 ms: three missing queries take 3 ms,
        // past the batch wait, but under load the partial batch is the start of the next rows and
        // waits with the row wait (30 ms from its first query).
        var busy = QueryBatcher(
            batchSize: 4, maximumWaitMilliseconds: 2, partialBatchPiece: 1, maximumRows: 8,
            maximumRowWaitMilliseconds: 30)
        // The first query has no rate to go by and goes alone; the rest form rows.
        _ = busy.add(Self.queries("first", count: 1, tag: 1), now: 0)
        #expect(busy.flushIfDue(now: 0).map(\.queries.count) == [1])
        var sent: [ReadyBatch] = []
        for t in 1...100 {
            sent += busy.add(Self.queries("q\(t)", count: 1, tag: UInt64(t + 1)), now: Int64(t))
            sent += busy.flushIfDue(now: Int64(t))
        }
        #expect(busy.rowsWaitAtThisRate)
        // No query went alone: every batch holds whole rows, sent when the next row could not
        // arrive within the row wait of its first query (28 queries: the 29th arrives too late).
        #expect(sent.map(\.rows) == [7, 7, 7])
        #expect(sent.map { $0.queries.count } == [28, 28, 28])
        #expect(sent.map(\.openedMilliseconds) == [1, 29, 57])
        // The 16 waiting (from t = 85) wait for more, until t = 115.
        #expect(busy.pendingCount == 16)
        #expect(busy.partialBatchDecision(now: 100) == .waitUntil(115))
        // A lull after a partial batch: the rate no longer fills it in time, so it goes.
        _ = busy.add(Self.queries("x", count: 1, tag: 200), now: 100)
        _ = busy.flushNow()
        _ = busy.add(Self.queries("y", count: 1, tag: 201), now: 300)
        #expect(busy.partialBatchDecision(now: 300) == .flushNow)
        // The same arrivals with the old rule's only wait (no rows) go alone or in partial batches.
        var plain = QueryBatcher(batchSize: 4, maximumWaitMilliseconds: 2, partialBatchPiece: 1)
        var single: [ReadyBatch] = []
        for t in 0..<20 {
            single += plain.add(Self.queries("p\(t)", count: 1, tag: UInt64(t + 1)), now: Int64(t) * 3)
            single += plain.flushIfDue(now: Int64(t) * 3)
        }
        #expect(single.allSatisfy { $0.queries.count == 1 })
    }

    @Test func slotBatchesKeepEachSlotsRowsAndCopies() {
        // Two rows of K = 4 (queries q0…q7, q_j in slot j mod 4): slot s holds q_s and q_{s+4}.
        let rows = ReadyBatch(queries: Self.queries("r", count: 8, tag: 1), rows: 2, openedMilliseconds: 5)
        let parts = rows.slotBatches(workers: 12)
        #expect(parts.map { $0.queries.map(\.member.index) } == [[0, 4], [1, 5], [2, 6], [3, 7]])
        #expect(parts.allSatisfy { $0.rows == 2 && $0.openedMilliseconds == 5 })
        // Replication (12, 4): three copies of every slot.
        #expect(parts.map(\.copies) == [3, 3, 3, 3])
        // Partial replication (12, 8): tasks n hold query n mod 8, so slots 0…3 have two copies and
        // slots 4…7 one: 12 tasks in all, as for the whole batch.
        let wide = ReadyBatch(queries: Self.queries("w", count: 8, tag: 2), rows: 1, openedMilliseconds: 0)
        #expect(wide.slotBatches(workers: 12).map(\.copies) == [2, 2, 2, 2, 1, 1, 1, 1])
        // A batch of one slot stays whole.
        let one = ReadyBatch(queries: Self.queries("o", count: 1, tag: 3), rows: 1, openedMilliseconds: 0)
        #expect(one.slotBatches(workers: 3).map(\.copies) == [nil])
    }

    @Test func withPaddingOnAPartialBatchIsFilledToKWithItsLastQuery() {
        var batcher = QueryBatcher(batchSize: 4, maximumWaitMilliseconds: 50, padsPartialBatches: true)
        _ = batcher.add(Self.queries("a", count: 2, tag: 1), now: 100)
        guard let batch = batcher.flushNow().first else {
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
