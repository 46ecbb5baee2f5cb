#include "server.h"

#include <chrono>

#include "peft/seq2seq.h"
#include "server_impl.h"

namespace peft {

using nlohmann::json;

namespace {

constexpr auto kDrainGrace = std::chrono::seconds(30);  // for responses still going out

ModelLimits model_limits(PeftModel& peft, const Tokenizer& tok, const ServerOptions& opts) {
  ModelLimits l;
  const auto& c = peft.model().config();
  auto int_of = [&](const char* key) -> int64_t {
    return c.contains(key) && c[key].is_number_integer() ? c[key].get<int64_t>() : 0;
  };
  l.vocab_size = int_of("vocab_size");
  l.max_context = opts.engine.max_context > 0 ? opts.engine.max_context : int_of("max_position_embeddings");
  if (Seq2SeqLM* s2s = as_seq2seq(peft.model())) {
    l.encoder_decoder = true;
    l.max_target = s2s->max_target_positions();
    // The encoder's positions, as the engine counts them (T5's relative ones: no limit).
    if (opts.engine.max_context <= 0) l.max_context = peft.model().max_positions();
  }
  l.defaults = opts.defaults;
  l.eos_token_ids = opts.eos_token_ids;
  if (l.eos_token_ids.empty()) {
    // The folder's stop ids, as transformers' generate uses them (generation_config.json's,
    // else config.json's eos_token_id, an id or a list)...
    l.eos_token_ids = opts.defaults.eos_token_ids;
    const bool from_config = l.eos_token_ids.empty() && c.contains("eos_token_id");
    if (from_config && c["eos_token_id"].is_array()) {
      for (const auto& v : c["eos_token_id"])
        if (v.is_number_integer()) l.eos_token_ids.push_back(v.get<int64_t>());
    } else if (from_config && c["eos_token_id"].is_number_integer()) {
      l.eos_token_ids.push_back(c["eos_token_id"].get<int64_t>());
    }
    // ...and the tokenizer's eos_token, which chat models end their turn with.
    if (auto eos = tok.special_token("eos_token"))
      if (auto id = tok.token_to_id(*eos))
        if (std::find(l.eos_token_ids.begin(), l.eos_token_ids.end(), *id) == l.eos_token_ids.end())
          l.eos_token_ids.push_back(*id);
  }
  return l;
}

// No early exit on the first differing byte: the time taken says nothing about the key.
bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

const char* status_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "server_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

}  // namespace

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_body(e.status, e.type, e.what()));
}

Server::Impl::Impl(std::shared_ptr<PeftModel> p, std::shared_ptr<const Tokenizer> t, ServerOptions o)
    : opts(std::move(o)), peft(std::move(p)), tok(std::move(t)) {
  if (!peft || !tok) throw std::invalid_argument("serve: a model and a tokenizer are required");
  if (opts.served_model_name.empty()) throw std::invalid_argument("serve: the served model name is empty");
  limits = model_limits(*peft, *tok, opts);
  for (const auto& name : peft->adapters()) {
    const auto why = peft->mixed_batch_refusal(name);
    if (!why.empty()) throw std::invalid_argument("adapter '" + name + "' cannot be served: " + why);
    adapters.insert(name);
  }
  created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
  engine = std::make_unique<Engine>(*peft, opts.engine);
  limits.virtual_tokens = [this](const std::string& model) {
    return model == opts.served_model_name ? 0 : engine->virtual_tokens(model);
  };
  add_routes();
}

bool Server::Impl::authorized(const httplib::Request& req) const {
  if (opts.api_key.empty()) return true;
  const std::string h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  return h.size() > prefix.size() && h.compare(0, prefix.size(), prefix) == 0 &&
         constant_time_equal(h.substr(prefix.size()), opts.api_key);
}

std::string Server::Impl::resolve_model(const std::string& model) {
  if (model == opts.served_model_name) return "";
  if (adapters.count(model)) return model;  // the caller holds adapters_mu
  throw ApiError(404, "not_found_error",
                 "model '" + model + "' does not exist (the base is '" + opts.served_model_name +
                     "'; GET /v1/models lists the adapters)");
}

void Server::Impl::list_models(httplib::Response& res) {
  auto entry = [&](const std::string& id, const json& parent) {
    return json{{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "peft"},
                {"root", id}, {"parent", parent}};
  };
  json data = json::array({entry(opts.served_model_name, nullptr)});
  std::lock_guard lock(adapters_mu);
  for (const auto& a : adapters) data.push_back(entry(a, opts.served_model_name));
  send_json(res, 200, {{"object", "list"}, {"data", data}});
}

void Server::Impl::add_routes() {
  http.set_payload_max_length(opts.max_body_bytes);
  // Each waiting or streaming request holds a thread: enough for a full batch and a
  // queue, within reason (more connections wait in httplib's own queue).
  const auto threads = static_cast<size_t>(std::clamp<int64_t>(opts.engine.max_batch + opts.engine.max_queue, 8, 128));
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool guarded = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
    if (guarded && !authorized(req)) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, ApiError(401, "authentication_error", "missing or wrong API key (Authorization: Bearer KEY)"));
      return httplib::Server::HandlerResponse::Handled;
    }
    // Matched here, not by a std::regex route: a long path must not cost a deep regex.
    const std::string prefix = "/v1/adapters/";
    if (req.method == "DELETE" && req.path.rfind(prefix, 0) == 0) {
      unload_adapter(req.path.substr(prefix.size()), res);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http.Post("/v1/completions", [this](const auto& req, auto& res) { completions(req, res, false); });
  http.Post("/v1/chat/completions", [this](const auto& req, auto& res) { completions(req, res, true); });
  http.Get("/v1/models", [this](const auto&, auto& res) { list_models(res); });
  http.Post("/v1/adapters", [this](const auto& req, auto& res) { load_adapter(req, res); });
  http.Get("/health", [this](const auto&, auto& res) {
    send_json(res, draining ? 503 : 200, {{"status", draining ? "draining" : "ok"}});
  });
  http.Get("/metrics", [this](const auto&, auto& res) {
    size_t n;
    {
      std::lock_guard lock(adapters_mu);
      n = adapters.size();
    }
    res.set_content(metrics.render(engine->stats(), n), "text/plain; version=0.0.4");
  });
  // Whatever httplib answers by itself (unknown path 404, body too large 413, ...) gets
  // an OpenAI-style body too.
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string msg = res.status == 404   ? "no route for " + req.method + " " + req.path.substr(0, 200)
                            : res.status == 413 ? std::string("the request body is too large")
                                                : "HTTP status " + std::to_string(res.status);
    send_json(res, res.status, error_body(res.status, status_type(res.status), msg));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg += std::string(": ") + e.what();
    } catch (...) {
    }
    send_json(res, 500, error_body(500, "server_error", msg));
  });
  http.set_logger([this](const httplib::Request&, const httplib::Response& res) { metrics.count_response(res.status); });
}

Server::Server(std::shared_ptr<PeftModel> peft, std::shared_ptr<const Tokenizer> tok, ServerOptions opts)
    : impl_(std::make_unique<Impl>(std::move(peft), std::move(tok), std::move(opts))) {}

Server::~Server() { stop(); }

void Server::start() {
  auto& i = *impl_;
  if (i.listener.joinable()) throw std::logic_error("serve: already started");
  i.port = i.opts.port == 0 ? i.http.bind_to_any_port(i.opts.host) : (i.http.bind_to_port(i.opts.host, i.opts.port)
                                                                         ? i.opts.port
                                                                         : -1);
  if (i.port <= 0)
    throw std::runtime_error("cannot listen on " + i.opts.host + ":" + std::to_string(i.opts.port) +
                             " (address in use, or not an address of this machine?)");
  i.listener = std::thread([&i] { i.http.listen_after_bind(); });
}

int Server::port() const { return impl_->port; }

std::string Server::url() const {
  const auto& h = impl_->opts.host;
  return "http://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + std::to_string(impl_->port);
}

void Server::stop() {
  auto& i = *impl_;
  std::lock_guard lock(i.stop_mu);
  if (i.stopped) return;
  i.stopped = true;
  i.draining = true;  // new requests get 503
  i.engine->drain();  // queued and running requests finish
  const auto deadline = std::chrono::steady_clock::now() + kDrainGrace;
  while (i.in_flight > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  i.http.stop();
  if (i.listener.joinable()) i.listener.join();
}

}  // namespace peft
