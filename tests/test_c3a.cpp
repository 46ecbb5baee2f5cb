// C3A (HF PEFT 0.21's C3A) against adapters HF PEFT made (tests/parity/make_c3a.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: gaussian,
//    kaiming and xavier kernels, a block_size_pattern (regex and exact-name keys),
//    layers_to_transform, GPT-2's tied lm_head with bias="all";
//  - each layer's dW equals HF's get_delta_weight, and the kernel gradient of a layer HF
//    differentiates right equals HF's; our input gradient is the true one (HF's is not);
//  - merge gives HF's merged logits, unmerge restores the weights;
//  - saved again, and trained here with `peft train` (which lowers the eval loss), adapters
//    load in HF PEFT with our logits (one Python process); bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "method_suite.h"
#include "peft/c3a.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"c3a_llama", "c3a_llama_kaiming", "c3a_gpt2"};

const test::MethodSuite suite("c3a");
using test::logits;
using test::last_eval_loss;

C3ALayer* c3a_layer(PeftModel& m, const std::string& path) {
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
  return host ? dynamic_cast<C3ALayer*>(host->adapter("default")) : nullptr;
}

// Each layer's dW equals HF's get_delta_weight; the gradient of sum(logits * R) with
// respect to the kernel of the layer the reference names equals HF's.
void expect_deltas_and_gradient_of_hf(const std::string& name) {
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("delta.", 0) == 0) {
      auto* a = c3a_layer(m, key.substr(6));
      ASSERT_NE(a, nullptr) << key;
      c10::InferenceMode g;
      const auto d = a->delta_weight();
      ASSERT_EQ(d.sizes(), ref.get(key).sizes()) << key;
      EXPECT_LE((d - ref.get(key)).abs().max().item<double>(), 1e-6) << key;
      ++layers;
    } else if (key.rfind("grad.", 0) == 0) {
      auto* a = c3a_layer(m, key.substr(5));
      ASSERT_NE(a, nullptr) << key;
      a->kernel.requires_grad_(true);
      a->kernel.mutable_grad() = at::Tensor();
      (m.forward(test::inputs_of(ref)).logits * ref.get("grad_weights")).sum().backward();
      const auto want = ref.get(key);
      const double diff = (a->kernel.grad() - want).abs().max().item<double>();
      std::cout << name << ": max |kernel grad - HF's| = " << diff << " (max |grad| "
                << want.abs().max().item<double>() << ")\n";
      EXPECT_LE(diff, 1e-4 * std::max(1.0, want.abs().max().item<double>())) << key;
    }
  }
  EXPECT_GE(layers, 1);
}

// Merged logits are HF's; unmerge restores the weights.
void expect_merge_as_hf(const std::string& name) {
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  if (name != "c3a_gpt2") {
    test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
    return;
  }
  // GPT-2's lm_head is tied to the token embedding: HF's merge adds dW to the shared
  // weight, so the embedding changes too and the merged logits are not the unmerged ones.
  c10::InferenceMode g;
  auto base = load_model(suite.base_of(name).string());
  const auto wte = base->find("transformer.wte")->slots().at(0).tensor->clone();
  PeftModel m(base);
  m.load_adapter((suite.fixture(name) / "adapter").string());
  m.merge();
  const double diff = test::max_diff(logits(m, test::inputs_of(ref)), ref.get("merged_logits"), test::mask_of(ref));
  std::cout << name << ": max |merged logits - HF's| = " << diff << "\n";
  EXPECT_LE(diff, kLogitTol);
  EXPECT_GT((*base->find("transformer.wte")->slots().at(0).tensor - wte).abs().max().item<double>(), 1e-4);
  m.unmerge();
  EXPECT_LE((*base->find("transformer.wte")->slots().at(0).tensor - wte).abs().max().item<double>(), 1e-5);
}

// One test per case (each test is a process under ctest; loading libtorch dominates).
class HfC3a : public ::testing::TestWithParam<std::string> {};

TEST_P(HfC3a, LoadsDifferentiatesAndMergesAsHf) {
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
  expect_deltas_and_gradient_of_hf(GetParam());
  expect_merge_as_hf(GetParam());
}

INSTANTIATE_TEST_SUITE_P(C3a, HfC3a, ::testing::ValuesIn(kCases));

// HF PEFT loads, strictly and with our logits, every HF adapter saved again here (with
// exactly HF's keys) and one trained by `peft train`, which lowered the held-out eval
// loss: one Python process for all of them.
TEST(C3aInHf, ResavedAndTrainedAdaptersLoadInHf) {
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
    // HF also files the weight of a targeted tied lm_head (lm_head.base_layer.weight); we
    // read past it and do not write it, as the base has it.
    std::set<std::string> want;
    for (const auto& n : hf.names())
      if (n.find(".base_layer.") == std::string::npos) want.insert(n);
    const auto got = ours.names();
    EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), want) << name;
    EXPECT_EQ(json::parse(std::ifstream(dir / "adapter_config.json"))["block_size_pattern"],
              json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"))["block_size_pattern"]);
    add_check(suite.base_of(name), dir, name);
  }

  // init_weights true: zero kernels, so training starts at the base model's loss.
  const json method = {{"peft_type", "C3A"}, {"block_size", 16}, {"init_weights", true}, {"target_modules", "all-linear"}};
  fs::create_directories(work / "train");
  const auto trained = suite.train_with_cli(work / "train", method, 60, 0.5, {{"eval_split", 0.25}});
  SafetensorsFile file((trained / "adapter_model.safetensors").string());
  EXPECT_GT(file.get("base_model.model.model.layers.0.self_attn.q_proj.c3a_kernel").abs().max().item<double>(), 1e-4);
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = (work / "train" / "counting.jsonl").string();
  c.eval_split = 0.25;
  c.method = method;
  c.progress = false;
  const double before = evaluate(c, {})["eval_loss"];
  const double after = last_eval_loss(trained);
  std::cout << "C3A eval loss " << before << " -> " << after << "\n";
  EXPECT_GT(after, 0.0);
  EXPECT_LT(after, before - 0.2) << "eval loss " << before << " -> " << after;
  add_check(suite.fixture("llama"), trained, "c3a_llama");

  int status = 0;
  std::string joined;
  for (const auto& a : args) joined += " " + a;
  const auto log = test::run_parity_script("make_c3a.py", "check" + joined, &status);
  std::cout << log;
  EXPECT_EQ(status, 0) << log;
}

// Ours differentiates the convolution through ATen's FFTs: the input gradient is g dW
// (HF's hand-written backward gets it wrong for block sizes > 2) and the kernel gradient
// that of x dW^T. HF's inits draw kernels within their bounds.
TEST(C3a, GradientsAreTrueAndInitsAreHfs) {
  at::manual_seed(3);
  const auto w = at::randn({3, 2, 4}, at::kDouble);
  const auto x = at::randn({5, 8}, at::kDouble).requires_grad_(true);
  const auto k = w.clone().requires_grad_(true);
  const auto y = block_circular_convolution(x, k);
  const auto g = at::randn_like(y);
  y.backward(g);
  // The dense form: y = x D^T with D = bcc(I)^T, differentiated as a plain product.
  const auto k2 = w.clone().requires_grad_(true);
  const auto D = block_circular_convolution(at::eye(8, at::kDouble), k2).t();
  EXPECT_LE((at::matmul(x.detach(), D.detach().t()) - y.detach()).abs().max().item<double>(), 1e-12);
  EXPECT_LE((at::matmul(g, D.detach()) - x.grad()).abs().max().item<double>(), 1e-12);
  at::matmul(x.detach(), D.t()).backward(g);
  EXPECT_LE((k2.grad() - k.grad()).abs().max().item<double>(), 1e-12);

  // Fresh kernels: q_proj is 32 -> 32, v_proj 32 -> 16.
  for (const auto& [init, bound] : std::vector<std::pair<std::string, double>>{
           {"xavier_uniform", std::sqrt(6.0 / 48)}, {"false", std::sqrt(6.0 / 48)}, {"kaiming_uniform", std::sqrt(1.0 / 32)},
           {"gaussian", 10.0}, {"true", 0.0}}) {
    SCOPED_TRACE(init);
    PeftModel m(load_model(suite.fixture("llama").string()));
    json method = {{"peft_type", "C3A"}, {"block_size", 8}, {"target_modules", {"v_proj"}}};
    method["init_weights"] = init == "true" || init == "false" ? json(init == "true") : json(init);
    m.add_adapter("default", *parse_user_adapter_config(method, "method"));
    const auto kernel = c3a_layer(m, "model.layers.0.self_attn.v_proj")->kernel;
    EXPECT_EQ(kernel.sizes(), at::IntArrayRef({2, 4, 8}));
    EXPECT_LE(kernel.abs().max().item<double>(), bound);
    if (init != "true") EXPECT_GT(kernel.abs().max().item<double>(), bound / 4);
    if (init == "gaussian") EXPECT_NEAR(kernel.std().item<double>(), 1.0, 0.35);
  }
}

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string add_error(const std::string& model, const std::string& method) {
  PeftModel m(load_model(suite.fixture(model).string()));
  try {
    m.add_adapter("default", *parse_user_adapter_config(json::parse(method), "method"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(C3aErrors, BadSettingsAndLayersAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "C3A", "init_weights": "xavier"})"), HasSubstr("'init_weights'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "C3A", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "C3A", "block_size_pattern": {"q_proj": "8"}})"),
              HasSubstr("'block_size_pattern' entry 'q_proj'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "C3A", "blocksize": 8})"), HasSubstr("block_size"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "C3A", "target_modules": ".*q_proj", "layers_to_transform": [0]})"),
              HasSubstr("layers_to_transform"));
  // GPT-2's default target: mlp.c_proj, a Conv1D, which HF's C3A refuses too.
  EXPECT_THAT(add_error("gpt2", R"({"peft_type": "C3A", "block_size": 16})"),
              HasSubstr("'transformer.h.0.mlp.c_proj' is a Conv1D"));
  // LLaMA's default targets (q_proj, v_proj); 256 divides neither.
  EXPECT_THAT(add_error("llama", R"({"peft_type": "C3A"})"),
              HasSubstr("block_size 256 must divide in_features (32) and out_features (32) of "
                        "'model.layers.0.self_attn.q_proj'"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "C3A", "block_size": 16, "block_size_pattern": {"down_proj": 32},
                                    "target_modules": ["down_proj"]})"),
              HasSubstr("block_size 32 must divide in_features (48) and out_features (32) of 'model.layers.0.mlp.down_proj'"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "C3A", "block_size": 0, "target_modules": ["q_proj"]})"),
              HasSubstr("block_size 0 of 'model.layers.0.self_attn.q_proj' must be positive"));
}

}  // namespace
}  // namespace peft
