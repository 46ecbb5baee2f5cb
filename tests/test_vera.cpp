// VeRA (HF PEFT's VERA) against adapters HF PEFT made (tests/parity/make_vera.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, with the
//    projections read from the file (save_projection) or regenerated from the key;
//  - our regeneration of vera_A / vera_B equals HF's bit for bit;
//  - merge and unmerge give HF's merged logits and restore the weights;
//  - an adapter trained here with `peft train` loads in HF PEFT with our logits, and lowers
//    the eval loss; adapters of types we lack are refused naming the type.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_runner.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "peft/vera.h"
#include "method_suite.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("vera");
using test::logits;

class HfVera : public ::testing::TestWithParam<std::string> {};

TEST_P(HfVera, LoadsWithHfLogitsAndTrainableLine) {
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
}

TEST_P(HfVera, RegeneratesHfProjectionsBitForBit) {
  const auto name = GetParam();
  const auto c = suite.case_json(name);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  const auto p = make_vera_projection(c["r"], c["max_out"], c["max_in"],
                                      static_cast<uint64_t>(c["projection_prng_key"].get<int64_t>()));
  EXPECT_TRUE(at::equal(p.A, ref.get("vera_A"))) << (p.A - ref.get("vera_A")).abs().max().item<double>();
  EXPECT_TRUE(at::equal(p.B, ref.get("vera_B"))) << (p.B - ref.get("vera_B")).abs().max().item<double>();
}

TEST_P(HfVera, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  // bias="vera_only" adapters carry their own biases, which replace the base's.
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-6,
                                [](const PeftModel& p, const std::string& n) {
                                  return dynamic_cast<const VeraConfig&>(p.config("default")).bias != "none" &&
                                         n.ends_with(".bias");
                                });
}

// Saved again here, the adapter holds the same keys (projections only with save_projection)
// and HF PEFT loads it strictly with our logits.
TEST_P(HfVera, ResavedLoadsInHf) {
  const auto name = GetParam();
  const auto work = suite.scratch("resave_" + name);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  m.save_adapter((work / "adapter").string());
  SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
  SafetensorsFile ours((work / "adapter" / "adapter_model.safetensors").string());
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(ours.names()), sorted(hf.names()));
  EXPECT_EQ(ours.contains("base_model.vera_A"), suite.case_json(name)["config"]["save_projection"].get<bool>());
  auto cfg = json::parse(std::ifstream(work / "adapter" / "adapter_config.json"));
  EXPECT_EQ(cfg["projection_prng_key"], suite.case_json(name)["projection_prng_key"]);
  suite.expect_hf_loads_ours(suite.base_of(name), work / "adapter", name, work, "make_vera.py");
}

INSTANTIATE_TEST_SUITE_P(Vera, HfVera, ::testing::Values("vera_llama_saved", "vera_llama_unsaved", "vera_gpt2"));

void expect_trained_adapter_loads_in_hf(bool save_projection) {
  const auto work = suite.scratch(save_projection ? "train_saved" : "train_unsaved");
  const json method = {{"peft_type", "VERA"},
                       {"r", 8},
                       {"target_modules", {"q_proj", "v_proj", "up_proj", "down_proj"}},
                       {"projection_prng_key", 31},
                       {"save_projection", save_projection}};
  const auto out = suite.train_with_cli(work, method, 4, 3e-2, {{"per_device_train_batch_size", 8}});
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  EXPECT_EQ(file.contains("base_model.vera_A"), save_projection);
  // Training moved lambda_b off its zero start, so the check below is not of the base model.
  EXPECT_GT(file.get("base_model.model.model.layers.0.mlp.up_proj.vera_lambda_b").abs().max().item<double>(), 1e-3);
  suite.expect_hf_loads_ours(suite.fixture("llama"), out, "vera_llama_saved", work, "make_vera.py");
}

TEST(VeraTrain, AdapterTrainedWithPeftTrainLoadsInHf) { expect_trained_adapter_loads_in_hf(true); }
TEST(VeraTrain, AdapterWithoutProjectionsLoadsInHf) { expect_trained_adapter_loads_in_hf(false); }

TEST(VeraTrain, LowersEvalLoss) {
  const auto work = suite.scratch("learns");
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = test::write_small_counting_data(work).string();
  c.eval_split = 0.25;
  c.output_dir = (work / "out").string();
  c.method = json::parse(R"({"peft_type": "VERA", "r": 64, "target_modules": "all-linear"})");
  c.max_steps = 120;
  c.learning_rate = 1e-1;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;
  const double before = evaluate(before_cfg, {})["eval_loss"];
  const double after = train(c).evals.back()["eval_loss"];
  EXPECT_LT(after, 0.9 * before) << "eval loss " << before << " -> " << after;
}

// --- errors ---------------------------------------------------------------------------

fs::path copy_adapter(const std::string& name, const fs::path& to) {
  fs::create_directories(to);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    fs::copy_file(suite.fixture(name) / "adapter" / f, to / f, fs::copy_options::overwrite_existing);
  return to;
}

std::string load_error(const std::string& base, const fs::path& adapter) {
  PeftModel m(load_model(suite.fixture(base).string()));
  try {
    m.load_adapter(adapter.string());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(VeraErrors, SavedProjectionMissingFromTheFileIsNamed) {
  const auto dir = copy_adapter("vera_llama_saved", suite.scratch("no_projection"));
  test::drop_tensor((dir / "adapter_model.safetensors").string(), "base_model.vera_B");
  EXPECT_THAT(load_error("llama", dir), HasSubstr("missing tensor 'base_model.vera_B'"));
}

TEST(VeraErrors, ProjectionOfAnotherShapeIsNamed) {
  const auto dir = copy_adapter("vera_llama_saved", suite.scratch("bad_shape"));
  SafetensorsFile f((dir / "adapter_model.safetensors").string());
  NamedTensors t;
  for (const auto& n : f.names())
    t.emplace_back(n, n == "base_model.vera_A" ? f.get(n).narrow(1, 0, 32).clone() : f.get(n).clone());
  save_safetensors((dir / "adapter_model.safetensors").string(), t);
  EXPECT_THAT(load_error("llama", dir), HasSubstr("'base_model.vera_A' has shape [8, 32]"));
}

TEST(VeraErrors, BadSettingsAreNamed) {
  auto parse = [](const std::string& s) {
    try {
      parse_user_adapter_config(json::parse(s), "method");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(parse(R"({"peft_type": "VERA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(parse(R"({"peft_type": "VERA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(parse(R"({"peft_type": "VERA", "save_projection": "yes"})"), HasSubstr("'save_projection'"));
  EXPECT_THAT(parse(R"({"peft_type": "VERA", "vera_dropuot": 0.1})"), HasSubstr("vera_dropout"));
}

// Every type of HF PEFT's `peft.PeftType` (peft_types.json, from the installed package) is
// registered here; a type we do not have, in a file as HF writes it (a VeRA file's tensors
// beside it), is refused with a message naming the type.
TEST(VeraErrors, EveryHfPeftTypeIsHereAndOthersAreRefusedByName) {
  const auto types = json::parse(std::ifstream(suite.fixture("peft_types.json")));
  const auto supported = supported_peft_types();
  ASSERT_GT(types.size(), 40u);
  for (const auto& [type, cfg] : types.items())
    EXPECT_TRUE(std::count(supported.begin(), supported.end(), type)) << "HF PEFT's " << type << " is not registered";
  for (const std::string type : {"SHADOW_V2", "LORA_NEXT"}) {
    auto cfg = types["VERA"];
    cfg["peft_type"] = type;
    const auto dir = copy_adapter("vera_llama_saved", suite.scratch("type_" + type));
    std::ofstream(dir / "adapter_config.json") << cfg.dump(1);
    EXPECT_THAT(load_error("llama", dir), HasSubstr("unsupported peft_type '" + type + "'")) << type;
  }
}

}  // namespace
}  // namespace peft
