#include "generation.h"

#include <condition_variable>
#include <deque>
#include <mutex>

#include "metrics.h"

namespace peft {

using Clock = std::chrono::steady_clock;

struct Generation::Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<TokenEvent> events;
  // Engine-thread only: when the request was submitted and its last token came.
  Clock::time_point submitted, last_token;
  bool first = true;
};

Generation::Generation(Engine& engine, const Tokenizer& tok, const CompletionRequest& req,
                       const std::string& adapter, ServerMetrics& metrics, std::function<void()> on_done)
    : engine_(engine), channel_(std::make_shared<Channel>()), decoder_(tok, req.prompt), stops_(req.stop) {
  ServeRequest r;
  r.prompt = req.prompt;
  r.adapter = adapter;
  r.gen = req.gen;
  // Holds the channel, not this object: the engine may call back after we are gone.
  r.on_event = [ch = channel_, &metrics, on_done = std::move(on_done)](const TokenEvent& e) {
    if (e.token >= 0) {
      const auto now = Clock::now();
      const auto since = ch->first ? ch->submitted : ch->last_token;
      (ch->first ? metrics.ttft : metrics.inter_token).observe(std::chrono::duration<double>(now - since).count());
      ch->first = false;
      ch->last_token = now;
    }
    {
      std::lock_guard lock(ch->mu);
      ch->events.push_back(e);
    }
    ch->cv.notify_one();
    if (e.done && on_done) on_done();
  };
  channel_->submitted = Clock::now();
  try {
    id_ = engine_.submit(std::move(r));
  } catch (const QueueFull& e) {
    throw ApiError(429, "rate_limit_error", std::string("the server is busy: ") + e.what());
  } catch (const UnknownAdapter& e) {
    throw ApiError(404, "not_found_error", e.what());
  } catch (const std::invalid_argument& e) {
    throw ApiError(400, "invalid_request_error", e.what());
  }
  metrics.requests_submitted += 1;
  metrics.prompt_tokens += req.prompt.size();
}

Generation::~Generation() {
  if (!done_) engine_.cancel(id_);
}

void Generation::finish(const std::string& reason, const std::string& error) {
  done_ = true;
  finish_reason_ = reason;
  error_ = error;
}

bool Generation::next(std::string* text, std::vector<int64_t>* ids, std::chrono::milliseconds wait) {
  if (done_) return false;
  std::deque<TokenEvent> events;
  {
    std::unique_lock lock(channel_->mu);
    channel_->cv.wait_for(lock, wait, [&] { return !channel_->events.empty(); });
    events.swap(channel_->events);
  }
  for (const auto& e : events) {
    if (e.token >= 0) {
      ids->push_back(e.token);
      ++n_tokens_;
      *text += stops_.push(decoder_.push(e.token));
      if (stops_.hit()) {
        // The stop string ends the answer; the engine stops working on it.
        engine_.cancel(id_);
        finish("stop");
        return true;
      }
    }
    if (e.done) {
      *text += stops_.push(decoder_.flush());
      if (stops_.hit()) {
        finish("stop");
        return true;
      }
      *text += stops_.flush();
      if (e.finish_reason == "error")
        finish("error", e.error.empty() ? "generation failed" : e.error);
      else if (e.finish_reason == "cancelled")
        finish("error", "the request was cancelled by the server");
      else
        finish(e.finish_reason);
      return true;
    }
  }
  return !events.empty();
}

}  // namespace peft
