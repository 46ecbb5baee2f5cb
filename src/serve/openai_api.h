// OpenAI's completion API as JSON: parsing requests (every field checked, with the error
// a client gets for it) and building responses and stream chunks.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "peft/generate.h"

namespace peft {

class Tokenizer;

// An error the client gets as {"error": {"message", "type", "code"}} with this HTTP status.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string type, const std::string& message)
      : std::runtime_error(message), status(status), type(std::move(type)) {}
  int status;
  std::string type;  // invalid_request_error, not_found_error, authentication_error, ...
};

nlohmann::json error_body(int status, const std::string& type, const std::string& message);

// What the model knows about itself that requests are checked against.
struct ModelLimits {
  int64_t vocab_size = 0;      // 0: unknown (prompt ids are not range-checked)
  int64_t max_context = 0;     // prompt + max_tokens (an encoder-decoder's: the prompt alone)
  // Encoder-decoder models: the prompt is the encoder's input and the answer the decoder's
  // output, which starts from decoder_start; max_target bounds both (0: no limit).
  bool encoder_decoder = false;
  int64_t max_target = 0;
  std::vector<int64_t> eos_token_ids;
  // The virtual tokens a model name's adapter puts before every prompt (soft prompts);
  // they take context too. Unset: none.
  std::function<int64_t(const std::string& model)> virtual_tokens;
  // What a request leaves out takes the model folder's setting where it has one (vLLM's
  // --generation-config auto), else OpenAI's default.
  ServingDefaults defaults;
};

struct CompletionRequest {
  bool chat = false;
  std::string model;
  std::vector<int64_t> prompt;
  GenerationConfig gen;
  std::vector<std::string> stop;
  bool stream = false, include_usage = false;
  int64_t n = 1;  // choices: each its own engine request, choice i drawn with seed + i
};

// One choice's answer.
struct Choice {
  std::string text;
  std::vector<int64_t> token_ids;
  std::string finish_reason;
};

// Parses a /v1/completions (chat = false) or /v1/chat/completions body. Throws ApiError
// (400) naming the field at fault.
CompletionRequest parse_completion_request(const std::string& body, bool chat, const Tokenizer& tok,
                                           const ModelLimits& limits);

// The parts of a response that every chunk shares.
struct ResponseHeader {
  std::string id;       // cmpl-... / chatcmpl-...
  int64_t created = 0;  // Unix seconds
  std::string model;
  bool chat = false;
};
ResponseHeader make_response_header(bool chat, const std::string& model);

// The whole answer: choices[i] has index i; usage counts the prompt once and every
// choice's tokens.
nlohmann::json completion_response(const ResponseHeader& h, const std::vector<Choice>& choices, size_t prompt_tokens);
// A stream chunk for choice `index`; an empty finish_reason is null. `first` opens a chat's
// assistant turn.
nlohmann::json completion_chunk(const ResponseHeader& h, size_t index, const std::string& text,
                                const std::vector<int64_t>& token_ids, const std::string& finish_reason,
                                bool first);
nlohmann::json usage_chunk(const ResponseHeader& h, size_t prompt_tokens, size_t completion_tokens);

// JSON as sent: invalid UTF-8 (a model can emit anything) becomes U+FFFD, never an exception.
std::string dump_json(const nlohmann::json& j);

}  // namespace peft
