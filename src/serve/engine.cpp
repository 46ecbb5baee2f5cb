#include "peft/engine.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <optional>

#include "peft/layers.h"
#include "peft/seq2seq.h"
#include "serve/engine_rows.h"
#include "serve/generate_rows.h"
#include "serve/logits_processors.h"
#include "util/mask_positions.h"

namespace peft {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kLatencySamples = 4096;

void record(std::vector<double>& samples, double v) {
  if (samples.size() == kLatencySamples) samples.erase(samples.begin(), samples.begin() + kLatencySamples / 2);
  samples.push_back(v);
}

std::string what_of(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) {
    std::string m = c->what_without_backtrace();
    return m.substr(0, m.find('\n'));
  }
  return e.what();
}
}  // namespace

int64_t Engine::Running::choose(const at::Tensor& logits) {
  at::Tensor scores = logits;
  if (has_logits_processors(req.gen))
    scores = process_logits(scores, at::tensor(sequence, at::kLong).view({1, -1}), prompt_len, req.gen);
  return next_tokens(scores, req.gen, gen)[0].item<int64_t>();
}

Engine::Engine(PeftModel& peft, EngineOptions opts) : peft_(peft), opts_(opts) {
  Model& m = peft_.model();
  if (m.task() != TaskKind::kCausalLM) throw std::invalid_argument(m.type_name() + " is not a causal LM; it cannot serve");
  if (Seq2SeqLM* s2s = as_seq2seq(m)) {
    if (s2s->reads_audio())
      throw std::invalid_argument(m.type_name() + " reads audio; serving takes text prompts (use peft transcribe)");
    decoder_start_ = s2s->decoder_start_token_id();
    target_positions_ = s2s->max_target_positions();
    encoder_ = std::make_unique<EncoderRows>();
  }
  if (opts_.max_batch < 1 || opts_.max_kv_tokens < 1 || opts_.max_queue < 0)
    throw std::invalid_argument("max_batch and max_kv_tokens must be >= 1, max_queue >= 0");
  if (auto* emb = m.input_embeddings()) vocab_ = emb->num_embeddings;
  context_ = opts_.max_context > 0 ? opts_.max_context : m.max_positions();
  refresh_adapters();
  worker_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  worker_.join();
}

uint64_t Engine::submit(ServeRequest r) {
  r.gen.validate();
  const auto n = static_cast<int64_t>(r.prompt.size());
  if (n == 0) throw std::invalid_argument("the prompt is empty");
  for (int64_t id : r.prompt)
    if (id < 0 || (vocab_ > 0 && id >= vocab_))
      throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                  std::to_string(vocab_) + ")");
  std::unique_lock lk(mu_);
  if (r.adapter == "__base__") r.adapter.clear();
  if (!r.adapter.empty()) {
    auto it = adapter_refusals_.find(r.adapter);
    if (it == adapter_refusals_.end() && !registered_.count(r.adapter))
      throw UnknownAdapter("no adapter named '" + r.adapter + "' is loaded");
    if (it != adapter_refusals_.end() && !it->second.empty()) throw std::invalid_argument(it->second);
  }
  const int64_t virt = virtual_tokens_locked(r.adapter), need = kv_need_locked(r);
  const std::string with_virtual =
      virt > 0 ? " and the adapter's " + std::to_string(virt) + " virtual tokens" : std::string();
  if (encoder_) {
    check_seq2seq_lengths(r);
  } else if (context_ > 0 && need > context_) {
    throw std::invalid_argument("the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" +
                                std::to_string(r.gen.max_new_tokens) + ")" + with_virtual + " exceeds the context of " +
                                std::to_string(context_) + " tokens");
  }
  if (need > opts_.max_kv_tokens)
    throw std::invalid_argument("the prompt plus max_tokens" + with_virtual + " (" + std::to_string(need) +
                                " tokens) exceeds the KV budget of " + std::to_string(opts_.max_kv_tokens));
  if (stopping_ || draining_) throw QueueFull("the server is shutting down");
  if (static_cast<int64_t>(queue_.size()) >= opts_.max_queue)
    throw QueueFull("the queue is full (" + std::to_string(opts_.max_queue) + " requests waiting)");
  const uint64_t id = next_id_++;
  queue_.push_back({id, std::move(r), Clock::now()});
  live_.insert(id);
  stats_.queued = static_cast<int64_t>(queue_.size());
  lk.unlock();
  wake_.notify_all();
  return id;
}

bool Engine::cancel(uint64_t id) {
  {
    std::lock_guard lk(mu_);
    if (!live_.count(id)) return false;
    cancels_.push_back(id);
  }
  wake_.notify_all();
  return true;
}

void Engine::run_between_steps(const std::function<void(PeftModel&)>& fn) {
  if (std::this_thread::get_id() == worker_.get_id()) {
    fn(peft_);
    refresh_adapters();
    mixed_.reset();
    return;
  }
  // The snapshot submit checks against is refreshed before the caller returns, even when
  // fn fails half-way.
  std::packaged_task<void()> task([&] {
    struct Refresh {
      Engine* e;
      ~Refresh() { e->refresh_adapters(); }
    } refresh{this};
    fn(peft_);
  });
  auto done = task.get_future();
  {
    std::lock_guard lk(mu_);
    if (stopping_) throw std::runtime_error("the engine is stopping");
    commands_.emplace_back([&task] { task(); });
  }
  wake_.notify_all();
  done.get();
}

void Engine::drain() {
  std::unique_lock lk(mu_);
  draining_ = true;
  wake_.notify_all();
  idle_.wait(lk, [&] { return queue_.empty() && live_.empty() && stats_.running == 0; });
}

EngineStats Engine::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

void Engine::loop() {
  c10::InferenceMode guard;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      wake_.wait(lk, [&] {
        return stopping_ || !queue_.empty() || !commands_.empty() || !cancels_.empty() || !running_.empty();
      });
      if (stopping_) break;
    }
    step();
  }
  // Stopping: pending commands still run (their callers wait); whatever is left ends as
  // cancelled.
  std::deque<std::function<void()>> commands;
  {
    std::lock_guard lk(mu_);
    commands.swap(commands_);
  }
  for (auto& c : commands) c();
  for (auto& r : running_) finish(*r, "cancelled");
  running_.clear();
  std::deque<Queued> left;
  {
    std::lock_guard lk(mu_);
    left.swap(queue_);
  }
  for (auto& q : left)
    if (q.req.on_event) q.req.on_event({-1, true, "cancelled", ""});
  std::lock_guard lk(mu_);
  live_.clear();
  stats_.running = stats_.queued = 0;
  idle_.notify_all();
}

void Engine::step() {
  std::deque<std::function<void()>> commands;
  std::vector<uint64_t> cancels;
  {
    std::lock_guard lk(mu_);
    commands.swap(commands_);
    cancels.swap(cancels_);
  }
  for (auto& c : commands) c();  // a packaged task: its exception goes to the caller
  if (!commands.empty()) {
    // Adapters may have changed. A running request whose adapter a command removed ends
    // with an error rather than going on as the base model.
    mixed_.reset();
    std::vector<size_t> orphaned;
    for (size_t i = 0; i < running_.size(); ++i) {
      const std::string& a = running_[i]->req.adapter;
      bool gone;
      {
        std::lock_guard lk(mu_);
        gone = !a.empty() && !adapter_refusals_.count(a);
      }
      if (gone) {
        finish(*running_[i], "error", "adapter '" + a + "' was removed while the request ran");
        orphaned.push_back(i);
      }
    }
    if (!orphaned.empty()) remove_rows(orphaned);
  }
  for (uint64_t id : cancels) {
    std::optional<ServeRequest> queued;
    {
      std::lock_guard lk(mu_);
      auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Queued& q) { return q.id == id; });
      if (it != queue_.end()) {
        queued = std::move(it->req);
        queue_.erase(it);
        live_.erase(id);
      }
    }
    if (queued && queued->on_event) queued->on_event({-1, true, "cancelled", ""});
    for (size_t i = 0; i < running_.size(); ++i)
      if (running_[i]->id == id) {
        finish(*running_[i], "cancelled");
        remove_rows({i});
        break;
      }
  }
  admit();
  if (!running_.empty()) decode();
  std::lock_guard lk(mu_);
  stats_.steps++;
  stats_.queued = static_cast<int64_t>(queue_.size());
  stats_.running = static_cast<int64_t>(running_.size());
  if (queue_.empty() && live_.empty()) idle_.notify_all();
}

// Takes waiting requests in order while the batch has rows and the KV budget room, makes
// their adapters resident, and prefills them together.
void Engine::admit() {
  std::vector<std::unique_ptr<Running>> fresh;
  while (static_cast<int64_t>(running_.size() + fresh.size()) < opts_.max_batch) {
    auto r = std::make_unique<Running>();
    {
      std::lock_guard lk(mu_);
      if (queue_.empty()) break;
      Queued& front = queue_.front();
      const int64_t need = kv_need_locked(front.req);
      if (kv_reserved_ + need > opts_.max_kv_tokens) break;  // in order: the head waits for room
      r->id = front.id;
      r->req = std::move(front.req);
      r->submitted = front.at;
      queue_.pop_front();
      r->reserved = need;
      kv_reserved_ += need;
      if (auto it = registered_.find(r->req.adapter); it != registered_.end()) it->second.running++;
    }
    r->gen = at::detail::createCPUGenerator(r->req.gen.seed);
    r->sequence = encoder_ ? std::vector<int64_t>{decoder_start_} : r->req.prompt;
    r->prompt_len = static_cast<int64_t>(r->sequence.size());
    try {
      if (!r->req.adapter.empty()) {
        make_resident(r->req.adapter);
        std::lock_guard lk(mu_);
        auto refusal = adapter_refusals_.find(r->req.adapter);
        if (refusal == adapter_refusals_.end()) throw UnknownAdapter("adapter '" + r->req.adapter + "' was removed");
        if (!refusal->second.empty()) throw std::invalid_argument(refusal->second);
      }
      if (r->req.gen.max_new_tokens == 0) finish(*r, "length");
      else fresh.push_back(std::move(r));
    } catch (const std::exception& e) {
      finish(*r, "error", what_of(e));
    }
  }
  if (fresh.empty()) return;
  try {
    prefill(fresh);
  } catch (const std::exception& e) {
    for (auto& r : fresh) finish(*r, "error", what_of(e));
  }
}

namespace {
// Left-pads dimension `dim` of t to `len` with zeros.
at::Tensor left_pad(const at::Tensor& t, int64_t dim, int64_t len) {
  const int64_t pad = len - t.size(dim);
  if (pad <= 0) return t;
  auto sizes = t.sizes().vec();
  sizes[dim] = pad;
  return at::cat({at::zeros(sizes, t.options()), t}, dim);
}
}  // namespace

// The newcomers' prompts in one forward (left-padded, each row with its adapter and its
// own positions), their first tokens; then their cache rows join the batch's, the shorter
// side left-padded to the longer.
void Engine::prefill(std::vector<std::unique_ptr<Running>>& fresh) {
  if (encoder_) return prefill_seq2seq(fresh);
  const at::Device dev = peft_.model().device();
  const auto padded = pad_prompts(prompts_of(fresh), 0, /*left=*/true);
  KVCache cache;
  ModelInputs in;
  in.input_ids = padded.ids.to(dev);
  in.attention_mask = padded.mask.to(dev);
  in.position_ids = positions_from_mask(in.attention_mask);
  in.cache = &cache;
  // Logits of the last position only: the head runs on one row of hidden states per
  // request rather than on the whole prompt.
  const MixedBatch mixed = peft_.mixed_batch(adapters_of(fresh));
  in = peft_.with_virtual_tokens(in, mixed);  // soft prompts and prefixes: their rows' virtual tokens first
  const int64_t seq = in.seq_len();
  const at::Tensor positions = in.attention_mask.sum(1).cpu();  // each row's tokens, virtual ones included
  AdaptableLayer* head = peft_.model().output_layer();
  in.skip_logits = head != nullptr;
  auto out = peft_.forward_mixed(in, mixed);
  at::Tensor logits;
  if (head) {
    MixedBatch::Scope scope(&mixed);
    logits = head->forward(out.last_hidden_state.narrow(1, seq - 1, 1)).select(1, 0).to(at::kFloat);
  } else {
    logits = out.logits.select(1, -1).to(at::kFloat);
  }
  for (size_t i = 0; i < fresh.size(); ++i)
    fresh[i]->position = positions[static_cast<int64_t>(i)].item<int64_t>();
  append_rows(cache, in.attention_mask, fresh, emit_first(fresh, logits));
}

std::vector<std::vector<int64_t>> Engine::prompts_of(const std::vector<std::unique_ptr<Running>>& fresh) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& r : fresh) out.push_back(r->req.prompt);
  return out;
}

std::vector<std::string> Engine::adapters_of(const std::vector<std::unique_ptr<Running>>& fresh) {
  std::vector<std::string> out;
  for (const auto& r : fresh) out.push_back(r->req.adapter);
  return out;
}

std::vector<int64_t> Engine::emit_first(std::vector<std::unique_ptr<Running>>& fresh, const at::Tensor& logits) {
  std::vector<int64_t> keep;
  for (size_t i = 0; i < fresh.size(); ++i) {
    Running& r = *fresh[i];
    emit(r, r.choose(logits.narrow(0, static_cast<int64_t>(i), 1)));
    if (r.generated >= 0) keep.push_back(static_cast<int64_t>(i));  // else finished by its first token
  }
  return keep;
}

// Moves the rows `keep` of freshly prefilled requests (their cache and left-padded mask)
// into the batch, the shorter side left-padded to the longer.
void Engine::append_rows(KVCache& cache, const at::Tensor& fresh_mask, std::vector<std::unique_ptr<Running>>& fresh,
                         const std::vector<int64_t>& keep) {
  if (keep.empty()) return;
  auto rows = at::tensor(keep, at::kLong).to(fresh_mask.device());
  auto new_mask = fresh_mask.index_select(0, rows);
  const int64_t len = fresh_mask.size(1);
  const int64_t width = std::max(len, running_.empty() ? 0 : mask_.size(1));
  for (size_t l = 0; l < cache.keys.size(); ++l) {
    auto nk = left_pad(cache.keys[l].index_select(0, rows), 2, width);
    auto nv = left_pad(cache.values[l].index_select(0, rows), 2, width);
    if (running_.empty()) {
      cache.keys[l] = nk, cache.values[l] = nv;
    } else {
      cache.keys[l] = at::cat({left_pad(cache_.keys[l], 2, width), nk}, 0);
      cache.values[l] = at::cat({left_pad(cache_.values[l], 2, width), nv}, 0);
    }
  }
  new_mask = left_pad(new_mask, 1, width);
  mask_ = running_.empty() ? new_mask : at::cat({left_pad(mask_, 1, width), new_mask}, 0);
  cache_ = std::move(cache);
  for (int64_t i : keep) running_.push_back(std::move(fresh[i]));
  mixed_.reset();
}

// One token for every running request: one forward, each row with its own adapter.
void Engine::decode() {
  const at::Device dev = peft_.model().device();
  const auto b = static_cast<int64_t>(running_.size());
  std::vector<int64_t> ids(b), pos(b);
  std::vector<std::string> adapters(b);
  for (int64_t i = 0; i < b; ++i) {
    ids[i] = running_[i]->next_input;
    pos[i] = running_[i]->position;
    adapters[i] = running_[i]->req.adapter;
  }
  mask_ = at::cat({mask_, at::ones({b, 1}, mask_.options())}, 1);
  at::Tensor logits;
  try {
    if (!mixed_) mixed_.emplace(peft_.mixed_batch(adapters));
    const auto next = at::tensor(ids, at::kLong).view({b, 1}).to(dev);
    const auto positions = at::tensor(pos, at::kLong).view({b, 1}).to(dev);
    logits = encoder_ ? decode_seq2seq(next, positions) : decode_causal(next, positions);
  } catch (const std::exception& e) {
    fail_all(e);
    return;
  }
  std::vector<size_t> done;
  for (int64_t i = 0; i < b; ++i) {
    Running& r = *running_[i];
    r.position++;
    emit(r, r.choose(logits.narrow(0, i, 1)));
    if (r.generated < 0) done.push_back(static_cast<size_t>(i));
  }
  if (!done.empty()) remove_rows(done);
}

at::Tensor Engine::decode_causal(const at::Tensor& ids, const at::Tensor& positions) {
  ModelInputs in;
  in.input_ids = ids;
  in.position_ids = positions;
  in.attention_mask = mask_;
  in.cache = &cache_;
  return peft_.forward_mixed(in, *mixed_).logits.select(1, -1).to(at::kFloat);
}

int64_t Engine::running_with(const std::string& adapter) const {
  return std::count_if(running_.begin(), running_.end(), [&](const auto& r) { return r->req.adapter == adapter; });
}

// Sends a token; a request that ends with it is finished (generated set to -1).
void Engine::emit(Running& r, int64_t token) {
  const auto now = Clock::now();
  {
    std::lock_guard lk(mu_);
    const double since = std::chrono::duration<double>(now - (r.generated == 0 ? r.submitted : r.last_token)).count();
    record(r.generated == 0 ? stats_.ttft_seconds : stats_.inter_token_seconds, since);
    stats_.tokens_generated++;
  }
  r.last_token = now;
  r.generated++;
  r.next_input = token;
  r.sequence.push_back(token);
  const auto& eos = r.req.gen.eos_token_ids;
  const bool stop = std::find(eos.begin(), eos.end(), token) != eos.end();
  const bool length = r.generated >= r.req.gen.max_new_tokens;
  if (stop || length) settle(r);
  if (r.req.on_event) r.req.on_event({token, stop || length, stop ? "stop" : length ? "length" : "", ""});
}

// Closes a request's books (marked finished, its adapter use, KV reservation and id
// released, counted done) before its last event goes out, so whoever hears that event
// sees the request done.
void Engine::settle(Running& r) {
  r.generated = -1;
  release_adapter(r.req.adapter);
  std::lock_guard lk(mu_);
  kv_reserved_ -= r.reserved;
  r.reserved = 0;
  live_.erase(r.id);
  stats_.requests_done++;
}

// Ends a request without a token (cancelled, error, or nothing to generate).
void Engine::finish(Running& r, const std::string& reason, const std::string& error) {
  if (r.generated < 0) return;
  settle(r);
  if (r.req.on_event) r.req.on_event({-1, true, reason, error});
}

void Engine::fail_all(const std::exception& e) {
  const std::string why = what_of(e);
  std::vector<size_t> all;
  for (size_t i = 0; i < running_.size(); ++i) finish(*running_[i], "error", why), all.push_back(i);
  remove_rows(all);
}

// Drops finished rows from the batch and its cache, and left columns no row uses any more.
void Engine::remove_rows(const std::vector<size_t>& rows) {
  std::vector<int64_t> keep;
  std::vector<std::unique_ptr<Running>> still;
  for (size_t i = 0; i < running_.size(); ++i)
    if (std::find(rows.begin(), rows.end(), i) == rows.end()) {
      keep.push_back(static_cast<int64_t>(i));
      still.push_back(std::move(running_[i]));
    }
  running_ = std::move(still);
  mixed_.reset();
  if (keep.empty()) {
    cache_ = KVCache();
    mask_ = at::Tensor();
    if (encoder_) *encoder_ = EncoderRows();
    return;
  }
  auto idx = at::tensor(keep, at::kLong).to(mask_.device());
  if (encoder_) encoder_->keep(idx);
  mask_ = mask_.index_select(0, idx);
  const int64_t first = mask_.any(0).to(at::kLong).argmax().item<int64_t>();  // first used column
  const int64_t len = mask_.size(1) - first;
  mask_ = mask_.narrow(1, first, len);
  for (size_t l = 0; l < cache_.keys.size(); ++l) {
    cache_.keys[l] = cache_.keys[l].index_select(0, idx).narrow(2, first, len);
    cache_.values[l] = cache_.values[l].index_select(0, idx).narrow(2, first, len);
  }
}

}  // namespace peft
