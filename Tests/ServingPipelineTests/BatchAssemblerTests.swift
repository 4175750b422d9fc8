import Messaging
import ServingMessages
import ServingPipeline
import Testing

@Suite struct BatchAssemblerTests {
    static func manifest(id: String = "b1", waitFor: Int = 3, deadline: Int64 = 1_000) -> BatchManifest {
        BatchManifest(
            batchID: id, model: "m", scheme: .init(name: "bacc", workers: 5, batchSize: 2), waitFor: waitFor,
            createdMilliseconds: 0, deadlineMilliseconds: deadline, outputSize: 1, labels: nil,
            members: [
                .init(requestID: "r", index: 0, requestQueries: 2), .init(requestID: "r", index: 1, requestQueries: 2),
            ])
    }

    static func tag(_ v: UInt64) -> DeliveryTag { DeliveryTag(generation: 1, value: v) }

    static func result(_ index: Int, tag: UInt64) -> BatchAssembler.Result {
        .init(index: index, values: [Float(index)], tag: Self.tag(tag))
    }

    static func assembler() -> BatchAssembler {
        BatchAssembler(retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200) { _, indices in !indices.isEmpty }
    }

    @Test func decodesOnceTheScheduledNumberOfResultsArrive() throws {
        var a = Self.assembler()
        #expect(a.receive(manifest: Self.manifest(), tag: Self.tag(1), now: 0).isEmpty)
        #expect(a.receive(result: Self.result(4, tag: 2), batchID: "b1", now: 1).isEmpty)
        #expect(a.receive(result: Self.result(0, tag: 3), batchID: "b1", now: 2).isEmpty)
        let actions = a.receive(result: Self.result(2, tag: 4), batchID: "b1", now: 3)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode action, got \(actions)")
            return
        }
        #expect(job.results.map(\.index) == [4, 0, 2])
        #expect(!job.degraded)
        #expect(Set(job.tags.map(\.value)) == [1, 2, 3, 4])
        #expect(a.counters.decoded == 1)
    }

    /// One query voted on by 2A + 1 = 7 copies (A = 3): A + 1 = 4 copies that agree decide it, a
    /// wrong copy among the first four does not, and copies that differ by rounding agree.
    @Test func aVoteOfCopiesDecodesOnceAPlusOneAgree() throws {
        let manifest = BatchManifest(
            batchID: "v", model: "m", scheme: .init(name: "nercc", workers: 7, batchSize: 1, adversaries: 3),
            waitFor: 7, createdMilliseconds: 0, deadlineMilliseconds: 1_000, outputSize: 2, labels: nil,
            members: [.init(requestID: "r", index: 0, requestQueries: 1)])
        func copy(_ index: Int, _ values: [Float]) -> BatchAssembler.Result {
            .init(index: index, values: values, tag: Self.tag(UInt64(index + 10)))
        }
        var a = Self.assembler()
        #expect(a.receive(manifest: manifest, tag: Self.tag(1), now: 0).isEmpty)
        #expect(a.receive(result: copy(0, [1.5, -2]), batchID: "v", now: 1).isEmpty)
        #expect(a.receive(result: copy(1, [-1.5, 2]), batchID: "v", now: 2).isEmpty)
        #expect(a.receive(result: copy(2, [1.5, -2.000001]), batchID: "v", now: 3).isEmpty)
        // Three agree and one does not: not yet.
        #expect(a.receive(result: copy(3, [1.5, -2]), batchID: "v", now: 4).isEmpty)
        let actions = a.receive(result: copy(4, [1.5000001, -2]), batchID: "v", now: 5)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode action, got \(actions)")
            return
        }
        #expect(job.results.count == 5 && !job.degraded)
        #expect(BatchAssembler.voteAgrees(manifest, job.results))
        // Without adversaries the same manifest waits for all seven.
        var plain = manifest
        plain.scheme.adversaries = nil
        #expect(!BatchAssembler.voteAgrees(plain, job.results))
    }

    /// A + 1 agreeing copies decide a vote only from A + 1 sources: four identical wrong copies from
    /// one worker (it took all four copies published at once) do not, and the batch waits for copies
    /// of other workers; copies without a worker id count as sources of their own.
    @Test func copiesOfOneWorkerCountOnceInTheVote() throws {
        let manifest = BatchManifest(
            batchID: "v", model: "m", scheme: .init(name: "nercc", workers: 7, batchSize: 1, adversaries: 3),
            waitFor: 7, createdMilliseconds: 0, deadlineMilliseconds: 1_000, outputSize: 2, labels: nil,
            members: [.init(requestID: "r", index: 0, requestQueries: 1)])
        func copy(_ index: Int, _ values: [Float], worker: String?, user: String? = nil) -> BatchAssembler.Result {
            .init(index: index, values: values, tag: Self.tag(UInt64(index + 10)), worker: worker, user: user)
        }
        var a = Self.assembler()
        #expect(a.receive(manifest: manifest, tag: Self.tag(1), now: 0).isEmpty)
        for i in 0..<4 { #expect(a.receive(result: copy(i, [9, 9], worker: "liar"), batchID: "v", now: 1).isEmpty) }
        // The same worker id under two broker users is two sources.
        let liars = (0..<4).map { copy($0, [9, 9], worker: "w", user: $0 < 2 ? "u1" : "u2") }
        #expect(!BatchAssembler.voteAgrees(manifest, liars))
        #expect(
            BatchAssembler.voteAgrees(
                manifest,
                liars.map {
                    var r = $0; r.user = "u\($0.index)"; return r
                }))
        // Two honest copies: six results, and no four sources agree yet.
        _ = a.receive(result: copy(4, [1, -1], worker: "h1"), batchID: "v", now: 2)
        #expect(a.receive(result: copy(5, [1, -1], worker: nil), batchID: "v", now: 2).isEmpty)
        #expect(a.counters.decoded == 0)
        // Four honest copies from three workers and one unnamed agree; four where two share a
        // worker do not.
        let honest = [copy(3, [1, -1], worker: "h3"), copy(4, [1, -1], worker: "h1"), copy(5, [1, -1], worker: nil)]
        #expect(BatchAssembler.voteAgrees(manifest, honest + [copy(6, [1, -1], worker: "h2")]))
        #expect(!BatchAssembler.voteAgrees(manifest, honest + [copy(6, [1, -1], worker: "h1")]))
    }

    /// A vote of copies waits for its 2A + 1 copies from as many sources: five copies of which three
    /// come from one worker are not yet enough, and a sixth from a third honest worker decides it.
    @Test func aVoteWaitsForCopiesFromEnoughSources() {
        let manifest = BatchManifest(
            batchID: "v", model: "m", scheme: .init(name: "nercc", workers: 9, batchSize: 1, adversaries: 2),
            waitFor: 5, createdMilliseconds: 0, deadlineMilliseconds: 1_000, outputSize: 2, labels: nil,
            members: [.init(requestID: "r", index: 0, requestQueries: 1)])
        func copy(_ index: Int, _ values: [Float], worker: String) -> BatchAssembler.Result {
            .init(index: index, values: values, tag: Self.tag(UInt64(index + 10)), worker: worker)
        }
        var a = Self.assembler()
        _ = a.receive(manifest: manifest, tag: Self.tag(1), now: 0)
        for i in 0..<3 { #expect(a.receive(result: copy(i, [9, 9], worker: "liar"), batchID: "v", now: 1).isEmpty) }
        _ = a.receive(result: copy(3, [1, -1], worker: "h1"), batchID: "v", now: 2)
        #expect(a.receive(result: copy(4, [1, -1], worker: "h2"), batchID: "v", now: 2).isEmpty)
        #expect(a.counters.decoded == 0)
        #expect(a.receive(result: copy(5, [1, -1], worker: "h3"), batchID: "v", now: 3).count == 1)
        #expect(a.counters.decoded == 1)
        // Results that name no worker count one source each, as before.
        let unnamed = (0..<5).map { BatchAssembler.Result(index: $0, values: [1, -1], tag: Self.tag(UInt64($0))) }
        #expect(BatchAssembler.enoughSources(manifest, unnamed))
    }

    @Test func lateAndDuplicateResultsAreAckedCountedAndNotDecodedAgain() {
        var a = Self.assembler()
        _ = a.receive(manifest: Self.manifest(waitFor: 1), tag: Self.tag(1), now: 0)
        _ = a.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        #expect(a.receive(result: Self.result(1, tag: 3), batchID: "b1", now: 2) == [.ack([Self.tag(3)])])
        a.finished(batchID: "b1", now: 3)
        #expect(a.receive(result: Self.result(0, tag: 4), batchID: "b1", now: 4) == [.ack([Self.tag(4)])])
        #expect(a.counters.late == 2)
        #expect(a.counters.decoded == 1)
    }

    @Test func duplicatesWhileCollectingAreAckedAndIgnored() {
        var a = Self.assembler()
        _ = a.receive(manifest: Self.manifest(), tag: Self.tag(1), now: 0)
        _ = a.receive(result: Self.result(3, tag: 2), batchID: "b1", now: 1)
        #expect(a.receive(result: Self.result(3, tag: 5), batchID: "b1", now: 2) == [.ack([Self.tag(5)])])
        #expect(a.counters.duplicate == 1)
    }

    @Test func resultsBeforeTheManifestAreKept() throws {
        var a = Self.assembler()
        _ = a.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 0)
        _ = a.receive(result: Self.result(1, tag: 3), batchID: "b1", now: 0)
        _ = a.receive(result: Self.result(2, tag: 4), batchID: "b1", now: 0)
        let actions = a.receive(manifest: Self.manifest(), tag: Self.tag(1), now: 1)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode action")
            return
        }
        #expect(job.results.count == 3)
    }

    @Test func decodesDegradedAtTheDeadlineWithWhatItHas() throws {
        var a = Self.assembler()
        _ = a.receive(manifest: Self.manifest(deadline: 100), tag: Self.tag(1), now: 0)
        _ = a.receive(result: Self.result(1, tag: 2), batchID: "b1", now: 1)
        #expect(a.tick(now: 99).isEmpty)
        let actions = a.tick(now: 100)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode action")
            return
        }
        #expect(job.degraded)
        #expect(a.counters.degraded == 1)
    }

    @Test func timesOutWhenNothingDecodableArrived() throws {
        var a = Self.assembler()
        _ = a.receive(manifest: Self.manifest(deadline: 100), tag: Self.tag(1), now: 0)
        let actions = a.tick(now: 150)
        guard case .timeOut(let job) = try #require(actions.first) else {
            Issue.record("expected a time-out action")
            return
        }
        #expect(job.tags == [Self.tag(1)])
        #expect(a.counters.timedOut == 1)
    }

    @Test func orphanedResultsAreAckedAfterTheirTimeoutAndFinishedBatchesForgotten() {
        var a = Self.assembler()
        _ = a.receive(result: Self.result(0, tag: 9), batchID: "ghost", now: 0)
        #expect(a.tick(now: 199).isEmpty)
        #expect(a.tick(now: 200) == [.ack([Self.tag(9)])])
        #expect(a.counters.orphaned == 1)
        #expect(a.nextDeadline == nil)
    }

    /// A manifest that arrives after its batch's results were dropped as orphans is still answered:
    /// it collects again and, with no results, times out at its deadline (a timeout record goes
    /// to its requests) instead of being acked without an answer.
    @Test func aManifestArrivingAfterItsOrphansWereDroppedIsStillAnswered() throws {
        var a = Self.assembler()
        _ = a.receive(result: Self.result(0, tag: 9), batchID: "b1", now: 0)
        #expect(a.tick(now: 200) == [.ack([Self.tag(9)])])
        #expect(a.receive(manifest: Self.manifest(deadline: 1_000), tag: Self.tag(10), now: 300).isEmpty)
        #expect(a.openBatches == 1)
        let actions = a.tick(now: 1_000)
        guard case .timeOut(let job) = try #require(actions.first) else {
            Issue.record("expected a timeout action, got \(actions)")
            return
        }
        #expect(job.tags == [Self.tag(10)])
    }

    @Test func aResultRedeliveredAfterAReconnectReplacesTheStaleCopy() throws {
        var a = Self.assembler()
        _ = a.receive(manifest: Self.manifest(), tag: Self.tag(1), now: 0)
        _ = a.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        // The connection was lost: generation 2 redelivers the manifest and result 0.
        let fresh = DeliveryTag(generation: 2, value: 1)
        #expect(a.receive(manifest: Self.manifest(), tag: fresh, now: 2).isEmpty)
        let again = BatchAssembler.Result(index: 0, values: [0], tag: DeliveryTag(generation: 2, value: 2))
        #expect(a.receive(result: again, batchID: "b1", now: 3).isEmpty)
        _ = a.receive(result: Self.result(1, tag: 3), batchID: "b1", now: 4)
        let actions = a.receive(result: Self.result(2, tag: 4), batchID: "b1", now: 5)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode action")
            return
        }
        #expect(job.tags.contains(fresh) && job.tags.contains(again.tag))
        #expect(!job.tags.contains(Self.tag(1)) && !job.tags.contains(Self.tag(2)))
        #expect(a.counters.duplicate == 0)
    }

    /// An assembler whose batches may be decoded from `minimum` results after a straggler wait of
    /// `after` ms.
    static func earlyAssembler(minimum: Int?, after: Int64 = 20) -> BatchAssembler {
        BatchAssembler(
            retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200,
            earlyDecode: .init(afterMilliseconds: after) { _ in minimum }
        ) { _, indices in !indices.isEmpty }
    }

    @Test func aBatchThatCouldBeAnsweredApproximatelyWaitsTheStragglerWaitThenDecodesDegraded() throws {
        var a = Self.earlyAssembler(minimum: 2)
        _ = a.receive(manifest: Self.manifest(waitFor: 3, deadline: 1_000), tag: Self.tag(1), now: 0)
        #expect(a.receive(result: Self.result(4, tag: 2), batchID: "b1", now: 1).isEmpty)
        // One result is not enough to answer early: nothing is scheduled before the deadline.
        #expect(a.nextDeadline == 1_000)
        // The second is: the straggler wait runs from now.
        #expect(a.receive(result: Self.result(0, tag: 3), batchID: "b1", now: 5).isEmpty)
        #expect(a.nextDeadline == 25)
        #expect(a.tick(now: 24).isEmpty)
        let actions = a.tick(now: 25)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode action, got \(actions)")
            return
        }
        #expect(job.degraded)
        #expect(job.results.map(\.index) == [4, 0])
        #expect(Set(job.tags.map(\.value)) == [1, 2, 3])
        #expect(a.counters.degraded == 1 && a.counters.decodedEarly == 1 && a.counters.decoded == 0)
        // The straggler is late when it comes.
        a.finished(batchID: "b1", now: 26)
        #expect(a.receive(result: Self.result(2, tag: 4), batchID: "b1", now: 30) == [.ack([Self.tag(4)])])
        #expect(a.counters.late == 1)
    }

    @Test func theRestArrivingWithinTheStragglerWaitDecodesInFull() throws {
        var a = Self.earlyAssembler(minimum: 2)
        _ = a.receive(manifest: Self.manifest(waitFor: 3), tag: Self.tag(1), now: 0)
        _ = a.receive(result: Self.result(1, tag: 2), batchID: "b1", now: 1)
        _ = a.receive(result: Self.result(3, tag: 3), batchID: "b1", now: 2)
        let actions = a.receive(result: Self.result(0, tag: 4), batchID: "b1", now: 21)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode action, got \(actions)")
            return
        }
        #expect(!job.degraded)
        a.finished(batchID: "b1", now: 22)
        // The wait that was scheduled does nothing once it expires.
        #expect(a.tick(now: 22).isEmpty)
        #expect(a.counters.decoded == 1 && a.counters.degraded == 0 && a.counters.decodedEarly == 0)
    }

    @Test func aBatchWithoutAMinimumWaitsForItsDeadline() {
        var a = Self.earlyAssembler(minimum: nil)
        _ = a.receive(manifest: Self.manifest(waitFor: 3, deadline: 100), tag: Self.tag(1), now: 0)
        _ = a.receive(result: Self.result(1, tag: 2), batchID: "b1", now: 1)
        _ = a.receive(result: Self.result(3, tag: 3), batchID: "b1", now: 2)
        #expect(a.nextDeadline == 100)
        #expect(a.tick(now: 99).isEmpty)
        #expect(a.counters.decodedEarly == 0)
    }

    /// Results that arrive before the manifest start the straggler wait when the manifest comes.
    @Test func theStragglerWaitStartsWhenTheManifestArrivesAfterEnoughResults() throws {
        var a = Self.earlyAssembler(minimum: 2, after: 10)
        _ = a.receive(result: Self.result(1, tag: 2), batchID: "b1", now: 0)
        _ = a.receive(result: Self.result(2, tag: 3), batchID: "b1", now: 1)
        #expect(a.receive(manifest: Self.manifest(waitFor: 3), tag: Self.tag(1), now: 7).isEmpty)
        #expect(a.tick(now: 16).isEmpty)
        guard case .decode(let job) = try #require(a.tick(now: 17).first) else {
            Issue.record("expected a decode action")
            return
        }
        #expect(job.degraded && job.results.count == 2)
    }

    /// An assembler whose straggler wait decodes from 3 results after 20 ms and, at its floor, from 2
    /// after 60 ms.
    static func floorAssembler() -> BatchAssembler {
        BatchAssembler(
            retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200,
            earlyDecode: .init(afterMilliseconds: 20, floorAfterMilliseconds: 60, floorResults: { _ in 2 }) { _ in 3 }
        ) { _, indices in !indices.isEmpty }
    }

    /// The floor: a batch that lost more than the first stage allows waits the floor's longer time
    /// for its next result, then is decoded from what it has; one whose next result comes first goes
    /// on to the first stage.
    @Test func aBatchBelowTheFirstStageIsDecodedAtTheFloorAfterItsLongerWait() throws {
        var a = Self.floorAssembler()
        _ = a.receive(manifest: Self.manifest(waitFor: 4, deadline: 1_000), tag: Self.tag(1), now: 0)
        _ = a.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        #expect(a.nextDeadline == 1_000)
        // Two results: the floor's wait runs from now; the first stage needs three.
        #expect(a.receive(result: Self.result(1, tag: 3), batchID: "b1", now: 4).isEmpty)
        #expect(a.nextDeadline == 64)
        #expect(a.tick(now: 63).isEmpty)
        guard case .decode(let job) = try #require(a.tick(now: 64).first) else {
            Issue.record("expected a decode action")
            return
        }
        #expect(job.degraded && job.results.map(\.index) == [0, 1])
        #expect(a.counters.decodedAtFloor == 1 && a.counters.decodedEarly == 1 && a.counters.degraded == 1)

        // A third result within the floor's wait: the first stage's 20 ms decide, from three.
        var b = Self.floorAssembler()
        _ = b.receive(manifest: Self.manifest(waitFor: 4, deadline: 1_000), tag: Self.tag(1), now: 0)
        _ = b.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        _ = b.receive(result: Self.result(1, tag: 3), batchID: "b1", now: 4)
        #expect(b.receive(result: Self.result(2, tag: 4), batchID: "b1", now: 10).isEmpty)
        #expect(b.nextDeadline == 30)
        guard case .decode(let early) = try #require(b.tick(now: 30).first) else {
            Issue.record("expected a decode action")
            return
        }
        #expect(early.results.count == 3 && b.counters.decodedAtFloor == 0 && b.counters.decodedEarly == 1)
        b.finished(batchID: "b1", now: 31)
        // The floor's entry of the decoded batch does nothing when it expires.
        #expect(b.tick(now: 64).isEmpty)
        // A batch answered in full leaves no timer to wake for.
        var c = Self.floorAssembler()
        _ = c.receive(manifest: Self.manifest(waitFor: 4, deadline: 1_000), tag: Self.tag(1), now: 0)
        for (i, index) in [0, 1, 2, 3].enumerated() {
            _ = c.receive(result: Self.result(index, tag: UInt64(2 + i)), batchID: "b1", now: Int64(1 + i))
        }
        #expect(c.counters.decoded == 1)
        #expect(c.nextDeadline == nil || c.nextDeadline! >= 500)
    }

    /// An assembler that decodes from 3 results after 20 ms, and asks for missing tasks 5 ms after
    /// a batch first holds 3.
    static func resendAssembler() -> BatchAssembler {
        BatchAssembler(
            retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200,
            earlyDecode: .init(afterMilliseconds: 20, resendAfterMilliseconds: 5) { _ in 3 }
        ) { _, indices in !indices.isEmpty }
    }

    /// Resending: a batch whose manifest offers it and that holds the first stage's results asks,
    /// once and 5 ms later, for copies of tasks it has no result of (as many as it still waits for,
    /// and a spare); when copies make it whole it is
    /// decoded exactly, not degraded. A batch decoded first, or whose manifest does not offer it,
    /// never asks.
    @Test func aBatchThatLostMoreThanSAsksOnceForItsMissingTasks() throws {
        var offered = Self.manifest(waitFor: 4, deadline: 1_000)
        offered.resend = .init(queue: "nercc.hedge.e")
        var a = Self.resendAssembler()
        _ = a.receive(manifest: offered, tag: Self.tag(1), now: 0)
        for (i, index) in [4, 0].enumerated() {
            #expect(a.receive(result: Self.result(index, tag: UInt64(2 + i)), batchID: "b1", now: Int64(1 + i)).isEmpty)
        }
        #expect(a.nextDeadline == 1_000)
        // The third result: the first stage's wait (20 ms) and the resend (5 ms) start.
        #expect(a.receive(result: Self.result(2, tag: 4), batchID: "b1", now: 10).isEmpty)
        #expect(a.nextDeadline == 15)
        #expect(a.tick(now: 14).isEmpty)
        #expect(a.tick(now: 15) == [.resend(offered, tasks: [1, 3])])
        #expect(a.counters.resent == 1)
        // Asked once: no second request however long the batch waits.
        #expect(a.nextDeadline == 30)
        #expect(a.tick(now: 29).isEmpty)
        // A copy of task 3 arrives: four results, decoded exactly.
        guard
            case .decode(let job) = try #require(
                a.receive(result: Self.result(3, tag: 5), batchID: "b1", now: 20).first)
        else {
            Issue.record("expected a decode action")
            return
        }
        #expect(!job.degraded && job.results.map(\.index) == [4, 0, 2, 3])
        #expect(a.counters.degraded == 0 && a.counters.decoded == 1)
        a.finished(batchID: "b1", now: 21)
        #expect(a.tick(now: 30).isEmpty)

        // Holding 3 of N = 8 and waiting for 6: copies of the 3 results it still waits for and a
        // spare, the lowest of the indices it has no result of.
        var wide = offered
        wide.scheme.workers = 8
        wide.waitFor = 6
        var w = Self.resendAssembler()
        _ = w.receive(manifest: wide, tag: Self.tag(1), now: 0)
        for (i, index) in [0, 2, 6].enumerated() {
            _ = w.receive(result: Self.result(index, tag: UInt64(2 + i)), batchID: "b1", now: 1)
        }
        #expect(w.tick(now: 6) == [.resend(wide, tasks: [1, 3, 4, 5])])

        // Decoded before the resend is due: nothing is asked for.
        var b = Self.resendAssembler()
        _ = b.receive(manifest: offered, tag: Self.tag(1), now: 0)
        for (i, index) in [0, 1, 2].enumerated() {
            _ = b.receive(result: Self.result(index, tag: UInt64(2 + i)), batchID: "b1", now: Int64(1 + i))
        }
        #expect(b.receive(result: Self.result(3, tag: 5), batchID: "b1", now: 4).count == 1)
        b.finished(batchID: "b1", now: 5)
        #expect(b.tick(now: 10).isEmpty && b.counters.resent == 0)

        // A manifest without resend: the batch waits out the first stage and is decoded degraded.
        var c = Self.resendAssembler()
        _ = c.receive(manifest: Self.manifest(waitFor: 4, deadline: 1_000), tag: Self.tag(1), now: 0)
        for (i, index) in [0, 1, 2].enumerated() {
            _ = c.receive(result: Self.result(index, tag: UInt64(2 + i)), batchID: "b1", now: Int64(1 + i))
        }
        #expect(c.nextDeadline == 23)
        #expect(c.tick(now: 10).isEmpty && c.counters.resent == 0)
        guard case .decode(let degraded) = try #require(c.tick(now: 23).first) else {
            Issue.record("expected a decode action")
            return
        }
        #expect(degraded.degraded && degraded.results.count == 3)
    }

    /// The adaptive resend trigger: three times the upper quartile of how long recent batches took
    /// from holding the first stage's results to being decodable, never below the least trigger;
    /// batches that asked count as not decodable in time, and a trigger at or beyond the first
    /// stage's wait asks for nothing.
    @Test func theResendTriggerFollowsHowFarApartResultsCome() throws {
        func assembler() -> BatchAssembler {
            BatchAssembler(
                retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200,
                earlyDecode: .init(afterMilliseconds: 20, resendAfterMilliseconds: 5, resendGapMultiple: 3) { _ in 3 }
            ) { _, indices in !indices.isEmpty }
        }
        func offered(_ id: String, resend: Bool = true) -> BatchManifest {
            var m = Self.manifest(id: id, waitFor: 4, deadline: 100_000)
            m.resend = resend ? .init(queue: "nercc.hedge.e") : nil
            return m
        }
        /// A batch at `t` that holds three results at once and its fourth `gap` ms later; the
        /// actions on the way.
        func batch(
            _ a: inout BatchAssembler, _ id: String, at t: Int64, gap: Int64, resend: Bool = true
        ) -> [BatchAssembler.Action] {
            var actions = a.receive(manifest: offered(id, resend: resend), tag: Self.tag(1), now: t)
            for index in 0..<3 { actions += a.receive(result: Self.result(index, tag: 2), batchID: id, now: t) }
            actions += a.tick(now: t + gap - 1)
            actions += a.receive(result: Self.result(3, tag: 3), batchID: id, now: t + gap)
            a.finished(batchID: id, now: t + gap)
            return actions
        }
        var a = assembler()
        #expect(a.resendAfterMilliseconds == 5)  // Too few batches yet: the least trigger.
        for i in 0..<32 { _ = batch(&a, "q\(i)", at: Int64(i) * 100, gap: 4) }
        #expect(a.resendAfterMilliseconds == 12)
        // A batch whose results come 4 ms apart no longer asks at 5 ms; one that waits 12 ms does.
        #expect(batch(&a, "slow", at: 5_000, gap: 11).allSatisfy { if case .resend = $0 { false } else { true } })
        #expect(batch(&a, "late", at: 6_000, gap: 13).contains(.resend(offered("late"), tasks: [3, 4])))
        #expect(a.counters.resent == 1)

        // Results 7 ms apart (from encoders that do not offer resending, so none asks meanwhile): a 21 ms trigger is beyond the 20 ms wait, so nothing is asked for and
        // the batch that loses a result is decoded degraded when the wait ends.
        var b = assembler()
        for i in 0..<32 { _ = batch(&b, "q\(i)", at: Int64(i) * 100, gap: 7, resend: false) }
        #expect(b.counters.resent == 0)
        #expect(b.resendAfterMilliseconds == 21)
        _ = b.receive(manifest: offered("lost"), tag: Self.tag(1), now: 9_000)
        for index in 0..<3 { _ = b.receive(result: Self.result(index, tag: 2), batchID: "lost", now: 9_000) }
        #expect(b.tick(now: 9_019).isEmpty)  // No resend at 9,005 ms, nor at 9,019.
        guard case .decode(let job) = try #require(b.tick(now: 9_020).first) else {
            Issue.record("expected a decode action")
            return
        }
        #expect(job.degraded && b.counters.resent == 0)

        // More than a quarter of the batches asked before they became decodable: the quartile is
        // not known, and batches stop asking until the results come closer again.
        var c = assembler()
        for i in 0..<32 { _ = batch(&c, "q\(i)", at: Int64(i) * 100, gap: 6) }
        #expect(c.counters.resent == 32)
        #expect(c.resendAfterMilliseconds == Int64.max)
        for i in 0..<160 { _ = batch(&c, "r\(i)", at: 10_000 + Int64(i) * 100, gap: 1) }
        #expect(c.counters.resent == 32 && c.resendAfterMilliseconds == 5)
    }

    /// The floor of each scheme: N − 2S, never below K; none for exact schemes.
    @Test(
        arguments: [
            ("nercc", 12, 4, 9, 6), ("bacc", 12, 4, 9, 6), ("nercc", 12, 8, 8, nil), ("nercc", 9, 3, 6, 3),
            ("uncoded", 4, 4, 4, nil), ("replication", 12, 4, 4, nil),
        ] as [(String, Int, Int, Int, Int?)])
    func theFloorOfEachScheme(name: String, n: Int, k: Int, waitFor: Int, floor: Int?) {
        let manifest = BatchManifest(
            batchID: "b", model: "m", scheme: .init(name: name, workers: n, batchSize: k), waitFor: waitFor,
            createdMilliseconds: 0, deadlineMilliseconds: 1, outputSize: 1, labels: nil,
            members: (0..<k).map { .init(requestID: "r", index: $0, requestQueries: k) })
        #expect(DecoderConfiguration.earlyDecodeFloor(for: manifest) == floor)
    }

    /// Only the approximate schemes decode early, from at most ⌈share·S⌉ results fewer than they
    /// wait for and never from fewer than K.
    @Test(
        arguments: [
            ("nercc", 12, 4, 9, 0.5, 7), ("bacc", 12, 4, 9, 0.5, 7), ("nercc-ag", 12, 4, 9, 0.5, 7),
            ("nercc", 12, 4, 9, 1.0, 6), ("nercc", 12, 4, 9, 0.0, nil), ("nercc", 12, 8, 8, 0.5, nil),
            ("nercc", 3, 1, 1, 0.5, nil), ("nercc", 9, 3, 6, 0.5, 4), ("lcc", 12, 4, 9, 0.5, nil),
            ("uncoded", 4, 4, 4, 0.5, nil), ("replication", 12, 4, 4, 0.5, nil), ("parity", 6, 4, 4, 0.5, nil),
        ] as [(String, Int, Int, Int, Double, Int?)])
    func theEarlyDecodeMinimumOfEachScheme(
        name: String, n: Int, k: Int, waitFor: Int, share: Double, minimum: Int?
    ) {
        let manifest = BatchManifest(
            batchID: "b", model: "m", scheme: .init(name: name, workers: n, batchSize: k), waitFor: waitFor,
            createdMilliseconds: 0, deadlineMilliseconds: 1, outputSize: 1, labels: nil,
            members: (0..<k).map { .init(requestID: "r", index: $0, requestQueries: k) })
        #expect(DecoderConfiguration.earlyDecodeMinimum(for: manifest, extraShare: share) == minimum)
    }
}

@Suite struct ManifestCopyTests {
    @Test func aBatchDecodesFromResultsCarryingItsManifestAndHoldsTheManifestMessageWithIt() throws {
        var a = BatchAssemblerTests.assembler()
        let manifest = BatchAssemblerTests.manifest(waitFor: 2)
        #expect(a.needsManifest(batchID: "b1"))
        #expect(a.receive(manifest: manifest, tag: nil, now: 0).isEmpty)
        #expect(!a.needsManifest(batchID: "b1"))
        _ = a.receive(result: BatchAssemblerTests.result(0, tag: 2), batchID: "b1", now: 1)
        // The manifest message arrives before the batch decodes: its tag joins the batch.
        #expect(a.receive(manifest: manifest, tag: BatchAssemblerTests.tag(1), now: 2).isEmpty)
        let actions = a.receive(result: BatchAssemblerTests.result(3, tag: 3), batchID: "b1", now: 3)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode, got \(actions)")
            return
        }
        #expect(Set(job.tags.map(\.value)) == [1, 2, 3])
        #expect(a.counters.duplicate == 0)
    }

    /// The manifest message of a batch being answered from a copy is held, and acknowledged with
    /// the results once the answers are confirmed (AssemblerFaultTests has the other orders).
    @Test func aManifestMessageAfterTheBatchDecodedFromACopyIsAcknowledgedWithTheBatch() {
        var a = BatchAssemblerTests.assembler()
        let manifest = BatchAssemblerTests.manifest(waitFor: 1)
        _ = a.receive(result: BatchAssemblerTests.result(0, tag: 2), batchID: "b1", now: 0)
        let actions = a.receive(manifest: manifest, tag: nil, now: 1)
        #expect(actions.count == 1)
        #expect(a.receive(manifest: manifest, tag: BatchAssemblerTests.tag(9), now: 2).isEmpty)
        #expect(a.finished(batchID: "b1", now: 3) == [BatchAssemblerTests.tag(9), BatchAssemblerTests.tag(2)])
        #expect(a.receive(manifest: manifest, tag: nil, now: 4).isEmpty)
        #expect(
            a.receive(manifest: manifest, tag: BatchAssemblerTests.tag(10), now: 5) == [
                .ack([BatchAssemblerTests.tag(10)])
            ])
    }
}

@Suite struct CancellationScheduleTests {
    @Test func aFinishedBatchIsAnnouncedOnlyIfResultsAreStillMissingAfterItsGrace() {
        var s = CancellationSchedule(graceMilliseconds: 10)
        s.finished(batchID: "late", outstanding: 2, now: 100)
        s.finished(batchID: "caught-up", outstanding: 1, now: 101)
        s.finished(batchID: "complete", outstanding: 0, now: 102)
        #expect(s.waiting == 2)
        #expect(s.nextDeadline == 110)
        s.resultArrived(batchID: "caught-up")
        s.resultArrived(batchID: "late")
        #expect(s.announce(now: 109).isEmpty)
        #expect(s.announce(now: 111) == ["late"])
        #expect(s.waiting == 0)
        #expect(s.nextDeadline == nil)
        // A result of a batch already announced, or never finished, changes nothing.
        s.resultArrived(batchID: "late")
        s.resultArrived(batchID: "unknown")
        #expect(s.announce(now: 1_000).isEmpty)
    }
}
