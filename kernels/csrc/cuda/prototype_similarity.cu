// CUDA kernels of the fused prototype similarity, behind a plain C ABI.
//
// This file includes no torch header, so it compiles with nvcc alone (the tests run
// `nvcc -c` on it when nvcc exists) and its build does not depend on the torch version.
// prototype_similarity_cuda.cpp binds it to the `posebh` torch operators (CUDA dispatch key).
//
// Shapes (B batch, F dims, P = H·W pixels, M prototypes per class, K classes of the block):
//   embeddings: element (b, f, p) at emb[b·sb + f·sf + p·sp] (any float dtype, see below);
//   prototypes: [K][M][F], already normalised like F.normalize, in the compute dtype;
//   heatmaps out [B][K][P], logits [N][K·M], best [N][K] int64, gradients [B][F][P] / [N][F],
//   all contiguous, in float32 (the compute dtype; float32 prototypes).
// Embeddings may be float32, float16 or bfloat16 (converted to float32 on load).
//
// Mapping: one thread per pixel. A pixel's normalised embedding lives in registers (F ≤ 64,
// the PoseBH case; float32 accumulation); the prototypes of a chunk of classes are staged
// in shared memory and read as broadcasts (every thread of a warp reads the same address).
// Heatmap and gradient stores are pixel-contiguous across a warp (coalesced).
//
// Semantics match posebh/kernels/csrc/prototype_similarity.cpp: |cos|, NaN-propagating max
// over M, clamp to [1e-4, 1 − 1e-4] (NaN stays NaN), first arg-max with NaN as the largest;
// the backward routes the gradient through the clamp where lo ≤ max ≤ hi, shares it equally
// among tied maxima, multiplies by sign(s), and applies the derivative of F.normalize.
//
// Every entry point returns a cudaError_t as int (0: success) and launches on `stream`.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <type_traits>

// Largest feature dimension (kernels/limits.py SIMILARITY_CUDA_MAX_F says the same).
#define POSEBH_SIMILARITY_CUDA_MAX_F 64

namespace {

constexpr int kThreads = 128;
constexpr int kSharedBytes = 32 * 1024;  // prototype chunk budget (below the 48 KB default)
constexpr double kNormEps = 1e-12;
constexpr double kScoreMin = 1e-4;
constexpr double kScoreMax = 1.0 - 1e-4;

enum DType { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

template <typename in_t, typename acc_t>
__device__ __forceinline__ acc_t to_acc(in_t x) {
  return static_cast<acc_t>(x);
}
template <>
__device__ __forceinline__ float to_acc<__half, float>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float to_acc<__nv_bfloat16, float>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T nan_max(T a, T b) {
  return (b > a || b != b) ? b : a;
}

template <typename T>
__device__ __forceinline__ T sgn(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x);
}

// Loads pixel p of image b and normalises it; returns ||e|| and writes max(||e||, eps).
template <typename in_t, typename acc_t, int FCAP>
__device__ __forceinline__ acc_t load_normalised(const in_t* emb, int64_t sb, int64_t sf,
                                                 int64_t sp, int64_t b, int64_t p, int F,
                                                 acc_t (&u)[FCAP], acc_t& denom) {
  const in_t* x = emb + b * sb + p * sp;
  acc_t sum = acc_t(0);
#pragma unroll
  for (int f = 0; f < FCAP; ++f) {
    u[f] = f < F ? to_acc<in_t, acc_t>(x[f * sf]) : acc_t(0);
    sum += u[f] * u[f];
  }
  const acc_t norm = sqrt(sum);
  denom = norm < acc_t(kNormEps) ? acc_t(kNormEps) : norm;  // NaN stays NaN
#pragma unroll
  for (int f = 0; f < FCAP; ++f) u[f] = u[f] / denom;
  return norm;
}

// Stages the normalised prototypes of classes c0..c0+nc−1 ([K][M][F]) in shared memory.
template <typename acc_t>
__device__ __forceinline__ void stage(const acc_t* protos, int64_t c0, int nc, int M, int F,
                                      acc_t* smem) {
  const int n = nc * M * F;
  const acc_t* src = protos + c0 * M * F;
  for (int i = threadIdx.x; i < n; i += blockDim.x) smem[i] = src[i];
}

template <typename acc_t, int FCAP>
__device__ __forceinline__ acc_t dot(const acc_t (&u)[FCAP], const acc_t* p, int F) {
  acc_t s = acc_t(0);
#pragma unroll
  for (int f = 0; f < FCAP; ++f) {
    if (f < F) s = fma(u[f], p[f], s);
  }
  return s;
}

template <typename in_t, typename acc_t, int FCAP>
__global__ void heatmaps_kernel(const in_t* __restrict__ emb, int64_t sb, int64_t sf, int64_t sp,
                                int64_t P, int F, const acc_t* __restrict__ protos, int M,
                                int64_t K, int chunk, acc_t* __restrict__ out) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int64_t b = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool live = p < P;
  acc_t u[FCAP];
  acc_t denom;
  load_normalised<in_t, acc_t, FCAP>(emb, sb, sf, sp, b, live ? p : 0, F, u, denom);
  for (int64_t c0 = 0; c0 < K; c0 += chunk) {
    const int nc = static_cast<int>(K - c0 < chunk ? K - c0 : chunk);
    __syncthreads();
    stage(protos, c0, nc, M, F, smem);
    __syncthreads();
    if (!live) continue;
    for (int c = 0; c < nc; ++c) {
      acc_t best = acc_t(0);
      for (int m = 0; m < M; ++m) best = nan_max(best, fabs(dot(u, smem + (c * M + m) * F, F)));
      const acc_t h = best < acc_t(kScoreMin) ? acc_t(kScoreMin)
                                               : (best > acc_t(kScoreMax) ? acc_t(kScoreMax) : best);
      out[(b * K + c0 + c) * P + p] = h;
    }
  }
}

template <typename in_t, typename acc_t, int FCAP>
__global__ void heatmaps_backward_kernel(const acc_t* __restrict__ grad,
                                         const in_t* __restrict__ emb, int64_t sb, int64_t sf,
                                         int64_t sp, int64_t P, int F,
                                         const acc_t* __restrict__ protos, int M, int64_t K,
                                         int chunk, acc_t* __restrict__ gx) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int64_t b = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool live = p < P;
  acc_t u[FCAP], G[FCAP];
  acc_t denom;
  const acc_t norm = load_normalised<in_t, acc_t, FCAP>(emb, sb, sf, sp, b, live ? p : 0, F, u,
                                                        denom);
#pragma unroll
  for (int f = 0; f < FCAP; ++f) G[f] = acc_t(0);
  for (int64_t c0 = 0; c0 < K; c0 += chunk) {
    const int nc = static_cast<int>(K - c0 < chunk ? K - c0 : chunk);
    __syncthreads();
    stage(protos, c0, nc, M, F, smem);
    __syncthreads();
    if (!live) continue;
    for (int c = 0; c < nc; ++c) {
      const acc_t g = grad[(b * K + c0 + c) * P + p];
      if (g == acc_t(0)) continue;
      acc_t best = acc_t(0);
      int count = 0;
      for (int m = 0; m < M; ++m) {
        const acc_t a = fabs(dot(u, smem + (c * M + m) * F, F));
        if (a > best || a != a) {
          best = a;
          count = 1;
        } else if (a == best) {
          ++count;
        }
      }
      if (!(best >= acc_t(kScoreMin) && best <= acc_t(kScoreMax)) || count == 0) continue;
      const acc_t scale = g / acc_t(count);
      for (int m = 0; m < M; ++m) {
        const acc_t* pm = smem + (c * M + m) * F;
        const acc_t s = dot(u, pm, F);
        if (fabs(s) != best) continue;
        const acc_t w = scale * sgn(s);
#pragma unroll
        for (int f = 0; f < FCAP; ++f) {
          if (f < F) G[f] += w * pm[f];
        }
      }
    }
  }
  if (!live) return;
  acc_t a = acc_t(0);
#pragma unroll
  for (int f = 0; f < FCAP; ++f) a += G[f] * u[f];
  if (!(norm >= acc_t(kNormEps))) a = acc_t(0);
#pragma unroll
  for (int f = 0; f < FCAP; ++f) {
    if (f < F) gx[(b * F + f) * P + p] = (G[f] - a * u[f]) / denom;
  }
}

template <typename in_t, typename acc_t, int FCAP>
__global__ void logits_kernel(const in_t* __restrict__ emb, int64_t sn, int64_t sf, int64_t N,
                              int F, const acc_t* __restrict__ protos, int M, int64_t K, int chunk,
                              acc_t* __restrict__ logits, int64_t* __restrict__ best_index) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool live = n < N;
  acc_t u[FCAP];
  acc_t denom;
  load_normalised<in_t, acc_t, FCAP>(emb, 0, sf, sn, 0, live ? n : 0, F, u, denom);
  for (int64_t c0 = 0; c0 < K; c0 += chunk) {
    const int nc = static_cast<int>(K - c0 < chunk ? K - c0 : chunk);
    __syncthreads();
    stage(protos, c0, nc, M, F, smem);
    __syncthreads();
    if (!live) continue;
    for (int c = 0; c < nc; ++c) {
      acc_t bv = acc_t(-1);
      int64_t bi = 0;
      for (int m = 0; m < M; ++m) {
        const acc_t a = fabs(dot(u, smem + (c * M + m) * F, F));
        logits[n * K * M + (c0 + c) * M + m] = a;
        if (a > bv || (a != a && bv == bv)) {
          bv = a;
          bi = m;
        }
      }
      best_index[n * K + c0 + c] = bi;
    }
  }
}

template <typename in_t, typename acc_t, int FCAP>
__global__ void logits_backward_kernel(const acc_t* __restrict__ grad,
                                       const in_t* __restrict__ emb, int64_t sn, int64_t sf,
                                       int64_t N, int F, const acc_t* __restrict__ protos, int M,
                                       int64_t K, int chunk, acc_t* __restrict__ gx) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool live = n < N;
  acc_t u[FCAP], G[FCAP];
  acc_t denom;
  const acc_t norm = load_normalised<in_t, acc_t, FCAP>(emb, 0, sf, sn, 0, live ? n : 0, F, u,
                                                        denom);
#pragma unroll
  for (int f = 0; f < FCAP; ++f) G[f] = acc_t(0);
  for (int64_t c0 = 0; c0 < K; c0 += chunk) {
    const int nc = static_cast<int>(K - c0 < chunk ? K - c0 : chunk);
    __syncthreads();
    stage(protos, c0, nc, M, F, smem);
    __syncthreads();
    if (!live) continue;
    for (int c = 0; c < nc; ++c) {
      for (int m = 0; m < M; ++m) {
        const acc_t g = grad[n * K * M + (c0 + c) * M + m];
        if (g == acc_t(0)) continue;
        const acc_t* pm = smem + (c * M + m) * F;
        const acc_t w = g * sgn(dot(u, pm, F));
#pragma unroll
        for (int f = 0; f < FCAP; ++f) {
          if (f < F) G[f] += w * pm[f];
        }
      }
    }
  }
  if (!live) return;
  acc_t a = acc_t(0);
#pragma unroll
  for (int f = 0; f < FCAP; ++f) a += G[f] * u[f];
  if (!(norm >= acc_t(kNormEps))) a = acc_t(0);
#pragma unroll
  for (int f = 0; f < FCAP; ++f) {
    if (f < F) gx[n * F + f] = (G[f] - a * u[f]) / denom;
  }
}

// Classes per shared-memory chunk: as many as fit the budget (at least one).
template <typename acc_t>
int chunk_for(int M, int F) {
  const int per_class = M * F * static_cast<int>(sizeof(acc_t));
  const int c = per_class > 0 ? kSharedBytes / per_class : 1;
  return c < 1 ? 1 : (c > 64 ? 64 : c);
}

// Calls fn with the (in_t, float, 64) instantiation for the dtypes and F; returns an error for
// unsupported combinations. One thread holds a pixel's F ≤ 64 normalised features and its
// gradient in registers. float64, or F up to 256 in local memory, spilled on sm_80/sm_90
// (python -m posebh.ops.compile_check), so those cases are left to the Triton kernels
// (POSEBH_SIMILARITY_CUDA_MAX_F, kernels/limits.py).
template <class Fn>
int dispatch(int in_dtype, int acc_dtype, int F, Fn&& fn) {
  if (F > POSEBH_SIMILARITY_CUDA_MAX_F || F < 0 || acc_dtype != kF32) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  constexpr std::integral_constant<int, POSEBH_SIMILARITY_CUDA_MAX_F> cap{};
  switch (in_dtype) {
    case kF32:
      return fn(static_cast<const float*>(nullptr), 0.0f, cap);
    case kF16:
      return fn(static_cast<const __half*>(nullptr), 0.0f, cap);
    case kBF16:
      return fn(static_cast<const __nv_bfloat16*>(nullptr), 0.0f, cap);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

}  // namespace

extern "C" {

const char* posebh_cuda_error_string(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

int posebh_prototype_heatmaps_cuda(const void* emb, int emb_dtype, int64_t sb, int64_t sf,
                                   int64_t sp, int64_t B, int64_t F, int64_t P,
                                   const void* protos, int acc_dtype, int64_t M, int64_t K,
                                   void* out, cudaStream_t stream) {
  if (B == 0 || P == 0 || K == 0) return 0;
  return dispatch(emb_dtype, acc_dtype, static_cast<int>(F), [&](auto in_tag, auto acc_tag,
                                                                 auto fcap) {
    using in_t = std::remove_const_t<std::remove_pointer_t<decltype(in_tag)>>;
    using acc_t = decltype(acc_tag);
    constexpr int kCap = decltype(fcap)::value;
    const int chunk = chunk_for<acc_t>(static_cast<int>(M), static_cast<int>(F));
    const size_t shared = static_cast<size_t>(chunk) * M * F * sizeof(acc_t);
    heatmaps_kernel<in_t, acc_t, kCap>
        <<<dim3(blocks_for(P), static_cast<unsigned int>(B)), kThreads, shared, stream>>>(
            static_cast<const in_t*>(emb), sb, sf, sp, P, static_cast<int>(F),
            static_cast<const acc_t*>(protos), static_cast<int>(M), K, chunk,
            static_cast<acc_t*>(out));
    return static_cast<int>(cudaGetLastError());
  });
}

int posebh_prototype_heatmaps_backward_cuda(const void* grad, const void* emb, int emb_dtype,
                                            int64_t sb, int64_t sf, int64_t sp, int64_t B,
                                            int64_t F, int64_t P, const void* protos,
                                            int acc_dtype, int64_t M, int64_t K, void* gx,
                                            cudaStream_t stream) {
  if (B == 0 || P == 0 || K == 0) return 0;
  return dispatch(emb_dtype, acc_dtype, static_cast<int>(F), [&](auto in_tag, auto acc_tag,
                                                                 auto fcap) {
    using in_t = std::remove_const_t<std::remove_pointer_t<decltype(in_tag)>>;
    using acc_t = decltype(acc_tag);
    constexpr int kCap = decltype(fcap)::value;
    const int chunk = chunk_for<acc_t>(static_cast<int>(M), static_cast<int>(F));
    const size_t shared = static_cast<size_t>(chunk) * M * F * sizeof(acc_t);
    heatmaps_backward_kernel<in_t, acc_t, kCap>
        <<<dim3(blocks_for(P), static_cast<unsigned int>(B)), kThreads, shared, stream>>>(
            static_cast<const acc_t*>(grad), static_cast<const in_t*>(emb), sb, sf, sp, P,
            static_cast<int>(F), static_cast<const acc_t*>(protos), static_cast<int>(M), K,
            chunk, static_cast<acc_t*>(gx));
    return static_cast<int>(cudaGetLastError());
  });
}

int posebh_prototype_logits_cuda(const void* emb, int emb_dtype, int64_t sn, int64_t sf,
                                 int64_t N, int64_t F, const void* protos, int acc_dtype,
                                 int64_t M, int64_t K, void* logits, int64_t* best,
                                 cudaStream_t stream) {
  if (N == 0 || K == 0) return 0;
  return dispatch(emb_dtype, acc_dtype, static_cast<int>(F), [&](auto in_tag, auto acc_tag,
                                                                 auto fcap) {
    using in_t = std::remove_const_t<std::remove_pointer_t<decltype(in_tag)>>;
    using acc_t = decltype(acc_tag);
    constexpr int kCap = decltype(fcap)::value;
    const int chunk = chunk_for<acc_t>(static_cast<int>(M), static_cast<int>(F));
    const size_t shared = static_cast<size_t>(chunk) * M * F * sizeof(acc_t);
    logits_kernel<in_t, acc_t, kCap><<<blocks_for(N), kThreads, shared, stream>>>(
        static_cast<const in_t*>(emb), sn, sf, N, static_cast<int>(F),
        static_cast<const acc_t*>(protos), static_cast<int>(M), K, chunk,
        static_cast<acc_t*>(logits), best);
    return static_cast<int>(cudaGetLastError());
  });
}

int posebh_prototype_logits_backward_cuda(const void* grad, const void* emb, int emb_dtype,
                                          int64_t sn, int64_t sf, int64_t N, int64_t F,
                                          const void* protos, int acc_dtype, int64_t M, int64_t K,
                                          void* gx, cudaStream_t stream) {
  if (N == 0 || K == 0) return 0;
  return dispatch(emb_dtype, acc_dtype, static_cast<int>(F), [&](auto in_tag, auto acc_tag,
                                                                 auto fcap) {
    using in_t = std::remove_const_t<std::remove_pointer_t<decltype(in_tag)>>;
    using acc_t = decltype(acc_tag);
    constexpr int kCap = decltype(fcap)::value;
    const int chunk = chunk_for<acc_t>(static_cast<int>(M), static_cast<int>(F));
    const size_t shared = static_cast<size_t>(chunk) * M * F * sizeof(acc_t);
    logits_backward_kernel<in_t, acc_t, kCap><<<blocks_for(N), kThreads, shared, stream>>>(
        static_cast<const acc_t*>(grad), static_cast<const in_t*>(emb), sn, sf, N,
        static_cast<int>(F), static_cast<const acc_t*>(protos), static_cast<int>(M), K, chunk,
        static_cast<acc_t*>(gx));
    return static_cast<int>(cudaGetLastError());
  });
}

}  // extern "C"
