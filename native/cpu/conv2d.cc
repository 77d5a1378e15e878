// Convolution kernels of the CPU backend (NCHW activations, [K, C/groups, R, S] weights).
//
// Layout/algorithm. All three directions run on the two micro-kernels of gemm_kernels.h, and
// none materializes an im2col matrix:
//
// * Forward is an implicit GEMM per (image batch, group): y_g[Kg, pix] = W_g[Kg, Cg*R*S] * X_g.
//   The input of the group is copied once into zero-padded, stride-phase-split planes
//   (phase (a,b) holds xpad[sh*i + a][sw*j + b]) with a common row pitch; the output is computed
//   on the same pitched grid, so every filter tap (c,r,s) becomes a constant offset into that
//   buffer and a B "row" of the GEMM is simply buf + offset. Stride-2 convs thus cost no wasted
//   FLOPs and 3x3 grouped convs with 4..32 channels per group need no tiny im2col GEMMs. The few
//   junk columns of the pitched grid (pitch - Q per row) are dropped when the result is scattered
//   into y (with the bias). 1x1 stride-1 unpadded convs read x and write y in place (plain GEMM
//   on NCHW). Small images are batched (several images side by side in the pitched grid) so the
//   GEMM N dimension stays >= ~512 and weights are reused.
// * Backward-data is the same kernel on the padded gy buffer: each output phase
//   (h % sh, w % sw) of gx is a stride-1 correlation of gy with the subset of taps that reach it,
//   A[c][(k,r,s)] = w[k][c][r][s]; all phases of a task are computed, then interleaved into gx
//   in one front-to-back pass (phases that no tap reaches give zeros).
// * Backward-filter reduces over output pixels: gw_g[k][(c,r,s)] = sum_pix gy[k][pix] *
//   buf[off(c,r,s) + pix] with the forward's input buffer and gy laid out on the same pitched grid
//   (junk positions zero). With >= 32 gy rows per task it is a GEMM over pixels on the tap kernel
//   (both operands packed per 256-pixel block, filter_tap_block); with fewer rows (4..16 channels
//   per group) the dot micro-kernel runs directly on the buffers in L2-sized pixel/tap blocks.
// * Grouped convs with 16..32 channels per group on planes of <= 256 pixels (ResNeXt-50's 3x3
//   convs at 14x14 and 7x7) use the broadcast kernel instead (gemm_kernels.h, `bcast`): the vector
//   axis is the group's channels, the other operand is broadcast from the same padded phase
//   buffers, and only valid output pixels are listed (the pitched grid wasted 30-65% of the FLOPs
//   there on junk columns, and backward-filter's transposing pack cost as much as its FMAs).
//   Forward and backward-data: rows = output pixels, reduction over taps, B = the group's weights
//   as [tap][channel] (> 16 channels only); backward-filter: rows = taps, reduction over pixels,
//   B = gy transposed to [pixel][channel]. RESNEXT_CONV_BCAST=0 disables it (A/B).
//
// Parallelism: tasks over (image batch, group, row chunk) for forward/backward-data and over
// (group, row chunk) for backward-filter (so no thread reduction is needed); row chunks only when
// there are too few batches*groups for the pool. Packed weights are built once per call, scratch
// buffers are thread_local (no heap traffic in steady state).
#include "conv2d.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gemm_kernels.h"
#include "parallel.h"

namespace rx::cpu {

namespace {

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per-thread scratch, one growing vector per slot.
template <typename T>
T *tls_buf(int slot, size_t n) {
  thread_local std::vector<T> bufs[4];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot].data();
}

// Per-call scratch of the calling thread (transposed/packed weights, partial weight gradients),
// kept between calls: a fresh std::vector per call zero-filled and page-faulted up to a whole
// weight tensor (8 MB for 2048x1024) in every backward call, ~5% of a resnext50 training step.
// Separate from tls_buf, which the caller also uses when it runs tasks.
template <typename T>
T *call_buf(int slot, size_t n) {
  thread_local std::vector<T> bufs[4];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot].data();
}

// d[j] = s[stride*j]; strides 1 and 2 get constant strides so the compiler vectorizes them
// (the generic loop made x_build ~half of a stride-2 grouped conv's time).
template <typename T>
inline void copy_gather(T *d, const T *s, int64_t n, int64_t stride) {
  if (stride == 1) {
    std::memcpy(d, s, n * sizeof(T));
  } else if (stride == 2) {
    for (int64_t j = 0; j < n; j++) d[j] = s[2 * j];
  } else {
    for (int64_t j = 0; j < n; j++) d[j] = s[stride * j];
  }
}

// d0[j] = s[2j], d1[j] = s[2j + 1] for j < n (the two column phases of a stride-2 row). Restrict
// pointers let the compiler load each source vector once for both outputs.
template <typename T>
inline void deinterleave2(T *__restrict d0, T *__restrict d1, const T *__restrict s, int64_t n) {
  for (int64_t j = 0; j < n; j++) {
    d0[j] = s[2 * j];
    d1[j] = s[2 * j + 1];
  }
}

// d[2j] = s0[j], d[2j + 1] = s1[j] for j < n (deinterleave2 undone: backward-data's stride-2 rows).
template <typename T>
inline void interleave2(T *__restrict d, const T *__restrict s0, const T *__restrict s1, int64_t n) {
  for (int64_t j = 0; j < n; j++) {
    d[2 * j] = s0[j];
    d[2 * j + 1] = s1[j];
  }
}

// GEMM N (pixels) per task that keeps packed weights reused and partial slivers rare.
constexpr int64_t kTargetPix = 512;

// Forward / backward-filter view of one group's input: planes (c, a, b), each holding `nb` images
// of Hph x pitch, back to back (plane stride pl), plus a zeroed tail of `img` elements so tap
// offsets applied to junk pixels stay inside the buffer.
struct XLayout {
  bool direct;  // 1x1, stride 1, no padding: x itself is the buffer (when nb == 1)
  int64_t na, nbp, Hph, pitch, img, nb, pl, planes, ntaps, size;
};

int64_t batch_images(int64_t img, int64_t N, bool direct);

XLayout x_layout(const ConvGeom &g, int64_t nb_max) {
  XLayout L;
  L.direct = g.R == 1 && g.S == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0;
  L.na = std::min(g.stride_h, g.R);
  L.nbp = std::min(g.stride_w, g.S);
  L.Hph = g.P + (g.R - 1) / g.stride_h;
  L.pitch = g.Q + (g.S - 1) / g.stride_w;
  L.img = L.Hph * L.pitch;
  L.nb = batch_images(L.img, nb_max, L.direct);
  L.pl = L.nb * L.img;
  const int64_t Cg = g.C / g.groups;
  L.planes = Cg * L.na * L.nbp;
  L.ntaps = Cg * g.R * g.S;
  L.size = L.planes * L.pl + L.img + 64;
  return L;
}

bool x_inplace(const XLayout &L) { return L.direct && L.nb == 1; }

// offs[(c*R + r)*S + s] for a buffer with plane stride pl.
void x_offsets(const ConvGeom &g, const XLayout &L, int64_t pl, int64_t *offs) {
  const int64_t Cg = g.C / g.groups;
  for (int64_t c = 0; c < Cg; c++)
    for (int64_t r = 0; r < g.R; r++)
      for (int64_t s = 0; s < g.S; s++) {
        const int64_t plane = (c * L.na + r % g.stride_h) * L.nbp + s % g.stride_w;
        offs[(c * g.R + r) * g.S + s] = plane * pl + (r / g.stride_h) * L.pitch + s / g.stride_w;
      }
}

// Fills the group's padded phase planes; x points at (image n0, channel g*Cg). Image slots past
// nbc and the tail are zeroed (backward-filter multiplies them by zero gy, so they must be finite).
// Channels [c0, c1) only when given (c1 < 0: all); the tail is zeroed by the range that ends at Cg.
// The source is walked once, row after row (row h goes to row (h + pad_h) / sh of phase
// (h + pad_h) % sh, once per column phase). Walking it phase by phase re-read every row with
// stride 2 and made x_build 45% of a stride-2 grouped conv (256x56x56 g32, Zen 4); its per-row
// index arithmetic and fill/memcpy calls were most of what was left, so stride 1 and 3x3-style
// stride 2 (all four phases) have their own tight loops; other strides take the general one.
template <typename T>
void x_build(const ConvGeom &g, const XLayout &L, const T *x, int64_t nbc, T *buf, int64_t c0 = 0, int64_t c1 = -1) {
  const int64_t Cg = g.C / g.groups, H = g.H, W = g.W, sh = g.stride_h, sw = g.stride_w;
  if (c1 < 0) c1 = Cg;
  // Valid column range of column phase b: j with 0 <= sw*j + b - pw < W.
  thread_local std::vector<int64_t> jv;
  jv.resize(2 * (size_t)L.nbp);
  int64_t *j_lo = jv.data(), *j_hi = jv.data() + L.nbp;
  for (int64_t b = 0; b < L.nbp; b++) {
    j_lo[b] = std::min(L.pitch, std::max<int64_t>(0, cdiv(g.pad_w - b, sw)));
    j_hi[b] = std::max(j_lo[b], std::min(L.pitch, cdiv(W + g.pad_w - b, sw)));
  }
  for (int64_t c = c0; c < c1; c++)
    for (int64_t nn = 0; nn < L.nb; nn++) {
      auto row_of = [&](int64_t a, int64_t b, int64_t i) {
        return buf + ((c * L.na + a) * L.nbp + b) * L.pl + nn * L.img + i * L.pitch;
      };
      if (nn >= nbc) {
        for (int64_t ab = 0; ab < L.na * L.nbp; ab++) {
          T *dst = row_of(ab / L.nbp, ab % L.nbp, 0);
          std::fill(dst, dst + L.img, T(0));
        }
        continue;
      }
      const T *src = x + (nn * g.C + c) * H * W;
      if (sh == 2 && sw == 2 && L.na == 2 && L.nbp == 2) {
        // Stride 2 in both axes with all four phases (3x3 s2): the four image slots zeroed in
        // one go, then each source row split into its two column phases in one pass: x[h][w]
        // goes to phase ((h + ph) % 2, (w + pw) % 2), row (h + ph) / 2, column (w + pw) / 2.
        // (Row by row with per-row edge logic this was 33-45% of the grouped s2 convs.)
        T *P = row_of(0, 0, 0);
        for (int64_t ab = 0; ab < 4; ab++) std::fill(P + ab * L.pl, P + ab * L.pl + L.img, T(0));
        const int64_t be = g.pad_w & 1, je = g.pad_w >> 1, jo = (g.pad_w + 1) >> 1;
        const int64_t ne = std::max<int64_t>(0, std::min((W + 1) / 2, L.pitch - je));
        const int64_t no = std::max<int64_t>(0, std::min(W / 2, L.pitch - jo));
        const int64_t npair = std::min(ne, no);
        for (int64_t h = 0; h < H; h++) {
          const int64_t hp = h + g.pad_h, a = hp & 1, i = hp >> 1;
          if (i >= L.Hph) continue;
          T *de = P + (a * 2 + be) * L.pl + i * L.pitch + je, *dd = P + (a * 2 + (1 - be)) * L.pl + i * L.pitch + jo;
          const T *sr = src + h * W;
          deinterleave2(de, dd, sr, npair);
          if (ne > npair) de[npair] = sr[2 * npair];
        }
        continue;
      }
      // Rows that fall on padding.
      for (int64_t a = 0; a < L.na; a++)
        for (int64_t i = 0; i < L.Hph; i++) {
          const int64_t h = sh * i + a - g.pad_h;
          if (h >= 0 && h < H) continue;
          for (int64_t b = 0; b < L.nbp; b++) std::fill(row_of(a, b, i), row_of(a, b, i) + L.pitch, T(0));
        }
      if (sh == 1 && sw == 1) {
        // Stride 1 (one phase): short rows (7x7, 14x14 planes) were dominated by the per-row
        // index arithmetic and the fill/memcpy calls, so this loop keeps only plain copies.
        T *d = row_of(0, 0, g.pad_h);
        const int64_t jl = j_lo[0], jh = j_hi[0], pitch = L.pitch, hmax = std::min(H, L.Hph - g.pad_h);
        for (int64_t h = 0; h < hmax; h++, d += pitch) {
          const T *sr = src + h * W - g.pad_w;
          for (int64_t j = 0; j < jl; j++) d[j] = T(0);
          for (int64_t j = jl; j < jh; j++) d[j] = sr[j];
          for (int64_t j = jh; j < pitch; j++) d[j] = T(0);
        }
        continue;
      }
      for (int64_t h = 0; h < H; h++) {
        const int64_t hp = h + g.pad_h, a = hp % sh, i = hp / sh;
        if (a >= L.na || i >= L.Hph) continue;
        for (int64_t b = 0; b < L.nbp; b++) {
          T *d = row_of(a, b, i);
          const T *srow = src + h * W + b - g.pad_w;
          std::fill(d, d + j_lo[b], T(0));
          copy_gather(d + j_lo[b], srow + sw * j_lo[b], j_hi[b] - j_lo[b], sw);
          std::fill(d + j_hi[b], d + L.pitch, T(0));
        }
      }
    }
  if (c1 == Cg) std::fill(buf + L.planes * L.pl, buf + L.size, T(0));
}

// tap_conv's blocking: KC taps x NCB (16 x NR) pixels of B against MCB-row blocks of A; B is
// packed into KC x NR slivers when at least kPackRows rows reuse it.
constexpr int64_t kKC = 256, kMCB = 64, kPackRows = 64;

// B packed for tap_conv, all of it at once: the sliver of taps [t0, t0 + kc) and pixel columns
// [j0, j0 + NR) (t0, j0 multiples of KC, NR) at t0 * Np + j0 * kc, Np = npix rounded up to NR,
// each of its kc rows NR wide (columns past npix are not written: the kernels never read them).
inline int64_t packed_b_size(int NR, int64_t ntaps, int64_t npix) { return ntaps * cdiv(npix, NR) * NR; }

// One B sliver: d[t * NR + j] = src[offs[t] + j] for t < kc, j < nr (nr <= NR).
template <typename T>
void copy_sliver(int NR, int64_t kc, const T *src, const int64_t *offs, int64_t nr, T *d) {
  for (int64_t t = 0; t < kc; t++, d += NR) {
    const T *sp = src + offs[t];
    if (nr == NR) {
      std::memcpy(d, sp, NR * sizeof(T));
    } else {
      for (int64_t j = 0; j < nr; j++) d[j] = sp[j];
    }
  }
}

// Packs slivers [s0, s1) of the packed_b_size layout, sliver s = (tap block s / S, column tile
// s % S), S = Np / NR.
template <typename T>
void pack_b(int NR, int64_t ntaps, const T *src, const int64_t *offs, int64_t npix, T *dst, int64_t s0, int64_t s1) {
  const int64_t S = cdiv(npix, NR), Np = S * NR;
  for (int64_t si = s0; si < s1; si++) {
    const int64_t t0 = si / S * kKC, j0 = si % S * NR, kc = std::min(kKC, ntaps - t0);
    const int64_t nr = std::min<int64_t>(NR, npix - j0);
    copy_sliver(NR, kc, src + j0, offs + t0, nr, dst + t0 * Np + j0 * kc);
  }
}

// out[m][pix] = sum_t Ap[m][t] * src[offs[t] + pix] for m < M, pix < npix (Ap: panels of MR rows,
// panel stride ntaps*MR). Blocking: KC taps x NCB pixels of B against MCB-row blocks of A.
// When enough rows reuse it (M >= kPackRows), the B block is first copied into contiguous
// KC x NR slivers: read straight from NCHW planes, a sliver's KC rows sit one plane (e.g. 12.5 KB)
// apart and map onto a few L1 sets, so every micro-kernel call refetched them from L2. Few-row
// grouped convs read the buffer directly (copying would cost as much as the FMAs it feeds).
// Bpre: B already packed (pack_b, the whole matrix), shared by the tasks that split one
// group's rows, which otherwise each packed all of it (src and offs are then unused).
// lda == 0: Ap holds packed panels; lda > 0: Ap is the unpacked row-major matrix (row stride lda)
// read by kr.tapr. epi(m0, m1, n0, nc) runs on each finished block of rows [m0, m1) x pixels
// [n0, n0 + nc) while it is still in cache (the forward's bias / folded batch norm / ReLU).
// pf() runs before each micro-tile call (the forward prefetches its next task's input there).
struct NoEpi {
  template <typename... A>
  void operator()(A...) const {}
};
template <typename T, typename Epi = NoEpi, typename Pf = NoEpi>
void tap_conv(const GemmKernels<T> &kr, int64_t M, const T *Ap, int64_t ntaps, const T *src, const int64_t *offs,
              int64_t npix, T *out, int64_t ldo, int64_t lda = 0, const Epi &epi = Epi(), const T *Bpre = nullptr,
              Pf &&pf = Pf()) {
  const int MR = kr.mr, NR = kr.nr;
  const int64_t KC = kKC, MCB = kMCB, NCB = 16 * NR, Np = cdiv(npix, NR) * NR;
  if (ntaps == 0) {
    for (int64_t m = 0; m < M; m++) std::fill(out + m * ldo, out + m * ldo + npix, T(0));
    epi(0, M, 0, npix);
    return;
  }
  // A few pixel columns past the last full vector (a 7x7 plane is 3 vectors of 16 and 1 pixel, a
  // 14x14 plane 12 and 4): the tap tile would spend a whole vector of FMAs on each of them (the
  // 49-pixel convs of batch-1 inference ran at 77% of their lanes). With A as unpacked rows they
  // are dot products over the taps instead (after the tiles: rem_cols), with those columns of B
  // gathered contiguous first. ncols: the columns the tiles compute.
  const int64_t rem = npix % kr.vl;
  const bool split = lda && npix > kr.vl && rem > 0 && rem <= kr.vl / 4;
  const int64_t ncols = split ? npix - rem : npix;
  auto rem_cols = [&] {
    thread_local std::vector<T> bt_v;
    bt_v.resize((size_t)(rem * ntaps));
    T *bt = bt_v.data();
    for (int64_t t = 0; t < ntaps; t++)
      for (int64_t j = 0; j < rem; j++) bt[j * ntaps + t] = src[offs[t] + ncols + j];
    int64_t boffs[8];
    for (int64_t j = 0; j < 8; j++) boffs[j] = std::min(j, rem - 1) * ntaps;
    for (int64_t m = 0; m < M; m++) std::fill(out + m * ldo + ncols, out + m * ldo + npix, T(0));
    for (int64_t m = 0; m < M; m += kr.dmr)
      for (int64_t j = 0; j < rem; j += kr.dnt)
        kr.dot(ntaps, Ap + m * lda, lda, bt, boffs + j, out + m * ldo + ncols + j, ldo,
               (int)std::min<int64_t>(kr.dmr, M - m), (int)std::min<int64_t>(kr.dnt, rem - j));
    epi(0, M, ncols, rem);
  };
  const bool pack = !Bpre && M >= kPackRows;
  T *Bp = pack ? tls_buf<T>(2, (size_t)(KC * NCB)) : nullptr;
  thread_local std::vector<int64_t> poffs_v;
  if ((pack || Bpre) && (int64_t)poffs_v.size() < KC) poffs_v.resize(KC);
  int64_t *poffs = poffs_v.data();
  if (pack || Bpre)
    for (int64_t t = 0; t < KC; t++) poffs[t] = t * NR;
  for (int64_t t0 = 0; t0 < ntaps; t0 += KC) {
    const int64_t kc = std::min(KC, ntaps - t0);
    const T beta = t0 == 0 ? T(0) : T(1);
    for (int64_t n0 = 0; n0 < ncols; n0 += NCB) {
      const int64_t nc = std::min(NCB, ncols - n0);
      if (pack) {
        for (int64_t js = 0; js < nc; js += NR)
          copy_sliver(NR, kc, src + n0 + js, offs + t0, std::min<int64_t>(NR, nc - js), Bp + js * kc);
      }
      for (int64_t mc0 = 0; mc0 < M; mc0 += MCB) {
        const int64_t mc1 = std::min(M, mc0 + MCB);
        for (int64_t js = 0; js < nc; js += NR) {
          const int nr = (int)std::min<int64_t>(NR, nc - js);
          const T *bsrc = Bpre ? Bpre + t0 * Np + (n0 + js) * kc : pack ? Bp + js * kc : src + n0 + js;
          const int64_t *bo = pack || Bpre ? poffs : offs + t0;
          for (int64_t m = mc0; m < mc1; m += MR) {
            const int mr = (int)std::min<int64_t>(MR, M - m);
            pf();
            if (lda)
              kr.tapr(kc, Ap + m * lda + t0, lda, bsrc, bo, out + m * ldo + n0 + js, ldo, mr, nr, beta);
            else
              kr.tap(kc, Ap + m * ntaps + t0 * MR, bsrc, bo, out + m * ldo + n0 + js, ldo, mr, nr, T(1), beta);
          }
        }
        if (t0 + kc >= ntaps) epi(mc0, mc1, n0, nc);
      }
    }
  }
  if (split) rem_cols();
}

// Runs fn(task) for task in [0, ntasks) on the pool, handing out tasks dynamically: task costs
// differ (partial image batches, edge row chunks) and parallel_for's static halves left one
// thread idle on 7x7 shapes.
template <typename F>
void run_tasks(int64_t ntasks, F &&fn) {
  std::atomic<int64_t> next{0};
  parallel_for(0, std::min<int64_t>(num_threads(), ntasks), 1, [&](int64_t, int64_t) {
    for (int64_t t; (t = next.fetch_add(1)) < ntasks;) fn(t);
  });
}

// Like run_tasks, but each thread claims its next task before it runs the current one and gets
// its index (-1: none), so it can prefetch that task's input while it computes.
template <typename F>
void run_tasks_ahead(int64_t ntasks, F &&fn) {
  std::atomic<int64_t> next{0};
  parallel_for(0, std::min<int64_t>(num_threads(), ntasks), 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1); t < ntasks;) {
      const int64_t tn = next.fetch_add(1);
      fn(t, tn < ntasks ? tn : -1);
      t = tn;
    }
  });
}

// Cache lines of up to 16 byte ranges, `per` of them per call: spread over a task's micro-kernel
// calls (a burst of prefetches would fill the miss buffers and stall the FMAs behind them).
struct PrefetchStream {
  const char *lo[16], *hi[16];
  int n = 0, cur = 0;
  int64_t per = 0;
  void add(const void *p, int64_t bytes) {
    if (n < 16 && bytes > 0) lo[n] = (const char *)p, hi[n] = (const char *)p + bytes, n++;
  }
  int64_t lines() const {
    int64_t s = 0;
    for (int i = 0; i < n; i++) s += (hi[i] - lo[i] + 63) / 64;
    return s;
  }
  void operator()() {
    for (int64_t k = 0; k < per && cur < n; k++) {
      __builtin_prefetch(lo[cur], 0, 2);
      lo[cur] += 64;
      if (lo[cur] >= hi[cur]) cur++;
    }
  }
};

// An input this large is mostly not in cache when a conv starts (batch 8 at 56x56: 12.8-25.7 MB),
// so prefetching the next task's part pays; a smaller one (a batch-1 inference's 3.2 MB) is
// usually still in L2/L3, and the prefetches only cost (8% at batch 1, 256x56x56 s2).
inline bool input_far(const ConvGeom &g, size_t elem) {
  return (double)g.N * g.C * g.H * g.W * (double)elem >= double(8 << 20);
}

// Images per batch: about kTargetPix / img, rounded so batches have equal sizes when possible.
// Direct (1x1, stride 1) convs also run image by image, reading x and writing y in place, when one
// plane fills the kernel's column tiles well (>= 90%: 196 pixels are 13 vectors of 16, the last
// with 4 used); batching images there only added a copy in and a scatter out. A 7x7 plane (49 of
// 64 lanes) is still batched.
int64_t batch_images(int64_t img, int64_t N, bool direct) {
  const int64_t lanes = gemm_kernels<float>().vl;
  if (direct && (img >= kTargetPix || (double)img / (double)(cdiv(img, lanes) * lanes) >= 0.9)) return 1;
  const int64_t nb0 = std::clamp<int64_t>(cdiv(kTargetPix, img), 1, N);
  for (int64_t nb = nb0; nb <= std::min(N, 2 * nb0); nb++)
    if (N % nb == 0) return nb;
  return nb0;
}

// Packs A[m][t] = col(t)[m * mstride] (rows [0, M), taps [0, ntaps)) into MR-row panels. Taps
// [t0, t1) only. Written panel by panel, front to back (MR values of each tap's column at a
// time): walking tap by tap wrote every value to a different panel, ntaps * MR apart, and packing
// ResNeXt-50's 2048x1024 1x1 weights took 17% of its backward-data at 7x7.
template <typename T, typename F>
void pack_panels_cols(int MR, int64_t M, int64_t ntaps, int64_t t0, int64_t t1, T *dst, int64_t mstride, F col) {
  thread_local std::vector<const T *> cols_v;
  cols_v.resize((size_t)std::max<int64_t>(0, t1 - t0));
  const T **cols = cols_v.data();
  for (int64_t t = t0; t < t1; t++) cols[t - t0] = col(t);
  for (int64_t m0 = 0; m0 < M; m0 += MR) {
    T *d = dst + (m0 / MR) * ntaps * MR + t0 * MR;
    const int64_t mr = std::min<int64_t>(MR, M - m0);
    for (int64_t t = t0; t < t1; t++, d += MR) {
      const T *src = cols[t - t0] + m0 * mstride;
      int64_t i = 0;
      for (; i < mr; i++) d[i] = src[i * mstride];
      for (; i < MR; i++) d[i] = T(0);
    }
  }
}

// The broadcast kernel (gemm_kernels.h) for grouped convs whose group width fits its vector tile
// and whose planes are small (7x7..14x14: the padded-grid GEMMs there wasted 30-65% of their
// FLOPs on junk columns and spent as long packing as computing). RESNEXT_CONV_BCAST=0 turns it off
// (A/B measurements).
// Forward and backward-data (rows = pixels) need two vectors' worth of channels to beat the
// padded-grid path (one zmm per row, 16 channels: 0.88x at 512x14x14); backward-filter
// (rows = taps) wins from 16 channels on (2x at 512x14x14), and with AVX2's 16-wide tile also at
// 32 channels in two column passes (1024x14x14 s2 bwd_w 8.3 -> 5.7 ms in bench:ops on Zen 3;
// the pixel-row directions did not gain from two passes).
template <typename T>
bool use_bcast(const GemmKernels<T> &kr, int64_t width, int64_t plane, bool pixel_rows) {
  static const bool on = [] {
    const char *e = std::getenv("RESNEXT_CONV_BCAST");
    return !(e && e[0] == '0');
  }();
  const int64_t lo = pixel_rows ? kr.bnr / 2 + 1 : 16;
  const int64_t hi = pixel_rows ? kr.bnr : std::max<int64_t>(kr.bnr, 32);
  return on && width >= lo && width <= hi && plane <= 256;
}

// kr.bcast over any number of columns nr: blocks of the kernel's bnr columns (AVX2's 16-wide
// tile takes a 32-channel group's backward-filter in two passes over the same broadcast rows).
template <typename T>
void bcast_cols(const GemmKernels<T> &kr, int64_t kc, const T *a, const int64_t *ra, int mr, const int64_t *ca,
                const T *b, int64_t ldb, int64_t nr, T *c, int64_t ldc, bool acc) {
  for (int64_t j0 = 0; j0 < nr; j0 += kr.bnr)
    kr.bcast(kc, a, ra, mr, ca, b + j0, ldb, (int)std::min<int64_t>(kr.bnr, nr - j0), c + j0, ldc, acc);
}

// dst[pix][k] = src[k][pix] for k < rows, pix < n (one image plane of a group, transposed).
template <typename T>
void gy_transpose(const T *src, int64_t rows, int64_t n, T *dst) {
  for (int64_t p0 = 0; p0 < n; p0 += 16) {
    const int64_t p1 = std::min(n, p0 + 16);
    for (int64_t k = 0; k < rows; k++)
      for (int64_t p = p0; p < p1; p++) dst[p * rows + k] = src[k * n + p];
  }
}

// Number of row chunks per (batch, group) so the pool gets >= 2 tasks per thread.
int64_t row_chunks(int64_t base_tasks, int64_t M, int MR) {
  const int64_t want = 2 * num_threads();
  if (base_tasks >= want) return 1;
  return std::clamp<int64_t>(cdiv(want, base_tasks), 1, cdiv(M, MR));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
template <typename T>
void conv2d_forward(const ConvGeom &g, const T *x, const T *w, const T *bias, T *y) {
  ConvEpilogue<T> e;
  e.shift = bias;
  conv2d_forward(g, x, w, e, y);
}

template <typename T>
void conv2d_forward(const ConvGeom &g, const T *x, const T *w, const ConvEpilogue<T> &e, T *y) {
  const GemmKernels<T> &kr = gemm_kernels<T>();
  const int64_t G = g.groups, Cg = g.C / G, Kg = g.K / G, PQ = g.P * g.Q, HW = g.H * g.W;
  const XLayout L = x_layout(g, g.N);
  const int64_t ntaps = L.ntaps;
  const bool inplace = x_inplace(L);

  const int64_t nbatches = cdiv(g.N, L.nb), base = nbatches * G;
  const int64_t chunks = row_chunks(base, Kg, kr.mr);
  if (!inplace && chunks == 1 && use_bcast(kr, Kg, PQ, true)) {
    // Rows = the valid output pixels, reduction over taps, columns = the group's Kg channels:
    // yT[pix][k] = sum_t buf[base[pix] + offs[t]] * wT[t][k], scattered into y with the bias.
    std::vector<int64_t> offs((size_t)ntaps);
    x_offsets(g, L, L.pl, offs.data());
    T *wT = call_buf<T>(0, (size_t)(G * ntaps * Kg));
    parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t gi = g0; gi < g1; gi++)
        for (int64_t t = 0; t < ntaps; t++)  // written in order (reads are the strided side)
          for (int64_t k = 0; k < Kg; k++) wT[(gi * ntaps + t) * Kg + k] = w[(gi * Kg + k) * ntaps + t];
    });
    run_tasks(base, [&](int64_t task) {
      const int64_t bi = task / G, gi = task % G, BM = kr.bmr;
      const int64_t n0 = bi * L.nb, nbc = std::min(L.nb, g.N - n0), len = nbc * PQ;
      T *buf = tls_buf<T>(0, (size_t)L.size);
      x_build(g, L, x + (n0 * g.C + gi * Cg) * HW, nbc, buf);
      thread_local std::vector<int64_t> pix_v;
      if ((int64_t)pix_v.size() < len) pix_v.resize((size_t)len);
      int64_t *pix = pix_v.data();
      for (int64_t nn = 0; nn < nbc; nn++)
        for (int64_t p = 0; p < g.P; p++)
          for (int64_t q = 0; q < g.Q; q++) pix[nn * PQ + p * g.Q + q] = nn * L.img + p * L.pitch + q;
      T *tile = tls_buf<T>(1, (size_t)(BM * Kg));
      const T *wg = wT + gi * ntaps * Kg;
      for (int64_t i0 = 0; i0 < len; i0 += BM) {
        const int64_t mr = std::min(BM, len - i0);
        bcast_cols(kr, ntaps, buf, pix + i0, (int)mr, offs.data(), wg, Kg, Kg, tile, Kg, false);
        for (int64_t i = 0; i < mr; i++) {
          const int64_t nn = (i0 + i) / PQ, pq = (i0 + i) % PQ;
          T *dst = y + ((n0 + nn) * g.K + gi * Kg) * PQ + pq;
          const T *src = tile + i * Kg;
          if (e.identity()) {
            for (int64_t k = 0; k < Kg; k++) dst[k * PQ] = src[k];
          } else {
            const int64_t yi = dst - y;
            for (int64_t k = 0; k < Kg; k++) dst[k * PQ] = e.value(gi * Kg + k, src[k], yi + k * PQ);
          }
        }
      }
    });
    return;
  }

  // Weights are read in place by the unpacked-A kernel (tapr); packing them cost 12% of a
  // batch-1 inference (every weight read and written once more per call).
  std::vector<int64_t> offs((size_t)ntaps);
  x_offsets(g, L, inplace ? HW : L.pl, offs.data());

  const int64_t rows = cdiv(cdiv(Kg, kr.mr), chunks) * kr.mr;
  // Rows [m0, m1) of (batch bi, group gi) from its B operand src (npix columns at offs), or from
  // Bpre (src packed once for all the row chunks).
  PrefetchStream none;
  auto rows_task = [&](int64_t bi, int64_t gi, int64_t m0, int64_t m1, const T *src, const T *Bpre,
                       PrefetchStream *pfs) {
    const int64_t n0 = bi * L.nb, nbc = std::min(L.nb, g.N - n0);
    const T *Ap = w + (gi * Kg + m0) * ntaps;
    const int64_t lda = ntaps;
    if (inplace) {
      T *out = y + (n0 * g.K + gi * Kg + m0) * PQ;
      auto epi = [&](int64_t r0, int64_t r1, int64_t c0, int64_t nc) {
        if (e.identity()) return;
        for (int64_t m = r0; m < r1; m++) {
          T *row = out + m * PQ + c0;
          e.row(gi * Kg + m0 + m, row, row, nc, row - y);
        }
      };
      tap_conv(kr, m1 - m0, Ap, ntaps, src, offs.data(), PQ, out, PQ, lda, epi, Bpre);
      return;
    }
    T *out = tls_buf<T>(1, (size_t)((m1 - m0) * L.pl));
    tap_conv(kr, m1 - m0, Ap, ntaps, src, offs.data(), nbc * L.img, out, L.pl, lda, NoEpi(), Bpre, *pfs);
    for (int64_t nn = 0; nn < nbc; nn++)
      for (int64_t m = m0; m < m1; m++) {
        const int64_t k = gi * Kg + m;
        T *dst = y + ((n0 + nn) * g.K + k) * PQ;
        const T *sp = out + (m - m0) * L.pl + nn * L.img;
        for (int64_t p = 0; p < g.P; p++) e.row(k, dst + p * g.Q, sp + p * L.pitch, g.Q, dst + p * g.Q - y);
      }
  };
  if (chunks > 1 && rows >= kPackRows) {
    // Few (batch, group) tasks (batch 1 of an ungrouped conv): their rows are split over the
    // threads, and each chunk packed the whole B (x_build as well, when not in place) for
    // itself, 4x the copying of a single pass. B is built and packed once, in parallel, and shared.
    for (int64_t bt = 0; bt < base; bt++) {
      const int64_t bi = bt / G, gi = bt % G, n0 = bi * L.nb, nbc = std::min(L.nb, g.N - n0);
      const T *src = x + (n0 * g.C + gi * Cg) * HW;
      const int64_t npix = inplace ? PQ : nbc * L.img;
      if (!inplace) {
        T *buf = call_buf<T>(0, (size_t)L.size);
        parallel_for(0, Cg, 8, [&](int64_t c0, int64_t c1) { x_build(g, L, src, nbc, buf, c0, c1); });
        src = buf;
      }
      T *Bp = call_buf<T>(1, (size_t)packed_b_size(kr.nr, ntaps, npix));
      parallel_for(0, cdiv(ntaps, kKC) * cdiv(npix, kr.nr), 4, [&](int64_t s0, int64_t s1) {
        pack_b(kr.nr, ntaps, src, offs.data(), npix, Bp, s0, s1);
      });
      run_tasks(chunks, [&](int64_t ci) {
        const int64_t m0 = ci * rows, m1 = std::min(Kg, m0 + rows);
        if (m0 < m1) rows_task(bi, gi, m0, m1, src, Bp, &none);
      });
    }
    return;
  }
  // Non-in-place tasks copy their input (x_build) from x, often far out of cache (25.7 MB for
  // ResNeXt-50's 256x56x56 stride-2 grouped conv at batch 8): each task prefetches the next one's
  // input under its own FMAs.
  const bool far = input_far(g, sizeof(T));
  run_tasks_ahead(base * chunks, [&](int64_t task, int64_t next) {
    const int64_t bi = task / (G * chunks), gi = task / chunks % G, ci = task % chunks;
    const int64_t n0 = bi * L.nb, nbc = std::min(L.nb, g.N - n0);
    const int64_t m0 = ci * rows, m1 = std::min(Kg, m0 + rows);
    if (m0 >= m1) return;
    const T *xg = x + (n0 * g.C + gi * Cg) * HW;
    if (inplace) return rows_task(bi, gi, m0, m1, xg, nullptr, &none);
    T *buf = tls_buf<T>(0, (size_t)L.size);
    x_build(g, L, xg, nbc, buf);
    PrefetchStream pfs;
    if (far && next >= 0 && next / chunks != task / chunks) {
      const int64_t nbi = next / (G * chunks), ngi = next / chunks % G, nn0 = nbi * L.nb;
      for (int64_t nn = 0; nn < std::min(L.nb, g.N - nn0); nn++)
        pfs.add(x + ((nn0 + nn) * g.C + ngi * Cg) * HW, Cg * HW * (int64_t)sizeof(T));
      const int64_t calls = cdiv(m1 - m0, kr.mr) * cdiv(nbc * L.img, kr.nr) * cdiv(ntaps, kKC);
      pfs.per = cdiv(pfs.lines(), calls) + 1;
    }
    rows_task(bi, gi, m0, m1, buf, nullptr, &pfs);
  });
}

// ---------------------------------------------------------------------------------------------
namespace {

// One output phase of backward-data: gx rows e + sh*i (i < He), columns f + sw*j (j < Wf), and
// the taps (k, r, s) that reach it with their gy row/column shifts dr, dc.
struct DPhase {
  int64_t e, f, He, Wf;
  std::vector<int64_t> k, r, s, dr, dc;
};

// Exact floor division for possibly negative numerators.
inline int64_t fdiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace

template <typename T>
void conv2d_backward_data(const ConvGeom &g, const T *gy, const T *w, T *gx) {
  const GemmKernels<T> &kr = gemm_kernels<T>();
  const int64_t G = g.groups, Cg = g.C / G, Kg = g.K / G, PQ = g.P * g.Q, HW = g.H * g.W;
  const int64_t sh = g.stride_h, sw = g.stride_w, RS = g.R * g.S;

  // gx[h] receives gy[p] through tap r iff h + ph - r = sh*p.
  // Only phases e < H, f < W hold gx pixels: a stride beyond the input costs nothing extra.
  const int64_t eh = std::min(sh, g.H), ew = std::min(sw, g.W);
  std::vector<DPhase> phases;
  int64_t padT = 0, padB = 0, padL = 0, padR = 0;
  for (int64_t e = 0; e < eh; e++)
    for (int64_t f = 0; f < ew; f++) {
      DPhase ph;
      ph.e = e, ph.f = f, ph.He = std::max<int64_t>(0, cdiv(g.H - e, sh)), ph.Wf = std::max<int64_t>(0, cdiv(g.W - f, sw));
      if (ph.He == 0 || ph.Wf == 0) continue;
      for (int64_t k = 0; k < Kg; k++)
        for (int64_t r = 0; r < g.R; r++) {
          if ((e + g.pad_h - r) % sh != 0) continue;
          for (int64_t s = 0; s < g.S; s++) {
            if ((f + g.pad_w - s) % sw != 0) continue;
            const int64_t dr = fdiv(e + g.pad_h - r, sh), dc = fdiv(f + g.pad_w - s, sw);
            ph.k.push_back(k), ph.r.push_back(r), ph.s.push_back(s), ph.dr.push_back(dr), ph.dc.push_back(dc);
            padT = std::max(padT, -dr), padL = std::max(padL, -dc);
            padB = std::max(padB, ph.He - 1 + dr - (g.P - 1));
            padR = std::max(padR, ph.Wf - 1 + dc - (g.Q - 1));
          }
        }
      phases.push_back(std::move(ph));
    }
  const int64_t Hg = padT + g.P + padB, Wg = padL + g.Q + padR, img = Hg * Wg;
  const bool direct = g.R == 1 && g.S == 1 && sh == 1 && sw == 1 && g.pad_h == 0 && g.pad_w == 0;
  const int64_t nb = batch_images(img, g.N, direct);
  const bool inplace = direct && nb == 1;
  const int64_t pl = inplace ? PQ : nb * img, bufsize = Kg * pl + img + 64;
  const int64_t Mp = cdiv(Cg, kr.mr) * kr.mr;

  // Per phase: tap offsets into the gy buffer and packed weights for every group.
  const size_t nph = phases.size();
  std::vector<std::vector<int64_t>> offs(nph);
  std::vector<size_t> wp_at(nph + 1, 0);  // phase pi's packed weights: [wp_at[pi], wp_at[pi + 1])
  for (size_t pi = 0; pi < nph; pi++) {
    const DPhase &ph = phases[pi];
    const int64_t nt = (int64_t)ph.k.size();
    offs[pi].resize(nt);
    for (int64_t t = 0; t < nt; t++) offs[pi][t] = ph.k[t] * pl + (ph.dr[t] + padT) * Wg + ph.dc[t] + padL;
    wp_at[pi + 1] = wp_at[pi] + (size_t)(G * Mp * nt);
  }
  if (!inplace && row_chunks(cdiv(g.N, nb) * G, Cg, kr.mr) == 1 && use_bcast(kr, Cg, HW, true)) {
    // Per phase: rows = the phase's gx pixels, reduction over its taps (k, r, s), columns = the
    // group's Cg input channels: gxT[pix][c] = sum_t gybuf[base[pix] + offs[t]] * wB[t][c].
    std::vector<size_t> wB_at(nph + 1, 0);
    bool all_reached = true;
    for (int64_t e = 0; e < sh; e++)
      for (int64_t f = 0; f < sw; f++) {
        bool found = false;
        for (const DPhase &ph : phases) found |= ph.e == e && ph.f == f && !ph.k.empty();
        all_reached &= found || e >= g.H || f >= g.W;
      }
    for (size_t pi = 0; pi < nph; pi++) wB_at[pi + 1] = wB_at[pi] + (size_t)(G * phases[pi].k.size() * Cg);
    T *wB = call_buf<T>(1, wB_at[nph]);
    parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t gi = g0; gi < g1; gi++)
        for (size_t pi = 0; pi < nph; pi++) {
          const DPhase &ph = phases[pi];
          const int64_t nt = (int64_t)ph.k.size();
          T *dst = wB + wB_at[pi] + gi * nt * Cg;
          for (int64_t t = 0; t < nt; t++)
            for (int64_t c = 0; c < Cg; c++)
              dst[t * Cg + c] = w[((gi * Kg + ph.k[t]) * Cg + c) * RS + ph.r[t] * g.S + ph.s[t]];
        }
    });
    const int64_t nbatches = cdiv(g.N, nb);
    run_tasks(nbatches * G, [&](int64_t task) {
      const int64_t bi = task / G, gi = task % G, BM = kr.bmr;
      const int64_t n0 = bi * nb, nbc = std::min(nb, g.N - n0);
      const T *gyg = gy + (n0 * g.K + gi * Kg) * PQ;
      if (!all_reached)
        for (int64_t nn = 0; nn < nbc; nn++) {
          T *dst = gx + ((n0 + nn) * g.C + gi * Cg) * HW;
          std::fill(dst, dst + Cg * HW, T(0));
        }
      T *buf = tls_buf<T>(0, (size_t)bufsize);
      for (int64_t k = 0; k < Kg; k++)
        for (int64_t nn = 0; nn < nb; nn++) {
          T *dst = buf + k * pl + nn * img;
          if (nn >= nbc) {
            std::fill(dst, dst + img, T(0));
            continue;
          }
          const T *src = gyg + (nn * g.K + k) * PQ;
          std::fill(dst, dst + padT * Wg, T(0));
          for (int64_t p = 0; p < g.P; p++) {
            T *d = dst + (padT + p) * Wg;
            std::fill(d, d + padL, T(0));
            std::memcpy(d + padL, src + p * g.Q, g.Q * sizeof(T));
            std::fill(d + padL + g.Q, d + Wg, T(0));
          }
          std::fill(dst + (padT + g.P) * Wg, dst + img, T(0));
        }
      std::fill(buf + Kg * pl, buf + bufsize, T(0));
      thread_local std::vector<int64_t> pix_v, out_v;
      T *tile = tls_buf<T>(1, (size_t)(BM * Cg));
      for (size_t pi = 0; pi < nph; pi++) {
        const DPhase &ph = phases[pi];
        const int64_t nt = (int64_t)ph.k.size(), ppi = ph.He * ph.Wf, len = nbc * ppi;
        if (nt == 0 || len == 0) continue;
        if ((int64_t)pix_v.size() < len) pix_v.resize((size_t)len), out_v.resize((size_t)len);
        int64_t *pix = pix_v.data(), *outp = out_v.data();
        for (int64_t nn = 0; nn < nbc; nn++)
          for (int64_t i = 0; i < ph.He; i++)
            for (int64_t j = 0; j < ph.Wf; j++) {
              pix[nn * ppi + i * ph.Wf + j] = nn * img + i * Wg + j;
              outp[nn * ppi + i * ph.Wf + j] = nn * g.C * HW + (ph.e + sh * i) * g.W + ph.f + sw * j;
            }
        const T *wg = wB + wB_at[pi] + gi * nt * Cg;
        T *gxg = gx + (n0 * g.C + gi * Cg) * HW;
        for (int64_t i0 = 0; i0 < len; i0 += BM) {
          const int64_t mr = std::min(BM, len - i0);
          bcast_cols(kr, nt, buf, pix + i0, (int)mr, offs[pi].data(), wg, Cg, Cg, tile, Cg, false);
          for (int64_t i = 0; i < mr; i++) {
            T *dst = gxg + outp[i0 + i];
            const T *src = tile + i * Cg;
            for (int64_t c = 0; c < Cg; c++) dst[c * HW] = src[c];
          }
        }
      }
    });
    return;
  }
  T *wp = call_buf<T>(0, wp_at[nph]);
  const int64_t TCH = 8;  // tap chunks, so G == 1 packs in parallel too
  parallel_for(0, G * (int64_t)nph * TCH, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const int64_t gi = i / ((int64_t)nph * TCH), pi = i / TCH % (int64_t)nph, ch = i % TCH;
      const DPhase &ph = phases[pi];
      const int64_t nt = (int64_t)ph.k.size(), step = cdiv(nt, TCH);
      pack_panels_cols(kr.mr, Cg, nt, ch * step, std::min(nt, (ch + 1) * step), wp + wp_at[pi] + gi * Mp * nt, RS,
                       [&](int64_t t) { return w + (gi * Kg + ph.k[t]) * Cg * RS + ph.r[t] * g.S + ph.s[t]; });
    }
  });

  // phase_of[e*ew + f]: index into phases of output phase (e, f), -1 when no tap reaches it.
  std::vector<int64_t> phase_of((size_t)(eh * ew), -1);
  for (size_t pi = 0; pi < nph; pi++)
    if (!phases[pi].k.empty()) phase_of[phases[pi].e * ew + phases[pi].f] = (int64_t)pi;

  const int64_t nbatches = cdiv(g.N, nb), base = nbatches * G;
  const int64_t chunks = row_chunks(base, Cg, kr.mr);
  const int64_t rows = cdiv(cdiv(Cg, kr.mr), chunks) * kr.mr;
  run_tasks(base * chunks, [&](int64_t task) {
    {
      const int64_t bi = task / (G * chunks), gi = task / chunks % G, ci = task % chunks;
      const int64_t n0 = bi * nb, nbc = std::min(nb, g.N - n0);
      const int64_t m0 = ci * rows, m1 = std::min(Cg, m0 + rows);
      if (m0 >= m1) return;
      const T *gyg = gy + (n0 * g.K + gi * Kg) * PQ;
      if (inplace) {
        const int64_t nt = (int64_t)phases[0].k.size();
        tap_conv(kr, m1 - m0, wp + wp_at[0] + gi * Mp * nt + m0 * nt, nt, gyg, offs[0].data(), PQ,
                 gx + (n0 * g.C + gi * Cg + m0) * HW, HW);
        return;
      }
      // gy of this group, zero-padded by (padT, padB, padL, padR), images side by side.
      T *buf = tls_buf<T>(0, (size_t)bufsize);
      for (int64_t k = 0; k < Kg; k++)
        for (int64_t nn = 0; nn < nb; nn++) {
          T *dst = buf + k * pl + nn * img;
          if (nn >= nbc) {
            std::fill(dst, dst + img, T(0));
            continue;
          }
          const T *src = gyg + (nn * g.K + k) * PQ;
          std::fill(dst, dst + padT * Wg, T(0));
          for (int64_t p = 0; p < g.P; p++) {
            T *d = dst + (padT + p) * Wg;
            std::fill(d, d + padL, T(0));
            std::memcpy(d + padL, src + p * g.Q, g.Q * sizeof(T));
            std::fill(d + padL + g.Q, d + Wg, T(0));
          }
          std::fill(dst + (padT + g.P) * Wg, dst + img, T(0));
        }
      std::fill(buf + Kg * pl, buf + bufsize, T(0));
      // All phases first, then one interleaving pass that writes every gx row once, front to back
      // (scattering phase by phase touched each output line sh*sw times).
      const int64_t M = m1 - m0;
      T *out = tls_buf<T>(1, (size_t)(nph * M * pl));
      for (size_t pi = 0; pi < nph; pi++) {
        const int64_t nt = (int64_t)phases[pi].k.size();
        if (nt == 0) continue;
        tap_conv(kr, M, wp + wp_at[pi] + gi * Mp * nt + m0 * nt, nt, buf, offs[pi].data(), nbc * img,
                 out + pi * M * pl, pl);
      }
      // Each gx row interleaves the column phases of its row phase. The phase planes of a channel
      // are looked up once (per row, the lookups were 44% of a 256x56x56 s2 grouped backward-data).
      thread_local std::vector<const T *> ps_v;
      ps_v.resize((size_t)(eh * ew));
      const T **ps = ps_v.data();
      for (int64_t nn = 0; nn < nbc; nn++)
        for (int64_t c = m0; c < m1; c++) {
          T *dst = gx + ((n0 + nn) * g.C + gi * Cg + c) * HW;
          for (int64_t q = 0; q < eh * ew; q++)
            ps[q] = phase_of[q] < 0 ? nullptr : out + (phase_of[q] * M + c - m0) * pl + nn * img;
          for (int64_t h = 0; h < g.H; h++) {
            T *drow = dst + h * g.W;
            const int64_t e = h % sh, off = h / sh * Wg;
            const T *s0 = ps[e * ew] ? ps[e * ew] + off : nullptr;
            const T *s1 = ew > 1 && ps[e * ew + 1] ? ps[e * ew + 1] + off : nullptr;
            if (sw == 1) {
              if (s0) std::memcpy(drow, s0, g.W * sizeof(T));
              else std::fill(drow, drow + g.W, T(0));
            } else if (sw == 2 && ew == 2 && s0 && s1) {
              interleave2(drow, s0, s1, g.W / 2);
              if (g.W % 2) drow[g.W - 1] = s0[g.W / 2];
            } else {
              for (int64_t f = 0; f < ew; f++) {
                const T *sp = ps[e * ew + f] ? ps[e * ew + f] + off : nullptr;
                for (int64_t j = 0, w = f; w < g.W; j++, w += sw) drow[w] = sp ? sp[j] : T(0);
              }
            }
          }
        }
    }
  });
}

namespace {

// Rows of gy per task from which backward-filter uses the tap kernel instead of dot products.
constexpr int64_t kTapRows = 32;

// gw[m][t] += sum_{p<len} gy[m*lda + p] * xs[offs[t] + p] for m < M, t < ntaps, as a GEMM over
// pixels on the (faster) tap micro-kernel: per block of PB pixels, gy is packed into MR-row
// panels (A[p][m]) and the tap rows of x into NR-tap slivers (B[p][t], a transpose), then every
// MR x NR tile of gw accumulates with beta = 1. The transposing pack costs ~one store per x
// element per block, repaid when M >= kTapRows rows reuse each sliver.
template <typename T>
void filter_tap_block(const GemmKernels<T> &kr, int64_t M, int64_t ntaps, const T *gys, int64_t lda, const T *xs,
                      const int64_t *offs, int64_t len, T *gw) {
  const int MR = kr.mr, NR = kr.nr;
  const int64_t PB = 256, Mp = cdiv(M, MR) * MR, Np = cdiv(ntaps, NR) * NR;
  T *Ap = tls_buf<T>(2, (size_t)(Mp * PB));
  T *Bp = tls_buf<T>(3, (size_t)(Np * PB));
  thread_local std::vector<int64_t> poffs_v;
  if ((int64_t)poffs_v.size() < PB) poffs_v.resize(PB);
  int64_t *poffs = poffs_v.data();
  for (int64_t t = 0; t < PB; t++) poffs[t] = t * NR;
  for (int64_t p0 = 0; p0 < len; p0 += PB) {
    const int64_t pc = std::min(PB, len - p0);
    // Both packs write contiguously and read MR (NR) sequential streams: scattered stores (one
    // per 96 B line) made packing cost as much as the FMAs (perf: 43% of 1x1 backward-filter).
    const T *rows[64];
    for (int64_t m0 = 0; m0 < Mp; m0 += MR) {
      T *dst = Ap + m0 * pc;
      const int mr = (int)std::min<int64_t>(MR, M - m0);
      for (int i = 0; i < mr; i++) rows[i] = gys + (m0 + i) * lda + p0;
      for (int64_t p = 0; p < pc; p++, dst += MR) {
        for (int i = 0; i < mr; i++) dst[i] = rows[i][p];
        for (int i = mr; i < MR; i++) dst[i] = T(0);
      }
    }
    for (int64_t t0 = 0; t0 < Np; t0 += NR) {
      T *const dst = Bp + t0 * pc;
      const int nr = (int)std::min<int64_t>(NR, ntaps - t0);
      for (int j = 0; j < nr; j++) rows[j] = xs + offs[t0 + j] + p0;
      // 16-pixel runs per stream: the NR tap rows of a 1x1 conv sit one image plane apart and
      // share a few L1 sets, so reading them one pixel at a time missed L1 on every load.
      for (int64_t q0 = 0; q0 < pc; q0 += 16) {
        const int64_t q1 = std::min(pc, q0 + 16);
        for (int j = 0; j < nr; j++) {
          const T *r = rows[j];
          // More streams than the hardware prefetcher follows: fetch 4 lines ahead by hand.
          __builtin_prefetch(r + q0 + 64);
          for (int64_t p = q0; p < q1; p++) dst[p * NR + j] = r[p];
        }
        for (int j = nr; j < NR; j++)
          for (int64_t p = q0; p < q1; p++) dst[p * NR + j] = T(0);
      }
    }
    for (int64_t t0 = 0; t0 < ntaps; t0 += NR) {
      const int nr = (int)std::min<int64_t>(NR, ntaps - t0);
      for (int64_t m0 = 0; m0 < M; m0 += MR)
        kr.tap(pc, Ap + m0 * pc, Bp + t0 * pc, poffs, gw + m0 * ntaps + t0, ntaps, (int)std::min<int64_t>(MR, M - m0),
               nr, T(1), T(1));
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
template <typename T>
void conv2d_backward_filter(const ConvGeom &g, const T *gy, const T *x, T *gw) {
  const GemmKernels<T> &kr = gemm_kernels<T>();
  const int64_t G = g.groups, Cg = g.C / G, Kg = g.K / G, PQ = g.P * g.Q, HW = g.H * g.W;
  const XLayout L = x_layout(g, g.N);
  const bool inplace = x_inplace(L);
  const int64_t ntaps = L.ntaps;
  std::vector<int64_t> offs((size_t)ntaps + 8);
  x_offsets(g, L, inplace ? HW : L.pl, offs.data());

  // One group per task when there are enough groups. Otherwise split the image batches across
  // threads (each split sums into its own gw copy, added up at the end) so every task keeps all
  // Kg rows: the tap path's packed x slivers are reused by Kg/4 row panels, and splitting rows
  // instead (stem: 32 rows per task) left the transposing pack at ~40% of the time. With a single
  // batch, split rows but keep >= 32 per task.
  const int64_t nt = num_threads(), nbatches = cdiv(g.N, L.nb);
  const int64_t splits = G >= 2 * nt ? 1 : std::min(nt, nbatches);
  const int64_t chunks =
      (G >= 2 * nt || splits > 1) ? 1 : std::clamp<int64_t>(std::min<int64_t>(nt, Kg / 32), 1, 64);
  const int64_t rows = cdiv(cdiv(Kg, kr.dmr), chunks) * kr.dmr;
  const int64_t wsize = g.K * ntaps;
  T *parts = call_buf<T>(2, (size_t)((splits - 1) * wsize));  // each split zeroes its own
  // Dot path: pixel block LB x tap block TB of the input buffer (256 KB) stays in L2 while every
  // row quad of gy (4 x LB) sweeps it. LB = 1024 rather than 256 because each dot tile ends in 8
  // horizontal sums, which cost ~40% of a 256-long tile (L1 micro-benchmark).
  const int64_t LB = 1024, TB = 64;
  if (!inplace && splits == 1 && chunks == 1 && use_bcast(kr, Kg, PQ, false)) {
    // Rows = taps, reduction over the valid output pixels of every image, columns = the group's
    // Kg output channels: gwT[t][k] = sum_pix x[offs[t] + base[pix]] * gyT[pix][k].
    run_tasks(G, [&](int64_t gi) {
      const int64_t BM = kr.bmr;
      T *gwT = tls_buf<T>(2, (size_t)(ntaps * Kg));
      T *gyT = tls_buf<T>(1, (size_t)(L.nb * PQ * Kg));
      thread_local std::vector<int64_t> base_v;
      if ((int64_t)base_v.size() < L.nb * PQ) base_v.resize((size_t)(L.nb * PQ));
      int64_t *base = base_v.data();
      for (int64_t bi = 0; bi < nbatches; bi++) {
        const int64_t n0 = bi * L.nb, nbc = std::min(L.nb, g.N - n0), len = nbc * PQ;
        T *xb = tls_buf<T>(0, (size_t)L.size);
        x_build(g, L, x + (n0 * g.C + gi * Cg) * HW, nbc, xb);
        for (int64_t nn = 0; nn < nbc; nn++) {
          for (int64_t p = 0; p < g.P; p++)
            for (int64_t q = 0; q < g.Q; q++) base[nn * PQ + p * g.Q + q] = nn * L.img + p * L.pitch + q;
          gy_transpose(gy + ((n0 + nn) * g.K + gi * Kg) * PQ, Kg, PQ, gyT + nn * PQ * Kg);
        }
        for (int64_t t0 = 0; t0 < ntaps; t0 += BM)
          bcast_cols(kr, len, xb, offs.data() + t0, (int)std::min(BM, ntaps - t0), base, gyT, Kg, Kg, gwT + t0 * Kg, Kg,
                     bi > 0);
      }
      T *gwg = gw + gi * Kg * ntaps;
      for (int64_t k = 0; k < Kg; k++)
        for (int64_t t = 0; t < ntaps; t++) gwg[k * ntaps + t] = gwT[t * Kg + k];
    });
    return;
  }
  const bool far = input_far(g, sizeof(T));
  run_tasks(splits * G * chunks, [&](int64_t task) {
    {
      const int64_t si = task / (G * chunks), gi = task / chunks % G, ci = task % chunks;
      const int64_t m0 = ci * rows, m1 = std::min(Kg, m0 + rows), M = m1 - m0;
      if (M <= 0) return;
      T *gwg = (si == 0 ? gw : parts + (si - 1) * wsize) + (gi * Kg + m0) * ntaps;
      std::fill(gwg, gwg + M * ntaps, T(0));
      const int64_t b_lo = si * nbatches / splits, b_hi = (si + 1) * nbatches / splits;
      for (int64_t bi = b_lo; bi < b_hi; bi++) {
        const int64_t n0 = bi * L.nb, nbc = std::min(L.nb, g.N - n0);
        const T *xs, *gys;
        int64_t lda, len;
        if (inplace) {
          xs = x + (n0 * g.C + gi * Cg) * HW;
          gys = gy + (n0 * g.K + gi * Kg + m0) * PQ;
          lda = PQ, len = PQ;
        } else {
          T *xb = tls_buf<T>(0, (size_t)L.size);
          x_build(g, L, x + (n0 * g.C + gi * Cg) * HW, nbc, xb);
          // gy rows on the forward's pitched output grid, zero at junk positions.
          T *gb = tls_buf<T>(1, (size_t)(M * L.pl));
          for (int64_t m = 0; m < M; m++)
            for (int64_t nn = 0; nn < nbc; nn++) {
              T *dst = gb + m * L.pl + nn * L.img;
              const T *src = gy + ((n0 + nn) * g.K + gi * Kg + m0 + m) * PQ;
              for (int64_t p = 0; p < g.P; p++) {
                std::memcpy(dst + p * L.pitch, src + p * g.Q, g.Q * sizeof(T));
                std::fill(dst + p * L.pitch + g.Q, dst + (p + 1) * L.pitch, T(0));
              }
              std::fill(dst + g.P * L.pitch, dst + L.img, T(0));
            }
          xs = xb, gys = gb, lda = L.pl, len = nbc * L.img;
        }
        if (M >= kTapRows) {
          filter_tap_block(kr, M, ntaps, gys, lda, xs, offs.data(), len, gwg);
          continue;
        }
        // The next batch's x and gy are read from memory (25.7 MB of x for 256x56x56 s2 at batch
        // 8: x_build was 35% of its time): requested now, under this batch's dot products.
        PrefetchStream pfs;
        if (!inplace && far && bi + 1 < b_hi) {
          const int64_t n1 = n0 + L.nb, nb1 = std::min(L.nb, g.N - n1);
          for (int64_t nn = 0; nn < nb1; nn++) {
            pfs.add(x + ((n1 + nn) * g.C + gi * Cg) * HW, Cg * HW * (int64_t)sizeof(T));
            pfs.add(gy + ((n1 + nn) * g.K + gi * Kg + m0) * PQ, M * PQ * (int64_t)sizeof(T));
          }
          const int64_t calls = cdiv(len, LB) * cdiv(M, kr.dmr) * cdiv(ntaps, kr.dnt);
          pfs.per = cdiv(pfs.lines(), calls) + 1;
        }
        for (int64_t p0 = 0; p0 < len; p0 += LB) {
          const int64_t lb = std::min(LB, len - p0);
          for (int64_t tb0 = 0; tb0 < ntaps; tb0 += TB) {
            const int64_t tb1 = std::min(ntaps, tb0 + TB);
            for (int64_t m = 0; m < M; m += kr.dmr) {
              const int mr = (int)std::min<int64_t>(kr.dmr, M - m);
              for (int64_t t = tb0; t < tb1; t += kr.dnt) {
                const int nt = (int)std::min<int64_t>(kr.dnt, tb1 - t);
                pfs();
                kr.dot(lb, gys + m * lda + p0, lda, xs + p0, offs.data() + t, gwg + m * ntaps + t, ntaps, mr, nt);
              }
            }
          }
        }
      }
    }
  });
  if (splits > 1)
    parallel_for(0, wsize, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t si = 1; si < splits; si++) {
        const T *src = parts + (si - 1) * wsize;
        for (int64_t i = i0; i < i1; i++) gw[i] += src[i];
      }
    });
}

template void conv2d_forward<float>(const ConvGeom &, const float *, const float *, const float *, float *);
template void conv2d_forward<double>(const ConvGeom &, const double *, const double *, const double *, double *);
template void conv2d_forward<float>(const ConvGeom &, const float *, const float *, const ConvEpilogue<float> &,
                                    float *);
template void conv2d_forward<double>(const ConvGeom &, const double *, const double *, const ConvEpilogue<double> &,
                                     double *);
template void conv2d_backward_data<float>(const ConvGeom &, const float *, const float *, float *);
template void conv2d_backward_data<double>(const ConvGeom &, const double *, const double *, double *);
template void conv2d_backward_filter<float>(const ConvGeom &, const float *, const float *, float *);
template void conv2d_backward_filter<double>(const ConvGeom &, const double *, const double *, double *);

}  // namespace rx::cpu
