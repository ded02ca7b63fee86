// SIMD micro-kernels of the CPU prototype-similarity operators, written once against a traits
// type S and stamped out per instruction set: prototype_similarity.cpp includes this file
// (deliberately without an include guard) inside `#pragma GCC target` regions, so each copy is
// compiled for that region's ISA.
//
// A block is V pixels (S::kVecs vectors of S::kLanes lanes; V·sizeof(T) = 64 bytes) × R classes
// (S::kRows). Operands:
//   e   [F][lde]  normalised embeddings, pixel-contiguous (the block starts at e[0]);
//   p   [M][Kp][F] normalised prototypes; the block's classes start at p[0], class stride F,
//       prototype stride ldm = Kp·F;
//   out [R][ldo]  results, one row of V pixels per class.
// Every element is one fused multiply-add chain over f = 0..F−1 starting from 0: the order of
// MKL's sgemm, so results are bit-identical to the reference and across ISAs.
//
// S provides: T, Vec, kLanes, kVecs, kRows, zero(), load(), store(), bcast(), fma(a, b, c) =
// a·b + c (one rounding), abs(), max_nan() (maximum of two values ≥ 0 that returns NaN if either
// is NaN, like torch.amax) and clamp(x, lo, hi) (torch.clamp, NaN stays NaN).

// out[r][:] = clamp(max_m |Σ_f p[m][r][f] · e[f][:]|, lo, hi): the heatmap values of R classes.
template <class S>
inline void absmax_block_impl(const typename S::T* e, int64_t F, int64_t lde,
                              const typename S::T* p, int64_t ldm, int64_t M, typename S::T lo,
                              typename S::T hi, typename S::T* out, int64_t ldo) {
  using T = typename S::T;
  using Vec = typename S::Vec;
  constexpr int R = S::kRows, NV = S::kVecs, L = S::kLanes;
  Vec best[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) best[r][j] = S::zero();
  }
  for (int64_t m = 0; m < M; ++m) {
    const T* pm = p + m * ldm;
    Vec acc[R][NV];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] = S::zero();
    }
    for (int64_t f = 0; f < F; ++f) {
      Vec x[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) x[j] = S::load(e + f * lde + j * L);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const Vec w = S::bcast(pm[r * F + f]);
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[r][j] = S::fma(w, x[j], acc[r][j]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) best[r][j] = S::max_nan(best[r][j], S::abs(acc[r][j]));
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) S::store(out + r * ldo + j * L, S::clamp(best[r][j], lo, hi));
  }
}

// out[r][:] = Σ_f p[r][f] · e[f][:] (raw signed similarities of one prototype index m).
template <class S>
inline void dot_block_impl(const typename S::T* e, int64_t F, int64_t lde, const typename S::T* p,
                           typename S::T* out, int64_t ldo) {
  using T = typename S::T;
  using Vec = typename S::Vec;
  constexpr int R = S::kRows, NV = S::kVecs, L = S::kLanes;
  Vec acc[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[r][j] = S::zero();
  }
  for (int64_t f = 0; f < F; ++f) {
    Vec x[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) x[j] = S::load(e + f * lde + j * L);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const Vec w = S::bcast(p[r * F + f]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] = S::fma(w, x[j], acc[r][j]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) S::store(out + r * ldo + j * L, acc[r][j]);
  }
}

// Non-template entry points (one per dtype), so the instantiations are compiled inside the
// including region and called, not inlined, from portable code.
void absmax_block(const float* e, int64_t F, int64_t lde, const float* p, int64_t ldm, int64_t M,
                  float lo, float hi, float* out, int64_t ldo) {
  absmax_block_impl<F32>(e, F, lde, p, ldm, M, lo, hi, out, ldo);
}
void absmax_block(const double* e, int64_t F, int64_t lde, const double* p, int64_t ldm,
                  int64_t M, double lo, double hi, double* out, int64_t ldo) {
  absmax_block_impl<F64>(e, F, lde, p, ldm, M, lo, hi, out, ldo);
}
void dot_block(const float* e, int64_t F, int64_t lde, const float* p, float* out, int64_t ldo) {
  dot_block_impl<F32>(e, F, lde, p, out, ldo);
}
void dot_block(const double* e, int64_t F, int64_t lde, const double* p, double* out,
               int64_t ldo) {
  dot_block_impl<F64>(e, F, lde, p, out, ldo);
}
constexpr int kRows = F32::kRows;
static_assert(F32::kRows == F64::kRows, "one register-tile height per ISA");
