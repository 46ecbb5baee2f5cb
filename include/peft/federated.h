// Federated adapter training (docs/FEDERATED.md): a coordinator over HTTP aggregates, with
// FedAvg (optionally DP-FedAvg), the adapter updates of clients that each train on their
// own data with `peft train`'s trainer. Only adapter updates and example counts leave a
// client; its data never does.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace peft {

struct FedClientEntry {
  std::string name, token;  // the token is the client's bearer token
};

// fed.json: the coordinator's config (`peft federate serve --config fed.json`).
struct FedServerConfig {
  std::string host = "127.0.0.1";
  int port = 0;                     // 0: a free port, written to port_file
  std::string port_file;            // the bound port is written here (atomically)
  std::string output_dir = "federated-output";
  // The first global adapter: a folder (HF PEFT format), or a fresh `method` on `model`.
  std::string init_adapter;
  std::string model;
  nlohmann::ordered_json method;
  uint64_t seed = 42;               // the fresh adapter's init and the DP noise
  int64_t rounds = 10;
  std::vector<FedClientEntry> clients;
  int64_t min_clients = 1;          // uploads a timed-out round needs to aggregate
  double round_timeout_s = 600;     // a round closes this long after it opened
  int64_t max_round_retries = 2;    // timed-out rounds with too few uploads are reopened this often
  int64_t max_upload_bytes = 0;     // 0: twice the global adapter's size + 64 KiB
  double clip_norm = 0;             // DP-FedAvg: each update's L2 norm clipped to this; 0: off
  double noise_multiplier = 0;      // DP-FedAvg: noise std = noise_multiplier * clip_norm * max_k n_k / sum_k n_k
  bool keep_uploads = false;        // keep each accepted update in uploads/round-N/<client>.safetensors
  int64_t keep_rounds = 2;          // round-N folders kept (0: all)
  double linger_s = 30;             // after the last round: how long clients may fetch the result

  static FedServerConfig from_json(const nlohmann::json& j, const std::string& where);
};

// client.json: one client's config (`peft federate join --server URL --config client.json`).
struct FedClientConfig {
  std::string server;               // http://HOST:PORT; --server overrides it
  std::string name = "client";      // for its log only: the coordinator knows it by its token
  std::string token;
  std::string work_dir = "federated-client";
  int64_t local_steps = 10;         // optimizer steps per round (E)
  double poll_interval_s = 0.5;
  double server_timeout_s = 120;    // the coordinator unreachable this long: give up
  // `peft train` config fields (model, train_file, learning_rate, ...); the adapter and
  // its method come from the coordinator's global adapter, the output goes to work_dir.
  nlohmann::json train = nlohmann::json::object();

  static FedClientConfig from_json(const nlohmann::json& j, const std::string& where);
};

// Runs rounds until cfg.rounds are done (resuming from output_dir/state.json if there),
// then lingers for clients to fetch the result. Throws if a round cannot gather
// min_clients uploads.
void run_coordinator(const FedServerConfig& cfg);

// Joins the coordinator and trains every round until it says the run is done; the
// final global adapter is written to work_dir/final.
void run_client(const FedClientConfig& cfg);

}  // namespace peft
