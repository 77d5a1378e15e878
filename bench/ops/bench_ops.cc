// Op benchmark: our CPU conv2d kernels vs oneDNN (fp32, NCHW user layout) on every ResNeXt-50
// 32x4d conv shape at batch 8, forward / backward-data / backward-weights, in the same process.
//
// Method (as /work/shared/anchors/onednn-cpu-2core.md): oneDNN uses forward_training,
// convolution_direct, format_tag::any for src/weights/dst, inputs reordered once outside the timed
// loop, stream.wait() per run. Both sides: 3 warm-up runs, then the median (and min/max) of
// `reps` timed runs, ours and oneDNN alternating run by run (see time_pair). FLOPs = 2*N*K*(C/g)*R*S*P*Q per direction. Each result is also compared with
// oneDNN's (max abs error / max |ref|) so a fast wrong kernel cannot pass unnoticed.
// Usage: bench_ops [reps] [json_path]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <thread>
#include <vector>

#include "cpu/conv2d.h"
#include "cpu/gemm_kernels.h"
#include "cpu/parallel.h"
#include "oneapi/dnnl/dnnl.hpp"

using namespace dnnl;
using rx::cpu::ConvGeom;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Shape {
  const char *name;
  int64_t C, H, W, K, R, S, stride, pad, groups;
};

struct Stat {
  double med, mn, mx;
};

Stat stats(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  return {n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]), ms.front(), ms.back()};
}

// Times ours and oneDNN interleaved (3 warm-up runs each, then `reps` alternating timed runs), so
// load from other processes on this small shared machine hits both sides alike. A 30 ms pause
// before each timed run lets the other side's idle workers stop spinning (libgomp spins for
// milliseconds after a region: our 1x1 256x56x56->128 forward took 15.8 ms right after oneDNN
// runs, 13.2 with OMP_WAIT_POLICY=passive). The calling thread busy-waits through the pause rather
// than sleeping: with every thread asleep for 5 ms or more, a 2-vCPU VM ran the next several
// milliseconds as if it had one core (a 2 ms grouped conv timed 3.1-3.6 ms after a 30 ms sleep,
// even after 4 untimed runs, and 2.2 ms after a 30 ms busy wait; one thread was unaffected), which
// measured the hypervisor, not either library. Inside a network, convs run back to back.
template <typename F, typename G>
std::pair<Stat, Stat> time_pair(F &&ours, G &&theirs, int reps) {
  auto once = [](auto &&f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  auto pause = [] {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
    while (std::chrono::steady_clock::now() < end) {
    }
  };
  for (int i = 0; i < 3; i++) once(ours);
  for (int i = 0; i < 3; i++) once(theirs);
  std::vector<double> a, b;
  for (int i = 0; i < reps; i++) {
    pause();
    a.push_back(once(ours));
    pause();
    b.push_back(once(theirs));
  }
  return {stats(a), stats(b)};
}

double rel_err(const std::vector<float> &a, const std::vector<float> &ref) {
  double e = 0, s = 1e-30;
  for (size_t i = 0; i < a.size(); i++) {
    e = std::max(e, (double)std::fabs(a[i] - ref[i]));
    s = std::max(s, (double)std::fabs(ref[i]));
  }
  return e / s;
}

// Copies a user-layout buffer into a memory of descriptor md (reorder when it differs).
memory to_mem(engine &eng, stream &s, const memory::desc &user_md, std::vector<float> &data,
              const memory::desc &md) {
  memory user(user_md, eng, data.data());
  if (md == user_md) return user;
  memory m(md, eng);
  reorder(user, m).execute(s, user, m);
  s.wait();
  return m;
}

void from_mem(engine &eng, stream &s, const memory &m, const memory::desc &user_md, std::vector<float> &out) {
  memory user(user_md, eng, out.data());
  if (m.get_desc() == user_md) {
    std::copy((float *)m.get_data_handle(), (float *)m.get_data_handle() + out.size(), out.data());
    return;
  }
  reorder(const_cast<memory &>(m), user).execute(s, const_cast<memory &>(m), user);
  s.wait();
}

// 1-minute load average: this benchmark often shares a 2-core machine, so every report says how
// busy it was.
std::string loadavg() {
  std::string s = "?";
  if (FILE *f = std::fopen("/proc/loadavg", "r")) {
    char buf[64] = {};
    if (std::fscanf(f, "%63s", buf) == 1) s = buf;
    std::fclose(f);
  }
  return s;
}

int main(int argc, char **argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
  const std::string json_path = argc > 2 ? argv[2] : "bench/results/ops.json";
  // BENCH_BATCH (default 8): e.g. 1 for the shapes of batch-1 inference.
  const char *nb_env = std::getenv("BENCH_BATCH");
  const int64_t N = nb_env ? std::max(1, std::atoi(nb_env)) : 8;
  const Shape shapes[] = {
      {"stem 3x224x224->64 7x7 s2", 3, 224, 224, 64, 7, 7, 2, 3, 1},
      {"1x1 64x56x56->128", 64, 56, 56, 128, 1, 1, 1, 0, 1},
      {"1x1 128x56x56->256", 128, 56, 56, 256, 1, 1, 1, 0, 1},
      {"1x1 256x56x56->128", 256, 56, 56, 128, 1, 1, 1, 0, 1},
      {"g32 3x3 128x56x56->128 s1", 128, 56, 56, 128, 3, 3, 1, 1, 32},
      {"g32 3x3 256x56x56->256 s2", 256, 56, 56, 256, 3, 3, 2, 1, 32},
      {"g32 3x3 256x28x28->256 s1", 256, 28, 28, 256, 3, 3, 1, 1, 32},
      {"g32 3x3 512x28x28->512 s2", 512, 28, 28, 512, 3, 3, 2, 1, 32},
      {"g32 3x3 512x14x14->512 s1", 512, 14, 14, 512, 3, 3, 1, 1, 32},
      {"g32 3x3 1024x14x14->1024 s2", 1024, 14, 14, 1024, 3, 3, 2, 1, 32},
      {"g32 3x3 1024x7x7->1024 s1", 1024, 7, 7, 1024, 3, 3, 1, 1, 32},
      {"1x1 1024x7x7->2048", 1024, 7, 7, 2048, 1, 1, 1, 0, 1},
      {"1x1 2048x7x7->1024", 2048, 7, 7, 1024, 1, 1, 1, 0, 1},
  };
  const char *dirs[] = {"fwd", "bwd_d", "bwd_w"};

  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> U(-1, 1);
  auto fill = [&](std::vector<float> &v) {
    for (auto &x : v) x = U(rng);
  };

  std::printf("ours: %s kernels, %d threads | oneDNN %d.%d.%d (%s runtime)\n", rx::cpu::gemm_kernels_f32().name,
              rx::cpu::num_threads(), dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch,
              dnnl_version()->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other");
  const std::string load0 = loadavg();
  std::printf("load average (1 min) at start: %s on %u hardware threads\n", load0.c_str(),
              std::thread::hardware_concurrency());
  std::printf("N=%ld, %d warm-up + median of %d runs (ours/oneDNN interleaved, each timed run after a 30 ms busy-wait pause); ms as median [min-max]\n\n", (long)N, 3, reps);
  std::printf("%-28s %-5s %22s %8s %22s %8s %6s %8s  %s\n", "shape", "dir", "ours ms [min-max]", "GFLOP/s",
              "oneDNN ms [min-max]", "GFLOP/s", "ratio", "relerr", "oneDNN impl");

  std::string json = "{\n  \"kernels\": \"" + std::string(rx::cpu::gemm_kernels_f32().name) +
                     "\",\n  \"threads\": " + std::to_string(rx::cpu::num_threads()) +
                     ",\n  \"batch\": " + std::to_string(N) + ",\n  \"reps\": " + std::to_string(reps) + ",\n  \"results\": [\n";
  double tot_ours[3] = {}, tot_dnnl[3] = {}, tot_flops[3] = {};
  bool first = true;
  // BENCH_ONLY=substring: only the shapes whose name contains it (profiling one shape).
  const char *only = std::getenv("BENCH_ONLY");
  for (const Shape &sh : shapes) {
    if (only && !std::strstr(sh.name, only)) continue;
    const int64_t P = (sh.H + 2 * sh.pad - sh.R) / sh.stride + 1, Q = (sh.W + 2 * sh.pad - sh.S) / sh.stride + 1;
    const int64_t G = sh.groups, Cg = sh.C / G, Kg = sh.K / G;
    ConvGeom g{N, sh.C, sh.H, sh.W, sh.K, sh.R, sh.S, P, Q, sh.stride, sh.stride, sh.pad, sh.pad, G};
    const double flops = 2.0 * N * sh.K * Cg * sh.R * sh.S * P * Q;
    std::vector<float> x(N * sh.C * sh.H * sh.W), w(sh.K * Cg * sh.R * sh.S), gy(N * sh.K * P * Q);
    fill(x), fill(w), fill(gy);
    std::vector<float> y(gy.size()), gx(x.size()), gw(w.size());
    std::vector<float> y_ref(gy.size()), gx_ref(x.size()), gw_ref(w.size());

    // oneDNN setup
    memory::dims src_d = {N, sh.C, sh.H, sh.W}, dst_d = {N, sh.K, P, Q};
    memory::dims wei_d = G > 1 ? memory::dims{G, Kg, Cg, sh.R, sh.S} : memory::dims{sh.K, sh.C, sh.R, sh.S};
    memory::dims strides = {sh.stride, sh.stride}, padl = {sh.pad, sh.pad};
    memory::dims padr = {(P - 1) * sh.stride + sh.R - sh.H - sh.pad, (Q - 1) * sh.stride + sh.S - sh.W - sh.pad};
    memory::desc src_u(src_d, dt::f32, tag::nchw), dst_u(dst_d, dt::f32, tag::nchw),
        wei_u(wei_d, dt::f32, G > 1 ? tag::goihw : tag::oihw);
    memory::desc src_a(src_d, dt::f32, tag::any), dst_a(dst_d, dt::f32, tag::any), wei_a(wei_d, dt::f32, tag::any);
    convolution_forward::desc fd(prop_kind::forward_training, algorithm::convolution_direct, src_a, wei_a, dst_a,
                                 strides, padl, padr);
    convolution_forward::primitive_desc fpd(fd, eng);
    convolution_backward_data::desc bdd(algorithm::convolution_direct, src_a, wei_a, dst_a, strides, padl, padr);
    convolution_backward_data::primitive_desc bdpd(bdd, eng, fpd);
    convolution_backward_weights::desc bwd(algorithm::convolution_direct, src_a, wei_a, dst_a, strides, padl, padr);
    convolution_backward_weights::primitive_desc bwpd(bwd, eng, fpd);

    for (int d = 0; d < 3; d++) {
      Stat ours{}, dn{};
      double err = 0;
      std::string impl;
      if (d == 0) {
        memory src = to_mem(eng, s, src_u, x, fpd.src_desc()), wei = to_mem(eng, s, wei_u, w, fpd.weights_desc());
        memory dst(fpd.dst_desc(), eng);
        convolution_forward prim(fpd);
        std::tie(ours, dn) = time_pair(
            [&] { rx::cpu::conv2d_forward<float>(g, x.data(), w.data(), nullptr, y.data()); },
            [&] {
              prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
              s.wait();
            },
            reps);
        from_mem(eng, s, dst, dst_u, y_ref);
        err = rel_err(y, y_ref);
        impl = fpd.impl_info_str();
      } else if (d == 1) {
        memory ddst = to_mem(eng, s, dst_u, gy, bdpd.diff_dst_desc()),
               wei = to_mem(eng, s, wei_u, w, bdpd.weights_desc());
        memory dsrc(bdpd.diff_src_desc(), eng);
        convolution_backward_data prim(bdpd);
        std::tie(ours, dn) = time_pair(
            [&] { rx::cpu::conv2d_backward_data<float>(g, gy.data(), w.data(), gx.data()); },
            [&] {
              prim.execute(s, {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, dsrc}});
              s.wait();
            },
            reps);
        from_mem(eng, s, dsrc, src_u, gx_ref);
        err = rel_err(gx, gx_ref);
        impl = bdpd.impl_info_str();
      } else {
        memory src = to_mem(eng, s, src_u, x, bwpd.src_desc()), ddst = to_mem(eng, s, dst_u, gy, bwpd.diff_dst_desc());
        memory dwei(bwpd.diff_weights_desc(), eng);
        convolution_backward_weights prim(bwpd);
        std::tie(ours, dn) = time_pair(
            [&] { rx::cpu::conv2d_backward_filter<float>(g, gy.data(), x.data(), gw.data()); },
            [&] {
              prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DIFF_WEIGHTS, dwei}});
              s.wait();
            },
            reps);
        from_mem(eng, s, dwei, wei_u, gw_ref);
        err = rel_err(gw, gw_ref);
        impl = bwpd.impl_info_str();
      }
      const double go = flops / ours.med / 1e6, gd = flops / dn.med / 1e6;
      tot_ours[d] += ours.med, tot_dnnl[d] += dn.med, tot_flops[d] += flops;
      char ob[64], db[64];
      std::snprintf(ob, sizeof ob, "%.3f [%.3f-%.3f]", ours.med, ours.mn, ours.mx);
      std::snprintf(db, sizeof db, "%.3f [%.3f-%.3f]", dn.med, dn.mn, dn.mx);
      std::printf("%-28s %-5s %22s %8.1f %22s %8.1f %6.2f %8.1e  %s\n", sh.name, dirs[d], ob, go, db, gd, gd > 0 ? go / gd : 0,
                  err, impl.c_str());
      std::fflush(stdout);
      char jb[640];
      std::snprintf(jb, sizeof jb,
                    "%s    {\"shape\": \"%s\", \"dir\": \"%s\", \"flops\": %.0f, \"ours_ms\": %.4f, \"ours_min_ms\": %.4f, "
                    "\"ours_max_ms\": %.4f, \"ours_gflops\": %.2f, \"onednn_ms\": %.4f, \"onednn_min_ms\": %.4f, "
                    "\"onednn_max_ms\": %.4f, \"onednn_gflops\": %.2f, \"ratio\": %.4f, \"rel_err\": %.3g, "
                    "\"onednn_impl\": \"%s\"}",
                    first ? "" : ",\n", sh.name, dirs[d], flops, ours.med, ours.mn, ours.mx, go, dn.med, dn.mn, dn.mx,
                    gd, go / gd, err, impl.c_str());
      json += jb;
      first = false;
    }
  }
  std::printf("\n");
  json += "\n  ],\n  \"totals\": [\n";
  double ao = 0, ad = 0, af = 0;
  for (int d = 0; d < 4; d++) {
    const double o = d < 3 ? tot_ours[d] : ao, dn = d < 3 ? tot_dnnl[d] : ad, f = d < 3 ? tot_flops[d] : af;
    if (d < 3) ao += o, ad += dn, af += f;
    const char *name = d < 3 ? dirs[d] : "all3";
    std::printf("%-28s %-5s %22.3f %8.1f %22.3f %8.1f %6.2f\n", "TOTAL", name, o, f / o / 1e6, dn, f / dn / 1e6,
                dn / o);
    char jb[256];
    std::snprintf(jb, sizeof jb,
                  "%s    {\"dir\": \"%s\", \"ours_ms\": %.3f, \"ours_gflops\": %.2f, \"onednn_ms\": %.3f, "
                  "\"onednn_gflops\": %.2f, \"ratio\": %.4f}",
                  d ? ",\n" : "", name, o, f / o / 1e6, dn, f / dn / 1e6, dn / o);
    json += jb;
  }
  const std::string load1 = loadavg();
  std::printf("load average (1 min) at end: %s\n", load1.c_str());
  json += "\n  ],\n  \"loadavg_start\": \"" + load0 + "\",\n  \"loadavg_end\": \"" + load1 + "\"\n}\n";
  if (FILE *f = std::fopen(json_path.c_str(), "w")) {
    std::fputs(json.c_str(), f);
    std::fclose(f);
    std::printf("\nwrote %s\n", json_path.c_str());
  } else {
    std::printf("\ncould not write %s\n", json_path.c_str());
  }
  return 0;
}
