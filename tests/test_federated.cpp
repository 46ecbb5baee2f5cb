// Federated adapter training (docs/FEDERATED.md): `peft federate serve` and 4 `peft
// federate join` processes on loopback, on non-IID splits of Debian's fortunes and a tiny
// random Llama made by transformers (tests/parity/make_federated.py). The global
// adapter's eval loss is compared with centralized training on the pooled data; the
// aggregate with FedAvg computed by numpy from the uploaded files; a recording proxy
// checks that only adapter updates go over the wire. Dropped clients, rejected uploads
// and a coordinator restart are exercised on the same fixtures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "federated/protocol.h"
#include "peft/safetensors.h"
#include "peft/train.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

extern char** environ;

namespace peft {
namespace {

const fs::path kFix = PEFT_FED_DIR;
constexpr int64_t kLocalSteps = 4;
// lm_head too: a random base's near-uniform logits are what there is to learn first.
const json kMethod = {{"r", 4}, {"lora_alpha", 8},
                      {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}}};

fs::path scratch(const std::string& name) {
  // Training and evaluation in this process, as in the clients: one thread. Two OpenMP
  // threads on a loaded 2-core machine spin at every barrier (48 steps: 20-50 s, not 1.5).
  at::set_num_threads(1);
  auto p = fs::path(PEFT_SCRATCH_DIR) / "federated" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string read_text(const fs::path& f) {
  std::ifstream in(f, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_json(const fs::path& f, const json& j) { std::ofstream(f) << j.dump(2); }

std::vector<json> read_jsonl(const fs::path& f) {
  std::vector<json> out;
  std::ifstream in(f);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(json::parse(l));
  return out;
}

bool wait_until(const std::function<bool()>& ok, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return ok();
}

// A `peft` process in the background, its output in a log file; killed if still running
// when dropped.
class Peft {
 public:
  Peft(const std::vector<std::string>& args, fs::path log) : log_(std::move(log)) {
    setenv("OMP_NUM_THREADS", "1", 1);  // 5 processes share 2 cores
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    std::vector<std::string> argv = {PEFT_CLI};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    if (posix_spawn(&pid_, PEFT_CLI, &fa, nullptr, cargv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Peft() {
    if (pid_ > 0 && status_ < 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Exit code, or -1 on timeout / a signal.
  int wait(double seconds) {
    wait_until([&] {
      int st = 0;
      if (status_ >= 0) return true;
      if (waitpid(pid_, &st, WNOHANG) == pid_) status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
      return status_ >= 0;
    }, seconds);
    return status_ >= 0 && status_ < 1000 ? status_ : -1;
  }
  void kill_now() {
    kill(pid_, SIGKILL);
    int st = 0;
    waitpid(pid_, &st, 0);
    status_ = 1000 + SIGKILL;
  }
  std::string log() const { return read_text(log_); }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  int status_ = -1;
};

json client_entry(int k) { return {{"name", "c" + std::to_string(k)}, {"token", "token-of-client-" + std::to_string(k)}}; }

json fed_config(const fs::path& dir, int n_clients, int64_t rounds) {
  json clients = json::array();
  for (int k = 0; k < n_clients; ++k) clients.push_back(client_entry(k));
  return {{"output_dir", (dir / "coordinator").string()},
          {"model", (kFix / "model").string()},
          {"method", kMethod},
          {"seed", 7},
          {"rounds", rounds},
          {"clients", clients},
          {"min_clients", n_clients},
          {"round_timeout_s", 60},
          {"keep_uploads", true},
          {"linger_s", 10}};
}

json train_fields(const fs::path& data) {
  return {{"model", (kFix / "model").string()}, {"train_file", data.string()}, {"max_length", 64},
          {"per_device_train_batch_size", 8},   {"learning_rate", 3e-2},       {"lr_scheduler_type", "constant"},
          {"save_total_limit", 1}};
}

// Starts the coordinator and waits for its port.
std::unique_ptr<Peft> start_coordinator(const fs::path& dir, const json& cfg, int* port, const std::string& tag = "") {
  write_json(dir / "fed.json", cfg);
  const fs::path port_file = dir / ("port" + tag + ".txt");
  fs::remove(port_file);
  auto p = std::make_unique<Peft>(std::vector<std::string>{"federate", "serve", "--config", (dir / "fed.json").string(),
                                                           "--port-file", port_file.string()},
                                  dir / ("coordinator" + tag + ".log"));
  EXPECT_TRUE(wait_until([&] { return fs::exists(port_file); }, 30)) << p->log();
  *port = std::stoi(read_text(port_file));
  return p;
}

std::unique_ptr<Peft> start_client(const fs::path& dir, int k, int data, const std::string& url) {
  const fs::path cfg = dir / ("client" + std::to_string(k) + ".json");
  write_json(cfg, {{"name", "c" + std::to_string(k)},
                   {"token", client_entry(k)["token"]},
                   {"work_dir", (dir / ("c" + std::to_string(k))).string()},
                   {"local_steps", kLocalSteps},
                   {"poll_interval_s", 0.05},
                   {"server_timeout_s", 30},
                   {"train", train_fields(kFix / ("client" + std::to_string(data) + ".jsonl"))}});
  return std::make_unique<Peft>(std::vector<std::string>{"federate", "join", "--server", url, "--config", cfg.string()},
                                dir / ("client" + std::to_string(k) + ".log"));
}

int64_t count_lines(const fs::path& f) { return static_cast<int64_t>(read_jsonl(f).size()); }

double eval_loss(const std::string& adapter) {
  TrainConfig c;
  c.model = (kFix / "model").string();
  c.eval_file = (kFix / "eval.jsonl").string();
  c.max_length = 64;
  return evaluate(c, adapter.empty() ? std::vector<std::string>{} : std::vector<std::string>{adapter})["eval_loss"];
}

// numpy's FedAvg (make_federated.py --fedavg) against the coordinator's round: prev ->
// got with `uploads` ({examples, file}).
json fedavg_reference(const fs::path& prev, const fs::path& got, double clip,
                      const std::vector<std::pair<int64_t, fs::path>>& uploads) {
  std::vector<std::string> argv = {PEFT_PYTHON, PEFT_SOURCE_DIR "/tests/parity/make_federated.py", "--fedavg",
                                   (prev / "adapter_model.safetensors").string(),
                                   (got / "adapter_model.safetensors").string(), std::to_string(clip)};
  for (const auto& [n, f] : uploads) argv.push_back(std::to_string(n) + ":" + f.string());
  const fs::path out = got.parent_path() / "reference.json";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid;
  EXPECT_EQ(posix_spawn(&pid, PEFT_PYTHON, &fa, nullptr, cargv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  int st = 0;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  return json::parse(read_text(out));
}

// Forwards every request to the coordinator and keeps what went over the wire.
class RecordingProxy {
 public:
  struct Exchange {
    std::string method, path, headers, body;
    size_t response_bytes;
  };
  explicit RecordingProxy(int target) : target_(target) {
    auto forward = [this](const httplib::Request& req, httplib::Response& res) {
      httplib::Client up("127.0.0.1", target_);
      up.set_read_timeout(120);
      httplib::Headers h;
      if (req.has_header("Authorization")) h.emplace("Authorization", req.get_header_value("Authorization"));
      auto r = req.method == "POST" ? up.Post(req.path, h, req.body, "application/octet-stream") : up.Get(req.path, h);
      if (!r) {
        res.status = 502;
        return;
      }
      res.status = r->status;
      if (r->has_header(fed::kRoundHeader)) res.set_header(fed::kRoundHeader, r->get_header_value(fed::kRoundHeader));
      res.set_content(r->body, r->get_header_value("Content-Type"));
      std::string headers;
      for (const auto& [k, v] : req.headers) headers += k + ": " + v + "\n";
      std::lock_guard lock(mu_);
      log_.push_back({req.method, req.path, headers, req.body, r->body.size()});
    };
    server_.Get(".*", forward);
    server_.Post(".*", forward);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~RecordingProxy() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<Exchange> log() {
    std::lock_guard lock(mu_);
    return log_;
  }

 private:
  int target_, port_ = 0;
  httplib::Server server_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Exchange> log_;
};

std::vector<std::pair<int64_t, fs::path>> uploads_of(const fs::path& coord, int64_t round, const std::vector<int>& clients,
                                                     const std::vector<int>& data) {
  std::vector<std::pair<int64_t, fs::path>> out;
  for (size_t i = 0; i < clients.size(); ++i)
    out.emplace_back(count_lines(kFix / ("client" + std::to_string(data[i]) + ".jsonl")),
                     coord / "uploads" / ("round-" + std::to_string(round)) / ("c" + std::to_string(clients[i]) + ".safetensors"));
  return out;
}

TEST(Federated, FourNonIidClientsComeWithinTenPercentOfCentralizedAndOnlyUpdatesLeaveThem) {
  const auto dir = scratch("converge");
  const int64_t rounds = 3;
  const auto t0 = std::chrono::steady_clock::now();
  auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  int port = 0;
  auto coord = start_coordinator(dir, fed_config(dir, 4, rounds), &port);
  RecordingProxy proxy(port);
  std::vector<std::unique_ptr<Peft>> clients;
  for (int k = 0; k < 4; ++k) clients.push_back(start_client(dir, k, k, proxy.url()));
  for (int k = 0; k < 4; ++k) ASSERT_EQ(clients[k]->wait(120), 0) << clients[k]->log();
  ASSERT_EQ(coord->wait(30), 0) << coord->log();
  const fs::path out = dir / "coordinator";
  std::cout << "federated run: " << secs() << " s\n";

  // The global adapter against centralized training on the pooled data, same total steps.
  const double fed_loss = eval_loss((out / "adapter").string());
  auto central = TrainConfig::from_json(train_fields(kFix / "pooled.jsonl"), "central");
  central.output_dir = (dir / "central").string();
  central.max_steps = rounds * kLocalSteps * 4;
  central.progress = false;
  central.method = nlohmann::ordered_json::parse(kMethod.dump());
  central.seed = 7;
  const auto cr = train(central, false, true);
  std::cout << "centralized run done at " << secs() << " s\n";
  const double central_loss = eval_loss(cr.adapter_dir), base_loss = eval_loss("");
  std::cout << "eval loss: base " << base_loss << ", federated (" << rounds << " rounds x 4 clients x " << kLocalSteps
            << " steps) " << fed_loss << ", centralized (" << central.max_steps << " steps) " << central_loss
            << ", ratio " << fed_loss / central_loss << "\n";
  EXPECT_LT(fed_loss, base_loss - 0.2);
  EXPECT_LE(fed_loss, 1.10 * central_loss);

  // Every round had all 4; the last equals numpy's example-weighted mean of the uploads.
  const auto log = read_jsonl(out / "rounds.jsonl");
  ASSERT_EQ(log.size(), static_cast<size_t>(rounds));
  for (const auto& l : log) EXPECT_EQ(l["clients"].size(), 4u) << l.dump();
  const auto ref = fedavg_reference(out / ("round-" + std::to_string(rounds - 1)), out / ("round-" + std::to_string(rounds)),
                                    0, uploads_of(out, rounds - 1, {0, 1, 2, 3}, {0, 1, 2, 3}));
  std::cout << "FedAvg vs numpy: " << ref.dump() << "\n";
  EXPECT_LE(ref["max_abs_diff"].get<double>(), 1e-6);
  EXPECT_GT(ref["elements"].get<int64_t>(), 1000);
  // The final adapter is what round-N holds.
  EXPECT_EQ(read_text(out / "adapter" / "adapter_model.safetensors"),
            read_text(out / ("round-" + std::to_string(rounds)) / "adapter_model.safetensors"));

  // The wire: only the protocol's paths; uploads are adapter tensors with two counters;
  // no training text in any request; the bytes reported are the bytes that went.
  const auto wire = proxy.log();
  std::vector<std::string> texts;
  for (int k = 0; k < 4; ++k)
    for (const auto& row : read_jsonl(kFix / ("client" + std::to_string(k) + ".jsonl")))
      texts.push_back(row["text"].get<std::string>().substr(0, 24));
  SafetensorsFile global((out / "adapter" / "adapter_model.safetensors").string());
  std::map<int64_t, int64_t> uploaded_per_round, sent_per_round;
  for (const auto& x : wire) {
    EXPECT_THAT((std::vector<std::string>{fed::kStatusPath, fed::kGlobalPath, fed::kConfigPath, fed::kUpdatePath}),
                ::testing::Contains(x.path));
    for (const auto& t : texts) {
      ASSERT_EQ(x.body.find(t), std::string::npos) << "training text on the wire: " << t;
      ASSERT_EQ(x.headers.find(t), std::string::npos) << "training text on the wire: " << t;
    }
    if (x.method == "GET") {
      EXPECT_TRUE(x.body.empty());
      continue;
    }
    const auto up = fed::decode_tensors(x.body, "upload on the wire");
    std::vector<std::string> names;
    for (const auto& [n, t] : up.tensors) {
      names.push_back(n);
      EXPECT_EQ(t.scalar_type(), at::kFloat) << n;  // never token ids
    }
    std::sort(names.begin(), names.end());
    auto want = global.names();
    std::sort(want.begin(), want.end());
    EXPECT_EQ(names, want);
    EXPECT_EQ(up.metadata.size(), 2u);
    const int64_t r = std::stoll(up.metadata.at("round"));
    uploaded_per_round[r] += static_cast<int64_t>(x.body.size());
  }
  for (const auto& l : log) EXPECT_EQ(l["bytes_received"].get<int64_t>(), uploaded_per_round[l["round"].get<int64_t>()]);
  for (int k = 0; k < 4; ++k)
    for (const auto& l : read_jsonl(dir / ("c" + std::to_string(k)) / "rounds.jsonl")) {
      EXPECT_GT(l["bytes_sent"].get<int64_t>(), 0);
      EXPECT_GT(l["bytes_received"].get<int64_t>(), l["bytes_sent"].get<int64_t>() / 2);  // the global came in
    }
  std::cout << "bytes per round (coordinator): ";
  for (const auto& l : log) std::cout << "received " << l["bytes_received"] << " sent " << l["bytes_sent"] << "; ";
  std::cout << "\n";
}

TEST(Federated, AClientKilledMidRoundIsTimedOutAndTheRestAggregate) {
  const auto dir = scratch("dropped");
  auto cfg = fed_config(dir, 3, 2);
  cfg["min_clients"] = 2;
  cfg["round_timeout_s"] = 4;
  cfg["max_round_retries"] = 10;  // a loaded machine may start the clients late
  cfg["clip_norm"] = 1e-3;  // DP-FedAvg clipping (no noise): checked against numpy's
  int port = 0;
  auto coord = start_coordinator(dir, cfg, &port);
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  auto c0 = start_client(dir, 0, 0, url), c1 = start_client(dir, 1, 1, url), c2 = start_client(dir, 2, 2, url);
  // c2 has the round's global adapter and is training: kill it.
  ASSERT_TRUE(wait_until([&] { return fs::exists(dir / "c2" / "global" / "adapter_model.safetensors"); }, 60)) << c2->log();
  c2->kill_now();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(c0->wait(60), 0) << c0->log();
  ASSERT_EQ(c1->wait(60), 0) << c1->log();
  ASSERT_EQ(coord->wait(30), 0) << coord->log();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 40.0);
  const fs::path out = dir / "coordinator";
  const auto log = read_jsonl(out / "rounds.jsonl");
  ASSERT_EQ(log.size(), 2u);
  for (const auto& l : log) {
    EXPECT_EQ(l["clients"], json({"c0", "c1"})) << l.dump();
    EXPECT_EQ(l["missing"], json({"c2"})) << l.dump();
    EXPECT_EQ(l["clipped"], json({true, true})) << l.dump();
  }
  EXPECT_THAT(coord->log(), HasSubstr("timed out waiting for [\"c2\"]"));
  // The global adapter is intact, loads, and is the clipped weighted mean of c0 and c1.
  const auto ref = fedavg_reference(out / "round-1", out / "round-2", 1e-3, uploads_of(out, 1, {0, 1}, {0, 1}));
  std::cout << "clipped FedAvg vs numpy: " << ref.dump() << "\n";
  EXPECT_LE(ref["max_abs_diff"].get<double>(), 1e-6);
  EXPECT_TRUE(std::isfinite(eval_loss((out / "adapter").string())));
}

TEST(Federated, BadUploadsAreRejectedWithAClearError) {
  const auto dir = scratch("rejects");
  auto cfg = fed_config(dir, 2, 1);
  cfg["max_upload_bytes"] = 200000;
  cfg["linger_s"] = 0;
  int port = 0;
  auto coord = start_coordinator(dir, cfg, &port);
  httplib::Client anon("127.0.0.1", port), a("127.0.0.1", port), b("127.0.0.1", port);
  a.set_bearer_token_auth("token-of-client-0");
  b.set_bearer_token_auth("token-of-client-1");
  auto error_of = [](const httplib::Result& r) {
    EXPECT_TRUE(r);
    if (!r) return std::string();
    const std::string e = json::parse(r->body).at("error");
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    return e;
  };
  auto r = anon.Get(fed::kStatusPath);
  EXPECT_EQ(r->status, 401);
  EXPECT_THAT(error_of(r), HasSubstr("bearer token"));
  httplib::Client wrong("127.0.0.1", port);
  wrong.set_bearer_token_auth("token-of-nobody");
  EXPECT_EQ(wrong.Post(fed::kUpdatePath, "x", "application/octet-stream")->status, 401);

  const auto g = fed::decode_tensors(a.Get(fed::kGlobalPath)->body, "global");
  auto zeros = [&] {
    NamedTensors d;
    for (const auto& [n, t] : g.tensors) d.emplace_back(n, at::zeros_like(t));
    return d;
  };
  const std::map<std::string, std::string> meta = {{"round", "0"}, {"num_examples", "10"}};
  auto post = [&](httplib::Client& c, const std::string& body) { return c.Post(fed::kUpdatePath, body, "application/octet-stream"); };
  auto expect_rejected = [&](const std::string& body, int status, const std::string& says) {
    auto res = post(a, body);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, status) << res->body;
    EXPECT_THAT(error_of(res), HasSubstr(says));
  };
  expect_rejected("this is not safetensors at all", 400, "malformed upload");
  auto wrong_shape = zeros();
  wrong_shape[0].second = at::zeros({wrong_shape[0].second.size(0) + 1, wrong_shape[0].second.size(1)});
  expect_rejected(serialize_safetensors(wrong_shape, meta), 400, "has shape");
  auto missing = zeros();
  const std::string dropped = missing.back().first;
  missing.pop_back();
  expect_rejected(serialize_safetensors(missing, meta), 400, "'" + dropped + "' of the global adapter is missing");
  auto extra = zeros();
  extra.emplace_back("base_model.model.lm_head.weight", at::zeros({4, 4}));
  expect_rejected(serialize_safetensors(extra, meta), 400, "not in the global adapter");
  auto f64 = zeros();
  f64[0].second = f64[0].second.to(at::kDouble);
  expect_rejected(serialize_safetensors(f64, meta), 400, "expected Float");
  auto ids = zeros();
  ids[0].second = at::zeros(ids[0].second.sizes(), at::kLong);  // token ids in place of a tensor
  expect_rejected(serialize_safetensors(ids, meta), 400, "expected Float");
  auto nan = zeros();
  nan[0].second[0][0] = NAN;
  expect_rejected(serialize_safetensors(nan, meta), 400, "NaN");
  expect_rejected(serialize_safetensors(zeros(), {{"round", "0"}}), 400, "'num_examples' is missing");
  expect_rejected(serialize_safetensors(zeros(), {{"round", "0"}, {"num_examples", "10"}, {"text", "secret"}}), 400,
                  "not expected");
  expect_rejected(serialize_safetensors(zeros(), {{"round", "5"}, {"num_examples", "10"}}), 409, "round 5 is not open");
  expect_rejected(std::string(300000, 'x'), 413, "exceeds the limit of 200000 bytes");

  // Good uploads still go through, and the round aggregates them only.
  EXPECT_EQ(post(a, serialize_safetensors(zeros(), meta))->status, 200);
  expect_rejected(serialize_safetensors(zeros(), meta), 409, "already uploaded");
  EXPECT_EQ(post(b, serialize_safetensors(zeros(), meta))->status, 200);
  ASSERT_EQ(coord->wait(30), 0) << coord->log();
  const auto log = read_jsonl(dir / "coordinator" / "rounds.jsonl");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_GE(log[0]["rejected"].size(), 12u);
  EXPECT_THAT(coord->log(), HasSubstr("rejected 'c0': update does not fit the global adapter"));
  EXPECT_EQ(read_text(dir / "coordinator" / "round-0" / "adapter_model.safetensors"),
            read_text(dir / "coordinator" / "round-1" / "adapter_model.safetensors"));  // zero updates
}

int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

TEST(Federated, ARestartedCoordinatorResumesAtItsSavedRound) {
  const auto dir = scratch("restart");
  auto cfg = fed_config(dir, 2, 3);
  cfg["port"] = free_port();  // the clients keep their URL across the restart
  cfg["clip_norm"] = 0.05;
  cfg["noise_multiplier"] = 1.0;
  int port = 0;
  auto coord = start_coordinator(dir, cfg, &port);
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  auto c0 = start_client(dir, 0, 0, url), c1 = start_client(dir, 1, 3, url);
  const fs::path out = dir / "coordinator";
  ASSERT_TRUE(wait_until([&] { return fs::exists(out / "round-1" / "adapter_model.safetensors") && fs::exists(out / "state.json") &&
                                      json::parse(read_text(out / "state.json"))["round"] >= 1; }, 60))
      << coord->log();
  coord->kill_now();
  const int64_t saved = json::parse(read_text(out / "state.json"))["round"];
  auto again = start_coordinator(dir, cfg, &port, "-2");
  ASSERT_EQ(c0->wait(90), 0) << c0->log();
  ASSERT_EQ(c1->wait(90), 0) << c1->log();
  ASSERT_EQ(again->wait(30), 0) << again->log();
  EXPECT_THAT(again->log(), HasSubstr("resuming at round " + std::to_string(saved)));
  EXPECT_EQ(json::parse(read_text(out / "state.json"))["round"], 3);
  // Each round once, in order, across the restart.
  const auto log = read_jsonl(out / "rounds.jsonl");
  ASSERT_EQ(log.size(), 3u);
  for (int64_t r = 0; r < 3; ++r) EXPECT_EQ(log[r]["round"], r);
  // DP-FedAvg: the noise added is the reported one (numpy's residual over the clipped mean).
  const double noise_std = log[2]["noise_std"];
  EXPECT_NEAR(noise_std, 0.05 * 40 / (40 + 32), 1e-12);
  const auto ref = fedavg_reference(out / "round-2", out / "round-3", 0.05, uploads_of(out, 2, {0, 1}, {0, 3}));
  std::cout << "DP-FedAvg residual vs numpy: " << ref.dump() << ", reported noise std " << noise_std << "\n";
  EXPECT_NEAR(ref["residual_std"].get<double>(), noise_std, 0.1 * noise_std);
}

}  // namespace
}  // namespace peft
