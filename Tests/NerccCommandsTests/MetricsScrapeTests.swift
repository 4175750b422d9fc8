import Testing

@testable import NerccCommands

@Suite struct MetricsScrapeTests {
    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func aBodyIsCompleteOnceItHoldsItsContentLength() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
        #expect(MetricsScrape.body(of: Self.bytes("HTTP/1.1 200 OK\r\nContent-Le"), complete: true) == nil)
        #expect(MetricsScrape.body(of: Self.bytes(head + "a_total 1"), complete: true) == nil)
        #expect(MetricsScrape.body(of: Self.bytes(head + "a_total 12"), complete: true) == "a_total 12")
        // Bytes past the announced length are not part of the body.
        #expect(MetricsScrape.body(of: Self.bytes(head + "a_total 12HTTP"), complete: true) == "a_total 12")
    }

    @Test func withoutALengthTheBodyIsWhatFollowsTheHeadOnceTheServerCloses() {
        let response = Self.bytes("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nb_total 3\n")
        #expect(MetricsScrape.body(of: response, complete: true) == nil)
        #expect(MetricsScrape.body(of: response, complete: false) == "b_total 3\n")
        #expect(MetricsScrape.body(of: Self.bytes("HTTP/1.0 200 OK\r\n"), complete: false) == nil)
    }
}
