// libresnext_nccl.so: NCCL collectives on CUDA device buffers for data-parallel training on GPUs
// (issue 15). A plain C ABI (no napi.h, no CUDA runtime calls: only NCCL's), built by
// scripts/build-nccl.js against NVIDIA's nvidia-nccl-cu13 wheel (scripts/ci-cuda.sh) or a system
// NCCL, and meant to be dlopen()ed beside libresnext_cuda.so, so neither the CPU addon nor the
// CUDA backend links NCCL.
//
// Status: compiled and linked in CI; not run (no GPU there), and not yet wired to the CUDA
// backend's tensors (that needs their device pointers and stream from libresnext_cuda.so). The
// rendezvous would reuse the gloo group's TCP store: rank 0 publishes resnext_nccl_unique_id()'s
// bytes, every rank passes them to resnext_nccl_init().
//
// Every function returns 0 on success, or writes a message into err (err_len bytes) and returns -1.
#include <nccl.h>

#include <cstdio>
#include <cstring>

namespace {
int fail(char* err, size_t len, const char* what, ncclResult_t r) {
  if (err && len) std::snprintf(err, len, "%s failed: %s (NCCL %d)", what, ncclGetErrorString(r), static_cast<int>(r));
  return -1;
}
}  // namespace

extern "C" {

/** NCCL's version code (e.g. 22807 for 2.28.7). */
__attribute__((visibility("default"))) int resnext_nccl_version(int* version, char* err, size_t err_len) {
  ncclResult_t r = ncclGetVersion(version);
  return r == ncclSuccess ? 0 : fail(err, err_len, "ncclGetVersion", r);
}

/** Size of the unique id that rank 0 creates and every rank passes to init. */
__attribute__((visibility("default"))) size_t resnext_nccl_unique_id_bytes() { return sizeof(ncclUniqueId); }

__attribute__((visibility("default"))) int resnext_nccl_unique_id(void* out, char* err, size_t err_len) {
  ncclUniqueId id;
  ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return fail(err, err_len, "ncclGetUniqueId", r);
  std::memcpy(out, &id, sizeof id);
  return 0;
}

/** Joins the communicator (on the current CUDA device). */
__attribute__((visibility("default"))) int resnext_nccl_init(int rank, int size, const void* id, void** comm, char* err, size_t err_len) {
  ncclUniqueId uid;
  std::memcpy(&uid, id, sizeof uid);
  ncclComm_t c = nullptr;
  ncclResult_t r = ncclCommInitRank(&c, size, uid, rank);
  if (r != ncclSuccess) return fail(err, err_len, "ncclCommInitRank", r);
  *comm = c;
  return 0;
}

/** In-place allreduce of n floats on the device, sum or mean (ncclAvg), queued on `stream`. */
__attribute__((visibility("default"))) int resnext_nccl_allreduce_f32(void* comm, float* data, size_t n, int average, void* stream, char* err,
                                                                      size_t err_len) {
  ncclResult_t r = ncclAllReduce(data, data, n, ncclFloat32, average ? ncclAvg : ncclSum, static_cast<ncclComm_t>(comm),
                                 static_cast<cudaStream_t>(stream));
  return r == ncclSuccess ? 0 : fail(err, err_len, "ncclAllReduce", r);
}

/** In-place broadcast of n floats from `root`, queued on `stream`. */
__attribute__((visibility("default"))) int resnext_nccl_broadcast_f32(void* comm, float* data, size_t n, int root, void* stream, char* err,
                                                                      size_t err_len) {
  ncclResult_t r = ncclBroadcast(data, data, n, ncclFloat32, root, static_cast<ncclComm_t>(comm), static_cast<cudaStream_t>(stream));
  return r == ncclSuccess ? 0 : fail(err, err_len, "ncclBroadcast", r);
}

/** Whether an asynchronous error (a dead peer, a timeout) ended the communicator. */
__attribute__((visibility("default"))) int resnext_nccl_check(void* comm, char* err, size_t err_len) {
  ncclResult_t async = ncclSuccess;
  ncclResult_t r = ncclCommGetAsyncError(static_cast<ncclComm_t>(comm), &async);
  if (r != ncclSuccess) return fail(err, err_len, "ncclCommGetAsyncError", r);
  return async == ncclSuccess ? 0 : fail(err, err_len, "a collective", async);
}

/** Aborts (unblocks pending collectives, e.g. after a peer died) and frees the communicator. */
__attribute__((visibility("default"))) int resnext_nccl_abort(void* comm, char* err, size_t err_len) {
  ncclResult_t r = ncclCommAbort(static_cast<ncclComm_t>(comm));
  return r == ncclSuccess ? 0 : fail(err, err_len, "ncclCommAbort", r);
}

__attribute__((visibility("default"))) int resnext_nccl_destroy(void* comm, char* err, size_t err_len) {
  ncclResult_t r = ncclCommDestroy(static_cast<ncclComm_t>(comm));
  return r == ncclSuccess ? 0 : fail(err, err_len, "ncclCommDestroy", r);
}

}  // extern "C"
