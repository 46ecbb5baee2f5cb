// Task vectors (`peft extract`, extract_task_vector) against fine-tuned checkpoints with known
// deltas and torch's SVD of them (fixtures from tests/parity/make_task_vector.py): an exactly
// low-rank delta comes back as a LoRA that HF PEFT loads with the fine-tuned model's logits,
// the energies equal torch.linalg.svd's, differences outside the Linears are reported, and
// task arithmetic with `peft combine` (cat) adds and subtracts such adapters exactly.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <set>

#include "cli_runner.h"
#include "peft/lora_combine.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/task_vector.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;   // fp32 logits against transformers / HF PEFT
constexpr double kEnergyTol = 1e-6;  // our float64 SVD's energies against torch's

fs::path fixture() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_task_vector"; }
nlohmann::json energies() { return nlohmann::json::parse(std::ifstream(fixture() / "energies.json")); }
fs::path base_dir() { return fs::path(PEFT_PARITY_DIR) / "llama_mha"; }
fs::path ft_dir(const std::string& name) { return fixture() / name; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "task_vector" / name;
  fs::create_directories(p.parent_path());
  return p;
}

struct Extracted {
  std::unique_ptr<PeftModel> peft;
  TaskVectorReport report;
};

Extracted extract(const std::string& ft, int64_t rank, std::optional<std::vector<std::string>> targets = {}) {
  Extracted e;
  e.peft = std::make_unique<PeftModel>(load_model(base_dir().string()));
  auto tuned = load_model(ft_dir(ft).string());
  TaskVectorOptions o;
  o.rank = rank;
  o.targets = std::move(targets);
  e.report = extract_task_vector(*e.peft, *tuned, o);
  return e;
}

double logit_diff(PeftModel& peft, const SafetensorsFile& ref) {
  c10::InferenceMode guard;
  return test::max_diff(peft.forward(test::inputs_of(ref)).logits, ref.get("logits"), test::mask_of(ref));
}

SafetensorsFile ft_reference() { return SafetensorsFile((ft_dir("ft_lowrank") / "reference.safetensors").string()); }

// --- the library ------------------------------------------------------------------------

TEST(ExtractParity, LowRankDeltaGivesTheFineTunedLogitsHereAndInPeft) {
  const auto fx = energies();
  const auto ref = ft_reference();
  for (int64_t rank : {2, 3}) {  // the true rank and above
    auto e = extract("ft_lowrank", rank);
    const double d = logit_diff(*e.peft, ref);
    EXPECT_LE(d, kLogitTol) << "rank " << rank;
    std::cout << "[ measured ] rank " << rank << ": max |logits - fine-tuned| = " << d << "\n";
    EXPECT_TRUE(e.report.not_captured.empty());
    std::set<std::string> kept;
    for (const auto& m : e.report.matrices)
      if (!m.skipped()) kept.insert(m.path);
    EXPECT_EQ(kept, fx["lowrank"].get<std::set<std::string>>());

    const auto out = scratch("lowrank_r" + std::to_string(rank));
    fs::remove_all(out);
    e.peft->save_adapter(out.string());
    const auto cfg = nlohmann::json::parse(std::ifstream(out / "adapter_config.json"));
    EXPECT_EQ(cfg["r"], rank);
    EXPECT_EQ(cfg["lora_alpha"], rank);
    EXPECT_EQ(cfg["target_modules"].get<std::set<std::string>>(),
              (std::set<std::string>{"down_proj", "gate_proj", "q_proj", "v_proj"}));
    // q_proj of layer 1 did not change: excluded, not written as zeros.
    EXPECT_THAT(cfg["exclude_modules"].dump(), HasSubstr("model.layers.1.self_attn.q_proj"));
    // HF PEFT loads the folder strictly and computes the fine-tuned model's logits (once:
    // a Python start costs seconds).
    if (rank != 2) continue;
    std::string log;
    EXPECT_EQ(test::check_in_python(base_dir(), out.string(), ft_dir("ft_lowrank") / "reference.safetensors", &log), 0)
        << log;
  }
}

// Below the true rank the delta is not carried (so the match above is the rank's doing).
TEST(ExtractParity, BelowTheTrueRankTheLogitsDiffer) {
  const auto ref = ft_reference();
  auto e = extract("ft_lowrank", 1);
  EXPECT_GT(logit_diff(*e.peft, ref), 100 * kLogitTol);
  EXPECT_LT(e.report.total_energy(), 0.9);
  // And the base alone is far from the fine-tuned model.
  PeftModel base(load_model(base_dir().string()));
  EXPECT_GT(logit_diff(base, ref), 100 * kLogitTol);
}

TEST(ExtractParity, EnergiesAndUncapturedParametersMatchTorch) {
  const auto fx = energies();
  for (const char* ft : {"ft_lowrank", "ft_noisy"})
    for (int64_t rank : {1, 2, 3}) {
      const auto want = fx[ft]["ranks"][std::to_string(rank)];
      auto e = extract(ft, rank);
      ASSERT_EQ(e.report.matrices.size(), want["matrices"].size());
      for (const auto& m : e.report.matrices) {
        const auto& w = want["matrices"][m.path];
        EXPECT_EQ(m.skipped(), w.is_null()) << m.path;
        if (!w.is_null()) EXPECT_NEAR(m.energy(), w.get<double>(), kEnergyTol) << ft << " r=" << rank << " " << m.path;
      }
      EXPECT_NEAR(e.report.total_energy(), want["total"].get<double>(), kEnergyTol) << ft << " r=" << rank;
      std::map<std::string, double> got;
      for (const auto& n : e.report.not_captured) got[n.name] = n.max_abs_diff;
      ASSERT_EQ(got.size(), fx[ft]["not_captured"].size()) << ft;
      for (const auto& [name, d] : fx[ft]["not_captured"].items()) {
        ASSERT_TRUE(got.count(name)) << name;
        EXPECT_NEAR(got[name], d.get<double>(), 1e-9) << name;
      }
    }
}

TEST(ExtractParity, TargetsNarrowTheAdapter) {
  auto e = extract("ft_noisy", 2, std::vector<std::string>{"q_proj", "o_proj"});
  ASSERT_EQ(e.report.matrices.size(), 4u);  // two layers
  const auto cfg = e.peft->config("default").to_json();
  EXPECT_EQ(cfg["target_modules"].get<std::set<std::string>>(), (std::set<std::string>{"o_proj", "q_proj"}));
  // The other Linears' deltas are now not captured, and named.
  std::set<std::string> missed;
  for (const auto& n : e.report.not_captured) missed.insert(n.name);
  EXPECT_TRUE(missed.count("model.layers.1.mlp.down_proj.weight"));
  EXPECT_TRUE(missed.count("model.norm.weight"));
}

TEST(ExtractErrors, LibraryNamesTheKey) {
  PeftModel peft(load_model(base_dir().string()));
  auto other = load_model((fs::path(PEFT_PARITY_DIR) / "llama_gqa_tied").string());
  TaskVectorOptions o;
  o.rank = 2;
  EXPECT_THAT([&] { extract_task_vector(peft, *other, o); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("'model.embed_tokens.weight': shape")));
  auto gpt2 = load_model((fs::path(PEFT_PARITY_DIR) / "gpt2").string());
  EXPECT_THAT([&] { extract_task_vector(peft, *gpt2, o); },
              ::testing::ThrowsMessage<std::invalid_argument>(
                  HasSubstr("'architectures': the base is LlamaForCausalLM, the fine-tuned checkpoint GPT2LMHeadModel")));
  auto same = load_model(base_dir().string());
  EXPECT_THAT([&] { extract_task_vector(peft, *same, o); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("every target's delta is exactly zero")));
  auto tuned = load_model(ft_dir("ft_lowrank").string());
  o.targets = std::vector<std::string>{"q_proj", "qkv"};
  EXPECT_THAT([&] { extract_task_vector(peft, *tuned, o); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("target 'qkv' matches no module")));
  o.targets = std::vector<std::string>{"input_layernorm"};
  EXPECT_THAT([&] { extract_task_vector(peft, *tuned, o); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("from Linear (and Conv1D) layers only")));
  o.targets.reset();
  o.rank = 0;
  EXPECT_THAT([&] { extract_task_vector(peft, *tuned, o); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("'rank' must be >= 1")));
  EXPECT_TRUE(peft.adapters().empty());
}

// --- peft extract -----------------------------------------------------------------------

// The number after `key` on the line that starts with `prefix`.
double number_after(const std::string& output, const std::string& prefix, const std::string& key) {
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(prefix, 0) == 0) {
      const auto at = line.find(key);
      if (at != std::string::npos) return std::stod(line.substr(at + key.size()));
    }
  ADD_FAILURE() << "no line '" << prefix << "... " << key << "' in:\n" << output;
  return -1;
}

TEST(ExtractCli, ReportsEveryMatrixTheTotalAndWhatItCannotCapture) {
  const auto fx = energies()["ft_noisy"];
  const auto out = scratch("cli_noisy");
  fs::remove_all(out);
  const std::vector<std::string> args = {"extract", base_dir().string(), ft_dir("ft_noisy").string(), out.string(),
                                         "--rank", "2"};
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("[1/14] model.layers.0.self_attn.q_proj 64x64 rank 2 energy"));
  EXPECT_THAT(r.output, HasSubstr("[2/14] model.layers.0.self_attn.k_proj 64x64 skipped: delta is exactly zero"));
  EXPECT_THAT(r.output, HasSubstr("[5/14] model.layers.0.mlp.gate_proj 96x64 rank 2 energy"));
  EXPECT_NEAR(number_after(r.output, "[4/14] model.layers.0.self_attn.o_proj", "energy "),
              fx["ranks"]["2"]["matrices"]["model.layers.0.self_attn.o_proj"].get<double>(), kEnergyTol);
  EXPECT_NEAR(number_after(r.output, "total: 14 matrices, 9 skipped, rank 2", "energy "),
              fx["ranks"]["2"]["total"].get<double>(), kEnergyTol);
  for (const char* name : {"model.norm.weight", "model.embed_tokens.weight", "lm_head.weight"})
    EXPECT_THAT(r.output, HasSubstr(std::string("not captured: ") + name + " max_abs_diff"));
  EXPECT_TRUE(fs::exists(out / "adapter_model.safetensors"));
  // Again only with --overwrite.
  const auto again = test::run_cli(args);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.output, HasSubstr("already holds an adapter (pass --overwrite"));
  auto with_overwrite = args;
  with_overwrite.push_back("--overwrite");
  EXPECT_EQ(test::run_cli(with_overwrite).exit_code, 0);
}

TEST(ExtractCli, MismatchedCheckpointsAreOneLineErrorsNamingTheKey) {
  const auto out = scratch("never_written");
  auto error_of = [&](const std::vector<std::string>& args) {
    const auto r = test::run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << test::describe(r);
    const auto at = r.output.find("error: ");
    EXPECT_NE(at, std::string::npos) << r.output;
    const std::string error = at == std::string::npos ? r.output : r.output.substr(at);
    EXPECT_EQ(std::count(error.begin(), error.end(), '\n'), 1) << r.output;  // the last line, and one line
    return error;
  };
  const auto gqa = (fs::path(PEFT_PARITY_DIR) / "llama_gqa_tied").string();
  EXPECT_THAT(error_of({"extract", base_dir().string(), gqa, out.string(), "--rank", "2"}),
              HasSubstr("error: 'model.embed_tokens.weight': shape [128, 64] in the base, [97, 48] in the "
                        "fine-tuned checkpoint"));
  const auto gpt2 = (fs::path(PEFT_PARITY_DIR) / "gpt2").string();
  EXPECT_THAT(error_of({"extract", base_dir().string(), gpt2, out.string(), "--rank", "2"}),
              HasSubstr("'architectures': the base is LlamaForCausalLM"));
  EXPECT_FALSE(fs::exists(out));
}

TEST(ExtractCli, HelpShowsAnExample) {
  const auto r = test::run_cli({"extract", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, AllOf(HasSubstr("Example"), HasSubstr("peft extract"), HasSubstr("--rank"),
                              HasSubstr("--targets")));
}

// --- task arithmetic: extracted task vectors through peft combine ----------------------

TEST(TaskArithmetic, CatAddsExtractedTaskVectorsExactly) {
  const auto tv = scratch("tv_lowrank");
  fs::remove_all(tv);
  const auto r = test::run_cli({"extract", base_dir().string(), ft_dir("ft_lowrank").string(), tv.string(), "--rank", "2"});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const auto ref = ft_reference();
  SafetensorsFile base_ref((base_dir() / "reference.safetensors").string());
  // tv + (-1) tv = 0: the base's logits; 0.5 tv + 0.5 tv = tv: the fine-tuned model's.
  for (const auto& [weights, want] : std::vector<std::pair<std::string, const SafetensorsFile*>>{
           {"[1.0, -1.0]", &base_ref}, {"[0.5, 0.5]", &ref}}) {
    const auto out = scratch("tv_cat");
    fs::remove_all(out);
    const auto c = test::run_cli({"combine", "base=" + base_dir().string(), "adapters.x=" + tv.string(),
                                  "adapters.y=" + tv.string(), "weights=" + weights, "combination_type=cat",
                                  "output_dir=" + out.string()});
    ASSERT_EQ(c.exit_code, 0) << test::describe(c);
    PeftModel peft(load_model(base_dir().string()));
    peft.load_adapter(out.string());
    EXPECT_LE(logit_diff(peft, *want), kLogitTol) << weights;
  }
}

}  // namespace
}  // namespace peft
