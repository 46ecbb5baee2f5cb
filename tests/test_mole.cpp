// MoLE (mixture of LoRA experts with a trained router) against a plain-PyTorch reference
// of its equation and transformers' load_balancing_loss_func (fixtures from
// tests/parity/mole_reference.py): logits for top_k 1, 2 and dense, the aux loss,
// gradients, save/load both ways, bad configs, and training through `peft train`.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/mole.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "test_util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;
using ::testing::AllOf;
using ::testing::HasSubstr;

namespace peft {
namespace {

fs::path ref_dir() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_mole"; }
fs::path expert(const std::string& n) { return ref_dir() / "experts" / n; }
fs::path scratch(const std::string& name) {
  const auto p = fs::path(PEFT_SCRATCH_DIR) / "mole" / name;
  fs::create_directories(p.parent_path());
  return p;
}
std::shared_ptr<Model> base() { return load_model((ref_dir() / "base").string()); }

ojson mole_json(int64_t top_k, double coef = 0.0) {
  ojson j = {{"peft_type", "MOLE"}, {"top_k", top_k}, {"router_aux_loss_coef", coef}};
  j["experts"] = ojson::object();
  for (const char* n : {"e0", "e1", "e2"}) j["experts"][n] = expert(n).string();
  return j;
}

at::Tensor logits_of(PeftModel& peft, const at::Tensor& ids) {
  ModelInputs in;
  in.input_ids = ids;
  return peft.forward(in).logits;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

class MoleParity : public ::testing::TestWithParam<std::string> {};

TEST_P(MoleParity, LogitsAndAuxLossMatchTheReference) {
  const fs::path dir = ref_dir() / "cases" / GetParam();
  SafetensorsFile ref((dir / "reference.safetensors").string());
  PeftModel peft(base());
  peft.load_adapter((dir / "adapter").string());
  c10::NoGradGuard g;
  const auto logits = logits_of(peft, ref.get("input_ids"));
  EXPECT_LE(max_diff(logits, ref.get("logits")), 1e-4);
  // The adapter changes the output (so the comparison could fail).
  {
    auto off = peft.disable_adapters();
    EXPECT_GT(max_diff(logits_of(peft, ref.get("input_ids")), ref.get("logits")), 1e-2);
  }
  const auto aux = peft.aux_loss();
  ASSERT_TRUE(aux.defined());
  EXPECT_NEAR(aux.item<double>(), ref.get("aux_loss").item<double>(), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Mole, MoleParity, ::testing::Values("top1", "top2", "dense"));

TEST(MoleLayerMath, BalanceLossIsOneWhenUniformAndGatesKeepTopK) {
  // Uniform logits: every expert gets 1/n of probability; f_i counts top-k picks per token
  // (sum k), so the loss is n * sum(f_i * 1/n) = k whatever topk picks (as Mixtral's).
  EXPECT_NEAR(MoleLayer::balance_loss(at::zeros({10, 4}), 2).item<double>(), 2.0, 1e-6);
  // All tokens to expert 0 with certainty: f = (1, 0, ...), P = (1, 0, ...): loss n.
  auto sure = at::full({6, 3}, -1e4);
  sure.select(1, 0).fill_(0);
  EXPECT_NEAR(MoleLayer::balance_loss(sure, 1).item<double>(), 3.0, 1e-5);
}

TEST(MoleGradients, FrozenExpertsTrainOnlyTheRouters) {
  for (const bool trainable : {false, true}) {
    SCOPED_TRACE(trainable ? "trainable experts" : "frozen experts");
    auto j = mole_json(2, 0.1);
    j["trainable_experts"] = trainable;
    PeftModel peft(base());
    peft.add_adapter("default", *parse_user_adapter_config(j, "method"), 3);
    const auto ids = at::randint(0, 128, {2, 6}, at::detail::createCPUGenerator(1));
    const auto logits = logits_of(peft, ids);  // before aux_loss(): it reads this forward's
    auto loss = logits.pow(2).mean() + peft.aux_loss();
    loss.backward();
    int64_t routers = 0, experts = 0;
    for (auto& [name, t] : peft.model().named_parameters()) {
      const bool router = name.find("mole_router") != std::string::npos;
      const bool is_expert = name.find("mole_experts") != std::string::npos;
      if (router || (trainable && is_expert)) {
        ASSERT_TRUE(t.requires_grad()) << name;
        ASSERT_TRUE(t.grad().defined()) << name;
        EXPECT_GT(t.grad().abs().sum().item<double>(), 0) << name;
        (router ? routers : experts)++;
      } else {
        EXPECT_FALSE(t.requires_grad()) << name;
        EXPECT_FALSE(t.grad().defined()) << name;
      }
    }
    // Routers on q, k, v, down of both layers; e0..e2 adapt 2 modules each in 2 layers.
    EXPECT_EQ(routers, 8);
    EXPECT_EQ(experts, trainable ? 2 * 12 : 0);
    const auto [t, all] = peft.trainable_parameters();
    int64_t router_params = 0;
    for (auto& x : peft.trainable_tensors()) router_params += x.numel();
    EXPECT_EQ(t, router_params);
    // Frozen: [3, in] per router, in = 32 for q, k, v and 64 for down_proj, two layers.
    if (!trainable) EXPECT_EQ(t, 3 * (32 + 32 + 32 + 64) * 2);
    EXPECT_GT(all, t);
  }
}

TEST(MoleFiles, SavedAdaptersReloadWithIdenticalLogits) {
  for (const bool embed : {false, true}) {
    SCOPED_TRACE(embed ? "embedded" : "referenced");
    auto j = mole_json(2, 0.01);
    j["embed_experts"] = embed;
    PeftModel peft(base());
    peft.add_adapter("default", *parse_user_adapter_config(j, "method"), 7);
    const auto ids = at::randint(0, 128, {2, 5}, at::detail::createCPUGenerator(2));
    c10::NoGradGuard g;
    const auto want = logits_of(peft, ids);
    const auto dir = scratch(embed ? "saved_embedded" : "saved_referenced");
    fs::remove_all(dir);
    peft.save_adapter(dir.string());
    SafetensorsFile f((dir / "adapter_model.safetensors").string());
    const std::string key = "base_model.model.model.layers.0.self_attn.q_proj.mole_experts.e0.lora_A.weight";
    EXPECT_EQ(f.contains(key), embed);
    EXPECT_TRUE(f.contains("base_model.model.model.layers.0.self_attn.q_proj.mole_router.weight"));
    const auto cfg = json::parse(std::ifstream(dir / "adapter_config.json"));
    EXPECT_EQ(cfg["peft_type"], "MOLE");
    EXPECT_EQ(cfg["experts"]["e1"].is_object(), embed);
    if (embed) {
      // The experts' folders are not needed any more: the copy loads from itself alone.
      EXPECT_EQ(cfg["experts"]["e1"]["peft_type"], "LORA");
    }
    PeftModel again(base());
    again.load_adapter(dir.string());
    EXPECT_TRUE(at::equal(logits_of(again, ids), want));
  }
}

TEST(MoleFiles, RelativeExpertFoldersResolveAgainstTheAdapterFolder) {
  // The fixture's adapters name their experts "../../../experts/eN".
  const auto cfg = json::parse(std::ifstream(ref_dir() / "cases" / "top2" / "adapter" / "adapter_config.json"));
  ASSERT_EQ(cfg["experts"]["e0"], "../../../experts/e0");
  PeftModel peft(base());
  peft.load_adapter((ref_dir() / "cases" / "top2" / "adapter").string());
  const auto& mole = dynamic_cast<const MoleConfig&>(peft.config("default"));
  EXPECT_EQ(fs::path(mole.experts[0].dir), fs::absolute(expert("e0")).lexically_normal());
}

std::string error_of(const ojson& j, bool attach = true) {
  try {
    auto cfg = parse_user_adapter_config(j, "method");
    if (attach) {
      PeftModel peft(base());
      peft.add_adapter("default", *cfg);
    }
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(MoleBadConfig, ErrorsNameTheKey) {
  auto j = mole_json(2);
  j["experts"]["e9"] = (ref_dir() / "experts" / "nope").string();
  EXPECT_THAT(error_of(j), AllOf(HasSubstr("experts.e9"), HasSubstr("no adapter_config.json")));

  j = mole_json(2);
  j["experts"]["e0"] = (ref_dir() / "bad" / "wrong_shape").string();
  EXPECT_THAT(error_of(j), AllOf(HasSubstr("expert 'e0'"), HasSubstr("q_proj.lora_A.weight"), HasSubstr("shape")));

  EXPECT_THAT(error_of(mole_json(4)), AllOf(HasSubstr("'top_k'"), HasSubstr("got 4")));
  EXPECT_THAT(error_of(mole_json(0)), HasSubstr("'top_k'"));
  EXPECT_THAT(error_of(mole_json(2, -0.5)), HasSubstr("'router_aux_loss_coef'"));
  j = mole_json(2);
  j["experts"] = ojson::object();
  EXPECT_THAT(error_of(j), HasSubstr("'experts'"));
  j = mole_json(2);
  j["tpo_k"] = 1;
  EXPECT_THAT(error_of(j), HasSubstr("unknown MOLE setting 'tpo_k'"));
  j = mole_json(2);
  j["experts"]["x"] = (ref_dir() / "bad" / "xlora").string();
  EXPECT_THAT(error_of(j), HasSubstr("peft_type XLORA"));
}

// X-LoRA loads as its own method (tests/test_xlora.cpp); this fixture's adapters are named
// e0..e2, which HF's X-LoRA cannot run (it needs "0", "1", ...), so loading names XLORA.
TEST(MoleBadConfig, LoadingAnXLoraAdapterIsRefusedByName) {
  PeftModel peft(base());
  try {
    peft.load_adapter((ref_dir() / "bad" / "xlora").string());
    FAIL() << "an X-LoRA adapter loaded";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("XLORA"));
  }
}

TEST(MoleBadConfig, MergingIsRefused) {
  PeftModel peft(base());
  peft.add_adapter("default", *parse_user_adapter_config(mole_json(2), "method"));
  EXPECT_THROW(peft.merge(), std::logic_error);
}

// `peft train` with a MOLE method: the router learns, experts stay as they were, the aux
// loss is logged, and a run cut after a checkpoint resumes to the same losses.
TrainConfig mole_train_config(const fs::path& out, const fs::path& data) {
  TrainConfig c;
  c.model = (ref_dir() / "base").string();
  c.train_file = data.string();
  c.output_dir = out.string();
  c.max_steps = 6;
  c.save_steps = 3;
  c.save_total_limit = 5;
  c.per_device_train_batch_size = 4;
  c.learning_rate = 5e-2;
  c.shuffle = false;
  c.progress = false;
  c.method = mole_json(2, 0.05);
  return c;
}

TEST(MoleTrain, RouterTrainsExpertsStayAndResumeIsExact) {
  const auto data = scratch("counting.jsonl");
  test::write_counting_data(data);
  const auto full = scratch("train_full"), cut = scratch("train_cut");
  fs::remove_all(full);
  fs::remove_all(cut);
  const auto want = train(mole_train_config(full, data)).steps;
  ASSERT_EQ(want.size(), 6u);
  EXPECT_GT(want.front().aux_loss, 0);
  // metrics.jsonl logs the aux loss apart from the task loss.
  std::ifstream metrics(full / "metrics.jsonl");
  const auto first = json::parse([&] { std::string l; std::getline(metrics, l); return l; }());
  EXPECT_TRUE(first.contains("aux_loss"));
  // The routers moved; the referenced experts are untouched (their folders were read only).
  SafetensorsFile trained((full / "adapter_model.safetensors").string());
  for (const auto& k : trained.names()) EXPECT_THAT(k, HasSubstr("mole_router")) << k;
  PeftModel fresh(base());
  fresh.add_adapter("default", *parse_user_adapter_config(mole_json(2, 0.05), "method"),
                    mole_train_config(full, data).seed);  // the run's initial routers
  const auto sd = fresh.adapter_state_dict("default");
  EXPECT_GT(max_diff(trained.get(sd.front().first), sd.front().second), 1e-4);
  // Cut the run after its first checkpoint, then resume.
  fs::copy(full, cut, fs::copy_options::recursive);
  fs::remove_all(cut / "checkpoint-6");
  for (const char* f : {"adapter_model.safetensors", "adapter_config.json", "train_config.json"}) fs::remove(cut / f);
  const auto resumed = train(mole_train_config(cut, data), /*resume=*/true).steps;
  ASSERT_EQ(resumed.size(), 3u);
  for (const auto& s : resumed) EXPECT_EQ(s.loss, want[s.step - 1].loss) << "step " << s.step;
}

}  // namespace
}  // namespace peft
