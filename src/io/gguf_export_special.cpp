// gguf.SpecialVocab(dir, load_merges=True).add_to_gguf(...), step for step (gguf-py 0.19.0,
// vocab.py): merges from tokenizer.json; special token ids from tokenizer_config.json
// (looked up among tokenizer.json's added tokens), then from config.json's *_token_id;
// add_bos/eos/sep from the post-processor template, then from tokenizer_config.json; and
// the chat template.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "io/gguf_export_internal.h"

namespace fs = std::filesystem;

namespace peft::gguf_export {
namespace {

// Python's truth value of a JSON value.
bool truthy(const Json& j) {
  if (j.is_null()) return false;
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number()) return j.get<double>() != 0;
  if (j.is_string() || j.is_array() || j.is_object()) return !j.empty();
  return true;
}

Json get(const Json& obj, const std::string& key) {
  return obj.is_object() && obj.contains(key) ? obj[key] : Json();
}

// `item.get(kind, {}).get('id')` for a template item ({"SpecialToken": {"id": ...}}).
Json item_id(const Json& item, const char* kind) { return get(get(item, kind), "id"); }

// Merges as strings; pairs (tokenizers >= 0.20) are joined by a space, a space inside a
// part becoming U+0120 as gguf-py encodes it.
std::vector<std::string> merges(const Json& tok, const std::string& where) {
  const Json list = get(get(tok, "model"), "merges");
  std::vector<std::string> out;
  if (!list.is_array() || list.empty()) return out;
  for (const auto& m : list) {
    if (m.is_string()) {
      out.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      std::string s;
      for (int k = 0; k < 2; ++k) {
        if (k) s += ' ';
        for (char c : m[k].get<std::string>()) s += c == ' ' ? std::string("\xc4\xa0") : std::string(1, c);
      }
      out.push_back(std::move(s));
    } else {
      fail(where, "model.merges: unknown merges format");
    }
  }
  return out;
}

struct Special {
  std::vector<std::string> types = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
  Json ids = Json::object();  // insertion-ordered, first one set wins
  Json add = Json::object();  // insertion-ordered, later ones overwrite in place

  void set_id(const std::string& typ, const Json& tid, const std::string& where) {
    if (!tid.is_number_integer() && !tid.is_boolean()) return;  // Python: isinstance(tid, int)
    const int64_t id = tid.is_boolean() ? tid.get<bool>() : tid.get<int64_t>();
    if (id < 0) fail(where, "invalid value for special token type " + typ + ": " + std::to_string(id));
    if (!ids.contains(typ)) ids[typ] = id;
  }
  bool has_type(const std::string& t) const { return std::find(types.begin(), types.end(), t) != types.end(); }
};

// The crude parse of a TemplateProcessing post-processor that decides add_bos, add_eos
// and add_sep (and may move the EOS to the template's trailing token).
void parse_template(const Json& proc, Json& tc, Json& bos, const Json& cls, Json& eos, const Json& sep, Special& s) {
  const Json single = get(proc, "single"), pair_all = get(proc, "pair");
  Json first, last;
  if (single.is_array() && single.size() > 1) {
    first = item_id(single.front(), "SpecialToken");
    if (truthy(first)) {
      if (!truthy(tc)) bos = first;
      s.add["bos"] = first == bos || first == cls;
    }
    last = item_id(single.back(), "SpecialToken");
    if (truthy(last)) {
      if (!truthy(tc)) {
        eos = last;
      } else if (last != eos) {
        for (const char* extra : {"eot", "eom"})
          if (!s.has_type(extra)) {
            s.types.push_back(extra);
            tc[std::string(extra) + "_token"] = eos;
            break;
          }
        tc["eos_token"] = eos = last;
      }
      s.add["eos"] = last == eos;
    }
  }
  if (!pair_all.is_array() || pair_all.empty()) return;
  const size_t start = truthy(first) && item_id(pair_all.front(), "SpecialToken") == first ? 1 : 0;
  const size_t stop = truthy(last) && item_id(pair_all.back(), "SpecialToken") == last ? pair_all.size() - 1 : pair_all.size();
  if (start >= stop) return;
  const Json pair(std::vector<Json>(pair_all.begin() + start, pair_all.begin() + stop));
  if (item_id(pair.front(), "Sequence") != "A" || item_id(pair.back(), "Sequence") != "B" || pair.size() <= 2) return;
  const Json middle(std::vector<Json>(pair.begin() + 1, pair.end() - 1));  // A [sep] [eos] B
  bool add_sep = false;
  const Json e0 = item_id(middle[0], "SpecialToken");
  if (truthy(e0) && (e0 == sep || e0 == eos) && !truthy(last)) add_sep = true;
  if (middle.size() == 2) {
    const Json e1 = item_id(middle[1], "SpecialToken");
    if (truthy(e1) && (e1 == sep || e1 == eos)) add_sep = true;
  }
  s.add["sep"] = add_sep;
  if (add_sep && !truthy(sep) && truthy(tc)) tc["sep_token"] = eos;
}

// _try_load_from_tokenizer_json's post-processor walk.
void parse_post_processor(const Json& tok, Json& tc, Special& s) {
  Json bos = get(tc, "bos_token"), cls = get(tc, "cls_token"), eos = get(tc, "eos_token"), sep = get(tc, "sep_token");
  if (!truthy(bos) && truthy(cls) && truthy(tc)) tc["bos_token"] = bos = cls;
  if (!truthy(eos) && truthy(sep) && truthy(tc)) tc["eos_token"] = eos = sep;
  const Json pp = get(tok, "post_processor");
  if (!truthy(pp)) return;
  const Json procs = pp.contains("processors") ? pp["processors"] : Json::array({pp});
  for (const auto& proc : procs) {
    const std::string type = get(proc, "type").is_string() ? get(proc, "type").get<std::string>() : "";
    if (type == "RobertaProcessing") {
      s.add["bos"] = true;
      s.add["eos"] = true;
      s.add["sep"] = true;
      if (!truthy(cls) && truthy(tc)) tc["cls_token"] = cls = get(proc, "cls").is_array() ? proc["cls"][0] : bos;
      if (!truthy(sep) && truthy(tc)) tc["sep_token"] = sep = get(proc, "sep").is_array() ? proc["sep"][0] : eos;
    } else if (type == "TemplateProcessing") {
      parse_template(proc, tc, bos, cls, eos, sep, s);
    }
  }
}

// tokenizer_config.json's chat_template, else chat_template.jinja, else chat_template.json.
Json chat_template(const std::string& dir, const Json& tc) {
  const fs::path d(dir);
  Json alt;
  if (fs::exists(d / "chat_template.jinja")) {
    if (fs::exists(d / "additional_chat_templates"))
      fail((d / "additional_chat_templates").string(), "named chat templates are not supported");
    std::ifstream in(d / "chat_template.jinja", std::ios::binary);
    alt = std::string(std::istreambuf_iterator<char>(in), {});
  } else if (fs::exists(d / "chat_template.json")) {
    alt = get(read_json((d / "chat_template.json").string()), "chat_template");
  }
  return tc.contains("chat_template") ? tc["chat_template"] : alt;
}

}  // namespace

void add_special_vocab(GgufMetadata& m, const std::string& dir, const Json& tok, Json tc, const Json& config) {
  const std::string tok_path = (fs::path(dir) / "tokenizer.json").string();
  const std::string tc_path = (fs::path(dir) / "tokenizer_config.json").string();
  Special s;
  const std::vector<std::string> merge_list = merges(tok, tok_path);
  parse_post_processor(tok, tc, s);
  Json templ;
  if (truthy(tc)) {
    templ = chat_template(dir, tc);
    const Json added = get(tok, "added_tokens");
    for (const auto& typ : s.types) {
      if (const Json a = get(tc, "add_" + typ + "_token"); a.is_boolean()) s.add[typ] = a;
      Json entry = get(tc, typ + "_token");
      if (entry.is_object()) entry = get(entry, "content");
      if (!entry.is_string()) continue;
      for (const auto& t : added.is_array() ? added : Json::array())
        if (get(t, "content") == entry) {
          s.set_id(typ, get(t, "id"), tc_path);
          break;
        }
    }
  }
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  for (const auto& typ : s.types) {
    Json id = get(config, typ + "_token_id");
    if (id.is_null() && config.contains("text_config")) id = get(config["text_config"], typ + "_token_id");
    s.set_id(typ, id, cfg_path);
  }

  if (merge_list.empty()) fail(tok_path, "model.merges is empty (llama.cpp needs the merges of a BPE vocabulary)");
  m.add("tokenizer.ggml.merges", GgufValue::string_array(merge_list));
  static const std::map<std::string, std::string> kIdKeys = {
      {"bos", "bos_token_id"}, {"eos", "eos_token_id"}, {"unk", "unknown_token_id"}, {"sep", "seperator_token_id"},
      {"pad", "padding_token_id"}, {"mask", "mask_token_id"}, {"eot", "eot_token_id"}, {"eom", "eom_token_id"}};
  for (const auto& [typ, id] : s.ids.items())  // gguf-py has no writer for cls: skipped
    if (auto k = kIdKeys.find(typ); k != kIdKeys.end())
      m.add("tokenizer.ggml." + k->second, GgufValue::u32(static_cast<uint32_t>(id.get<int64_t>())));
  for (const auto& [typ, value] : s.add.items())  // writers exist for bos, eos and sep only
    if (typ == "bos" || typ == "eos" || typ == "sep")
      m.add("tokenizer.ggml.add_" + typ + "_token", GgufValue::boolean(value.get<bool>()));
  if (templ.is_array()) fail(tc_path, "named chat templates (a list) are not supported");
  // Any other non-string is ignored, as gguf-py ignores it (with a warning).
  if (templ.is_string()) m.add("tokenizer.chat_template", GgufValue::string(templ.get<std::string>()));
}

}  // namespace peft::gguf_export
