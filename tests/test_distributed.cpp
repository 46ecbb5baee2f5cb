// Data-parallel training (docs/TRAINING.md, "Data-parallel"): 2 and 4 Gloo processes on
// loopback take the same steps as one process with the same global batch, a 2-process
// run resumes in 1 process on the same loss curve, and a killed worker stops the others
// with an error naming it while the last checkpoint stays intact. The gradient buckets
// that start summing during the backward (GradientReducer) are checked on two ranks in
// threads of this process, against the sums of one.
//
// The one-process run these compare with is itself checked against HF Trainer's per-step
// losses (test_train.cpp, TrainParity).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cli_runner.h"
#include "models/checkpoint.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "train/collective_backend.h"
#include "train/distributed.h"
#include "train/gradient_reducer.h"
#include "util/cuda_backend.h"
#include "train/run_folder.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

extern char** environ;

namespace peft {
namespace {

fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "distributed" / name;
  fs::create_directories(p.parent_path());
  return p;
}

// A random Llama (hidden 32, 2 layers, fp32) in HF's layout: no fixture needed.
fs::path tiny_llama() {
  const auto dir = scratch("tiny_llama");
  if (fs::exists(dir / "model.safetensors")) return dir;
  fs::create_directories(dir);
  const int64_t h = 32, ffn = 64, vocab = 64;
  std::ofstream(dir / "config.json") << json{{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                                             {"vocab_size", vocab}, {"hidden_size", h}, {"intermediate_size", ffn},
                                             {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                             {"num_key_value_heads", 4}, {"max_position_embeddings", 128},
                                             {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
                                             {"tie_word_embeddings", false}, {"hidden_act", "silu"},
                                             {"torch_dtype", "float32"}}
                                            .dump();
  at::manual_seed(11);
  auto w = [](int64_t o, int64_t i) { return at::randn({o, i}) * 0.2; };
  NamedTensors t = {{"model.embed_tokens.weight", w(vocab, h)}, {"model.norm.weight", at::ones({h})},
                    {"lm_head.weight", w(vocab, h)}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"}) t.emplace_back(p + "self_attn." + n + ".weight", w(h, h));
    t.emplace_back(p + "mlp.gate_proj.weight", w(ffn, h));
    t.emplace_back(p + "mlp.up_proj.weight", w(ffn, h));
    t.emplace_back(p + "mlp.down_proj.weight", w(h, ffn));
    t.emplace_back(p + "input_layernorm.weight", at::ones({h}));
    t.emplace_back(p + "post_attention_layernorm.weight", at::ones({h}));
  }
  save_safetensors((dir / "model.safetensors").string(), t);
  return dir;
}

// 48 counting rows of 3 to 20 tokens: shards of one micro-batch differ in token count,
// so a wrong (per-rank) loss normalization shows.
fs::path counting_data() {
  const auto f = scratch("counting.jsonl");
  std::ofstream out(f);
  std::mt19937 rng(5);
  for (int i = 0; i < 48; ++i) {
    json ids = json::array();
    for (int t = 0, s = 1 + rng() % 40, n = 3 + rng() % 18; t < n; ++t) ids.push_back(s + t);
    out << json{{"input_ids", ids}}.dump() << "\n";
  }
  return f;
}

// Micro-batches of 5 (uneven over 2 and 4 ranks; the epoch's last has 3: one rank of 4
// gets none), 2 per step, 6 steps across an epoch boundary, shuffled.
TrainConfig tiny_config(const std::string& out) {
  TrainConfig c;
  c.model = tiny_llama().string();
  c.train_file = counting_data().string();
  c.output_dir = scratch(out).string();
  c.max_steps = 6;
  c.per_device_train_batch_size = 5;
  c.gradient_accumulation_steps = 2;
  c.learning_rate = 1e-2;
  c.warmup_steps = 1;
  c.weight_decay = 0.01;
  c.max_grad_norm = 1.0;
  c.save_steps = 2;
  c.save_total_limit = 0;
  c.logging_steps = 1;
  c.progress = false;
  c.method = json{{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.0},
                  {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  return c;
}

fs::path write_config(const TrainConfig& c, const std::string& name) {
  const auto f = scratch(name + ".json");
  std::ofstream(f) << c.to_json().dump();
  return f;
}

std::vector<double> logged_losses(const fs::path& dir) {
  std::vector<double> out;
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string l; std::getline(in, l);)
    if (auto j = json::parse(l); j.contains("loss")) out.push_back(j["loss"].get<double>());
  return out;
}

void expect_same_adapter(const fs::path& got, const fs::path& want) {
  SafetensorsFile g((got / "adapter_model.safetensors").string()), w((want / "adapter_model.safetensors").string());
  ASSERT_EQ(g.names(), w.names());
  for (const auto& n : w.names()) {
    const double diff = (g.get(n) - w.get(n)).abs().max().item<double>();
    EXPECT_LE(diff, 1e-5 * std::max(1.0, w.get(n).abs().max().item<double>())) << n;
  }
}

// The one-process run everything is compared with (in this process: no WORLD_SIZE).
const TrainResult& single_process() {
  static const TrainResult r = [] {
    auto c = tiny_config("single");
    fs::remove_all(c.output_dir);
    return train(c);
  }();
  return r;
}

test::CliResult run_nproc(const TrainConfig& c, int nproc, std::vector<std::string> extra = {}) {
  setenv("OMP_NUM_THREADS", "1", 1);  // for the workers: N of them share 2 cores
  std::vector<std::string> args = {"train", "--config", write_config(c, fs::path(c.output_dir).filename()).string(),
                                   "--nproc", std::to_string(nproc)};
  args.insert(args.end(), extra.begin(), extra.end());
  test::CliLimits lim;
  lim.timeout_s = 120;
  return test::run_cli(args, lim);
}

void expect_matches_single_process(int nproc, double bucket_mb = 25) {
  const auto& want = single_process();
  auto c = tiny_config("nproc" + std::to_string(nproc));
  c.ddp_bucket_cap_mb = bucket_mb;
  fs::remove_all(c.output_dir);
  const auto r = run_nproc(c, nproc);
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const auto got = logged_losses(c.output_dir);
  ASSERT_EQ(got.size(), want.steps.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want.steps[i].loss, 1e-5 * std::abs(want.steps[i].loss)) << "step " << i + 1;
  expect_same_adapter(c.output_dir, single_process().adapter_dir);
  // Only rank 0 wrote: one line per step, no second writer's lines.
  EXPECT_EQ(got.size(), 6u);
}

// device=cuda: one GPU per local rank, round-robin when there are more ranks than GPUs.
TEST(DataParallel, EachLocalRankTakesItsGpu) {
  DistEnv env;
  env.world_size = 8;
  env.local_rank = 5;
  EXPECT_EQ(rank_device("cuda", env, 8), "cuda:5");
  EXPECT_EQ(rank_device("cuda", env, 2), "cuda:1");
  EXPECT_EQ(rank_device("cuda:0", env, 8), "cuda:0");  // pinned by the user
  EXPECT_EQ(rank_device("cpu", env, 8), "cpu");
  env.world_size = 1;
  env.local_rank = 0;
  EXPECT_EQ(rank_device("cuda", env, 8), "cuda");
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// torchrun's environment, LOCAL_WORLD_SIZE included (absent: every rank is local); a
// malformed value is one line naming the variable.
TEST(DataParallel, ReadsTorchrunsEnvironmentAndNamesABadVariable) {
  const std::vector<std::pair<const char*, const char*>> vars = {
      {"WORLD_SIZE", "4"}, {"RANK", "3"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
      {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}};
  for (const auto& [k, v] : vars) setenv(k, v, 1);
  const DistEnv e = DistEnv::from_environment();
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 2);
  EXPECT_EQ(e.master_addr, "10.0.0.1");
  EXPECT_EQ(e.master_port, 29500);
  unsetenv("LOCAL_WORLD_SIZE");
  EXPECT_EQ(DistEnv::from_environment().local_world_size, 4);
  setenv("LOCAL_WORLD_SIZE", "5", 1);
  EXPECT_EQ(error_of([] { DistEnv::from_environment(); }),
            "data-parallel: LOCAL_WORLD_SIZE=5 must be an integer in [1, 4]");
  for (const auto& [k, v] : vars) unsetenv(k);
  EXPECT_EQ(DistEnv::from_environment().world_size, 1);
}

// NCCL only where each local rank has a GPU of its own: it refuses two ranks on one GPU,
// which Gloo (through host copies) allows.
TEST(DataParallel, NcclOnlyWhereEachLocalRankHasItsOwnGpu) {
  constexpr auto kNccl = CollectiveBackend::kNccl, kGloo = CollectiveBackend::kGloo;
  DistEnv env;
  env.world_size = env.local_world_size = 4;
  EXPECT_EQ(choose_backend("cuda", env, nullptr, 4), kNccl);
  EXPECT_EQ(choose_backend("cuda", env, "", 8), kNccl);
  EXPECT_EQ(choose_backend("cuda", env, nullptr, 2), kGloo);    // two ranks would share a GPU
  EXPECT_EQ(choose_backend("cuda:0", env, nullptr, 4), kGloo);  // pinned: every rank on GPU 0
  EXPECT_EQ(choose_backend("cpu", env, nullptr, 4), kGloo);
  EXPECT_EQ(choose_backend("cuda", env, "gloo", 4), kGloo);
  EXPECT_EQ(choose_backend("cuda:1", env, "nccl", 1), kNccl);  // the user's word (one rank per machine)
  env.local_world_size = 2;                                   // two machines of two ranks
  EXPECT_EQ(choose_backend("cuda", env, nullptr, 2), kNccl);
  EXPECT_EQ(error_of([&] { choose_backend("cpu", env, "nccl", 0); }),
            "PEFT_DDP_BACKEND=nccl: NCCL moves GPU tensors only, and this run's device is 'cpu' (use gloo)");
  EXPECT_EQ(error_of([&] { choose_backend("cuda", env, "mpi", 2); }),
            "PEFT_DDP_BACKEND='mpi' is not a backend (use gloo or nccl, or leave it unset)");
}

// A request the ranks cannot follow stops every rank at once with the one line, not at
// the rendezvous timeout.
TEST(DataParallel, NcclRequestedForACpuRunStopsEveryRankAtOnce) {
  auto c = tiny_config("nccl_on_cpu");
  fs::remove_all(c.output_dir);
  setenv("PEFT_DDP_BACKEND", "nccl", 1);
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = run_nproc(c, 2);
  unsetenv("PEFT_DDP_BACKEND");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("error: PEFT_DDP_BACKEND=nccl: NCCL moves GPU tensors only"));
  EXPECT_FALSE(fs::exists(fs::path(c.output_dir) / "metrics.jsonl"));
}

#ifdef PEFT_HAS_NCCL_LIBRARY
// libpeft_nccl.so opens beside the library and makes LibTorch's ProcessGroupNCCL. With a
// GPU, a group of one sums and broadcasts GPU tensors; without one, LibTorch's refusal
// comes back as one line.
TEST(DataParallel, NcclGroupOpensFromItsLibrary) {
  ASSERT_EQ(load_cuda_backend(), "");
  auto store = c10::make_intrusive<c10d::HashStore>();
  if (!at::hasCUDA()) {
    const std::string e = error_of([&] { open_nccl_group(store, 0, 1, std::chrono::seconds(10)); });
    EXPECT_THAT(e, HasSubstr("NCCL for data-parallel training: "));
    EXPECT_THAT(e, HasSubstr("GPU"));
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    return;
  }
  auto group = open_nccl_group(store, 0, 1, std::chrono::seconds(10));
  std::vector<at::Tensor> t{at::arange(6, at::TensorOptions().dtype(at::kDouble).device(at::kCUDA))};
  group->allreduce(t)->wait();
  group->broadcast(t)->wait();
  EXPECT_TRUE(at::equal(t[0].cpu(), at::arange(6, at::kDouble)));
  group->shutdown();
}
#endif

TEST(DataParallel, TwoProcessesTakeTheSingleProcessSteps) { expect_matches_single_process(2); }

// With buckets of 1 KiB (one or two of the adapter's 12 tensors each) the sums start
// during the backward, bucket by bucket, and the steps stay those of one process.
TEST(DataParallel, FourProcessesTakeTheSingleProcessSteps) { expect_matches_single_process(4, 1.0 / 1024); }

TEST(DataParallel, TwoProcessRunResumesInOneProcessOnTheSameCurve) {
  const auto& want = single_process();
  auto c = tiny_config("resume_2_to_1");
  fs::remove_all(c.output_dir);
  const auto r = run_nproc(c, 2);
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  // As if the 2-process run had stopped after checkpoint-4.
  fs::remove_all(fs::path(c.output_dir) / "checkpoint-6");
  const auto resumed = train(c, /*resume=*/true);
  ASSERT_EQ(resumed.steps.size(), 2u);
  for (const auto& s : resumed.steps)
    EXPECT_NEAR(s.loss, want.steps[s.step - 1].loss, 1e-5 * std::abs(want.steps[s.step - 1].loss)) << "step " << s.step;
  expect_same_adapter(c.output_dir, want.adapter_dir);
}

// Rank 0 refuses the output folder (an earlier run's files): rank 1, waiting for it,
// stops at once with rank 0's own error instead of waiting out the timeout.
TEST(DataParallel, RankZerosOwnErrorStopsTheOthersWithIt) {
  auto c = tiny_config("refused");
  fs::remove_all(c.output_dir);
  fs::create_directories(fs::path(c.output_dir) / "checkpoint-2");
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = run_nproc(c, 2);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("failed on rank 1 of 2: rank 0 failed: "));
  EXPECT_THAT(r.output, HasSubstr("holds an earlier run's files"));
  EXPECT_THAT(r.output, HasSubstr("worker rank 0 exited with status 1"));
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t n = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0)
    return -1;
  close(fd);
  return ntohs(a.sin_port);
}

// A worker as torchrun starts it: rank 0 hosts the store at MASTER_PORT. Output to `log`.
pid_t start_worker(int rank, int world, int port, const fs::path& cfg, const fs::path& log) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  for (const std::string kv : {"RANK=" + std::to_string(rank), "LOCAL_RANK=" + std::to_string(rank),
                               "WORLD_SIZE=" + std::to_string(world), std::string("MASTER_ADDR=127.0.0.1"),
                               "MASTER_PORT=" + std::to_string(port), std::string("PEFT_DDP_TIMEOUT_S=20"),
                               std::string("OMP_NUM_THREADS=1")})
    env.push_back(kv);
  std::vector<char*> e;
  for (auto& kv : env) e.push_back(kv.data());
  e.push_back(nullptr);
  std::string cli = PEFT_CLI, train = "train", flag = "--config", path = cfg.string();
  char* argv[] = {cli.data(), train.data(), flag.data(), path.data(), nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  posix_spawn(&pid, cli.c_str(), &fa, nullptr, argv, e.data());
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

std::string read_all(const fs::path& f) {
  std::ifstream in(f);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST(DataParallel, KilledWorkerStopsTheOthersNamingItAndKeepsTheCheckpoint) {
  auto c = tiny_config("killed");
  c.max_steps = 100000;  // runs until killed
  fs::remove_all(c.output_dir);
  const auto cfg = write_config(c, "killed");
  const int port = free_port();
  ASSERT_GT(port, 0);
  std::vector<pid_t> pids;
  for (int r = 0; r < 3; ++r) pids.push_back(start_worker(r, 3, port, cfg, scratch("killed_rank" + std::to_string(r) + ".log")));
  const fs::path ckpt4 = fs::path(c.output_dir) / "checkpoint-4";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(ckpt4) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(ckpt4)) << read_all(scratch("killed_rank0.log"));
  kill(pids[1], SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  for (int r : {0, 2}) {
    int status = 0;
    waitpid(pids[r], &status, 0);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
    EXPECT_LT(secs, 20.0) << "rank " << r << " took longer than the timeout to stop";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << "rank " << r << " status " << status;
    const std::string log = read_all(scratch("killed_rank" + std::to_string(r) + ".log"));
    EXPECT_THAT(log, HasSubstr("rank 1 stopped")) << log;
  }
  waitpid(pids[1], nullptr, 0);
  // The newest checkpoint (written by rank 0 alone) is whole: the run folder, given the
  // run's own fingerprint, verifies its checksums and would resume from it.
  int64_t newest = 0;
  for (const auto& e : fs::directory_iterator(c.output_dir))
    if (const auto n = e.path().filename().string(); n.rfind("checkpoint-", 0) == 0 && n.find(".tmp") == std::string::npos)
      newest = std::max<int64_t>(newest, std::stoll(n.substr(11)));
  ASSERT_GE(newest, 4);
  const auto last = fs::path(c.output_dir) / ("checkpoint-" + std::to_string(newest));
  const json state = json::parse(read_all(last / "trainer_state.json"));
  RunFolder folder(c.output_dir, state.at("run"));
  const auto resume_from = folder.prepare(/*resume=*/true, /*overwrite=*/false);
  ASSERT_TRUE(resume_from.has_value());
  EXPECT_EQ(*resume_from, last);
  EXPECT_EQ(RunFolder::read_state(last).step, newest);
}

// Two ranks of a group on loopback, as threads of this process: f(rank, group) on each.
template <class F>
void on_two_ranks(F f) {
  const int port = free_port();
  ASSERT_GT(port, 0);
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      try {
        DistEnv e;
        e.rank = r;
        e.world_size = e.local_world_size = 2;
        e.master_port = port;
        e.timeout = std::chrono::seconds(30);
        DataParallel dp(e);
        f(r, dp);
      } catch (const std::exception& ex) {
        errors[r] = ex.what();
      }
    });
  for (auto& t : ranks) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

// Six 16x16 weights in a chain, the same on every rank; rank r's input differs.
std::vector<at::Tensor> chain_weights() {
  std::vector<at::Tensor> w;
  for (int k = 0; k < 6; ++k)
    w.push_back((at::arange(256, at::kFloat) * 0.1f * (k + 1)).cos().view({16, 16}).mul(0.3f).requires_grad_(true));
  return w;
}

at::Tensor chain_loss(const std::vector<at::Tensor>& w, int rank, int micro) {
  at::Tensor h = (at::arange(48, at::kFloat) * (0.37f * (rank + 1) + 0.11f * micro)).sin().view({3, 16});
  for (const auto& wk : w) h = at::tanh(at::matmul(h, wk.t()));
  return h.pow(2).sum();
}

// The gradients one process would have: both ranks' two micro-batches, summed.
std::vector<at::Tensor> summed_chain_gradients() {
  auto w = chain_weights();
  for (int r = 0; r < 2; ++r)
    for (int m = 0; m < 2; ++m) chain_loss(w, r, m).backward();
  std::vector<at::Tensor> g;
  for (const auto& wk : w) g.push_back(wk.grad());
  return g;
}

// Buckets of one weight each start during the backward of the step's last micro-batch,
// from the last layer back, and the sums are the whole step's over both ranks.
TEST(GradientReducer, BucketsStartDuringTheBackwardAndSumTheStep) {
  const auto want = summed_chain_gradients();
  std::vector<size_t> buckets(2), early(2);
  on_two_ranks([&](int rank, DataParallel& dp) {
    auto w = chain_weights();
    GradientReducer reducer(dp, w, 16 * 16 * 4);
    for (int step = 0; step < 2; ++step) {
      for (auto& wk : w) wk.mutable_grad() = at::Tensor();
      chain_loss(w, rank, 0).backward();
      reducer.arm();
      chain_loss(w, rank, 1).backward();
      reducer.finish();
      for (size_t k = 0; k < w.size(); ++k)
        EXPECT_TRUE(at::allclose(w[k].grad(), want[k], 1e-6, 1e-7)) << "rank " << rank << " weight " << k;
    }
    buckets[rank] = reducer.buckets();
    early[rank] = reducer.started_in_backward();
  });
  EXPECT_EQ(buckets[0], 6u);
  EXPECT_EQ(early[0], 6u);
  EXPECT_EQ(early[1], 6u);
}

// A weight rank 1 does not use counts as zero there; one no rank uses stays undefined.
// Its bucket (and every later one) can only start after the backward.
TEST(GradientReducer, MissingGradientsCountAsZeroAndUnusedOnesStayUndefined) {
  auto w0 = chain_weights();
  chain_loss(w0, 0, 0).backward();
  chain_loss(w0, 1, 0).backward();
  std::vector<size_t> early(2);
  on_two_ranks([&](int rank, DataParallel& dp) {
    auto w = chain_weights();
    auto extra = at::ones({4}).requires_grad_(true), idle = at::ones({4}).requires_grad_(true);
    std::vector<at::Tensor> params = {extra, idle};
    params.insert(params.end(), w.begin(), w.end());
    GradientReducer reducer(dp, params, 16 * 16 * 4);
    reducer.arm();
    at::Tensor loss = chain_loss(w, rank, 0);
    if (rank == 0) loss = loss + extra.sum() * 3;
    loss.backward();
    reducer.finish();
    for (size_t k = 0; k < w.size(); ++k) EXPECT_TRUE(at::allclose(w[k].grad(), w0[k].grad(), 1e-6, 1e-7)) << k;
    ASSERT_TRUE(extra.grad().defined()) << "rank " << rank;
    EXPECT_TRUE(at::equal(extra.grad(), at::full({4}, 3.f)));
    EXPECT_FALSE(idle.grad().defined());
    early[rank] = reducer.started_in_backward();
  });
  EXPECT_EQ(early[0], 6u);  // the chain's six; `idle` keeps the last bucket back
}

// A weight shared by two checkpointed blocks accumulates once per block's recompute, so
// its bucket would start before its gradient is whole: the reducer sees it, sums this
// step after the backward, and does so from then on.
TEST(GradientReducer, AGradientArrivingTwiceTurnsOverlapOffAndTheSumsStayRight) {
  auto shared_loss = [](const at::Tensor& s, const at::Tensor& a, const at::Tensor& b, int rank) {
    at::Tensor x = (at::arange(48, at::kFloat) * 0.3f * (rank + 1)).sin().view({3, 16});
    x = checkpointed([s, a](const at::Tensor& h) { return at::tanh(at::matmul(at::matmul(h, s), a)); }, x);
    x = checkpointed([s, b](const at::Tensor& h) { return at::tanh(at::matmul(at::matmul(h, s), b)); }, x);
    return x.pow(2).sum();
  };
  auto make = [](int k) { return (at::arange(256, at::kFloat) * 0.07f * k).cos().view({16, 16}).mul(0.3f).requires_grad_(true); };
  std::vector<at::Tensor> want = {make(1), make(2), make(3)};
  for (int r = 0; r < 2; ++r) shared_loss(want[0], want[1], want[2], r).backward();
  std::vector<int> off(2);
  on_two_ranks([&](int rank, DataParallel& dp) {
    std::vector<at::Tensor> p = {make(1), make(2), make(3)};
    GradientReducer reducer(dp, {p[1], p[2], p[0]}, 16 * 16 * 4);  // s's bucket first
    for (int step = 0; step < 2; ++step) {
      for (auto& t : p) t.mutable_grad() = at::Tensor();
      reducer.arm();
      shared_loss(p[0], p[1], p[2], rank).backward();
      reducer.finish();
      for (size_t k = 0; k < p.size(); ++k)
        EXPECT_TRUE(at::allclose(p[k].grad(), want[k].grad(), 1e-6, 1e-7)) << "step " << step << " tensor " << k;
    }
    off[rank] = reducer.overlap_disabled();
  });
  EXPECT_EQ(off[0], 1);
  EXPECT_EQ(off[1], 1);
}

}  // namespace
}  // namespace peft
