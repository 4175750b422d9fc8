import ServingPipeline
import Testing

/// The services' metrics, exported by swift-prometheus.
@Suite struct ServiceMetricsTests {
    @Test func countersGaugesAndHistogramsAreExportedWithTheServicePrefix() {
        let metrics = ServiceMetrics(prefix: "nercc_decoder")
        metrics.increment("batches_decoded")
        metrics.increment("batches_decoded", by: 2)
        metrics.set("consuming", 1)
        metrics.observe("end_to_end", seconds: 0.003)
        let text = metrics.prometheusText()
        #expect(text.contains("# TYPE nercc_decoder_batches_decoded_total counter"))
        #expect(text.contains("nercc_decoder_batches_decoded_total 3"))
        #expect(text.contains("nercc_decoder_consuming 1"))
        #expect(text.contains("# TYPE nercc_decoder_end_to_end_seconds histogram"))
        #expect(text.contains("nercc_decoder_end_to_end_seconds_bucket{le=\"0.002\"} 0"))
        #expect(text.contains("nercc_decoder_end_to_end_seconds_bucket{le=\"0.005\"} 1"))
        #expect(metrics.value("batches_decoded") == 3)
        #expect(metrics.gauge("consuming") == 1)
    }

    /// The hand-written summaries kept the last 100,000 samples, so their count and sum stopped
    /// growing there; a histogram's never do.
    @Test func histogramCountsKeepGrowingPastAHundredThousandObservations() {
        let metrics = ServiceMetrics(prefix: "nercc_worker")
        for _ in 0..<150_000 { metrics.observe("compute", seconds: 0.001) }
        #expect(metrics.prometheusText().contains("nercc_worker_compute_seconds_count 150000"))
    }
}
