// Fused heatmap decoding: the CPU implementation, the argument checking and the op schemas.
//
// Shapes (N instances, K keypoints, H×W maps; channel c = n·K + k):
//
//   posebh::decode_heatmaps(heatmaps [N,K,H,W] f32, center [N,2], scale [N,2],
//                           flipped [N,K,H,W]? , flip_indices int[K]?, bool shift,
//                           str? post_process, bool use_udp, int kernel)
//       -> (preds [N,K,2] f32 in image pixels, maxvals [N,K,1] f32)
//   posebh::decode_heatmaps_cpu_isa() -> str, the SIMD variant the CPU kernel runs
//   posebh::decode_numpy_logf(Tensor x f32) -> Tensor, the NumPy-exact log (for tests)
//   posebh::decode_gaussian_taps(int kernel) -> Tensor, OpenCV's 1-D kernel (for tests)
//
// Semantics are those of posebh.decode.decode_heatmaps (the NumPy reference, which reproduces
// mmpose 0.x), with the flip test fused in front: when `flipped` is given, every map read is
// (heatmaps + flip_back(flipped, flip_indices, shift)) · 0.5 computed on the fly, which is
// posebh.decode.flip_test_merge bit for bit, without materialising the merged stack.
//
// Work per map: ONE streaming pass (arg-max and max value in a single read, AVX2 with a
// run-time CPU check, NaN-exact), then O(1) work around the peak: the quarter offset reads 4
// neighbours, DARK-UDP blurs only the 7 points it reads (13 rows × 3 columns of row-pass
// results shared by the 7 points, ≈ 430 fused multiply-adds for an 11-tap kernel). Only
// 'unbiased' and 'megvii' blur whole maps (their rescale needs the blurred maximum).
//
// Bit-exactness with the reference (float32): the Gaussian blur follows OpenCV 4.x's SIMD
// filter engine operation by operation (row pass: s = fma(src[x+t], k[t], s) from 0 for
// kernels > 5 taps, the symmetric form for ≤ 5; column pass symmetric; float32 in between),
// the log is NumPy's SIMD log (decode_heatmaps_common.h), the Newton steps use the reference's
// mix of float32 and float64. The file is compiled with -ffp-contract=off so that the only
// fused operations are the explicit fmaf calls.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define POSEBH_DECODE_X86 1
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "decode_heatmaps_args.h"
#include "decode_heatmaps_common.h"

namespace posebh_decode {

// ------------------------------------------------------------------------------------------
// OpenCV's 1-D Gaussian kernel (cv2.getGaussianKernel(k, 0)), as posebh.decode builds it
// ------------------------------------------------------------------------------------------

std::vector<float> gaussian_taps(int64_t ksize) {
  // OpenCV's fixed binomial tables for k ≤ 7 (sigma ≤ 0).
  switch (ksize) {
    case 1:
      return {1.0f};
    case 3:
      return {0.25f, 0.5f, 0.25f};
    case 5:
      return {0.0625f, 0.25f, 0.375f, 0.25f, 0.0625f};
    case 7:
      return {0.03125f, 0.109375f, 0.21875f, 0.28125f, 0.21875f, 0.109375f, 0.03125f};
    default:
      break;
  }
  // sigma = 0.15·k + 0.35 with one rounding (OpenCV's softdouble mulAdd), taps exp(−d²/2σ²)
  // sampled at x = 2d as exp(x²·(−1/8σ²)), normalised in float64 by 1/sum, cast to float32.
  const double sigma = std::fma(static_cast<double>(ksize), 0.15, 0.35);
  const double scale2x = -0.125 / (sigma * sigma);
  std::vector<double> side;
  for (int64_t x = 1 - ksize; x < 0; x += 2) {
    const double xd = static_cast<double>(x);
    side.push_back(std::exp((xd * xd) * scale2x));
  }
  double total = 0.0;
  for (double t : side) total += t;  // sequential, as OpenCV
  const double mul = 1.0 / (2.0 * total + 1.0);
  std::vector<float> taps;
  for (double t : side) taps.push_back(static_cast<float>(t * mul));
  taps.push_back(static_cast<float>(mul));
  for (auto it = side.rbegin(); it != side.rend(); ++it) {
    taps.push_back(static_cast<float>(*it * mul));
  }
  return taps;
}

// ------------------------------------------------------------------------------------------
// Argument checking and the op
// ------------------------------------------------------------------------------------------

int32_t parse_mode(const std::optional<c10::string_view>& post_process, bool use_udp,
                   int64_t kernel) {
  int32_t pp;
  if (!post_process.has_value()) {
    pp = kModeNone;
  } else if (*post_process == "default") {
    pp = kModeDefault;
  } else if (*post_process == "unbiased") {
    pp = kModeUnbiased;
  } else if (*post_process == "megvii") {
    pp = kModeMegvii;
  } else {
    TORCH_CHECK_VALUE(false, "decode_heatmaps: post_process must be 'default', 'unbiased', ",
                      "'megvii' or None, got '", std::string(*post_process), "'");
  }
  TORCH_CHECK_VALUE(!(use_udp && pp == kModeMegvii),
                    "decode_heatmaps: post_process='megvii' cannot be combined with use_udp=True");
  const int32_t mode = use_udp ? kModeUdp : pp;
  if (mode == kModeUdp || mode == kModeUnbiased || mode == kModeMegvii) {
    TORCH_CHECK_VALUE(kernel > 0 && kernel % 2 == 1,
                      "decode_heatmaps: needs a positive odd Gaussian kernel size, got ", kernel);
    // blur_point keeps one window column on the stack; posebh.ops falls back to the reference.
    TORCH_CHECK_VALUE(kernel <= kMaxKernel, "decode_heatmaps: kernel sizes up to ", kMaxKernel,
                      " are supported, got ", kernel);
  }
  return mode;
}

// Per-box transform factors, in the reference's precisions (posebh.decode.transform_preds):
// s_px = scale·200 in the scale dtype, then float64; factor = f32(s_px / (size − udp)),
// half = f32(s_px · 0.5), offset = f32(center).
at::Tensor box_factors(const at::Tensor& center, const at::Tensor& scale, int64_t N, int64_t H,
                       int64_t W, bool use_udp) {
  const at::Tensor ctr = center.reshape({-1, 2}).cpu();
  const at::Tensor scl = scale.reshape({-1, 2}).cpu();
  TORCH_CHECK_VALUE(ctr.size(0) == N && scl.size(0) == N, "decode_heatmaps: center ",
                    center.sizes(), " and scale ", scale.sizes(), " must be [N=", N, ", 2]");
  const at::Tensor c64 =
      ctr.scalar_type() == at::kDouble ? ctr : ctr.to(at::kFloat).to(at::kDouble);
  at::Tensor s_px;
  if (scl.scalar_type() == at::kDouble) {
    s_px = scl * 200.0;
  } else {
    s_px = (scl.to(at::kFloat) * 200.0f).to(at::kDouble);  // float32 product, as NumPy
  }
  const double div_x = static_cast<double>(W) - (use_udp ? 1.0 : 0.0);
  const double div_y = static_cast<double>(H) - (use_udp ? 1.0 : 0.0);
  at::Tensor out = at::empty({N, 6}, at::kFloat);
  auto o = out.accessor<float, 2>();
  const at::Tensor s64 = s_px.contiguous(), cc = c64.contiguous();
  auto s = s64.accessor<double, 2>();
  auto cv = cc.accessor<double, 2>();
  for (int64_t n = 0; n < N; ++n) {
    o[n][0] = static_cast<float>(s[n][0] / div_x);
    o[n][1] = static_cast<float>(s[n][1] / div_y);
    o[n][2] = static_cast<float>(cv[n][0]);
    o[n][3] = static_cast<float>(cv[n][1]);
    o[n][4] = static_cast<float>(s[n][0] * 0.5);
    o[n][5] = static_cast<float>(s[n][1] * 0.5);
  }
  return out;
}

Checked check_args(const at::Tensor& heatmaps, const at::Tensor& center, const at::Tensor& scale,
                   const std::optional<at::Tensor>& flipped, at::OptionalIntArrayRef flip_indices,
                   const std::optional<c10::string_view>& post_process, bool use_udp,
                   int64_t kernel) {
  TORCH_CHECK_VALUE(heatmaps.dim() == 4, "decode_heatmaps: heatmaps must be [N, K, H, W], got ",
                    heatmaps.sizes());
  TORCH_CHECK_VALUE(heatmaps.size(2) > 0 && heatmaps.size(3) > 0,
                    "decode_heatmaps: heatmaps must have a non-empty H×W, got ", heatmaps.sizes());
  TORCH_CHECK(heatmaps.scalar_type() == at::kFloat,
              "decode_heatmaps: heatmaps must be float32 (convert half/bfloat16 first), got ",
              heatmaps.scalar_type());
  Checked a;
  a.mode = parse_mode(post_process, use_udp, kernel);
  a.N = heatmaps.size(0);
  a.K = heatmaps.size(1);
  a.H = heatmaps.size(2);
  a.W = heatmaps.size(3);
  a.hm = heatmaps.contiguous();
  if (flipped.has_value()) {
    TORCH_CHECK_VALUE(flipped->sizes() == heatmaps.sizes(), "decode_heatmaps: flipped ",
                      flipped->sizes(), " must have the shape of heatmaps ", heatmaps.sizes());
    TORCH_CHECK(flipped->scalar_type() == at::kFloat && flipped->device() == heatmaps.device(),
                "decode_heatmaps: flipped must be float32 on the device of heatmaps");
    TORCH_CHECK_VALUE(flip_indices.has_value() && static_cast<int64_t>(flip_indices->size()) == a.K,
                      "decode_heatmaps: flipped needs flip_indices of length K=", a.K);
    std::vector<bool> seen(a.K, false);
    for (int64_t v : *flip_indices) {
      TORCH_CHECK_VALUE(v >= 0 && v < a.K && !seen[v], "decode_heatmaps: flip_indices must be ",
                        "a permutation of range(", a.K, "), got ", *flip_indices);
      seen[v] = true;
    }
    a.fl = flipped->contiguous();
    a.fidx = at::tensor(*flip_indices, at::kLong);
  }
  a.box = box_factors(center, scale, a.N, a.H, a.W, a.mode == kModeUdp);
  const std::vector<float> taps = gaussian_taps(a.mode == kModeNone || a.mode == kModeDefault
                                                    ? 1
                                                    : kernel);
  a.taps = at::tensor(taps, at::kFloat);
  return a;
}

namespace {

#define POSEBH_INLINE inline __attribute__((always_inline))
// Lambdas too: a lambda left out of line is compiled for the default ISA (fmaf via libm).
#define POSEBH_LAMBDA_INLINE __attribute__((always_inline))

constexpr int kMaxFastKernel = 31;  // the DARK-UDP fast path keeps a (k+2)² window on the stack

// ------------------------------------------------------------------------------------------
// Arg-max: first maximum in row-major order, or the first NaN (np.argmax semantics)
// ------------------------------------------------------------------------------------------

struct ArgMax {
  int64_t index;
  float value;
};

POSEBH_INLINE ArgMax argmax_scalar(const float* x, int64_t n) {
  float best = x[0];
  int64_t bi = 0;
  if (best != best) return {0, best};
  for (int64_t i = 1; i < n; ++i) {
    const float v = x[i];
    if (v != v) return {i, v};
    if (v > best) {
      best = v;
      bi = i;
    }
  }
  return {bi, best};
}

#ifdef POSEBH_DECODE_X86
// One read of the map in chunks of 256 floats: four running lane maxima per chunk (vmaxps),
// then the chunk's maximum is reduced to a scalar and compared with the best so far, keeping the
// FIRST chunk that reached the final maximum (strict >). Only that chunk is scanned again
// (L1-resident) for the first index holding the maximum, so ties resolve in row-major order
// like np.argmax. vmaxps is not NaN-exact (it returns its second operand when either is NaN),
// hence an unordered-compare flag; a map with a NaN takes the scalar path, which returns the
// first NaN like np.argmax.
__attribute__((target("avx2,fma"))) ArgMax argmax_avx2(const float* x, int64_t n) {
  constexpr int64_t kChunk = 256;
  if (n < kChunk) return argmax_scalar(x, n);
  __m256 unord = _mm256_setzero_ps();
  float best = -INFINITY;
  int64_t best_chunk = -1;
  const int64_t full = n / kChunk * kChunk;
  for (int64_t c = 0; c < full; c += kChunk) {
    const float* p = x + c;
    __m256 m0 = _mm256_loadu_ps(p), m1 = _mm256_loadu_ps(p + 8);
    __m256 m2 = _mm256_loadu_ps(p + 16), m3 = _mm256_loadu_ps(p + 24);
    unord = _mm256_or_ps(unord, _mm256_cmp_ps(m0, m1, _CMP_UNORD_Q));
    unord = _mm256_or_ps(unord, _mm256_cmp_ps(m2, m3, _CMP_UNORD_Q));
    for (int64_t i = 32; i < kChunk; i += 32) {
      const __m256 a0 = _mm256_loadu_ps(p + i), a1 = _mm256_loadu_ps(p + i + 8);
      const __m256 a2 = _mm256_loadu_ps(p + i + 16), a3 = _mm256_loadu_ps(p + i + 24);
      m0 = _mm256_max_ps(m0, a0);
      m1 = _mm256_max_ps(m1, a1);
      m2 = _mm256_max_ps(m2, a2);
      m3 = _mm256_max_ps(m3, a3);
      // unordered(a, b) is true if either is NaN: two compares cover four vectors.
      unord = _mm256_or_ps(unord, _mm256_cmp_ps(a0, a1, _CMP_UNORD_Q));
      unord = _mm256_or_ps(unord, _mm256_cmp_ps(a2, a3, _CMP_UNORD_Q));
    }
    __m256 m = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float cm = _mm_cvtss_f32(h);
    if (cm > best) {
      best = cm;
      best_chunk = c;
    }
  }
  if (_mm256_movemask_ps(unord) != 0) return argmax_scalar(x, n);
  // Tail: scalar, with its own index (an equal value in an earlier chunk keeps precedence).
  int64_t tail_index = -1;
  for (int64_t i = full; i < n; ++i) {
    const float v = x[i];
    if (v != v) return argmax_scalar(x, n);
    if (v > best) {
      best = v;
      tail_index = i;
    }
  }
  if (tail_index >= 0) return {tail_index, best};
  if (best_chunk < 0) return {0, x[0]};  // every value is −inf
  const __m256 target = _mm256_set1_ps(best);
  for (int64_t i = best_chunk; i < best_chunk + kChunk; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), target, _CMP_EQ_OQ));
    if (mask) return {i + __builtin_ctz(static_cast<unsigned>(mask)), best};
  }
  return {best_chunk, best};  // unreachable: the chunk holds its maximum
}
#endif

// ------------------------------------------------------------------------------------------
// One call's data
// ------------------------------------------------------------------------------------------

struct Job {
  const float* hm = nullptr;       // [N·K][H·W]
  const float* fl = nullptr;       // flipped maps, or nullptr
  const int64_t* fidx = nullptr;   // [K] flip pairs
  bool shift = false;
  int64_t N = 0, K = 0, H = 0, W = 0, HW = 0, NK = 0;
  int32_t mode = kModeDefault;
  int64_t ks = 11, rad = 5;
  const float* taps = nullptr;  // [ks]
  const float* box = nullptr;   // [N][6]: factor x, y; offset x, y; half x, y
  float* preds = nullptr;       // [N·K][2]
  float* maxvals = nullptr;     // [N·K]
};

// Map value at (c, y, x): the raw map, or the flip-test merge computed on the fly. The flipped
// map of channel k is flipped[n, flip_indices[k]] mirrored in x (plus the one-column shift).
POSEBH_INLINE float map_value(const Job& j, int64_t c, int64_t y, int64_t x) {
  const float a = j.hm[c * j.HW + y * j.W + x];
  if (j.fl == nullptr) return a;
  const int64_t n = c / j.K, k = c - n * j.K;
  const int64_t xs = j.shift ? (x == 0 ? j.W - 1 : j.W - x) : j.W - 1 - x;
  const float b = j.fl[(n * j.K + j.fidx[k]) * j.HW + y * j.W + xs];
  return (a + b) * 0.5f;
}

// The merged map of channel c into out[H·W] (flip_test_merge of one map).
POSEBH_INLINE void merge_map_scalar(const Job& j, int64_t c, float* out) {
  const int64_t n = c / j.K, k = c - n * j.K, W = j.W;
  const float* a = j.hm + c * j.HW;
  const float* f = j.fl + (n * j.K + j.fidx[k]) * j.HW;
  for (int64_t y = 0; y < j.H; ++y) {
    const float* ar = a + y * W;
    const float* fr = f + y * W;
    float* o = out + y * W;
    if (j.shift) {
      o[0] = (ar[0] + fr[W - 1]) * 0.5f;
      for (int64_t x = 1; x < W; ++x) o[x] = (ar[x] + fr[W - x]) * 0.5f;
    } else {
      for (int64_t x = 0; x < W; ++x) o[x] = (ar[x] + fr[W - 1 - x]) * 0.5f;
    }
  }
}

#ifdef POSEBH_DECODE_X86
// The same, 8 columns at a time, fused with the arg-max of the merged map (one pass over both
// sources): the mirrored source is read backwards, 8 floats ending at column W − 1 − x (W − x
// with the shift), and lane-reversed with one permute. Each row's maximum is compared with the
// best so far (strict >, so the first row reaching the maximum is kept) and only that row is
// scanned again for the first index; NaN anywhere sends the merged map to the scalar arg-max.
__attribute__((target("avx2,fma"))) ArgMax merge_argmax_avx2(const Job& j, int64_t c,
                                                            float* out) {
  const int64_t n = c / j.K, k = c - n * j.K, W = j.W;
  const float* a = j.hm + c * j.HW;
  const float* f = j.fl + (n * j.K + j.fidx[k]) * j.HW;
  const __m256i rev = _mm256_set_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 half = _mm256_set1_ps(0.5f);
  // Column x reads mirrored column W − 1 − x (no shift) or W − x (shift, x ≥ 1).
  const int64_t first = j.shift ? 1 : 0, base = j.shift ? W : W - 1;
  __m256 unord = _mm256_setzero_ps();
  bool nan_tail = false;
  float best = -INFINITY;
  int64_t best_row = -1;
  for (int64_t y = 0; y < j.H; ++y) {
    const float* ar = a + y * W;
    const float* fr = f + y * W;
    float* o = out + y * W;
    float row_max = -INFINITY;
    if (j.shift) {
      o[0] = (ar[0] + fr[W - 1]) * 0.5f;
      row_max = o[0];
      nan_tail |= o[0] != o[0];
    }
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t x = first;
    for (; x + 8 <= W; x += 8) {
      const __m256 r = _mm256_permutevar8x32_ps(_mm256_loadu_ps(fr + base - x - 7), rev);
      const __m256 v = _mm256_mul_ps(_mm256_add_ps(_mm256_loadu_ps(ar + x), r), half);
      _mm256_storeu_ps(o + x, v);
      m = _mm256_max_ps(m, v);
      unord = _mm256_or_ps(unord, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    for (; x < W; ++x) {
      const float v = (ar[x] + fr[base - x]) * 0.5f;
      o[x] = v;
      nan_tail |= v != v;
      row_max = v > row_max ? v : row_max;
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float vm = _mm_cvtss_f32(h);
    row_max = vm > row_max ? vm : row_max;
    if (row_max > best) {
      best = row_max;
      best_row = y;
    }
  }
  if (nan_tail || _mm256_movemask_ps(unord) != 0) return argmax_scalar(out, j.HW);
  if (best_row < 0) return {0, out[0]};  // every value is −inf
  const float* o = out + best_row * W;
  for (int64_t x = 0; x < W; ++x) {
    if (o[x] == best) return {best_row * W + x, best};
  }
  return {best_row * W, best};  // unreachable: the row holds its maximum
}
#endif

// Merge channel c into out[H·W] and return the arg-max of the merged map.
template <bool kAvx2>
POSEBH_INLINE ArgMax merge_argmax(const Job& j, int64_t c, float* out) {
#ifdef POSEBH_DECODE_X86
  if constexpr (kAvx2) return merge_argmax_avx2(j, c, out);
#endif
  merge_map_scalar(j, c, out);
  return argmax_scalar(out, j.HW);
}

// ------------------------------------------------------------------------------------------
// Blurs
// ------------------------------------------------------------------------------------------

// Row pass (kernels > 5 taps: s = fma(src[x + t], k[t], s) from 0) of n rows at 4 adjacent
// columns: rp[i][d] = pass over rows[i][d .. d + ks − 1]. rows[i] must have ks + 3 readable
// floats.
POSEBH_INLINE void row_pass4_scalar(const float* const* rows, int64_t n, const float* k,
                                    int64_t ks, float (*rp)[4]) {
  for (int64_t i = 0; i < n; ++i) {
    const float* w = rows[i];
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t t = 0; t < ks; ++t) {
      const float kt = k[t];
      for (int d = 0; d < 4; ++d) acc[d] = fmaf(w[t + d], kt, acc[d]);
    }
    for (int d = 0; d < 4; ++d) rp[i][d] = acc[d];
  }
}

#ifdef POSEBH_DECODE_X86
// The same with the 4 columns of two rows in one AVX register and 7 register pairs (14 rows) in
// flight: each row is a chain of ks dependent FMAs, so interleaving rows hides the FMA latency.
// Lane-wise _mm256_fmadd_ps is the scalar fmaf, so the bits are the same.
__attribute__((target("avx2,fma"))) void row_pass4_avx2(const float* const* rows, int64_t n,
                                                       const float* k, int64_t ks,
                                                       float (*rp)[4]) {
  constexpr int kPairs = 7;
  for (int64_t i0 = 0; i0 < n; i0 += 2 * kPairs) {
    const float* lo[kPairs];
    const float* hi[kPairs];
    for (int q = 0; q < kPairs; ++q) {
      // Rows past the end repeat the last row (computed, never stored).
      lo[q] = rows[std::min<int64_t>(i0 + 2 * q, n - 1)];
      hi[q] = rows[std::min<int64_t>(i0 + 2 * q + 1, n - 1)];
    }
    __m256 acc[kPairs];
    for (int q = 0; q < kPairs; ++q) acc[q] = _mm256_setzero_ps();
    for (int64_t t = 0; t < ks; ++t) {
      const __m256 kt = _mm256_set1_ps(k[t]);
      for (int q = 0; q < kPairs; ++q) {
        acc[q] = _mm256_fmadd_ps(_mm256_loadu2_m128(hi[q] + t, lo[q] + t), kt, acc[q]);
      }
    }
    for (int q = 0; q < kPairs; ++q) {
      const int64_t i = i0 + 2 * q;
      if (i < n) _mm_storeu_ps(rp[i], _mm256_castps256_ps128(acc[q]));
      if (i + 1 < n) _mm_storeu_ps(rp[i + 1], _mm256_extractf128_ps(acc[q], 1));
    }
  }
}
#endif

// Column pass (symmetric: s = src[y]·k[r], then s = fma(src[y + t] + src[y − t], k[r + t], s))
// of the 4-column row-pass block rp at window rows r + e, e = 0, 1, 2: cp[e][:].
POSEBH_INLINE void col_pass4_scalar(const float (*rp)[4], int64_t r, const float* k,
                                    float (*cp)[4]) {
  for (int64_t e = 0; e < 3; ++e) {
    const int64_t i = r + e;
    for (int d = 0; d < 4; ++d) {
      float s = rp[i][d] * k[r];
      for (int64_t t = 1; t <= r; ++t) s = fmaf(rp[i + t][d] + rp[i - t][d], k[r + t], s);
      cp[e][d] = s;
    }
  }
}

#ifdef POSEBH_DECODE_X86
__attribute__((target("avx2,fma"))) void col_pass4_avx2(const float (*rp)[4], int64_t r,
                                                       const float* k, float (*cp)[4]) {
  const __m128 kr = _mm_set1_ps(k[r]);
  __m128 s0 = _mm_mul_ps(_mm_loadu_ps(rp[r]), kr);
  __m128 s1 = _mm_mul_ps(_mm_loadu_ps(rp[r + 1]), kr);
  __m128 s2 = _mm_mul_ps(_mm_loadu_ps(rp[r + 2]), kr);
  for (int64_t t = 1; t <= r; ++t) {
    const __m128 kt = _mm_set1_ps(k[r + t]);
    s0 = _mm_fmadd_ps(_mm_add_ps(_mm_loadu_ps(rp[r + t]), _mm_loadu_ps(rp[r - t])), kt, s0);
    s1 = _mm_fmadd_ps(_mm_add_ps(_mm_loadu_ps(rp[r + 1 + t]), _mm_loadu_ps(rp[r + 1 - t])), kt, s1);
    s2 = _mm_fmadd_ps(_mm_add_ps(_mm_loadu_ps(rp[r + 2 + t]), _mm_loadu_ps(rp[r + 2 - t])), kt, s2);
  }
  _mm_storeu_ps(cp[0], s0);
  _mm_storeu_ps(cp[1], s1);
  _mm_storeu_ps(cp[2], s2);
}

__attribute__((target("avx2,fma"))) inline __m256 bcast8(float f) { return _mm256_set1_ps(f); }

// numpy_logf on 8 lanes (NumPy's own AVX2 kernel, lane for lane), for DARK-UDP's clipped values:
// positive normal numbers or NaN (NaN lanes return their input).

__attribute__((target("avx2,fma"))) void numpy_log8_avx2(float* v) {
  const __m256 x = _mm256_loadu_ps(v);
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i biased = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126));
  __m256 e = _mm256_cvtepi32_ps(biased);
  const __m256i mant = _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(mant, _mm256_set1_epi32(126 << 23)));
  const __m256 sqrt_half = bcast8(0.707106781186547524400844362104849039f);
  const __m256 small = _mm256_cmp_ps(m, sqrt_half, _CMP_LE_OQ);
  m = _mm256_add_ps(m, _mm256_and_ps(m, small));
  e = _mm256_sub_ps(e, _mm256_and_ps(bcast8(1.0f), small));
  m = _mm256_sub_ps(m, bcast8(1.0f));
  const __m256 p5 = bcast8(2.589979117907922693523e-02f);
  __m256 num = _mm256_fmadd_ps(p5, m, bcast8(3.808837741388407920751e-01f));
  num = _mm256_fmadd_ps(num, m, bcast8(1.480000633576506585156e+00f));
  num = _mm256_fmadd_ps(num, m, bcast8(2.112677543073053063722e+00f));
  num = _mm256_fmadd_ps(num, m, bcast8(9.999999999999998702752e-01f));
  num = _mm256_fmadd_ps(num, m, bcast8(0.0f));
  const __m256 q5 = bcast8(5.875095403124574342950e-03f);
  __m256 den = _mm256_fmadd_ps(q5, m, bcast8(1.546476374983906719538e-01f));
  den = _mm256_fmadd_ps(den, m, bcast8(9.864942958519418960339e-01f));
  den = _mm256_fmadd_ps(den, m, bcast8(2.453006071784736363091e+00f));
  den = _mm256_fmadd_ps(den, m, bcast8(2.612677543073109236779e+00f));
  den = _mm256_fmadd_ps(den, m, bcast8(1.0f));
  const __m256 ln2 = bcast8(0.693147180559945309417232121458176568f);
  __m256 out = _mm256_fmadd_ps(e, ln2, _mm256_div_ps(num, den));
  out = _mm256_blendv_ps(out, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  _mm256_storeu_ps(v, out);
}
#endif

template <bool kAvx2>
POSEBH_INLINE void col_pass4(const float (*rp)[4], int64_t r, const float* k, float (*cp)[4]) {
#ifdef POSEBH_DECODE_X86
  if constexpr (kAvx2) {
    col_pass4_avx2(rp, r, k, cp);
    return;
  }
#endif
  col_pass4_scalar(rp, r, k, cp);
}

// log(clip(v, 0.001, 50)) of DARK-UDP's 7 values (v has 8 slots).
template <bool kAvx2>
POSEBH_INLINE void udp_log7(float v[8]) {
  for (int q = 0; q < 7; ++q) v[q] = clip_udp(v[q]);
#ifdef POSEBH_DECODE_X86
  if constexpr (kAvx2) {
    v[7] = 1.0f;
    numpy_log8_avx2(v);
    return;
  }
#endif
  for (int q = 0; q < 7; ++q) v[q] = numpy_logf(v[q]);
}

template <bool kAvx2>
POSEBH_INLINE void row_pass4(const float* const* rows, int64_t n, const float* k, int64_t ks,
                             float (*rp)[4]) {
#ifdef POSEBH_DECODE_X86
  if constexpr (kAvx2) {
    row_pass4_avx2(rows, n, k, ks, rp);
    return;
  }
#endif
  row_pass4_scalar(rows, n, k, ks, rp);
}

// dst[0, len) = src[0, len) for len ≥ B by fixed-size copies of B floats, the last one
// overlapping (the compiler turns each into one vector load/store).
template <int B>
POSEBH_INLINE void copy_overlapping(float* dst, const float* src, int64_t len) {
  int64_t o = 0;
  for (; o + B <= len; o += B) std::memcpy(dst + o, src + o, sizeof(float) * B);
  if (o < len) std::memcpy(dst + len - B, src + len - B, sizeof(float) * B);
}

// DARK-UDP's seven blurred values around a proper arg-max (x, y) of map m [H][W], for kernels
// of 7..kMaxFastKernel taps on maps of at least 2×2: the seven points lie in rows y−1..y+1 and
// columns x−1..x+1 (clamped), so the row pass is run once for the 3 columns of the k+2 window
// rows and shared. Same operations as blur_point, so the same bits.
template <bool kAvx2>
POSEBH_INLINE void udp_points_fast(const Job& j, const float* m, int64_t x, int64_t y,
                                   float out[7]) {
  const int64_t r = j.rad, ks = j.ks, n = ks + 2, W = j.W, H = j.H;
  const float* k = j.taps;
  // Window rows: k + 2 map rows around y (reflected), columns x − 1 − r … x + 1 + r. The row
  // pass below computes 4 adjacent columns at once: x − 1 … x + 2 (lane shift 0) or, at the
  // right edge, x − 2 … x + 1 (shift 1), so that all reads stay inside the row and the window
  // is read in place. Near the left/right border the window is copied with reflected columns.
  float win[kMaxFastKernel + 2][kMaxFastKernel + 4];
  const float* rows[kMaxFastKernel + 2];
  const int64_t x0 = x - 1 - r, y0 = y - 1 - r;
  int64_t shift = 0;
  bool in_place = true;
  if (x0 >= 0 && x0 + n + 1 <= W) {
    shift = 0;
  } else if (x0 >= 1 && x0 + n <= W) {
    shift = 1;
  } else {
    in_place = false;
  }
  if (in_place) {
    for (int64_t i = 0; i < n; ++i) rows[i] = m + reflect101(y0 + i, H) * W + x0 - shift;
  } else {
    // Columns [u_lo, u_hi) of the window lie inside the map and are copied as one block (two
    // overlapping fixed-size copies); the reflected ones around them one by one.
    int64_t cols[kMaxFastKernel + 2];
    for (int64_t u = 0; u < n; ++u) cols[u] = reflect101(x0 + u, W);
    const int64_t u_lo = std::max<int64_t>(0, -x0), u_hi = std::min<int64_t>(n, W - x0);
    const int64_t len = u_hi - u_lo;
    for (int64_t i = 0; i < n; ++i) {
      const float* row = m + reflect101(y0 + i, H) * W;
      float* w = win[i];
      if (len >= 8) {
        copy_overlapping<8>(w + u_lo, row + x0 + u_lo, len);
      } else if (len >= 4) {
        copy_overlapping<4>(w + u_lo, row + x0 + u_lo, len);
      } else {
        for (int64_t u = u_lo; u < u_hi; ++u) w[u] = row[x0 + u];
      }
      for (int64_t u = 0; u < u_lo; ++u) w[u] = row[cols[u]];
      for (int64_t u = u_hi; u < n; ++u) w[u] = row[cols[u]];
      w[n] = 0.0f;
      rows[i] = w;
    }
  }
  // rp[i][d + shift]: row pass of window row i at column x − 1 + d.
  float rp[kMaxFastKernel + 2][4];
  row_pass4<kAvx2>(rows, n, k, ks, rp);
  // Column pass at map rows y − 1 + e (window row r + e), all 4 columns at once: cp[e][d + shift]
  // is the blurred value at (y − 1 + e, x − 1 + d).
  float cp[3][4];
  col_pass4<kAvx2>(rp, r, k, cp);
  // Edge padding of the official padded stack: x ± 1 beyond the map reads the edge itself.
  const int64_t dm = (x > 0 ? 0 : 1) + shift, dp = (x + 1 < W ? 2 : 1) + shift, d0 = 1 + shift;
  const int64_t em = y > 0 ? 0 : 1, ep = y + 1 < H ? 2 : 1;
  out[0] = cp[1][d0];  // i_
  out[1] = cp[1][dp];  // ix1
  out[2] = cp[1][dm];  // ix1_
  out[3] = cp[ep][d0];  // iy1
  out[4] = cp[em][d0];  // iy1_
  out[5] = cp[ep][dp];  // ix1y1
  out[6] = cp[em][dm];  // ix1_y1_
}

// The official _gaussian_blur of one map before its rescale: a zero frame of the kernel radius,
// OpenCV's separable filter (so a zero-padded convolution), float32. out may not alias m.
// rowbuf needs W + 2·rad floats, rp needs H·W.
POSEBH_INLINE void blur_zero_framed(const Job& j, const float* m, float* out, float* rowbuf,
                                    float* rp) {
  const int64_t H = j.H, W = j.W, r = j.rad, ks = j.ks;
  const float* k = j.taps;
  if (ks == 1) {
    std::memcpy(out, m, sizeof(float) * H * W);
    return;
  }
  for (int64_t i = 0; i < r; ++i) rowbuf[i] = rowbuf[r + W + i] = 0.0f;
  for (int64_t y = 0; y < H; ++y) {
    std::memcpy(rowbuf + r, m + y * W, sizeof(float) * W);
    float* o = rp + y * W;
    if (ks > 5) {
      for (int64_t x = 0; x < W; ++x) o[x] = 0.0f;
      for (int64_t t = 0; t < ks; ++t) {
        const float kt = k[t];
        const float* src = rowbuf + t;
        for (int64_t x = 0; x < W; ++x) o[x] = fmaf(src[x], kt, o[x]);
      }
    } else {
      for (int64_t x = 0; x < W; ++x) o[x] = rowbuf[r + x] * k[r];
      for (int64_t t = 1; t <= r; ++t) {
        const float kt = k[r + t];
        const float* a = rowbuf + r + t;
        const float* b = rowbuf + r - t;
        for (int64_t x = 0; x < W; ++x) o[x] = fmaf(a[x] + b[x], kt, o[x]);
      }
    }
  }
  // Column pass; frame rows are zeros (a row pass of zeros is +0).
  for (int64_t y = 0; y < H; ++y) {
    float* o = out + y * W;
    const float* c0 = rp + y * W;
    for (int64_t x = 0; x < W; ++x) o[x] = c0[x] * k[r];
    for (int64_t t = 1; t <= r; ++t) {
      const float kt = k[r + t];
      const bool up = y + t < H, down = y - t >= 0;
      const float* a = rp + (y + t) * W;
      const float* b = rp + (y - t) * W;
      if (up && down) {
        for (int64_t x = 0; x < W; ++x) o[x] = fmaf(a[x] + b[x], kt, o[x]);
      } else if (up) {
        for (int64_t x = 0; x < W; ++x) o[x] = fmaf(a[x] + 0.0f, kt, o[x]);
      } else if (down) {
        for (int64_t x = 0; x < W; ++x) o[x] = fmaf(0.0f + b[x], kt, o[x]);
      } else {
        for (int64_t x = 0; x < W; ++x) o[x] = fmaf(0.0f, kt, o[x]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Per-map decode
// ------------------------------------------------------------------------------------------

struct Scratch {
  std::vector<float> merged, blurred, rp, rowbuf;
};

// 'default' / 'megvii' quarter step on map m at integer (px, py), official border rule.
POSEBH_INLINE void quarter_step(const Job& j, const float* m, int64_t px, int64_t py, bool megvii,
                                float* cx, float* cy) {
  if (!(px > 1 && px < j.W - 1 && py > 1 && py < j.H - 1)) return;
  const float* row = m + py * j.W;
  const float sx = sign_of(row[px + 1] - row[px - 1]) * 0.25f;
  const float sy = sign_of(m[(py + 1) * j.W + px] - m[(py - 1) * j.W + px]) * 0.25f;
  *cx = *cx + (megvii ? sx + 0.5f : sx);
  *cy = *cy + (megvii ? sy + 0.5f : sy);
}

template <bool kAvx2>
POSEBH_INLINE ArgMax find_max(const float* x, int64_t n) {
#ifdef POSEBH_DECODE_X86
  if constexpr (kAvx2) return argmax_avx2(x, n);
#endif
  return argmax_scalar(x, n);
}

template <bool kAvx2>
POSEBH_INLINE void decode_one(const Job& j, int64_t c, int64_t end, Scratch& s) {
  const int64_t W = j.W, H = j.H, HW = j.HW;
  const int32_t mode = j.mode;
  const float* m = j.hm + c * HW;
  ArgMax am{0, 0.0f};
  bool have_max = false;
  if (j.fl != nullptr) {
    m = s.merged.data();
    if (mode == kModeMegvii) {
      merge_map_scalar(j, c, s.merged.data());
    } else {
      am = merge_argmax<kAvx2>(j, c, s.merged.data());
      have_max = true;
    }
  }
  const float* peak_map = m;  // the map the arg-max and the quarter step read
  float ratio = 1.0f;
  if (mode == kModeMegvii) {
    blur_zero_framed(j, m, s.blurred.data(), s.rowbuf.data(), s.rp.data());
    const float origin_max = find_max<kAvx2>(m, HW).value;
    const float bmax = find_max<kAvx2>(s.blurred.data(), HW).value;
    ratio = origin_max / bmax;
    float* b = s.blurred.data();
    for (int64_t i = 0; i < HW; ++i) b[i] *= ratio;
    peak_map = b;
    am = find_max<kAvx2>(b, HW);
  } else if (!have_max) {
    am = find_max<kAvx2>(m, HW);
  }
  const bool found = am.value > 0.0f;
  const int64_t px = found ? am.index % W : -1, py = found ? am.index / W : -1;
  float cx = static_cast<float>(px), cy = static_cast<float>(py);

  if (mode == kModeDefault || mode == kModeMegvii) {
    quarter_step(j, peak_map, px, py, mode == kModeMegvii, &cx, &cy);
  } else if (mode == kModeUnbiased) {
    if (px > 1 && px < W - 2 && py > 1 && py < H - 2) {
      blur_zero_framed(j, m, s.blurred.data(), s.rowbuf.data(), s.rp.data());
      const float* b = s.blurred.data();
      ratio = am.value / find_max<kAvx2>(b, HW).value;
      static const int8_t off[13][2] = {{0, 0},  {0, 1},  {0, -1}, {1, 0},  {-1, 0},
                                        {0, 2},  {0, -2}, {2, 0},  {-2, 0}, {1, 1},
                                        {-1, 1}, {1, -1}, {-1, -1}};
      float f[13];
      for (int q = 0; q < 13; ++q) {
        const float v = b[(py + off[q][0]) * W + px + off[q][1]] * ratio;
        // np.maximum(v, 1e-10) propagates NaN.
        f[q] = numpy_logf(v != v ? v : (v > 1e-10f ? v : 1e-10f));
      }
      taylor_step(f, &cx, &cy);
    }
  } else if (mode == kModeUdp) {
    float v[8];
    if (found && j.ks > 5 && j.ks <= kMaxFastKernel && W > 1 && H > 1) {
      udp_points_fast<kAvx2>(j, m, px, py, v);
    } else {
      // General path (the -1 sentinel, small kernels, thin maps): the official flat index into
      // the edge-padded stack (udp_point), so the sentinel reads the previous channel's memory
      // exactly as the official code does.
      auto val = [&j](int64_t cc, int64_t yy, int64_t xx) POSEBH_LAMBDA_INLINE {
        return map_value(j, cc, yy, xx);
      };
      for (int q = 0; q < 7; ++q) {
        int64_t cc, yy, xx;
        udp_point(c, px, py, q, j.NK, H, W, &cc, &yy, &xx);
        v[q] = blur_point(val, cc, yy, xx, H, W, j.taps, j.ks);
      }
    }
    udp_log7<kAvx2>(v);
    dark_udp_step(v, &cx, &cy);
  }

  const int64_t n = c / j.K;
  const float* b = j.box + n * 6;
  j.preds[2 * c] = transform_coord(cx, b[0], b[2], b[4]);
  j.preds[2 * c + 1] = transform_coord(cy, b[1], b[3], b[5]);
  j.maxvals[c] = mode == kModeMegvii ? am.value / 255.0f + 0.5f : am.value;
}

template <bool kAvx2>
POSEBH_INLINE void decode_range_impl(const Job& j, int64_t begin, int64_t end) {
  Scratch s;
  if (j.fl != nullptr) s.merged.resize(j.HW);
  if (j.mode == kModeUnbiased || j.mode == kModeMegvii) {
    s.blurred.resize(j.HW);
    s.rp.resize(j.HW);
    s.rowbuf.resize(j.W + 2 * j.rad);
  }
  for (int64_t c = begin; c < end; ++c) decode_one<kAvx2>(j, c, end, s);
}

#ifdef POSEBH_DECODE_X86
__attribute__((target("avx2,fma"))) void decode_range_avx2(const Job& j, int64_t b, int64_t e) {
  decode_range_impl<true>(j, b, e);
}
#endif

void decode_range_generic(const Job& j, int64_t b, int64_t e) { decode_range_impl<false>(j, b, e); }

// ------------------------------------------------------------------------------------------
// ISA selection (run time, so the cached binary is portable: no -march=native)
// ------------------------------------------------------------------------------------------

enum class Isa { kGeneric, kAvx2 };

Isa detect_isa() {
  const char* env = std::getenv("POSEBH_CPU_ISA");  // tests force the generic path with it
  const bool force_generic = env != nullptr && std::string(env) == "generic";
#ifdef POSEBH_DECODE_X86
  if (!force_generic && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Isa::kAvx2;
  }
#endif
  (void)force_generic;
  return Isa::kGeneric;
}

Isa selected_isa() {
  // Read on every call (cheap) so a test can switch POSEBH_CPU_ISA within one process.
  return detect_isa();
}

std::string cpu_isa() { return selected_isa() == Isa::kAvx2 ? "avx2" : "generic"; }

std::tuple<at::Tensor, at::Tensor> decode_heatmaps_cpu(
    const at::Tensor& heatmaps, const at::Tensor& center, const at::Tensor& scale,
    const std::optional<at::Tensor>& flipped, at::OptionalIntArrayRef flip_indices, bool shift,
    std::optional<c10::string_view> post_process, bool use_udp, int64_t kernel) {
  const Checked a =
      check_args(heatmaps, center, scale, flipped, flip_indices, post_process, use_udp, kernel);
  at::Tensor preds = at::empty({a.N, a.K, 2}, heatmaps.options());
  at::Tensor maxvals = at::empty({a.N, a.K, 1}, heatmaps.options());
  Job j;
  j.hm = a.hm.const_data_ptr<float>();
  if (a.fl.defined()) {
    j.fl = a.fl.const_data_ptr<float>();
    j.fidx = a.fidx.const_data_ptr<int64_t>();
    j.shift = shift;
  }
  j.N = a.N;
  j.K = a.K;
  j.H = a.H;
  j.W = a.W;
  j.HW = a.H * a.W;
  j.NK = a.N * a.K;
  j.mode = a.mode;
  j.ks = a.taps.numel();
  j.rad = j.ks / 2;
  j.taps = a.taps.const_data_ptr<float>();
  j.box = a.box.const_data_ptr<float>();
  j.preds = preds.mutable_data_ptr<float>();
  j.maxvals = maxvals.mutable_data_ptr<float>();
  if (j.NK == 0) return {preds, maxvals};
  const Isa isa = selected_isa();
  auto run = [&](int64_t begin, int64_t end) {
#ifdef POSEBH_DECODE_X86
    if (isa == Isa::kAvx2) {
      decode_range_avx2(j, begin, end);
      return;
    }
#endif
    decode_range_generic(j, begin, end);
  };
  // Dynamic scheduling: blocks of ~64 maps of 64×48 (800 KB) handed out from an atomic counter,
  // so that a thread whose core is shared with other work takes fewer blocks (a static split,
  // at::parallel_for's, waits for the slowest half). Decoding is memory-bound, so 2 threads
  // mostly buy overlap of one thread's refinement with the other's streaming.
  const int64_t block = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, j.HW));
  const int64_t blocks = (j.NK + block - 1) / block;
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), blocks);
  if (workers <= 1) {
    run(0, j.NK);
  } else {
    std::atomic<int64_t> next{0};
    at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
      for (int64_t b = next.fetch_add(1); b < blocks; b = next.fetch_add(1)) {
        run(b * block, std::min(j.NK, (b + 1) * block));
      }
    });
  }
  return {preds, maxvals};
}

// Test hooks: the NumPy-exact log and the Gaussian taps, so Python can compare them with
// np.log and posebh.decode.gaussian_kernel_1d directly.
at::Tensor numpy_logf_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "decode_numpy_logf: float32 only");
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  const float* src = in.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  at::parallel_for(0, in.numel(), 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = numpy_logf(src[i]);
  });
  return out;
}

at::Tensor gaussian_taps_op(int64_t kernel) {
  TORCH_CHECK_VALUE(kernel > 0 && kernel % 2 == 1, "kernel must be positive and odd");
  return at::tensor(gaussian_taps(kernel), at::kFloat);
}

}  // namespace
}  // namespace posebh_decode

// FRAGMENT: the `posebh` namespace is shared with the other posebh extensions (each builds its
// own library); only one TORCH_LIBRARY block per namespace may exist in a process.
TORCH_LIBRARY_FRAGMENT(posebh, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def(
      "decode_heatmaps(Tensor heatmaps, Tensor center, Tensor scale, Tensor? flipped=None, "
      "int[]? flip_indices=None, bool shift=False, str? post_process=\"default\", "
      "bool use_udp=False, int kernel=11) -> (Tensor, Tensor)",
      tags);
  m.def("decode_heatmaps_cpu_isa() -> str", &posebh_decode::cpu_isa);
  m.def("decode_numpy_logf(Tensor x) -> Tensor");
  m.def("decode_gaussian_taps(int kernel) -> Tensor", &posebh_decode::gaussian_taps_op);
}

TORCH_LIBRARY_IMPL(posebh, CPU, m) {
  m.impl("decode_heatmaps", &posebh_decode::decode_heatmaps_cpu);
  m.impl("decode_numpy_logf", &posebh_decode::numpy_logf_cpu);
}
