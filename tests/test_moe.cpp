// Mixtral, Qwen2-MoE and Qwen3-MoE (mixture of experts) against transformers and HF PEFT
// (fixtures from tests/parity/make_moe.py): logits and loss on a right-padded batch, 32
// greedy tokens, the parameter count, a LoRA adapter HF PEFT made on attention and on the
// stacked experts (target_parameters), ours read by HF PEFT, a merged model transformers
// loads, (IA)3 on Qwen2-MoE, the router load-balancing loss (output_router_logits) in the
// training loss and its gradients, and training that lowers the eval loss.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "peft/generate.h"
#include "peft/lora.h"
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

constexpr double kLogitTol = 1e-4;  // fp32 logits against transformers / HF PEFT

fs::path base_dir(const std::string& c = "mixtral") { return fs::path(PEFT_MOE_DIR) / c; }
fs::path adapter_dir(const std::string& c = "mixtral") { return base_dir(c) / "lora"; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "moe" / name;
  fs::create_directories(p.parent_path());
  return p;
}
SafetensorsFile reference(const std::string& c = "mixtral") {
  return SafetensorsFile((base_dir(c) / "reference.safetensors").string());
}

class Moe : public ::testing::TestWithParam<std::string> {};

const char* kExpertsLora = R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "init_lora_weights": false,
  "target_modules": ["q_proj", "v_proj"], "target_parameters": ["experts.gate_up_proj", "experts.down_proj"]})";

TEST_P(Moe, PaddedLogitsAndLossMatchTransformers) {
  const auto ref = reference(GetParam());
  auto model = load_model(base_dir(GetParam()).string());
  c10::InferenceMode guard;
  const auto logits = model->forward(test::inputs_of(ref)).logits;
  EXPECT_LE(test::max_diff(logits, ref.get("logits"), ref.get("attention_mask")), kLogitTol);
  // transformers' loss (no router loss: output_router_logits defaults to false), from our logits...
  auto labels = ref.get("input_ids").masked_fill(ref.get("attention_mask") == 0, -100);
  const auto shifted = logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, logits.size(2)});
  const double ours = at::cross_entropy_loss(shifted, labels.narrow(1, 1, labels.size(1) - 1).reshape({-1}),
                                             {}, at::Reduction::Mean, -100)
                          .item<double>();
  const double want = ref.get("loss").item<double>();
  EXPECT_NEAR(ours, want, 1e-5);
  // ...and from the evaluation `peft train` runs, on the same rows unpadded.
  const auto data = scratch(GetParam() + "_loss_rows.jsonl");
  {
    std::ofstream f(data);
    const auto ids = ref.get("input_ids"), mask = ref.get("attention_mask");
    for (int64_t b = 0; b < ids.size(0); ++b) {
      json row = json::array();
      for (int64_t t = 0; t < ids.size(1); ++t)
        if (mask[b][t].item<int64_t>()) row.push_back(ids[b][t].item<int64_t>());
      f << json{{"input_ids", row}}.dump() << "\n";
    }
  }
  TrainConfig c;
  c.model = base_dir(GetParam()).string();
  c.eval_file = data.string();
  c.output_dir = scratch(GetParam() + "_loss_eval").string();
  c.progress = false;
  EXPECT_NEAR(evaluate(c, {})["eval_loss"].get<double>(), want, 1e-5);
}

TEST_P(Moe, GreedyGenerationMatchesTransformers) {
  const auto ref = reference(GetParam());
  auto model = load_model(base_dir(GetParam()).string());
  const auto prompt = ref.get("gen_input_ids").contiguous(), want = ref.get("gen_output_ids").contiguous();
  GenerationConfig cfg;
  cfg.max_new_tokens = want.size(1) - prompt.size(1);
  ASSERT_EQ(cfg.max_new_tokens, 32);
  std::vector<int64_t> p(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
  std::vector<int64_t> w(want.data_ptr<int64_t>(), want.data_ptr<int64_t>() + want.numel());
  EXPECT_EQ(generate(*model, {p}, cfg)[0], w);
}

TEST(MoeModels, ParametersHaveTransformersNamesAndCount) {
  auto model = load_model(base_dir().string());
  EXPECT_EQ(model->num_parameters(), reference().get("num_parameters").item<int64_t>());
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [n, t] : model->named_parameters()) shapes[n] = t.sizes().vec();
  EXPECT_EQ(shapes["model.layers.1.mlp.gate.weight"], (std::vector<int64_t>{5, 32}));
  EXPECT_EQ(shapes["model.layers.1.mlp.experts.gate_up_proj"], (std::vector<int64_t>{5, 80, 32}));
  EXPECT_EQ(shapes["model.layers.1.mlp.experts.down_proj"], (std::vector<int64_t>{5, 32, 40}));
  EXPECT_EQ(model->find("model.layers.0.mlp.experts")->type_name(), "MixtralExperts");
  // Qwen3-MoE: experts registered before the router; layer 1 dense (mlp_only_layers).
  auto qwen = load_model(base_dir("qwen3_moe").string());
  EXPECT_EQ(qwen->num_parameters(), reference("qwen3_moe").get("num_parameters").item<int64_t>());
  std::vector<std::string> names;
  for (const auto& [n, _] : qwen->named_parameters())
    if (n.rfind("model.layers.0.mlp.", 0) == 0 || n.rfind("model.layers.1.mlp.", 0) == 0) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.0.mlp.experts.gate_up_proj",
                                             "model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.gate.weight",
                                             "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
                                             "model.layers.1.mlp.down_proj.weight"}));
  EXPECT_EQ(qwen->find("model.layers.0.mlp.experts")->type_name(), "Qwen3MoeExperts");
  // Qwen2-MoE: router, experts, then the shared expert and its gate; layers 0 and 2 dense
  // (decoder_sparse_step 2); q/k/v bias.
  auto qwen2 = load_model(base_dir("qwen2_moe").string());
  EXPECT_EQ(qwen2->num_parameters(), reference("qwen2_moe").get("num_parameters").item<int64_t>());
  names.clear();
  for (const auto& [n, _] : qwen2->named_parameters())
    if (n.rfind("model.layers.1.mlp.", 0) == 0 || n.rfind("model.layers.2.mlp.", 0) == 0) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.gate_up_proj",
                       "model.layers.1.mlp.experts.down_proj", "model.layers.1.mlp.shared_expert.gate_proj.weight",
                       "model.layers.1.mlp.shared_expert.up_proj.weight",
                       "model.layers.1.mlp.shared_expert.down_proj.weight",
                       "model.layers.1.mlp.shared_expert_gate.weight", "model.layers.2.mlp.gate_proj.weight",
                       "model.layers.2.mlp.up_proj.weight", "model.layers.2.mlp.down_proj.weight"}));
  std::set<std::string> all;
  for (const auto& [n, _] : qwen2->named_parameters()) all.insert(n);
  EXPECT_TRUE(all.count("model.layers.0.self_attn.k_proj.bias"));
  EXPECT_FALSE(all.count("model.layers.0.self_attn.o_proj.bias"));
  EXPECT_EQ(qwen2->find("model.layers.1.mlp.shared_expert")->type_name(), "Qwen2MoeMLP");
}

TEST_P(Moe, CliInspectNamesArchitectureAndCount) {
  const auto arch = json::parse(std::ifstream(base_dir(GetParam()) / "config.json"))["architectures"][0];
  auto r = test::run_cli({"inspect", base_dir(GetParam()).string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("architecture: " + arch.get<std::string>()));
  EXPECT_THAT(r.output, HasSubstr("(" + std::to_string(reference(GetParam()).get("num_parameters").item<int64_t>()) + ")"));
}

// q_proj / v_proj and both expert stacks (init_lora_weights=False, B perturbed, a
// rank_pattern on one layer's down_proj), as HF PEFT saved it: unmerged and merged.
TEST_P(Moe, HfLoraOnAttentionAndExpertsMatchesPeftUnmergedAndMerged) {
  SafetensorsFile ref((adapter_dir(GetParam()) / "reference.safetensors").string());
  {
    PeftModel peft(load_model(base_dir(GetParam()).string()));
    peft.load_adapter(adapter_dir(GetParam()).string());
    const auto& cfg = static_cast<const LoraConfig&>(peft.config("default"));
    ASSERT_TRUE(cfg.target_parameters.has_value());
    auto targets = *cfg.target_parameters;
    std::sort(targets.begin(), targets.end());
    EXPECT_EQ(targets, (std::vector<std::string>{"experts.down_proj", "experts.gate_up_proj"}));
  }
  test::expect_merge_round_trip(base_dir(GetParam()), adapter_dir(GetParam()), ref, kLogitTol, 1e-5);
}

TEST_P(Moe, AdaptersWeSaveLoadInHfPeft) {
  SafetensorsFile ref((adapter_dir(GetParam()) / "reference.safetensors").string());
  test::expect_resave_round_trip(base_dir(GetParam()), adapter_dir(GetParam()), ref, scratch(GetParam() + "_resaved"),
                                 scratch(GetParam() + "_resaved_out.safetensors"),
                                 kLogitTol);
  // A fresh adapter made here (both factors random) reads in HF PEFT with our outputs.
  PeftModel peft(load_model(base_dir(GetParam()).string()));
  peft.add_adapter("default", *parse_user_adapter_config(json::parse(kExpertsLora), "test"), 5);
  const auto dir = scratch(GetParam() + "_fresh");
  peft.save_adapter(dir.string());
  const auto saved = json::parse(std::ifstream(dir / "adapter_config.json"));
  EXPECT_EQ(saved["target_parameters"], json::parse(R"(["experts.gate_up_proj", "experts.down_proj"])"));
  const auto base = reference(GetParam());
  c10::InferenceMode guard;
  const auto ours = peft.forward(test::inputs_of(base)).logits;
  EXPECT_GT(test::max_diff(ours, base.get("logits"), base.get("attention_mask")), 1e-2);
  std::string log;
  const auto outputs = test::write_outputs(base, "logits", ours, scratch(GetParam() + "_fresh_out.safetensors"));
  EXPECT_EQ(test::check_in_python(base_dir(GetParam()), dir.string(), outputs, &log), 0) << log;
}

TEST_P(Moe, MergedModelSavesPerExpertKeysTransformersLoads) {
  SafetensorsFile ref((adapter_dir(GetParam()) / "reference.safetensors").string());
  PeftModel peft(load_model(base_dir(GetParam()).string()));
  peft.load_adapter(adapter_dir(GetParam()).string());
  auto merged = peft.merge_and_unload();
  const auto dir = scratch(GetParam() + "_merged");
  fs::remove_all(dir);
  save_pretrained(*merged, dir.string());
  SafetensorsFile saved((dir / "model.safetensors").string());
  const std::map<std::string, std::vector<std::string>> keys = {
      {"mixtral", {"model.layers.1.block_sparse_moe.experts.4.w3.weight", "model.layers.0.block_sparse_moe.gate.weight"}},
      {"qwen3_moe", {"model.layers.2.mlp.experts.5.up_proj.weight", "model.layers.1.mlp.down_proj.weight"}},
      {"qwen2_moe",
       {"model.layers.3.mlp.experts.5.up_proj.weight", "model.layers.2.mlp.down_proj.weight",
        "model.layers.1.mlp.shared_expert.up_proj.weight", "model.layers.1.mlp.shared_expert_gate.weight"}}};
  for (const auto& k : keys.at(GetParam())) EXPECT_TRUE(saved.contains(k)) << k;
  EXPECT_FALSE(saved.contains("model.layers.0.mlp.experts.gate_up_proj"));
  EXPECT_FALSE(saved.contains("model.layers.1.mlp.experts.gate_up_proj"));
  c10::InferenceMode guard;
  const auto ours = load_model(dir.string())->forward(test::inputs_of(ref)).logits;
  EXPECT_LE(test::max_diff(ours, ref.get("merged_logits"), ref.get("attention_mask")), kLogitTol);
  std::string log;
  const auto outputs = test::write_outputs(ref, "logits", ours, scratch(GetParam() + "_merged_out.safetensors"));
  EXPECT_EQ(test::check_in_python(dir, "-", outputs, &log), 0) << log;
}

INSTANTIATE_TEST_SUITE_P(Moe, Moe, ::testing::Values("mixtral", "qwen3_moe", "qwen2_moe"));

// (IA)3 on attention and on the shared experts' and dense MLPs' down_proj (feed-forward),
// as HF PEFT saved it; resaved here, HF PEFT reads it back with our outputs.
TEST(MoeModels, Qwen2MoeIa3MatchesPeftBothWays) {
  const auto dir = base_dir("qwen2_moe") / "ia3";
  SafetensorsFile ref((dir / "reference.safetensors").string());
  {
    c10::InferenceMode guard;
    PeftModel peft(load_model(base_dir("qwen2_moe").string()));
    peft.load_adapter(dir.string());
    EXPECT_TRUE(peft.model().find("model.layers.1.mlp.shared_expert.down_proj"));
    const auto ours = peft.forward(test::inputs_of(ref)).logits;
    EXPECT_GT(test::max_diff(ref.get("logits"), reference("qwen2_moe").get("logits"), ref.get("attention_mask")), 1e-2);
    EXPECT_LE(test::max_diff(ours, ref.get("logits"), ref.get("attention_mask")), kLogitTol);
  }
  test::expect_resave_round_trip(base_dir("qwen2_moe"), dir, ref, scratch("qwen2_moe_ia3_resaved"),
                                 scratch("qwen2_moe_ia3_out.safetensors"), kLogitTol);
}

// output_router_logits: the loss training minimizes is transformers' outputs.loss (mean
// next-token cross-entropy + router_aux_loss_coef * load-balancing loss, padding masked
// out of both), and the LoRA gradients (attention and experts) are its gradients.
class MoeRouterLoss : public ::testing::TestWithParam<std::string> {};

TEST_P(MoeRouterLoss, LossAndLoraGradientsMatchTransformers) {
  const auto dir = base_dir(GetParam() + "_aux");
  SafetensorsFile ref((dir / "aux.safetensors").string());
  PeftModel peft(load_model(dir.string()));
  peft.load_adapter(adapter_dir(GetParam()).string());
  peft.train(true);
  ModelInputs in;
  in.input_ids = ref.get("input_ids");
  in.attention_mask = ref.get("attention_mask");
  const auto logits = peft.forward(in).logits;
  const auto aux = peft.aux_loss();  // this forward's, already times router_aux_loss_coef
  ASSERT_TRUE(aux.defined());
  const double coef = json::parse(std::ifstream(dir / "config.json"))["router_aux_loss_coef"].get<double>();
  EXPECT_NEAR(aux.item<double>() / coef, ref.get("aux_loss").item<double>(), 1e-5);
  const auto labels = in.input_ids.masked_fill(in.attention_mask == 0, -100);
  const auto lm = at::cross_entropy_loss(logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, logits.size(2)}),
                                         labels.narrow(1, 1, labels.size(1) - 1).reshape({-1}), {},
                                         at::Reduction::Mean, -100);
  const auto loss = lm + aux;
  EXPECT_NEAR(loss.item<double>(), ref.get("loss").item<double>(), 1e-5);
  loss.backward();
  size_t compared = 0;
  double worst = 0;
  for (auto& [name, t] : peft.adapter_state_dict("default")) {  // the live factors, under HF PEFT's keys
    ASSERT_TRUE(t.requires_grad()) << name;
    ASSERT_TRUE(ref.contains("grad." + name)) << name;
    ASSERT_TRUE(t.grad().defined()) << name;
    const auto want = ref.get("grad." + name);
    const double diff = (t.grad() - want).abs().max().item<double>();
    worst = std::max(worst, diff / std::max(1e-3, want.abs().max().item<double>()));
    EXPECT_LE(diff, 1e-5 * std::max(1.0, want.abs().max().item<double>())) << name;
    ++compared;
  }
  const auto names = ref.names();
  EXPECT_EQ(compared, static_cast<size_t>(std::count_if(names.begin(), names.end(), [](const std::string& k) {
              return k.rfind("grad.", 0) == 0;
            })));
  std::cerr << GetParam() << ": loss " << loss.item<double>() << " (transformers " << ref.get("loss").item<double>()
            << "), aux " << aux.item<double>() / coef << ", max relative gradient difference " << worst << "\n";
}

INSTANTIATE_TEST_SUITE_P(Moe, MoeRouterLoss, ::testing::Values("mixtral", "qwen2_moe"));

TEST(MoeTrain, LoraOnAttentionAndExpertsLowersEvalLoss) {
  const auto data = scratch("counting.jsonl");
  test::write_counting_data(data);
  TrainConfig c;
  // output_router_logits: the router load-balancing loss trains along (logged as aux_loss).
  c.model = base_dir("mixtral_aux").string();
  c.train_file = data.string();
  c.eval_split = 0.2;
  c.output_dir = scratch("train").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                             "target_parameters": ["experts.gate_up_proj", "experts.down_proj"]})");
  c.max_steps = 30;
  c.per_device_train_batch_size = 8;
  c.learning_rate = 2e-2;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;
  const double before = evaluate(before_cfg, {})["eval_loss"];
  auto r = train(c);
  const double after = r.evals.back()["eval_loss"];
  EXPECT_LT(after, 0.85 * before) << "eval loss " << before << " -> " << after;
  ASSERT_FALSE(r.steps.empty());
  for (const auto& s : r.steps) EXPECT_GT(s.aux_loss, 0) << "step " << s.step;
  SafetensorsFile saved((fs::path(r.adapter_dir) / "adapter_model.safetensors").string());
  // The experts' factors trained too (B starts at zero).
  for (const char* key : {"base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight",
                          "base_model.model.model.layers.1.mlp.experts.lora_B.weight"})
    EXPECT_GT(saved.get(key).abs().max().item<double>(), 0) << key;
}

TEST(MoeModels, UnsupportedSettingsAreRefusedByName) {
  const auto dir = scratch("router_jitter");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(base_dir() / f, dir / f);
  json cfg = json::parse(std::ifstream(dir / "config.json"));
  cfg["router_jitter_noise"] = 0.1;
  std::ofstream(dir / "config.json") << cfg.dump(2);
  try {
    (void)load_model(dir.string());
    ADD_FAILURE() << "router_jitter_noise loaded";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("router_jitter_noise"));
  }
  // Recomputed (checkpointed) layers would drop the router loss: refused by name.
  {
    auto aux = load_model(base_dir("mixtral_aux").string());
    ModelInputs in = test::inputs_of(reference());
    in.checkpoint_layers = true;
    try {
      (void)aux->forward(in);
      ADD_FAILURE() << "gradient checkpointing with output_router_logits ran";
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr("output_router_logits"));
    }
  }
  // As HF PEFT's ParamWrapper: no dropout on parameter targets.
  PeftModel peft(load_model(base_dir().string()));
  auto j = json::parse(kExpertsLora);
  j["lora_dropout"] = 0.1;
  try {
    peft.add_adapter("x", *parse_user_adapter_config(j, "test"));
    ADD_FAILURE() << "lora_dropout with target_parameters accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("lora_dropout"));
  }
  j = json::parse(kExpertsLora);
  j["target_parameters"] = json::array({"experts.nope"});
  EXPECT_THROW(peft.add_adapter("y", *parse_user_adapter_config(j, "test")), std::invalid_argument);
  // transformers 4 expert names, which HF PEFT would silently turn into target_parameters.
  j = json::parse(kExpertsLora);
  j["target_modules"] = json::array({"q_proj", "w2"});
  try {
    peft.add_adapter("z", *parse_user_adapter_config(j, "test"));
    ADD_FAILURE() << "target_modules w2 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("target_parameters"));
  }
}

TEST(MoeModels, MissingExpertTensorIsNamed) {
  const auto dir = scratch("missing_expert");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(base_dir() / f, dir / f);
  test::drop_tensor((dir / "model.safetensors").string(), "model.layers.1.block_sparse_moe.experts.2.w3.weight");
  try {
    (void)load_model(dir.string());
    ADD_FAILURE() << "a checkpoint without an expert tensor loaded";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("block_sparse_moe.experts.2.w3.weight"));
  }
}

}  // namespace
}  // namespace peft
