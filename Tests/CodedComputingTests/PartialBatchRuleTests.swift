import CodedComputing
import Testing

@Suite struct PartialBatchRuleTests {
    typealias Row = (k: Int, tasks: Int, stragglers: Int, waitFor: Int)

    static func rows(_ kind: SchemeKind, n: Int, k: Int, s: Int, a: Int = 0, groupSize: Int? = nil) throws -> [Row] {
        let rule = PartialBatchRule(
            configuration: .init(kind: kind, workers: n, batchSize: k, groupSize: groupSize), stragglers: s,
            adversaries: a)
        return try (1...k).map { size in
            let (code, d) = try rule.derivedCode(batchSize: size)
            #expect(code.workers == d.configuration.workers && code.batchSize == size)
            return (size, code.workers, d.stragglers, d.waitFor)
        }
    }

    static func same(_ a: [Row], _ b: [Row]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0 == $1 }
    }

    @Test func theQuickstartCodeKeepsItsRedundancyAndItsShareOfStragglersAtEverySize() throws {
        // N = 12, K = 4, S = 3: ⌈12k/4⌉ tasks, ⌈3·N_k/12⌉ stragglers, and one result for one query.
        let rows = try Self.rows(.nercc, n: 12, k: 4, s: 3)
        #expect(Self.same(rows, [(1, 3, 2, 1), (2, 6, 2, 4), (3, 9, 3, 6), (4, 12, 3, 9)]))
    }

    @Test func aLowRedundancyCodeRoundsTasksUpAndStragglersUp() throws {
        // N = 12, K = 8, S = 4 (1.5×).
        let rows = try Self.rows(.bacc, n: 12, k: 8, s: 4)
        #expect(
            Self.same(
                rows,
                [
                    (1, 2, 1, 1), (2, 3, 1, 2), (3, 5, 2, 3), (4, 6, 2, 4), (5, 8, 3, 5), (6, 9, 3, 6), (7, 11, 4, 7),
                    (8, 12, 4, 8),
                ]))
    }

    @Test(arguments: [SchemeKind.nercc, .nerccAgnostic, .bacc, .lcc, .replication])
    func noSizeCostsMoreThanTheConfiguredRedundancyOrToleratesLessThanItsShare(kind: SchemeKind) throws {
        for (n, k, s) in [(12, 4, 3), (12, 8, 4), (40, 10, 10), (9, 3, 2), (7, 5, 1)] {
            guard kind != .replication || n % k == 0 else { continue }
            guard kind != .lcc || s <= n - k else { continue }
            for row in try Self.rows(kind, n: n, k: k, s: s) {
                #expect(row.tasks <= (n * row.k + k - 1) / k, "\(kind) \(n):\(k) k=\(row.k)")
                if kind.isInterpolating {
                    // S_k / N_k ≥ S / N, unless the scheme cannot decode from fewer results.
                    let minimum = try LinearCode(.init(kind: kind, workers: row.tasks, batchSize: row.k)).minimumResults
                    #expect(
                        row.stragglers * n >= s * row.tasks || row.waitFor == minimum,
                        "\(kind) \(n):\(k) k=\(row.k)")
                    #expect(row.waitFor == row.tasks - row.stragglers)
                }
            }
            let full = try Self.rows(kind, n: n, k: k, s: s).last!
            if kind.isInterpolating { #expect(full.stragglers == s && full.tasks == n) }
        }
    }

    @Test func withAdversariesEverySizeGetsTheTasksItsRobustDecoderNeeds() throws {
        // (40, 10), A = 3: one query is a vote of 2A + 1 = 7 copies; two need the spline check's
        // 2A + 3 = 9; from three on, ⌈40k/10⌉ already suffices.
        let rows = try Self.rows(.nercc, n: 40, k: 10, s: 0, a: 3)
        #expect(Self.same(Array(rows.prefix(4)), [(1, 7, 0, 7), (2, 9, 0, 9), (3, 12, 0, 12), (4, 16, 0, 16)]))
        // With S = 10 (25%), each size also keeps its share of stragglers: 10 tasks for one query,
        // of which 7 are waited for.
        let late = try Self.rows(.nercc, n: 40, k: 10, s: 10, a: 3)
        #expect(Self.same(Array(late.prefix(3)), [(1, 10, 3, 7), (2, 12, 3, 9), (3, 12, 3, 9)]))
        // bacc's locator needs 2(k + A) − 1.
        let bacc = try Self.rows(.bacc, n: 12, k: 4, s: 0, a: 1)
        #expect(Self.same(bacc, [(1, 3, 0, 3), (2, 6, 0, 6), (3, 9, 0, 9), (4, 12, 0, 12)]))
        // Schemes without a robust decoder ignore A.
        #expect(Self.same(try Self.rows(.lcc, n: 12, k: 4, s: 2, a: 3), try Self.rows(.lcc, n: 12, k: 4, s: 2)))
    }

    @Test(arguments: [SchemeKind.nercc, .nerccAgnostic, .bacc])
    func withAdversariesEverySizeToleratesThemAndCostsNoMoreThanItMust(kind: SchemeKind) throws {
        for (n, k, s, a) in [(12, 4, 0, 3), (12, 4, 3, 1), (40, 10, 0, 3), (40, 10, 10, 2), (100, 20, 20, 5)] {
            guard kind != .bacc || n - s >= 2 * (k + a) - 1 else { continue }
            let plain = try Self.rows(kind, n: n, k: k, s: s)
            for (row, base) in zip(try Self.rows(kind, n: n, k: k, s: s, a: a), plain) {
                let code = try LinearCode(.init(kind: kind, workers: row.tasks, batchSize: row.k))
                #expect(code.tolerableAdversaries(a, results: row.waitFor) == a, "\(kind) \(n):\(k) k=\(row.k)")
                #expect(row.tasks >= base.tasks && row.waitFor == row.tasks - row.stragglers)
                #expect(row.stragglers * n >= s * row.tasks, "\(kind) \(n):\(k) k=\(row.k) keeps its share")
                if row.tasks > base.tasks {
                    // One task fewer would miss the bound once the share of stragglers is set aside.
                    let fewer = row.tasks - 1
                    let share = (s * fewer + n - 1) / n
                    #expect(
                        fewer - share < code.robustMinimumResults(adversaries: a, method: kind.servingRobustMethod!))
                }
            }
            #expect(try Self.rows(kind, n: n, k: k, s: s, a: a).last! == plain.last!)
        }
    }

    @Test func replicationKeepsRCopiesOfEveryQuery() throws {
        let rows = try Self.rows(.replication, n: 12, k: 4, s: 0)
        #expect(rows.map(\.tasks) == [3, 6, 9, 12])
        #expect(rows.map(\.waitFor) == [1, 2, 3, 4])
    }

    @Test func parityKeepsOneParityPerGroupOfG() throws {
        let rows = try Self.rows(.parity, n: 6, k: 4, s: 1, groupSize: 2)
        #expect(rows.map(\.tasks) == [2, 3, 5, 6])
        #expect(rows.map(\.waitFor) == [1, 2, 3, 4])
    }

    @Test func uncodedIsAlwaysOneTaskPerQuery() throws {
        let rows = try Self.rows(.uncoded, n: 4, k: 4, s: 0)
        #expect(Self.same(rows, [(1, 1, 0, 1), (2, 2, 0, 2), (3, 3, 0, 3), (4, 4, 0, 4)]))
    }
}
