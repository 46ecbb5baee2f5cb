// Run-time composition of adapters (docs/COMPOSITION.md).
//  - Each kind (stack, average / fuse, adapter_fusion) against tests/parity/compose_reference.py:
//    plain PyTorch of the kind's equation on a tiny random LLaMA, with random adapters and
//    fusion tensors the script wrote (fp32 logits <= 1e-4).
//  - AdapterFusion trains its own tensors only; fuse weights train; a few steps lower the loss.
//  - Saved compositions load back with identical logits; bad configs give one-line errors
//    naming the key.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "peft/composition.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "test_util.h"
#include "util/json_file.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

fs::path fixture(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / "compose" / name; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "compose" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::unique_ptr<PeftModel> base_model() { return std::make_unique<PeftModel>(load_model(fixture("llama").string())); }

// A model with the case's saved composition loaded.
std::unique_ptr<PeftModel> composed(const std::string& name) {
  auto m = base_model();
  m->load_composition(fixture(name).string());
  return m;
}

at::Tensor logits(PeftModel& m, const ModelInputs& in) {
  c10::NoGradGuard g;
  return m.forward(in).logits;
}

void expect_matches_reference(const std::string& name) {
  SCOPED_TRACE(name);
  auto m = composed(name);
  SafetensorsFile ref((fixture(name) / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  const at::Tensor got = logits(*m, in);
  const double diff = test::max_diff(got, ref.get("logits"), test::mask_of(ref));
  EXPECT_LE(diff, kLogitTol);
  std::cout << name << ": max |logits - reference| = " << diff << "\n";
  // The case is not trivial: the composition changes the base model's logits.
  at::Tensor base;
  {
    auto off = m->disable_adapters();
    base = logits(*m, in);
  }
  EXPECT_GT(test::max_diff(got, base, test::mask_of(ref)), 1e-2);
}

TEST(Compose, StackOfBottleneckAdaptersMatchesReference) { expect_matches_reference("stack_bottleneck"); }
TEST(Compose, StackOfLorasMatchesReference) { expect_matches_reference("stack_lora"); }
TEST(Compose, FuseOfLoraAndBottleneckMatchesReference) { expect_matches_reference("fuse_mixed"); }
TEST(Compose, AverageWithTrainedWeightsMatchesReference) { expect_matches_reference("average_trained"); }
TEST(Compose, AdapterFusionMatchesReference) { expect_matches_reference("adapter_fusion"); }

// A stack of LoRAs is their sum: the same as activating both without a composition.
TEST(Compose, StackOfLorasEqualsBothActive) {
  auto m = composed("stack_lora");
  SafetensorsFile ref((fixture("stack_lora") / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  const at::Tensor stacked = logits(*m, in);
  m->set_adapter({"a", "b"});
  EXPECT_EQ(m->composition(), nullptr);  // set_adapter ends the composition
  EXPECT_LE(test::max_diff(logits(*m, in), stacked, test::mask_of(ref)), 1e-5);
  // ... while a stack of serial bottleneck adapters is not their sum.
  auto s = composed("stack_bottleneck");
  const at::Tensor serial = logits(*s, in);
  s->set_adapter({"a", "b"});  // the default fold also applies them in order
  EXPECT_LE(test::max_diff(logits(*s, in), serial, test::mask_of(ref)), 1e-5);
  s->set_composition(CompositionConfig::from_json({{"composition", "fuse"}, {"adapters", {"a", "b"}}, {"weights", {1, 1}}},
                                                  "test"));
  EXPECT_GT(test::max_diff(logits(*s, in), serial, test::mask_of(ref)), 1e-3);
}

at::Tensor lm_loss(PeftModel& m, const at::Tensor& ids) {
  ModelInputs in;
  in.input_ids = ids;
  const at::Tensor lg = m.forward(in).logits;
  const int64_t v = lg.size(-1);
  return at::cross_entropy_loss(lg.slice(1, 0, -1).reshape({-1, v}), ids.slice(1, 1).reshape({-1}));
}

at::Tensor counting_batch() {  // rows counting upward: a pattern the fusion can pick up
  return at::arange(12).unsqueeze(0) + at::tensor({3, 17, 40, 61}).unsqueeze(1);
}

// Fresh AdapterFusion on frozen adapters: only Q/K/V get gradients, and they are all
// trainable_tensors() holds.
TEST(Compose, AdapterFusionTrainsOnlyItsOwnTensors) {
  auto m = composed("adapter_fusion");
  m->set_composition(CompositionConfig::from_json(
      {{"composition", "adapter_fusion"}, {"adapters", {"a", "b", "c"}}}, "test"), 3);
  const auto params = m->trainable_tensors();
  const auto fusion = m->composition_state_dict();
  // o_proj (a, c) and down_proj (a, b, c) of 2 layers, 5 tensors each.
  ASSERT_EQ(fusion.size(), 20u);
  ASSERT_EQ(params.size(), fusion.size());
  EXPECT_EQ(m->trainable_parameters().first, 2 * (2 * 32 * 32 + 2 * 32 + 32 * 32) * 2);
  lm_loss(*m, counting_batch()).backward();
  for (const auto& [k, t] : fusion) {
    ASSERT_TRUE(t.grad().defined()) << k;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0) << k;
  }
  for (const auto& [k, t] : m->adapter_state_dict("a")) {
    EXPECT_FALSE(t.requires_grad()) << k;
    EXPECT_FALSE(t.grad().defined()) << k;
  }
  for (auto& [k, t] : m->model().named_parameters()) EXPECT_FALSE(t.grad().defined()) << k;
}

// train_adapters: the adapters train along with the fusion.
TEST(Compose, TrainAdaptersUnfreezesThem) {
  auto m = composed("adapter_fusion");
  auto cfg = *m->composition();
  cfg.train_adapters = true;
  m->set_composition(cfg);
  EXPECT_EQ(m->trainable_tensors().size(), 20u + m->adapter_state_dict("a").size() +
                                               m->adapter_state_dict("b").size() + m->adapter_state_dict("c").size());
  m->clear_composition();
  EXPECT_EQ(m->composition(), nullptr);
}

// Trainable fuse weights: one vector shared by every layer, with a gradient.
TEST(Compose, TrainableFuseWeightsGetGradients) {
  auto m = composed("average_trained");
  const auto params = m->trainable_tensors();
  ASSERT_EQ(params.size(), 1u);
  EXPECT_EQ(params[0].sizes(), at::IntArrayRef({2}));
  lm_loss(*m, counting_batch()).backward();
  ASSERT_TRUE(params[0].grad().defined());
  EXPECT_GT(params[0].grad().abs().sum().item<double>(), 0);
}

// A few AdamW-free steps (plain gradient descent) of AdapterFusion lower the loss; the
// frozen adapters do not move.
TEST(Compose, AdapterFusionTrainingLowersTheLoss) {
  auto m = composed("adapter_fusion");
  m->set_composition(CompositionConfig::from_json(
      {{"composition", "adapter_fusion"}, {"adapters", {"a", "b", "c"}}}, "test"), 1);
  m->train(true);
  const auto before_a = m->adapter_state_dict("a");
  std::vector<at::Tensor> kept;
  for (const auto& [_, t] : before_a) kept.push_back(t.clone());
  const auto ids = counting_batch();
  auto params = m->trainable_tensors();
  double first = 0, last = 0;
  for (int step = 0; step < 10; ++step) {
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    auto loss = lm_loss(*m, ids);
    loss.backward();
    (step == 0 ? first : last) = loss.item<double>();
    c10::NoGradGuard g;
    for (auto& p : params) p.sub_(p.grad() * 2.0);
  }
  EXPECT_LT(last, first - 0.05) << "first " << first << " last " << last;
  const auto after_a = m->adapter_state_dict("a");
  for (size_t i = 0; i < kept.size(); ++i) EXPECT_TRUE(at::equal(after_a[i].second, kept[i])) << after_a[i].first;
}

// Saved and loaded again (a fresh model, adapters from the folder): identical logits.
void expect_round_trip(PeftModel& m, const std::string& name) {
  SCOPED_TRACE(name);
  SafetensorsFile ref((fixture("stack_bottleneck") / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  const at::Tensor want = logits(m, in);
  const auto dir = scratch(name);
  m.save_composition(dir.string());
  auto back = base_model();
  back->load_composition(dir.string());
  EXPECT_TRUE(at::equal(logits(*back, in), want));
  EXPECT_EQ(back->composition()->kind, m.composition()->kind);
  EXPECT_EQ(back->composition()->adapters, m.composition()->adapters);
  EXPECT_EQ(back->trainable_parameters().first, m.trainable_parameters().first);
}

TEST(Compose, SavedCompositionsLoadWithIdenticalLogits) {
  auto fusion = composed("adapter_fusion");
  fusion->set_composition(CompositionConfig::from_json(
      {{"composition", "adapter_fusion"}, {"adapters", {"c", "a"}}, {"temperature", 0.5}}, "test"), 9);
  {
    c10::NoGradGuard g;  // as if trained: away from the init
    for (auto& t : fusion->trainable_tensors()) t.add_(at::randn_like(t) * 0.2);
  }
  expect_round_trip(*fusion, "fusion");
  EXPECT_FALSE(fs::exists(fs::path(PEFT_SCRATCH_DIR) / "compose/fusion/b"));  // only the adapters it names

  auto fuse = composed("fuse_mixed");
  fuse->set_composition(CompositionConfig::from_json(
      {{"composition", "fuse"}, {"adapters", {"bn", "lora"}}, {"trainable_weights", true}}, "test"));
  {
    c10::NoGradGuard g;
    fuse->trainable_tensors().at(0).copy_(at::tensor({0.8125f, -0.3f}));
  }
  expect_round_trip(*fuse, "fuse");
  auto cfg = read_ordered_json_file((fs::path(PEFT_SCRATCH_DIR) / "compose/fuse/composition_config.json").string());
  EXPECT_EQ(cfg["weights"][0].get<double>(), 0.8125);  // the trained values, readable

  auto stack = composed("stack_bottleneck");
  expect_round_trip(*stack, "stack");
  EXPECT_FALSE(fs::exists(fs::path(PEFT_SCRATCH_DIR) / "compose/stack/composition_model.safetensors"));
}

std::string config_error(const nlohmann::ordered_json& j) {
  try {
    CompositionConfig::from_json(j, "composition_config.json");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

std::string set_error(PeftModel& m, const nlohmann::ordered_json& j) {
  try {
    m.set_composition(CompositionConfig::from_json(j, "composition_config.json"));
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Compose, BadConfigsNameTheKey) {
  using J = nlohmann::ordered_json;
  const auto unknown_kind = config_error(J{{"composition", "mixture"}, {"adapters", {"a"}}});
  EXPECT_THAT(unknown_kind, HasSubstr("'composition'"));
  EXPECT_THAT(unknown_kind, HasSubstr("mixture"));
  EXPECT_THAT(config_error(J{{"composition", "fuse"}, {"adapters", {"a", "b"}}, {"weights", {1.0}}}),
              HasSubstr("'weights' must be a list of 2 numbers"));
  EXPECT_THAT(config_error(J{{"composition", "stack"}, {"adapters", {"a"}}, {"temprature", 1}}),
              HasSubstr("'temprature' is not a composition key"));
  EXPECT_THAT(config_error(J{{"composition", "stack"}, {"adapters", J::array()}}), HasSubstr("'adapters'"));
  EXPECT_THAT(config_error(J{{"composition", "stack"}, {"adapters", {"a", "a"}}}), HasSubstr("'a' twice"));
  EXPECT_THAT(config_error(J{{"composition", "stack"}, {"adapters", {"../x"}}}), HasSubstr("'adapters'"));
  EXPECT_THAT(config_error(J{{"composition", "stack"}, {"adapters", {"a"}}, {"temperature", 2}}),
              HasSubstr("'temperature' is for composition 'adapter_fusion'"));
  EXPECT_THAT(config_error(J{{"composition", "adapter_fusion"}, {"adapters", {"a"}}, {"temperature", 0}}),
              HasSubstr("'temperature' must be a positive number"));
  EXPECT_THAT(config_error(J{{"composition", "average"}, {"adapters", {"a"}}, {"trainable_weights", "yes"}}),
              HasSubstr("'trainable_weights'"));

  auto m = composed("fuse_mixed");  // adapters "lora" (LORA) and "bn" (BOTTLENECK)
  const auto not_loaded = set_error(*m, J{{"composition", "stack"}, {"adapters", {"bn", "zzz"}}});
  EXPECT_THAT(not_loaded, HasSubstr("'adapters' names 'zzz', which is not loaded"));
  const auto fusion_lora = set_error(*m, J{{"composition", "adapter_fusion"}, {"adapters", {"bn", "lora"}}});
  EXPECT_THAT(fusion_lora, HasSubstr("'lora' (LORA) is not a bottleneck adapter"));
  CompositionConfig wrong;
  wrong.kind = "fuse";
  wrong.adapters = {"bn", "lora"};
  wrong.weights = {1, 2, 3};
  try {
    m->set_composition(wrong);
    ADD_FAILURE() << "weights of the wrong length accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("'weights' has 3 values for 2 adapters"));
  }
  for (const auto& msg : {unknown_kind, not_loaded, fusion_lora}) EXPECT_THAT(msg, Not(HasSubstr("\n")));
  // A refused composition leaves the one before in place.
  EXPECT_EQ(m->composition()->kind, "fuse");
  EXPECT_THROW(m->merge(), std::logic_error);
}

TEST(Compose, DamagedFolderIsRefusedByName) {
  auto m = composed("adapter_fusion");
  const auto dir = scratch("damaged");
  m->save_composition(dir.string());
  test::drop_tensor((dir / "composition_model.safetensors").string(),
                    "base_model.model.model.layers.1.mlp.down_proj.adapter_fusion.key.bias");
  auto back = base_model();
  try {
    back->load_composition(dir.string());
    ADD_FAILURE() << "a missing fusion tensor was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("layers.1.mlp.down_proj.adapter_fusion.key.bias"));
  }
  EXPECT_EQ(back->composition(), nullptr);
  fs::remove(dir / "composition_model.safetensors");
  EXPECT_THROW(back->load_composition(dir.string()), std::runtime_error);
  fs::remove_all(dir / "b");
  try {
    base_model()->load_composition(dir.string());
    ADD_FAILURE() << "a missing adapter folder was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("'adapters' names 'b'"));
  }
}

// `peft train`'s config key "composition": frozen adapters from their folders, AdapterFusion
// trained by the trainer (AdamW), saved as a composition folder that loads again.
TEST(Compose, TrainerTrainsAnAdapterFusion) {
  const auto dir = scratch("train");
  {
    std::ofstream data(dir / "data.jsonl");
    for (int row = 0; row < 16; ++row) {
      nlohmann::json ids = nlohmann::json::array();
      for (int t = 0; t < 12; ++t) ids.push_back(1 + (row * 5 + t) % 90);
      data << nlohmann::json{{"input_ids", ids}}.dump() << "\n";
    }
  }
  TrainConfig cfg;
  cfg.model = fixture("llama").string();
  cfg.train_file = (dir / "data.jsonl").string();
  cfg.output_dir = (dir / "out").string();
  cfg.composition = nlohmann::ordered_json::parse(R"({"composition": "adapter_fusion", "temperature": 1.0,
      "adapters": {"a": ")" + (fixture("adapter_fusion") / "a").string() + R"(", "b": ")" +
                                                  (fixture("adapter_fusion") / "b").string() + R"("}})");
  cfg.learning_rate = 5e-2;
  cfg.max_steps = 6;
  cfg.per_device_train_batch_size = 16;  // the whole set every step: losses are comparable
  cfg.lr_scheduler_type = "constant";
  cfg.progress = false;
  const TrainResult r = train(cfg);
  ASSERT_EQ(r.steps.size(), 6u);
  std::string losses;
  for (const auto& s : r.steps) losses += std::to_string(s.loss) + " ";
  for (size_t i = 1; i < r.steps.size(); ++i) EXPECT_LT(r.steps[i].loss, r.steps[i - 1].loss) << losses;
  EXPECT_LT(r.steps.back().loss, r.steps.front().loss - 0.02) << losses;
  auto back = base_model();
  back->load_composition(cfg.output_dir);
  EXPECT_EQ(back->composition()->kind, "adapter_fusion");
  EXPECT_EQ(back->composition()->adapters, (std::vector<std::string>{"a", "b"}));
  // The adapters came back unchanged (frozen): the same tensors as their source folders.
  SafetensorsFile src((fixture("adapter_fusion") / "a/adapter_model.safetensors").string());
  for (const auto& [k, t] : back->adapter_state_dict("a")) EXPECT_TRUE(at::equal(t, src.get(k))) << k;
  // The last checkpoint is intact (a composition's own files): resuming finds nothing left to do.
  EXPECT_TRUE(fs::exists(fs::path(cfg.output_dir) / "checkpoint-6/composition_model.safetensors"));
  EXPECT_TRUE(train(cfg, /*resume=*/true).steps.empty());
  // A bad composition in the training config is refused by key before anything trains.
  cfg.composition["composition"] = "blend";
  cfg.output_dir = (dir / "bad").string();
  try {
    train(cfg);
    ADD_FAILURE() << "an unknown composition kind was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("'composition'"));
  }
}

}  // namespace
}  // namespace peft
