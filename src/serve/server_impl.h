// Server's insides, shared by its source files: server.cpp (lifecycle, routing, auth,
// errors, models, health, metrics), server_completions.cpp and server_adapters.cpp.
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "metrics.h"
#include "openai_api.h"
#include "server.h"

namespace peft {

class Generation;

struct Server::Impl {
  Impl(std::shared_ptr<PeftModel> peft, std::shared_ptr<const Tokenizer> tok, ServerOptions opts);

  ServerOptions opts;
  std::shared_ptr<PeftModel> peft;
  std::shared_ptr<const Tokenizer> tok;
  ModelLimits limits;
  int64_t created = 0;  // Unix seconds, for /v1/models
  ServerMetrics metrics;
  std::unique_ptr<Engine> engine;  // declared after metrics: it calls into them until destroyed
  httplib::Server http;
  std::thread listener;
  int port = -1;

  // Requests being answered (a stream until its last byte), so stop() can wait for them.
  std::atomic<bool> draining{false};
  std::atomic<int> in_flight{0};
  std::mutex stop_mu;
  bool stopped = false;

  // Adapters a request may name; `pending` are being loaded (their names are taken);
  // `users` counts the requests of each adapter the engine still holds, so an unload
  // waits for them (the engine fails a step whose rows name a removed adapter).
  std::mutex adapters_mu;
  std::condition_variable users_cv;
  std::set<std::string> adapters, pending;
  std::map<std::string, int64_t> users;

  void add_routes();
  bool authorized(const httplib::Request& req) const;
  // "" for the base model, else the adapter's name; ApiError 404 when neither.
  std::string resolve_model(const std::string& model);
  // Submits `r` for `model`; the request counts as a user of its adapter until done.
  std::unique_ptr<Generation> submit(const CompletionRequest& r);

  void completions(const httplib::Request& req, httplib::Response& res, bool chat);
  void list_models(httplib::Response& res);
  void load_adapter(const httplib::Request& req, httplib::Response& res);
  void unload_adapter(const std::string& name, httplib::Response& res);
};

// Counts a request in flight for as long as it lives.
class InFlight {
 public:
  explicit InFlight(std::atomic<int>& n) : n_(n) { ++n_; }
  ~InFlight() { --n_; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>& n_;
};

void send_json(httplib::Response& res, int status, const nlohmann::json& body);
void send_error(httplib::Response& res, const ApiError& e);

}  // namespace peft
