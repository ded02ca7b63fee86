// Fused prototype similarity: the CPU implementation and the operator schemas.
//
// Shapes (B batch, F embedding dims, H×W pixels P = H·W, J classes, M prototypes per class,
// K = stop − start classes of the requested block, N sampled pixels):
//
//   posebh::prototype_heatmaps(embeddings [B,F,H,W], prototypes [J,M,F], int start, int stop)
//       -> [B,K,H,W]; out[b,k,y,x] = clamp(max_m |cos(e[b,:,y,x], p[start+k,m])|, 1e-4, 1−1e-4)
//   posebh::prototype_heatmaps_backward(grad [B,K,H,W], embeddings, prototypes, start, stop)
//       -> [B,F,H,W], the gradient w.r.t. the embeddings
//   posebh::prototype_logits(embeddings [N,F], prototypes, start, stop)
//       -> (logits [N,K·M] = |cos|, column k·M + m; best [N,K] int64 = arg-max over m)
//   posebh::prototype_logits_backward(grad [N,K·M], embeddings, prototypes, start, stop) -> [N,F]
//   posebh::prototype_similarity_cpu_isa() -> str, the SIMD variant the CPU kernels run
//
// The PyTorch reference (posebh/prototypes.py) materialises [N, J·M] similarities and then
// reduces, slices and permutes them. Here a tile of 64 pixels of one image is gathered in its
// native pixel-contiguous layout, normalised, dotted with the pre-normalised prototypes of the
// requested classes only, reduced over M and clamped in registers, and each class's 64 values
// are copied as one contiguous run into the [B,K,H,W] output: the only large allocation is the
// output itself, and the dot products vectorise across pixels.
//
// Bit-exactness with the reference (float32, x86-64). The reference computes
// F.normalize(e) @ F.normalize(p).T with ATen's norm kernel and MKL's sgemm. Both orders are
// reproduced, so the heatmaps equal the reference bit for bit (the existing tests compare
// module heatmaps with the reference with torch.equal):
//   * the norm is ATen's reduce-last-dim kernel: 32-byte lanes (8 floats; norm_stub has no
//     AVX-512 variant), lane-wise acc += x·x without FMA, a left fold over the lanes, then the
//     tail elements (as ATen's build compiled them, see load_normalised), then sqrt. The file
//     is compiled with -ffp-contract=off so the compiler never fuses what ATen did not;
//   * each dot product is one sequential fused multiply-add chain over f = 0..F−1 starting from
//     0, which is what MKL's sgemm micro-kernels do (measured on this project's machines for
//     F = 3..72; a gemv call, i.e. a single pixel, rounds differently: within 1 ulp);
//   * abs, the max over M and the clamp are exact operations.
//
// SIMD. Only the micro-kernels (prototype_similarity_simd.h: V = 64 bytes of pixels × R
// classes, F FMAs deep) are ISA-specific. They are compiled three times, inside
// `#pragma GCC target` regions: AVX-512 (R = 8, 8 of the 32 vector registers accumulate),
// AVX2+FMA (R = 4, 8 of 16) and portable code (std::fma, a library call without hardware FMA).
// The variant is picked at run time with __builtin_cpu_supports, so the cached binary is
// portable: no -march=native. (GCC's auto-vectoriser over plain loops, tried first, produced
// code at a third of this speed.) POSEBH_CPU_ISA=avx2|generic forces a lower variant; the
// tests use it to check that every variant gives the same bits, as it must: each computes the
// same correctly rounded FMA chains.
//
// This file includes torch headers; the CUDA kernels (cuda/prototype_similarity.cu) do not.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#define POSEBH_X86 1
#include <immintrin.h>
#endif

namespace posebh_kernels {
namespace {

constexpr double kNormEps = 1e-12;  // F.normalize's eps
constexpr double kScoreMin = 1e-4;  // the official kpt_class clamp
constexpr double kScoreMax = 1.0 - 1e-4;
constexpr int64_t kTile = 64;     // pixels per work item (a multiple of every V)
constexpr int64_t kClassPad = 8;  // classes are zero padded to a multiple of every R

// ------------------------------------------------------------------------------------------
// Scalar helpers
// ------------------------------------------------------------------------------------------

// max that propagates NaN, like torch.amax / torch.max.
template <typename T>
inline T nan_max(T a, T b) {
  return (b > a || b != b) ? b : a;
}

// torch.clamp(x, lo, hi): NaN stays NaN.
template <typename T>
inline T clamp_score(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

// torch.sgn for reals: the derivative of abs (0 at 0; NaN stays NaN).
template <typename T>
inline T sgn(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x);
}

// ------------------------------------------------------------------------------------------
// SIMD micro-kernels, one copy per ISA (see prototype_similarity_simd.h)
// ------------------------------------------------------------------------------------------

namespace isa_generic {
// Portable "vectors" of 64 bytes; the compiler vectorises what it can, std::fma is exact.
template <typename TT>
struct Portable {
  using T = TT;
  static constexpr int kLanes = 64 / static_cast<int>(sizeof(T)), kVecs = 1, kRows = 4;
  struct Vec {
    T v[kLanes];
  };
  static Vec zero() {
    Vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = T(0);
    return r;
  }
  static Vec load(const T* p) {
    Vec r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static void store(T* p, const Vec& a) { std::memcpy(p, a.v, sizeof(a.v)); }
  static Vec bcast(T x) {
    Vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = x;
    return r;
  }
  static Vec fma(const Vec& a, const Vec& b, const Vec& c) {
    Vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return r;
  }
  static Vec abs(const Vec& a) {
    Vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = std::abs(a.v[i]);
    return r;
  }
  static Vec max_nan(const Vec& a, const Vec& b) {
    Vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = nan_max(a.v[i], b.v[i]);
    return r;
  }
  static Vec clamp(const Vec& a, T lo, T hi) {
    Vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = clamp_score(a.v[i], lo, hi);
    return r;
  }
};
using F32 = Portable<float>;
using F64 = Portable<double>;
#include "prototype_similarity_simd.h"
}  // namespace isa_generic

#ifdef POSEBH_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
struct F32 {
  using T = float;
  using Vec = __m256;
  static constexpr int kLanes = 8, kVecs = 2, kRows = 4;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, Vec a) { _mm256_storeu_ps(p, a); }
  static Vec bcast(T x) { return _mm256_set1_ps(x); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec abs(Vec a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  // Values are ≥ +0 or NaN with a clear sign bit, so their bit patterns order as integers and
  // NaN (exponent all ones, non-zero mantissa) is the largest: an integer max propagates it.
  static Vec max_nan(Vec a, Vec b) {
    return _mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
  }
  // MAXPS/MINPS return the second operand when one is NaN: x NaN stays NaN.
  static Vec clamp(Vec x, T lo, T hi) {
    return _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), x));
  }
};
struct F64 {
  using T = double;
  using Vec = __m256d;
  static constexpr int kLanes = 4, kVecs = 2, kRows = 4;
  static Vec zero() { return _mm256_setzero_pd(); }
  static Vec load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, Vec a) { _mm256_storeu_pd(p, a); }
  static Vec bcast(T x) { return _mm256_set1_pd(x); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_pd(a, b, c); }
  static Vec abs(Vec a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
  // AVX2 has no 64-bit integer max: max, then put a's NaN back (b's survives MAXPD).
  static Vec max_nan(Vec a, Vec b) {
    return _mm256_blendv_pd(_mm256_max_pd(a, b), a, _mm256_cmp_pd(a, a, _CMP_UNORD_Q));
  }
  static Vec clamp(Vec x, T lo, T hi) {
    return _mm256_min_pd(_mm256_set1_pd(hi), _mm256_max_pd(_mm256_set1_pd(lo), x));
  }
};
#include "prototype_similarity_simd.h"
}  // namespace isa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")
namespace isa_avx512 {
struct F32 {
  using T = float;
  using Vec = __m512;
  static constexpr int kLanes = 16, kVecs = 1, kRows = 8;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, Vec a) { _mm512_storeu_ps(p, a); }
  static Vec bcast(T x) { return _mm512_set1_ps(x); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec abs(Vec a) { return _mm512_abs_ps(a); }
  static Vec max_nan(Vec a, Vec b) {  // see isa_avx2::F32::max_nan
    return _mm512_castsi512_ps(_mm512_max_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
  }
  static Vec clamp(Vec x, T lo, T hi) {
    return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), x));
  }
};
struct F64 {
  using T = double;
  using Vec = __m512d;
  static constexpr int kLanes = 8, kVecs = 1, kRows = 8;
  static Vec zero() { return _mm512_setzero_pd(); }
  static Vec load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, Vec a) { _mm512_storeu_pd(p, a); }
  static Vec bcast(T x) { return _mm512_set1_pd(x); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
  static Vec abs(Vec a) { return _mm512_abs_pd(a); }
  static Vec max_nan(Vec a, Vec b) {
    return _mm512_castsi512_pd(_mm512_max_epi64(_mm512_castpd_si512(a), _mm512_castpd_si512(b)));
  }
  static Vec clamp(Vec x, T lo, T hi) {
    return _mm512_min_pd(_mm512_set1_pd(hi), _mm512_max_pd(_mm512_set1_pd(lo), x));
  }
};
#include "prototype_similarity_simd.h"
}  // namespace isa_avx512
#pragma GCC pop_options
#endif  // POSEBH_X86

// ISA tags for the portable tile loops below.
struct GenericIsa {
  static constexpr int kRows = isa_generic::kRows;
  template <typename... A>
  static void absmax(A... a) {
    isa_generic::absmax_block(a...);
  }
  template <typename... A>
  static void dot(A... a) {
    isa_generic::dot_block(a...);
  }
};
#ifdef POSEBH_X86
struct Avx2Isa {
  static constexpr int kRows = isa_avx2::kRows;
  template <typename... A>
  static void absmax(A... a) {
    isa_avx2::absmax_block(a...);
  }
  template <typename... A>
  static void dot(A... a) {
    isa_avx2::dot_block(a...);
  }
};
struct Avx512Isa {
  static constexpr int kRows = isa_avx512::kRows;
  template <typename... A>
  static void absmax(A... a) {
    isa_avx512::absmax_block(a...);
  }
  template <typename... A>
  static void dot(A... a) {
    isa_avx512::dot_block(a...);
  }
};
#endif

// ------------------------------------------------------------------------------------------
// Jobs: raw pointers and sizes of one call
// ------------------------------------------------------------------------------------------

// Pixel embeddings: element (b, f, p) lives at data[b·sb + f·sf + p·sp].
template <typename T>
struct PixelView {
  const T* data;
  int64_t sb, sf, sp;
  int64_t batch, dim, pixels;
};

template <typename T>
struct Job {
  PixelView<T> x;
  const T* protos = nullptr;  // [M][Kp][F] normalised prototypes of classes start..stop−1
  int64_t m = 0, k = 0, kp = 0;
  T* out = nullptr;         // heatmaps [B][K][P], logits [N][K·M] or gradient [B][F][P]
  int64_t* best = nullptr;  // logits: arg-max over m, [N][K]
  const T* grad = nullptr;  // backward: incoming gradient, contiguous
  int64_t tiles_per_image = 0;
  bool lastdim_norm = true;  // which ATen norm kernel the reference runs (load_normalised)
};

// Gathers pixels p0..p0+np−1 of image b into e [F][kTile] and normalises every column like
// F.normalize, x / max(||x||, eps), with ||x|| summed in ATen's order (see the file comment):
// its last-dimension kernel when the reference's [N, F] matrix has contiguous rows
// (`lastdim`), else its generic reduction, a plain sequential sum of squares (the reference
// flattens a batch of one NCHW map to a column-major view). Columns np..kTile−1 are zero.
// denom[p] = max(||x||, eps), norm[p] = ||x||.
template <typename T>
void load_normalised(const PixelView<T>& x, bool lastdim, int64_t b, int64_t p0, int64_t np,
                     T* e, T* denom, T* norm) {
  const int64_t F = x.dim;
  const T* base = x.data + b * x.sb + p0 * x.sp;
  for (int64_t f = 0; f < F; ++f) {
    T* row = e + f * kTile;
    const T* src = base + f * x.sf;
    if (x.sp == 1) {
      std::memcpy(row, src, np * sizeof(T));
    } else {
      for (int64_t p = 0; p < np; ++p) row[p] = src[p * x.sp];
    }
    std::fill(row + np, row + kTile, T(0));
  }
  // ATen: Vectorized<T> lanes of 32 bytes, acc[l] += x·x (not fused), a left fold, then the
  // scalar tail `sum += x·x`, which GCC compiled (measured on torch 2.13) as rounded squares
  // added in order for whole groups of 4 and FMAs for the rest.
  constexpr int kLanes = 32 / static_cast<int>(sizeof(T));
  if (!lastdim) {
    T sum[kTile];
    std::fill(sum, sum + kTile, T(0));
    for (int64_t f = 0; f < F; ++f) {
      const T* row = e + f * kTile;
      for (int64_t p = 0; p < kTile; ++p) sum[p] = sum[p] + row[p] * row[p];
    }
    for (int64_t p = 0; p < kTile; ++p) {
      norm[p] = std::sqrt(sum[p]);
      denom[p] = norm[p] < T(kNormEps) ? T(kNormEps) : norm[p];
    }
  } else {
    const int64_t body = F - F % kLanes;
  const int64_t tail4 = body + (F - body) / 4 * 4;
  T acc[kLanes][kTile];
  for (int l = 0; l < kLanes; ++l) std::fill(acc[l], acc[l] + kTile, T(0));
  for (int64_t f = 0; f < body; ++f) {
    T* a = acc[f % kLanes];
    const T* row = e + f * kTile;
    for (int64_t p = 0; p < kTile; ++p) a[p] = a[p] + row[p] * row[p];
  }
  for (int64_t p = 0; p < kTile; ++p) {
    T sum = acc[0][p];
    for (int l = 1; l < kLanes; ++l) sum = sum + acc[l][p];
    for (int64_t f = body; f < tail4; ++f) sum = sum + e[f * kTile + p] * e[f * kTile + p];
    for (int64_t f = tail4; f < F; ++f) sum = std::fma(e[f * kTile + p], e[f * kTile + p], sum);
    norm[p] = std::sqrt(sum);
    denom[p] = norm[p] < T(kNormEps) ? T(kNormEps) : norm[p];  // clamp_min: NaN stays NaN
  }
  }
  for (int64_t f = 0; f < F; ++f) {
    T* row = e + f * kTile;
    for (int64_t p = 0; p < kTile; ++p) row[p] = row[p] / denom[p];
  }
}

// out_b[f][p0 + p] = d(normalise)ᵀ·G: (G − (G·u) u) / ||x|| where ||x|| ≥ eps, else G / eps
// (F.normalize's clamp_min passes no gradient to the norm below eps). G, u: [F][kTile].
template <typename T>
void write_input_grad(const T* G, const T* u, const T* denom, const T* norm, int64_t np,
                      int64_t F, T* out_b, int64_t P, int64_t p0) {
  T a[kTile];
  std::fill(a, a + kTile, T(0));
  for (int64_t f = 0; f < F; ++f) {
    for (int64_t p = 0; p < kTile; ++p) a[p] += G[f * kTile + p] * u[f * kTile + p];
  }
  for (int64_t p = 0; p < kTile; ++p) {
    if (!(norm[p] >= T(kNormEps))) a[p] = T(0);
  }
  for (int64_t f = 0; f < F; ++f) {
    T* dst = out_b + f * P + p0;
    for (int64_t p = 0; p < np; ++p) {
      dst[p] = (G[f * kTile + p] - a[p] * u[f * kTile + p]) / denom[p];
    }
  }
}

// ------------------------------------------------------------------------------------------
// Tile loops: work items t0..t1−1 (64 pixels of one image each) with one ISA's micro-kernels
// ------------------------------------------------------------------------------------------

struct HeatmapsForward {
  template <typename T, class Isa>
  static void run(const Job<T>& job, int64_t t0, int64_t t1) {
    constexpr int64_t V = 64 / sizeof(T), R = Isa::kRows;
    const int64_t F = job.x.dim, P = job.x.pixels, K = job.k, Kp = job.kp;
    std::vector<T> e(F * kTile), obuf(Kp * kTile);
    T denom[kTile], norm[kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / job.tiles_per_image;
      const int64_t p0 = (t % job.tiles_per_image) * kTile;
      const int64_t np = std::min(kTile, P - p0);
      load_normalised(job.x, job.lastdim_norm, b, p0, np, e.data(), denom, norm);
      for (int64_t pv = 0; pv < np; pv += V) {
        for (int64_t c0 = 0; c0 < Kp; c0 += R) {
          Isa::absmax(e.data() + pv, F, kTile, job.protos + c0 * F, Kp * F, job.m,
                      T(kScoreMin), T(kScoreMax), obuf.data() + c0 * kTile + pv, kTile);
        }
      }
      // One contiguous run of np values per class: the [B,K,H,W] layout written directly.
      T* out_b = job.out + b * K * P + p0;
      for (int64_t k = 0; k < K; ++k) {
        std::memcpy(out_b + k * P, obuf.data() + k * kTile, np * sizeof(T));
      }
    }
  }
};

struct LogitsForward {
  template <typename T, class Isa>
  static void run(const Job<T>& job, int64_t t0, int64_t t1) {
    constexpr int64_t V = 64 / sizeof(T), R = Isa::kRows;
    const int64_t F = job.x.dim, P = job.x.pixels, M = job.m, K = job.k, Kp = job.kp;
    std::vector<T> e(F * kTile);
    T denom[kTile], norm[kTile], s[R * V], bv[R * V];
    int64_t bi[R * V];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p0 = t * kTile;
      const int64_t np = std::min(kTile, P - p0);
      load_normalised(job.x, job.lastdim_norm, 0, p0, np, e.data(), denom, norm);
      for (int64_t pv = 0; pv < np; pv += V) {
        const int64_t nv = std::min(V, np - pv);
        for (int64_t c0 = 0; c0 < Kp; c0 += R) {
          const int64_t nr = std::min(R, K - c0);
          for (int64_t m = 0; m < M; ++m) {
            Isa::dot(e.data() + pv, F, kTile, job.protos + (m * Kp + c0) * F, s, V);
            for (int64_t r = 0; r < nr; ++r) {
              for (int64_t v = 0; v < nv; ++v) {
                const T a = std::abs(s[r * V + v]);
                T& best = bv[r * V + v];
                // torch.argmax: the first maximum; NaN counts as the largest value.
                if (m == 0 || a > best || (a != a && best == best)) {
                  best = a;
                  bi[r * V + v] = m;
                }
                job.out[(p0 + pv + v) * K * M + (c0 + r) * M + m] = a;
              }
            }
          }
          for (int64_t r = 0; r < nr; ++r) {
            for (int64_t v = 0; v < nv; ++v) job.best[(p0 + pv + v) * K + c0 + r] = bi[r * V + v];
          }
        }
      }
    }
  }
};

// The heatmaps' backward (the logits' is two BLAS products, logits_backward_cpu): recompute
// the raw similarities s[m][r][v] of a block, turn them into w = ∂L/∂s (Weights), accumulate
// G[f][p] = Σ w · p̂[f] and apply the normalisation's derivative.
template <class Weights>
struct Backward {
  template <typename T, class Isa>
  static void run(const Job<T>& job, int64_t t0, int64_t t1) {
    constexpr int64_t V = 64 / sizeof(T), R = Isa::kRows;
    const int64_t F = job.x.dim, P = job.x.pixels, M = job.m, Kp = job.kp;
    std::vector<T> e(F * kTile), G(F * kTile), s(M * R * V), w(M * R * V);
    T denom[kTile], norm[kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / job.tiles_per_image;
      const int64_t p0 = (t % job.tiles_per_image) * kTile;
      const int64_t np = std::min(kTile, P - p0);
      load_normalised(job.x, job.lastdim_norm, b, p0, np, e.data(), denom, norm);
      std::fill(G.begin(), G.end(), T(0));
      for (int64_t pv = 0; pv < np; pv += V) {
        const int64_t nv = std::min(V, np - pv);
        for (int64_t c0 = 0; c0 < Kp; c0 += R) {
          for (int64_t m = 0; m < M; ++m) {
            Isa::dot(e.data() + pv, F, kTile, job.protos + (m * Kp + c0) * F,
                     s.data() + m * R * V, V);
          }
          Weights::template compute<T, R, V>(job, b, p0 + pv, nv, c0, s.data(), w.data());
          for (int64_t m = 0; m < M; ++m) {
            for (int64_t r = 0; r < R; ++r) {
              const T* wr = w.data() + (m * R + r) * V;
              bool any = false;
              for (int64_t v = 0; v < V; ++v) any = any || wr[v] != T(0);
              if (!any) continue;
              const T* pr = job.protos + (m * Kp + c0 + r) * F;
              for (int64_t f = 0; f < F; ++f) {
                T* g = G.data() + f * kTile + pv;
                const T pf = pr[f];
                for (int64_t v = 0; v < V; ++v) g[v] += wr[v] * pf;
              }
            }
          }
        }
      }
      write_input_grad(G.data(), e.data(), denom, norm, np, F, job.out + b * F * P, P, p0);
    }
  }
};

// Heatmaps: out = clamp(amax_m |s_m|). The gradient passes the clamp where lo ≤ max ≤ hi
// (torch.clamp's rule), is shared equally by tied maxima (torch.amax's rule) and is multiplied
// by sign(s) (abs).
struct HeatmapWeights {
  template <typename T, int64_t R, int64_t V>
  static void compute(const Job<T>& job, int64_t b, int64_t pix0, int64_t nv, int64_t c0,
                      const T* s, T* w) {
    const int64_t M = job.m, K = job.k, P = job.x.pixels;
    const T lo = T(kScoreMin), hi = T(kScoreMax);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t k = c0 + r;
      for (int64_t v = 0; v < V; ++v) {
        const int64_t i = r * V + v;
        T best = std::abs(s[i]);
        for (int64_t m = 1; m < M; ++m) best = nan_max(best, std::abs(s[m * R * V + i]));
        int64_t count = 0;
        for (int64_t m = 0; m < M; ++m) count += std::abs(s[m * R * V + i]) == best;
        const bool pass = k < K && v < nv && count > 0 && best >= lo && best <= hi;
        const T scale = pass ? job.grad[(b * K + k) * P + pix0 + v] / T(count) : T(0);
        for (int64_t m = 0; m < M; ++m) {
          const T x = s[m * R * V + i];
          w[m * R * V + i] = (scale != T(0) && std::abs(x) == best) ? scale * sgn(x) : T(0);
        }
      }
    }
  }
};

// ------------------------------------------------------------------------------------------
// ISA selection and the parallel loop
// ------------------------------------------------------------------------------------------

enum class Isa : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

Isa supported_isa() {
#ifdef POSEBH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kGeneric;
}

// The best supported variant, lowered by POSEBH_CPU_ISA=avx2|generic (read on every call so
// tests can switch it; never raised above what the CPU supports).
Isa selected_isa() {
  static const Isa best = supported_isa();
  const char* env = std::getenv("POSEBH_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  Isa isa = best;
  if (want == "generic") isa = Isa::kGeneric;
  if (want == "avx2") isa = Isa::kAvx2;
  return static_cast<int>(isa) < static_cast<int>(best) ? isa : best;
}

std::string cpu_isa() {
  switch (selected_isa()) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "generic";
  }
}

template <class Kernel, typename T>
void parallel_tiles(const Job<T>& job, int64_t tiles) {
  if (tiles <= 0) return;
  const Isa isa = selected_isa();
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
#ifdef POSEBH_X86
    if (isa == Isa::kAvx512) return Kernel::template run<T, Avx512Isa>(job, t0, t1);
    if (isa == Isa::kAvx2) return Kernel::template run<T, Avx2Isa>(job, t0, t1);
#endif
    Kernel::template run<T, GenericIsa>(job, t0, t1);
  });
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ------------------------------------------------------------------------------------------
// Operator implementations (CPU)
// ------------------------------------------------------------------------------------------

void check_inputs(const at::Tensor& embeddings, int64_t emb_dim, const at::Tensor& prototypes,
                  int64_t start, int64_t stop, const char* op) {
  TORCH_CHECK(embeddings.dim() == emb_dim, op, ": embeddings must have ", emb_dim,
              " dimensions, got ", embeddings.sizes());
  TORCH_CHECK(prototypes.dim() == 3 && prototypes.size(1) > 0, op,
              ": prototypes must be [J, M, F] with M > 0, got ", prototypes.sizes());
  TORCH_CHECK(prototypes.size(2) == embeddings.size(1), op, ": embedding dimension ",
              embeddings.size(1), " does not match the prototypes' ", prototypes.size(2));
  TORCH_CHECK(embeddings.scalar_type() == prototypes.scalar_type(), op,
              ": embeddings and prototypes must have the same dtype, got ",
              embeddings.scalar_type(), " and ", prototypes.scalar_type());
  TORCH_CHECK(prototypes.scalar_type() == at::kFloat || prototypes.scalar_type() == at::kDouble,
              op, ": the CPU kernels support float32 and float64, got ",
              prototypes.scalar_type());
  TORCH_CHECK(embeddings.device().is_cpu() && prototypes.device().is_cpu(), op,
              ": expected CPU tensors");
  TORCH_CHECK(0 <= start && start <= stop && stop <= prototypes.size(0), op, ": classes [",
              start, ", ", stop, ") out of range for J = ", prototypes.size(0));
}

// F.normalize(prototypes[start:stop]) with the reference's ATen calls (bit-equal rows), laid
// out [M][Kp][F] with the classes zero padded to a multiple of kClassPad.
at::Tensor prepare_prototypes(const at::Tensor& prototypes, int64_t start, int64_t stop) {
  const at::Tensor p = prototypes.slice(0, start, stop);  // [K, M, F]
  const at::Tensor pn = p / p.norm(2, {-1}, /*keepdim=*/true).clamp_min(kNormEps);
  const int64_t K = p.size(0), M = p.size(1), F = p.size(2);
  at::Tensor out = at::zeros({M, ceil_div(K, kClassPad) * kClassPad, F}, p.options());
  if (K > 0) out.narrow(1, 0, K).copy_(pn.transpose(0, 1));
  return out;
}

// A [B,F,H,W] tensor as (batch, feature, pixel) strides; copies only if H and W cannot be
// flattened into one pixel stride (NCHW and channels_last both can).
template <typename T>
PixelView<T> pixel_view_4d(at::Tensor& x) {
  if (x.size(2) > 1 && x.size(3) > 1 && x.stride(2) != x.size(3) * x.stride(3)) {
    x = x.contiguous();
  }
  const int64_t sp = x.size(3) > 1 ? x.stride(3) : x.stride(2);
  return {x.const_data_ptr<T>(), x.stride(0), x.stride(1), sp,
          x.size(0),             x.size(1),   x.size(2) * x.size(3)};
}

// Whether the reference's flat [N, F] embeddings have contiguous rows. The reference runs
// x.permute(0, 2, 3, 1).reshape(N, F): contiguous for channels_last input, a copy (contiguous)
// when the permuted B, H, W dims cannot merge (NCHW with B > 1), and a strided view otherwise
// (NCHW with B == 1), whose norm takes ATen's generic reduction.
bool reference_rows_contiguous_4d(const at::Tensor& x) {
  const at::Tensor perm = x.permute({0, 2, 3, 1});
  if (perm.is_contiguous()) return true;
  int64_t prev_size = 0, prev_stride = 0;
  bool first = true;
  for (int64_t d = 0; d < 3; ++d) {
    if (perm.size(d) == 1) continue;
    if (!first && prev_stride != perm.size(d) * perm.stride(d)) return true;  // copied
    prev_size = perm.size(d);
    prev_stride = perm.stride(d);
    first = false;
  }
  (void)prev_size;
  // A view: contiguous rows iff the feature stride is 1 and pixels are F apart.
  return x.size(1) == 1 || (x.stride(1) == 1 && (first || prev_stride == x.size(1)));
}

// [N, F] as one image of N pixels.
template <typename T>
PixelView<T> pixel_view_2d(const at::Tensor& x) {
  return {x.const_data_ptr<T>(), 0, x.stride(1), x.stride(0), 1, x.size(1), x.size(0)};
}

template <typename T>
void set_protos(Job<T>& job, const at::Tensor& protos, int64_t k) {
  job.protos = protos.const_data_ptr<T>();
  job.m = protos.size(0);
  job.kp = protos.size(1);
  job.k = k;
}

at::Tensor heatmaps_cpu(const at::Tensor& embeddings, const at::Tensor& prototypes, int64_t start,
                        int64_t stop) {
  check_inputs(embeddings, 4, prototypes, start, stop, "prototype_heatmaps");
  const int64_t B = embeddings.size(0), H = embeddings.size(2), W = embeddings.size(3);
  const int64_t K = stop - start;
  at::Tensor out = at::empty({B, K, H, W}, prototypes.options());
  const at::Tensor protos = prepare_prototypes(prototypes, start, stop);
  AT_DISPATCH_FLOATING_TYPES(prototypes.scalar_type(), "prototype_heatmaps", [&] {
    at::Tensor x = embeddings;
    Job<scalar_t> job;
    job.lastdim_norm = reference_rows_contiguous_4d(embeddings);
    job.x = pixel_view_4d<scalar_t>(x);
    set_protos(job, protos, K);
    job.out = out.mutable_data_ptr<scalar_t>();
    job.tiles_per_image = ceil_div(H * W, kTile);
    if (K > 0) parallel_tiles<HeatmapsForward>(job, B * job.tiles_per_image);
  });
  return out;
}

at::Tensor heatmaps_backward_cpu(const at::Tensor& grad, const at::Tensor& embeddings,
                                 const at::Tensor& prototypes, int64_t start, int64_t stop) {
  check_inputs(embeddings, 4, prototypes, start, stop, "prototype_heatmaps_backward");
  const int64_t B = embeddings.size(0), F = embeddings.size(1), H = embeddings.size(2),
                W = embeddings.size(3), K = stop - start;
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({B, K, H, W}),
              "prototype_heatmaps_backward: grad must be [B, K, H, W], got ", grad.sizes());
  at::Tensor out = at::zeros({B, F, H, W}, embeddings.options());
  const at::Tensor protos = prepare_prototypes(prototypes, start, stop);
  const at::Tensor g = grad.to(prototypes.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(prototypes.scalar_type(), "prototype_heatmaps_backward", [&] {
    at::Tensor x = embeddings;
    Job<scalar_t> job;
    job.x = pixel_view_4d<scalar_t>(x);
    set_protos(job, protos, K);
    job.out = out.mutable_data_ptr<scalar_t>();
    job.grad = g.const_data_ptr<scalar_t>();
    job.tiles_per_image = ceil_div(H * W, kTile);
    if (K > 0) parallel_tiles<Backward<HeatmapWeights>>(job, B * job.tiles_per_image);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> logits_cpu(const at::Tensor& embeddings,
                                              const at::Tensor& prototypes, int64_t start,
                                              int64_t stop) {
  check_inputs(embeddings, 2, prototypes, start, stop, "prototype_logits");
  const int64_t N = embeddings.size(0), M = prototypes.size(1), K = stop - start;
  at::Tensor logits = at::empty({N, K * M}, prototypes.options());
  at::Tensor best = at::empty({N, K}, prototypes.options().dtype(at::kLong));
  const at::Tensor protos = prepare_prototypes(prototypes, start, stop);
  AT_DISPATCH_FLOATING_TYPES(prototypes.scalar_type(), "prototype_logits", [&] {
    Job<scalar_t> job;
    job.lastdim_norm = embeddings.size(1) == 1 || embeddings.stride(1) == 1;
    job.x = pixel_view_2d<scalar_t>(embeddings);
    set_protos(job, protos, K);
    job.out = logits.mutable_data_ptr<scalar_t>();
    job.best = best.mutable_data_ptr<int64_t>();
    job.tiles_per_image = ceil_div(N, kTile);
    if (K > 0) parallel_tiles<LogitsForward>(job, job.tiles_per_image);
  });
  return {logits, best};
}

at::Tensor logits_backward_cpu(const at::Tensor& grad, const at::Tensor& embeddings,
                               const at::Tensor& prototypes, int64_t start, int64_t stop) {
  check_inputs(embeddings, 2, prototypes, start, stop, "prototype_logits_backward");
  const int64_t N = embeddings.size(0), F = embeddings.size(1), M = prototypes.size(1),
                K = stop - start;
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({N, K * M}),
              "prototype_logits_backward: grad must be [N, K*M], got ", grad.sizes());
  if (N == 0 || K == 0) return at::zeros({N, F}, embeddings.options());
  // Training's N×(K·M)×F products belong in BLAS (the tiled kernel's per-pixel accumulation
  // ran at a third of the reference's speed): s = u p̂ᵀ recomputed, w = grad · sgn(s),
  // G = w p̂, then the derivative of F.normalize as in write_input_grad.
  const at::Tensor x = embeddings.to(prototypes.scalar_type());
  const at::Tensor norm = x.norm(2, {1}, /*keepdim=*/true);
  const at::Tensor denom = norm.clamp_min(kNormEps);  // NaN stays NaN
  const at::Tensor u = x / denom;
  const at::Tensor p = prototypes.slice(0, start, stop);
  const at::Tensor pn = (p / p.norm(2, {-1}, /*keepdim=*/true).clamp_min(kNormEps)).reshape({K * M, F});
  const at::Tensor s = at::mm(u, pn.t());
  // sgn as the tiled kernel's: ±1, 0 at 0, NaN stays NaN.
  const at::Tensor sg = at::where(at::isnan(s), s, at::sign(s));
  const at::Tensor G = at::mm(grad.to(prototypes.scalar_type()) * sg, pn);
  const at::Tensor a = at::where(norm >= kNormEps, (G * u).sum(1, /*keepdim=*/true), 0.0);
  return ((G - a * u) / denom).to(embeddings.scalar_type()).contiguous();
}

}  // namespace
}  // namespace posebh_kernels

// FRAGMENT, not TORCH_LIBRARY: the namespace `posebh` is shared by every posebh extension
// (each op builds its own library, so one failing source cannot take the others down), and a
// process may hold only one TORCH_LIBRARY block per namespace.
TORCH_LIBRARY_FRAGMENT(posebh, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def("prototype_heatmaps(Tensor embeddings, Tensor prototypes, int start, int stop) -> Tensor",
        tags);
  m.def(
      "prototype_heatmaps_backward(Tensor grad, Tensor embeddings, Tensor prototypes, int start, "
      "int stop) -> Tensor",
      tags);
  m.def(
      "prototype_logits(Tensor embeddings, Tensor prototypes, int start, int stop) -> (Tensor, "
      "Tensor)",
      tags);
  m.def(
      "prototype_logits_backward(Tensor grad, Tensor embeddings, Tensor prototypes, int start, "
      "int stop) -> Tensor",
      tags);
  m.def("prototype_similarity_cpu_isa() -> str", &posebh_kernels::cpu_isa);
}

TORCH_LIBRARY_IMPL(posebh, CPU, m) {
  m.impl("prototype_heatmaps", &posebh_kernels::heatmaps_cpu);
  m.impl("prototype_heatmaps_backward", &posebh_kernels::heatmaps_backward_cpu);
  m.impl("prototype_logits", &posebh_kernels::logits_cpu);
  m.impl("prototype_logits_backward", &posebh_kernels::logits_backward_cpu);
}
