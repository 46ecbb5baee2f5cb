// POST /v1/completions and /v1/chat/completions: whole answers and SSE streams.
#include <algorithm>
#include <chrono>

#include "generation.h"
#include "server_impl.h"

namespace peft {

using nlohmann::json;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(200);  // how often a stream checks its client

std::string sse(const json& j) { return "data: " + dump_json(j) + "\n\n"; }

// A stream's state, shared by httplib's content provider and its releaser: one
// generation per choice.
struct Stream {
  std::vector<std::unique_ptr<Generation>> gens;
  std::vector<bool> opened, ended;  // per choice: its first chunk sent; its finish chunk sent
  ResponseHeader header;
  size_t prompt_tokens = 0;
  bool include_usage = false, closed = false;
  std::unique_ptr<InFlight> in_flight;
};

// The SSE text for what choice i's `next` produced: a content chunk, and at its end a chunk
// with the finish reason (or an error event); after the last choice, usage if asked and
// [DONE].
std::string stream_events(Stream& s, size_t i, const std::string& text, const std::vector<int64_t>& ids) {
  std::string out;
  const Generation& gen = *s.gens[i];
  if (!s.opened[i] && s.header.chat) out += sse(completion_chunk(s.header, i, "", {}, "", true));  // the role
  s.opened[i] = true;
  if (!text.empty() || !ids.empty()) out += sse(completion_chunk(s.header, i, text, ids, "", false));
  if (!gen.done() || s.ended[i]) return out;
  s.ended[i] = true;
  if (gen.finish_reason() == "error")
    out += sse(error_body(500, "server_error", gen.error()));
  else
    out += sse(completion_chunk(s.header, i, "", {}, gen.finish_reason(), false));
  if (std::find(s.ended.begin(), s.ended.end(), false) != s.ended.end()) return out;
  size_t completion_tokens = 0;
  for (const auto& g : s.gens) completion_tokens += g->completion_tokens();
  if (s.include_usage) out += sse(usage_chunk(s.header, s.prompt_tokens, completion_tokens));
  out += "data: [DONE]\n\n";
  s.closed = true;
  return out;
}

void stream_response(httplib::Response& res, std::shared_ptr<Stream> s) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [s](size_t, httplib::DataSink& sink) {
        if (s->closed) {
          sink.done();
          return true;
        }
        std::string out;
        const auto wait = kPoll / static_cast<int>(s->gens.size());  // the choices take turns
        for (size_t i = 0; i < s->gens.size() && !s->closed; ++i) {
          if (s->ended[i]) continue;
          std::string text;
          std::vector<int64_t> ids;
          s->gens[i]->next(&text, &ids, wait);
          out += stream_events(*s, i, text, ids);
        }
        if (!sink.is_writable()) return false;  // the client went away: the releaser cancels
        // Never an empty write: httplib takes it for the end of the stream.
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (s->closed) sink.done();
        return true;
      },
      [s](bool) {
        s->gens.clear();  // cancels the requests in the engine that have not finished
        s->in_flight.reset();
      });
}

}  // namespace

std::unique_ptr<Generation> Server::Impl::submit(const CompletionRequest& r) {
  // Held from check to count, so an unload sees every request of its adapter.
  std::lock_guard lock(adapters_mu);
  const std::string adapter = resolve_model(r.model);
  if (adapter.empty()) return std::make_unique<Generation>(*engine, *tok, r, "", metrics);
  auto on_done = [this, adapter] {
    std::lock_guard l(adapters_mu);
    if (--users[adapter] <= 0) users.erase(adapter);
    users_cv.notify_all();
  };
  auto gen = std::make_unique<Generation>(*engine, *tok, r, adapter, metrics, on_done);
  ++users[adapter];
  return gen;
}

void Server::Impl::completions(const httplib::Request& req, httplib::Response& res, bool chat) {
  auto guard = std::make_unique<InFlight>(in_flight);
  try {
    if (draining) throw ApiError(503, "server_unavailable", "the server is shutting down");
    const CompletionRequest r = parse_completion_request(req.body, chat, *tok, limits);
    // One engine request per choice, all queued before any is awaited (a refusal part way
    // cancels those already in).
    std::vector<std::unique_ptr<Generation>> gens;
    for (int64_t i = 0; i < r.n; ++i) {
      CompletionRequest one = r;
      one.gen.seed = r.gen.seed + static_cast<uint64_t>(i);
      gens.push_back(submit(one));
    }
    const auto header = make_response_header(chat, r.model);
    if (r.stream) {
      auto s = std::make_shared<Stream>();
      s->gens = std::move(gens);
      s->opened.assign(s->gens.size(), false);
      s->ended.assign(s->gens.size(), false);
      s->header = header;
      s->prompt_tokens = r.prompt.size();
      s->include_usage = r.include_usage;
      s->in_flight = std::move(guard);
      stream_response(res, std::move(s));
      return;
    }
    std::vector<Choice> choices(gens.size());
    for (size_t i = 0; i < gens.size(); ++i) {
      Generation& gen = *gens[i];
      while (!gen.done()) gen.next(&choices[i].text, &choices[i].token_ids, kPoll);
      if (gen.finish_reason() == "error") throw ApiError(500, "server_error", gen.error());
      choices[i].finish_reason = gen.finish_reason();
    }
    send_json(res, 200, completion_response(header, choices, r.prompt.size()));
  } catch (const ApiError& e) {
    // A full queue while shutting down is the shutdown's doing.
    if (e.status == 429 && draining)
      send_error(res, ApiError(503, "server_unavailable", "the server is shutting down"));
    else
      send_error(res, e);
  }
}

}  // namespace peft
