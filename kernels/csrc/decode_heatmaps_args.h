// Argument checking of posebh::decode_heatmaps shared by the CPU op (decode_heatmaps.cpp, which
// defines these functions) and the CUDA binding (cuda/decode_heatmaps_cuda.cpp). Host-only,
// includes torch headers; the kernels themselves use decode_heatmaps_common.h.
//
// Shapes: heatmaps [N, K, H, W] float32, center/scale [N, 2], flipped [N, K, H, W].

#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace posebh_decode {

// OpenCV's 1-D Gaussian kernel cv2.getGaussianKernel(ksize, 0) as float32 taps (bit-equal to
// posebh.decode.gaussian_kernel_1d for every odd size up to 31, checked by the tests).
std::vector<float> gaussian_taps(int64_t ksize);

// The decoding Mode of (post_process, use_udp); raises ValueError like the reference.
int32_t parse_mode(const std::optional<c10::string_view>& post_process, bool use_udp,
                   int64_t kernel);

// Per-box transform factors [N, 6] float32 on the CPU: factor x, y; offset x, y; half x, y.
at::Tensor box_factors(const at::Tensor& center, const at::Tensor& scale, int64_t N, int64_t H,
                       int64_t W, bool use_udp);

// Validated arguments of one call. hm/fl are contiguous and on the input's device; fidx [K]
// int64, box [N, 6] and taps [ks] float32 are on the CPU.
struct Checked {
  at::Tensor hm, fl, fidx, box, taps;
  int32_t mode;
  int64_t N, K, H, W;
};

Checked check_args(const at::Tensor& heatmaps, const at::Tensor& center, const at::Tensor& scale,
                   const std::optional<at::Tensor>& flipped, at::OptionalIntArrayRef flip_indices,
                   const std::optional<c10::string_view>& post_process, bool use_udp,
                   int64_t kernel);

}  // namespace posebh_decode
