// fed.json and client.json: strict parsing (an unknown key is an error naming it).
#include <set>
#include <stdexcept>

#include "peft/federated.h"
#include "util/json_file.h"

namespace peft {

namespace {

// Reads the keys of `j` into fields, refusing any other key.
class Fields {
 public:
  Fields(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j.is_object()) throw std::runtime_error(where_ + ": must be a JSON object");
  }
  template <class T>
  void get(const char* key, T& out) {
    known_.insert(key);
    if (j_.contains(key)) out = strict_get<T>(j_[key], where_ + ": '" + key + "'");
  }
  void raw(const char* key, nlohmann::json& out) {
    known_.insert(key);
    if (j_.contains(key)) out = j_[key];
  }
  void done() const {
    for (const auto& [k, _] : j_.items())
      if (!known_.count(k)) throw std::runtime_error(where_ + ": unknown key '" + k + "'");
  }
  [[noreturn]] void bad(const std::string& what) const { throw std::runtime_error(where_ + ": " + what); }

 private:
  const nlohmann::json& j_;
  std::string where_;
  std::set<std::string> known_;
};

}  // namespace

FedServerConfig FedServerConfig::from_json(const nlohmann::json& j, const std::string& where) {
  FedServerConfig c;
  Fields f(j, where);
  f.get("host", c.host);
  f.get("port", c.port);
  f.get("port_file", c.port_file);
  f.get("output_dir", c.output_dir);
  f.get("init_adapter", c.init_adapter);
  f.get("model", c.model);
  nlohmann::json method;
  f.raw("method", method);
  c.method = nlohmann::ordered_json::parse(method.dump());
  f.get("seed", c.seed);
  f.get("rounds", c.rounds);
  f.get("min_clients", c.min_clients);
  f.get("round_timeout_s", c.round_timeout_s);
  f.get("max_round_retries", c.max_round_retries);
  f.get("max_upload_bytes", c.max_upload_bytes);
  f.get("clip_norm", c.clip_norm);
  f.get("noise_multiplier", c.noise_multiplier);
  f.get("keep_uploads", c.keep_uploads);
  f.get("keep_rounds", c.keep_rounds);
  f.get("linger_s", c.linger_s);
  nlohmann::json clients;
  f.raw("clients", clients);
  f.done();
  if (!clients.is_array() || clients.empty())
    f.bad("'clients' must be a list of {\"name\": ..., \"token\": ...}, one per client");
  std::set<std::string> names, tokens;
  for (size_t i = 0; i < clients.size(); ++i) {
    FedClientEntry e;
    Fields cf(clients[i], where + ": clients[" + std::to_string(i) + "]");
    cf.get("name", e.name);
    cf.get("token", e.token);
    cf.done();
    if (e.name.empty()) cf.bad("'name' is required");
    if (e.token.size() < 8) cf.bad("'token' must have at least 8 characters");
    if (!names.insert(e.name).second) cf.bad("name '" + e.name + "' is used twice");
    if (!tokens.insert(e.token).second) cf.bad("its token is another client's too");
    c.clients.push_back(e);
  }
  if (c.init_adapter.empty() == c.model.empty())
    f.bad("give either 'init_adapter' (an adapter folder) or 'model' (with 'method') for the first global adapter");
  if (c.port < 0 || c.port > 65535) f.bad("'port' must be in 0..65535");
  if (c.rounds < 1) f.bad("'rounds' must be >= 1");
  if (c.min_clients < 1 || c.min_clients > static_cast<int64_t>(c.clients.size()))
    f.bad("'min_clients' must be in 1.." + std::to_string(c.clients.size()) + " (the number of clients)");
  if (!(c.round_timeout_s > 0)) f.bad("'round_timeout_s' must be > 0");
  if (c.max_round_retries < 0) f.bad("'max_round_retries' must be >= 0");
  if (c.max_upload_bytes < 0) f.bad("'max_upload_bytes' must be >= 0");
  if (!(c.clip_norm >= 0) || !(c.noise_multiplier >= 0)) f.bad("'clip_norm' and 'noise_multiplier' must be >= 0");
  if (c.noise_multiplier > 0 && c.clip_norm == 0)
    f.bad("'noise_multiplier' needs 'clip_norm' > 0 (the noise is scaled to the clipped update's norm)");
  if (c.keep_rounds < 0) f.bad("'keep_rounds' must be >= 0");
  if (!(c.linger_s >= 0)) f.bad("'linger_s' must be >= 0");
  if (c.output_dir.empty()) f.bad("'output_dir' must not be empty");
  return c;
}

FedClientConfig FedClientConfig::from_json(const nlohmann::json& j, const std::string& where) {
  FedClientConfig c;
  Fields f(j, where);
  f.get("server", c.server);
  f.get("name", c.name);
  f.get("token", c.token);
  f.get("work_dir", c.work_dir);
  f.get("local_steps", c.local_steps);
  f.get("poll_interval_s", c.poll_interval_s);
  f.get("server_timeout_s", c.server_timeout_s);
  f.raw("train", c.train);
  f.done();
  if (c.token.empty()) f.bad("'token' is required (the coordinator's fed.json gives each client one)");
  if (c.work_dir.empty()) f.bad("'work_dir' must not be empty");
  if (c.local_steps < 1) f.bad("'local_steps' must be >= 1");
  if (!(c.poll_interval_s > 0) || !(c.server_timeout_s > 0)) f.bad("'poll_interval_s' and 'server_timeout_s' must be > 0");
  if (!c.train.is_object()) f.bad("'train' must be an object of `peft train` config fields");
  for (const char* k : {"output_dir", "init_adapter", "method", "max_steps", "composition"})
    if (c.train.contains(k))
      f.bad(std::string("'train.") + k + "' is set by federated training (the coordinator's adapter, local_steps, work_dir)");
  return c;
}

}  // namespace peft
