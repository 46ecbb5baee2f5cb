// RandLoRA (HF PEFT's RANDLORA) against adapters HF PEFT made (tests/parity/make_randlora.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, with the bases
//    read from the file (save_projection) or regenerated from the key: dense, sparse and
//    very sparse, on a tiny Llama and on GPT-2's Conv1D layers with trained biases;
//  - our regeneration of randlora_A / randlora_B equals HF's bit for bit;
//  - merge gives HF's merged logits and unmerge restores the weights;
//  - saved again here, and trained with `peft train`, adapters load in HF PEFT strictly with
//    our logits (one Python process); training lowers the eval loss; bad input is named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "method_suite.h"
#include "peft/peft_model.h"
#include "peft/randlora.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"randlora_llama_saved", "randlora_llama_unsaved", "randlora_llama_sparse",
                                         "randlora_llama_very_sparse", "randlora_gpt2"};

const test::MethodSuite suite("randlora");
using test::logits;

RandLoraBasis basis_of(const json& config) {
  if (config.value("very_sparse", false)) return RandLoraBasis::kVerySparse;
  return config.value("sparse", false) ? RandLoraBasis::kSparse : RandLoraBasis::kDense;
}

// make_randlora_bases equals HF's in-memory randlora_A / randlora_B bit for bit, and so do
// the bases of the loaded adapter (read from the file or regenerated).
void expect_bases_of_hf(const std::string& name) {
  const auto c = suite.case_json(name);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  const auto b = make_randlora_bases(c["r"], c["max_out"], c["max_in"],
                                     static_cast<uint64_t>(c["projection_prng_key"].get<int64_t>()), basis_of(c["config"]));
  EXPECT_TRUE(at::equal(b.A, ref.get("randlora_A"))) << name << ": " << (b.A - ref.get("randlora_A")).abs().max().item<double>();
  EXPECT_TRUE(at::equal(b.B, ref.get("randlora_B"))) << name << ": " << (b.B - ref.get("randlora_B")).abs().max().item<double>();
}

// bias="randlora_only" adapters carry their own biases, which replace the base's.
bool own_bias(const PeftModel& p, const std::string& n) {
  return dynamic_cast<const RandLoraConfig&>(p.config("default")).bias != "none" && n.ends_with(".bias");
}

// One test per case (each test is a process under ctest; loading libtorch dominates).
class HfRandLora : public ::testing::TestWithParam<std::string> {};

TEST_P(HfRandLora, LoadsRegeneratesAndMergesAsHf) {
  const auto name = GetParam();
  suite.expect_loads_as_hf(name, kLogitTol);
  expect_bases_of_hf(name);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-6, own_bias);
}

INSTANTIATE_TEST_SUITE_P(RandLora, HfRandLora, ::testing::ValuesIn(kCases));

// HF PEFT loads, strictly and with our logits, every HF adapter saved again here (with
// exactly HF's keys: the bases once for the model and once per layer when saved) and one
// trained by `peft train` without its bases: one Python process for all of them.
TEST(RandLoraInHf, ResavedAndTrainedAdaptersLoadInHf) {
  const auto work = suite.scratch("in_hf");
  std::vector<std::string> args;
  const auto add_check = [&](const fs::path& base, const fs::path& adapter, const std::string& ref_case) {
    SafetensorsFile ref((suite.fixture(ref_case) / "reference.safetensors").string());
    PeftModel m(load_model(base.string()));
    m.load_adapter(adapter.string());
    const auto out = work / (adapter.parent_path().filename().string() + "_outputs.safetensors");
    test::write_outputs(ref, "logits", logits(m, test::inputs_of(ref)), out);
    args.insert(args.end(), {base.string(), adapter.string(), out.string()});
  };
  for (const auto& name : kCases) {
    const auto dir = work / name / "adapter";
    {
      PeftModel m(load_model(suite.base_of(name).string()));
      m.load_adapter((suite.fixture(name) / "adapter").string());
      m.save_adapter(dir.string());
    }
    SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
    SafetensorsFile ours((dir / "adapter_model.safetensors").string());
    const auto h = hf.names(), o = ours.names();
    EXPECT_EQ(std::set<std::string>(o.begin(), o.end()), std::set<std::string>(h.begin(), h.end())) << name;
    EXPECT_EQ(ours.contains("base_model.randlora_A"), suite.case_json(name)["config"]["save_projection"].get<bool>());
    const auto cfg = json::parse(std::ifstream(dir / "adapter_config.json"));
    EXPECT_EQ(cfg["projection_prng_key"], suite.case_json(name)["projection_prng_key"]) << name;
    add_check(suite.base_of(name), dir, name);
  }
  const json method = {{"peft_type", "RANDLORA"},        {"r", 8},
                       {"randlora_alpha", 16},           {"target_modules", {"q_proj", "v_proj", "down_proj"}},
                       {"projection_prng_key", 31},      {"save_projection", false}};
  fs::create_directories(work / "train");
  const auto trained = suite.train_with_cli(work / "train", method, 4, 1e-2);
  SafetensorsFile file((trained / "adapter_model.safetensors").string());
  EXPECT_FALSE(file.contains("base_model.randlora_A"));
  // lambda starts at 0 (the base model); training moved it.
  EXPECT_GT(file.get("base_model.model.model.layers.0.mlp.down_proj.randlora_lambda").abs().max().item<double>(), 1e-4);
  add_check(suite.fixture("llama"), trained, "randlora_llama_saved");

  std::string cmd = std::string(PEFT_PYTHON) + " " + PEFT_SOURCE_DIR + "/tests/parity/make_randlora.py check";
  for (const auto& a : args) cmd += " " + a;
  int status = 0;
  const auto log = test::run_command(cmd + " 2>&1", &status);
  std::cout << log;
  EXPECT_EQ(status, 0) << log;
}

TEST(RandLoraTrain, LowersEvalLoss) {
  const auto work = suite.scratch("learns");
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = test::write_small_counting_data(work).string();
  c.eval_split = 0.25;
  c.output_dir = (work / "out").string();
  c.method = json::parse(R"({"peft_type": "RANDLORA", "r": 8, "randlora_alpha": 160, "target_modules": "all-linear"})");
  c.max_steps = 60;
  c.learning_rate = 1e-2;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;
  const double before = evaluate(before_cfg, {})["eval_loss"];
  const double after = train(c).evals.back()["eval_loss"];
  std::cout << "RandLoRA eval loss " << before << " -> " << after << "\n";
  EXPECT_LT(after, before - 0.2) << "eval loss " << before << " -> " << after;
}

// --- errors ---------------------------------------------------------------------------

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(RandLoraErrors, BadSettingsFilesAndLayersAreNamed) {
  const auto parse = [](const std::string& s) {
    return error_of([&] { parse_user_adapter_config(json::parse(s), "method"); });
  };
  EXPECT_THAT(parse(R"({"peft_type": "RANDLORA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(parse(R"({"peft_type": "RANDLORA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(parse(R"({"peft_type": "RANDLORA", "randlora_dropout": 1.5})"), HasSubstr("'randlora_dropout'"));
  EXPECT_THAT(parse(R"({"peft_type": "RANDLORA", "sparse": "yes"})"), HasSubstr("'sparse'"));
  EXPECT_THAT(parse(R"({"peft_type": "RANDLORA", "randlora_alhpa": 16})"), HasSubstr("randlora_alpha"));

  // An embedding is no Linear / Conv1D layer, as HF refuses it.
  EXPECT_THAT(error_of([] {
                PeftModel m(load_model(suite.fixture("llama").string()));
                m.add_adapter("default", *parse_user_adapter_config(
                                             json::parse(R"({"peft_type": "RANDLORA", "target_modules": ["embed_tokens"]})"),
                                             "method"));
              }),
              HasSubstr("'model.embed_tokens' is a"));

  // A file with save_projection but without its bases is refused naming the key.
  const auto dir = suite.scratch("no_bases");
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    fs::copy_file(suite.fixture("randlora_llama_saved") / "adapter" / f, dir / f);
  test::drop_tensor((dir / "adapter_model.safetensors").string(), "base_model.randlora_B");
  EXPECT_THAT(error_of([&] {
                PeftModel m(load_model(suite.fixture("llama").string()));
                m.load_adapter(dir.string());
              }),
              HasSubstr("missing tensor 'base_model.randlora_B'"));
}

}  // namespace
}  // namespace peft
