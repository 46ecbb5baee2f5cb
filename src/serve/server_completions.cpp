// POST /v1/completions and /v1/chat/completions: whole answers and SSE streams.
#include <chrono>

#include "generation.h"
#include "server_impl.h"

namespace peft {

using nlohmann::json;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(200);  // how often a stream checks its client

std::string sse(const json& j) { return "data: " + dump_json(j) + "\n\n"; }

// A stream's state, shared by httplib's content provider and its releaser.
struct Stream {
  std::unique_ptr<Generation> gen;
  ResponseHeader header;
  size_t prompt_tokens = 0;
  bool include_usage = false, opened = false, closed = false;
  std::unique_ptr<InFlight> in_flight;
};

// The SSE text for what `next` produced: a content chunk, then at the end a chunk with
// the finish reason (or an error event), usage if asked, and [DONE].
std::string stream_events(Stream& s, const std::string& text, const std::vector<int64_t>& ids) {
  std::string out;
  if (!s.opened && s.header.chat) out += sse(completion_chunk(s.header, "", {}, "", true));  // the assistant's role
  s.opened = true;
  if (!text.empty() || !ids.empty()) out += sse(completion_chunk(s.header, text, ids, "", false));
  if (!s.gen->done()) return out;
  if (s.gen->finish_reason() == "error")
    out += sse(error_body(500, "server_error", s.gen->error()));
  else
    out += sse(completion_chunk(s.header, "", {}, s.gen->finish_reason(), false));
  if (s.include_usage) out += sse(usage_chunk(s.header, s.prompt_tokens, s.gen->completion_tokens()));
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
        std::string text;
        std::vector<int64_t> ids;
        s->gen->next(&text, &ids, kPoll);
        if (!sink.is_writable()) return false;  // the client went away: the releaser cancels
        const std::string out = stream_events(*s, text, ids);
        // Never an empty write: httplib takes it for the end of the stream.
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (s->closed) sink.done();
        return true;
      },
      [s](bool) {
        s->gen.reset();  // cancels the request in the engine if it has not finished
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
    auto gen = submit(r);
    const auto header = make_response_header(chat, r.model);
    if (r.stream) {
      auto s = std::make_shared<Stream>();
      s->gen = std::move(gen);
      s->header = header;
      s->prompt_tokens = r.prompt.size();
      s->include_usage = r.include_usage;
      s->in_flight = std::move(guard);
      stream_response(res, std::move(s));
      return;
    }
    std::string text;
    std::vector<int64_t> ids;
    while (!gen->done()) gen->next(&text, &ids, kPoll);
    if (gen->finish_reason() == "error") throw ApiError(500, "server_error", gen->error());
    send_json(res, 200, completion_response(header, text, ids, gen->finish_reason(), r.prompt.size()));
  } catch (const ApiError& e) {
    // A full queue while shutting down is the shutdown's doing.
    if (e.status == 429 && draining)
      send_error(res, ApiError(503, "server_unavailable", "the server is shutting down"));
    else
      send_error(res, e);
  }
}

}  // namespace peft
