// Placeholder reference GEMM (to be replaced by the blocked, vectorized kernel).
#include "gemm.h"

#include "parallel.h"

namespace rx::cpu {

template <typename T>
static void gemm_ref(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T *A, int64_t lda,
                     const T *B, int64_t ldb, T beta, T *C, int64_t ldc) {
  parallel_for(0, M, 4, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; m++) {
      T *c = C + m * ldc;
      for (int64_t n = 0; n < N; n++) c[n] = beta == T(0) ? T(0) : beta * c[n];
      for (int64_t k = 0; k < K; k++) {
        T a = alpha * (ta ? A[k * lda + m] : A[m * lda + k]);
        if (!tb) {
          const T *b = B + k * ldb;
          for (int64_t n = 0; n < N; n++) c[n] += a * b[n];
        } else {
          for (int64_t n = 0; n < N; n++) c[n] += a * B[n * ldb + k];
        }
      }
    }
  });
}

void gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm_f64(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
              const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
  gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace rx::cpu
