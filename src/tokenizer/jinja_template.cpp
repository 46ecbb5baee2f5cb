// The public face of the Jinja engine: parsing, rendering, and the context
// transformers' apply_chat_template builds.
#include "peft/jinja.h"

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_parser.h"

namespace peft {

namespace {

std::string one_line(std::string s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n') s.replace(i, 1, "\\n");
    if (s[i] == '\r') s.replace(i, 1, "\\r");
  }
  return s;
}

std::string locate(const std::string& where, int line, int col) {
  std::string out = "jinja: ";
  if (!where.empty()) out += where + ": ";
  if (line > 0) out += "line " + std::to_string(line) + ", col " + std::to_string(col) + ": ";
  return out;
}

}  // namespace

JinjaError::JinjaError(const std::string& where, int line, int col, const std::string& detail)
    : std::runtime_error(locate(where, line, col) + one_line(detail)), line_(line), col_(col), detail_(detail) {}

ChatTemplate ChatTemplate::parse(const std::string& source, const std::string& where) {
  return ChatTemplate(jinja::parse_template(source, where));
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context, const RenderOptions& options) const {
  return jinja::Renderer(*program_, options).render(context);
}

namespace {

using Json = nlohmann::ordered_json;

// Names transformers' special_tokens_map passes to templates (SPECIAL_TOKENS_ATTRIBUTES).
const char* const kSpecialTokens[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                      "pad_token", "cls_token", "mask_token"};

// The message as render_jinja_template sees it: None-valued keys dropped (by
// apply_chat_template), then reasoning copied under `thinking` and `reasoning_content`.
Json prepare_message(const Json& message) {
  if (!message.is_object()) return message;
  Json m = Json::object();
  for (const auto& [k, v] : message.items())
    if (!v.is_null()) m[k] = v;
  const Json* reasoning = nullptr;
  for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
    if (m.contains(key)) {
      reasoning = &m[key];
      break;
    }
  }
  if (!reasoning) return m;
  Json out = Json::object();  // {"thinking": r, **m, "reasoning_content": r}
  out["thinking"] = *reasoning;
  for (const auto& [k, v] : m.items()) out[k] = v;
  out["reasoning_content"] = *reasoning;
  return out;
}

}  // namespace

std::string render_chat(const ChatTemplate& tmpl, const nlohmann::ordered_json& messages, bool add_generation_prompt,
                        const nlohmann::ordered_json& special_tokens, const nlohmann::ordered_json& extra,
                        const RenderOptions& options) {
  Json context = Json::object();
  Json chat = Json::array();
  for (const auto& m : messages) chat.push_back(prepare_message(m));
  context["messages"] = std::move(chat);
  context["tools"] = extra.is_object() && extra.contains("tools") ? extra["tools"] : Json(nullptr);
  context["documents"] = extra.is_object() && extra.contains("documents") ? extra["documents"] : Json(nullptr);
  context["add_generation_prompt"] = add_generation_prompt;
  if (special_tokens.is_object()) {
    for (const char* name : kSpecialTokens) {
      if (!special_tokens.contains(name)) continue;
      const Json& t = special_tokens[name];
      if (t.is_string()) {
        context[name] = t;
      } else if (t.is_object() && t.contains("content") && t["content"].is_string()) {
        context[name] = t["content"];  // an AddedToken
      }
    }
  }
  if (extra.is_object()) {
    for (const auto& [k, v] : extra.items())
      if (k != "tools" && k != "documents") context[k] = v;
  }
  return tmpl.render(context, options);
}

std::optional<std::string> chat_template_from_config(const nlohmann::ordered_json& config, const std::string& name) {
  if (!config.is_object() || !config.contains("chat_template")) return std::nullopt;
  const Json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (!t.is_array()) return std::nullopt;
  const std::string want = name.empty() ? "default" : name;
  for (const Json& entry : t) {
    if (entry.is_object() && entry.contains("name") && entry["name"] == want && entry.contains("template") &&
        entry["template"].is_string())
      return entry["template"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace peft
