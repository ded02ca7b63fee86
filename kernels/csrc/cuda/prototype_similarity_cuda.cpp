// Torch binding of the CUDA prototype-similarity kernels (prototype_similarity.cu, C ABI).
//
// Registers the CUDA implementations of the `posebh` operators defined in
// ../prototype_similarity.cpp (same schemas; that file is always compiled into the same
// extension). Differences from the CPU implementation: float32 compute only, F <= 64 (the
// Triton backend covers float64 and larger F); the embeddings may be float16, bfloat16 or
// float32 (converted on load; float64 embeddings are converted first), and the result is cast to the prototypes' dtype like the reference's. Numerics follow the
// GPU, not MKL: no bit-exactness with the CPU reference, fp32 rounding only.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <tuple>

extern "C" {
const char* posebh_cuda_error_string(int error);
int posebh_prototype_heatmaps_cuda(const void* emb, int emb_dtype, int64_t sb, int64_t sf,
                                   int64_t sp, int64_t B, int64_t F, int64_t P,
                                   const void* protos, int acc_dtype, int64_t M, int64_t K,
                                   void* out, cudaStream_t stream);
int posebh_prototype_heatmaps_backward_cuda(const void* grad, const void* emb, int emb_dtype,
                                            int64_t sb, int64_t sf, int64_t sp, int64_t B,
                                            int64_t F, int64_t P, const void* protos,
                                            int acc_dtype, int64_t M, int64_t K, void* gx,
                                            cudaStream_t stream);
int posebh_prototype_logits_cuda(const void* emb, int emb_dtype, int64_t sn, int64_t sf,
                                 int64_t N, int64_t F, const void* protos, int acc_dtype,
                                 int64_t M, int64_t K, void* logits, int64_t* best,
                                 cudaStream_t stream);
int posebh_prototype_logits_backward_cuda(const void* grad, const void* emb, int emb_dtype,
                                          int64_t sn, int64_t sf, int64_t N, int64_t F,
                                          const void* protos, int acc_dtype, int64_t M, int64_t K,
                                          void* gx, cudaStream_t stream);
}

namespace posebh_kernels_cuda {
namespace {

constexpr double kNormEps = 1e-12;

// The C ABI's dtype codes (see prototype_similarity.cu).
int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return 0;
    case at::kDouble:
      return 1;
    case at::kHalf:
      return 2;
    case at::kBFloat16:
      return 3;
    default:
      TORCH_CHECK(false, "posebh CUDA prototype kernels: unsupported dtype ", t);
  }
  return -1;
}

void check(int error, const char* op) {
  TORCH_CHECK(error == 0, op, " (CUDA): ", posebh_cuda_error_string(error));
}

void check_inputs(const at::Tensor& embeddings, int64_t dims, const at::Tensor& prototypes,
                  int64_t start, int64_t stop, const char* op) {
  TORCH_CHECK(embeddings.dim() == dims, op, ": embeddings must have ", dims, " dimensions");
  TORCH_CHECK(prototypes.dim() == 3 && prototypes.size(1) > 0, op,
              ": prototypes must be [J, M, F] with M > 0");
  TORCH_CHECK(prototypes.size(2) == embeddings.size(1), op, ": embedding dimension mismatch");
  TORCH_CHECK(embeddings.size(1) <= 64, op, ": the CUDA kernels support F <= 64 (Triton: any F)");
  TORCH_CHECK(prototypes.scalar_type() != at::kDouble, op,
              ": the CUDA kernels compute in float32 (float64: the Triton backend)");
  TORCH_CHECK(embeddings.is_cuda() && prototypes.device() == embeddings.device(), op,
              ": expected CUDA tensors on one device");
  TORCH_CHECK(at::isFloatingType(embeddings.scalar_type()) &&
                  at::isFloatingType(prototypes.scalar_type()),
              op, ": expected floating-point tensors");
  TORCH_CHECK(0 <= start && start <= stop && stop <= prototypes.size(0), op,
              ": class range out of bounds");
}

at::ScalarType compute_type(const at::Tensor& prototypes) {
  return prototypes.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// F.normalize(prototypes[start:stop]) in their dtype (the reference's arithmetic), then the
// compute dtype, contiguous [K][M][F].
at::Tensor prepare_prototypes(const at::Tensor& prototypes, int64_t start, int64_t stop) {
  const at::Tensor p = prototypes.slice(0, start, stop);
  const at::Tensor pn = p / p.norm(2, {-1}, /*keepdim=*/true).clamp_min(kNormEps);
  return pn.to(compute_type(prototypes)).contiguous();
}

// Embeddings in a dtype the kernels read (float32, float16, bfloat16), with H·W flattenable
// into one pixel stride.
at::Tensor readable(const at::Tensor& embeddings, at::ScalarType compute) {
  at::Tensor x = embeddings;
  if (x.scalar_type() == at::kDouble) x = x.to(compute);
  if (x.dim() == 4 && x.size(2) > 1 && x.size(3) > 1 && x.stride(2) != x.size(3) * x.stride(3)) {
    x = x.contiguous();
  }
  return x;
}

// The current stream of the current device (the guard has set it).
cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

int64_t pixel_stride(const at::Tensor& x) { return x.size(3) > 1 ? x.stride(3) : x.stride(2); }

at::Tensor heatmaps_cuda(const at::Tensor& embeddings, const at::Tensor& prototypes,
                         int64_t start, int64_t stop) {
  check_inputs(embeddings, 4, prototypes, start, stop, "prototype_heatmaps");
  const c10::cuda::CUDAGuard guard(embeddings.device());
  const at::ScalarType compute = compute_type(prototypes);
  const at::Tensor protos = prepare_prototypes(prototypes, start, stop);
  const at::Tensor x = readable(embeddings, compute);
  const int64_t B = x.size(0), F = x.size(1), H = x.size(2), W = x.size(3), K = stop - start;
  at::Tensor out = at::empty({B, K, H, W}, x.options().dtype(compute));
  check(posebh_prototype_heatmaps_cuda(x.const_data_ptr(), dtype_code(x.scalar_type()),
                                       x.stride(0), x.stride(1), pixel_stride(x), B, F, H * W,
                                       protos.const_data_ptr(), dtype_code(compute),
                                       protos.size(1), K, out.mutable_data_ptr(),
                                       stream()),
        "prototype_heatmaps");
  return out.to(prototypes.scalar_type());
}

at::Tensor heatmaps_backward_cuda(const at::Tensor& grad, const at::Tensor& embeddings,
                                  const at::Tensor& prototypes, int64_t start, int64_t stop) {
  check_inputs(embeddings, 4, prototypes, start, stop, "prototype_heatmaps_backward");
  const c10::cuda::CUDAGuard guard(embeddings.device());
  const at::ScalarType compute = compute_type(prototypes);
  const at::Tensor protos = prepare_prototypes(prototypes, start, stop);
  const at::Tensor x = readable(embeddings, compute);
  const at::Tensor g = grad.to(compute).contiguous();
  const int64_t B = x.size(0), F = x.size(1), H = x.size(2), W = x.size(3), K = stop - start;
  at::Tensor gx = at::zeros({B, F, H, W}, x.options().dtype(compute));
  check(posebh_prototype_heatmaps_backward_cuda(
            g.const_data_ptr(), x.const_data_ptr(), dtype_code(x.scalar_type()), x.stride(0),
            x.stride(1), pixel_stride(x), B, F, H * W, protos.const_data_ptr(),
            dtype_code(compute), protos.size(1), K, gx.mutable_data_ptr(),
            stream()),
        "prototype_heatmaps_backward");
  return gx.to(embeddings.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> logits_cuda(const at::Tensor& embeddings,
                                               const at::Tensor& prototypes, int64_t start,
                                               int64_t stop) {
  check_inputs(embeddings, 2, prototypes, start, stop, "prototype_logits");
  const c10::cuda::CUDAGuard guard(embeddings.device());
  const at::ScalarType compute = compute_type(prototypes);
  const at::Tensor protos = prepare_prototypes(prototypes, start, stop);
  const at::Tensor x = readable(embeddings, compute);
  const int64_t N = x.size(0), F = x.size(1), M = protos.size(1), K = stop - start;
  at::Tensor logits = at::empty({N, K * M}, x.options().dtype(compute));
  at::Tensor best = at::empty({N, K}, x.options().dtype(at::kLong));
  check(posebh_prototype_logits_cuda(x.const_data_ptr(), dtype_code(x.scalar_type()),
                                     x.stride(0), x.stride(1), N, F, protos.const_data_ptr(),
                                     dtype_code(compute), M, K, logits.mutable_data_ptr(),
                                     best.mutable_data_ptr<int64_t>(),
                                     stream()),
        "prototype_logits");
  return {logits.to(prototypes.scalar_type()), best};
}

at::Tensor logits_backward_cuda(const at::Tensor& grad, const at::Tensor& embeddings,
                                const at::Tensor& prototypes, int64_t start, int64_t stop) {
  check_inputs(embeddings, 2, prototypes, start, stop, "prototype_logits_backward");
  const c10::cuda::CUDAGuard guard(embeddings.device());
  const at::ScalarType compute = compute_type(prototypes);
  const at::Tensor protos = prepare_prototypes(prototypes, start, stop);
  const at::Tensor x = readable(embeddings, compute);
  const at::Tensor g = grad.to(compute).contiguous();
  const int64_t N = x.size(0), F = x.size(1), M = protos.size(1), K = stop - start;
  at::Tensor gx = at::zeros({N, F}, x.options().dtype(compute));
  check(posebh_prototype_logits_backward_cuda(
            g.const_data_ptr(), x.const_data_ptr(), dtype_code(x.scalar_type()), x.stride(0),
            x.stride(1), N, F, protos.const_data_ptr(), dtype_code(compute), M, K,
            gx.mutable_data_ptr(), stream()),
        "prototype_logits_backward");
  return gx.to(embeddings.scalar_type());
}

}  // namespace
}  // namespace posebh_kernels_cuda

TORCH_LIBRARY_IMPL(posebh, CUDA, m) {
  m.impl("prototype_heatmaps", &posebh_kernels_cuda::heatmaps_cuda);
  m.impl("prototype_heatmaps_backward", &posebh_kernels_cuda::heatmaps_backward_cuda);
  m.impl("prototype_logits", &posebh_kernels_cuda::logits_cuda);
  m.impl("prototype_logits_backward", &posebh_kernels_cuda::logits_backward_cuda);
}
