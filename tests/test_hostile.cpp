// Hostile input (issue 13): each case runs the `peft` tool as a user would, under a
// memory limit and a timeout, and asserts a clear one-line error naming the file, key or
// line: never a signal, a hang, a huge allocation, a torch backtrace or a silent success.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

fs::path parity(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / name; }
fs::path root() { return fs::path(PEFT_SCRATCH_DIR) / "hostile"; }

// A fresh copy of a parity model whose config.json gets `edit`.
fs::path model_with(const std::string& name, const std::string& base, const std::function<void(json&)>& edit) {
  const auto dir = root() / name;
  fs::remove_all(dir);
  fs::create_directories(dir.parent_path());
  fs::copy(parity(base), dir, fs::copy_options::recursive);
  auto cfg = json::parse(std::ifstream(dir / "config.json"));
  edit(cfg);
  std::ofstream(dir / "config.json") << cfg.dump();
  return dir;
}

fs::path write(const std::string& name, const std::string& content) {
  const auto p = root() / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

fs::path counting_data() {
  const auto p = root() / "counting.jsonl";
  if (!fs::exists(p)) {
    fs::create_directories(root());
    test::write_counting_data(p);
  }
  return p;
}

// A peft train config on llama_mha with `extra` merged in.
fs::path train_config(const std::string& name, const json& extra) {
  json c = {{"model", parity("llama_mha").string()},
            {"train_file", counting_data().string()},
            {"output_dir", (root() / ("out_" + name)).string()},
            {"max_steps", 1},
            {"progress", false},
            {"method", {{"r", 2}, {"target_modules", {"q_proj"}}}}};
  for (const auto& [k, v] : extra.items()) {
    if (k == "method") for (const auto& [mk, mv] : v.items()) c["method"][mk] = mv;
    else c[k] = v;
  }
  fs::remove_all(root() / ("out_" + name));
  return write(name + ".json", c.dump());
}

struct Case {
  std::string name;
  std::function<std::vector<std::string>()> args;
  std::string expect;  // a fragment of the one-line error
};

class Hostile : public ::testing::TestWithParam<Case> {};

TEST_P(Hostile, FailsWithOneClearLine) {
  const auto& c = GetParam();
  const auto r = test::run_cli(c.args(), {.memory_bytes = size_t(3) << 30, .timeout_s = 60});
  ASSERT_FALSE(r.timed_out()) << "hung: " << r.output;
  ASSERT_FALSE(r.crashed()) << test::describe(r);
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, Not(HasSubstr("Exception raised from"))) << "a torch backtrace";
  EXPECT_THAT(r.output, Not(HasSubstr("[json.exception"))) << "a bare nlohmann message";
  // The error is the last line, and one line.
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const std::string last = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  EXPECT_THAT(last, ::testing::StartsWith("error: ")) << r.output;
  EXPECT_THAT(last, HasSubstr(c.expect)) << r.output;
}

std::vector<std::string> inspect(const fs::path& model) { return {"inspect", model.string()}; }

std::vector<Case> cases() {
  std::vector<Case> v;
  // --- model config.json: every value that sizes or divides something
  auto cfg_case = [&](const std::string& name, const std::string& base, const char* key, json value,
                      const std::string& expect) {
    v.push_back({name, [=] { return inspect(model_with(name, base, [&](json& c) { c[key] = value; })); }, expect});
  };
  cfg_case("zero_heads", "llama_mha", "num_attention_heads", 0, "'num_attention_heads' must be between 1 and");
  cfg_case("zero_kv_heads", "llama_mha", "num_key_value_heads", 0, "'num_key_value_heads' must be between 1 and");
  cfg_case("zero_n_head", "gpt2", "n_head", 0, "'n_head' must be between 1 and");
  cfg_case("zero_patch", "vit", "patch_size", 0, "'patch_size' must be between 1 and");
  cfg_case("billion_layers", "llama_mha", "num_hidden_layers", 1000000000, "'num_hidden_layers' must be between 1 and 4096");
  cfg_case("negative_layers", "llama_mha", "num_hidden_layers", -1, "'num_hidden_layers' must be between 1");
  cfg_case("fractional_hidden", "llama_mha", "hidden_size", 32.9, "'hidden_size' must be an integer, got 32.9");
  cfg_case("string_vocab", "gpt2", "vocab_size", "many", "'vocab_size' must be an integer, got \"many\"");
  cfg_case("bad_eps", "llama_mha", "rms_norm_eps", -1.0, "'rms_norm_eps' must be a finite number > 0");
  cfg_case("arch_not_a_name", "llama_mha", "architectures", json::array({5}), "'architectures' must list names");
  v.push_back({"deep_config", [] {
                 const auto d = model_with("deep_config", "llama_mha", [](json&) {});
                 std::ofstream(d / "config.json") << "{\"a\": " << nested(100000) << "}";
                 return inspect(d);
               },
               "nested deeper than 256 levels"});
  v.push_back({"fifo_weights", [] {
                 const auto d = model_with("fifo_weights", "llama_mha", [](json&) {});
                 fs::remove(d / "model.safetensors");
                 mkfifo((d / "model.safetensors").c_str(), 0644);
                 return inspect(d);
               },
               "model.safetensors: not a regular file"});
  v.push_back({"duplicate_tensor", [] {
                 const auto d = model_with("duplicate_tensor", "llama_mha", [](json&) {});
                 std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
                 std::string bytes(8, '\0');
                 for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
                 std::ofstream(d / "model.safetensors", std::ios::binary) << bytes << header << std::string(8, '\0');
                 return inspect(d);
               },
               "header names 'a' twice"});
  v.push_back({"index_escapes_folder", [] {
                 const auto d = model_with("index_escapes_folder", "llama_sharded", [](json&) {});
                 auto idx = json::parse(std::ifstream(d / "model.safetensors.index.json"));
                 idx["weight_map"]["model.norm.weight"] = "../llama_mha/model.safetensors";
                 std::ofstream(d / "model.safetensors.index.json") << idx.dump();
                 return inspect(d);
               },
               "is not a file name in the model folder"});

  // --- adapter configs
  auto adapter_case = [&](const std::string& name, json extra, const std::string& expect) {
    v.push_back({name, [=] {
                   json cfg = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"target_modules", {"q_proj"}}};
                   for (const auto& [k, x] : extra.items()) cfg[k] = x;
                   const auto dir = root() / name;
                   fs::create_directories(dir);
                   std::ofstream(dir / "adapter_config.json") << cfg.dump();
                   std::ofstream(dir / "adapter_model.safetensors") << "";
                   return std::vector<std::string>{"inspect", dir.string()};
                 },
                 expect});
  };
  adapter_case("fractional_r", {{"r", 4.7}}, "'r' must be an integer, got 4.7");
  adapter_case("layers_string", {{"layers_to_transform", "x"}}, "'layers_to_transform' must be an integer, got \"x\"");
  adapter_case("peft_type_number", {{"peft_type", 5}}, "'peft_type' must be a string");
  adapter_case("dropout_two", {{"lora_dropout", 2}}, "'lora_dropout' must be in [0, 1)");

  // --- training configs and data
  auto train_case = [&](const std::string& name, json extra, const std::string& expect) {
    v.push_back({name, [=] { return std::vector<std::string>{"train", "--config", train_config(name, extra).string()}; },
                 expect});
  };
  train_case("method_typo", {{"method", {{"lora_aplha", 32}}}}, "unknown LORA setting 'lora_aplha' (did you mean 'lora_alpha'?)");
  train_case("method_wrong_type", {{"method", {{"use_dora", "treu"}}}}, "'use_dora' must be true or false, got \"treu\"");
  train_case("beta1_two", {{"adam_beta1", 2}}, "'adam_beta1' must be in [0, 1]");
  train_case("warmup_ratio_negative", {{"warmup_ratio", -5}}, "'warmup_ratio' must be in [0, 1]");
  train_case("bucket_zero", {{"ddp_bucket_cap_mb", 0}}, "'ddp_bucket_cap_mb' must be in (0, 65536], got 0");
  train_case("epochs_huge", {{"num_train_epochs", 1e300}}, "'num_train_epochs' must be in (0, 1e+06]");
  train_case("batch_huge", {{"per_device_train_batch_size", 9223372036854775807LL}},
             "'per_device_train_batch_size' must be in [1, 1.04858e+06]");
  train_case("accumulation_huge", {{"gradient_accumulation_steps", 9223372036854775807LL}},
             "'gradient_accumulation_steps' must be in [1");
  train_case("batch_fraction", {{"per_device_train_batch_size", 4.5}}, "'per_device_train_batch_size' must be an integer");
  train_case("bf16_key", {{"bf16", true}}, "unknown key 'bf16' (use precision=bf16)");
  train_case("key_typo", {{"learning_rat", 1e-4}}, "unknown key 'learning_rat' (did you mean 'learning_rate'?)");
  v.push_back({"eval_split_takes_all", [] {
                 const auto data = write("one_line.jsonl", "{\"input_ids\": [1, 2, 3]}\n");
                 return std::vector<std::string>{
                     "train", "--config",
                     train_config("eval_split_takes_all", {{"train_file", data.string()}, {"eval_split", 0.5}}).string()};
               },
               "no training examples are left after eval_split"});
  v.push_back({"jsonl_missing_field", [] {
                 const auto data = write("missing_field.jsonl", "{\"input_ids\": [1, 2, 3]}\n{\"text\": \"x\"}\n");
                 return std::vector<std::string>{
                     "train", "--config", train_config("jsonl_missing_field", {{"train_file", data.string()}}).string()};
               },
               "missing_field.jsonl:2: missing field 'input_ids'"});
  v.push_back({"jsonl_deep", [] {
                 const auto data = write("deep.jsonl", "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": " + nested(100000) + "}\n");
                 return std::vector<std::string>{"train", "--config",
                                                 train_config("jsonl_deep", {{"train_file", data.string()}}).string()};
               },
               "deep.jsonl:2: JSON nested deeper than 256 levels"});
  v.push_back({"ids_beyond_vocab", [] {
                 const auto data = write("big_ids.jsonl", "{\"input_ids\": [1, 2, 5000]}\n");
                 return std::vector<std::string>{
                     "train", "--config", train_config("ids_beyond_vocab", {{"train_file", data.string()}}).string()};
               },
               "big_ids.jsonl:1: token id 5000 is out of range for the model's 128-token vocabulary"});

  // --- generation
  auto ids = [] { return write("ids.json", "[[1, 2, 3]]").string(); };
  auto gen_case = [&](const std::string& name, std::vector<std::string> extra, const std::string& expect) {
    v.push_back({name, [=] {
                   std::vector<std::string> a = {"generate", parity("llama_mha").string(), "--ids", ids()};
                   a.insert(a.end(), extra.begin(), extra.end());
                   return a;
                 },
                 expect});
  };
  gen_case("top_p_two", {"--top-p", "2"}, "top_p must be in (0, 1]");
  gen_case("top_k_negative", {"--top-k", "-5"}, "top_k must be >= 0");
  gen_case("max_new_negative", {"--max-new-tokens", "-1"}, "max_new_tokens must be between 0");
  v.push_back({"generate_ids_beyond_vocab", [] {
                 return std::vector<std::string>{"generate", parity("llama_mha").string(), "--ids",
                                                 write("big.json", "[[1, 5000]]").string()};
               },
               "token id 5000 is out of range"});
  v.push_back({"forward_deep_ids", [] {
                 return std::vector<std::string>{"forward", parity("llama_mha").string(), "--ids",
                                                 write("deep_ids.json", nested(100000)).string(), "--out",
                                                 (root() / "o.safetensors").string()};
               },
               "nested deeper than 256 levels"});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cli, Hostile, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace peft
