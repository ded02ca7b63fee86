// Fused heatmap decoding on CUDA, behind the C ABI of decode_heatmaps_abi.h (no torch header:
// the binding is decode_heatmaps_cuda.cpp).
//
// Shapes: maps [N, K, H, W] float32 (channel c = n·K + k), box [N, 6], preds [N, K, 2],
// maxvals [N, K]. Modes: none, 'default' and DARK-UDP (the ones the evaluation uses); the
// binding rejects the others, and posebh.ops routes them to the reference.
//
// One thread block per map (grid-stride over maps): the block streams the map once
// (coalesced; the flip-test merge (a + flipped_back) · 0.5 is computed on the fly), reduces
// (max, first index) with np.argmax's rules (first NaN wins, else the first maximum), then 7
// threads blur DARK-UDP's 7 points (decode_heatmaps_common.h: blur_point, the same operation
// order as the CPU op and OpenCV) and thread 0 finishes (log, Newton step, transform).
//
// Numerics: the shared scalar code is written with explicit fmaf / non-contractible products
// (mul_nc), and IEEE division (nvcc's default -prec-div=true), so the results are the CPU op's
// bits whatever -fmad says. Not verified on a GPU in this repository's CI (no GPU there): the
// tests compile this file with `nvcc -c` only.

#include <cuda_runtime.h>
#include <stdint.h>

#include "../decode_heatmaps_common.h"
#include "decode_heatmaps_abi.h"

namespace {

using posebh_decode::blur_point;
using posebh_decode::clip_udp;
using posebh_decode::dark_udp_step;
using posebh_decode::numpy_logf;
using posebh_decode::sign_of;
using posebh_decode::transform_coord;
using posebh_decode::udp_point;

constexpr int kThreads = 256;

// Map value at (c, y, x): the raw map or the flip-test merge (flip_back + optional one-column
// shift, then (a + b) · 0.5), as posebh.decode.flip_test_merge computes it.
struct MapValue {
  const PosebhDecodeArgs* a;
  __device__ float operator()(int64_t c, int64_t y, int64_t x) const {
    const int64_t hw = a->H * a->W;
    const float v = a->hm[c * hw + y * a->W + x];
    if (a->fl == nullptr) return v;
    const int64_t n = c / a->K, k = c - n * a->K;
    const int64_t xs = a->shift ? (x == 0 ? a->W - 1 : a->W - x) : a->W - 1 - x;
    const float f = a->fl[(n * a->K + a->fidx[k]) * hw + y * a->W + xs];
    return __fmul_rn(__fadd_rn(v, f), 0.5f);
  }
};

// (v1, i1) comes before (v2, i2) in np.argmax's order: NaN first (lowest index among NaNs),
// then the larger value, then the lower index.
__device__ __forceinline__ bool better(float v1, int64_t i1, float v2, int64_t i2) {
  const bool n1 = v1 != v1, n2 = v2 != v2;
  if (n1 || n2) return n1 && n2 ? i1 < i2 : n1;
  if (v1 != v2) return v1 > v2;
  return i1 < i2;
}

__global__ void __launch_bounds__(kThreads) decode_kernel(PosebhDecodeArgs args) {
  __shared__ float s_val[kThreads / 32];
  __shared__ int64_t s_idx[kThreads / 32];
  __shared__ float s_udp[8];
  const PosebhDecodeArgs* a = &args;
  const MapValue val{a};
  const int64_t NK = a->N * a->K, HW = a->H * a->W, W = a->W, H = a->H;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int64_t c = blockIdx.x; c < NK; c += gridDim.x) {
    // 1. Arg-max over the map (strided, coalesced), then warp and block reductions.
    float best = -INFINITY;
    int64_t bi = INT64_MAX;
    // 32-bit index arithmetic (the binding checks H·W < 2^31): 64-bit division is slow here.
    const int32_t hw32 = static_cast<int32_t>(HW), w32 = static_cast<int32_t>(W);
    for (int32_t i = tid; i < hw32; i += kThreads) {
      const float v = val(c, i / w32, i % w32);
      if (better(v, i, best, bi)) {
        best = v;
        bi = i;
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      const float v = __shfl_down_sync(0xffffffffu, best, off);
      const int64_t i = __shfl_down_sync(0xffffffffu, bi, off);
      if (better(v, i, best, bi)) {
        best = v;
        bi = i;
      }
    }
    if (lane == 0) {
      s_val[warp] = best;
      s_idx[warp] = bi;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < kThreads / 32; ++w) {
        if (better(s_val[w], s_idx[w], best, bi)) {
          best = s_val[w];
          bi = s_idx[w];
        }
      }
      s_val[0] = best;
      s_idx[0] = bi;
    }
    __syncthreads();
    best = s_val[0];
    bi = s_idx[0];
    const bool found = best > 0.0f;
    const int64_t px = found ? bi % W : -1, py = found ? bi / W : -1;

    // 2. DARK-UDP: thread q blurs the q-th point (own neighbours, or the sentinel's official
    // reads across channels), clips and logs it.
    if (a->mode == posebh_decode::kModeUdp && tid < 7) {
      int64_t cc, yy, xx;
      udp_point(c, px, py, tid, NK, H, W, &cc, &yy, &xx);
      s_udp[tid] = numpy_logf(clip_udp(blur_point(val, cc, yy, xx, H, W, a->taps, a->ks)));
    }
    __syncthreads();

    // 3. Refinement, transform, store.
    if (tid == 0) {
      float cx = static_cast<float>(px), cy = static_cast<float>(py);
      if (a->mode == posebh_decode::kModeUdp) {
        float v[7];
        for (int q = 0; q < 7; ++q) v[q] = s_udp[q];
        dark_udp_step(v, &cx, &cy);
      } else if (a->mode == posebh_decode::kModeDefault) {
        if (px > 1 && px < W - 1 && py > 1 && py < H - 1) {
          const float sx = sign_of(__fsub_rn(val(c, py, px + 1), val(c, py, px - 1)));
          const float sy = sign_of(__fsub_rn(val(c, py + 1, px), val(c, py - 1, px)));
          cx = __fadd_rn(cx, __fmul_rn(sx, 0.25f));
          cy = __fadd_rn(cy, __fmul_rn(sy, 0.25f));
        }
      }
      const float* b = a->box + (c / a->K) * 6;
      a->preds[2 * c] = transform_coord(cx, b[0], b[2], b[4]);
      a->preds[2 * c + 1] = transform_coord(cy, b[1], b[3], b[5]);
      a->maxvals[c] = best;
    }
    __syncthreads();  // the shared scratch is reused by the next map
  }
}

}  // namespace

extern "C" int posebh_decode_heatmaps_cuda(const PosebhDecodeArgs* args, void* stream) {
  const int64_t maps = args->N * args->K;
  if (maps == 0) return 0;
  if (args->mode != posebh_decode::kModeNone && args->mode != posebh_decode::kModeDefault &&
      args->mode != posebh_decode::kModeUdp) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (args->ks < 1 || args->ks > POSEBH_DECODE_CUDA_MAX_KERNEL) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  const int64_t blocks = maps < 65535 * 8 ? maps : 65535 * 8;
  decode_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                  static_cast<cudaStream_t>(stream)>>>(*args);
  return static_cast<int>(cudaGetLastError());
}

extern "C" const char* posebh_decode_cuda_error(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}
