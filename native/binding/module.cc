// The addon's module: the bind list. One line per export; bind<> (bind.h) converts each
// parameter by its C++ type and records the signature that lib/native/addon.generated.ts is
// made from. Validation is the core op's job (core/ops.cc), not the binding's.
#include <napi.h>

#include "../core/backend.h"
#include "../core/ops.h"
#include "bind.h"
#include "errors.h"
#include "tensor_data.h"
#include "tensor_handle.h"

namespace rxb {
namespace {

namespace ops = rx::ops;

void bind_all(BindList &b) {
  b.manual("setErrorClass", set_error_class, {{"ctor", "new (message: string, code: never) => Error"}}, "void");
  b.manual("deferExternalMemory", TensorHandle::DeferExternalMemory, {{"on", "boolean"}}, "void");

  // Creation and movement
  b.manual("fromData", from_data,
           {{"data", "Float32Array | Float64Array | Int32Array"}, {"shape", "number[]"}, {"dtype", "DTypeName"},
            {"device", "DeviceName"}},
           "TensorHandle");
  b.manual("readData", read_data, {{"t", "TensorHandle"}}, "Float32Array | Float64Array | Int32Array");
  b.manual("readDataAsync", read_data_async, {{"t", "TensorHandle"}},
           "Promise<Float32Array | Float64Array | Int32Array>");
  b.bind<&ops::full>("full", "shape", "dtype", "device", "value");
  b.bind<&ops::zeros>("zeros", "shape", "dtype", "device");
  b.bind<&ops::ones>("ones", "shape", "dtype", "device");
  b.bind<&ops::empty>("empty", "shape", "dtype", "device");
  b.bind<&ops::rand>("rand", "shape", "dtype", "device", "low", "high", "seed", "offset");
  b.bind<&ops::randn>("randn", "shape", "dtype", "device", "mean", "std", "seed", "offset");
  b.bind<&ops::to>("to", "tensor", "device");
  b.bind<&ops::copy_>("copy_", "source", "destination");
  b.bind<&ops::fill_>("fill_", "tensor", "value");
  b.bind<&ops::cast>("cast", "tensor", "dtype");
  b.bind<&ops::reshape>("reshape", "tensor", "shape");
  b.bind<&ops::permute>("permute", "tensor", "dims");
  b.bind<&ops::expand>("expand", "tensor", "shape");

  // Network layers, with their backward kernels
  b.bind<&ops::conv2d_forward>("conv2dForward", "input", "weight", "bias", "options");
  b.bind<&ops::conv2d_bn_eval>("conv2dBnEval", "input", "weight", "bnWeight", "bnBias", "runningMean", "runningVar",
                               "residual", "options", "bnOptions");
  b.bind<&ops::conv2d_backward_data>("conv2dBackwardData", "grad_output", "weight", "input_shape", "options");
  b.bind<&ops::conv2d_backward_filter>("conv2dBackwardFilter", "grad_output", "input", "weight_shape", "options");
  b.bind<&ops::batch_norm_forward>("batchNormForward", "input", "weight", "bias", "residual", "runningMean",
                                   "runningVar", "options");
  b.bind<&ops::batch_norm_backward>("batchNormBackward", "grad_output", "input", "output", "weight", "saveMean",
                                    "saveInvstd", "options");
  b.bind<&ops::relu>("relu", "input");
  b.bind<&ops::relu_backward>("reluBackward", "grad_output", "output");
  b.bind<&ops::binary>("binary", "op", "a", "b");
  b.bind<&ops::scalar>("scalar", "op", "input", "scalar");
  b.bind<&ops::unary>("unary", "op", "input");
  b.bind<&ops::sum>("sum", "input", "dims", "keepdim");
  b.bind<&ops::max_pool2d_forward>("maxPool2dForward", "input", "options");
  b.bind<&ops::max_pool2d_backward>("maxPool2dBackward", "grad_output", "indices", "input_shape");
  b.bind<&ops::global_avg_pool2d_forward>("globalAvgPool2dForward", "input");
  b.bind<&ops::global_avg_pool2d_backward>("globalAvgPool2dBackward", "grad_output", "input_shape");
  b.bind<&ops::matmul>("matmul", "a", "b", "transposeA", "transposeB");
  b.bind<&ops::linear>("linear", "input", "weight", "bias");
  b.bind<&ops::cross_entropy_forward>("crossEntropyForward", "logits", "targets", "labelSmoothing");
  b.bind<&ops::cross_entropy_backward>("crossEntropyBackward", "probs", "targets", "labelSmoothing", "grad_output");
  b.bind<&ops::topk>("topk", "input", "k");
  b.bind<&ops::argmax>("argmax", "input");
  b.bind<&ops::sgd_step>("sgdStep", "param", "grad", "momentumBuffer", "options");

  // Runtime
  b.bind<&ops::memory>("memory", "device");
  b.bind<&ops::synchronize>("synchronize", "device");
  b.bind<&ops::device_info>("deviceInfo", "device");
  b.bind<&ops::num_threads>("numThreads");
  b.bind<&ops::set_num_threads>("setNumThreads", "threads");
  b.bind<&ops::cpu_features>("cpuFeatures");
  b.bind<&rx::load_cuda_backend>("loadCuda", "library");

  // The TS types the signatures name.
  b.struct_type<rx::Conv2dArgs>();
  b.struct_type<rx::Pool2dArgs>();
  b.struct_type<rx::BatchNormArgs>();
  b.struct_type<rx::SgdArgs>();
  b.struct_type<rx::MemoryStats>();
  b.struct_type<rx::CudaLoadResult>();
  b.struct_type<rx::ops::CpuFeatures>();
  b.enum_type<rx::BinaryOp>();
  b.enum_type<rx::ScalarOp>();
  b.enum_type<rx::UnaryOp>();
  b.enum_type<rx::BnAct>();
}

}  // namespace
}  // namespace rxb

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  using namespace rxb;
  auto *data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  Napi::Function ctor = TensorHandle::Init(env);
  data->tensor_ctor = Napi::Persistent(ctor);
  exports.Set("TensorHandle", ctor);
  BindList b(env, exports);
  bind_all(b);
  b.finish();
  return exports;
}

NODE_API_MODULE(resnext, Init)
