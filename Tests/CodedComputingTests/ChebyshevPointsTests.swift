import CodedComputing
import Foundation
import Testing

@Suite struct ChebyshevPointsTests {
    static let points = try! Fixtures.load("points.json", as: Fixtures.Points.self)

    @Test(arguments: points.alphaCases.map(\.batch))
    func dataPointsMatchNumPy(count: Int) throws {
        let expected = try #require(Self.points.alphaCases.first { $0.batch == count }).alpha
        let alpha = ChebyshevPoints.dataPoints(count: count)
        #expect(alpha.count == count)
        for (a, e) in zip(alpha, expected) { #expect(abs(a - e) <= 1e-15) }
    }

    @Test(arguments: points.betaCases.map(\.workers))
    func workerPointsMatchNumPy(count: Int) throws {
        let expected = try #require(Self.points.betaCases.first { $0.workers == count }).beta
        let beta = ChebyshevPoints.workerPoints(count: count)
        #expect(beta.count == count)
        for (b, e) in zip(beta, expected) { #expect(abs(b - e) <= 1e-15) }
    }

    @Test func dataPointsDescendStrictlyInsideTheInterval() {
        let alpha = ChebyshevPoints.dataPoints(count: 17)
        #expect(zip(alpha, alpha.dropFirst()).allSatisfy { $0 > $1 })
        #expect(alpha.allSatisfy { $0 > -1 && $0 < 1 })
    }

    @Test func workerPointsRunFromOneToMinusOne() {
        let beta = ChebyshevPoints.workerPoints(count: 9)
        #expect(beta.first == 1)
        #expect(beta.last == -1)
        #expect(zip(beta, beta.dropFirst()).allSatisfy { $0 > $1 })
        #expect(ChebyshevPoints.workerPoints(count: 1) == [0])
    }
}
