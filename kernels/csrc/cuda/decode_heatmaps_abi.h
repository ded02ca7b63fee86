// C ABI between the torch-free CUDA decode kernel (decode_heatmaps.cu) and its binding in
// ../decode_heatmaps.cpp. Plain C types only, so the .cu compiles without any torch header.
//
// Shapes: hm, fl [N][K][H][W] float32 (contiguous, device); fidx [K] int64 (device, only with
// fl); box [N][6] float32 (device: factor x, y; offset x, y; half x, y of the transform);
// preds [N][K][2], maxvals [N][K] float32 (device, written).

#pragma once

#include <stdint.h>

#define POSEBH_DECODE_CUDA_MAX_KERNEL 31

#ifdef __cplusplus
extern "C" {
#endif

typedef struct PosebhDecodeArgs {
  const float* hm;
  const float* fl;      // flipped maps for the fused flip test, or NULL
  const int64_t* fidx;  // flip pairs, or NULL
  int32_t shift;        // shift_heatmap: the flipped-back map moves one column right
  int64_t N, K, H, W;
  int32_t mode;  // posebh_decode::Mode: 0 none, 1 default, 4 DARK-UDP (2, 3 are CPU-only)
  int32_t ks;    // Gaussian kernel size (DARK-UDP), ≤ POSEBH_DECODE_CUDA_MAX_KERNEL
  float taps[POSEBH_DECODE_CUDA_MAX_KERNEL];
  const float* box;
  float* preds;
  float* maxvals;
} PosebhDecodeArgs;

// Launches the decode on `stream` (a cudaStream_t). Returns 0 or a cudaError_t code.
int posebh_decode_heatmaps_cuda(const PosebhDecodeArgs* args, void* stream);

// cudaGetErrorString of a code returned above.
const char* posebh_decode_cuda_error(int code);

#ifdef __cplusplus
}
#endif
