// `peft serve`: an OpenAI-compatible HTTP server over the serving engine (peft/engine.h).
//
//   POST   /v1/completions        prompt (text or token ids) -> text, optionally streamed (SSE)
//   POST   /v1/chat/completions   messages through the model's chat template
//   GET    /v1/models             the base model and the loaded adapters
//   POST   /v1/adapters           {"name", "path"}: load an adapter while serving
//   DELETE /v1/adapters/NAME      unload one
//   GET    /health, GET /metrics  liveness; Prometheus text
//
// A request's `model` names the base (its served name) or an adapter. Errors are OpenAI's
// {"error": {"message", "type", "code"}}. docs/SERVING.md has the details.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "peft/engine.h"
#include "peft/peft_model.h"
#include "peft/tokenizer.h"

namespace peft {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                 // 0: any free port (see Server::port())
  std::string api_key;             // non-empty: /v1/* and /metrics need "Authorization: Bearer KEY"
  std::string served_model_name = "model";  // what `model` calls the base
  EngineOptions engine;            // max_batch, max_queue, max_kv_tokens, max_context
  // Stop ids; empty: defaults.eos_token_ids (generation_config.json's, else config.json's,
  // as transformers' generate) and the tokenizer's eos_token.
  std::vector<int64_t> eos_token_ids;
  // The model folder's settings for what requests leave out (serving_defaults()); empty:
  // OpenAI's defaults and config.json's eos_token_id.
  ServingDefaults defaults;
  size_t max_body_bytes = 8u << 20;
};

class Server {
 public:
  // The engine drives `peft` from its own thread from here on; touch the model only
  // through the server (its adapter endpoints) until the server is gone.
  Server(std::shared_ptr<PeftModel> peft, std::shared_ptr<const Tokenizer> tok, ServerOptions opts);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds (throws naming host and port if it cannot) and serves on a background thread.
  void start();
  int port() const;         // the bound port, after start()
  std::string url() const;  // http://host:port
  // Graceful: refuses new requests (503), lets queued and running ones finish and their
  // responses go out, then closes the socket. Idempotent.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace peft
