import CBLAS

/// How the process allocates the coding layer's large matrices.
public enum ProcessMemory {
    /// Serves blocks up to 64 MiB from the heap and keeps up to 256 MiB of freed memory there.
    ///
    /// By default glibc maps every block above 128 KiB afresh and unmaps it on free, so each large
    /// matrix (a 200×200 hat matrix is 320 KiB) pays a page fault per 4 KiB page on first touch:
    /// measured, that tripled the time of a smoothing-spline weight matrix at n = 200 (2.6 ms
    /// against 0.8 ms). Commands that decode or fit repeatedly call this once at start. Elsewhere
    /// than glibc it does nothing.
    public static func keepLargeBlocksInHeap() {
        nercc_keep_large_blocks_in_heap()
    }
}
