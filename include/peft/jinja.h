// Chat templates: the subset of Jinja2 that Hugging Face chat templates use, rendered
// byte-identically to transformers' apply_chat_template.
//
// transformers compiles a template in an ImmutableSandboxedEnvironment with
// trim_blocks and lstrip_blocks, the loopcontrols extension (break/continue), its own
// {% generation %} tag, and the globals raise_exception, strftime_now, namespace and
// dict, plus a tojson filter that is json.dumps with ensure_ascii=False. This engine
// implements exactly that environment: Python semantics for values (truthiness, str()
// of ints, floats, lists and dicts, code-point string indexing), jinja2's Undefined,
// scoping (a loop body is a fresh scope per iteration, namespaces are shared), and the
// sandbox's range limit. Anything it does not implement is an error naming the
// construct and its position, never a silent difference.
//
// Untrusted templates are safe to render: output, string sizes, total loop iterations
// and nesting depth are bounded (JinjaLimits), and any byte sequence as template source
// yields either a template or a JinjaError.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace peft {

// Every template error. what() is one line:
//   "jinja: <where>: line 3, col 5: unsupported filter 'xyz'"
class JinjaError : public std::runtime_error {
 public:
  JinjaError(const std::string& where, int line, int col, const std::string& detail);
  int line() const { return line_; }
  int col() const { return col_; }
  // The message without location, as jinja2 would word it where we mimic jinja2.
  const std::string& detail() const { return detail_; }

 private:
  int line_;
  int col_;
  std::string detail_;
};

// The template called raise_exception(message); detail() is the message verbatim.
class JinjaRaised : public JinjaError {
 public:
  using JinjaError::JinjaError;
};

struct JinjaLimits {
  size_t max_output_bytes = size_t{64} << 20;  // the rendered text, and any one string value
  uint64_t max_steps = 10'000'000;              // loop iterations, macro calls, 64-byte units of string work
  int max_depth = 256;                          // macro call and expression nesting
};

struct RenderOptions {
  JinjaLimits limits;
  // The clock strftime_now reads (local time); the real clock when unset.
  std::optional<std::tm> now;
};

class ChatTemplate {
 public:
  // Parses `source` (tokenizer_config.json's "chat_template", or chat_template.jinja);
  // `where` names it in error messages. Unknown tags, filters and tests are errors here,
  // as they are when jinja2 compiles.
  static ChatTemplate parse(const std::string& source, const std::string& where = "chat_template");

  // Renders with `context`'s members as the template's variables.
  std::string render(const nlohmann::ordered_json& context, const RenderOptions& options = {}) const;

  struct Program;  // the parsed template (src/tokenizer/jinja_ast.h)

 private:
  explicit ChatTemplate(std::shared_ptr<const Program> program) : program_(std::move(program)) {}
  std::shared_ptr<const Program> program_;
};

// Renders `messages` as tokenizer.apply_chat_template(messages, tokenize=False, ...) does:
// None-valued message keys dropped, reasoning fields aliased, `tools` and `documents`
// passed (None unless `extra` has them), and the named special tokens
// (bos/eos/unk/sep/pad/cls/mask, as strings or AddedToken objects) of `special_tokens`
// (e.g. the whole tokenizer_config.json) as variables. Other members of `extra`
// (enable_thinking, date_string, ...) become variables too and win over special tokens.
std::string render_chat(const ChatTemplate& tmpl, const nlohmann::ordered_json& messages,
                        bool add_generation_prompt, const nlohmann::ordered_json& special_tokens,
                        const nlohmann::ordered_json& extra = nlohmann::ordered_json::object(),
                        const RenderOptions& options = {});

// The template source in a tokenizer_config.json object: "chat_template" when it is a
// string, or the entry called `name` ("default" when empty) when it is a list of
// {"name", "template"} objects. Nothing when there is none.
std::optional<std::string> chat_template_from_config(const nlohmann::ordered_json& tokenizer_config,
                                                     const std::string& name = "");

}  // namespace peft
