// Bilinear affine warp with a constant-0 border: cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT)
// in both OpenCV arithmetics, bit for bit with the NumPy reference
// (posebh/ops/warp_reference.py).
//
//   posebh::warp_affine(Tensor image [H, W, C] uint8, float[] matrix (6 entries, row-major
//                       2×3, source → destination), int out_w, int out_h, str method)
//       -> Tensor [out_h, out_w, C] uint8
//
// The matrix is inverted here in OpenCV's float64 operation order (the reference's
// _invert_affine). Output pixel (x, y) samples the source at inverse · (x, y, 1):
//
// * "fixed" (OpenCV ≤ 4.10): per-row and per-column terms rounded to 1/1024 px
//   (round half even, then int64), added per pixel, floored to a 1/32 grid; integer weights.
//   The reference's weights (bx·by, ax·by, bx·ay, ax·ay)·32 sum to 2^15 and the result is
//   (acc + 2^14) >> 15; here the common factor 32 is taken out: (acc' + 2^9) >> 10, the same
//   integer for every acc' (acc = 32·acc').
// * "float" (OpenCV ≥ 4.11): sx = float(double(float(M00))·x + double(float(M01·y + M02)))
//   (the reference's _fma32: an exact float64 product plus a float64 sum, then one rounding to
//   float32), three such lerps, then round half even.
//
// Non-finite or huge coordinates follow NumPy on x86-64: a float64 → int64 cast out of range
// gives INT64_MIN, int64 sums wrap, a NaN sample gives 0. The file is compiled with
// -ffp-contract=off: a fused multiply-add would change the float results.
//
// Speed: per-column terms are precomputed, each pixel takes one of three paths (all four
// corners inside the image, all outside → 0, on the border → per-corner checks), and the
// channel loops are specialised for C = 1, 3, 4. For C = 3 and 4 on AVX2 CPUs (run-time check;
// POSEBH_CPU_ISA=generic forces the scalar code) eight pixels' coordinates are computed at a
// time and blocks lying inside the image are interpolated with SIMD arithmetic that performs
// the same operations (pmaddwd on the integer weights; float64 products and sums rounded to
// float32 by vcvtpd2ps). Rows are split over at::parallel_for's threads in chunks of ≥ 64 KiB
// (in a DataLoader worker that is one thread, and the loop runs inline).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define POSEBH_WARP_X86 1
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace posebh_warp {
namespace {

constexpr int kAbBits = 10;     // 1/1024-px coordinates
constexpr int kInterBits = 5;   // 1/32-px interpolation grid
constexpr int kInterTab = 1 << kInterBits;
constexpr int64_t kRoundDelta = (1 << kAbBits) >> (kInterBits + 1);
constexpr int kWeightBits = 2 * kInterBits;  // the weights ax·ay etc. sum to 2^10
constexpr int64_t kFixedClipHigh = int64_t{1} << 20;  // the reference's int32 clip

struct Inverse {
  double a11, a12, b1, a21, a22, b2;
};

// OpenCV's (and the reference's) float64 inversion, operation for operation.
Inverse invert(const std::vector<double>& m) {
  const double m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], m4 = m[4], m5 = m[5];
  double d = m0 * m4 - m1 * m3;
  d = d != 0 ? 1.0 / d : 0.0;
  Inverse r;
  r.a11 = m4 * d;
  r.a22 = m0 * d;
  r.a12 = -m1 * d;
  r.a21 = -m3 * d;
  r.b1 = -r.a11 * m2 - r.a12 * m5;
  r.b2 = -r.a21 * m2 - r.a22 * m5;
  return r;
}

// NumPy's float64 → int64 cast on x86-64 (cvttsd2si): out of range or NaN gives INT64_MIN.
inline int64_t to_int64(double v) {
  if (v >= -9223372036854775808.0 && v < 9223372036854775808.0) return static_cast<int64_t>(v);
  return std::numeric_limits<int64_t>::min();
}

// np.rint(v).astype(np.int64): round half to even (the default rounding mode), then cast.
inline int64_t rint_int64(double v) { return to_int64(std::nearbyint(v)); }

// NumPy's int64 addition wraps around.
inline int64_t wrap_add(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}

// The source image and the per-call constants every pixel path reads.
struct Source {
  const uint8_t* src;
  int64_t h, w, ch, stride;  // stride = w·ch bytes
};

// ------------------------------------------------------------------------------------------
// "fixed"
// ------------------------------------------------------------------------------------------

struct FixedWeights {
  // [ay·32 + ax] → (bx·by, ax·by, bx·ay, ax·ay) with bx = 32 − ax, by = 32 − ay (sum 1024);
  // `pairs` holds the same as two int16 pairs (w0 | w1 << 16, w2 | w3 << 16) for pmaddwd.
  int32_t w[kInterTab * kInterTab][4];
  int32_t pairs[kInterTab * kInterTab][2];
  FixedWeights() {
    for (int ay = 0; ay < kInterTab; ++ay) {
      for (int ax = 0; ax < kInterTab; ++ax) {
        const int bx = kInterTab - ax, by = kInterTab - ay;
        int32_t* t = w[ay * kInterTab + ax];
        t[0] = bx * by;
        t[1] = ax * by;
        t[2] = bx * ay;
        t[3] = ax * ay;
        pairs[ay * kInterTab + ax][0] = t[0] | (t[1] << 16);
        pairs[ay * kInterTab + ax][1] = t[2] | (t[3] << 16);
      }
    }
  }
};

const FixedWeights& fixed_weights() {
  static const FixedWeights table;
  return table;
}

inline uint8_t fixed_round(int32_t acc) {
  const int32_t v = (acc + (1 << (kWeightBits - 1))) >> kWeightBits;
  return static_cast<uint8_t>(std::min<int32_t>(std::max<int32_t>(v, 0), 255));
}

// One output pixel from its 1/1024-px coordinates (the int64 sums of the row and column terms).
// C > 0: the channel count known at compile time; 0: im.ch at run time.
template <int C>
inline void fixed_pixel(const Source& im, int64_t sum_x, int64_t sum_y, uint8_t* out) {
  constexpr int kShift = kAbBits - kInterBits;
  constexpr int64_t kMask = kInterTab - 1;
  const int64_t ch = C > 0 ? C : im.ch;
  const int64_t fx = sum_x >> kShift;  // arithmetic shift = floor
  const int64_t fy = sum_y >> kShift;
  const int64_t ix = std::clamp<int64_t>(fx >> kInterBits, -2, kFixedClipHigh);
  const int64_t iy = std::clamp<int64_t>(fy >> kInterBits, -2, kFixedClipHigh);
  const int32_t* w = fixed_weights().w[(fy & kMask) * kInterTab + (fx & kMask)];
  const uint8_t* src = im.src;
  const int64_t stride = im.stride;
  if (ix >= 0 && iy >= 0 && ix + 1 < im.w && iy + 1 < im.h) {
    const uint8_t* p0 = src + iy * stride + ix * ch;
    const uint8_t* p1 = p0 + stride;
    for (int64_t c = 0; c < ch; ++c) {
      out[c] = fixed_round(p0[c] * w[0] + p0[c + ch] * w[1] + p1[c] * w[2] + p1[c + ch] * w[3]);
    }
  } else if (ix < -1 || iy < -1 || ix >= im.w || iy >= im.h) {
    for (int64_t c = 0; c < ch; ++c) out[c] = 0;  // (0 + 2^9) >> 10
  } else {
    const bool x0_in = ix >= 0, x1_in = ix + 1 < im.w;
    const bool y0_in = iy >= 0, y1_in = iy + 1 < im.h;
    const int64_t base = iy * stride + ix * ch;  // indexed only where inside
    for (int64_t c = 0; c < ch; ++c) {
      int32_t acc = 0;
      if (y0_in && x0_in) acc += src[base + c] * w[0];
      if (y0_in && x1_in) acc += src[base + c + ch] * w[1];
      if (y1_in && x0_in) acc += src[base + stride + c] * w[2];
      if (y1_in && x1_in) acc += src[base + stride + c + ch] * w[3];
      out[c] = fixed_round(acc);
    }
  }
}

struct FixedGrid {
  const int64_t* adelta;  // per column: rint(M00⁻¹·x·1024), rint(M10⁻¹·x·1024)
  const int64_t* bdelta;
  const int32_t* adelta32;  // the same as int32 when `fits32` (else null)
  const int32_t* bdelta32;
  bool fits32;  // |every column term| < 2^30
};

// The row's terms: rint((M01⁻¹·y + M02⁻¹)·1024) + 16, and the same for y.
inline void fixed_row_terms(const Inverse& inv, int64_t y, int64_t* x0, int64_t* y0) {
  const double yd = static_cast<double>(y), ab_scale = 1 << kAbBits;
  *x0 = wrap_add(rint_int64((inv.a12 * yd + inv.b1) * ab_scale), kRoundDelta);
  *y0 = wrap_add(rint_int64((inv.a22 * yd + inv.b2) * ab_scale), kRoundDelta);
}

template <int C>
void fixed_rows(const Source& im, uint8_t* dst, int64_t w_out, const Inverse& inv,
                const FixedGrid& g, int64_t y_begin, int64_t y_end) {
  const int64_t ch = C > 0 ? C : im.ch;
  for (int64_t y = y_begin; y < y_end; ++y) {
    int64_t x0, y0;
    fixed_row_terms(inv, y, &x0, &y0);
    uint8_t* out = dst + y * w_out * ch;
    for (int64_t x = 0; x < w_out; ++x, out += ch) {
      fixed_pixel<C>(im, wrap_add(x0, g.adelta[x]), wrap_add(y0, g.bdelta[x]), out);
    }
  }
}

// ------------------------------------------------------------------------------------------
// "float"
// ------------------------------------------------------------------------------------------

// The reference's _fma32(a, b, c): exact float64 product of float32 operands, float64 sum,
// one rounding to float32.
inline float fma32(float a, float b, float c) {
  return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) +
                            static_cast<double>(c));
}

// np.rint, np.clip(0, 255), astype(uint8); a NaN gives 0 as NumPy's cast does on x86-64.
inline uint8_t float_round(float v) {
  if (!(v == v)) return 0;
  const float r = std::nearbyint(v);
  return static_cast<uint8_t>(std::min(std::max(r, 0.0f), 255.0f));
}

inline uint8_t float_lerp(float ax, float ay, float p00, float p01, float p10, float p11) {
  const float top = fma32(ax, p01 - p00, p00);
  const float bottom = fma32(ax, p11 - p10, p10);
  return float_round(fma32(ay, bottom - top, top));
}

// np.clip(floor, -2, size + 1).astype(np.int32); NaN gives INT32_MIN (x86-64 cvttss2si).
inline int64_t float_corner(float f, int64_t size) {
  if (!(f == f)) return std::numeric_limits<int32_t>::min();
  return static_cast<int64_t>(std::min(std::max(f, -2.0f), static_cast<float>(size + 1)));
}

// One output pixel from its float32 source coordinates.
template <int C>
inline void float_pixel(const Source& im, float sx, float sy, uint8_t* out) {
  const int64_t ch = C > 0 ? C : im.ch;
  const float fx = std::floor(sx), fy = std::floor(sy);
  const float ax = sx - fx, ay = sy - fy;
  const int64_t ix = float_corner(fx, im.w), iy = float_corner(fy, im.h);
  const uint8_t* src = im.src;
  const int64_t stride = im.stride;
  if (ix >= 0 && iy >= 0 && ix + 1 < im.w && iy + 1 < im.h) {
    const uint8_t* p0 = src + iy * stride + ix * ch;
    const uint8_t* p1 = p0 + stride;
    for (int64_t c = 0; c < ch; ++c) {
      out[c] = float_lerp(ax, ay, p0[c], p0[c + ch], p1[c], p1[c + ch]);
    }
    return;
  }
  // Outside or on the border: a corner outside reads 0. (A NaN fraction, from an infinite or
  // NaN coordinate, makes every channel NaN → 0.)
  const bool x0_in = ix >= 0 && ix < im.w, x1_in = ix + 1 >= 0 && ix + 1 < im.w;
  const bool y0_in = iy >= 0 && iy < im.h, y1_in = iy + 1 >= 0 && iy + 1 < im.h;
  const int64_t base = iy * stride + ix * ch;  // indexed only where inside
  for (int64_t c = 0; c < ch; ++c) {
    const float p00 = y0_in && x0_in ? src[base + c] : 0.0f;
    const float p01 = y0_in && x1_in ? src[base + c + ch] : 0.0f;
    const float p10 = y1_in && x0_in ? src[base + stride + c] : 0.0f;
    const float p11 = y1_in && x1_in ? src[base + stride + c + ch] : 0.0f;
    out[c] = float_lerp(ax, ay, p00, p01, p10, p11);
  }
}

struct FloatGrid {
  const double* xcol;  // per column: double(float(M00⁻¹))·x, exact in float64
  const double* ycol;
};

// The row's terms: double(float(y·M01⁻¹ + M02⁻¹)), the same for y.
inline void float_row_terms(const Inverse& inv, int64_t y, double* rx, double* ry) {
  const double yd = static_cast<double>(y);
  *rx = static_cast<double>(static_cast<float>(yd * inv.a12 + inv.b1));
  *ry = static_cast<double>(static_cast<float>(yd * inv.a22 + inv.b2));
}

template <int C>
void float_rows(const Source& im, uint8_t* dst, int64_t w_out, const Inverse& inv,
                const FloatGrid& g, int64_t y_begin, int64_t y_end) {
  const int64_t ch = C > 0 ? C : im.ch;
  for (int64_t y = y_begin; y < y_end; ++y) {
    double rx, ry;
    float_row_terms(inv, y, &rx, &ry);
    uint8_t* out = dst + y * w_out * ch;
    for (int64_t x = 0; x < w_out; ++x, out += ch) {
      float_pixel<C>(im, static_cast<float>(g.xcol[x] + rx), static_cast<float>(g.ycol[x] + ry),
                     out);
    }
  }
}

// ------------------------------------------------------------------------------------------
// AVX2 rows for C = 3 and 4: eight pixels' coordinates at a time; a block whose eight pixels
// all have their four corners inside the image (and whose 8-byte reads stay inside it) is
// interpolated with vector arithmetic, one pixel per register; any other block takes the
// scalar pixel functions above. Same operations, same bits.
// ------------------------------------------------------------------------------------------
#ifdef POSEBH_WARP_X86

// Lanes with 0 ≤ ix < w − 1, 0 ≤ iy < h − 1 and offset ≤ last_offset.
__attribute__((target("avx2"))) inline int interior_mask(__m256i ix, __m256i iy, __m256i ofs,
                                                         const Source& im,
                                                         int32_t last_offset) {
  const __m256i minus1 = _mm256_set1_epi32(-1);
  __m256i ok = _mm256_and_si256(_mm256_cmpgt_epi32(ix, minus1), _mm256_cmpgt_epi32(iy, minus1));
  ok = _mm256_and_si256(ok, _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(im.w - 1)), ix));
  ok = _mm256_and_si256(ok, _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(im.h - 1)), iy));
  ok = _mm256_andnot_si256(_mm256_cmpgt_epi32(ofs, _mm256_set1_epi32(last_offset)), ok);
  return _mm256_movemask_ps(_mm256_castsi256_ps(ok));
}

// Store the low C bytes of v at out; 4 bytes when C == 4 or a later pixel of the same row
// overwrites the spare byte (never the next row: another thread may own it).
template <int C>
__attribute__((target("avx2"))) inline void store_pixel(uint8_t* out, __m128i v, bool spare) {
  if (C == 4 || spare) {
    _mm_storeu_si32(out, v);
  } else {
    const uint32_t bytes = static_cast<uint32_t>(_mm_cvtsi128_si32(v));
    std::memcpy(out, &bytes, C);
  }
}

// Reads `bytes` bytes at each corner row: offsets up to this keep them inside the image.
inline int32_t last_safe_offset(const Source& im, int64_t bytes) {
  return static_cast<int32_t>(im.h * im.stride - im.stride - bytes);
}

template <int C>
__attribute__((target("avx2"))) void fixed_rows_avx2(const Source& im, uint8_t* dst,
                                                     int64_t w_out, const Inverse& inv,
                                                     const FixedGrid& g, int64_t y_begin,
                                                     int64_t y_end) {
  constexpr int kShift = kAbBits - kInterBits;
  const auto& pairs = fixed_weights().pairs;
  // int16 pairs (corner x, corner x + 1) of each channel, from 8 bytes of one corner row.
  const __m128i pair_bytes =
      C == 3 ? _mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1)
             : _mm_setr_epi8(0, -1, 4, -1, 1, -1, 5, -1, 2, -1, 6, -1, 3, -1, 7, -1);
  const __m128i half = _mm_set1_epi32(1 << (kWeightBits - 1));
  const int32_t last_offset = last_safe_offset(im, 8);
  const __m256i stride = _mm256_set1_epi32(static_cast<int32_t>(im.stride));
  const __m256i chans = _mm256_set1_epi32(C), mask = _mm256_set1_epi32(kInterTab - 1);
  alignas(32) int32_t ofs[8], widx[8];
  for (int64_t y = y_begin; y < y_end; ++y) {
    int64_t x0, y0;
    fixed_row_terms(inv, y, &x0, &y0);
    uint8_t* out = dst + y * w_out * C;
    int64_t x = 0;
    const int64_t limit = int64_t{1} << 30;
    if (g.fits32 && x0 > -limit && x0 < limit && y0 > -limit && y0 < limit) {
      const __m256i vx0 = _mm256_set1_epi32(static_cast<int32_t>(x0));
      const __m256i vy0 = _mm256_set1_epi32(static_cast<int32_t>(y0));
      for (; x + 8 <= w_out; x += 8) {
        const __m256i fx = _mm256_srai_epi32(
            _mm256_add_epi32(vx0, _mm256_loadu_si256((const __m256i*)(g.adelta32 + x))), kShift);
        const __m256i fy = _mm256_srai_epi32(
            _mm256_add_epi32(vy0, _mm256_loadu_si256((const __m256i*)(g.bdelta32 + x))), kShift);
        const __m256i ix = _mm256_srai_epi32(fx, kInterBits);
        const __m256i iy = _mm256_srai_epi32(fy, kInterBits);
        const __m256i off =
            _mm256_add_epi32(_mm256_mullo_epi32(iy, stride), _mm256_mullo_epi32(ix, chans));
        if (interior_mask(ix, iy, off, im, last_offset) != 0xFF) {
          for (int64_t i = x; i < x + 8; ++i) {
            fixed_pixel<C>(im, wrap_add(x0, g.adelta[i]), wrap_add(y0, g.bdelta[i]), out + i * C);
          }
          continue;
        }
        _mm256_store_si256((__m256i*)ofs, off);
        const __m256i wi = _mm256_add_epi32(
            _mm256_slli_epi32(_mm256_and_si256(fy, mask), kInterBits), _mm256_and_si256(fx, mask));
        _mm256_store_si256((__m256i*)widx, wi);
        for (int i = 0; i < 8; ++i) {
          const uint8_t* p0 = im.src + ofs[i];
          const __m128i top = _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i*)p0), pair_bytes);
          const __m128i bottom =
              _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i*)(p0 + im.stride)), pair_bytes);
          const int32_t* w = pairs[widx[i]];
          __m128i acc = _mm_add_epi32(_mm_madd_epi16(top, _mm_set1_epi32(w[0])),
                                      _mm_madd_epi16(bottom, _mm_set1_epi32(w[1])));
          acc = _mm_srai_epi32(_mm_add_epi32(acc, half), kWeightBits);
          const __m128i bytes = _mm_packus_epi16(_mm_packs_epi32(acc, acc), acc);
          store_pixel<C>(out + (x + i) * C, bytes, x + i + 1 < w_out);
        }
      }
    }
    for (; x < w_out; ++x) {
      fixed_pixel<C>(im, wrap_add(x0, g.adelta[x]), wrap_add(y0, g.bdelta[x]), out + x * C);
    }
  }
}

template <int C>
__attribute__((target("avx2,fma"))) void float_rows_avx2(const Source& im, uint8_t* dst,
                                                     int64_t w_out, const Inverse& inv,
                                                     const FloatGrid& g, int64_t y_begin,
                                                     int64_t y_end) {
  const int32_t last_offset = last_safe_offset(im, 16);
  const __m256i stride = _mm256_set1_epi32(static_cast<int32_t>(im.stride));
  const __m256i chans = _mm256_set1_epi32(C);
  alignas(32) int32_t ofs[8];
  alignas(32) float fax[8];
  alignas(32) double fay[8];
  // 16 bytes of each corner row (row 0 in the low 128-bit lane, row 1 in the high one) →
  // int32 lanes: (p00 channels | p10 channels) and (p01 | p11); -1 gives 0 (lane 3 for C = 3).
  const __m256i left = C == 3 ? _mm256_setr_epi8(0, -1, -1, -1, 1, -1, -1, -1, 2, -1, -1, -1,
                                                 -1, -1, -1, -1, 0, -1, -1, -1, 1, -1, -1, -1,
                                                 2, -1, -1, -1, -1, -1, -1, -1)
                              : _mm256_setr_epi8(0, -1, -1, -1, 1, -1, -1, -1, 2, -1, -1, -1,
                                                 3, -1, -1, -1, 0, -1, -1, -1, 1, -1, -1, -1,
                                                 2, -1, -1, -1, 3, -1, -1, -1);
  const __m256i right = C == 3 ? _mm256_setr_epi8(3, -1, -1, -1, 4, -1, -1, -1, 5, -1, -1, -1,
                                                  -1, -1, -1, -1, 3, -1, -1, -1, 4, -1, -1, -1,
                                                  5, -1, -1, -1, -1, -1, -1, -1)
                               : _mm256_setr_epi8(4, -1, -1, -1, 5, -1, -1, -1, 6, -1, -1, -1,
                                                  7, -1, -1, -1, 4, -1, -1, -1, 5, -1, -1, -1,
                                                  6, -1, -1, -1, 7, -1, -1, -1);
  // The low byte of each int32 lane (the rounded values lie in 0..255: convex combinations).
  const __m128i low_bytes =
      _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  // The first lerps as float32 FMAs: ax·d + p00 (d = p01 − p00, integers ≤ 255) is a multiple
  // of 2^-44 below 2^8 when ax = 0 or ax ≥ 2^-21, so the reference's float64 sum is exact and
  // its one rounding to float32 is the FMA's. Blocks with a tinier fraction go scalar.
  const __m256 tiny = _mm256_set1_ps(0x1p-21f), zero = _mm256_setzero_ps();
  for (int64_t y = y_begin; y < y_end; ++y) {
    double rx, ry;
    float_row_terms(inv, y, &rx, &ry);
    uint8_t* out = dst + y * w_out * C;
    const __m256d vrx = _mm256_set1_pd(rx), vry = _mm256_set1_pd(ry);
    int64_t x = 0;
    for (; x + 8 <= w_out; x += 8) {
      // float(xcol + rx): the sum in float64, one rounding to float32 (vcvtpd2ps).
      const __m256 sx = _mm256_set_m128(
          _mm256_cvtpd_ps(_mm256_add_pd(_mm256_loadu_pd(g.xcol + x + 4), vrx)),
          _mm256_cvtpd_ps(_mm256_add_pd(_mm256_loadu_pd(g.xcol + x), vrx)));
      const __m256 sy = _mm256_set_m128(
          _mm256_cvtpd_ps(_mm256_add_pd(_mm256_loadu_pd(g.ycol + x + 4), vry)),
          _mm256_cvtpd_ps(_mm256_add_pd(_mm256_loadu_pd(g.ycol + x), vry)));
      const __m256 fx = _mm256_floor_ps(sx), fy = _mm256_floor_ps(sy);
      const __m256 ax = _mm256_sub_ps(sx, fx), ay = _mm256_sub_ps(sy, fy);
      // Out of int32 range or NaN gives INT32_MIN: not interior, the scalar path decides.
      const __m256i ix = _mm256_cvttps_epi32(fx), iy = _mm256_cvttps_epi32(fy);
      const __m256i off =
          _mm256_add_epi32(_mm256_mullo_epi32(iy, stride), _mm256_mullo_epi32(ix, chans));
      const __m256 fma_ok =
          _mm256_or_ps(_mm256_cmp_ps(ax, tiny, _CMP_GE_OQ), _mm256_cmp_ps(ax, zero, _CMP_EQ_OQ));
      if (interior_mask(ix, iy, off, im, last_offset) != 0xFF ||
          _mm256_movemask_ps(fma_ok) != 0xFF) {
        alignas(32) float vsx[8], vsy[8];
        _mm256_store_ps(vsx, sx);
        _mm256_store_ps(vsy, sy);
        for (int i = 0; i < 8; ++i) float_pixel<C>(im, vsx[i], vsy[i], out + (x + i) * C);
        continue;
      }
      _mm256_store_si256((__m256i*)ofs, off);
      _mm256_store_ps(fax, ax);
      _mm256_store_pd(fay, _mm256_cvtps_pd(_mm256_castps256_ps128(ay)));
      _mm256_store_pd(fay + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(ay, 1)));
      for (int i = 0; i < 8; ++i) {
        const uint8_t* p0 = im.src + ofs[i];
        const __m256i rows = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)p0)),
            _mm_loadu_si128((const __m128i*)(p0 + im.stride)), 1);
        const __m256 pl = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(rows, left));
        const __m256 pr = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(rows, right));
        // lanes 0..3: top (channels), 4..7: bottom; p_right − p_left is exact in float32
        const __m256 lerp = _mm256_fmadd_ps(_mm256_broadcast_ss(fax + i), _mm256_sub_ps(pr, pl), pl);
        const __m128 top = _mm256_castps256_ps128(lerp);
        const __m128 diff = _mm_sub_ps(_mm256_extractf128_ps(lerp, 1), top);  // float32
        // The last lerp as the reference: the float64 product ay·diff is exact, so one fused
        // float64 multiply-add rounds the same sum once, then once more to float32.
        const __m128 v = _mm256_cvtpd_ps(_mm256_fmadd_pd(
            _mm256_broadcast_sd(fay + i), _mm256_cvtps_pd(diff), _mm256_cvtps_pd(top)));
        // Round half to even (the current mode, as np.rint).
        const __m128i bytes = _mm_shuffle_epi8(_mm_cvtps_epi32(v), low_bytes);
        store_pixel<C>(out + (x + i) * C, bytes, x + i + 1 < w_out);
      }
    }
    for (; x < w_out; ++x) {
      float_pixel<C>(im, static_cast<float>(g.xcol[x] + rx), static_cast<float>(g.ycol[x] + ry),
                     out + x * C);
    }
  }
}

#endif  // POSEBH_WARP_X86

// ------------------------------------------------------------------------------------------
// ISA selection (run time, so the cached binary stays portable: no -march=native)
// ------------------------------------------------------------------------------------------

bool use_avx2() {
  // Read on every call (cheap) so a test can switch POSEBH_CPU_ISA within one process.
  const char* env = std::getenv("POSEBH_CPU_ISA");
  if (env != nullptr && std::string(env) == "generic") return false;
#ifdef POSEBH_WARP_X86
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

std::string cpu_isa() { return use_avx2() ? "avx2" : "generic"; }

// ------------------------------------------------------------------------------------------
// The op
// ------------------------------------------------------------------------------------------

template <typename Fn>
void for_rows(int64_t h_out, int64_t row_bytes, const Fn& fn) {
  // Chunks of at least ~64 KiB of output: smaller crops run inline on the calling thread.
  const int64_t grain =
      std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, row_bytes));
  at::parallel_for(0, h_out, grain, fn);
}

at::Tensor warp_affine_cpu(const at::Tensor& image, at::ArrayRef<double> matrix, int64_t out_w,
                           int64_t out_h, c10::string_view method) {
  TORCH_CHECK(image.dim() == 3 && image.scalar_type() == at::kByte,
              "posebh::warp_affine: image must be [H, W, C] uint8, got ", image.scalar_type(),
              " ", image.sizes());
  TORCH_CHECK(image.size(0) > 0 && image.size(1) > 0,
              "posebh::warp_affine: image must be non-empty, got ", image.sizes());
  TORCH_CHECK(matrix.size() == 6, "posebh::warp_affine: matrix must have 6 entries (2×3), got ",
              matrix.size());
  TORCH_CHECK(out_w >= 0 && out_h >= 0,
              "posebh::warp_affine: out_w and out_h must be >= 0, got ", out_w, ", ", out_h);
  const bool fixed = method == "fixed";
  TORCH_CHECK(fixed || method == "float",
              "posebh::warp_affine: method must be 'fixed' or 'float', got '", std::string(method),
              "'");
  const at::Tensor img = image.contiguous();
  const int64_t ch = img.size(2);
  at::Tensor out = at::empty({out_h, out_w, ch}, img.options());
  if (out.numel() == 0) return out;
  const Source im{img.data_ptr<uint8_t>(), img.size(0), img.size(1), ch, img.size(1) * ch};
  const Inverse inv = invert(std::vector<double>(matrix.begin(), matrix.end()));
  uint8_t* dst = out.data_ptr<uint8_t>();
  // The vector rows use int32 byte offsets, read 8 bytes per corner row and skip the
  // reference's clip of corner indices at 2^20 (so images stay below that size).
  const bool vector = (ch == 3 || ch == 4) && im.h * im.stride < (int64_t{1} << 31) &&
                      im.w <= kFixedClipHigh && im.h <= kFixedClipHigh && use_avx2();

  if (fixed) {
    const double ab_scale = 1 << kAbBits;
    std::vector<int64_t> adelta(out_w), bdelta(out_w);
    std::vector<int32_t> adelta32(out_w), bdelta32(out_w);
    bool fits32 = true;
    const int64_t limit = int64_t{1} << 30;
    for (int64_t x = 0; x < out_w; ++x) {
      const double xd = static_cast<double>(x);
      adelta[x] = rint_int64(inv.a11 * xd * ab_scale);
      bdelta[x] = rint_int64(inv.a21 * xd * ab_scale);
      fits32 = fits32 && adelta[x] > -limit && adelta[x] < limit && bdelta[x] > -limit &&
               bdelta[x] < limit;
      adelta32[x] = static_cast<int32_t>(adelta[x]);
      bdelta32[x] = static_cast<int32_t>(bdelta[x]);
    }
    const FixedGrid grid{adelta.data(), bdelta.data(), adelta32.data(), bdelta32.data(), fits32};
    for_rows(out_h, out_w * ch, [&](int64_t b, int64_t e) {
#ifdef POSEBH_WARP_X86
      if (vector && ch == 3) return fixed_rows_avx2<3>(im, dst, out_w, inv, grid, b, e);
      if (vector && ch == 4) return fixed_rows_avx2<4>(im, dst, out_w, inv, grid, b, e);
#endif
      if (ch == 3) return fixed_rows<3>(im, dst, out_w, inv, grid, b, e);
      if (ch == 1) return fixed_rows<1>(im, dst, out_w, inv, grid, b, e);
      if (ch == 4) return fixed_rows<4>(im, dst, out_w, inv, grid, b, e);
      fixed_rows<0>(im, dst, out_w, inv, grid, b, e);
    });
  } else {
    // fma(float32(M00), float32(x), ·): the product is exact in float64, computed once.
    const double m00 = static_cast<float>(inv.a11), m10 = static_cast<float>(inv.a21);
    std::vector<double> xcol(out_w), ycol(out_w);
    for (int64_t x = 0; x < out_w; ++x) {
      const double xf = static_cast<float>(x);
      xcol[x] = m00 * xf;
      ycol[x] = m10 * xf;
    }
    const FloatGrid grid{xcol.data(), ycol.data()};
    for_rows(out_h, out_w * ch, [&](int64_t b, int64_t e) {
#ifdef POSEBH_WARP_X86
      if (vector && ch == 3) return float_rows_avx2<3>(im, dst, out_w, inv, grid, b, e);
      if (vector && ch == 4) return float_rows_avx2<4>(im, dst, out_w, inv, grid, b, e);
#endif
      if (ch == 3) return float_rows<3>(im, dst, out_w, inv, grid, b, e);
      if (ch == 1) return float_rows<1>(im, dst, out_w, inv, grid, b, e);
      if (ch == 4) return float_rows<4>(im, dst, out_w, inv, grid, b, e);
      float_rows<0>(im, dst, out_w, inv, grid, b, e);
    });
  }
  return out;
}

// uint8 [H, W, C] → float32 [C, H, W] = (image / 255 − mean) / std, in float32 and in that
// order (ToTensor + NormalizeTensor of the official pipeline): each step is one correctly
// rounded IEEE operation, as in NumPy/torch, so the bits are theirs; the loops vectorise
// (no fast-math: a division stays a division).
// A uint8 pixel has 256 values: each channel's 256 results are computed once by the formula
// and the image is a table look-up (the same bits, without a division per value).
template <int kC>
void normalize_pixels(const uint8_t* src, float* dst, int64_t n, const float* mean,
                      const float* std) {
  float table[kC][256];
  for (int k = 0; k < kC; ++k)
    for (int v = 0; v < 256; ++v) table[k][v] = (static_cast<float>(v) / 255.0f - mean[k]) / std[k];
  float* planes[kC];
  for (int k = 0; k < kC; ++k) planes[k] = dst + k * n;
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < kC; ++k) planes[k][i] = table[k][src[kC * i + k]];
}

// dst [C, n] ← src [n, C] normalised (mean/std already float32).
void normalize_into(const uint8_t* src, float* dst, int64_t n, int64_t ch, const float* m,
                    const float* s) {
  if (ch == 3) {
    normalize_pixels<3>(src, dst, n, m, s);
  } else if (ch == 1) {
    normalize_pixels<1>(src, dst, n, m, s);
  } else {
    for (int64_t k = 0; k < ch; ++k)
      for (int64_t i = 0; i < n; ++i)
        dst[k * n + i] = (static_cast<float>(src[ch * i + k]) / 255.0f - m[k]) / s[k];
  }
}

std::vector<float> as_float32(c10::ArrayRef<double> values) {
  std::vector<float> out(values.size());
  for (size_t k = 0; k < values.size(); ++k) out[k] = static_cast<float>(values[k]);
  return out;  // NumPy's float32 cast: round to nearest
}

at::Tensor normalize_image_cpu(const at::Tensor& image, c10::ArrayRef<double> mean,
                               c10::ArrayRef<double> std) {
  TORCH_CHECK(image.scalar_type() == at::kByte && image.dim() == 3,
              "posebh::normalize_image: image must be uint8 [H, W, C], got ",
              image.scalar_type(), " ", image.sizes());
  const int64_t ch = image.size(2);
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == ch && static_cast<int64_t>(std.size()) == ch,
              "posebh::normalize_image: mean and std need ", ch, " entries, got ", mean.size(),
              " and ", std.size());
  const at::Tensor img = image.contiguous();
  const int64_t h = img.size(0), w = img.size(1);
  at::Tensor out = at::empty({ch, h, w}, img.options().dtype(at::kFloat));
  const std::vector<float> m = as_float32(mean), s = as_float32(std);
  normalize_into(img.data_ptr<uint8_t>(), out.data_ptr<float>(), h * w, ch, m.data(), s.data());
  return out;
}

// The evaluation crops of one image: N matrices (6 numbers each) → float32 [N, C, h, w], each
// crop warp_affine's bytes normalised as normalize_image does (one call instead of 2N).
at::Tensor warp_normalize_batch_cpu(const at::Tensor& image, c10::ArrayRef<double> matrices,
                                    int64_t out_w, int64_t out_h, c10::string_view method,
                                    c10::ArrayRef<double> mean, c10::ArrayRef<double> std) {
  TORCH_CHECK(matrices.size() % 6 == 0,
              "posebh::warp_normalize_batch: matrices must hold 6 numbers per crop, got ",
              matrices.size());
  TORCH_CHECK(image.dim() == 3, "posebh::warp_normalize_batch: image must be [H, W, C], got ",
              image.sizes());
  const int64_t n = static_cast<int64_t>(matrices.size() / 6), ch = image.size(2);
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == ch && static_cast<int64_t>(std.size()) == ch,
              "posebh::warp_normalize_batch: mean and std need ", ch, " entries, got ",
              mean.size(), " and ", std.size());
  at::Tensor out = at::empty({n, ch, out_h, out_w}, image.options().dtype(at::kFloat));
  const std::vector<float> m = as_float32(mean), s = as_float32(std);
  float* dst = out.data_ptr<float>();
  const int64_t plane = out_h * out_w;
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor crop = warp_affine_cpu(image, matrices.slice(6 * i, 6), out_w, out_h, method);
    normalize_into(crop.data_ptr<uint8_t>(), dst + i * ch * plane, plane, ch, m.data(), s.data());
  }
  return out;
}

}  // namespace
}  // namespace posebh_warp

// FRAGMENT: the `posebh` namespace is shared with the other posebh extensions (each builds its
// own library); only one TORCH_LIBRARY block per namespace may exist in a process.
TORCH_LIBRARY_FRAGMENT(posebh, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def("warp_affine(Tensor image, float[] matrix, int out_w, int out_h, str method) -> Tensor",
        tags);
  m.def("warp_affine_cpu_isa() -> str", &posebh_warp::cpu_isa);
  m.def("normalize_image(Tensor image, float[] mean, float[] std) -> Tensor", tags);
  m.def(
      "warp_normalize_batch(Tensor image, float[] matrices, int out_w, int out_h, str method, "
      "float[] mean, float[] std) -> Tensor",
      tags);
}

TORCH_LIBRARY_IMPL(posebh, CPU, m) {
  m.impl("warp_affine", &posebh_warp::warp_affine_cpu);
  m.impl("normalize_image", &posebh_warp::normalize_image_cpu);
  m.impl("warp_normalize_batch", &posebh_warp::warp_normalize_batch_cpu);
}
