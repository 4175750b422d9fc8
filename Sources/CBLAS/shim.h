// OpenBLAS's CBLAS interface (Debian: libopenblas-dev; pkg-config `openblas` adds its include path).
#include <cblas.h>
