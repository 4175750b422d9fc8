// OpenBLAS's CBLAS interface (Debian: libopenblas-dev; pkg-config `openblas` adds its include path).
#include <cblas.h>

// LAPACK's least-squares driver (QR), which OpenBLAS exports with the Fortran calling convention.
// Declared here because Debian's OpenBLAS headers do not ship a LAPACK prototype for it. The single
// character argument's hidden length is not passed; LAPACK reads only its first character.
void dgels_(
    const char *trans, const int *m, const int *n, const int *nrhs, double *a, const int *lda, double *b,
    const int *ldb, double *work, const int *lwork, int *info);

// glibc's malloc serves blocks above 128 KiB from fresh mmap'd pages and hands them back on free,
// so every large matrix pays a page fault per 4 KiB on first touch. Keeping them in the heap makes
// repeated decodes reuse warm memory (see ProcessMemory.keepLargeBlocksInHeap()).
#include <stdlib.h>
#if defined(__GLIBC__)
#include <malloc.h>
static inline void nercc_keep_large_blocks_in_heap(void) {
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
}
#else
static inline void nercc_keep_large_blocks_in_heap(void) {}
#endif
