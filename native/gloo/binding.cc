// The N-API face of the gloo collectives (collective.h): resnext_gloo.node, a small addon of its
// own so the CPU addon never links gloo (a base install gains no dependency). Loaded with
// require() (dlopen) by lib/train/distributed/gloo.ts only when a gloo process group is made.
//
//   connect({ rank, size, storeHost, storePort, hostname, timeoutMs }) -> Promise<Group>
//   group.allreduce(f32, average) / broadcast(f32, root) / barrier()    -> Promise<void>, in place
//   group.allreduceSync / broadcastSync / barrierSync                   -> blocks the JS thread
//   group.close()
// Async collectives run on the group's own thread in submission order; the typed array is held
// by a reference until its collective ends. Errors reject with the message from collective.cc.
#include <napi.h>

#include <future>
#include <memory>

#include "collective.h"

namespace {

using resnext_dist::Group;
using resnext_dist::Job;

class ConnectWorker : public Napi::AsyncWorker {
 public:
  ConnectWorker(Napi::Env env, int rank, int size, std::string host, int port, std::string hostname, int timeoutMs)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), rank_(rank), size_(size),
        host_(std::move(host)), port_(port), hostname_(std::move(hostname)), timeoutMs_(timeoutMs) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      group_ = std::make_shared<Group>(rank_, size_, host_, port_, hostname_, std::chrono::milliseconds(timeoutMs_));
    } catch (const std::exception& e) {
      SetError(std::string("rendezvous of rank ") + std::to_string(rank_) + " of " + std::to_string(size_) + " failed: " + e.what());
    }
  }
  void OnOK() override;
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int rank_, size_;
  std::string host_;
  int port_;
  std::string hostname_;
  int timeoutMs_;
  std::shared_ptr<Group> group_;
};

class GroupWrap : public Napi::ObjectWrap<GroupWrap> {
 public:
  static Napi::FunctionReference* ctor;
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f = DefineClass(env, "GlooGroup", {
        InstanceMethod("allreduce", &GroupWrap::Allreduce),
        InstanceMethod("allreduceSync", &GroupWrap::AllreduceSync),
        InstanceMethod("broadcast", &GroupWrap::Broadcast),
        InstanceMethod("broadcastSync", &GroupWrap::BroadcastSync),
        InstanceMethod("barrier", &GroupWrap::Barrier),
        InstanceMethod("barrierSync", &GroupWrap::BarrierSync),
        InstanceMethod("close", &GroupWrap::Close),
    });
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }
  explicit GroupWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GroupWrap>(info) {}
  ~GroupWrap() override {
    if (group_) group_->close();
  }
  std::shared_ptr<Group> group_;

 private:
  Group& group(Napi::Env env) {
    if (!group_) throw Napi::Error::New(env, "the process group is closed");
    return *group_;
  }
  static Napi::Float32Array floats(const Napi::CallbackInfo& info, const char* op) {
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw Napi::TypeError::New(info.Env(), std::string(op) + ": data expected a Float32Array");
    return info[0].As<Napi::Float32Array>();
  }

  // Runs `run` on the group's thread; resolves or rejects the returned promise on the JS thread.
  Napi::Value Async(Napi::Env env, Napi::Value keepAlive, std::function<void()> run) {
    auto deferred = std::make_shared<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
    auto ref = std::make_shared<Napi::Reference<Napi::Value>>(Napi::Persistent(keepAlive));
    auto tsfn = std::make_shared<Napi::ThreadSafeFunction>(
        Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "resnext_gloo", 0, 1));
    Job job;
    job.run = std::move(run);
    job.done = [deferred, ref, tsfn](const std::string& error) {
      auto* err = new std::string(error);
      tsfn->BlockingCall(err, [deferred, ref](Napi::Env env, Napi::Function, std::string* e) {
        if (e->empty()) deferred->Resolve(env.Undefined());
        else deferred->Reject(Napi::Error::New(env, *e).Value());
        delete e;
        ref->Reset();
      });
      tsfn->Release();
    };
    group(env).submit(std::move(job));
    return deferred->Promise();
  }

  // Runs `run` on the group's thread after the queued collectives and waits for it.
  void Sync(Napi::Env env, std::function<void()> run) {
    auto p = std::make_shared<std::promise<std::string>>();
    auto f = p->get_future();
    Job job;
    job.run = std::move(run);
    job.done = [p](const std::string& error) { p->set_value(error); };
    group(env).submit(std::move(job));
    std::string err = f.get();
    if (!err.empty()) throw Napi::Error::New(env, err);
  }

  Napi::Value Allreduce(const Napi::CallbackInfo& info) {
    auto a = floats(info, "allreduce");
    bool avg = info.Length() > 1 && info[1].ToBoolean();
    float* d = a.Data();
    size_t n = a.ElementLength();
    Group* g = &group(info.Env());
    return Async(info.Env(), a, [g, d, n, avg] { g->allreduce(d, n, avg); });
  }
  Napi::Value AllreduceSync(const Napi::CallbackInfo& info) {
    auto a = floats(info, "allreduceSync");
    bool avg = info.Length() > 1 && info[1].ToBoolean();
    float* d = a.Data();
    size_t n = a.ElementLength();
    Group* g = &group(info.Env());
    Sync(info.Env(), [g, d, n, avg] { g->allreduce(d, n, avg); });
    return info.Env().Undefined();
  }
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    auto a = floats(info, "broadcast");
    int root = info.Length() > 1 ? info[1].ToNumber().Int32Value() : 0;
    float* d = a.Data();
    size_t n = a.ElementLength();
    Group* g = &group(info.Env());
    return Async(info.Env(), a, [g, d, n, root] { g->broadcast(d, n, root); });
  }
  Napi::Value BroadcastSync(const Napi::CallbackInfo& info) {
    auto a = floats(info, "broadcastSync");
    int root = info.Length() > 1 ? info[1].ToNumber().Int32Value() : 0;
    float* d = a.Data();
    size_t n = a.ElementLength();
    Group* g = &group(info.Env());
    Sync(info.Env(), [g, d, n, root] { g->broadcast(d, n, root); });
    return info.Env().Undefined();
  }
  Napi::Value Barrier(const Napi::CallbackInfo& info) {
    Group* g = &group(info.Env());
    return Async(info.Env(), Napi::Object::New(info.Env()), [g] { g->barrier(); });
  }
  Napi::Value BarrierSync(const Napi::CallbackInfo& info) {
    Group* g = &group(info.Env());
    Sync(info.Env(), [g] { g->barrier(); });
    return info.Env().Undefined();
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (group_) {
      group_->close();
      group_.reset();
    }
    return info.Env().Undefined();
  }
};

Napi::FunctionReference* GroupWrap::ctor = nullptr;

void ConnectWorker::OnOK() {
  Napi::Object o = GroupWrap::ctor->New({});
  GroupWrap::Unwrap(o)->group_ = group_;
  o.Set("rank", group_->rank());
  o.Set("size", group_->size());
  deferred_.Resolve(o);
}

Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "connect: options expected an object");
  auto o = info[0].As<Napi::Object>();
  auto num = [&](const char* k) { return o.Get(k).ToNumber().Int32Value(); };
  auto str = [&](const char* k) { return o.Get(k).ToString().Utf8Value(); };
  auto* w = new ConnectWorker(env, num("rank"), num("size"), str("storeHost"), num("storePort"), str("hostname"), num("timeoutMs"));
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("GlooGroup", GroupWrap::Init(env));
  exports.Set("connect", Napi::Function::New(env, Connect));
  exports.Set("abi", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(resnext_gloo, Init)
