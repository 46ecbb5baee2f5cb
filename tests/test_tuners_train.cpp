// Every method trains through `peft train` (the library call) and leaves the model better
// on held-out data than the base model was: CI-sized runs on the small parity models.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "peft/npy.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace peft {
namespace {

fs::path parity(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / name; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "tuners_train" / name;
  fs::create_directories(p.parent_path());
  return p;
}

fs::path counting_data() {
  const auto data = scratch("counting.jsonl");
  test::write_counting_data(data);
  return data;
}

struct Method {
  std::string name, model;
  const char* method;
  double learning_rate;
  int64_t steps;
};

void PrintTo(const Method& m, std::ostream* os) { *os << m.name; }

class MethodLearns : public ::testing::TestWithParam<Method> {};

TEST_P(MethodLearns, LowersEvalLossOfACausalLm) {
  const auto& m = GetParam();
  TrainConfig c;
  c.model = parity(m.model).string();
  c.train_file = counting_data().string();
  c.eval_split = 0.2;
  c.output_dir = scratch(m.name).string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(m.method);
  c.max_steps = m.steps;
  c.per_device_train_batch_size = 8;
  c.learning_rate = m.learning_rate;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;  // the base model on the same rows the split takes from
  const double before = evaluate(before_cfg, {})["eval_loss"];
  auto r = train(c);
  const double after = r.evals.back()["eval_loss"];
  EXPECT_LT(after, 0.85 * before) << m.name << ": eval loss " << before << " -> " << after;
  // The adapter it wrote loads back and evaluates the same.
  auto reload = c;
  reload.eval_file = c.train_file;
  const double reloaded = evaluate(reload, {r.adapter_dir})["eval_loss"];
  EXPECT_LT(reloaded, 0.85 * before);
  auto cfg = json::parse(std::ifstream(fs::path(r.adapter_dir) / "adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], json::parse(m.method)["peft_type"]);
}

std::string method_name(const ::testing::TestParamInfo<Method>& i) { return i.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Tuners, MethodLearns,
    ::testing::Values(
        Method{"ia3", "llama_mha", R"({"peft_type": "IA3"})", 3e-2, 120},
        Method{"prompt_tuning", "llama_mha", R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8})", 3e-2, 120},
        Method{"p_tuning_mlp", "llama_mha",
               R"({"peft_type": "P_TUNING", "num_virtual_tokens": 8, "encoder_hidden_size": 32})", 1e-2, 120},
        Method{"p_tuning_lstm", "llama_mha",
               R"({"peft_type": "P_TUNING", "num_virtual_tokens": 8, "encoder_hidden_size": 16,
                   "encoder_reparameterization_type": "LSTM"})", 3e-2, 120},
        Method{"prefix", "llama_mha", R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 8})", 5e-2, 120},
        Method{"prefix_projection", "gpt2",
               R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 6, "prefix_projection": true,
                   "encoder_hidden_size": 32})", 1e-2, 120},
        Method{"ln_tuning", "llama_mha", R"({"peft_type": "LN_TUNING"})", 3e-2, 120},
        Method{"loha", "llama_mha", R"({"peft_type": "LOHA", "r": 4, "alpha": 8, "target_modules": "all-linear"})", 1e-2,
               120},
        Method{"lokr", "llama_mha", R"({"peft_type": "LOKR", "r": 4, "alpha": 8, "target_modules": "all-linear"})", 1e-2,
               120},
        Method{"bitfit", "gpt2", R"({"peft_type": "BITFIT"})", 3e-2, 120},
        Method{"ssf", "gpt2", R"({"peft_type": "SSF"})", 1e-2, 120},
        Method{"houlsby", "llama_mha", R"({"peft_type": "BOTTLENECK", "adapter_type": "houlsby", "bottleneck_size": 16})",
               1e-2, 120},
        Method{"pfeiffer", "gpt2", R"({"peft_type": "BOTTLENECK", "adapter_type": "pfeiffer", "bottleneck_size": 16})",
               1e-2, 120},
        Method{"adaptformer", "llama_mha",
               R"({"peft_type": "BOTTLENECK", "adapter_type": "parallel", "bottleneck_size": 16, "scaling": 0.5})", 3e-2,
               120}),
    method_name);

// Visual prompt tuning (deep) with a trainable head: 5 classes told apart by brightness.
TEST(VptLearns, DeepPromptsAndHeadClassifyImages) {
  const auto img = scratch("vit_images.npy"), lab = scratch("vit_labels.npy");
  test::write_brightness_images(img, lab);
  TrainConfig c;
  c.model = parity("vit_cls").string();
  c.train_file = img.string();
  c.label_file = lab.string();
  c.eval_split = 0.25;
  c.output_dir = scratch("vpt").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"peft_type": "VPT", "num_virtual_tokens": 4, "deep": true})");
  c.max_steps = 80;
  c.per_device_train_batch_size = 16;
  c.learning_rate = 1e-2;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = img.string();
  before_cfg.eval_label_file = lab.string();
  const double before = evaluate(before_cfg, {})["eval_accuracy"];
  auto r = train(c);
  const double after = r.evals.back()["eval_accuracy"];
  EXPECT_GT(after, before + 0.3) << "accuracy " << before << " -> " << after;
  SafetensorsFile f((fs::path(r.adapter_dir) / "adapter_model.safetensors").string());
  EXPECT_TRUE(f.contains("vpt_prompts"));
  EXPECT_TRUE(f.contains("base_model.model.classifier.weight"));
}

}  // namespace
}  // namespace peft

namespace peft {
namespace {

// A prompt encoder trains through its MLP, but the adapter file holds only its output (as
// HF PEFT's does): checkpoints keep the encoder's weights beside it, so a resumed run
// repeats the uninterrupted one step for step.
TEST(PromptEncoderResume, ResumedPTuningRepeatsTheUninterruptedSteps) {
  TrainConfig c;
  c.model = parity("llama_mha").string();
  c.train_file = counting_data().string();
  c.output_dir = scratch("ptuning_resume").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"peft_type": "P_TUNING", "num_virtual_tokens": 4, "encoder_hidden_size": 16})");
  c.max_steps = 10;
  c.save_steps = 5;
  c.save_total_limit = 3;
  c.per_device_train_batch_size = 8;
  c.learning_rate = 1e-2;
  c.progress = false;
  const auto full = train(c);
  ASSERT_EQ(full.steps.size(), 10u);
  EXPECT_TRUE(fs::exists(fs::path(c.output_dir) / "checkpoint-5" / "prompt_encoder.safetensors"));
  fs::remove_all(fs::path(c.output_dir) / "checkpoint-10");  // as if killed after step 5's checkpoint
  const auto resumed = train(c, /*resume=*/true);
  ASSERT_EQ(resumed.steps.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(resumed.steps[i].step, full.steps[5 + i].step);
    EXPECT_NEAR(resumed.steps[i].loss, full.steps[5 + i].loss, 1e-6 * std::abs(full.steps[5 + i].loss));
  }
}

}  // namespace
}  // namespace peft
