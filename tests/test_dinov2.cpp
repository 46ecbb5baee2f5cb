// DINOv2 against transformers and HF PEFT (fixtures from tests/parity/make_dinov2.py):
// the classifier and a SwiGLU body at the configured size and at others (the position
// embeddings resampled bicubically, square and not), the checkpoints transformers 5 writes
// (v4 names, gate and up fused into weights_in) read and written back, LoRA and (IA)3
// adapters made by HF PEFT merged and unmerged, and `peft train` on images through DINOv2's
// BitImageProcessor with an adapter HF PEFT loads.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "peft/image_processor.h"
#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kTol = 1e-4;  // fp32 outputs against transformers / HF PEFT

fs::path case_dir(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / "dinov2" / name; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "dinov2" / name;
  fs::create_directories(p.parent_path());
  return p;
}

// The sizes a case's reference holds ("32x32", ...).
std::vector<std::string> sizes_of(const SafetensorsFile& ref) {
  std::vector<std::string> out;
  for (const auto& n : ref.names())
    if (n.rfind("pixel_values/", 0) == 0) out.push_back(n.substr(13));
  return out;
}

// Every output the reference holds under `prefix` matches ours, at every size.
void expect_outputs(Model& model, const SafetensorsFile& ref, const std::string& prefix) {
  int checked = 0;
  for (const auto& size : sizes_of(ref)) {
    SCOPED_TRACE(size);
    c10::NoGradGuard no_grad;
    ModelInputs in;
    in.pixel_values = ref.get("pixel_values/" + size);
    const auto out = model.forward(in);
    for (const auto& [key, got] : {std::pair{"logits", out.logits}, std::pair{"last_hidden_state", out.last_hidden_state},
                                   std::pair{"pooler_output", out.pooler_output}}) {
      const std::string name = prefix + key + "/" + size;
      if (!ref.contains(name)) continue;
      ASSERT_TRUE(got.defined()) << name;
      ASSERT_EQ(got.sizes(), ref.get(name).sizes()) << name;
      EXPECT_LE((got - ref.get(name)).abs().max().item<double>(), kTol) << name;
      ++checked;
    }
  }
  EXPECT_GE(checked, 2);
}

class Dinov2Case : public ::testing::TestWithParam<std::string> {};

TEST_P(Dinov2Case, MatchesTransformersAtEverySize) {
  const SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  auto model = load_model(case_dir(GetParam()).string());
  EXPECT_EQ(model->num_parameters(), ref.get("num_parameters").item<int64_t>());
  const auto cfg = json::parse(std::ifstream(case_dir(GetParam()) / "config.json"));
  EXPECT_EQ(model->type_name(), cfg["architectures"][0].get<std::string>());
  expect_outputs(*model, ref, "");
}

TEST_P(Dinov2Case, HfAdaptersMatchMergedAndUnmerged) {
  const SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  int adapters = 0;
  for (const std::string name : {"lora", "ia3"}) {
    if (!fs::exists(case_dir(GetParam()) / name)) continue;
    SCOPED_TRACE(name);
    PeftModel peft(load_model(case_dir(GetParam()).string()));
    peft.load_adapter((case_dir(GetParam()) / name).string(), name);
    peft.set_adapter({name});
    expect_outputs(peft.model(), ref, name + "/");
    peft.merge();
    expect_outputs(peft.model(), ref, name + "/");
    ++adapters;
  }
  EXPECT_GE(adapters, 1);
}

INSTANTIATE_TEST_SUITE_P(Dinov2, Dinov2Case, ::testing::Values("dinov2_cls", "dinov2_swiglu"));

// transformers 5 writes DINOv2 under its v4 names and fuses the SwiGLU's gate and up into
// mlp.weights_in; save_pretrained writes the same keys and tensors back, and the saved
// folder gives the same outputs.
TEST(Dinov2, SavesTheKeysTransformersWrites) {
  for (const std::string name : {"dinov2_cls", "dinov2_swiglu"}) {
    SCOPED_TRACE(name);
    const SafetensorsFile original((case_dir(name) / "model.safetensors").string());
    auto model = load_model(case_dir(name).string());
    const auto out = scratch(name + "_saved");
    fs::remove_all(out);
    save_pretrained(*model, out.string());
    const SafetensorsFile saved((out / "model.safetensors").string());
    auto names = saved.names(), want = original.names();
    std::sort(names.begin(), names.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(names, want);
    for (const auto& n : want)
      if (saved.contains(n)) EXPECT_TRUE(at::equal(saved.get(n), original.get(n))) << n;
    const SafetensorsFile ref((case_dir(name) / "reference.safetensors").string());
    expect_outputs(*load_model(out.string()), ref, "");
  }
}

// A fused weights_in whose rows cannot be halved is refused naming the file and key.
TEST(Dinov2, OddFusedGateUpIsRefusedByKey) {
  const auto dir = scratch("odd_fused");
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(case_dir("dinov2_swiglu") / "config.json", dir / "config.json");
  const SafetensorsFile original((case_dir("dinov2_swiglu") / "model.safetensors").string());
  NamedTensors t;
  for (const auto& n : original.names()) {
    at::Tensor v = original.get(n);
    if (n == "encoder.layer.1.mlp.weights_in.weight") v = v.narrow(0, 0, v.size(0) - 1).contiguous();
    t.emplace_back(n, v);
  }
  save_safetensors((dir / "model.safetensors").string(), t);
  try {
    (void)load_model(dir.string());
    ADD_FAILURE() << "an odd weights_in was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("encoder.layer.1.mlp.weights_in.weight"));
    EXPECT_THAT(e.what(), HasSubstr("even"));
  }
}

// Settings transformers would mis-shape with are refused, naming the key; pixels of the
// wrong channel count or smaller than a patch are refused by shape.
TEST(Dinov2, HostileConfigsAndPixelsAreRefused) {
  const json base = json::parse(std::ifstream(case_dir("dinov2_cls") / "config.json"));
  for (const auto& [edit, key] : std::vector<std::pair<json, std::string>>{
           {{{"num_attention_heads", 5}}, "num_attention_heads"},
           {{{"patch_size", 64}}, "patch_size"},
           {{{"patch_size", 0}}, "patch_size"},
           {{{"mlp_ratio", 0}}, "mlp_ratio"},
           {{{"mlp_ratio", 1e12}}, "mlp_ratio"},
           {{{"layerscale_value", "x"}}, "layerscale_value"},
           {{{"hidden_act", "nope"}}, "nope"},
           {{{"image_size", {32, 32}}}, "image_size"}}) {
    json cfg = base;
    cfg.update(edit);
    try {
      (void)build_model(cfg, "config.json");
      ADD_FAILURE() << edit.dump() << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr(key)) << edit.dump();
    }
  }
  auto model = load_model(case_dir("dinov2_cls").string());
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 1, 32, 32}, {1, 3, 4, 32}, {3, 32, 32}}) {
    ModelInputs in;
    in.pixel_values = at::zeros(shape);
    EXPECT_THROW((void)model->forward(in), std::invalid_argument) << c10::str(at::IntArrayRef(shape));
  }
}

// `peft train` on the colors image folder through DINOv2's BitImageProcessor (16 x 16 crops:
// a 2 x 2 patch grid, so the 4 x 4 position table is resampled in every step): LoRA on q/v
// with the classifier saved learns which color dominates, and HF PEFT loads the adapter with
// our logits.
TEST(Dinov2Train, LoraLearnsColorsAndLoadsInHfPeft) {
  const auto colors = case_dir("colors");
  TrainConfig c;
  c.model = case_dir("dinov2_cls").string();
  c.train_file = (colors / "train").string();
  c.eval_file = (colors / "eval.jsonl").string();
  c.output_dir = scratch("train_colors").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                             "modules_to_save": ["classifier"]})");
  c.max_steps = 60;
  c.per_device_train_batch_size = 12;
  c.learning_rate = 2e-2;
  c.eval_steps = 60;
  c.progress = false;
  const auto before = evaluate(c, {});
  const auto r = train(c);
  const auto& after = r.evals.back();
  EXPECT_LT(after["eval_loss"].get<double>(), 0.6 * before["eval_loss"].get<double>())
      << before.dump() << " -> " << after.dump();
  EXPECT_GE(after["eval_accuracy"].get<double>(), 0.9) << after.dump();

  const SafetensorsFile ref((case_dir("dinov2_cls") / "reference.safetensors").string());
  PeftModel peft(load_model(c.model));
  peft.load_adapter(r.adapter_dir);
  at::Tensor logits;
  {
    c10::NoGradGuard no_grad;
    ModelInputs in;
    in.pixel_values = ref.get("pixel_values/16x24");
    logits = peft.forward(in).logits;
  }
  const auto outputs = scratch("trained_outputs.safetensors");
  save_safetensors(outputs.string(), {{"pixel_values", ref.get("pixel_values/16x24")}, {"logits", logits}});
  std::string log;
  EXPECT_EQ(test::check_in_python(case_dir("dinov2_cls"), r.adapter_dir, outputs, &log), 0) << log;
}

}  // namespace
}  // namespace peft
