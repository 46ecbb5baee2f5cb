// POST /v1/adapters and DELETE /v1/adapters/NAME: adapters registered with and removed
// from the engine while it serves (it loads and unloads them between two steps).
#include <cmath>
#include <chrono>
#include <filesystem>

#include "server_impl.h"
#include "util/json_file.h"

namespace peft {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxNameBytes = 128;
constexpr auto kUnloadWait = std::chrono::minutes(5);

ApiError bad(const std::string& message) { return ApiError(400, "invalid_request_error", message); }

void check_name(const std::string& name, const std::string& base) {
  if (name.empty() || name.size() > kMaxNameBytes)
    throw bad("'name' must hold 1 to " + std::to_string(kMaxNameBytes) + " characters");
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      throw bad("'name' may hold letters, digits, '-', '_' and '.' only");
  if (name == base || name == "__base__") throw ApiError(409, "conflict_error", "'" + name + "' names the base model");
}

void check_path(const std::string& path) {
  std::error_code ec;
  if (path.empty() || !fs::is_directory(path, ec) || !fs::is_regular_file(fs::path(path) / "adapter_config.json", ec))
    throw bad("no adapter at '" + path + "' (a folder with adapter_config.json and adapter_model.safetensors)");
}

}  // namespace

void Server::Impl::load_adapter(const httplib::Request& req, httplib::Response& res) {
  std::string name;
  try {
    json j;
    try {
      j = parse_json(req.body, "the request body");
    } catch (const std::exception& e) {
      throw bad(e.what());
    }
    if (!j.is_object() || !j.contains("name") || !j.contains("path"))
      throw bad("the body must be {\"name\": ..., \"path\": ...}");
    if (!j["name"].is_string() || !j["path"].is_string()) throw bad("'name' and 'path' must be strings");
    name = j["name"].get<std::string>();
    const std::string path = j["path"].get<std::string>();
    double scale = 1.0;  // HF PEFT's set_scale: the adapter's contribution times this
    if (j.contains("scale")) {
      if (!j["scale"].is_number() || !std::isfinite(j["scale"].get<double>()))
        throw bad("'scale' must be a finite number");
      scale = j["scale"].get<double>();
    }
    check_name(name, opts.served_model_name);
    check_path(path);
    {
      std::lock_guard lock(adapters_mu);
      if (adapters.count(name) || pending.count(name))
        throw ApiError(409, "conflict_error", "adapter '" + name + "' is already loaded");
      pending.insert(name);
    }
    try {
      // Loaded between two steps, checked for mixed batches; under --max-adapters the
      // engine may later evict it and read it again on demand.
      engine->register_adapter(name, path, scale);
    } catch (const std::exception& e) {
      std::lock_guard lock(adapters_mu);
      pending.erase(name);
      throw bad("cannot load adapter '" + name + "' from '" + path + "': " + e.what());
    }
    {
      std::lock_guard lock(adapters_mu);
      pending.erase(name);
      adapters.insert(name);
    }
    send_json(res, 200, {{"id", name}, {"object", "model"}, {"owned_by", "peft"}, {"parent", opts.served_model_name}});
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

void Server::Impl::unload_adapter(const std::string& name, httplib::Response& res) {
  {
    std::unique_lock lock(adapters_mu);
    if (!adapters.count(name)) {
      send_error(res, ApiError(404, "not_found_error", "no adapter named '" + name.substr(0, 200) + "'"));
      return;
    }
    adapters.erase(name);  // new requests for it get 404 from here on
    // Its requests already accepted finish first (each is bounded by its max_tokens).
    if (!users_cv.wait_for(lock, kUnloadWait, [&] { return !users.count(name); })) {
      adapters.insert(name);
      send_error(res, ApiError(409, "conflict_error", "adapter '" + name + "' is still in use; try again"));
      return;
    }
  }
  try {
    engine->unregister_adapter(name);
  } catch (const std::exception& e) {
    std::lock_guard lock(adapters_mu);
    adapters.insert(name);
    send_error(res, ApiError(500, "server_error", "cannot unload '" + name + "': " + e.what()));
    return;
  }
  send_json(res, 200, {{"id", name}, {"object", "model"}, {"deleted", true}});
}

}  // namespace peft
