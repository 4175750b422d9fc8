import CodedComputing
import ServingPipeline
import Testing

/// The encoder's task publishing order: with first-in-first-out workers, the results a batch lacks
/// are those published last, so for the interpolating schemes those must be spread over the worker
/// points rather than bunched at one end.
@Suite struct PublishOrderTests {
    @Test(arguments: [1, 2, 3, 6, 12, 13, 40, 60, 100, 200])
    func isAPermutationWithTheEndsFirst(count: Int) {
        let order = spreadOrder(count: count)
        #expect(order.sorted() == Array(0..<count))
        if count > 2 { #expect(Array(order.prefix(2)) == [0, count - 1]) }
    }

    /// Up to 40% missing (the study's largest share), the tail of the order never holds two
    /// neighbouring indices or an end, so every lost worker point has received points on both sides.
    @Test(arguments: [6, 12, 13, 40, 60, 100, 200])
    func theLastPublishedAreIsolatedInteriorPoints(count: Int) {
        let order = spreadOrder(count: count)
        for stragglers in 1...((count * 2) / 5) {
            let missing = Set(order.suffix(stragglers))
            #expect(!missing.contains(0) && !missing.contains(count - 1), "S = \(stragglers)")
            #expect(!missing.contains { missing.contains($0 + 1) }, "S = \(stragglers): neighbours missing")
        }
    }

    @Test func onlyTheInterpolatingSchemesAreReordered() throws {
        for kind in [SchemeKind.nercc, .nerccAgnostic, .bacc, .lcc] {
            let code = try LinearCode(SchemeConfiguration(kind: kind, workers: 12, batchSize: 4))
            #expect(taskPublishOrder(for: code) == [0, 11, 8, 4, 2, 10, 6, 1, 9, 5, 3, 7], "\(kind)")
        }
        let parity = try LinearCode(SchemeConfiguration(kind: .parity, workers: 6, batchSize: 4, groupSize: 2))
        #expect(taskPublishOrder(for: parity) == Array(0..<6))
        let replication = try LinearCode(SchemeConfiguration(kind: .replication, workers: 8, batchSize: 4))
        #expect(taskPublishOrder(for: replication) == Array(0..<8))
    }
}
