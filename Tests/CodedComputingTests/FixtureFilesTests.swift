import Foundation
import Testing

@Suite struct FixtureFilesTests {
    /// Every reference file is present and decodes; an empty or unreadable fixture would otherwise
    /// turn the parameterised reference tests into zero cases.
    @Test(arguments: Fixtures.files)
    func referenceFileIsPresentAndHasCases(file: String) throws {
        struct AnyCases: Decodable {
            let cases: [IgnoredCase]?
            let alphaCases: [IgnoredCase]?
            enum CodingKeys: String, CodingKey {
                case cases
                case alphaCases = "alpha_cases"
            }
        }
        struct IgnoredCase: Decodable {}
        let decoded = try Fixtures.load(file, as: AnyCases.self)
        let count = (decoded.cases ?? decoded.alphaCases ?? []).count
        #expect(count > 0, "\(file) has no cases; run python3 ops/fixtures/make_coding_fixtures.py")
    }

    @Test func codeCasesCoverEveryBatchSizeLambdaAndScheme() {
        let cases = Fixtures.cases("code_cases.json", Fixtures.CodeCase.self)
        for scheme in ["nercc", "bacc"] {
            let ks = Set(cases.filter { $0.scheme == scheme }.map(\.batch))
            #expect(ks.isSuperset(of: [1, 2, 3, 5, 10, 20, 50]), "\(scheme) covers K = \(ks.sorted())")
        }
        let lambdas = Set(cases.filter { $0.scheme == "nercc" }.map(\.lambda))
        #expect(lambdas.isSuperset(of: [0, 1e-8, 1e-4, 1e-2, 1, 1e6, 1e12]))
        #expect(cases.contains { $0.workers == 200 })
    }
}
