#include "openai_api.h"

#include <chrono>
#include <cmath>
#include <functional>
#include <random>

#include "peft/tokenizer.h"
#include "util/json_file.h"

namespace peft {

using nlohmann::json;

namespace {

constexpr size_t kMaxStops = 16, kMaxStopBytes = 1024, kMaxMessages = 4096;
constexpr int64_t kMaxChoices = 16;  // 'n': each choice is a request of its own

ApiError bad(const std::string& message) { return ApiError(400, "invalid_request_error", message); }

bool present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

// Fields we do not implement are refused unless they hold their default, so a client
// never gets a silently different answer.
void refuse_unsupported(const json& j) {
  if (present(j, "best_of") && strict_get<int64_t>(j["best_of"], "'best_of'") != 1)
    throw bad("'best_of' must be 1");
  if (present(j, "echo") && strict_get<bool>(j["echo"], "'echo'")) throw bad("'echo' is not supported");
  if (present(j, "suffix")) throw bad("'suffix' is not supported");
  if (present(j, "logprobs") && j["logprobs"] != false) throw bad("'logprobs' is not supported");
  for (const char* k : {"presence_penalty", "frequency_penalty"})
    if (present(j, k) && strict_get<double>(j[k], std::string("'") + k + "'") != 0.0)
      throw bad(std::string("'") + k + "' is not supported (only 0)");
}

std::vector<int64_t> parse_ids(const json& arr, const ModelLimits& limits) {
  std::vector<int64_t> ids;
  ids.reserve(arr.size());
  for (const auto& v : arr) {
    const auto id = strict_get<int64_t>(v, "a token id in 'prompt'");
    if (id < 0 || (limits.vocab_size > 0 && id >= limits.vocab_size))
      throw bad("token id " + std::to_string(id) + " in 'prompt' is outside the vocabulary (0.." +
                std::to_string(limits.vocab_size - 1) + ")");
    ids.push_back(id);
  }
  return ids;
}

std::vector<int64_t> parse_prompt(const json& p, const Tokenizer& tok, const ModelLimits& limits) {
  if (p.is_string()) return tok.encode(p.get<std::string>(), true).ids;
  if (!p.is_array()) throw bad("'prompt' must be a string or a list of token ids");
  if (p.empty()) throw bad("the prompt is empty");
  if (p[0].is_number_integer()) return parse_ids(p, limits);
  // A list of prompts: OpenAI allows several, we serve one per request.
  if (p.size() != 1) throw bad("'prompt' must hold exactly one prompt (a string or a list of token ids)");
  if (p[0].is_array()) return parse_ids(p[0], limits);
  if (p[0].is_string()) return parse_prompt(p[0], tok, limits);
  throw bad("'prompt' must be a string or a list of token ids");
}

// OpenAI's content: a string, or a list of parts of which we take the text ones.
std::string message_text(const json& content, size_t i) {
  const std::string where = "'messages[" + std::to_string(i) + "].content'";
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw bad(where + " must be a string or a list of text parts");
  std::string text;
  for (const auto& part : content) {
    if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text"))
      throw bad(where + " parts must be {\"type\": \"text\", \"text\": ...}");
    text += strict_get<std::string>(part["text"], where + " text");
  }
  return text;
}

std::vector<int64_t> parse_messages(const json& j, const Tokenizer& tok) {
  if (!j.contains("messages")) throw bad("'messages' is required");
  const auto& m = j["messages"];
  if (!m.is_array() || m.empty() || m.size() > kMaxMessages)
    throw bad("'messages' must be a non-empty list of {role, content}");
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (size_t i = 0; i < m.size(); ++i) {
    if (!m[i].is_object() || !m[i].contains("role"))
      throw bad("'messages[" + std::to_string(i) + "]' must be an object with a role");
    msgs.push_back({{"role", strict_get<std::string>(m[i]["role"], "'messages[" + std::to_string(i) + "].role'")},
                    {"content", message_text(m[i].value("content", json()), i)}});
  }
  std::string rendered;
  try {
    rendered = tok.apply_chat_template(msgs, true);
  } catch (const std::exception& e) {
    throw bad(std::string("the chat template refused the messages: ") + e.what());
  }
  // The template writes its own special tokens.
  return tok.encode(rendered, false).ids;
}

std::vector<std::string> parse_stop(const json& s) {
  std::vector<std::string> stops;
  if (s.is_string()) {
    stops.push_back(s.get<std::string>());
  } else if (s.is_array() && s.size() <= kMaxStops) {
    for (const auto& v : s) stops.push_back(strict_get<std::string>(v, "an entry of 'stop'"));
  } else {
    throw bad("'stop' must be a string or a list of at most " + std::to_string(kMaxStops) + " strings");
  }
  for (const auto& x : stops)
    if (x.empty() || x.size() > kMaxStopBytes)
      throw bad("each stop string must hold 1 to " + std::to_string(kMaxStopBytes) + " bytes");
  return stops;
}

// vLLM's min_tokens (no stop id before that many tokens), and transformers'
// forced_bos_token_id: an encoder-decoder's first answer token (mBART-50's, NLLB's and
// M2M100's target language).
void parse_forced_tokens(const json& j, GenerationConfig& g, const ModelLimits& limits) {
  if (present(j, "min_tokens")) {
    g.min_new_tokens = strict_get<int64_t>(j["min_tokens"], "'min_tokens'");
    if (g.min_new_tokens < 0 || g.min_new_tokens > g.max_new_tokens)
      throw bad("'min_tokens' must be between 0 and max_tokens (" + std::to_string(g.max_new_tokens) + ")");
  }
  if (!present(j, "forced_bos_token_id")) return;
  if (!limits.encoder_decoder)
    throw bad("'forced_bos_token_id' applies to encoder-decoder models (the decoder's first token)");
  const auto id = strict_get<int64_t>(j["forced_bos_token_id"], "'forced_bos_token_id'");
  if (id < 0 || (limits.vocab_size > 0 && id >= limits.vocab_size))
    throw bad("'forced_bos_token_id' " + std::to_string(id) + " is outside the vocabulary (0.." +
              std::to_string(limits.vocab_size - 1) + ")");
  g.forced_bos_token_id = id;
}

// The sampling settings: the request's, else the model folder's, else OpenAI's (sampling at
// temperature 1). top_k, min_p and repetition_penalty are vLLM's extensions.
void parse_sampling(const json& j, GenerationConfig& g, const ServingDefaults& d) {
  double temperature = d.temperature.value_or(1.0);  // the folder's may be above OpenAI's 2
  if (present(j, "temperature")) {
    temperature = strict_get<double>(j["temperature"], "'temperature'");
    if (!(temperature >= 0.0 && temperature <= 2.0)) throw bad("'temperature' must be in [0, 2]");
  }
  g.do_sample = temperature > 0.0;
  g.temperature = g.do_sample ? temperature : 1.0;
  g.top_p = d.top_p.value_or(1.0);
  if (present(j, "top_p")) g.top_p = strict_get<double>(j["top_p"], "'top_p'");
  if (!(g.top_p > 0.0 && g.top_p <= 1.0)) throw bad("'top_p' must be in (0, 1]");
  g.top_k = d.top_k.value_or(0);
  if (present(j, "top_k")) g.top_k = strict_get<int64_t>(j["top_k"], "'top_k'");
  if (g.top_k == -1) g.top_k = 0;  // vLLM's spelling of "off"
  if (g.top_k < 0) throw bad("'top_k' must be >= 0 (0 or -1: off)");
  g.min_p = d.min_p.value_or(0.0);
  if (present(j, "min_p")) g.min_p = strict_get<double>(j["min_p"], "'min_p'");
  if (!(g.min_p >= 0.0 && g.min_p <= 1.0)) throw bad("'min_p' must be in [0, 1] (0: off)");
  g.repetition_penalty = d.repetition_penalty.value_or(1.0);
  if (present(j, "repetition_penalty"))
    g.repetition_penalty = strict_get<double>(j["repetition_penalty"], "'repetition_penalty'");
  if (!(g.repetition_penalty > 0.0 && g.repetition_penalty <= 100.0))
    throw bad("'repetition_penalty' must be in (0, 100] (1: off)");
  if (present(j, "seed")) {
    g.seed = static_cast<uint64_t>(strict_get<int64_t>(j["seed"], "'seed'"));
  } else {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    g.seed = rng();
  }
}

// max_tokens (chat: or max_completion_tokens) within `room`. Completions default to
// OpenAI's 16 tokens, a chat answer to the room left, or the model folder's max_new_tokens
// (within the room); `over(key, n)` says why n is too many.
void read_max_tokens(const json& j, CompletionRequest& r, const ModelLimits& limits, int64_t room,
                     const std::function<std::string(const std::string& key, int64_t n)>& over) {
  const char* key = r.chat && present(j, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  int64_t n = r.chat ? std::min<int64_t>(room, 1 << 20) : 16;
  if (limits.defaults.max_new_tokens) n = std::clamp<int64_t>(*limits.defaults.max_new_tokens, 1, room);
  if (present(j, key)) n = strict_get<int64_t>(j[key], std::string("'") + key + "'");
  if (n < 1) throw bad(std::string("'") + key + "' must be >= 1");
  if (n > room) throw bad(over(key, n));
  r.gen.max_new_tokens = n;
}

void parse_max_tokens(const json& j, CompletionRequest& r, const ModelLimits& limits) {
  const auto prompt = static_cast<int64_t>(r.prompt.size());
  if (limits.encoder_decoder) {
    // The prompt within the encoder's positions, the answer within the decoder's
    // (decoder_start takes one).
    if (limits.max_context > 0 && prompt > limits.max_context)
      throw bad("the prompt holds " + std::to_string(prompt) + " tokens; the encoder takes at most " +
                std::to_string(limits.max_context));
    const int64_t room = limits.max_target > 0 ? limits.max_target - 1 : INT64_MAX;
    return read_max_tokens(j, r, limits, room, [&](const std::string& key, int64_t n) {
      return "'" + key + "' (" + std::to_string(n) + ") plus the decoder's start token exceeds its " +
             std::to_string(limits.max_target) + " positions";
    });
  }
  const int64_t virt = limits.virtual_tokens ? limits.virtual_tokens(r.model) : 0;
  const int64_t room = limits.max_context > 0 ? limits.max_context - prompt - virt : INT64_MAX;
  const std::string with_virtual =
      virt > 0 ? " (and the adapter's " + std::to_string(virt) + " virtual tokens)" : std::string();
  if (room < 1)
    throw bad("the prompt holds " + std::to_string(prompt) + " tokens" + with_virtual + "; the context is " +
              std::to_string(limits.max_context) + " tokens, with room for at least one more");
  read_max_tokens(j, r, limits, room, [&](const std::string& key, int64_t n) {
    return "the prompt (" + std::to_string(prompt) + " tokens) plus '" + key + "' (" + std::to_string(n) + ")" +
           with_virtual + " exceeds the context of " + std::to_string(limits.max_context) + " tokens";
  });
}

}  // namespace

json error_body(int status, const std::string& type, const std::string& message) {
  return {{"error", {{"message", message}, {"type", type}, {"code", status}}}};
}

CompletionRequest parse_completion_request(const std::string& body, bool chat, const Tokenizer& tok,
                                           const ModelLimits& limits) {
  try {
    const json j = parse_json(body, "the request body");
    if (!j.is_object()) throw bad("the request body must be a JSON object");
    CompletionRequest r;
    r.chat = chat;
    if (!j.contains("model")) throw bad("'model' is required");
    r.model = strict_get<std::string>(j["model"], "'model'");
    refuse_unsupported(j);
    if (chat) {
      r.prompt = parse_messages(j, tok);
    } else {
      if (!j.contains("prompt")) throw bad("'prompt' is required");
      r.prompt = parse_prompt(j["prompt"], tok, limits);
    }
    if (r.prompt.empty()) throw bad("the prompt is empty");
    parse_max_tokens(j, r, limits);
    parse_sampling(j, r.gen, limits.defaults);
    r.gen.eos_token_ids = limits.eos_token_ids;
    parse_forced_tokens(j, r.gen, limits);
    if (present(j, "stop")) r.stop = parse_stop(j["stop"]);
    if (present(j, "n")) r.n = strict_get<int64_t>(j["n"], "'n'");
    if (r.n < 1 || r.n > kMaxChoices) throw bad("'n' must be between 1 and " + std::to_string(kMaxChoices));
    if (present(j, "stream")) r.stream = strict_get<bool>(j["stream"], "'stream'");
    if (present(j, "stream_options")) {
      const auto& o = j["stream_options"];
      if (!o.is_object()) throw bad("'stream_options' must be an object");
      if (present(o, "include_usage")) r.include_usage = strict_get<bool>(o["include_usage"], "'include_usage'");
    }
    return r;
  } catch (const ApiError&) {
    throw;
  } catch (const std::exception& e) {
    throw bad(e.what());  // strict_get, parse_json and the tokenizer name what is wrong
  }
}

ResponseHeader make_response_header(bool chat, const std::string& model) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char hex[25];
  snprintf(hex, sizeof hex, "%016llx%08llx", static_cast<unsigned long long>(rng()),
           static_cast<unsigned long long>(rng() & 0xffffffffULL));
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return {std::string(chat ? "chatcmpl-" : "cmpl-") + hex,
          std::chrono::duration_cast<std::chrono::seconds>(now).count(), model, chat};
}

namespace {
json header_json(const ResponseHeader& h, const char* object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}
json usage_json(size_t prompt_tokens, size_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}
json reason_json(const std::string& r) { return r.empty() ? json(nullptr) : json(r); }
}  // namespace

json completion_response(const ResponseHeader& h, const std::vector<Choice>& choices, size_t prompt_tokens) {
  json j = header_json(h, h.chat ? "chat.completion" : "text_completion");
  j["choices"] = json::array();
  size_t completion_tokens = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json choice = {{"index", i}};
    if (h.chat)
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else
      choice["text"] = c.text;
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = reason_json(c.finish_reason);
    choice["token_ids"] = c.token_ids;
    j["choices"].push_back(choice);
    completion_tokens += c.token_ids.size();
  }
  j["usage"] = usage_json(prompt_tokens, completion_tokens);
  return j;
}

json completion_chunk(const ResponseHeader& h, size_t index, const std::string& text,
                      const std::vector<int64_t>& token_ids, const std::string& finish_reason, bool first) {
  json j = header_json(h, h.chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", index}};
  if (h.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty()) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = reason_json(finish_reason);
  choice["token_ids"] = token_ids;
  j["choices"] = json::array({choice});
  return j;
}

json usage_chunk(const ResponseHeader& h, size_t prompt_tokens, size_t completion_tokens) {
  json j = header_json(h, h.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(prompt_tokens, completion_tokens);
  return j;
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace peft
