// The federated coordinator: serves the global adapter, takes one checked update per
// client and round, aggregates when all clients (or, at the round timeout, at least
// min_clients) uploaded, and saves every round durably so that a restart resumes.
#include <httplib.h>

#include <ATen/ATen.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "federated/aggregate.h"
#include "federated/protocol.h"
#include "peft/federated.h"
#include "peft/train.h"
#include "train/setup.h"
#include "util/atomic_file.h"
#include "util/hash.h"
#include "util/json_file.h"

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace peft {

namespace {

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s.size() > 400 ? s.substr(0, 400) + "..." : s;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// An adapter folder's tensors (float32 copies) and adapter_config.json text.
void read_adapter(const fs::path& dir, NamedTensors* tensors, std::string* config) {
  const std::string st = (dir / "adapter_model.safetensors").string();
  SafetensorsFile f(st);
  for (const auto& n : f.names()) {
    at::Tensor t = f.get(n);
    if (t.scalar_type() != at::kFloat)
      throw std::runtime_error(st + ": tensor '" + n + "' is " + c10::toString(t.scalar_type()) +
                               "; federated training needs a float32 adapter");
    tensors->emplace_back(n, t.clone());
  }
  *config = read_file_bytes((dir / "adapter_config.json").string());
}

struct Upload {
  int64_t num_examples = 0;
  NamedTensors delta;
};

class Coordinator {
 public:
  explicit Coordinator(const FedServerConfig& cfg) : cfg_(cfg), out_(cfg.output_dir) {}
  void run();

 private:
  void load_or_init();
  void save_round(const json& log_line = nullptr);
  void run_round();
  void finish();
  void add_routes();
  std::string client_of(const httplib::Request& req) const;
  void reject(httplib::Response& res, int status, const std::string& client, const std::string& why);
  void on_update(const httplib::Request& req, httplib::Response& res, const std::string& client);
  void log(const std::string& line) { std::cerr << "[federate] " << line << std::endl; }

  const FedServerConfig& cfg_;
  const fs::path out_;
  httplib::Server http_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t round_ = 0;  // rounds aggregated so far = the open round's index
  bool done_ = false;
  NamedTensors global_;
  std::string global_bytes_, config_text_;
  size_t max_upload_ = 0;
  std::map<std::string, Upload> uploads_;
  std::set<std::string> last_round_clients_, fetched_final_;
  int64_t bytes_in_ = 0, bytes_out_ = 0;
  json rejected_ = json::array();
  std::unique_ptr<AppendFile> rounds_log_;
};

// Resumes from state.json (checking the saved global against its hash), else starts from
// init_adapter or a fresh adapter of `method` on `model`, saved as round-0.
void Coordinator::load_or_init() {
  fs::create_directories(out_);
  const fs::path state = out_ / "state.json";
  std::string logged;
  if (fs::exists(state)) {
    const json s = read_json_file(state.string());
    round_ = strict_get<int64_t>(s.value("round", json()), state.string() + ": 'round'");
    const fs::path dir = out_ / strict_get<std::string>(s.value("global_dir", json()), state.string() + ": 'global_dir'");
    const std::string sha = strict_get<std::string>(s.value("sha", json()), state.string() + ": 'sha'");
    if (file_content_hash((dir / "adapter_model.safetensors").string()) != sha)
      throw std::runtime_error((dir / "adapter_model.safetensors").string() + ": does not match the hash in " +
                               state.string() + " (damaged)");
    read_adapter(dir, &global_, &config_text_);
    if (fs::exists(out_ / "rounds.jsonl")) {
      const std::string path = (out_ / "rounds.jsonl").string(), text = read_file_bytes(path);
      for (size_t at = 0, end; at < text.size(); at = end + 1) {
        end = std::min(text.find('\n', at), text.size());
        const std::string line = text.substr(at, end - at);
        if (!line.empty() && parse_json(line, path).value("round", int64_t{-1}) < round_) logged += line + "\n";
      }
    }
    done_ = round_ >= cfg_.rounds;
    log("resuming at round " + std::to_string(round_) + " from " + dir.string());
  } else {
    if (!cfg_.init_adapter.empty()) {
      read_adapter(cfg_.init_adapter, &global_, &config_text_);
    } else {
      TrainConfig tc;
      tc.model = cfg_.model;
      tc.method = cfg_.method;
      tc.seed = cfg_.seed;
      const auto s = load_setup(tc, {}, /*fresh_adapter=*/true);
      const fs::path tmp = out_ / "init-adapter.tmp";
      fs::remove_all(tmp);
      s.peft->save_adapter(tmp.string());
      read_adapter(tmp, &global_, &config_text_);
      fs::remove_all(tmp);
    }
    save_round();
  }
  rounds_log_ = std::make_unique<AppendFile>((out_ / "rounds.jsonl").string(), logged);
  global_bytes_ = serialize_safetensors(global_);
  max_upload_ = cfg_.max_upload_bytes > 0 ? static_cast<size_t>(cfg_.max_upload_bytes) : 2 * global_bytes_.size() + 65536;
}

// round-<round_>/ in HF PEFT's format, the round's line in rounds.jsonl, then state.json
// pointing at the folder: each file atomic, the state last, so a crash leaves the previous
// state and its intact folder (a logged round the state does not reach is redone, and its
// line dropped on resume).
void Coordinator::save_round(const json& log_line) {
  const std::string name = "round-" + std::to_string(round_);
  const fs::path dir = out_ / name;
  fs::create_directories(dir);
  fsync_dir(out_.string());
  write_file_atomic((dir / "adapter_config.json").string(), config_text_);
  save_safetensors((dir / "adapter_model.safetensors").string(), global_);
  if (!log_line.is_null()) rounds_log_->append(log_line.dump() + "\n");
  write_json_atomic((out_ / "state.json").string(),
                    json{{"round", round_}, {"rounds", cfg_.rounds}, {"global_dir", name},
                         {"sha", file_content_hash((dir / "adapter_model.safetensors").string())}});
  if (cfg_.keep_rounds > 0)
    for (int64_t r = round_ - cfg_.keep_rounds; r >= 0; --r) {
      const fs::path old = out_ / ("round-" + std::to_string(r));
      if (!fs::exists(old)) break;
      fs::remove_all(old);
    }
}

std::string Coordinator::client_of(const httplib::Request& req) const {
  const std::string h = req.get_header_value("Authorization"), prefix = "Bearer ";
  if (h.size() <= prefix.size() || h.compare(0, prefix.size(), prefix) != 0) return "";
  const std::string token = h.substr(prefix.size());
  std::string name;
  for (const auto& c : cfg_.clients)
    if (constant_time_equal(token, c.token)) name = c.name;
  return name;
}

void Coordinator::reject(httplib::Response& res, int status, const std::string& client, const std::string& why) {
  const std::string msg = one_line(why);
  log("round " + std::to_string(round_) + ": rejected " + (client.empty() ? "a request" : "'" + client + "'") + ": " + msg);
  if (rejected_.size() < 100) rejected_.push_back({{"client", client}, {"status", status}, {"error", msg}});
  res.status = status;
  res.set_content(json{{"error", msg}}.dump(), "application/json");
}

void Coordinator::on_update(const httplib::Request& req, httplib::Response& res, const std::string& client) {
  std::lock_guard lock(mu_);
  if (done_) return reject(res, 409, client, "the run is finished; no round is open");
  fed::TensorBytes up;
  fed::UploadMeta meta;
  try {
    up = fed::decode_tensors(req.body, "upload");
    meta = fed::read_upload_meta(up.metadata);
  } catch (const std::exception& e) {
    return reject(res, 400, client, std::string("malformed upload: ") + e.what());
  }
  if (meta.round != round_)
    return reject(res, 409, client, "round " + std::to_string(meta.round) + " is not open (the open round is " +
                                        std::to_string(round_) + ")");
  if (uploads_.count(client)) return reject(res, 409, client, "already uploaded for round " + std::to_string(round_));
  try {
    fed::check_update(up.tensors, global_);
  } catch (const std::exception& e) {
    return reject(res, 400, client, std::string("update does not fit the global adapter: ") + e.what());
  }
  bytes_in_ += static_cast<int64_t>(req.body.size());
  if (cfg_.keep_uploads) {
    const fs::path dir = out_ / "uploads" / ("round-" + std::to_string(round_));
    fs::create_directories(dir);
    write_file_atomic((dir / (client + ".safetensors")).string(), req.body);
  }
  log("round " + std::to_string(round_) + ": update from '" + client + "' (" + std::to_string(meta.num_examples) +
      " examples, " + std::to_string(req.body.size()) + " bytes)");
  uploads_[client] = Upload{meta.num_examples, std::move(up.tensors)};
  res.set_content(json{{"accepted", true}, {"round", round_}}.dump(), "application/json");
  cv_.notify_all();
}

void Coordinator::add_routes() {
  // Checked before any body is read: the token, and an upload's declared size.
  http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string client = client_of(req);
    auto handled = [&](int status, const std::string& why) {
      std::lock_guard lock(mu_);
      reject(res, status, client, why);
      return httplib::Server::HandlerResponse::Handled;
    };
    if (client.empty()) {
      res.set_header("WWW-Authenticate", "Bearer");
      return handled(401, "missing or unknown bearer token (Authorization: Bearer <the client's token in fed.json>)");
    }
    if (req.method == "POST" && req.path == fed::kUpdatePath) {
      if (!req.has_header("Content-Length")) return handled(411, "an upload needs a Content-Length");
      const std::string len = req.get_header_value("Content-Length");
      const bool digits = !len.empty() && len.size() < 19 && len.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || std::stoull(len) > max_upload_)
        return handled(413, "upload of " + len.substr(0, 20) + " bytes exceeds the limit of " +
                                std::to_string(max_upload_) + " bytes (max_upload_bytes)");
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http_.set_payload_max_length(max_upload_);  // bodies without a Content-Length (chunked)
  http_.Get(fed::kStatusPath, [this](const httplib::Request& req, httplib::Response& res) {
    const std::string client = client_of(req);
    std::lock_guard lock(mu_);
    const json body = {{"round", round_}, {"rounds", cfg_.rounds}, {"done", done_}, {"uploaded", uploads_.count(client) > 0}};
    res.set_content(body.dump(), "application/json");
  });
  http_.Get(fed::kConfigPath, [this](const httplib::Request&, httplib::Response& res) {
    std::lock_guard lock(mu_);
    bytes_out_ += static_cast<int64_t>(config_text_.size());
    res.set_content(config_text_, "application/json");
  });
  http_.Get(fed::kGlobalPath, [this](const httplib::Request& req, httplib::Response& res) {
    const std::string client = client_of(req);
    std::lock_guard lock(mu_);
    bytes_out_ += static_cast<int64_t>(global_bytes_.size());
    res.set_header(fed::kRoundHeader, std::to_string(round_));
    res.set_content(global_bytes_, "application/octet-stream");
    if (done_) {
      fetched_final_.insert(client);
      cv_.notify_all();
    }
  });
  http_.Post(fed::kUpdatePath, [this](const httplib::Request& req, httplib::Response& res) {
    on_update(req, res, client_of(req));
  });
}

// Waits for every client's update, or for the timeout with at least min_clients (else
// reopens the round up to max_round_retries times), then aggregates and saves.
void Coordinator::run_round() {
  std::unique_lock lock(mu_);
  const auto t0 = Clock::now();
  const auto timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg_.round_timeout_s));
  auto deadline = t0 + timeout;
  const size_t all = cfg_.clients.size(), min = static_cast<size_t>(cfg_.min_clients);
  int64_t retries = 0;
  for (;;) {
    cv_.wait_until(lock, deadline, [&] { return uploads_.size() == all; });
    if (uploads_.size() == all) break;
    if (Clock::now() < deadline) continue;
    if (uploads_.size() >= min) break;
    if (retries == cfg_.max_round_retries)
      throw std::runtime_error("round " + std::to_string(round_) + ": only " + std::to_string(uploads_.size()) +
                               " of the " + std::to_string(min) + " updates min_clients asks for arrived in " +
                               std::to_string(retries + 1) + " x " + std::to_string(cfg_.round_timeout_s) +
                               " s; the global adapter stays at round " + std::to_string(round_) + " in " +
                               out_.string());
    ++retries;
    log("round " + std::to_string(round_) + ": timed out with " + std::to_string(uploads_.size()) + " of " +
        std::to_string(min) + " needed updates; reopened (retry " + std::to_string(retries) + " of " +
        std::to_string(cfg_.max_round_retries) + ")");
    deadline = Clock::now() + timeout;
  }
  json names = json::array(), missing = json::array();
  std::vector<fed::ClientUpdate> ups;
  for (const auto& c : cfg_.clients) {
    auto it = uploads_.find(c.name);
    if (it == uploads_.end()) {
      missing.push_back(c.name);
      continue;
    }
    names.push_back(c.name);
    ups.push_back({c.name, it->second.num_examples, std::move(it->second.delta)});
  }
  if (!missing.empty()) log("round " + std::to_string(round_) + ": timed out waiting for " + missing.dump() +
                            "; aggregating the other " + std::to_string(ups.size()));
  fed::AggregateReport rep;
  global_ = fed::fedavg(global_, ups, {cfg_.clip_norm, cfg_.noise_multiplier, cfg_.seed + static_cast<uint64_t>(round_)}, &rep);
  const int64_t done_round = round_++;
  done_ = round_ >= cfg_.rounds;  // at once: no client should start a round that will not come
  const json line = {{"round", done_round}, {"clients", names}, {"missing", missing}, {"examples", rep.examples},
                     {"bytes_received", bytes_in_}, {"bytes_sent", bytes_out_}, {"update_norms", rep.norms},
                     {"clipped", rep.clipped}, {"clip_norm", cfg_.clip_norm}, {"noise_multiplier", cfg_.noise_multiplier},
                     {"noise_std", rep.noise_std}, {"rejected", rejected_}, {"retries", retries},
                     {"seconds", seconds_since(t0)}, {"global_dir", "round-" + std::to_string(round_)}};
  save_round(line);
  global_bytes_ = serialize_safetensors(global_);
  log("round " + std::to_string(done_round) + ": FedAvg of " + std::to_string(ups.size()) + " updates (" +
      std::to_string(rep.examples) + " examples); received " + std::to_string(bytes_in_) + " bytes, sent " +
      std::to_string(bytes_out_) + " bytes" +
      (cfg_.clip_norm > 0 ? "; DP: clip_norm " + std::to_string(cfg_.clip_norm) + ", noise_multiplier " +
                                std::to_string(cfg_.noise_multiplier) + ", noise std " + std::to_string(rep.noise_std)
                          : std::string()) +
      "; saved " + (out_ / ("round-" + std::to_string(round_))).string());
  last_round_clients_.clear();
  for (const auto& n : names) last_round_clients_.insert(n.get<std::string>());
  uploads_.clear();
  bytes_in_ = bytes_out_ = 0;
  rejected_ = json::array();
}

// The final adapter also goes to output_dir/adapter; the clients of the last round get
// linger_s to fetch it.
void Coordinator::finish() {
  std::unique_lock lock(mu_);
  done_ = true;
  const fs::path dir = out_ / "adapter";
  fs::create_directories(dir);
  write_file_atomic((dir / "adapter_config.json").string(), config_text_);
  save_safetensors((dir / "adapter_model.safetensors").string(), global_);
  log("finished " + std::to_string(cfg_.rounds) + " rounds; the global adapter is in " + dir.string());
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg_.linger_s));
  cv_.wait_until(lock, until, [&] {
    for (const auto& c : last_round_clients_)
      if (!fetched_final_.count(c)) return false;
    return !last_round_clients_.empty();
  });
}

void Coordinator::run() {
  load_or_init();
  add_routes();
  const int port = cfg_.port == 0 ? http_.bind_to_any_port(cfg_.host)
                                  : (http_.bind_to_port(cfg_.host, cfg_.port) ? cfg_.port : -1);
  if (port <= 0) throw std::runtime_error("cannot listen on " + cfg_.host + ":" + std::to_string(cfg_.port));
  if (!cfg_.port_file.empty()) write_file_atomic(cfg_.port_file, std::to_string(port) + "\n");
  log("coordinator on http://" + cfg_.host + ":" + std::to_string(port) + ", round " + std::to_string(round_) +
      " of " + std::to_string(cfg_.rounds) + ", " + std::to_string(cfg_.clients.size()) + " clients (min " +
      std::to_string(cfg_.min_clients) + "), output in " + out_.string());
  std::thread server([this] { http_.listen_after_bind(); });
  try {
    while (round_ < cfg_.rounds) run_round();
    finish();
  } catch (...) {
    http_.stop();
    server.join();
    throw;
  }
  http_.stop();
  server.join();
}

}  // namespace

void run_coordinator(const FedServerConfig& cfg) { Coordinator(cfg).run(); }

}  // namespace peft
