// Checks the CPU GEMM and conv2d kernels (all directions, float and double) against naive loops.
// Build and run: bash test/native/run.sh   (also runs with RESNEXT_CPU_ISA=scalar for the
// portable fallback). Exit status 0 iff every case passes.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/conv2d.h"
#include "cpu/gemm.h"
#include "cpu/gemm_kernels.h"
#include "cpu/parallel.h"

using namespace rx::cpu;

static int g_fail = 0, g_pass = 0;
static std::mt19937 rng(1234);

template <typename T>
std::vector<T> randv(size_t n) {
  std::uniform_real_distribution<double> d(-1, 1);
  std::vector<T> v(n);
  for (auto &x : v) x = (T)d(rng);
  return v;
}

// Max error relative to the scale of the reference (max |ref|, at least 1) and sum of |terms|.
template <typename T>
bool close(const std::vector<T> &got, const std::vector<double> &ref, double tol, const std::string &what) {
  double scale = 1, err = 0;
  for (double r : ref) scale = std::max(scale, std::fabs(r));
  for (size_t i = 0; i < ref.size(); i++) {
    double e = std::fabs((double)got[i] - ref[i]);
    if (!(e <= err)) err = std::isnan(e) ? INFINITY : e;
  }
  bool ok = err <= tol * scale;
  if (!ok) {
    std::printf("FAIL %s: max err %.3g (scale %.3g)\n", what.c_str(), err, scale);
    g_fail++;
  } else {
    g_pass++;
  }
  return ok;
}

template <typename T>
double tol_of() {
  return sizeof(T) == 4 ? 2e-5 : 1e-12;
}

template <typename T>
void test_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, double beta) {
  const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
  auto A = randv<T>((ta ? K : M) * lda), B = randv<T>((tb ? N : K) * ldb), C = randv<T>(M * ldc);
  // beta == 0 must ignore NaN in C; padding columns (j >= N) keep finite values to check they stay.
  if (beta == 0)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = std::numeric_limits<T>::quiet_NaN();
  std::vector<double> ref(M * ldc);
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < ldc; j++) {
      if (j >= N) {
        ref[i * ldc + j] = C[i * ldc + j];
        continue;
      }
      double s = 0;
      for (int64_t k = 0; k < K; k++)
        s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
      ref[i * ldc + j] = alpha * s + (beta == 0 ? 0.0 : beta * (double)C[i * ldc + j]);
    }
  gemm<T>(ta, tb, M, N, K, (T)alpha, A.data(), lda, B.data(), ldb, (T)beta, C.data(), ldc);
  // Padding columns (j >= N) must be untouched: compare the full rows.
  char name[160];
  std::snprintf(name, sizeof name, "gemm<%s> ta=%d tb=%d M=%ld N=%ld K=%ld alpha=%g beta=%g",
                sizeof(T) == 4 ? "f32" : "f64", ta, tb, (long)M, (long)N, (long)K, alpha, beta);
  close(C, ref, tol_of<T>() * std::sqrt((double)K + 1), name);
}

struct Shape {
  int64_t N, C, H, W, K, R, S, sh, sw, ph, pw, G;
};

ConvGeom geom(const Shape &s) {
  ConvGeom g{s.N, s.C, s.H, s.W, s.K, s.R, s.S, 0, 0, s.sh, s.sw, s.ph, s.pw, s.G};
  g.P = (s.H + 2 * s.ph - s.R) / s.sh + 1;
  g.Q = (s.W + 2 * s.pw - s.S) / s.sw + 1;
  return g;
}

template <typename T>
void test_conv(const Shape &sh, bool with_bias) {
  const ConvGeom g = geom(sh);
  const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups;
  auto x = randv<T>(g.N * g.C * g.H * g.W), w = randv<T>(g.K * Cg * g.R * g.S), b = randv<T>(g.K);
  auto gy = randv<T>(g.N * g.K * g.P * g.Q);
  std::vector<double> y_ref(gy.size(), 0), gx_ref(x.size(), 0), gw_ref(w.size(), 0);
  double termscale = 0;
  for (int64_t n = 0; n < g.N; n++)
    for (int64_t k = 0; k < g.K; k++) {
      const int64_t gi = k / Kg;
      for (int64_t p = 0; p < g.P; p++)
        for (int64_t q = 0; q < g.Q; q++) {
          const int64_t yi = ((n * g.K + k) * g.P + p) * g.Q + q;
          double s = with_bias ? (double)b[k] : 0.0;
          for (int64_t c = 0; c < Cg; c++)
            for (int64_t r = 0; r < g.R; r++)
              for (int64_t t = 0; t < g.S; t++) {
                const int64_t h = p * g.stride_h - g.pad_h + r, ww = q * g.stride_w - g.pad_w + t;
                if (h < 0 || h >= g.H || ww < 0 || ww >= g.W) continue;
                const int64_t xi = ((n * g.C + gi * Cg + c) * g.H + h) * g.W + ww;
                const int64_t wi = ((k * Cg + c) * g.R + r) * g.S + t;
                s += (double)x[xi] * w[wi];
                gx_ref[xi] += (double)gy[yi] * w[wi];
                gw_ref[wi] += (double)gy[yi] * x[xi];
              }
          y_ref[yi] = s;
        }
    }
  (void)termscale;
  char name[200];
  std::snprintf(name, sizeof name, "<%s> N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld,%ld p%ld,%ld g%ld%s",
                sizeof(T) == 4 ? "f32" : "f64", (long)sh.N, (long)sh.C, (long)sh.H, (long)sh.W, (long)sh.K,
                (long)sh.R, (long)sh.S, (long)sh.sh, (long)sh.sw, (long)sh.ph, (long)sh.pw, (long)sh.G,
                with_bias ? " bias" : "");
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> y(gy.size(), nan), gx(x.size(), nan), gw(w.size(), nan);
  conv2d_forward<T>(g, x.data(), w.data(), with_bias ? b.data() : nullptr, y.data());
  const double red_f = std::sqrt((double)Cg * g.R * g.S + 1);
  close(y, y_ref, tol_of<T>() * red_f, std::string("fwd   ") + name);
  // The fused epilogue (bias-free conv, then per-channel scale/shift, optional residual, ReLU):
  // the eval-mode conv2d + batchNorm (+ add + ReLU) of inference, on every forward path.
  if (with_bias) {
    auto sc = randv<T>(g.K), res = randv<T>(gy.size());
    for (int variant = 0; variant < 3; variant++) {
      ConvEpilogue<T> e;
      e.scale = sc.data(), e.shift = b.data();
      e.residual = variant == 2 ? res.data() : nullptr;
      e.relu = variant >= 1;
      std::vector<double> ref(gy.size());
      for (size_t i = 0; i < ref.size(); i++) {
        const int64_t k = (int64_t)(i / (g.P * g.Q)) % g.K;
        double v = (y_ref[i] - b[k]) * sc[k] + b[k] + (e.residual ? (double)res[i] : 0.0);
        ref[i] = e.relu && v < 0 ? 0 : v;
      }
      std::vector<T> ye(gy.size(), nan);
      conv2d_forward<T>(g, x.data(), w.data(), e, ye.data());
      static const char *vn[] = {"scale+shift", "scale+shift+relu", "scale+shift+residual+relu"};
      close(ye, ref, tol_of<T>() * red_f * 2, std::string("fwd ") + vn[variant] + " " + name);
    }
  }
  conv2d_backward_data<T>(g, gy.data(), w.data(), gx.data());
  close(gx, gx_ref, tol_of<T>() * std::sqrt((double)Kg * g.R * g.S + 1), std::string("bwd_d ") + name);
  conv2d_backward_filter<T>(g, gy.data(), x.data(), gw.data());
  close(gw, gw_ref, tol_of<T>() * std::sqrt((double)g.N * g.P * g.Q + 1), std::string("bwd_w ") + name);
}

// The tap and tapr micro-kernels directly, every tile shape (mr <= MR, nr <= NR), odd and even
// depths (the asm bodies take two taps per step), beta 0 and 1, B rows at scattered offsets.
// Guard columns around each C row must come back untouched (masked edges).
void test_tap_kernels() {
  const GemmKernels<float> &kr = gemm_kernels_f32();
  const int MR = kr.mr, NR = kr.nr;
  for (int64_t kc : {1, 2, 3, 8, 37})
    for (int mr = 1; mr <= MR; mr++)
      for (int nr = 1; nr <= NR; nr++)
        for (int beta = 0; beta < 2; beta++)
          for (int unpacked = 0; unpacked < 2; unpacked++) {
            const int64_t lda = kc + 3, ldc = NR + 5;
            auto a = randv<float>((size_t)(MR * lda + MR * kc)), b = randv<float>((size_t)(kc * 40 + NR));
            std::vector<int64_t> offs((size_t)kc);
            for (int64_t t = 0; t < kc; t++) offs[t] = (t * 29) % (kc * 40 - 7) + 3;
            std::vector<float> c = randv<float>((size_t)(MR * ldc));
            std::vector<double> ref(c.begin(), c.end());
            const float alpha = unpacked ? 1.0f : 1.5f;
            for (int i = 0; i < mr; i++)
              for (int j = 0; j < nr; j++) {
                double acc = 0;
                for (int64_t t = 0; t < kc; t++)
                  acc += (double)(unpacked ? a[i * lda + t] : a[t * MR + i]) * b[offs[t] + j];
                ref[i * ldc + j] = alpha * acc + (beta ? ref[i * ldc + j] : 0.0);
              }
            if (unpacked)
              kr.tapr(kc, a.data(), lda, b.data(), offs.data(), c.data(), ldc, mr, nr, (float)beta);
            else
              kr.tap(kc, a.data(), b.data(), offs.data(), c.data(), ldc, mr, nr, alpha, (float)beta);
            close(c, ref, tol_of<float>() * std::sqrt((double)kc),
                  std::string(unpacked ? "tapr" : "tap") + " kc " + std::to_string(kc) + " mr " + std::to_string(mr) +
                      " nr " + std::to_string(nr) + " beta " + std::to_string(beta));
          }
}

int main(int argc, char **argv) {
  if (argc > 1) set_num_threads(std::atoi(argv[1]));
  std::printf("kernels: f32 %s (mr %d nr %d), f64 %s; threads %d\n", gemm_kernels_f32().name, gemm_kernels_f32().mr,
              gemm_kernels_f32().nr, gemm_kernels_f64().name, num_threads());
  test_tap_kernels();
  const int64_t dims[][3] = {{1, 1, 1},    {3, 5, 7},     {4, 24, 8},    {5, 25, 9},    {17, 31, 13},
                             {64, 64, 64}, {37, 130, 300}, {130, 37, 257}, {129, 1100, 40}, {300, 20, 600},
                             {7, 2000, 3}, {1, 100, 50},  {100, 1, 50},  {33, 49, 1024},
                             {6, 45, 70},  {8, 130, 300}, {2, 9, 16}};  // the last three: few-row dot path
  const double ab[][2] = {{1, 0}, {1, 1}, {0.5, -1.5}, {2, 0}, {0, 0.5}};
  for (auto &d : dims)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (auto &p : ab) {
          test_gemm<float>(ta, tb, d[0], d[1], d[2], p[0], p[1]);
          test_gemm<double>(ta, tb, d[0], d[1], d[2], p[0], p[1]);
        }
  test_gemm<float>(false, false, 5, 6, 0, 1, 0);
  test_gemm<float>(false, false, 5, 6, 0, 1, 0.5);

  // N, C, H, W, K, R, S, sh, sw, ph, pw, groups
  const Shape shapes[] = {
      {2, 8, 9, 9, 8, 3, 3, 1, 1, 1, 1, 1},        {1, 3, 11, 13, 5, 3, 3, 1, 1, 0, 0, 1},
      {2, 6, 8, 10, 4, 3, 3, 2, 2, 1, 1, 2},       {2, 6, 7, 7, 9, 3, 3, 1, 1, 1, 1, 3},
      {2, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 32},     {2, 64, 9, 9, 64, 3, 3, 2, 2, 1, 1, 32},
      {2, 128, 7, 7, 128, 3, 3, 1, 1, 1, 1, 32},   {2, 256, 14, 14, 256, 3, 3, 2, 2, 1, 1, 32},
      {2, 16, 10, 10, 16, 3, 3, 1, 1, 1, 1, 16},   {2, 16, 11, 9, 32, 3, 3, 2, 2, 1, 1, 16},
      {3, 8, 9, 9, 8, 5, 5, 1, 1, 2, 2, 8},        {1, 3, 23, 23, 16, 7, 7, 2, 2, 3, 3, 1},
      {2, 3, 30, 30, 8, 7, 7, 2, 2, 3, 3, 1},      {2, 64, 14, 14, 48, 1, 1, 1, 1, 0, 0, 1},
      {1, 37, 5, 7, 29, 1, 1, 1, 1, 0, 0, 1},      {2, 32, 9, 9, 16, 1, 1, 2, 2, 0, 0, 1},
      {2, 32, 8, 8, 64, 1, 1, 2, 2, 0, 0, 1},      {1, 300, 3, 3, 260, 1, 1, 1, 1, 0, 0, 1},
      {2, 5, 6, 11, 7, 2, 3, 1, 2, 0, 1, 1},       {2, 4, 9, 8, 4, 3, 2, 3, 1, 1, 0, 2},
      {1, 6, 5, 5, 6, 3, 3, 1, 1, 0, 0, 6},        {1, 2, 4, 4, 2, 3, 3, 1, 1, 2, 2, 1},
      {1, 4, 10, 10, 4, 2, 2, 3, 3, 0, 0, 1},      {2, 1, 12, 12, 1, 3, 3, 2, 2, 1, 1, 1},
      {8, 32, 7, 7, 32, 3, 3, 1, 1, 1, 1, 4},      {5, 64, 7, 7, 96, 1, 1, 1, 1, 0, 0, 1},
      {1, 8, 40, 40, 8, 3, 3, 1, 1, 1, 1, 2},      {1, 2, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1},
      {2, 12, 13, 6, 12, 3, 1, 2, 1, 1, 0, 3},     {1, 4, 60, 60, 4, 1, 1, 1, 1, 0, 0, 1},
      {1, 3, 23, 23, 64, 7, 7, 2, 2, 3, 3, 1},     {2, 64, 9, 9, 64, 3, 3, 1, 1, 1, 1, 2},
      {3, 64, 10, 10, 128, 3, 3, 2, 2, 1, 1, 2},   {2, 40, 33, 33, 72, 1, 1, 1, 1, 0, 0, 1},
      {3, 6, 24, 24, 8, 3, 3, 1, 1, 1, 1, 1},      {2, 3, 40, 40, 64, 7, 7, 2, 2, 3, 3, 1},
      // Group widths 16..32 on small planes: the broadcast kernel paths (issue 12), full and
      // partial vector tiles, stride 1 and 2, images batched and not.
      {2, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 32},   {3, 1024, 14, 14, 1024, 3, 3, 2, 2, 1, 1, 32},
      {2, 96, 9, 9, 96, 3, 3, 1, 1, 1, 1, 4},      {3, 80, 6, 5, 100, 3, 3, 1, 1, 1, 1, 4},
      {9, 128, 14, 14, 128, 3, 3, 1, 1, 1, 1, 8},  {2, 112, 11, 13, 136, 3, 3, 2, 2, 1, 1, 8},
      {13, 96, 4, 4, 96, 3, 3, 1, 1, 1, 1, 6},     {2, 160, 7, 7, 160, 3, 3, 1, 1, 1, 1, 8},
      {40, 24, 6, 6, 20, 3, 3, 1, 1, 1, 1, 1},     {33, 40, 5, 7, 18, 3, 3, 2, 2, 1, 1, 2},
      // Few (batch, group) tasks with many rows: B built and packed once for all row chunks, in
      // place (1x1 s1, taps past one KC block) and not (3x3 s2; 1x1 s2 with two images batched).
      {1, 600, 5, 5, 300, 1, 1, 1, 1, 0, 0, 1},    {1, 16, 9, 9, 260, 3, 3, 2, 2, 1, 1, 1},
      {2, 24, 7, 7, 272, 1, 1, 2, 2, 0, 0, 1},
      // A few pixel columns past the last full vector, as dot products (tap_conv's remainder
      // columns): 49, 196 and 18 pixels in place (shared pack and not, taps past one KC block),
      // and a padded 5x5 grid of 49 (non-in-place) with the epilogue.
      {1, 300, 7, 7, 260, 1, 1, 1, 1, 0, 0, 1},    {1, 40, 14, 14, 36, 1, 1, 1, 1, 0, 0, 1},
      {1, 520, 9, 2, 70, 1, 1, 1, 1, 0, 0, 1},     {1, 8, 5, 5, 8, 3, 3, 1, 1, 1, 1, 1},
      // Stride 2 in both axes, all four phases (x_build's two-phase row split): even and odd
      // paddings and widths.
      {2, 8, 11, 9, 8, 3, 3, 2, 2, 0, 0, 1},       {1, 8, 10, 13, 8, 5, 5, 2, 2, 2, 2, 2},
      {3, 4, 7, 8, 6, 4, 4, 2, 2, 3, 1, 2},
  };
  for (const Shape &s : shapes)
    for (int bias = 0; bias < 2; bias++) {
      test_conv<float>(s, bias);
      test_conv<double>(s, bias);
    }
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
