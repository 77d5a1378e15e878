{
  "targets": [
    {
      "target_name": "resnext",
      "sources": [
        "native/binding/bind.cc",
        "native/binding/errors.cc",
        "native/binding/module.cc",
        "native/binding/tensor_data.cc",
        "native/binding/tensor_handle.cc",
        "native/core/backend.cc",
        "native/core/executor.cc",
        "native/core/ops.cc",
        "native/core/tensor.cc",
        "native/cpu/conv2d.cc",
        "native/cpu/gemm.cc",
        "native/cpu/gemm_avx2.cc",
        "native/cpu/gemm_avx512.cc",
        "native/cpu/nn_ops.cc",
        "native/cpu/parallel.cc",
        "native/cpu/tensor_ops.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_EXPERIMENTAL", "NAPI_VERSION=2147483647", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "RESNEXT_BACKEND_ABI=<!(node scripts/abi-hash.js --define)"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "libraries": ["-ldl", "-lpthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "MACOSX_DEPLOYMENT_TARGET": "11.0"
      },
      "msvs_settings": {
        "VCCLCompilerTool": { "ExceptionHandling": 1 }
      }
    }
  ]
}
