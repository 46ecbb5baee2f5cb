// Export to llama.cpp: adapters and models written by our exporters must be, byte for
// byte, the files llama.cpp's converters would write (rebuilt with gguf-py by
// tests/parity/make_gguf_export.py from fixtures made by transformers and HF PEFT), must
// read back through our own GGUF reader to the same config, tokenizer and weights, and
// what llama.cpp cannot express must be refused with a one-line error naming it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/gguf_export_internal.h"
#include "io/gguf_internal.h"
#include "peft/gguf.h"
#include "peft/gguf_export.h"
#include "peft/gguf_llama.h"
#include "pyserver.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

namespace peft {
namespace {

// ---------------------------------------------------------------- helpers

fs::path fixture(const std::string& rel) { return fs::path(PEFT_GGUF_EXPORT_DIR) / rel; }

const Json& manifest() {
  static const Json m = Json::parse(std::ifstream(fixture("manifest.json")));
  return m;
}

fs::path scratch(const std::string& name) {
  const fs::path d = fs::path(PEFT_SCRATCH_DIR) / "gguf_export";
  fs::create_directories(d);
  return d / name;
}

// Exit status of tests/parity/make_gguf_export.py ARGS; its output is printed.
int python(const std::string& args) {
  int status = 0;
  std::fputs(test::run_parity_script("make_gguf_export.py", args, &status).c_str(), stdout);
  return status;
}

// Has the script rebuild each exported file as llama.cpp's converter would and compare.
struct Checks {
  Json jobs = Json::array();
  void lora(const std::string& name, const std::string& base, GgufExportType t, const std::string& ours) {
    jobs.push_back({{"kind", "lora"}, {"dir", fixture(name).string()}, {"base", fixture(base).string()},
                    {"type", gguf_export_type_name(t)}, {"ours", ours}});
  }
  void model(const std::string& name, const std::string& pre, GgufExportType t, const std::string& ours) {
    jobs.push_back({{"kind", "model"}, {"dir", fixture(name).string()}, {"pre", pre},
                    {"type", gguf_export_type_name(t)}, {"ours", ours}});
  }
  int run(const std::string& as) const {
    const fs::path p = scratch(as + ".jobs.json");
    std::ofstream(p) << jobs.dump(2);
    return python("check " + p.string());
  }
};

Json read_json(const fs::path& p) { return Json::parse(std::ifstream(p)); }
void write_json(const fs::path& p, const Json& j) { std::ofstream(p) << j.dump(2); }

// A copy of a fixture folder to edit.
fs::path copy_of(const std::string& name, const std::string& as) {
  const fs::path dst = scratch(as);
  fs::remove_all(dst);
  fs::copy(fixture(name), dst, fs::copy_options::recursive);
  return dst;
}

// The GgufError message of `f`, or "" if it did not throw.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const GgufError& e) {
    return e.what();
  }
  return "";
}

std::string export_lora(const std::string& name, GgufExportType type) {
  const std::string out = scratch(name + "." + gguf_export_type_name(type) + ".gguf").string();
  export_lora_gguf(fixture(name).string(), out, {"", type, ""});  // base from adapter_config.json
  return out;
}

std::string export_model(const std::string& name, GgufExportType type) {
  const std::string out = scratch(name + "." + gguf_export_type_name(type) + ".gguf").string();
  export_model_gguf(fixture(name).string(), out, {type, "", ""});
  return out;
}

constexpr GgufExportType kAllTypes[] = {GgufExportType::F32, GgufExportType::F16, GgufExportType::BF16,
                                        GgufExportType::Q8_0};

// ---------------------------------------------------------------- adapters

TEST(GgufExportLora, AsTheConverterWritesIt) {
  Checks checks;
  for (const auto& [name, a] : manifest()["adapters"].items()) {
    if (!a["exports"].get<bool>()) continue;
    const bool all_types = name == "lora_all" || name == "lora_embed_head";
    for (auto t : kAllTypes)
      if (all_types || t == GgufExportType::F32) checks.lora(name, a["base"].get<std::string>(), t, export_lora(name, t));
  }
  EXPECT_EQ(checks.run("lora"), 0);
}

TEST(GgufExportLora, BaseFromAGgufGivesTheSameFile) {
  const std::string base = export_model("llama_untied", GgufExportType::Q8_0);
  const std::string from_folder = export_lora("lora_all", GgufExportType::F16);
  const std::string out = scratch("lora_all.from_gguf.gguf").string();
  export_lora_gguf(fixture("lora_all").string(), out, {base, GgufExportType::F16, ""});
  std::ifstream a(from_folder, std::ios::binary), b(out, std::ios::binary);
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b), {}));
}

TEST(GgufExportLora, RsLoraAlphaIsRescaledAndSaid) {
  const std::string out = scratch("rslora.gguf").string();
  const GgufExportReport r = export_lora_gguf(fixture("lora_rslora").string(), out);
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_THAT(r.notes[0], HasSubstr("rsLoRA"));
  // lora_alpha 8, r 4: llama.cpp's alpha / r must be PEFT's 8 / sqrt(4).
  const GgufFile g(out);
  EXPECT_FLOAT_EQ(static_cast<float>(g.metadata().get_float("adapter.lora.alpha")) / 4.0f, 4.0f);
}

TEST(GgufExportLora, RefusesWhatLlamaCppCannotExpress) {
  const std::map<std::string, std::string> cases = {
      {"refuse_dora", "DoRA"},
      {"refuse_alpha_pattern", "alpha_pattern"},
      {"refuse_modules_to_save", "modules_to_save"},
      {"refuse_lora_bias", "lora_bias"},
      {"refuse_rslora_ranks", "rsLoRA with several ranks"},
      {"refuse_tied_head", "LoRA on lm_head of a base that ties it"},
      {"refuse_tied_embed", "embeddings of a base that ties them"},
  };
  for (const auto& [name, want] : cases) {
    SCOPED_TRACE(name);
    const std::string msg = error_of([&] { export_lora(name, GgufExportType::F32); });
    EXPECT_THAT(msg, HasSubstr(want));
    EXPECT_THAT(msg, HasSubstr(fixture(name).string()));  // names the file
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
}

TEST(GgufExportLora, RefusesConfigsAndBasesItCannotHandle) {
  const fs::path d = copy_of("lora_all", "edited_adapter");
  const fs::path cfg_path = d / "adapter_config.json";
  const Json cfg = read_json(cfg_path);
  auto with = [&](const char* key, Json value) {
    Json c = cfg;
    c[key] = std::move(value);
    write_json(cfg_path, c);
    return error_of([&] { export_lora_gguf(d.string(), scratch("edited.gguf").string()); });
  };
  EXPECT_THAT(with("peft_type", "LOHA"), HasSubstr("only LoRA adapters"));
  EXPECT_THAT(with("lora_alpha", 0), HasSubstr("lora_alpha 0"));
  EXPECT_THAT(with("use_qalora", true), HasSubstr("use_qalora"));
  EXPECT_THAT(with("base_model_name_or_path", "HuggingFaceTB/SmolLM2-135M"), HasSubstr("pass --base"));
  // A Qwen2 base converts to llama.cpp's qwen2 architecture.
  const fs::path qwen = copy_of("llama_untied", "qwen2_base");
  Json qc = read_json(qwen / "config.json");
  qc["architectures"] = {"Qwen2ForCausalLM"};
  write_json(qwen / "config.json", qc);
  write_json(cfg_path, cfg);
  const std::string msg =
      error_of([&] { export_lora_gguf(d.string(), scratch("edited.gguf").string(), {qwen.string()}); });
  EXPECT_THAT(msg, HasSubstr("qwen2 architecture"));
  EXPECT_THAT(msg, HasSubstr((qwen / "config.json").string()));
}

// ---------------------------------------------------------------- models

TEST(GgufExportModel, AsTheConverterWritesIt) {
  Checks checks;
  for (const auto& [name, m] : manifest()["models"].items())
    for (auto t : kAllTypes)
      if (name != "smol_tok" || t == GgufExportType::F32)  // its 49152-row embedding: one is enough
        checks.model(name, m["pre"].get<std::string>(), t, export_model(name, t));
  EXPECT_EQ(checks.run("models"), 0);
}

TEST(GgufExportModel, ReadsBackToTheSameConfigAndWeights) {
  for (const char* name : {"llama_untied", "llama_tied", "mistral_llama3"}) {
    SCOPED_TRACE(name);
    const GgufFile g(export_model(name, GgufExportType::F32));
    const Json want = read_json(fixture(name) / "config.json");
    const auto got = llama_config_from_gguf(g.header());
    for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                            "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"})
      EXPECT_EQ(got[key], want[key]) << key;
    EXPECT_EQ(static_cast<float>(got["rms_norm_eps"].get<double>()), static_cast<float>(want["rms_norm_eps"].get<double>()));
    EXPECT_EQ(static_cast<float>(got["rope_parameters"]["rope_theta"].get<double>()),
              static_cast<float>(want["rope_parameters"]["rope_theta"].get<double>()));
    // Every weight, renamed and un-permuted as our loader does, equals the checkpoint's
    // (bf16 and f16 widened to float32) bit for bit.
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(fixture(name))) {
      if (e.path().extension() != ".safetensors") continue;
      const gguf_export::StFile st(e.path().string());
      for (const auto& t : st.tensors()) {
        const auto gguf_name = llama_gguf_name(t.name);
        ASSERT_TRUE(gguf_name) << t.name;
        std::vector<float> back = g.dequantize(*gguf_name);
        const auto& info = g.info(*gguf_name);
        if (const int64_t heads = llama_qk_heads(*gguf_name, got))
          llama_unpermute_qk(back.data(), info.shape()[0], 4 * (back.size() / info.shape()[0]), heads);
        const std::vector<float> want_values = st.to_float(t);
        ASSERT_EQ(back.size(), want_values.size()) << t.name;
        EXPECT_EQ(std::memcmp(back.data(), want_values.data(), 4 * back.size()), 0) << t.name;
        ++n;
      }
    }
    const size_t extra = g.contains("rope_freqs.weight") ? 1 : 0;  // llama3 rope's generated factors
    EXPECT_EQ(n + extra, g.tensors().size());
  }
}

TEST(GgufExportModel, TokenizerReadsBackToTheSameIds) {
  const GgufFile g(export_model("llama_untied", GgufExportType::F16));
  const HfTokenizerFiles tok = hf_tokenizer_from_gguf(g.header());
  const fs::path d = scratch("tokenizer_back");
  fs::create_directories(d);
  write_json(d / "tokenizer.json", tok.tokenizer);
  write_json(d / "tokenizer_config.json", tok.tokenizer_config);
  EXPECT_EQ(python("check-tokenizer " + fixture("llama_untied").string() + " " + d.string()), 0);
}

TEST(GgufExportModel, SmolLM2TokenizerAsLlamaCppsConverterWroteIt) {
  EXPECT_EQ(python("check-smollm2 " + export_model("smol_tok", GgufExportType::F32)), 0);
}

TEST(GgufExportModel, PreTokenizerIsRecognizedOrRefused) {
  const fs::path d = copy_of("llama_untied", "pre_variants");
  const Json tok = read_json(d / "tokenizer.json");
  const Json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  auto pre_of = [&](const Json& pre_tokenizer, const std::string& override_name = "") {
    Json t = tok;
    t["pre_tokenizer"] = pre_tokenizer;
    write_json(d / "tokenizer.json", t);
    const std::string out = scratch("pre.gguf").string();
    export_model_gguf(d.string(), out, {GgufExportType::F16, "", override_name});
    return GgufFile(out).metadata().get_string("tokenizer.ggml.pre");
  };
  EXPECT_EQ(pre_of(tok["pre_tokenizer"]), "llama-bpe");
  EXPECT_EQ(pre_of(byte_level), "gpt-2");
  EXPECT_EQ(pre_of({{"type", "Sequence"},
                    {"pretokenizers", Json::array({{{"type", "Digits"}, {"individual_digits", true}}, byte_level})}}),
            "smollm");
  Json qwen = tok["pre_tokenizer"];
  qwen["pretokenizers"][0]["pattern"]["Regex"] = gguf_pre_split_regex("qwen2");
  EXPECT_EQ(pre_of(qwen), "qwen2");
  const Json metaspace = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
  EXPECT_THAT(error_of([&] { pre_of(metaspace); }), HasSubstr("--tokenizer-pre"));
  EXPECT_EQ(pre_of(metaspace, "default"), "default");
}

TEST(GgufExportModel, RefusesWhatItCannotConvert) {
  const fs::path d = copy_of("llama_untied", "model_edits");
  const Json cfg = read_json(d / "config.json");
  auto with_config = [&](const char* key, Json value) {
    Json c = cfg;
    c[key] = std::move(value);
    write_json(d / "config.json", c);
    std::string msg = error_of([&] { export_model_gguf(d.string(), scratch("edit.gguf").string()); });
    write_json(d / "config.json", cfg);
    return msg;
  };
  EXPECT_THAT(with_config("architectures", Json::array({"Qwen2ForCausalLM"})), HasSubstr("qwen2"));
  EXPECT_THAT(with_config("architectures", Json::array({"GPT2LMHeadModel"})), HasSubstr("not a llama-architecture"));
  EXPECT_THAT(with_config("hidden_size", 32), HasSubstr("config.json implies"));
  EXPECT_THAT(with_config("rope_parameters", {{"rope_type", "yarn"}, {"factor", 4.0}}), HasSubstr("rope type 'yarn'"));
  std::ofstream(d / "tokenizer.model") << "x";
  EXPECT_THAT(error_of([&] { export_model_gguf(d.string(), scratch("edit.gguf").string()); }),
              HasSubstr("SentencePiece"));
  fs::remove(d / "tokenizer.model");
  Json tok = read_json(d / "tokenizer.json");
  tok["model"]["byte_fallback"] = true;
  write_json(d / "tokenizer.json", tok);
  EXPECT_THAT(error_of([&] { export_model_gguf(d.string(), scratch("edit.gguf").string()); }), HasSubstr("byte_fallback"));
}

// ---------------------------------------------------------------- metadata helpers

TEST(GgufExport, NameAndSizeLabelAsGgufPy) {
  // gguf-py 0.19.0: Metadata.id_to_title and size_label (utility.py).
  EXPECT_EQ(gguf_export::folder_title("/x/llama_untied"), "Llama_Untied");
  EXPECT_EQ(gguf_export::folder_title("/x/SmolLM2-135M-Instruct/"), "SmolLM2 135M Instruct");
  EXPECT_EQ(gguf_export::folder_title("/x/my-model-v1.2-8b"), "My Model v1.2 8b");
  EXPECT_EQ(gguf_export::folder_title("/x/a b-c"), "a b-c");
  EXPECT_EQ(gguf_export::size_label(134515008), "135M");
  EXPECT_EQ(gguf_export::size_label(57344), "57K");
  EXPECT_EQ(gguf_export::size_label(1235814400), "1.2B");
  EXPECT_EQ(gguf_export::size_label(999), "1.0K");
}

}  // namespace
}  // namespace peft
