// The c10d side of data-parallel training. Tensors move only through a c10d backend:
// ProcessGroupGloo, or ProcessGroupNCCL between GPUs (collective_backend.h); the TCPStore
// carries the rendezvous, a few strings, and each rank's heartbeat, which is
// how a rank whose collective failed tells which worker stopped.
//
// The wheel's libtorch_cpu has Gloo built in but ships no Gloo headers; Debian's
// libgloo-dev provides the declarations ProcessGroupGloo.hpp needs (we only pass
// pointers to Gloo's types through). ProcessGroupGloo.hpp is compiled only under:
#define USE_C10D_GLOO 1
#include "train/distributed.h"

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "train/collective_backend.h"
#include "util/cuda_backend.h"

namespace peft {

namespace {

constexpr auto kBeat = std::chrono::milliseconds(500);

// The first line, without Gloo's generic advice ("This is typically caused by ...").
std::string first_line(const std::string& s) {
  std::string l = s.substr(0, s.find('\n'));
  if (const auto advice = l.find(". This is typically"); advice != std::string::npos) l.resize(advice);
  return l;
}

int env_int(const char* name, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) throw std::invalid_argument(std::string("data-parallel: environment variable ") + name + " is not set");
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end || x < lo || x > hi)
    throw std::invalid_argument(std::string("data-parallel: ") + name + "=" + v + " must be an integer in [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int>(x);
}

c10::intrusive_ptr<c10d::TCPStore> connect_store(const DistEnv& env, bool server, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.master_port);
  o.isServer = server;
  o.numWorkers = env.world_size;
  o.waitWorkers = false;
  o.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
}

std::shared_ptr<::gloo::transport::Device> gloo_device(const DistEnv& env) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost")
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

std::string rank_device(const std::string& device, const DistEnv& env, int device_count) {
  if (env.world_size == 1 || device != "cuda" || device_count < 1) return device;
  return "cuda:" + std::to_string(env.local_rank % device_count);
}

std::chrono::seconds ddp_timeout() {
  return std::chrono::seconds(std::getenv("PEFT_DDP_TIMEOUT_S") ? env_int("PEFT_DDP_TIMEOUT_S", 1, 86400) : 300);
}

DistEnv DistEnv::from_environment() {
  DistEnv e;
  e.timeout = ddp_timeout();
  const char* ws = std::getenv("WORLD_SIZE");
  if (!ws || !*ws) return e;
  e.world_size = env_int("WORLD_SIZE", 1, 65536);
  if (e.world_size == 1) return e;
  e.rank = env_int("RANK", 0, e.world_size - 1);
  e.local_rank = std::getenv("LOCAL_RANK") ? env_int("LOCAL_RANK", 0, e.world_size - 1) : e.rank;
  e.local_world_size = std::getenv("LOCAL_WORLD_SIZE") ? env_int("LOCAL_WORLD_SIZE", 1, e.world_size) : e.world_size;
  const char* addr = std::getenv("MASTER_ADDR");
  if (!addr || !*addr) throw std::invalid_argument("data-parallel: environment variable MASTER_ADDR is not set");
  e.master_addr = addr;
  e.master_port = env_int("MASTER_PORT", 1, 65535);
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  e.launcher_hosts_store = agent && std::string(agent) == "True";
  return e;
}

struct DataParallel::Impl {
  c10::intrusive_ptr<c10d::TCPStore> tcp;  // rank 0's may host the store: kept alive
  c10::intrusive_ptr<c10d::Store> store;   // under the prefix "peft/"
  c10::intrusive_ptr<c10d::Backend> pg;
  CollectiveBackend kind = CollectiveBackend::kGloo;
  at::Device device = at::kCPU;  // where the backend moves tensors
  // The heartbeat: its own connection, bumping "hb/<rank>" every kBeat.
  c10::intrusive_ptr<c10d::Store> beat_store;
  std::thread beat;
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  std::string verdict;  // "failed", as last seen: for when the store's host is gone too

  // Here, not in ~DataParallel: a constructor that throws after the thread started
  // destroys only its members.
  ~Impl() {
    if (pg && kind == CollectiveBackend::kNccl) {
      try {
        pg->shutdown();  // else ProcessGroupNCCL warns at exit that nobody destroyed it
      } catch (...) {
      }
    }
    {
      std::lock_guard<std::mutex> lk(m);
      stop = true;
    }
    cv.notify_all();
    if (beat.joinable()) beat.join();
  }

  void heartbeat(int rank) {
    std::unique_lock<std::mutex> lk(m);
    while (!stop) {
      lk.unlock();
      std::string seen;
      try {
        beat_store->add("hb/" + std::to_string(rank), 1);
        if (beat_store->check({"failed"})) {
          const auto v = beat_store->get("failed");
          seen.assign(v.begin(), v.end());
        }
      } catch (const std::exception&) {
        return;  // the store is gone: a diagnosis will say so
      }
      lk.lock();
      if (!seen.empty()) verdict = seen;
      cv.wait_for(lk, kBeat, [&] { return stop; });
    }
  }
};

DataParallel::DataParallel(const DistEnv& env, const std::string& device) : env_(env) {
  if (env_.world_size == 1) return;
  if (device.rfind("cuda", 0) == 0) {
    // ProcessGroupNCCL reads these when it is made; set here, before the heartbeat thread
    // starts. A blocking wait makes work->wait() return only when the collective is done,
    // and throw when it failed or ran past the timeout (a rank died), which guarded() turns
    // into one line naming the rank; clean-up-only error handling aborts the communicators
    // without tearing the process down, so that line gets out. A user's own setting wins.
    setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
    setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2", 0);
  }
  impl_ = std::make_unique<Impl>();
  const bool server = env_.rank == 0 && !env_.launcher_hosts_store;
  impl_->tcp = connect_store(env_, server, env_.timeout);
  // A restart under torchrun reuses its store: each attempt gets its own keys.
  const char* attempt = std::getenv("TORCHELASTIC_RESTART_COUNT");
  const std::string prefix = std::string("peft") + (attempt ? attempt : "");
  impl_->store = c10::make_intrusive<c10d::PrefixStore>(prefix, impl_->tcp);
  impl_->beat_store = c10::make_intrusive<c10d::PrefixStore>(prefix, connect_store(env_, false, env_.timeout));
  impl_->beat = std::thread([impl = impl_.get(), rank = env_.rank] { impl->heartbeat(rank); });
  try {
    open_group(device);
  } catch (const std::exception& e) {
    report_failure(e.what());  // the others stop naming this rank, not at their timeout
    throw;
  }
}

// Rank 0 chooses the backend, and every rank takes its choice: a group whose ranks
// disagreed would hang in its first collective.
void DataParallel::open_group(const std::string& device) {
  const bool cuda = device.rfind("cuda", 0) == 0;
  const int gpus = cuda && load_cuda_backend().empty() ? at::detail::getCUDAHooks().deviceCount() : 0;
  const char* requested = std::getenv("PEFT_DDP_BACKEND");
  const CollectiveBackend mine = choose_backend(device, env_, requested, gpus);
  const std::string chosen = share("backend", backend_name(mine));
  auto& impl = *impl_;
  impl.kind = chosen == backend_name(CollectiveBackend::kNccl) ? CollectiveBackend::kNccl : CollectiveBackend::kGloo;
  auto store = c10::make_intrusive<c10d::PrefixStore>(impl.kind == CollectiveBackend::kNccl ? "nccl" : "gloo",
                                                      impl.store);
  if (impl.kind == CollectiveBackend::kNccl) {
    if (!cuda)
      throw std::runtime_error("data-parallel: rank 0 chose NCCL, but rank " + std::to_string(env_.rank) +
                               " trains on '" + device + "' (set PEFT_DDP_BACKEND the same on every rank)");
    // "cuda" is the current device, which the trainer sets to this rank's GPU.
    impl.device = at::Device(device);
    impl.pg = open_nccl_group(store, env_.rank, env_.world_size, env_.timeout);
    return;
  }
  auto opts = c10d::ProcessGroupGloo::Options::create(env_.timeout);
  opts->devices.push_back(gloo_device(env_));
  guarded("rendezvous", [&] {
    impl.pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, env_.rank, env_.world_size, opts);
  });
}

std::string DataParallel::backend() const { return impl_ ? backend_name(impl_->kind) : ""; }

DataParallel::~DataParallel() = default;

template <class F>
void DataParallel::guarded(const char* op, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    throw std::runtime_error(diagnose(op, first_line(e.what())));
  }
}

// Who stopped: a rank that reported its own failure, else the ranks whose heartbeat no
// longer moves. The first diagnosis is stored, so that later ones (of ranks that failed
// because this one exited) name the same rank.
std::string DataParallel::diagnose(const char* op, const std::string& error) {
  const std::string here = "data-parallel " + std::string(op) + " failed on rank " + std::to_string(env_.rank) +
                           " of " + std::to_string(env_.world_size) + ": ";
  std::string who;
  try {
    auto& s = *impl_->store;
    s.setTimeout(std::chrono::seconds(5));
    auto beats = [&] {
      std::vector<int64_t> v;
      for (int r = 0; r < env_.world_size; ++r) v.push_back(s.add("hb/" + std::to_string(r), 0));
      return v;
    };
    if (!s.check({"failed"})) {
      const auto before = beats();
      std::this_thread::sleep_for(kBeat * 5);
      const auto after = beats();
      std::string stale;
      for (int r = 0; r < env_.world_size; ++r)
        if (r != env_.rank && after[r] == before[r]) stale += (stale.empty() ? "" : ", ") + std::to_string(r);
      const std::string guess = stale.empty() ? "every rank is still alive (a collective waited past the timeout of " +
                                                    std::to_string(env_.timeout.count()) + " s?)"
                                              : (stale.find(',') == std::string::npos ? "rank " : "ranks ") + stale +
                                                    " stopped (died or hangs)";
      s.compareSet("failed", "", guess);
    }
    const auto v = s.get("failed");
    who = std::string(v.begin(), v.end());
    linger_if_store_host();
  } catch (const std::exception&) {
    std::lock_guard<std::mutex> lk(impl_->m);
    who = !impl_->verdict.empty()        ? impl_->verdict
          : env_.launcher_hosts_store ? "the launcher's rendezvous store is gone (the launcher died)"
                                    : "rank 0 stopped (died or hangs; it hosts the rendezvous store)";
  }
  return here + who + " (" + error + ")";
}

void DataParallel::report_failure(const std::string& what) noexcept {
  if (!impl_) return;
  try {
    impl_->store->setTimeout(std::chrono::seconds(5));
    impl_->store->compareSet("failed", "", "rank " + std::to_string(env_.rank) + " failed: " + first_line(what));
    linger_if_store_host();
  } catch (...) {
  }
}

// Rank 0 hosting the store stays until the others' heartbeats have seen the verdict: they
// may learn of the failure only when its exit closes their connections.
void DataParallel::linger_if_store_host() {
  if (env_.rank == 0 && !env_.launcher_hosts_store && !lingered_) std::this_thread::sleep_for(kBeat * 3);
  lingered_ = true;
}

// Gloo moves host memory, NCCL its GPU's: a tensor elsewhere goes through a copy, once
// each way. With Gloo on GPUs that is the gradient buckets (the adapter's size, small
// beside a step); with NCCL, the step's few host scalars (token counts, losses).
at::Tensor DataParallel::on_backend_device(const at::Tensor& t) const {
  const at::Device& where = impl_->device;
  if (t.device().type() == where.type() && (!where.has_index() || t.device() == where)) return t;
  return t.to(where);
}

void DataParallel::staged(at::Tensor& t, const std::function<void(at::Tensor&)>& collective) {
  at::Tensor moved = on_backend_device(t);
  collective(moved);
  if (!moved.is_same(t)) t.copy_(moved);
}

void DataParallel::broadcast(std::vector<at::Tensor>& tensors) {
  if (!impl_ || tensors.empty()) return;
  guarded("broadcast", [&] {
    for (auto& t : tensors)
      staged(t, [&](at::Tensor& h) {
        std::vector<at::Tensor> one{h};
        impl_->pg->broadcast(one)->wait();
      });
  });
}

void DataParallel::all_reduce_sum(at::Tensor& t) {
  if (impl_) start_sum(t)();
}

std::function<void()> DataParallel::start_sum(at::Tensor t) {
  if (!impl_) return [] {};
  at::Tensor moved = on_backend_device(t);
  c10::intrusive_ptr<c10d::Work> work;
  guarded("all_reduce", [&] {
    std::vector<at::Tensor> one{moved};
    work = impl_->pg->allreduce(one);
  });
  return [this, t, moved, work]() mutable {
    guarded("all_reduce", [&] { work->wait(); });
    if (!moved.is_same(t)) t.copy_(moved);
  };
}

// The other ranks poll for rank 0's value, or for a failure it reported instead.
std::string DataParallel::share(const std::string& key, const std::string& value_on_rank0) {
  if (!impl_) return value_on_rank0;
  const std::string k = "share/" + key;
  std::string out;
  guarded("share", [&] {
    auto& s = *impl_->store;
    if (is_main()) s.set(k, std::vector<uint8_t>(value_on_rank0.begin(), value_on_rank0.end()));
    const auto deadline = std::chrono::steady_clock::now() + env_.timeout;
    while (!s.check({k})) {
      if (s.check({"failed"})) throw std::runtime_error("no " + key + " from rank 0");
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("timed out waiting for " + key);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const auto v = s.get(k);
    out.assign(v.begin(), v.end());
  });
  return out;
}

}  // namespace peft
