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
  bool jsonl = false, decode = false, no_special = false, skip_special = false;
};

nlohmann::json offsets_json(const Encoding& e) {
  nlohmann::json o = nlohmann::json::array();
  for (const auto& [s, t] : e.offsets) o.push_back({s, t});
  return o;
}

// {"ids": [...], "offsets": [[b, e], ...]} written as it is formatted: a long text's
// output is never held as a JSON tree.
void write_ids_offsets(std::ostream& out, const Encoding& e) {
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
  out << buf << "]}\n";
}

void run(const TokenizeArgs& a) {
  auto tok = Tokenizer::from_file(a.dir);
  if (!a.text.empty()) {
    auto e = tok.encode(a.text, !a.no_special);
    std::cout << "ids:     " << nlohmann::json(e.ids).dump() << "\n"
              << "tokens:  " << nlohmann::json(e.tokens).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n"
              << "offsets: " << offsets_json(e).dump() << "\n";
    return;
  }
  if (!a.jsonl && !a.decode) throw std::invalid_argument("give --text, --jsonl or --decode");
  std::string line;
  for (size_t n = 1; std::getline(std::cin, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "stdin line " + std::to_string(n);
    const nlohmann::json j = parse_json(line, where);
    if (a.decode) {
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
      const auto e = tok.encode(j.at("text").get_ref<const std::string&>(), !a.no_special);
      write_ids_offsets(std::cout, e);
    }
  }
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "tokenize",
      "Encode text with a Hugging Face tokenizer.json (ids, tokens, offsets in bytes of the UTF-8 input), "
      "or decode ids");
  auto a = std::make_shared<TokenizeArgs>();
  cmd->add_option("tokenizer", a->dir, "tokenizer.json, or a folder holding it")->required()->check(CLI::ExistingPath);
  cmd->add_option("--text", a->text, "Text to encode; prints ids, tokens and offsets");
  cmd->add_flag("--jsonl", a->jsonl, "Read {\"text\": ...} lines on stdin, write {\"ids\", \"offsets\"} lines");
  cmd->add_flag("--decode", a->decode, "Read {\"ids\": [...]} lines on stdin, write {\"text\": ...} lines");
  cmd->add_flag("--no-special", a->no_special, "Do not add special tokens (BOS, [CLS], ...)");
  cmd->add_flag("--skip-special", a->skip_special, "With --decode: leave special tokens out of the text");
  cmd->callback([a] { run(*a); });
}

}  // namespace peft::cli
