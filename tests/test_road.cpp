// RoAd (HF PEFT 0.21's ROAD) against adapters HF PEFT made (tests/parity/make_road.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, for road_1,
//    road_2 and road_4;
//  - each layer's rotation R equals HF's; merge gives HF's merged logits (biases rotated
//    too) and unmerge restores the weights;
//  - a new adapter starts at the base; saved again, and trained with `peft train` (which
//    lowers the eval loss), adapters load in HF PEFT with our logits; a group size that does
//    not divide a layer, Conv1D targets and bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "peft/peft_model.h"
#include "peft/road.h"
#include "peft/safetensors.h"
#include "loss_file.h"
#include "method_suite.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("road");

class HfRoad : public ::testing::TestWithParam<std::string> {};

TEST_P(HfRoad, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfRoad, RotationsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("rotation.", 0) != 0) continue;
    const auto path = key.substr(9);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    ASSERT_NE(host, nullptr) << path;
    auto* a = dynamic_cast<RoadLayer*>(host->adapter("default"));
    ASSERT_NE(a, nullptr) << path;
    c10::InferenceMode g;
    const auto R = a->rotation();
    ASSERT_EQ(R.sizes(), ref.get(key).sizes()) << path;
    EXPECT_LE((R - ref.get(key)).abs().max().item<double>(), 1e-6) << path;
    ++layers;
  }
  EXPECT_GE(layers, 4);
}

TEST_P(HfRoad, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

TEST_P(HfRoad, ResavedLoadsInHf) {
  const auto name = GetParam();
  const auto work = suite.scratch("resave_" + name);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_resave_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, work / "adapter",
                                 work / "outputs.safetensors", kLogitTol);
  SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
  SafetensorsFile ours((work / "adapter" / "adapter_model.safetensors").string());
  const auto want = hf.names(), got = ours.names();
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), std::set<std::string>(want.begin(), want.end()));
}

INSTANTIATE_TEST_SUITE_P(Road, HfRoad, ::testing::Values("road_llama", "road2_llama", "road4_llama"));

TEST(Road, NewAdapterStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("road_llama") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.add_adapter("default",
                *parse_user_adapter_config(json::parse(R"({"peft_type": "ROAD", "variant": "road_4", "group_size": 8})"),
                                           "m"),
                3);
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
}

TEST(RoadTrain, AdapterTrainedWithPeftTrainLoadsInHfAndLowersTheLoss) {
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "ROAD"}, {"variant", "road_2"}, {"group_size", 16},
                       {"target_modules", {"q_proj", "v_proj", "o_proj", "down_proj", "lm_head"}}};
  const auto out = suite.train_with_cli(work, method, 60, 5e-2, {{"eval_split", 0.25}, {"eval_steps", 60}});
  const double start = test::first_step_loss(out), end = test::last_eval_loss(out);
  std::cout << "road train: first step loss " << start << ", final eval loss " << end << "\n";
  EXPECT_LT(end, start - 0.1);
  suite.expect_hf_loads_ours(suite.fixture("llama"), out, "road_llama", work);
}

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(RoadErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "ROAD", "variant": "road_3"})"), HasSubstr("'variant'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ROAD", "group_size": 7})"), HasSubstr("'group_size'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ROAD", "group_size": 0})"), HasSubstr("'group_size'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ROAD", "group_sise": 8})"), HasSubstr("group_size"));
}

TEST(RoadErrors, GroupSizeConv1DAreNamed) {
  PeftModel llama(load_model(suite.fixture("llama").string()));
  try {
    llama.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "ROAD"})"), "m"));
    FAIL() << "group_size 64 was accepted for 32 output features";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("'model.layers.0.self_attn.q_proj' has 32 output features, not a multiple of "
                                    "group_size 64"));
  }
  PeftModel gpt2(load_model(suite.fixture("gpt2").string()));
  try {
    gpt2.add_adapter("default",
                     *parse_user_adapter_config(json::parse(R"({"peft_type": "ROAD", "group_size": 8})"), "m"));
    FAIL() << "HF's RoAd has no Conv1D";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("'transformer.h.0.attn.c_attn' is a Conv1D"));
  }
}

}  // namespace
}  // namespace peft
