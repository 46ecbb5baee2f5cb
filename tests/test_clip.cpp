// CLIP (CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection) against
// transformers and HF PEFT (fixtures from tests/parity/make_clip.py): embeddings and
// logits_per_image on a padded text batch, the contrastive loss, the parameter count, an
// HF PEFT LoRA on both towers (unmerged and merged), ours read by HF PEFT, zero-shot
// `peft classify`, and contrastive training on image-text pairs.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_runner.h"
#include "peft/clip.h"
#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/tokenizer.h"
#include "peft/train.h"
#include "peft/tuner.h"
#include "test_util.h"
#include "train/data.h"
#include "train/evaluate.h"
#include "train/setup.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kTol = 1e-4;       // fp32 embeddings and logits against transformers / HF PEFT
constexpr double kLossTol = 1e-5;   // the contrastive loss against transformers'

fs::path fixture(const std::string& c) { return fs::path(PEFT_CLIP_DIR) / c; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "clip" / name;
  fs::create_directories(p.parent_path());
  return p;
}
SafetensorsFile reference(const fs::path& dir) { return SafetensorsFile((dir / "reference.safetensors").string()); }

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

ModelInputs inputs_of(const SafetensorsFile& ref) {
  ModelInputs in;
  if (ref.contains("input_ids")) in.input_ids = ref.get("input_ids");
  if (ref.contains("attention_mask")) in.attention_mask = ref.get("attention_mask");
  if (ref.contains("pixel_values")) in.pixel_values = ref.get("pixel_values");
  return in;
}

at::Tensor logits_per_image(Model& model, const SafetensorsFile& ref) {
  c10::InferenceMode guard;
  return as_contrastive(model)->forward_contrastive(inputs_of(ref)).logits_per_image;
}

TEST(Clip, ModelMatchesTransformersOnAPaddedBatch) {
  const auto ref = reference(fixture("clip"));
  auto model = load_model(fixture("clip").string());
  EXPECT_EQ(model->type_name(), "CLIPModel");
  auto* clip = as_contrastive(*model);
  ASSERT_NE(clip, nullptr);
  c10::InferenceMode guard;
  const auto out = clip->forward_contrastive(inputs_of(ref));
  const double text = max_diff(out.text_embeds, ref.get("text_embeds"));
  const double image = max_diff(out.image_embeds, ref.get("image_embeds"));
  const double logits = max_diff(out.logits_per_image, ref.get("logits_per_image"));
  EXPECT_LE(text, kTol);
  EXPECT_LE(image, kTol);
  EXPECT_LE(logits, kTol);
  EXPECT_TRUE(at::equal(out.logits_per_text, out.logits_per_image.t()));
  const double loss = clip_loss(out.logits_per_text).item<double>();
  EXPECT_NEAR(loss, ref.get("loss").item<double>(), kLossTol);
  EXPECT_EQ(model->num_parameters(), ref.get("num_parameters").item<int64_t>());
  // Model::forward: both inputs give logits_per_image; one gives that tower's projected features.
  EXPECT_TRUE(at::allclose(model->forward(inputs_of(ref)).logits, out.logits_per_image));
  ModelInputs text_only;
  text_only.input_ids = ref.get("input_ids");
  text_only.attention_mask = ref.get("attention_mask");
  const auto features = model->forward(text_only).pooler_output;
  EXPECT_LE(max_diff(features / features.norm(2, -1, true), ref.get("text_embeds")), kTol);
  std::cerr << "CLIPModel: max |diff| text_embeds " << text << ", image_embeds " << image << ", logits_per_image "
            << logits << ", |loss - transformers| " << std::abs(loss - ref.get("loss").item<double>()) << "\n";
}

TEST(Clip, ProjectionModelsMatchTransformers) {
  {
    // eos_token_id 2: pooled at each row's largest id, as transformers does
    const auto ref = reference(fixture("clip_text_proj"));
    auto model = load_model(fixture("clip_text_proj").string());
    EXPECT_EQ(model->type_name(), "CLIPTextModelWithProjection");
    EXPECT_EQ(model->num_parameters(), ref.get("num_parameters").item<int64_t>());
    c10::InferenceMode guard;
    const auto out = model->forward(inputs_of(ref));
    EXPECT_LE(max_diff(out.pooler_output, ref.get("text_embeds")), kTol);
    EXPECT_LE(test::max_diff(out.last_hidden_state, ref.get("last_hidden_state"), ref.get("attention_mask")), kTol);
  }
  const auto ref = reference(fixture("clip_vision_proj"));
  auto model = load_model(fixture("clip_vision_proj").string());
  EXPECT_EQ(model->type_name(), "CLIPVisionModelWithProjection");
  EXPECT_EQ(model->num_parameters(), ref.get("num_parameters").item<int64_t>());
  c10::InferenceMode guard;
  const auto out = model->forward(inputs_of(ref));
  EXPECT_LE(max_diff(out.pooler_output, ref.get("image_embeds")), kTol);
  EXPECT_LE(max_diff(out.last_hidden_state, ref.get("last_hidden_state")), kTol);
}

TEST(Clip, InspectCountsWhatTransformersCounts) {
  const auto ref = reference(fixture("clip"));
  const auto r = test::run_cli({"inspect", fixture("clip").string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("CLIPModel"));
  EXPECT_THAT(r.output, HasSubstr("contrastive-image-text"));
  EXPECT_THAT(r.output, HasSubstr("(" + std::to_string(ref.get("num_parameters").item<int64_t>()) + ")"));
}

TEST(Clip, HfPeftLoraOnBothTowersLoadsAndMerges) {
  const auto ref = reference(fixture("clip/lora"));
  PeftModel peft(load_model(fixture("clip").string()));
  peft.load_adapter(fixture("clip/lora").string());
  const double unmerged = max_diff(logits_per_image(peft.model(), ref), ref.get("logits_per_image"));
  EXPECT_LE(unmerged, kTol);
  peft.merge();
  const double merged = max_diff(logits_per_image(peft.model(), ref), ref.get("merged_logits_per_image"));
  EXPECT_LE(merged, kTol);
  std::cerr << "HF PEFT LoRA: max |logits_per_image diff| " << unmerged << " unmerged, " << merged << " merged\n";
}

// CLIP-Adapter on visual_projection and text_projection: the paper's module in plain
// PyTorch (make_clip.py) gives the same logits_per_image from the same weights.
TEST(ClipAdapter, MatchesThePapersModuleInPlainPyTorch) {
  const auto ref = reference(fixture("clip/clip_adapter"));
  PeftModel peft(load_model(fixture("clip").string()));
  peft.load_adapter(fixture("clip/clip_adapter").string());
  EXPECT_EQ(peft.config("default").peft_type(), "CLIP_ADAPTER");
  const double diff = max_diff(logits_per_image(peft.model(), ref), ref.get("logits_per_image"));
  EXPECT_LE(diff, kTol);
  std::cerr << "CLIP-Adapter: max |logits_per_image - plain PyTorch| " << diff << "\n";
  EXPECT_THROW(peft.merge(), std::logic_error);  // the MLP is not linear
  // Saved and read again, it computes the same.
  const auto dir = scratch("clip_adapter_resaved");
  fs::remove_all(dir);
  peft.save_adapter(dir.string());
  PeftModel again(load_model(fixture("clip").string()));
  again.load_adapter(dir.string());
  EXPECT_LE(max_diff(logits_per_image(again.model(), ref), ref.get("logits_per_image")), kTol);
}

// Deep visual prompts in the vision tower: plain PyTorch hooks on transformers' CLIPModel
// (make_clip.py) give the same logits_per_image from the same prompts, through the
// contrastive forward and through Model::forward; the text tower is untouched.
TEST(ClipVpt, MatchesPromptsInPlainPyTorch) {
  const auto ref = reference(fixture("clip/vpt"));
  PeftModel peft(load_model(fixture("clip").string()));
  peft.load_adapter(fixture("clip/vpt").string());
  ModelInputs in;
  in.input_ids = ref.get("input_ids");
  in.attention_mask = ref.get("attention_mask");
  in.pixel_values = ref.get("pixel_values");
  c10::InferenceMode guard;
  const double contrastive = max_diff(as_contrastive(peft.model())->forward_contrastive(in).logits_per_image,
                                      ref.get("logits_per_image"));
  EXPECT_LE(contrastive, kTol);
  EXPECT_LE(max_diff(peft.model().forward(in).logits, ref.get("logits_per_image")), kTol);
  std::cerr << "CLIP VPT-deep: max |logits_per_image - plain PyTorch| " << contrastive << "\n";
  const auto base = load_model(fixture("clip").string());
  ModelInputs text;
  text.input_ids = in.input_ids;
  text.attention_mask = in.attention_mask;
  EXPECT_TRUE(at::equal(peft.model().forward(text).pooler_output, base->forward(text).pooler_output));
}

// Our outputs for `ref`'s inputs, written for make_clip.py check.
fs::path write_outputs(const SafetensorsFile& ref, const at::Tensor& logits, const std::string& name) {
  const auto p = scratch(name + "_outputs.safetensors");
  save_safetensors(p.string(), {{"input_ids", ref.get("input_ids")},
                                {"attention_mask", ref.get("attention_mask")},
                                {"pixel_values", ref.get("pixel_values")},
                                {"logits_per_image", logits.to(at::kFloat).contiguous()}});
  return p;
}

// Adapters we save (HF's LoRA read and written again; a new LoRA on the vision tower only,
// by regex, initialized off zero) load in HF PEFT, strictly, with our logits.
// One Python process for all of them.
TEST(Clip, OurAdaptersLoadInHfPeft) {
  const auto ref = reference(fixture("clip"));
  const auto base = fixture("clip");
  std::vector<std::array<std::string, 3>> cases;
  {
    PeftModel peft(load_model(base.string()));
    peft.load_adapter(fixture("clip/lora").string());
    const auto dir = scratch("resaved_lora");
    fs::remove_all(dir);
    peft.save_adapter(dir.string());
    cases.push_back({base.string(), dir.string(), write_outputs(ref, logits_per_image(peft.model(), ref), "resaved").string()});
  }
  {
    PeftModel peft(load_model(base.string()));
    auto cfg = parse_user_adapter_config(
        nlohmann::ordered_json::parse(R"j({"peft_type": "LORA", "r": 2, "lora_alpha": 8, "init_lora_weights": false,
                        "target_modules": ".*vision_model.*\\.(q_proj|v_proj|fc1)"})j"), "test");
    peft.add_adapter("default", *cfg, 3);  // init_lora_weights false: B is random too
    const auto moved = max_diff(logits_per_image(peft.model(), ref), ref.get("logits_per_image"));
    EXPECT_GT(moved, 1e-2);  // the check below must see the adapter
    const auto dir = scratch("vision_lora");
    fs::remove_all(dir);
    peft.save_adapter(dir.string());
    cases.push_back({base.string(), dir.string(), write_outputs(ref, logits_per_image(peft.model(), ref), "vision").string()});
  }
  std::string args;
  for (const auto& c : cases) args += " " + c[0] + " " + c[1] + " " + c[2];
  int status = 0;
  const auto log = test::run_command(
      std::string(PEFT_PYTHON) + " " + PEFT_SOURCE_DIR + "/tests/parity/make_clip.py check" + args, &status);
  EXPECT_EQ(status, 0) << log;
  std::cerr << log;
}

// `peft classify --image ... --labels ... --template ...`: transformers' probabilities over
// the label prompts (same tokenizer ids, same preprocessing), and the best label.
TEST(Clip, ZeroShotClassifyMatchesTransformers) {
  const auto dir = fixture("clip");
  json ref;
  std::ifstream zero_shot(dir / "zero_shot.json");
  zero_shot >> ref;
  std::string labels;
  for (const auto& l : ref["labels"]) labels += (labels.empty() ? "" : ",") + l.get<std::string>();
  const auto templ = ref["template"].get<std::string>();
  const auto tok = Tokenizer::from_file(dir.string());
  for (size_t i = 0; i < ref["labels"].size(); ++i) {
    std::string prompt = templ;
    prompt.replace(prompt.find("{}"), 2, ref["labels"][i].get<std::string>());
    EXPECT_EQ(tok.encode(prompt).ids, ref["prompt_ids"][i].get<std::vector<int64_t>>()) << prompt;
  }
  std::vector<std::string> args = {"classify", dir.string(), "--labels", labels, "--template", templ};
  for (const auto& im : ref["images"]) args.insert(args.end(), {"--image", (dir / im.get<std::string>()).string()});
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  std::istringstream lines(r.output);
  std::string line;
  size_t n = 0;
  double worst = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    const auto got = json::parse(line);
    ASSERT_LT(n, ref["images"].size());
    const auto want = ref["probabilities"][n].get<std::vector<double>>();
    const auto probs = got["probabilities"].get<std::vector<double>>();
    ASSERT_EQ(probs.size(), want.size());
    size_t best = 0;
    for (size_t k = 0; k < want.size(); ++k) {
      worst = std::max(worst, std::abs(probs[k] - want[k]));
      if (want[k] > want[best]) best = k;
    }
    EXPECT_EQ(got["label"], ref["labels"][best]);
    ++n;
  }
  EXPECT_EQ(n, ref["images"].size()) << r.output;
  EXPECT_LE(worst, kTol);
  std::cerr << "zero-shot: max |probability - transformers| " << worst << "\n";
  // Wrong use is one line naming what is missing.
  const auto bad = test::run_cli({"classify", dir.string(), "--image", (dir / "images/red.png").string(), "--labels", "cat",
                                  "--template", templ});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("two or more"));
}

TrainConfig colors_config(const std::string& out, const json& targets) {
  TrainConfig c;
  c.model = fixture("clip").string();
  c.train_file = (fixture("colors") / "train.jsonl").string();
  c.eval_file = (fixture("colors") / "eval.jsonl").string();
  c.output_dir = scratch(out).string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"r": 4, "lora_alpha": 8})");
  c.method["target_modules"] = targets;
  c.per_device_train_batch_size = 6;
  c.per_device_eval_batch_size = 6;
  c.learning_rate = 2e-2;
  c.shuffle = false;
  c.progress = false;
  return c;
}

// Pairs read as training reads them ({"image", "text"} JSONL, texts padded with the
// tokenizer's pad token, images preprocessed) give transformers' batch and its loss.
TEST(ClipTrain, BatchLossMatchesTransformers) {
  const auto ref = reference(fixture("colors"));
  const auto cfg = colors_config("loss_check", json::array({"q_proj"}));
  TrainSetup s = load_setup(cfg, {}, false);
  const auto data = read_data(cfg.train_file, "", data_options(cfg, s));
  ASSERT_EQ(data.size(), 48u);
  std::vector<const Example*> xs;
  for (int64_t i = 0; i < ref.get("input_ids").size(0); ++i) xs.push_back(&data[i]);
  const Batch b = collate(xs, s.pad_id, false);
  EXPECT_TRUE(at::equal(b.input_ids, ref.get("input_ids")));
  EXPECT_TRUE(at::equal(b.attention_mask, ref.get("attention_mask")));
  EXPECT_LE(max_diff(b.pixel_values, ref.get("pixel_values")), 1e-5);
  c10::InferenceMode guard;
  const double loss = (batch_loss(*s.peft, b, at::kCPU, false).sum / static_cast<double>(b.num_items)).item<double>();
  EXPECT_NEAR(loss, ref.get("loss").item<double>(), kLossTol);
  std::cerr << "contrastive loss " << loss << ", transformers " << ref.get("loss").item<double>() << "\n";
}

// `peft train` on image-text pairs: LoRA on both towers, on the vision tower alone, a
// CLIP-Adapter on both projections, AdaptFormer and VPT-deep on the vision tower;
// the contrastive eval loss drops and in-batch image-to-text accuracy rises.
TEST(ClipTrain, ContrastiveLoraLowersTheLoss) {
  const std::pair<std::string, json> runs[] = {{"both", json::array({"q_proj", "v_proj"})},
                                               {"vision", ".*vision_model.*\\.(q_proj|v_proj|fc1)"},
                                               {"clip_adapter", nullptr},
                                               {"adaptformer", nullptr},
                                               {"vpt", nullptr}};
  for (const auto& [name, targets] : runs) {
    auto c = colors_config("train_" + name, targets);
    if (name == "clip_adapter") {  // 2 x 2 x 20 x 5 weights over both projections
      c.method = json::parse(R"({"peft_type": "CLIP_ADAPTER", "alpha": 0.5,
                                 "target_modules": ["visual_projection", "text_projection"]})");
      c.learning_rate = 5e-2;
    }
    if (name == "adaptformer")  // a parallel bottleneck beside the vision tower's MLPs
      c.method = json::parse(R"j({"peft_type": "BOTTLENECK", "adapter_type": "parallel", "bottleneck_size": 8,
                                  "target_modules": ".*vision_model.*\\.mlp"})j");
    if (name == "vpt") {  // deep visual prompts in the vision tower
      c.method = json::parse(R"({"peft_type": "VPT", "num_virtual_tokens": 4, "deep": true})");
      c.learning_rate = 5e-2;
    }
    c.max_steps = 40;
    c.eval_steps = 40;
    const auto before = evaluate(c, {});
    const auto r = train(c);
    const auto& after = r.evals.back();
    std::cerr << "[ CLIP training, " << name << " ] eval loss " << before["eval_loss"] << " -> " << after["eval_loss"]
              << ", accuracy " << before["eval_accuracy"] << " -> " << after["eval_accuracy"] << "\n";
    // Prompts shared by every image move the tiny random tower's features less than
    // weights do (measured 1.99 -> 1.72, accuracy unchanged); the others fall below 0.7x.
    const bool prompts = name == "vpt";
    EXPECT_LT(after["eval_loss"].get<double>(), (prompts ? 0.9 : 0.7) * before["eval_loss"].get<double>()) << name;
    if (!prompts) EXPECT_GT(after["eval_accuracy"].get<double>(), before["eval_accuracy"].get<double>()) << name;
    // The adapter it wrote loads and gives the eval loss it reported.
    const auto again = evaluate(c, {r.adapter_dir});
    EXPECT_NEAR(again["eval_loss"].get<double>(), after["eval_loss"].get<double>(), 1e-5) << name;
  }
}

TEST(ClipTrain, PairsWithoutTextAreRefusedByLine) {
  const auto bad = scratch("bad.jsonl");
  std::ofstream(bad) << "{\"image\": \"" << (fixture("colors") / "train/red_0.png").string()
                     << "\", \"text\": \"a red photo\"}\n{\"image\": \"x.png\"}\n";
  auto c = colors_config("bad", json::array({"q_proj"}));
  c.train_file = bad.string();
  try {
    train(c);
    FAIL() << "accepted a line without text";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("line 2 of " + bad.string()));
  }
}

}  // namespace
}  // namespace peft
