// peft serve MODEL_DIR: an OpenAI-compatible HTTP server with adapters loaded at run time.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "common.h"
#include "peft/tokenizer.h"
#include "serve/server.h"

namespace peft::cli {

namespace {

struct ServeArgs {
  ModelArgs model;
  std::vector<std::string> adapters;  // NAME=DIR
  std::string tokenizer, served_model_name, api_key, host = "127.0.0.1";
  std::string generation_config = "auto";
  int port = 8000;
  EngineOptions engine;
};

// Set by SIGTERM/SIGINT; the main thread polls it (a handler may do nothing else safely).
volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client gone mid-answer is an error on that socket, not the end of us
}

// The model's folder name (a .gguf file's name without its extension).
std::string default_served_name(const std::string& model) {
  std::filesystem::path p = std::filesystem::path(model).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

std::shared_ptr<PeftModel> load_with_adapters(const ServeArgs& a) {
  auto peft = std::make_shared<PeftModel>(a.model.load());
  for (const auto& spec : a.adapters) {
    const auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
      throw std::invalid_argument("--adapter takes NAME=DIR, got '" + spec + "'");
    peft->load_adapter(spec.substr(eq + 1), spec.substr(0, eq));
  }
  return peft;
}

void run_serve(const ServeArgs& a) {
  ServerOptions o;
  o.host = a.host;
  o.port = a.port;
  o.api_key = a.api_key;
  o.served_model_name = a.served_model_name.empty() ? default_served_name(a.model.dir) : a.served_model_name;
  o.engine = a.engine;
  auto peft = load_with_adapters(a);
  if (a.generation_config == "auto") {
    o.defaults = serving_defaults(peft->model(), a.model.dir);
    if (!o.defaults.describe().empty())
      std::cout << "peft serve: request defaults from the model's generation_config.json: " << o.defaults.describe()
                << std::endl;
  }
  auto tok = std::make_shared<const Tokenizer>(Tokenizer::from_file(a.tokenizer.empty() ? a.model.dir : a.tokenizer));
  install_signal_handlers();
  Server server(peft, tok, o);
  server.start();
  std::cout << "peft serve: listening on " << server.url() << " (model '" << o.served_model_name << "'";
  for (const auto& name : peft->adapters()) std::cout << ", adapter '" << name << "'";
  std::cout << "); Ctrl-C or SIGTERM drains and exits" << std::endl;
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::cout << "peft serve: draining in-flight requests" << std::endl;
  server.stop();
  std::cout << "peft serve: stopped" << std::endl;
}

}  // namespace

void register_serve(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve the model over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions, /v1/models), adapters "
      "loaded and unloaded at run time (POST /v1/adapters, DELETE /v1/adapters/NAME), /health and /metrics. A "
      "request's \"model\" names the base (--served-model-name) or an adapter; requests are batched continuously, "
      "each with its own adapter. Encoder-decoder models (T5, BART, Marian, ...) serve too: the prompt is the "
      "encoder's input. See docs/SERVING.md.\n"
      "Example: peft serve SmolLM2-135M-Instruct --adapter kjv=out/adapter --port 8000\n"
      "         curl localhost:8000/v1/chat/completions -d '{\"model\": \"kjv\", \"messages\": "
      "[{\"role\": \"user\", \"content\": \"Speak to me of love.\"}]}'");
  auto a = std::make_shared<ServeArgs>();
  a->model.add_to(cmd);
  cmd->add_option("--adapter", a->adapters, "NAME=DIR: an adapter to serve as model NAME (repeatable)");
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer folder or tokenizer.json (default: the model's)");
  cmd->add_option("--host", a->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", a->port, "Port to listen on (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--api-key", a->api_key, "Require 'Authorization: Bearer KEY' on /v1/* and /metrics");
  cmd->add_option("--served-model-name", a->served_model_name, "Name of the base model (default: its folder name)");
  cmd->add_option("--generation-config", a->generation_config,
                  "'auto': what a request leaves out (temperature, top_k, top_p, min_p, repetition_penalty, "
                  "max_tokens) and the stop ids come from the model's generation_config.json where it sets them, "
                  "as vLLM does; 'none': OpenAI's defaults and config.json's eos_token_id")
      ->check(CLI::IsMember({"auto", "none"}))
      ->capture_default_str();
  cmd->add_option("--max-batch", a->engine.max_batch, "Requests decoded together")
      ->check(CLI::Range(int64_t(1), int64_t(4096)))
      ->capture_default_str();
  cmd->add_option("--max-queue", a->engine.max_queue, "Waiting requests; beyond, 429")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20))
      ->capture_default_str();
  cmd->add_option("--max-kv-tokens", a->engine.max_kv_tokens, "KV-cache positions the running requests may reserve")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40))
      ->capture_default_str();
  cmd->add_option("--max-adapters", a->engine.max_resident_adapters,
                  "Adapters kept loaded at once (0: all); the least recently used idle one is unloaded and read "
                  "again when a request names it")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 30))
      ->capture_default_str();
  cmd->callback([a] { run_serve(*a); });
}

}  // namespace peft::cli
