// Torch binding of the CUDA heatmap decode (decode_heatmaps.cu, C ABI in
// decode_heatmaps_abi.h).
//
// Registers the CUDA implementation of posebh::decode_heatmaps, whose schema and CPU
// implementation live in ../decode_heatmaps.cpp (always compiled into the same extension, which
// also provides the argument checking used here). Shapes: heatmaps [N, K, H, W] float32 on one
// CUDA device, center/scale [N, 2] (any device), flipped like heatmaps; outputs preds [N, K, 2],
// maxvals [N, K, 1] float32 on the heatmaps' device. Modes: None, 'default' and use_udp=True
// (kernels up to POSEBH_DECODE_CUDA_MAX_KERNEL); 'unbiased'/'megvii' raise (posebh.ops routes
// them to the reference).

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include "../decode_heatmaps_args.h"
#include "../decode_heatmaps_common.h"
#include "decode_heatmaps_abi.h"

namespace posebh_decode {
namespace {

std::tuple<at::Tensor, at::Tensor> decode_heatmaps_cuda(
    const at::Tensor& heatmaps, const at::Tensor& center, const at::Tensor& scale,
    const std::optional<at::Tensor>& flipped, at::OptionalIntArrayRef flip_indices, bool shift,
    std::optional<c10::string_view> post_process, bool use_udp, int64_t kernel) {
  TORCH_CHECK(heatmaps.is_cuda(), "decode_heatmaps (CUDA): heatmaps must be a CUDA tensor");
  const Checked a =
      check_args(heatmaps, center, scale, flipped, flip_indices, post_process, use_udp, kernel);
  TORCH_CHECK(a.mode == kModeNone || a.mode == kModeDefault || a.mode == kModeUdp,
              "decode_heatmaps (CUDA): implements post_process None/'default' and use_udp=True; "
              "'unbiased' and 'megvii' run on the reference (posebh.ops.decode_heatmaps)");
  TORCH_CHECK(a.taps.numel() <= POSEBH_DECODE_CUDA_MAX_KERNEL,
              "decode_heatmaps (CUDA): kernels up to ", POSEBH_DECODE_CUDA_MAX_KERNEL,
              " are supported, got ", a.taps.numel());
  TORCH_CHECK(a.H * a.W < std::numeric_limits<int32_t>::max(),
              "decode_heatmaps (CUDA): H·W must be below 2^31");
  const c10::cuda::CUDAGuard guard(heatmaps.device());
  at::Tensor preds = at::empty({a.N, a.K, 2}, heatmaps.options());
  at::Tensor maxvals = at::empty({a.N, a.K, 1}, heatmaps.options());
  if (a.N * a.K == 0) return {preds, maxvals};
  const at::Tensor box = a.box.to(heatmaps.device());
  const at::Tensor fidx = a.fl.defined() ? a.fidx.to(heatmaps.device()) : at::Tensor();
  PosebhDecodeArgs args{};
  args.hm = a.hm.const_data_ptr<float>();
  args.fl = a.fl.defined() ? a.fl.const_data_ptr<float>() : nullptr;
  args.fidx = fidx.defined() ? fidx.const_data_ptr<int64_t>() : nullptr;
  args.shift = shift ? 1 : 0;
  args.N = a.N;
  args.K = a.K;
  args.H = a.H;
  args.W = a.W;
  args.mode = a.mode;
  args.ks = static_cast<int32_t>(a.taps.numel());
  const float* taps = a.taps.const_data_ptr<float>();
  for (int64_t t = 0; t < a.taps.numel(); ++t) args.taps[t] = taps[t];
  args.box = box.const_data_ptr<float>();
  args.preds = preds.mutable_data_ptr<float>();
  args.maxvals = maxvals.mutable_data_ptr<float>();
  const int err = posebh_decode_heatmaps_cuda(&args, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "decode_heatmaps (CUDA): launch failed: ", posebh_decode_cuda_error(err));
  return {preds, maxvals};
}

}  // namespace
}  // namespace posebh_decode

TORCH_LIBRARY_IMPL(posebh, CUDA, m) {
  m.impl("decode_heatmaps", &posebh_decode::decode_heatmaps_cuda);
}
