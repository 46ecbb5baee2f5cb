// Serving engine: continuous batching of generation requests over one base model, each
// request with its own adapter (or none), all in one mixed batch. Soft prompts (prompt
// tuning, P-tuning, CPT) and prefixes (prefix tuning, CARTRIDGE) join it too: their rows
// get their virtual tokens at prefill (PeftModel::with_virtual_tokens).
//
// Encoder-decoder models (T5, BART, Marian, Pegasus, mBART, M2M100/NLLB) serve the same
// way with layer adapters: a request's prompt is the encoder's input, which runs once at
// prefill; its decoder starts from decoder_start_token_id and joins the batch's decoding
// steps, each row at its own position.
//
// A worker thread owns the model. At every decoding step it admits waiting requests (in
// arrival order, while the batch has room and the KV budget allows), prefills each, and
// decodes one token for every running request in a single forward whose rows use their
// own adapters (PeftModel::forward_mixed). Finished requests leave at once, so the batch
// changes from step to step. Adapters are loaded and removed between steps, without
// stopping running requests.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "peft/generate.h"
#include "peft/peft_model.h"

namespace peft {

// What a request hears: each new token, and on the last call why it ended.
struct TokenEvent {
  int64_t token = -1;          // -1 when no token comes with the event (error, cancel)
  bool done = false;
  std::string finish_reason;   // with done: "stop" (EOS/stop id), "length", "cancelled", "error"
  std::string error;           // with finish_reason "error"
};

struct ServeRequest {
  std::vector<int64_t> prompt;  // token ids, non-empty
  std::string adapter;          // "" = the base model
  GenerationConfig gen;         // max_new_tokens, sampling and seed, stop ids (eos_token_ids)
  // Called on the engine thread, in order; must not block for long.
  std::function<void(const TokenEvent&)> on_event;
};

// The queue is full, or the engine is draining (HTTP 429).
struct QueueFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The request names an adapter that is not loaded (HTTP 404).
struct UnknownAdapter : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct EngineOptions {
  int64_t max_batch = 16;        // requests decoded together
  // KV positions reserved by running requests: prompt + max_new_tokens each (an
  // encoder-decoder's: the prompt's cross-attention positions, decoder_start and max_new_tokens).
  int64_t max_kv_tokens = 65536;
  int64_t max_queue = 1024;      // waiting requests; beyond, submit throws QueueFull
  int64_t max_context = 0;       // prompt + max_new_tokens per request; 0: the model's max_position_embeddings
  // Registered adapters kept in memory at once (0: all). Beyond, the least recently used
  // one that no running request uses is unloaded; it is read from its folder again when a
  // request names it.
  int64_t max_resident_adapters = 0;
};

struct EngineStats {
  int64_t queued = 0, running = 0;
  int64_t requests_done = 0, tokens_generated = 0, steps = 0;
  int64_t adapters_registered = 0, adapters_resident = 0, adapter_loads = 0, adapter_evictions = 0;
  std::vector<double> ttft_seconds, inter_token_seconds;  // recent samples (bounded)
};

class Engine {
 public:
  // The engine drives `peft` from its own thread until destroyed; callers touch the model
  // only through run_between_steps.
  Engine(PeftModel& peft, EngineOptions opts = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request and returns its id. Throws UnknownAdapter, std::invalid_argument for
  // a request that can never run (empty prompt, ids outside the vocabulary, too long for
  // the context or the KV budget, an adapter that cannot join a mixed batch) and QueueFull
  // when the queue is full.
  uint64_t submit(ServeRequest r);
  // Ends a queued or running request with finish_reason "cancelled"; false if unknown.
  bool cancel(uint64_t id);
  // Runs fn on the engine thread between two steps (loading or removing an adapter) and
  // returns when it has run; its exception is rethrown here.
  void run_between_steps(const std::function<void(PeftModel&)>& fn);
  // Registers the adapter folder `dir` as `name`: loaded now (checked: an error names the
  // file or why it cannot join mixed batches) and, under max_resident_adapters, unloaded
  // when unused and loaded again on demand. `scale` multiplies its contribution
  // (PeftModel::set_adapter_scale; 1: as trained). Throws std::invalid_argument if the
  // name is taken.
  void register_adapter(const std::string& name, const std::string& dir, double scale = 1.0);
  // Removes an adapter (registered, or loaded through run_between_steps). Throws
  // UnknownAdapter, or std::logic_error while queued or running requests use it.
  void unregister_adapter(const std::string& name);
  // Stops admitting new requests (submit throws QueueFull), lets queued and running ones
  // finish, then returns.
  void drain();
  EngineStats stats() const;
  const EngineOptions& options() const { return opts_; }
  // The adapters requests may name: loaded ones and registered ones, resident or not.
  std::vector<std::string> adapters() const;
  // The virtual tokens a soft prompt or prefix puts before every prompt (they count
  // against the context and the KV budget); 0 for other adapters and unknown names.
  int64_t virtual_tokens(const std::string& adapter) const;

 private:
  struct Running;
  void refresh_adapters();  // engine thread: snapshot of what submit may accept
  void make_resident(const std::string& name);  // engine thread: loads, evicting the LRU if full
  void release_adapter(const std::string& name);  // a request using it ended
  int64_t running_with(const std::string& adapter) const;
  void loop();
  void step();
  void admit();
  void prefill(std::vector<std::unique_ptr<Running>>& fresh);
  // The newcomers' prompts and their adapters, in order.
  static std::vector<std::vector<int64_t>> prompts_of(const std::vector<std::unique_ptr<Running>>& fresh);
  static std::vector<std::string> adapters_of(const std::vector<std::unique_ptr<Running>>& fresh);
  // Each newcomer's first token from its row of logits [k, vocab]; returns the rows that
  // go on (not finished by it).
  std::vector<int64_t> emit_first(std::vector<std::unique_ptr<Running>>& fresh, const at::Tensor& logits);
  void decode();
  // A decoding step's logits [rows, vocab] for the rows' next tokens and positions [rows, 1].
  at::Tensor decode_causal(const at::Tensor& ids, const at::Tensor& positions);
  // Encoder-decoder models (engine_seq2seq.cpp): the same steps, and the rows of what the
  // encoder left (its output, mask and the cross-attention keys and values).
  struct EncoderRows;
  void check_seq2seq_lengths(const ServeRequest& r) const;  // the encoder's and decoder's positions
  void prefill_seq2seq(std::vector<std::unique_ptr<Running>>& fresh);
  at::Tensor decode_seq2seq(const at::Tensor& ids, const at::Tensor& positions);
  void append_rows(KVCache& fresh_cache, const at::Tensor& fresh_mask, std::vector<std::unique_ptr<Running>>& fresh,
                   const std::vector<int64_t>& keep);
  void finish(Running& r, const std::string& reason, const std::string& error = "");
  void fail_all(const std::exception& e);  // a decoding step failed: every running request ends with its error
  void settle(Running& r);
  void remove_rows(const std::vector<size_t>& rows);
  void emit(Running& r, int64_t token);

  PeftModel& peft_;
  EngineOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable wake_, idle_;
  struct Queued {
    uint64_t id;
    ServeRequest req;
    std::chrono::steady_clock::time_point at;
  };
  std::deque<Queued> queue_;
  std::deque<std::function<void()>> commands_;
  std::vector<uint64_t> cancels_;
  std::map<std::string, std::string> adapter_refusals_;  // loaded adapter -> why it cannot mix ("" = it can)
  // Soft-prompt and prefix adapters, loaded or registered -> their virtual tokens per
  // request (its KV positions count them).
  std::map<std::string, int64_t> virtual_tokens_;
  int64_t virtual_tokens_locked(const std::string& adapter) const;  // virtual_tokens, mu_ held
  // KV positions a request reserves: virtual tokens, prompt and max_new_tokens; mu_ held.
  int64_t kv_need_locked(const ServeRequest& r) const;
  struct Registered {
    std::string dir;
    double scale = 1.0;
    bool resident = false;
    int64_t last_used = 0, running = 0;  // the step it last joined the batch; requests running with it
  };
  std::map<std::string, Registered> registered_;
  int64_t vocab_ = 0, context_ = 0;
  std::set<uint64_t> live_;  // queued or running ids
  uint64_t next_id_ = 1;
  bool stopping_ = false, draining_ = false;
  EngineStats stats_;

  // Engine-thread state: the running requests, one row each of the batch KV cache (an
  // encoder-decoder's decoder self-attention), and for encoder-decoder models their
  // encoders' rows.
  std::vector<std::unique_ptr<Running>> running_;
  KVCache cache_;
  std::unique_ptr<EncoderRows> encoder_;  // null for decoder-only models
  int64_t decoder_start_ = -1;            // encoder-decoder models' decoder_start_token_id
  int64_t target_positions_ = 0;          // and their decoders' positions (0: no limit)
  std::optional<MixedBatch> mixed_;  // the rows' adapters, kept while the rows stay
  at::Tensor mask_;  // [rows, cache length], 1 = a real position (rows are left-padded)
  int64_t kv_reserved_ = 0;
  std::thread worker_;
};

}  // namespace peft
