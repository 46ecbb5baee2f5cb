// peft tokenize TOKENIZER_DIR: encode or decode text with a tokenizer.json.
#include <iostream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "peft/tokenizer.h"
#include "util/json_file.h"

namespace peft::cli {

namespace {

struct TokenizeArgs {
  std::string dir, text;
  bool jsonl = false, decode = false, chat = false, no_special = false, skip_special = false;
  bool no_padding = false, no_truncation = false, target = false;
  size_t max_length = 0;  // 0: tokenizer.json's truncation
};

// One text encoded as `tokenizers`' Tokenizer.encode encodes it: truncated, then padded
// when tokenizer.json asks for padding (a Fixed length pads even a single text).
Encoding encode_as_tokenizers(const Tokenizer& tok, const std::string& text, bool add_special, bool target) {
  if (!tok.padding()) return target ? tok.encode_target(text, add_special) : tok.encode(text, add_special);
  return std::move(tok.encode_batch({text}, add_special)[0]);
}

nlohmann::json offsets_json(const Encoding& e) {
  nlohmann::json o = nlohmann::json::array();
  for (const auto& [s, t] : e.offsets) o.push_back({s, t});
  return o;
}

// {"ids": [...], "offsets": [[b, e], ...]} written as it is formatted: a long text's
// output is never held as a JSON tree.
void write_ids_offsets(std::ostream& out, const Encoding& e, bool with_mask) {
  std::string buf = "{\"ids\":[";
  for (size_t i = 0; i < e.ids.size(); ++i) (buf += i ? "," : "") += std::to_string(e.ids[i]);
  out << buf << "],\"offsets\":[";
  buf.clear();
  for (size_t i = 0; i < e.offsets.size(); ++i) {
    if (buf.size() > (1 << 16)) {
      out << buf;
      buf.clear();
    }
    ((((buf += i ? ",[" : "[") += std::to_string(e.offsets[i].first)) += ",") += std::to_string(e.offsets[i].second)) += "]";
  }
  out << buf << "]";
  if (with_mask) out << ",\"attention_mask\":" << nlohmann::json(e.attention_mask).dump();
  out << "}\n";
}

// {"messages": [...], "add_generation_prompt": false} -> {"text", "ids"}: the chat template
// rendered as transformers' apply_chat_template(tokenize=False), then encoded without
// adding special tokens, as apply_chat_template(tokenize=True) does.
void write_chat(std::ostream& out, const Tokenizer& tok, const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("messages") || !j.at("messages").is_array())
    throw std::runtime_error(where + ": expected {\"messages\": [...], \"add_generation_prompt\": false}");
  for (const auto& [key, _] : j.items())
    if (key != "messages" && key != "add_generation_prompt")
      throw std::runtime_error(where + ": unknown key '" + key + "' (messages, add_generation_prompt)");
  const bool gen = j.contains("add_generation_prompt") && strict_get<bool>(j.at("add_generation_prompt"), where + ": add_generation_prompt");
  const std::string text = tok.apply_chat_template(nlohmann::ordered_json::parse(j.at("messages").dump()), gen);
  const auto e = tok.encode(text, /*add_special_tokens=*/false);
  out << nlohmann::json{{"text", text}, {"ids", e.ids}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
      << "\n";
}

void run(const TokenizeArgs& a) {
  auto tok = Tokenizer::from_file(a.dir);
  if (a.no_truncation) tok.no_truncation();
  if (a.max_length > 0) tok.enable_truncation(a.max_length);
  if (a.no_padding) tok.no_padding();
  const bool with_mask = tok.padding().has_value();
  if (!a.text.empty()) {
    auto e = encode_as_tokenizers(tok, a.text, !a.no_special, a.target);
    std::cout << "ids:     " << nlohmann::json(e.ids).dump() << "\n"
              << "tokens:  " << nlohmann::json(e.tokens).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n"
              << "offsets: " << offsets_json(e).dump() << "\n";
    if (with_mask) std::cout << "attention_mask: " << nlohmann::json(e.attention_mask).dump() << "\n";
    return;
  }
  if (a.jsonl + a.decode + a.chat != 1) throw std::invalid_argument("give one of --text, --jsonl, --decode or --chat");
  std::string line;
  for (size_t n = 1; std::getline(std::cin, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "stdin line " + std::to_string(n);
    const nlohmann::json j = parse_json(line, where);
    if (a.chat) {
      write_chat(std::cout, tok, j, where);
    } else if (a.decode) {
      if (!j.is_object() || !j.contains("ids") || !j.at("ids").is_array())
        throw std::runtime_error(where + ": expected {\"ids\": [...]}");
      std::vector<int64_t> ids;
      for (const auto& v : j.at("ids")) ids.push_back(strict_get<int64_t>(v, where + ": ids"));
      std::cout << nlohmann::json{{"text", tok.decode(ids, a.skip_special)}}.dump(
                       -1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    } else {
      if (!j.is_object() || !j.contains("text") || !j.at("text").is_string())
        throw std::runtime_error(where + ": expected {\"text\": \"...\"}");
      const auto e = encode_as_tokenizers(tok, j.at("text").get_ref<const std::string&>(), !a.no_special, a.target);
      write_ids_offsets(std::cout, e, with_mask);
    }
  }
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "tokenize",
      "Encode text with a Hugging Face tokenizer.json or a MarianTokenizer folder (ids, tokens, offsets in bytes "
      "of the UTF-8 input), or decode ids");
  cmd->footer("Examples:\n  peft tokenize ./all-MiniLM-L6-v2 --text 'Hello world'\n"
              "  echo '{\"text\": \"Hello world\"}' | peft tokenize ./SmolLM2-135M --jsonl --no-special\n"
              "  echo '{\"ids\": [19556, 905]}' | peft tokenize ./SmolLM2-135M --decode\n"
              "  echo '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"add_generation_prompt\": true}' | "
              "peft tokenize SmolLM2-135M-Instruct.Q4_1.gguf --chat\n"
              "tokenizer.json's \"truncation\" and \"padding\" apply as in `tokenizers`' Tokenizer.encode: "
              "all-MiniLM-L6-v2's pads every text to 128 tokens (attention_mask printed). Not honoured: a "
              "truncation \"direction\" of Left (cut from the right) and \"stride\" (no overflowing parts).");
  auto a = std::make_shared<TokenizeArgs>();
  cmd->add_option("tokenizer", a->dir, "tokenizer.json, a folder holding it, or a MarianTokenizer folder")->required()->check(CLI::ExistingPath);
  cmd->add_option("--text", a->text, "Text to encode; prints ids, tokens and offsets");
  cmd->add_flag("--jsonl", a->jsonl, "Read {\"text\": ...} lines on stdin, write {\"ids\", \"offsets\"} lines");
  cmd->add_flag("--decode", a->decode, "Read {\"ids\": [...]} lines on stdin, write {\"text\": ...} lines");
  cmd->add_flag("--chat", a->chat,
                "Read {\"messages\": [...], \"add_generation_prompt\": bool} lines on stdin, write {\"text\", \"ids\"} "
                "lines: the model's chat template rendered and encoded as transformers' apply_chat_template does");
  cmd->add_flag("--target", a->target,
                "Encode as the target text of an encoder-decoder model (transformers' text_target=; differs for "
                "MarianTokenizer folders, whose targets use target.spm)");
  cmd->add_flag("--no-special", a->no_special, "Do not add special tokens (BOS, [CLS], ...)");
  cmd->add_flag("--skip-special", a->skip_special, "With --decode: leave special tokens out of the text");
  cmd->add_flag("--no-padding", a->no_padding,
                "Ignore tokenizer.json's \"padding\" (tokenizers' no_padding()); with it, a Fixed length pads "
                "every text and an attention_mask is printed");
  cmd->add_flag("--no-truncation", a->no_truncation,
                "Ignore tokenizer.json's \"truncation\" (tokenizers' no_truncation())");
  cmd->add_option("--max-length", a->max_length,
                  "Truncate to this many tokens, special tokens included (tokenizers' enable_truncation)");
  cmd->callback([a] { run(*a); });
}

}  // namespace peft::cli
