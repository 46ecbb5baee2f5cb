// A federated client: each round it fetches the global adapter, trains local_steps on its
// own data with `peft train`'s trainer, and uploads the difference (safetensors) with its
// example count. Nothing else leaves it.
#include <httplib.h>

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <thread>

#include "federated/protocol.h"
#include "peft/federated.h"
#include "peft/train.h"
#include "util/atomic_file.h"
#include "util/json_file.h"

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace peft {

namespace {

class Client {
 public:
  explicit Client(const FedClientConfig& cfg);
  void run();

 private:
  // A request's response; nullopt while the coordinator is unreachable (for at most
  // server_timeout_s, then it throws).
  httplib::Result get(const char* path);
  httplib::Result post(const std::string& body);
  httplib::Result retry(const std::function<httplib::Result()>& send, const std::string& what);
  [[noreturn]] void refused(const httplib::Response& res, const std::string& what) const;
  void fetch_global(const fs::path& dir, int64_t* round);
  std::string train_round(int64_t round);
  void log(const std::string& line) const { std::cerr << "[" << cfg_.name << "] " << line << std::endl; }

  const FedClientConfig& cfg_;
  const fs::path work_;
  httplib::Client http_;
  std::string config_text_;
  int64_t sent_ = 0, received_ = 0;  // payload bytes this round
  std::unique_ptr<AppendFile> rounds_log_;
};

Client::Client(const FedClientConfig& cfg) : cfg_(cfg), work_(cfg.work_dir), http_(cfg.server) {
  if (!http_.is_valid()) throw std::runtime_error("not a coordinator URL: '" + cfg.server + "' (e.g. http://127.0.0.1:8765)");
  http_.set_bearer_token_auth(cfg.token.c_str());
  http_.set_connection_timeout(5);
  http_.set_read_timeout(120);
  http_.set_write_timeout(120);
  fs::create_directories(work_);
  rounds_log_ = std::make_unique<AppendFile>((work_ / "rounds.jsonl").string(), "");
}

httplib::Result Client::retry(const std::function<httplib::Result()>& send, const std::string& what) {
  const auto since = Clock::now();
  for (;;) {
    auto r = send();
    if (r) return r;
    if (std::chrono::duration<double>(Clock::now() - since).count() > cfg_.server_timeout_s)
      throw std::runtime_error("coordinator " + cfg_.server + " unreachable for " + std::to_string(cfg_.server_timeout_s) +
                               " s (" + what + ": " + httplib::to_string(r.error()) + ")");
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg_.poll_interval_s));
  }
}

httplib::Result Client::get(const char* path) {
  auto r = retry([&] { return http_.Get(path); }, std::string("GET ") + path);
  if (r->status != 200) refused(*r, std::string("GET ") + path);
  received_ += static_cast<int64_t>(r->body.size());
  return r;
}

httplib::Result Client::post(const std::string& body) {
  return retry([&] { return http_.Post(fed::kUpdatePath, body, "application/octet-stream"); }, "upload");
}

void Client::refused(const httplib::Response& res, const std::string& what) const {
  std::string why = res.body;
  try {
    why = json::parse(res.body).at("error").get<std::string>();
  } catch (const std::exception&) {
  }
  throw std::runtime_error("coordinator refused " + what + " (HTTP " + std::to_string(res.status) + "): " + why);
}

// The global adapter into `dir` (HF PEFT format); `round` gets the round it belongs to.
void Client::fetch_global(const fs::path& dir, int64_t* round) {
  if (config_text_.empty()) config_text_ = get(fed::kConfigPath)->body;
  auto r = get(fed::kGlobalPath);
  const std::string round_header = r->get_header_value(fed::kRoundHeader);
  *round = round_header.empty() || round_header.find_first_not_of("0123456789") != std::string::npos
               ? -1
               : std::stoll(round_header.substr(0, 18));
  fed::decode_tensors(r->body, "global adapter from " + cfg_.server);  // checked before use
  fs::create_directories(dir);
  write_file_atomic((dir / "adapter_config.json").string(), config_text_);
  write_file_atomic((dir / "adapter_model.safetensors").string(), r->body);
}

// Trains from work_dir/global and returns the upload: the update's safetensors bytes.
std::string Client::train_round(int64_t round) {
  json tj = cfg_.train;
  tj["init_adapter"] = (work_ / "global").string();
  tj["output_dir"] = (work_ / "local").string();
  tj["max_steps"] = cfg_.local_steps;
  // A different sample order every round (the same seed would replay the same batches).
  tj["seed"] = strict_get<uint64_t>(tj.value("seed", json(42)), "client.json: 'train.seed'") + static_cast<uint64_t>(round);
  if (!tj.contains("progress")) tj["progress"] = false;
  const auto tc = TrainConfig::from_json(tj, "client.json 'train'");
  const auto result = train(tc, /*resume=*/false, /*overwrite=*/true);
  SafetensorsFile global((work_ / "global" / "adapter_model.safetensors").string());
  SafetensorsFile local((fs::path(result.adapter_dir) / "adapter_model.safetensors").string());
  NamedTensors delta;
  for (const auto& n : global.names()) {
    if (!local.contains(n)) throw std::runtime_error(local.path() + ": tensor '" + n + "' of the global adapter is missing");
    delta.emplace_back(n, local.get(n).to(at::kFloat) - global.get(n).to(at::kFloat));
  }
  const double first = result.steps.empty() ? NAN : result.steps.front().loss;
  const double last = result.steps.empty() ? NAN : result.steps.back().loss;
  log("round " + std::to_string(round) + ": trained " + std::to_string(result.steps.size()) + " steps on " +
      std::to_string(result.train_examples) + " examples, loss " + std::to_string(first) + " -> " + std::to_string(last));
  return serialize_safetensors(delta, {{"round", std::to_string(round)},
                                     {"num_examples", std::to_string(result.train_examples)}});
}

void Client::run() {
  int64_t last_round = -1;
  std::string last_upload;  // resent if a restarted coordinator reopens its round
  for (;;) {
    const json st = parse_json(get(fed::kStatusPath)->body, "status from " + cfg_.server);
    const int64_t round = strict_get<int64_t>(st.at("round"), "status 'round'");
    if (st.at("done").get<bool>()) {
      int64_t r = 0;
      fetch_global(work_ / "final", &r);
      log("run finished after " + std::to_string(r) + " rounds; the global adapter is in " + (work_ / "final").string());
      return;
    }
    if (st.at("uploaded").get<bool>()) {
      std::this_thread::sleep_for(std::chrono::duration<double>(cfg_.poll_interval_s));
      continue;
    }
    if (round != last_round) {
      int64_t global_round = -1;
      fetch_global(work_ / "global", &global_round);
      if (global_round != round) continue;  // the round closed meanwhile
      last_upload = train_round(round);
      last_round = round;
    }
    auto r = post(last_upload);
    sent_ += static_cast<int64_t>(last_upload.size());
    if (r->status == 409) {
      log("round " + std::to_string(round) + ": update not taken: " + r->body);
      std::this_thread::sleep_for(std::chrono::duration<double>(cfg_.poll_interval_s));
    } else if (r->status != 200) {
      refused(*r, "the update of round " + std::to_string(round));
    } else {
      log("round " + std::to_string(round) + ": uploaded " + std::to_string(last_upload.size()) + " bytes; sent " +
          std::to_string(sent_) + " bytes, received " + std::to_string(received_) + " bytes this round");
      rounds_log_->append(json{{"round", round}, {"bytes_sent", sent_}, {"bytes_received", received_}}.dump() + "\n");
      sent_ = received_ = 0;
    }
  }
}

}  // namespace

void run_client(const FedClientConfig& cfg) {
  if (cfg.server.empty()) throw std::runtime_error("no coordinator: give --server URL or 'server' in client.json");
  Client(cfg).run();
}

}  // namespace peft
