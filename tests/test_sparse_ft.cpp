// SPARSE_FT (sparse fine-tuning, a format of ours) against plain-PyTorch references
// (tests/parity/make_sparse_ft.py: the masks and W + dW from their definitions, no PEFT):
//  - adapters in our format load with the reference's logits (<= 1e-4) and the
//    trainable-parameter line its counts give; merge gives the same logits, unmerge restores
//    the weights; Linear (Llama) and Conv1D (GPT-2) targets;
//  - a new adapter's magnitude mask and the gradient mask of a calibration pass are the
//    reference's positions (and the calibration's gradients the reference's);
//  - random masks are distinct in-range positions, fixed by the seed, different per layer;
//  - `peft train` with magnitude and gradient masks lowers the eval loss; its folder is
//    compact (n values, int32 positions) and loads back with the same logits;
//  - bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/sparse_ft.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"

using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"magnitude_llama", "magnitude_gpt2", "gradient_llama"};

const test::MethodSuite suite("sparse_ft");

std::unique_ptr<AdapterConfig> config_of(const std::string& name) {
  return parse_user_adapter_config(suite.case_json(name)["config"], "method");
}

// Each layer's positions (int32 [2, n]) by module path, from an adapter's state dict.
std::map<std::string, at::Tensor> positions_of(PeftModel& m) {
  std::map<std::string, at::Tensor> out;
  const std::string prefix = "base_model.model.", suffix = ".sparse_ft_indices";
  for (const auto& [key, t] : m.adapter_state_dict("default"))
    if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0)
      out[key.substr(prefix.size(), key.size() - prefix.size() - suffix.size())] = t;
  return out;
}

void expect_reference_positions(const std::string& name, const std::map<std::string, at::Tensor>& got) {
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  size_t seen = 0;
  for (const auto& key : ref.names())
    if (key.rfind("positions.", 0) == 0) {
      const auto path = key.substr(10);
      ASSERT_TRUE(got.count(path)) << name << ": no adapter on " << path;
      EXPECT_EQ(got.at(path).scalar_type(), at::kInt);
      EXPECT_TRUE(at::equal(got.at(path), ref.get(key))) << name << ": positions of " << path;
      ++seen;
    }
  EXPECT_EQ(seen, got.size());
  EXPECT_GT(seen, 0u);
}

class SparseFt : public ::testing::TestWithParam<std::string> {};

TEST_P(SparseFt, LoadsWithReferenceLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(SparseFt, MergeMatchesAndUnmergeRestores) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  std::vector<at::Tensor> before;
  for (auto& [_, p] : m.model().named_parameters()) before.push_back(p.detach().clone());
  m.merge();
  const double d = test::max_diff(test::logits(m, test::inputs_of(ref)), ref.get("logits"), test::mask_of(ref));
  std::cout << name << ": merged, max |logits - reference| = " << d << "\n";
  EXPECT_LE(d, kLogitTol);
  m.unmerge();
  size_t i = 0;
  double worst = 0;
  for (auto& [_, p] : m.model().named_parameters()) worst = std::max(worst, (p - before[i++]).abs().max().item<double>());
  EXPECT_LE(worst, 1e-6);
}

// The positions a first forward caches are normal tensors even when that forward ran in
// inference mode (generation, evaluation): a training forward after it back-propagates to
// the values, and merging after it works (SHiRA's layer, shared).
TEST_P(SparseFt, TrainsAndMergesAfterAnInferenceForward) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  const auto in = test::inputs_of(ref);
  (void)test::logits(m, in);
  m.forward(in).logits.square().mean().backward();
  int64_t with_grad = 0;
  for (const auto& t : m.trainable_tensors()) with_grad += t.grad().defined() && t.grad().abs().sum().item<double>() > 0;
  EXPECT_GT(with_grad, 0);
  EXPECT_EQ(with_grad, static_cast<int64_t>(m.trainable_tensors().size()));
  EXPECT_NO_THROW(m.merge());
}

INSTANTIATE_TEST_SUITE_P(SparseFt, SparseFt, ::testing::ValuesIn(kCases));

// A new adapter's magnitude mask: the n largest |W| of each target (GPT-2's Conv1D read
// as [out, in]), as the reference picks them.
TEST(SparseFtMasks, MagnitudeMaskIsTheReferences) {
  for (const std::string name : {"magnitude_llama", "magnitude_gpt2"}) {
    PeftModel m(load_model(suite.base_of(name).string()));
    m.add_adapter("default", *config_of(name), 3);
    expect_reference_positions(name, positions_of(m));
    EXPECT_EQ(m.trainable_parameters_line(), suite.case_json(name)["trainable"].get<std::string>());
  }
}

// The gradient mask: the calibration pass's mean gradients (one forward and backward of the
// reference's loss) equal the reference's, and so do the positions they pick.
TEST(SparseFtMasks, GradientMaskIsTheReferences) {
  const std::string name = "gradient_llama";
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  auto model = load_model(suite.base_of(name).string());
  auto cfg = config_of(name);
  auto& sparse = dynamic_cast<SparseFtConfig&>(*cfg);
  sparse.resolve(*model);
  const auto ids = ref.get("input_ids"), mask = ref.get("attention_mask");
  auto grads = sparse_ft_gradients(*model, sparse, [&] {
    ModelInputs in;
    in.input_ids = ids;
    in.attention_mask = mask;
    const auto logits = model->forward(in).logits;
    const int64_t n = logits.size(1) - 1;
    const auto labels = ids.masked_fill(mask == 0, -100).narrow(1, 1, n).reshape({-1});
    at::cross_entropy_loss(logits.narrow(1, 0, n).reshape({-1, logits.size(-1)}), labels, {}, at::Reduction::Mean, -100)
        .backward();
  });
  size_t seen = 0;
  for (const auto& key : ref.names())
    if (key.rfind("grad.", 0) == 0) {
      const auto path = key.substr(5);
      ASSERT_TRUE(grads.count(path)) << path;
      const auto want = ref.get(key);
      const double d = (grads.at(path) - want).abs().max().item<double>() / want.abs().max().item<double>();
      std::cout << path << ": max |grad - reference| / max |reference| = " << d << "\n";
      EXPECT_LE(d, 1e-5);
      ++seen;
    }
  EXPECT_EQ(seen, 6u);
  sparse.calibration = std::make_shared<const std::map<std::string, at::Tensor>>(std::move(grads));
  PeftModel m(model);
  m.add_adapter("default", sparse, 3);
  expect_reference_positions(name, positions_of(m));
}

TEST(SparseFtMasks, RandomMasksAreSeededDistinctAndPerLayer) {
  const json method = {{"peft_type", "SPARSE_FT"}, {"mask_type", "random"}, {"density", 0.1},
                       {"target_modules", json::array({"q_proj", "o_proj"})}};
  auto draw = [&](uint64_t seed) {
    PeftModel m(load_model(suite.fixture("llama").string()));
    m.add_adapter("default", *parse_user_adapter_config(method, "method"), seed);
    return positions_of(m);
  };
  const auto a = draw(1), again = draw(1), other = draw(2);
  ASSERT_EQ(a.size(), 4u);  // two layers, two targets each
  for (const auto& [path, pos] : a) {
    EXPECT_TRUE(at::equal(pos, again.at(path))) << path;
    EXPECT_FALSE(at::equal(pos, other.at(path))) << path;
    const auto flat = pos[0].to(at::kLong) * 32 + pos[1].to(at::kLong);  // q_proj, o_proj: [32, 32]
    EXPECT_EQ(pos.size(1), 102) << path;  // round(0.1 * 1024)
    EXPECT_EQ(std::get<0>(at::_unique(flat)).numel(), pos.size(1)) << path << ": repeated positions";
    EXPECT_TRUE(at::equal(flat, std::get<0>(flat.sort()))) << path << ": not row-major";
    EXPECT_GE(pos.min().item<int64_t>(), 0);
    EXPECT_LT(pos.max().item<int64_t>(), 32);
  }
  EXPECT_FALSE(at::equal(a.at("model.layers.0.self_attn.q_proj"), a.at("model.layers.1.self_attn.q_proj")));
}

// `peft train` with a magnitude mask and with a gradient mask (its calibration pass on the
// training file) lowers the eval loss; the output folder holds n values and int32 positions
// per layer and loads back with the trained logits.
TEST(SparseFtTrain, PeftTrainLowersEvalLossWithMagnitudeAndGradientMasks) {
  for (const std::string mask : {"magnitude", "gradient"}) {
    const auto work = suite.scratch("train_" + mask);
    const json method = {{"peft_type", "SPARSE_FT"}, {"density", 0.05}, {"mask_type", mask},
                         {"calibration_samples", 16}, {"target_modules", json::array({"q_proj", "v_proj", "up_proj", "down_proj"})}};
    const auto out = suite.train_with_cli(work, method, 60, 0.02, {{"eval_split", 0.25}, {"eval_steps", 60}});
    const double start = test::first_step_loss(out), end = test::last_eval_loss(out);
    std::cout << mask << " mask: first step loss " << start << ", final eval loss " << end << "\n";
    EXPECT_LT(end, start - 0.1) << mask;
    SafetensorsFile file((out / "adapter_model.safetensors").string());
    int64_t values = 0;
    for (const auto& key : file.names()) {
      const auto t = file.get(key);
      if (key.find(".sparse_ft_indices") != std::string::npos) EXPECT_EQ(t.scalar_type(), at::kInt) << key;
      else values += t.numel();
    }
    // Two layers of q_proj [32, 32], v_proj [16, 32], up_proj [48, 32] and down_proj [32, 48].
    const int64_t want = 2 * (std::llround(0.05 * 1024) + std::llround(0.05 * 512) + 2 * std::llround(0.05 * 1536));
    EXPECT_EQ(values, want) << mask;
    // The folder loads back (its positions, not a new mask) and moved the model; merged, it
    // computes the same.
    PeftModel m(load_model(suite.fixture("llama").string()));
    m.load_adapter(out.string());
    SafetensorsFile ref((suite.fixture("magnitude_llama") / "reference.safetensors").string());
    const auto in = test::inputs_of(ref);
    const auto trained = test::logits(m, in);
    at::Tensor base;
    {
      auto off = m.disable_adapters();
      base = test::logits(m, in);
    }
    EXPECT_GT((trained - base).abs().max().item<double>(), 1e-3) << mask;
    m.merge();
    EXPECT_LE((test::logits(m, in) - trained).abs().max().item<double>(), 1e-5) << mask;
  }
}

TEST(SparseFtErrors, BadSettingsAreNamed) {
  using test::add_adapter_error;
  using test::user_config_error;
  EXPECT_THAT(user_config_error(R"({"peft_type": "SPARSE_FT", "density": 0})"), HasSubstr("'density' must be in (0, 1]"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SPARSE_FT", "density": 1.5})"), HasSubstr("'density'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SPARSE_FT", "mask_type": "fisher"})"),
              HasSubstr("'mask_type' must be \"random\", \"magnitude\" or \"gradient\""));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SPARSE_FT", "calibration_samples": 0})"),
              HasSubstr("'calibration_samples'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SPARSE_FT", "densty": 0.1})"), HasSubstr("densty"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "SPARSE_FT", "mask_type": "gradient"})"),
              HasSubstr("mask_type 'gradient' needs a calibration pass"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "SPARSE_FT", "target_modules": ["embed_tokens"]})"),
              HasSubstr("SPARSE_FT: target module 'model.embed_tokens'"));
}

}  // namespace
}  // namespace peft
