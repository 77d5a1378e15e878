// Batch norm on the GPU: cuDNN's fused kernels in NHWC.
//
// Training uses cudnnBatchNormalizationForwardTrainingEx / BackwardEx with
// CUDNN_BATCHNORM_SPATIAL_PERSISTENT and the ops BN, BN_ACTIVATION (ReLU) or BN_ADD_ACTIVATION
// (residual add + ReLU): measured on an H200 with cuDNN 9.14 these succeed for bf16 and fp32 in
// NHWC, while plain SPATIAL returns NOT_SUPPORTED for the fused ops and is ~50x slower
// (design.md section 5). The fused backward needs the forward's reserve space (the ReLU mask),
// the exact float statistics and beta: forward attaches them to save_invstd (Tensor::saved, the
// backend interface's saved-state payload), so they live exactly as long as the tape keeps
// that tensor for backward, and backward gets them back with it.
// When cuDNN refuses the fused call (NOT_SUPPORTED or BAD_PARAM: only C=256 at 56x56 was ever
// measured in persistent NHWC), or RESNEXT_CUDA_BN_PERSISTENT=0, training falls back to our
// own kernels (two-pass batch statistics, then the same epilogue as eval), and backward uses our
// own kernels too. Persistent mode can overflow silently: the backend queries cuDNN's runtime
// error flag at the next synchronisation or download (CudaBackend::check_bn_runtime).
// Eval always uses our own kernel (cuDNN's inference path in bf16 NHWC was never measured;
// ours covers every epilogue); eval backward (and training backward without a reserve) use own
// kernels.
// Statistics and parameters are float32 for every activation dtype (what cuDNN requires);
// tensors of another dtype are converted through temporaries.
#include <cstdlib>

#include "cuda_backend.h"
#include "policy.h"

namespace rx::cuda {

struct BnReserve : BackendSaved {
  const void *y = nullptr;  // the output this forward wrote: backward must be handed the same
  DeviceBuffer reserve, mean, invstd, beta;
  size_t reserve_bytes = 0;
  Shape shape;
  DType dtype = DType::F32;
  BnAct act = BnAct::None;
  double eps = 0;
};

namespace {

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { check_cudnn(cudnnCreateTensorDescriptor(&d), "cudnnCreateTensorDescriptor"); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
};

struct ActDesc {
  cudnnActivationDescriptor_t d = nullptr;
  ActDesc() {
    check_cudnn(cudnnCreateActivationDescriptor(&d), "cudnnCreateActivationDescriptor");
    check_cudnn(cudnnSetActivationDescriptor(d, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0),
                "cudnnSetActivationDescriptor");
  }
  ~ActDesc() { cudnnDestroyActivationDescriptor(d); }
};

cudnnDataType_t cudnn_type(DType dt) { return dt == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT; }

cudnnBatchNormOps_t bn_ops(BnAct act) {
  return act == BnAct::None ? CUDNN_BATCHNORM_OPS_BN
                            : act == BnAct::ReLU ? CUDNN_BATCHNORM_OPS_BN_ACTIVATION : CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION;
}

const char *bn_op_name(BnAct act) {
  return act == BnAct::None ? "batchNorm2d" : act == BnAct::ReLU ? "batchNormReLU" : "batchNormAddReLU";
}

// Descriptors of one fused batch-norm call (NHWC, SPATIAL_PERSISTENT), shared by the training
// forward and backward so both describe the tensors the same way.
struct FusedBnDescs {
  static constexpr cudnnBatchNormMode_t mode = CUDNN_BATCHNORM_SPATIAL_PERSISTENT;
  TensorDesc x, param;
  ActDesc relu;
  cudnnBatchNormOps_t ops;
  cudnnActivationDescriptor_t act;  // null for plain BN
  cudnnTensorDescriptor_t z;        // the residual's descriptor, null unless BN+add+ReLU
  FusedBnDescs(DType dt, int64_t N, int64_t C, int64_t H, int64_t W, BnAct a, const char *op) : ops(bn_ops(a)) {
    check_cudnn(cudnnSetTensor4dDescriptor(x.d, CUDNN_TENSOR_NHWC, cudnn_type(dt), (int)N, (int)C, (int)H, (int)W), op);
    check_cudnn(cudnnDeriveBNTensorDescriptor(param.d, x.d, mode), op);
    act = a == BnAct::None ? nullptr : relu.d;
    z = a == BnAct::AddReLU ? x.d : nullptr;
  }
};

void check_bn_dtype(DType dt, const char *op) {
  if (dt != DType::F32 && dt != DType::BF16)
    fail(ErrorCode::DType, op, "input", "float32 or bfloat16 on cuda (cuDNN's fused batch norm)", dtype_name(dt));
}

// A writable float32 view of a statistics tensor: the tensor itself or a converted temporary
// that write_back() copies home.
struct F32Param {
  CudaBackend &be;
  Tensor &t;
  DeviceBuffer tmp;
  float *p = nullptr;
  F32Param(CudaBackend &b, Tensor &t, bool load) : be(b), t(t) {
    if (t.dtype() == DType::F32) {
      p = t.data<float>();
      return;
    }
    tmp = DeviceBuffer(b, t.numel() * sizeof(float));
    p = tmp.as<float>();
    if (load) launch_cast(t.raw(), t.dtype(), p, DType::F32, t.numel(), b.stream());
  }
  void write_back() {
    if (tmp.get()) be.store_f32(p, t);
  }
};

}  // namespace

void batch_norm_forward(const Tensor &x, const Tensor &gamma, const Tensor &beta, const Tensor *residual,
                                     Tensor &running_mean, Tensor &running_var, Tensor &y, Tensor &save_mean,
                                     Tensor &save_invstd, const BatchNormArgs &a) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  const char *op = bn_op_name(a.act);
  check_bn_dtype(x.dtype(), op);
  int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), rows = N * H * W;
  DeviceBuffer tx, tres, tg, tb;
  const void *px = be.nhwc_data(x, tx);
  const void *pres = residual ? be.nhwc_data(*residual, tres) : nullptr;
  const float *pg = be.f32_data(gamma, tg), *pb = be.f32_data(beta, tb);
  F32Param rm(be, running_mean, true), rv(be, running_var, true);
  F32Param sm(be, save_mean, false), si(be, save_invstd, false);
  y.set_layout(Layout::ChannelsLast);

  if (!a.training) {
    launch_bn_eval_forward(x.dtype(), px, pres, y.raw(), pg, pb, rm.p, rv.p, a.eps, a.act, rows, C, sm.p, si.p,
                           be.stream_);
    sm.write_back();
    si.write_back();
    return;
  }
  // Our own training kernels: when persistent mode is switched off or cuDNN refuses the call.
  auto own_training = [&] {
    DeviceBuffer scratch(be, 2 * C * sizeof(float));
    launch_bn_train_forward(x.dtype(), px, pres, y.raw(), pg, pb, rm.p, rv.p, a.momentum, a.eps, a.act, rows, C, sm.p,
                            si.p, scratch.as<float>(), be.stream_);
    rm.write_back();
    rv.write_back();
    sm.write_back();
    si.write_back();
  };
  if (!policy::bn_persistent_enabled(std::getenv("RESNEXT_CUDA_BN_PERSISTENT")) || rows * C == 0) {
    own_training();
    return;
  }

  if (a.eps < CUDNN_BN_MIN_EPSILON) {  // below cuDNN's minimum: our kernels take any eps, like the CPU
    own_training();
    return;
  }
  FusedBnDescs bn(x.dtype(), N, C, H, W, a.act, op);
  const cudnnBatchNormMode_t mode = FusedBnDescs::mode;
  cudnnBatchNormOps_t ops = bn.ops;
  cudnnTensorDescriptor_t xd = bn.x.d, pd = bn.param.d;
  cudnnActivationDescriptor_t ad = bn.act;
  cudnnTensorDescriptor_t zd = bn.z;
  size_t ws_bytes = 0, rs_bytes = 0;
  cudnnStatus_t q = cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(be.cudnn_, mode, ops, xd, zd, xd, pd, ad,
                                                                            &ws_bytes);
  if (q == CUDNN_STATUS_SUCCESS) q = cudnnGetBatchNormalizationTrainingExReserveSpaceSize(be.cudnn_, mode, ops, ad, xd, &rs_bytes);
  if (policy::bn_falls_back(q)) {
    own_training();
    return;
  }
  check_cudnn(q, op);
  auto r = std::make_shared<BnReserve>();
  r->reserve_bytes = rs_bytes;
  if (rs_bytes) r->reserve = DeviceBuffer(be, rs_bytes);
  r->mean = DeviceBuffer(be, C * sizeof(float));
  r->invstd = DeviceBuffer(be, C * sizeof(float));
  r->beta = DeviceBuffer(be, C * sizeof(float));
  r->shape = x.shape();
  r->dtype = x.dtype();
  r->act = a.act;
  r->eps = a.eps;
  DeviceBuffer ws;
  if (ws_bytes) ws = DeviceBuffer(be, ws_bytes);
  float one = 1, zero = 0;
  // cuDNN's running variance uses the unbiased estimate and the factor is PyTorch's momentum.
  // cuDNN checks its arguments before it launches anything, so after a refusal the running
  // statistics are expected to be untouched and the fallback starts from them (not measured).
  cudnnStatus_t st = be.retry_on_alloc_failure([&] {
    return cudnnBatchNormalizationForwardTrainingEx(be.cudnn_, mode, ops, &one, &zero, xd, px, zd, pres, xd, y.raw(),
                                                    pd, pg, pb, a.momentum, rm.p, rv.p, a.eps, r->mean.get(),
                                                    r->invstd.get(), ad, ws.get(), ws_bytes, r->reserve.get(), rs_bytes);
  });
  if (policy::bn_falls_back(st)) {
    own_training();
    return;
  }
  check_cudnn(st, op);
  be.bn_persistent_pending_ = true;
  check_cuda(cudaMemcpyAsync(r->beta.get(), pb, C * sizeof(float), cudaMemcpyDeviceToDevice, be.stream_), op);
  check_cuda(cudaMemcpyAsync(sm.p, r->mean.get(), C * sizeof(float), cudaMemcpyDeviceToDevice, be.stream_), op);
  check_cuda(cudaMemcpyAsync(si.p, r->invstd.get(), C * sizeof(float), cudaMemcpyDeviceToDevice, be.stream_), op);
  rm.write_back();
  rv.write_back();
  sm.write_back();
  si.write_back();
  r->y = y.raw();
  save_invstd.set_saved(std::move(r));
}
const bool batch_norm_forward_set = set_kernel(cuda_kernels().batch_norm_forward, &batch_norm_forward);

void batch_norm_backward(const Tensor &gy, const Tensor &x, const Tensor &y, const Tensor &gamma,
                                      const Tensor &save_mean, const Tensor &save_invstd, Tensor &gx, Tensor &ggamma,
                                      Tensor &gbeta, Tensor *gresidual, const BatchNormArgs &a) {
  CudaBackend &be = CudaBackend::get();
  std::lock_guard<std::recursive_mutex> lock_(be.mu_);
  std::string op_s = std::string(bn_op_name(a.act)) + "_backward";
  const char *op = op_s.c_str();
  check_bn_dtype(x.dtype(), op);
  int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), rows = N * H * W;
  DeviceBuffer tgy, tx, ty, tg;
  const void *pgy = be.nhwc_data(gy, tgy), *px = be.nhwc_data(x, tx), *py = be.nhwc_data(y, ty);
  const float *pgamma = be.f32_data(gamma, tg);
  F32Param gg(be, ggamma, false), gb(be, gbeta, false);
  gx.set_layout(Layout::ChannelsLast);
  if (gresidual) gresidual->set_layout(Layout::ChannelsLast);

  // What our training forward saved, if these statistics came from it for this very input.
  BnReserve *r = dynamic_cast<BnReserve *>(save_invstd.saved());
  if (r && !(r->shape == x.shape() && r->dtype == x.dtype() && r->act == a.act && r->eps == a.eps && r->y == y.raw() && py == y.raw()))
    r = nullptr;

  if (a.training && r) {
    FusedBnDescs bn(x.dtype(), N, C, H, W, a.act, op);
    const cudnnBatchNormMode_t mode = FusedBnDescs::mode;
    cudnnBatchNormOps_t ops = bn.ops;
    cudnnTensorDescriptor_t xd = bn.x.d, pd = bn.param.d;
    cudnnActivationDescriptor_t ad = bn.act;
    cudnnTensorDescriptor_t dzd = bn.z;
    size_t ws_bytes = 0;
    check_cudnn(cudnnGetBatchNormalizationBackwardExWorkspaceSize(be.cudnn_, mode, ops, xd, xd, xd, dzd, xd, pd,
                                                                  ad, &ws_bytes),
                op);
    DeviceBuffer ws;
    if (ws_bytes) ws = DeviceBuffer(be, ws_bytes);
    float one = 1, zero = 0;
    check_cudnn(be.retry_on_alloc_failure([&] {
      return cudnnBatchNormalizationBackwardEx(be.cudnn_, mode, ops, &one, &zero, &one, &zero, xd, px, xd, py, xd, pgy,
                                               dzd, gresidual ? gresidual->raw() : nullptr, xd, gx.raw(), pd, pgamma,
                                               r->beta.get(), gg.p, gb.p, a.eps, r->mean.get(), r->invstd.get(), ad,
                                               ws.get(), ws_bytes, r->reserve.get(), r->reserve_bytes);
    }),
                op);
    be.bn_persistent_pending_ = true;
  } else {
    // Eval mode, or a y that did not come from our training forward: own kernels with the saved
    // statistics the op layer passes (exact float ones when we still hold them).
    DeviceBuffer tm, ti, sums(be, 2 * C * sizeof(float));
    const float *pm = r ? r->mean.as<float>() : be.f32_data(save_mean, tm);
    const float *pi = r ? r->invstd.as<float>() : be.f32_data(save_invstd, ti);
    launch_bn_backward(x.dtype(), pgy, px, py, pgamma, pm, pi, a.training, a.act, rows, C, gx.raw(),
                       gresidual ? gresidual->raw() : nullptr, gg.p, gb.p, sums.as<float>(), be.stream_);
  }
  gg.write_back();
  gb.write_back();
}
const bool batch_norm_backward_set = set_kernel(cuda_kernels().batch_norm_backward, &batch_norm_backward);

}  // namespace rx::cuda
