// Scalar building blocks of the fused heatmap decode, shared by the CPU op
// (decode_heatmaps.cpp) and the CUDA kernel (cuda/decode_heatmaps.cu). Torch-free on purpose:
// the .cu includes it without any torch header.
//
// Shapes: N instances, K keypoints, H×W maps; maps are addressed as channel c = n·K + k.
//
// Every function reproduces one step of the NumPy reference (posebh/decode.py) operation by
// operation, so the results are the reference's bits, not merely close to them:
//   * float32 multiply-adds are fused only where the reference fuses them (OpenCV's filter
//     engine, NumPy's log); both translation units are compiled without contraction
//     (-ffp-contract=off, nvcc -fmad=false) so the compiler never adds a fusion of its own;
//   * log is NumPy's float32 SIMD log (see numpy_logf), not libm's: the two differ by one ulp
//     on ~10% of inputs, and DARK-UDP's nearly singular Hessians turn one ulp into pixels.

#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define POSEBH_HD __host__ __device__ __forceinline__
#else
#define POSEBH_HD inline __attribute__((always_inline))
#endif

namespace posebh_decode {

// Largest Gaussian kernel the ops accept (blur_point keeps one window column on the stack).
constexpr int64_t kMaxKernel = 63;

// Decoding modes of the op (the reference's post_process / use_udp combinations).
enum Mode : int32_t {
  kModeNone = 0,      // integer arg-max
  kModeDefault = 1,   // arg-max + 0.25 px toward the higher neighbour
  kModeUnbiased = 2,  // DARK: zero-framed blur, rescale, log, Taylor step
  kModeMegvii = 3,    // blur first, arg-max + quarter step + 0.5, score max/255 + 0.5
  kModeUdp = 4,       // DARK-UDP (use_udp=True, whatever post_process says)
};

POSEBH_HD float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

POSEBH_HD uint32_t float_to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

// Products that feed an addition, written so that no compiler may fuse them into an FMA: the
// host build already has -ffp-contract=off, but nvcc contracts by default (-fmad=true) and the
// extension's nvcc flags are shared, so device code uses the round-to-nearest intrinsics, which
// are never contracted.
POSEBH_HD float mul_nc(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

POSEBH_HD double mul_nc(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// NumPy's float32 np.log on x86-64 (simd_log_FLOAT of loops_exponent_log.dispatch.c.src, the
// kernel NumPy runs on AVX2+FMA3 and AVX-512F CPUs), one lane: split x = 2^e · m with
// m ∈ (√½, √2], then log(m) by a [5/5] rational function of m − 1 in fused Horner steps and
// e·ln2 fused on top. Verified bit-exact against np.log on every float32 in [0.001, 50] (the
// values DARK-UDP takes logs of) on the project's machine; tests/test_ops_decode.py re-checks a
// sample. On CPUs where NumPy falls back to libm, the reference itself changes by an ulp.
POSEBH_HD float numpy_logf(float x) {
  if (x != x) return x;
  if (x < 0.0f) return bits_to_float(0x7fc00000u);
  if (x == 0.0f) return -INFINITY;
  if (x == INFINITY) return INFINITY;
  const float kP0 = 0.000000000000000000000e+00f, kP1 = 9.999999999999998702752e-01f,
              kP2 = 2.112677543073053063722e+00f, kP3 = 1.480000633576506585156e+00f,
              kP4 = 3.808837741388407920751e-01f, kP5 = 2.589979117907922693523e-02f;
  const float kQ0 = 1.000000000000000000000e+00f, kQ1 = 2.612677543073109236779e+00f,
              kQ2 = 2.453006071784736363091e+00f, kQ3 = 9.864942958519418960339e-01f,
              kQ4 = 1.546476374983906719538e-01f, kQ5 = 5.875095403124574342950e-03f;
  const float kLn2 = 0.693147180559945309417232121458176568f;
  const float kSqrtHalf = 0.707106781186547524400844362104849039f;
  // Denormals are scaled by 2^100 first (NumPy's fma_get_exponent / fma_get_mantissa).
  const bool denormal = x < 1.17549435e-38f;
  const float v = denormal ? x * bits_to_float(0x71800000u) : x;
  const uint32_t u = float_to_bits(v);
  float e = static_cast<float>(static_cast<int32_t>(u >> 23) - 126);
  if (denormal) e = e - 100.0f;
  float m = bits_to_float((u & 0x007fffffu) | (126u << 23));  // in [0.5, 1)
  if (m <= kSqrtHalf) {
    m = m + m;
    e = e - 1.0f;
  }
  m = m - 1.0f;
  float num = fmaf(kP5, m, kP4);
  num = fmaf(num, m, kP3);
  num = fmaf(num, m, kP2);
  num = fmaf(num, m, kP1);
  num = fmaf(num, m, kP0);
  float den = fmaf(kQ5, m, kQ4);
  den = fmaf(den, m, kQ3);
  den = fmaf(den, m, kQ2);
  den = fmaf(den, m, kQ1);
  den = fmaf(den, m, kQ0);
  return fmaf(e, kLn2, num / den);
}

// Source index of position p under OpenCV's BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba),
// reflecting repeatedly when p is far outside [0, n) (maps smaller than the kernel).
POSEBH_HD int64_t reflect101(int64_t p, int64_t n) {
  if (p >= 0 && p < n) return p;  // the common case, without the division below
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  p %= period;
  if (p < 0) p += period;
  return p >= n ? period - p : p;
}

POSEBH_HD int64_t clamp_index(int64_t p, int64_t n) { return p < 0 ? 0 : (p >= n ? n - 1 : p); }

// np.sign of a float32: −1, 0 or 1, NaN stays NaN.
POSEBH_HD float sign_of(float d) { return d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : d); }

// np.clip(v, 0.001, 50) on float32 (NaN propagates).
POSEBH_HD float clip_udp(float v) {
  if (v != v) return v;
  return v < 0.001f ? 0.001f : (v > 50.0f ? 50.0f : v);
}

// The map pixel DARK-UDP reads for its q-th value (order: i_, ix1, ix1_, iy1, iy1_, ix1y1,
// ix1_y1_, i.e. offsets 0, +x, −x, +y, −y, +x+y, −x−y) of the arg-max (px, py) of channel c:
// the official code indexes the edge-padded stack [NK][H+2][W+2] by flat index, so a proper
// arg-max reads its own (edge-clamped) neighbours, while the (−1, −1) sentinel sits on its
// padded corner and takes its −x/−y neighbours from the previous channel's padded bottom-right
// edge (channel 0 wraps to the end of the stack, Python's negative indexing).
POSEBH_HD void udp_point(int64_t c, int64_t px, int64_t py, int q, int64_t NK, int64_t H,
                         int64_t W, int64_t* cc, int64_t* yy, int64_t* xx) {
  const int64_t wp = W + 2, hp = H + 2, plane = wp * hp, total = NK * plane;
  const int64_t offs[7] = {0, 1, -1, wp, -wp, wp + 1, -wp - 1};
  int64_t flat = c * plane + (px + 1) + (py + 1) * wp + offs[q];
  if (flat < 0) flat += total;
  *cc = flat / plane;
  const int64_t rem = flat - *cc * plane;
  *yy = clamp_index(rem / wp - 1, H);
  *xx = clamp_index(rem % wp - 1, W);
}

// cv2.GaussianBlur(map, (ks, ks), 0)[y, x] of channel c (reflect-101 border), computed at one
// point only, in OpenCV's filter-engine order: row pass s = fma(src[x + t − r], k[t], s) from 0
// (kernels > 5 taps) or the symmetric form (≤ 5 taps), float32 row results, symmetric column
// pass. Maps thinner than 2 px are not filtered along that axis, like OpenCV. val(c, y, x)
// reads the map.
template <class Value>
POSEBH_HD float blur_point(const Value& val, int64_t c, int64_t y, int64_t x, int64_t H,
                           int64_t W, const float* k, int64_t ks) {
  const int64_t r = ks / 2;
  const bool bx = W > 1 && ks > 1, by = H > 1 && ks > 1;
  float rows[kMaxKernel];  // row-pass results of the window rows
  const int64_t ny = by ? ks : 1;
  for (int64_t i = 0; i < ny; ++i) {
    const int64_t yy = by ? reflect101(y + i - r, H) : y;
    float s;
    if (!bx) {
      s = val(c, yy, x);
    } else if (ks > 5) {
      s = 0.0f;
      for (int64_t t = 0; t < ks; ++t) s = fmaf(val(c, yy, reflect101(x + t - r, W)), k[t], s);
    } else {
      s = mul_nc(val(c, yy, x), k[r]);
      for (int64_t t = 1; t <= r; ++t) {
        s = fmaf(val(c, yy, reflect101(x + t, W)) + val(c, yy, reflect101(x - t, W)), k[r + t], s);
      }
    }
    rows[i] = s;
  }
  if (!by) return rows[0];
  float s = mul_nc(rows[r], k[r]);
  for (int64_t t = 1; t <= r; ++t) s = fmaf(rows[r + t] + rows[r - t], k[r + t], s);
  return s;
}

// One DARK-UDP Newton step from the seven log-blurred values around (x, y), in the
// reference's precisions: derivatives in float32 in its evaluation order, then
// (H + ε·I)⁻¹·g solved in float64 by Cramer's rule. Writes the refined (x, y).
POSEBH_HD void dark_udp_step(const float v[7], float* cx, float* cy) {
  // v: i_, ix1, ix1_, iy1, iy1_, ix1y1, ix1_y1_
  const float i_ = v[0], ix1 = v[1], ix1_ = v[2], iy1 = v[3], iy1_ = v[4], ix1y1 = v[5],
              ix1_y1_ = v[6];
  const float dx = 0.5f * (ix1 - ix1_);
  const float dy = 0.5f * (iy1 - iy1_);
  const float dxx = (ix1 - mul_nc(2.0f, i_)) + ix1_;
  const float dyy = (iy1 - mul_nc(2.0f, i_)) + iy1_;
  const float dxy = 0.5f * ((((((ix1y1 - ix1) - iy1) + i_) + i_) - ix1_) - iy1_ + ix1_y1_);
  const double eps = 1.1920928955078125e-07;  // np.finfo(np.float32).eps, added in float64
  const double a11 = static_cast<double>(dxx) + eps;
  const double a22 = static_cast<double>(dyy) + eps;
  const double a12 = static_cast<double>(dxy);
  const double det = mul_nc(a11, a22) - mul_nc(a12, a12);
  const double gx = static_cast<double>(dx), gy = static_cast<double>(dy);
  const double step_x = (mul_nc(a22, gx) - mul_nc(a12, gy)) / det;
  const double step_y = (mul_nc(a11, gy) - mul_nc(a12, gx)) / det;
  *cx = static_cast<float>(static_cast<double>(*cx) - step_x);
  *cy = static_cast<float>(static_cast<double>(*cy) - step_y);
}

// The official _taylor (DARK) step from log-values f(dy, dx) at offsets
// f[0]=(0,0) f[1]=(0,1) f[2]=(0,-1) f[3]=(1,0) f[4]=(-1,0) f[5]=(0,2) f[6]=(0,-2) f[7]=(2,0)
// f[8]=(-2,0) f[9]=(1,1) f[10]=(-1,1) f[11]=(1,-1) f[12]=(-1,-1); the caller applies the
// border test. Returns false (coordinates untouched) when det H = 0, like the reference.
POSEBH_HD bool taylor_step(const float f[13], float* cx, float* cy) {
  const double dx = 0.5 * static_cast<double>(f[1] - f[2]);
  const double dy = 0.5 * static_cast<double>(f[3] - f[4]);
  const double f00 = static_cast<double>(f[0]);
  const double dxx =
      0.25 * ((static_cast<double>(f[5]) - mul_nc(2.0, f00)) + static_cast<double>(f[6]));
  const double dyy =
      0.25 * ((static_cast<double>(f[7]) - mul_nc(2.0, f00)) + static_cast<double>(f[8]));
  const double dxy = 0.25 * static_cast<double>(((f[9] - f[10]) - f[11]) + f[12]);
  const double det = mul_nc(dxx, dyy) - mul_nc(dxy, dxy);
  if (det == 0.0) return false;  // a NaN det passes, as the reference's `det != 0` does
  const double off_x = -(mul_nc(dyy, dx) - mul_nc(dxy, dy)) / det;
  const double off_y = -(mul_nc(dxx, dy) - mul_nc(dxy, dx)) / det;
  *cx = static_cast<float>(static_cast<double>(*cx) + off_x);
  *cy = static_cast<float>(static_cast<double>(*cy) + off_y);
  return true;
}

// Heatmap → image coordinate of one axis (posebh.decode.transform_preds): (c·f + o) − h in
// float32, unfused, with the per-box factors of box_factors().
POSEBH_HD float transform_coord(float c, float factor, float offset, float half) {
  return (mul_nc(c, factor) + offset) - half;
}

}  // namespace posebh_decode
