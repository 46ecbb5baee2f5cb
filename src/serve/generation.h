// One request's life between the engine thread and the HTTP thread that answers it.
//
// The engine calls back on its own thread, which must never wait: events go into a
// per-request queue (a mutex and a condition variable), and the HTTP thread takes them
// out, decodes text and applies stop strings at its own pace. A stop string cancels the
// request in the engine; so does destroying a Generation that has not finished (the
// client went away).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "openai_api.h"
#include "peft/engine.h"
#include "text_stream.h"

namespace peft {

struct ServerMetrics;

class Generation {
 public:
  // Submits the request; throws ApiError: 400 (the engine refuses it), 404 (the adapter
  // is not loaded), 429 (queue full). `on_done` runs on the engine thread when the engine
  // is through with the request (finished, failed or cancelled).
  Generation(Engine& engine, const Tokenizer& tok, const CompletionRequest& req, const std::string& adapter,
             ServerMetrics& metrics, std::function<void()> on_done = nullptr);
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // Waits up to `wait` for news. Appends the text that became visible and the ids that
  // came with it; returns true when anything changed (new text, ids, or the end).
  bool next(std::string* text, std::vector<int64_t>* ids, std::chrono::milliseconds wait);
  bool done() const { return done_; }
  // "stop" or "length" when done; "error" (see error()) when the engine failed.
  const std::string& finish_reason() const { return finish_reason_; }
  const std::string& error() const { return error_; }
  size_t completion_tokens() const { return n_tokens_; }

 private:
  struct Channel;
  void finish(const std::string& reason, const std::string& error = "");

  Engine& engine_;
  std::shared_ptr<Channel> channel_;
  uint64_t id_ = 0;
  IncrementalDecoder decoder_;
  StopStrings stops_;
  size_t n_tokens_ = 0;
  bool done_ = false;
  std::string finish_reason_, error_;
};

}  // namespace peft
