import CodedComputing
import Foundation
import ServingMessages
import Testing

/// The one-pass request parser agrees with `JSONDecoder` on every body it accepts, accepts what
/// clients send, and leaves everything unusual to `JSONDecoder`.
@Suite struct FastRequestParseTests {
    static func decoded(_ text: String) -> InferenceRequest? {
        try? JSONDecoder().decode(InferenceRequest.self, from: Data(text.utf8))
    }

    @Test func whatEncodersWriteIsParsedExactlyAsJSONDecoderReadsIt() throws {
        var rng = SeededGenerator(seed: 42)
        for trial in 0..<200 {
            let rows = 1 + trial % 3
            let queries = (0..<rows).map { _ in
                (0..<(1 + Int(rng.next() % 40))).map { _ -> Double in
                    switch rng.next() % 4 {
                    case 0: return Double(Float(rng.nextGaussian()))
                    case 1: return rng.nextGaussian() * 1e30
                    case 2: return Double(rng.next() % 256) / 255
                    default: return -rng.nextGaussian() * 1e-30
                    }
                }
            }
            let request = InferenceRequest(
                requestID: trial % 5 == 0 ? nil : "req-\(trial)", model: "mnist-mlp", queries: queries)
            let body = Array(try JSONEncoder().encode(request))
            let fast = try #require(InferenceRequest.fastParse(body), "trial \(trial)")
            #expect(fast == request)
            #expect(fast == (try JSONDecoder().decode(InferenceRequest.self, from: Data(body))))
        }
    }

    @Test(arguments: [
        #"{"version":1,"model":"m","queries":[[1,2.5,-3e-2,0,-0.0,1E+2]]}"#,
        #" { "queries" : [ [ 0.5 ] , [ 1 ] ] , "model" : "m" , "request_id" : null , "version" : 1 } "#,
        "{\n\t\"version\": 1,\r\n \"request_id\": \"a-b\", \"model\": \"m\", \"queries\": [] }",
        #"{"version":2,"model":"m","queries":[[]]}"#,
        #"{"version":1,"model":"mödel","queries":[[12345678901234567890]]}"#,
    ])
    func handWrittenBodiesAgreeWithJSONDecoder(text: String) throws {
        let fast = try #require(InferenceRequest.fastParse(Array(text.utf8)))
        #expect(fast == Self.decoded(text))
    }

    @Test(arguments: [
        #"{"version":1,"model":"m","queries":[[1]],"extra":true}"#,  // unknown key: JSONDecoder ignores it
        #"{"version":1,"model":"m\"x","queries":[[1]]}"#,  // an escape
        #"{"version":1,"model":"m","queries":[[1e400]]}"#,  // beyond Double
        #"{"version":1,"model":"m","queries":[[NaN]]}"#,
        #"{"version":1,"model":"m","queries":[[+1]]}"#,
        #"{"version":1,"model":"m","queries":[[01]]}"#,
        #"{"version":1,"model":"m","queries":[[.5]]}"#,
        #"{"version":1,"model":"m","queries":[[1.]]}"#,
        #"{"version":1,"model":"m","queries":[[1,]]}"#,
        #"{"version":1,"model":"m","queries":[[1]],}"#,
        #"{"version":1,"version":1,"model":"m","queries":[[1]]}"#,
        #"{"version":1.0,"model":"m","queries":[[1]]}"#,
        #"{"version":1,"model":"m","queries":[["1"]]}"#,
        #"{"version":1,"model":"m","queries":[1]}"#,
        #"{"version":1,"queries":[[1]]}"#,
        #"{"version":1,"model":"m","queries":[[1]]} x"#,
        #"{"version":1,"model":"m","queries":[[1]]"#,
        "",
        "[]",
    ])
    func anythingUnusualIsLeftToJSONDecoder(text: String) {
        #expect(InferenceRequest.fastParse(Array(text.utf8)) == nil)
    }
}
