// torch.library bindings of the CUDA kernels: torch.ops.zokernels.combine_, .lowrank_combine_, .lowrank_delta_add_
// and .philox_words.
// Validation of user input happens once, in zokernels/ops.py; these checks guard the binding's own contract.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <string>
#include <type_traits>
#include <vector>

#include "zo_kernels.h"

namespace {

// A check's message from text, integers and dtypes, built with std::to_string and handed to TORCH_CHECK as one
// string. Not c10::str: it writes integers through a std::ostream, and on the H100 image (GCC 13.3, torch 2.11)
// an int written to a std::ostream inside an extension crashes the process unless libstdc++ is preloaded
// (bench/exp/abi_probe.py), so a failing check killed the process instead of raising.
inline std::string message_part(const char* text) { return text; }
inline std::string message_part(at::ScalarType dtype) { return c10::toString(dtype); }
template <typename I, typename = std::enable_if_t<std::is_integral<I>::value>>
std::string message_part(I value) { return std::to_string(value); }
template <typename... Parts>
std::string message(const Parts&... parts) {
  std::string text;
  (text.append(message_part(parts)), ...);
  return text;
}

zk::DType dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return zk::DType::kFloat32;
    case at::kBFloat16: return zk::DType::kBFloat16;
    case at::kHalf: return zk::DType::kFloat16;
    default: TORCH_CHECK(false, message("zokernels cuda: unsupported dtype ", t.scalar_type()));
  }
}

// The K directions (coefficients and streams: device arrays of K, or `scale` and stream0 + k) and the Philox keys
// of the seed and the rounding seed, into CombineArgs or LowrankArgs.
template <typename Args>
void set_directions(Args& a, const c10::optional<at::Tensor>& coeffs, double scale,
                    const c10::optional<at::Tensor>& streams, int64_t stream0, int64_t K, int64_t k0, int64_t k1,
                    int64_t rk0, int64_t rk1) {
  if (coeffs.has_value()) {
    TORCH_CHECK(coeffs->is_cuda() && coeffs->scalar_type() == at::kFloat && coeffs->is_contiguous() &&
                    coeffs->numel() == K, "zokernels cuda: coeffs must be a contiguous CUDA float32 [K] tensor");
    a.coeffs = coeffs->data_ptr<float>();
  }
  a.scale = static_cast<float>(scale);
  if (streams.has_value()) {
    TORCH_CHECK(streams->is_cuda() && streams->scalar_type() == at::kLong && streams->is_contiguous() &&
                    streams->numel() == K, "zokernels cuda: streams must be a contiguous CUDA int64 [K] tensor");
    a.streams = streams->data_ptr<int64_t>();
  }
  a.stream0 = static_cast<uint32_t>(stream0);
  a.K = static_cast<int>(K);
  a.k0 = static_cast<uint32_t>(k0);
  a.k1 = static_cast<uint32_t>(k1);
  a.rk0 = static_cast<uint32_t>(rk0);
  a.rk1 = static_cast<uint32_t>(rk1);
}

// dsts/srcs: the tensors the table's rows index (one dtype each, at most kMaxTensorsPerLaunch; declared so that
// the mutation is visible to torch.compile and autograd). table: int64 [rows, 6] on the same device, built by
// zokernels/backends/cuda_backend.py for tensors of these sizes.
void combine_(at::TensorList dsts, at::TensorList srcs, const at::Tensor& table, const c10::optional<at::Tensor>& coeffs,
              double scale, const c10::optional<at::Tensor>& streams, int64_t stream0, int64_t K, int64_t k0,
              int64_t k1, int64_t rk0, int64_t rk1, bool gaussian, bool stochastic) {
  TORCH_CHECK(!dsts.empty() && dsts.size() == srcs.size(), "zokernels cuda: dsts and srcs must be non-empty, equal length");
  TORCH_CHECK(dsts.size() <= static_cast<size_t>(zk::kMaxTensorsPerLaunch),
              message("zokernels cuda: at most ", zk::kMaxTensorsPerLaunch, " tensors per launch, got ", dsts.size()));
  TORCH_CHECK(table.is_cuda() && table.scalar_type() == at::kLong && table.is_contiguous() && table.dim() == 2 &&
                  table.size(1) == 6, "zokernels cuda: table must be a contiguous CUDA int64 [rows, 6] tensor");
  TORCH_CHECK(K >= 1, "zokernels cuda: K must be >= 1");
  const c10::cuda::CUDAGuard guard(table.device());
  zk::CombineArgs a{};
  a.dst_dtype = dtype_code(dsts[0]);
  a.src_dtype = dtype_code(srcs[0]);
  a.gaussian = gaussian;
  a.stochastic = stochastic;
  for (size_t t = 0; t < dsts.size(); ++t) {
    TORCH_CHECK(dsts[t].is_cuda() && srcs[t].is_cuda() && dsts[t].is_contiguous() && srcs[t].is_contiguous() &&
                    dsts[t].scalar_type() == dsts[0].scalar_type() && srcs[t].scalar_type() == srcs[0].scalar_type() &&
                    dsts[t].numel() == srcs[t].numel(),
                message("zokernels cuda: dsts/srcs must be contiguous CUDA tensors of one dtype each and equal sizes "
                        "(tensor ", t, ")"));
    a.ptrs.dst[t] = dsts[t].data_ptr();
    a.ptrs.src[t] = srcs[t].data_ptr();
  }
  a.table = table.data_ptr<int64_t>();
  a.rows = table.size(0);
  set_directions(a, coeffs, scale, streams, stream0, K, k0, k1, rk0, rk1);
  const cudaError_t err = zk::launch_combine(a, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, message("zokernels cuda: combine_ launch failed: ", cudaGetErrorString(err)));
}

// weights: the [d_out, d_in] tensors the table's rows index (one dtype, at most kMaxTensorsPerLaunch); bases V_t
// [d_in, r_t] float32; factors: M_t [d_out, r_t] float32, or empty to regenerate M_t from the streams (K >= 1).
// table: int64 [rows, 8] built by zokernels/backends/cuda_backend.py for these shapes.
void lowrank_combine_(at::TensorList weights, at::TensorList bases, at::TensorList factors, const at::Tensor& table,
                      const c10::optional<at::Tensor>& coeffs, double scale, const c10::optional<at::Tensor>& streams,
                      int64_t stream0, int64_t K, int64_t k0, int64_t k1, int64_t rk0, int64_t rk1, bool stochastic,
                      bool tensor_core) {
  TORCH_CHECK(!weights.empty() && weights.size() == bases.size() && (factors.empty() || factors.size() == weights.size()),
              "zokernels cuda: weights, bases (and factors, if any) must be non-empty lists of equal length");
  TORCH_CHECK(weights.size() <= static_cast<size_t>(zk::kMaxTensorsPerLaunch),
              message("zokernels cuda: at most ", zk::kMaxTensorsPerLaunch, " tensors per launch, got ", weights.size()));
  TORCH_CHECK(table.is_cuda() && table.scalar_type() == at::kLong && table.is_contiguous() && table.dim() == 2 &&
                  table.size(1) == 8, "zokernels cuda: table must be a contiguous CUDA int64 [rows, 8] tensor");
  const bool regenerate = factors.empty();
  TORCH_CHECK(!regenerate || K >= 1, "zokernels cuda: K must be >= 1 when the factor is regenerated");
  const c10::cuda::CUDAGuard guard(table.device());
  zk::LowrankArgs a{};
  a.w_dtype = dtype_code(weights[0]);
  a.regenerate = regenerate;
  a.stochastic = stochastic;
  a.tensor_core = tensor_core;
  std::vector<int64_t> d_in(weights.size());  // for the prepared fragments' layout
  for (size_t t = 0; t < weights.size(); ++t) {
    const at::Tensor &w = weights[t], &v = bases[t];
    TORCH_CHECK(w.is_cuda() && w.is_contiguous() && w.dim() == 2 && w.scalar_type() == weights[0].scalar_type(),
                message("zokernels cuda: weights must be contiguous 2-D CUDA tensors of one dtype (tensor ", t, ")"));
    TORCH_CHECK(v.is_cuda() && v.is_contiguous() && v.dim() == 2 && v.scalar_type() == at::kFloat &&
                    v.size(0) == w.size(1) && v.size(1) >= 1 && v.size(1) <= zk::kMaxLowrankRank,
                message("zokernels cuda: bases[", t, "] must be a contiguous CUDA float32 [d_in, r] tensor, 1 <= r <= ",
                        zk::kMaxLowrankRank));
    a.ptrs.w[t] = w.data_ptr();
    a.ptrs.v[t] = v.data_ptr<float>();
    d_in[t] = w.size(1);
    a.max_rank = std::max(a.max_rank, static_cast<int>(v.size(1)));
    if (!regenerate) {
      const at::Tensor& f = factors[t];
      TORCH_CHECK(f.is_cuda() && f.is_contiguous() && f.scalar_type() == at::kFloat && f.dim() == 2 &&
                      f.size(0) == w.size(0) && f.size(1) == v.size(1),
                  message("zokernels cuda: factors[", t, "] must be a contiguous CUDA float32 [d_out, r] tensor"));
      a.ptrs.f[t] = f.data_ptr<float>();
    }
  }
  TORCH_CHECK(!tensor_core || (a.w_dtype != zk::DType::kFloat32 && a.max_rank <= zk::kTcMaxRank),
              message("zokernels cuda: the tensor-core low-rank kernel takes 16-bit weights and ranks <= ",
                      zk::kTcMaxRank, " (got ", weights[0].scalar_type(), ", rank ", a.max_rank, ")"));
  a.table = table.data_ptr<int64_t>();
  a.rows = table.size(0);
  set_directions(a, coeffs, scale, streams, stream0, K, k0, k1, rk0, rk1);
  // the prepared basis fragments' scratch (stream-ordered: the caching allocator reuses it only after the launch)
  const int64_t frag_bytes = zk::lowrank_fragment_layout(a, d_in.data(), static_cast<int>(weights.size()));
  TORCH_CHECK(frag_bytes >= 0, "zokernels cuda: the bases' prepared fragments exceed one launch's 2^31 16-byte "
              "units; split the list");
  at::Tensor frags;
  if (frag_bytes > 0) {
    frags = at::empty({frag_bytes}, table.options().dtype(at::kByte));
    a.ptrs.frags = reinterpret_cast<uint4*>(frags.data_ptr());
  }
  const cudaError_t err = zk::launch_lowrank(a, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, message("zokernels cuda: lowrank_combine_ launch failed: ", cudaGetErrorString(err)));
}

// out [n_rows, d_out] (float32, bf16 or fp16) += scale * xv [n_rows, r] f [d_out, r]^T, both float32; all
// contiguous CUDA tensors on one device.
void lowrank_delta_add_(const at::Tensor& out, const at::Tensor& xv, const at::Tensor& f, double scale) {
  TORCH_CHECK(out.is_cuda() && out.is_contiguous() && out.dim() == 2,
              "zokernels cuda: out must be a contiguous 2-D CUDA tensor");
  TORCH_CHECK(xv.is_cuda() && xv.is_contiguous() && xv.scalar_type() == at::kFloat && xv.dim() == 2 &&
                  xv.size(0) == out.size(0) && xv.size(1) >= 1 && xv.get_device() == out.get_device(),
              "zokernels cuda: xv must be a contiguous float32 [n_rows, r] tensor on out's device, r >= 1");
  TORCH_CHECK(f.is_cuda() && f.is_contiguous() && f.scalar_type() == at::kFloat && f.dim() == 2 &&
                  f.size(0) == out.size(1) && f.size(1) == xv.size(1) && f.get_device() == out.get_device(),
              "zokernels cuda: f must be a contiguous float32 [d_out, r] tensor on out's device");
  const c10::cuda::CUDAGuard guard(out.device());
  zk::DeltaAddArgs a{};
  a.out_dtype = dtype_code(out);
  a.out = out.data_ptr();
  a.xv = xv.data_ptr<float>();
  a.f = f.data_ptr<float>();
  a.scale = static_cast<float>(scale);
  a.n_rows = out.size(0);
  a.d_out = out.size(1);
  a.rank = static_cast<int>(xv.size(1));
  const cudaError_t err = zk::launch_delta_add(a, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, message("zokernels cuda: lowrank_delta_add_ launch failed: ", cudaGetErrorString(err)));
}

// Raw Philox words (known-answer tests): counters int64 [4, n] of 32-bit words -> int64 [4, n].
at::Tensor philox_words(const at::Tensor& counters, int64_t k0, int64_t k1) {
  TORCH_CHECK(counters.is_cuda() && counters.scalar_type() == at::kLong && counters.dim() == 2 && counters.size(0) == 4,
              "zokernels cuda: counters must be a CUDA int64 [4, n] tensor");
  const c10::cuda::CUDAGuard guard(counters.device());
  const at::Tensor c = counters.contiguous();
  at::Tensor out = at::empty_like(c);
  const cudaError_t err = zk::launch_philox(c.data_ptr<int64_t>(), out.data_ptr<int64_t>(), c.size(1),
                                            static_cast<uint32_t>(k0), static_cast<uint32_t>(k1),
                                            c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, message("zokernels cuda: philox launch failed: ", cudaGetErrorString(err)));
  return out;
}

void combine_meta(at::TensorList, at::TensorList, const at::Tensor&, const c10::optional<at::Tensor>&, double,
                  const c10::optional<at::Tensor>&, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool) {}

void lowrank_combine_meta(at::TensorList, at::TensorList, at::TensorList, const at::Tensor&,
                          const c10::optional<at::Tensor>&, double, const c10::optional<at::Tensor>&, int64_t, int64_t,
                          int64_t, int64_t, int64_t, int64_t, bool, bool) {}

void lowrank_delta_add_meta(const at::Tensor&, const at::Tensor&, const at::Tensor&, double) {}

}  // namespace

TORCH_LIBRARY(zokernels, m) {
  m.def("combine_(Tensor(a!)[] dsts, Tensor[] srcs, Tensor table, Tensor? coeffs, float scale, Tensor? streams, "
        "int stream0, int K, int k0, int k1, int rk0, int rk1, bool gaussian, bool stochastic) -> ()");
  m.def("lowrank_combine_(Tensor(a!)[] weights, Tensor[] bases, Tensor[] factors, Tensor table, Tensor? coeffs, "
        "float scale, Tensor? streams, int stream0, int K, int k0, int k1, int rk0, int rk1, bool stochastic, "
        "bool tensor_core) -> ()");
  m.def("lowrank_delta_add_(Tensor(a!) out, Tensor xv, Tensor f, float scale) -> ()");
  m.def("philox_words(Tensor counters, int k0, int k1) -> Tensor");
}

TORCH_LIBRARY_IMPL(zokernels, CUDA, m) {
  m.impl("combine_", &combine_);
  m.impl("lowrank_combine_", &lowrank_combine_);
  m.impl("lowrank_delta_add_", &lowrank_delta_add_);
  m.impl("philox_words", &philox_words);
}

TORCH_LIBRARY_IMPL(zokernels, Meta, m) {
  m.impl("combine_", &combine_meta);
  m.impl("lowrank_combine_", &lowrank_combine_meta);
  m.impl("lowrank_delta_add_", &lowrank_delta_add_meta);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "zokernels CUDA kernels (ops under torch.ops.zokernels)";
  m.attr("max_tensors_per_launch") = zk::kMaxTensorsPerLaunch;  // as built: 512 with CUDA >= 12.1, else 128
  m.def("lowrank_tc_geometry", &zk::lowrank_tc_geometry, "(rows per block, columns per tile) of the tensor-core "
        "low-rank kernel at a padded rank (8, 16, 32 or 64) and rounding (stochastic: True), as built");
  m.attr("lowrank_tc_half_min_rank") = zk::lowrank_tc_half_min_rank();  // fp16 product from this padded rank up
}
