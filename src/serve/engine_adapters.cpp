// The engine's adapter registry: adapters named by folder, kept resident up to a bound,
// least recently used first out.
#include <algorithm>
#include <cmath>

#include <c10/core/InferenceMode.h>

#include "peft/engine.h"

namespace peft {

void Engine::refresh_adapters() {
  c10::InferenceMode guard;  // virtual tokens are only counted
  std::map<std::string, std::string> r;
  std::map<std::string, int64_t> virt;
  for (const auto& name : peft_.adapters()) {
    r[name] = peft_.mixed_batch_refusal(name);
    if (const int64_t n = peft_.virtual_tokens(name); n > 0) virt[name] = n;
  }
  std::lock_guard lk(mu_);
  adapter_refusals_ = std::move(r);
  // A registered adapter out of memory keeps its count: its folder gives the same again.
  for (const auto& [name, n] : virtual_tokens_)
    if (!virt.count(name) && registered_.count(name) && !adapter_refusals_.count(name)) virt[name] = n;
  virtual_tokens_ = std::move(virt);
  int64_t resident = 0;
  for (auto& [name, e] : registered_) resident += e.resident = adapter_refusals_.count(name) > 0;
  stats_.adapters_registered = static_cast<int64_t>(registered_.size());
  stats_.adapters_resident = resident;
}

int64_t Engine::virtual_tokens_locked(const std::string& adapter) const {
  auto it = virtual_tokens_.find(adapter);
  return it == virtual_tokens_.end() ? 0 : it->second;
}

int64_t Engine::kv_need_locked(const ServeRequest& r) const {
  const int64_t decoder_start = encoder_ ? 1 : 0;
  return virtual_tokens_locked(r.adapter) + static_cast<int64_t>(r.prompt.size()) + decoder_start +
         r.gen.max_new_tokens;
}

int64_t Engine::virtual_tokens(const std::string& adapter) const {
  std::lock_guard lk(mu_);
  return virtual_tokens_locked(adapter);
}

std::vector<std::string> Engine::adapters() const {
  std::lock_guard lk(mu_);
  std::set<std::string> names;
  for (const auto& [name, _] : adapter_refusals_) names.insert(name);
  for (const auto& [name, _] : registered_) names.insert(name);
  return {names.begin(), names.end()};
}

void Engine::register_adapter(const std::string& name, const std::string& dir, double scale) {
  if (!std::isfinite(scale)) throw std::invalid_argument("an adapter scale must be a finite number");
  if (name.empty() || name == "__base__") throw std::invalid_argument("an adapter needs a name other than '" + name + "'");
  {
    std::lock_guard lk(mu_);
    if (registered_.count(name) || adapter_refusals_.count(name))
      throw std::invalid_argument("an adapter named '" + name + "' already exists");
    registered_[name] = {dir, scale};
  }
  try {
    run_between_steps([&](PeftModel&) {
      make_resident(name);
      std::lock_guard lk(mu_);
      if (const auto& why = adapter_refusals_[name]; !why.empty()) throw std::invalid_argument(why);
    });
  } catch (...) {
    run_between_steps([&](PeftModel& m) {
      if (adapter_refusals_.count(name)) m.delete_adapter(name);
      std::lock_guard lk(mu_);
      registered_.erase(name);
    });
    throw;
  }
}

void Engine::unregister_adapter(const std::string& name) {
  run_between_steps([&](PeftModel& m) {
    bool loaded, known;
    int64_t users = 0;
    {
      std::lock_guard lk(mu_);
      loaded = adapter_refusals_.count(name) > 0;
      known = loaded || registered_.count(name);
      for (const auto& q : queue_) users += q.req.adapter == name;
    }
    users += running_with(name);
    if (!known) throw UnknownAdapter("no adapter named '" + name + "' is loaded");
    if (users > 0)
      throw std::logic_error("adapter '" + name + "' is in use by " + std::to_string(users) + " queued or running requests");
    if (loaded) m.delete_adapter(name);
    std::lock_guard lk(mu_);
    registered_.erase(name);
  });
}

void Engine::make_resident(const std::string& name) {
  std::string dir;
  double scale = 1.0;
  std::vector<std::string> evict;
  {
    std::lock_guard lk(mu_);
    auto it = registered_.find(name);
    if (it == registered_.end()) return;  // loaded by the caller, not ours to manage
    it->second.last_used = stats_.steps;
    if (it->second.resident) return;
    dir = it->second.dir;
    scale = it->second.scale;
    if (opts_.max_resident_adapters > 0) {
      std::vector<std::pair<int64_t, std::string>> idle;  // (last used, name)
      int64_t resident = 0;
      for (const auto& [n, e] : registered_) {
        resident += e.resident;
        if (e.resident && e.running == 0) idle.emplace_back(e.last_used, n);
      }
      std::sort(idle.begin(), idle.end());
      for (size_t i = 0; i < idle.size() && resident - static_cast<int64_t>(i) >= opts_.max_resident_adapters; ++i)
        evict.push_back(idle[i].second);
    }
  }
  for (const auto& n : evict) peft_.delete_adapter(n);
  peft_.load_adapter(dir, name);
  if (scale != 1.0) peft_.set_adapter_scale(name, scale);
  {
    std::lock_guard lk(mu_);
    stats_.adapter_loads++;
    stats_.adapter_evictions += static_cast<int64_t>(evict.size());
  }
  refresh_adapters();
  mixed_.reset();
}

void Engine::release_adapter(const std::string& name) {
  std::lock_guard lk(mu_);
  if (auto it = registered_.find(name); it != registered_.end() && it->second.running > 0) it->second.running--;
}

}  // namespace peft
