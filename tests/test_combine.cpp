// Weighted merges of LoRA adapters against HF PEFT's add_weighted_adapter (fixtures from
// tests/parity/make_combine.py): every combination type's tensors and outputs, DARE's
// random masks from the same seed, `peft combine` end to end (HF PEFT loads its folder
// with the outputs of its own merge), and bad recipes.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "peft/ia3.h"
#include "peft/ia3_combine.h"
#include "peft/lora_combine.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

namespace peft {
namespace {

// The merged A and B against HF's: the same ATen ops on the same inputs, so only the
// order of float sums inside matmul/SVD could differ (measured: 0 on this machine).
constexpr double kTensorTol = 1e-5;
// Logits of the model with the merged adapter against HF's (fp32, as tests/test_lora.cpp).
constexpr double kLogitTol = 1e-4;

fs::path fixture() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_combine"; }
nlohmann::ordered_json cases() {
  return nlohmann::ordered_json::parse(std::ifstream(fixture() / "cases.json"));
}
fs::path base_dir() { return fs::path(PEFT_PARITY_DIR) / cases()["base"].get<std::string>(); }
fs::path adapter_dir(const std::string& n) { return fixture() / "adapters" / n; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "combine" / name;
  fs::create_directories(p.parent_path());
  return p;
}

std::unique_ptr<PeftModel> with_adapters(const std::vector<std::string>& names) {
  auto peft = std::make_unique<PeftModel>(load_model(base_dir().string()));
  for (const auto& n : names) peft->load_adapter(adapter_dir(n).string(), n);
  return peft;
}

WeightedAdapterOptions options_of(const nlohmann::ordered_json& c) {
  WeightedAdapterOptions o;
  o.combination_type = c["combination_type"];
  if (c.contains("density")) o.density = c["density"].get<double>();
  if (c.contains("majority_sign_method")) o.majority_sign_method = c["majority_sign_method"];
  if (c.contains("svd_rank")) o.svd_rank = c["svd_rank"].get<int64_t>();
  if (c.contains("svd_clamp")) o.svd_clamp = c["svd_clamp"].get<double>();
  if (c.contains("svd_full_matrices")) o.svd_full_matrices = c["svd_full_matrices"];
  return o;
}

// Every LoRA tensor HF saved against ours (same key set; HF's copy of the base embedding
// beside an embedding LoRA is not an adapter tensor). Returns the largest difference.
double max_tensor_diff(const NamedTensors& ours, const fs::path& hf_file) {
  SafetensorsFile hf(hf_file.string());
  std::set<std::string> seen;
  double worst = 0;
  for (const auto& [k, t] : ours) {
    EXPECT_TRUE(hf.contains(k)) << k;
    if (!hf.contains(k)) continue;
    seen.insert(k);
    auto want = hf.get(k).to(at::kFloat);
    EXPECT_EQ(t.sizes(), want.sizes()) << k;
    if (t.sizes() != want.sizes()) continue;
    worst = std::max(worst, (t.to(at::kFloat) - want).abs().max().item<double>());
  }
  for (const auto& k : hf.names())
    if (k.find(".base_layer.") == std::string::npos) EXPECT_TRUE(seen.count(k)) << "HF has " << k << ", we do not";
  return worst;
}

// Runs one fixture case here: seed, add_weighted_adapter. Returns the model.
std::unique_ptr<PeftModel> combine_case(const std::string& name, const nlohmann::ordered_json& c, uint64_t seed) {
  auto peft = with_adapters(cases()["adapters"].get<std::vector<std::string>>());
  at::manual_seed(seed);
  add_weighted_adapter(*peft, c["adapters"].get<std::vector<std::string>>(), c["weights"].get<std::vector<double>>(),
                       name, options_of(c));
  return peft;
}

class CombineParity : public ::testing::TestWithParam<std::string> {};

TEST_P(CombineParity, TensorsConfigAndOutputsMatchPeft) {
  const std::string name = GetParam();
  const auto c = cases()["cases"][name];
  auto peft = combine_case(name, c, c["seed"].get<uint64_t>());
  const fs::path hf = fixture() / "cases" / name / "adapter";
  const double d = max_tensor_diff(peft->adapter_state_dict(name), hf / "adapter_model.safetensors");
  EXPECT_LE(d, kTensorTol) << name;
  RecordProperty("max_tensor_diff", std::to_string(d));
  std::cout << "[ measured ] " << name << ": max |A,B - HF| = " << d;

  const auto hf_cfg = nlohmann::json::parse(std::ifstream(hf / "adapter_config.json"));
  const auto ours = peft->config(name).to_json();
  for (const char* key : {"r", "lora_alpha", "use_rslora", "init_lora_weights"}) EXPECT_EQ(ours[key], hf_cfg[key]) << key;
  auto sorted = [](const auto& list) {
    auto v = list.template get<std::vector<std::string>>();
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(ours["target_modules"]), sorted(hf_cfg["target_modules"]));

  c10::InferenceMode guard;
  SafetensorsFile ref((fixture() / "cases" / name / "reference.safetensors").string());
  peft->set_adapter({name});
  const double dl = test::max_diff(peft->forward(test::inputs_of(ref)).logits, ref.get("logits"), test::mask_of(ref));
  EXPECT_LE(dl, kLogitTol) << name;
  std::cout << ", max |logits - HF| = " << dl << "\n";
}

INSTANTIATE_TEST_SUITE_P(Peft, CombineParity,
                         ::testing::Values("linear", "cat", "svd", "svd_rank_clamp_reduced", "ties", "ties_frequency",
                                           "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd",
                                           "magnitude_prune", "magnitude_prune_svd", "dare_linear_gaussian_init",
                                           "dare_ties_svd_false_init", "single", "single_negate"));

TEST(CombineParity, FixtureCoversEveryCombinationType) {
  std::set<std::string> covered;
  const auto all = cases();  // bound: items() of a temporary would dangle
  for (const auto& [_, c] : all["cases"].items()) covered.insert(c["combination_type"].get<std::string>());
  for (const auto& t : combination_types()) EXPECT_TRUE(covered.count(t)) << t;
}

// The masks are what DARE's parity rests on: another seed gives other masks, far beyond
// the tolerance, so the matches above are not luck of a mask-insensitive merge.
TEST(CombineParity, DareMasksDependOnTheSeed) {
  for (const char* name : {"dare_linear", "dare_ties_svd", "dare_ties_svd_false_init"}) {
    const auto c = cases()["cases"][name];
    auto peft = combine_case(name, c, c["seed"].get<uint64_t>() + 1);
    EXPECT_GT(max_tensor_diff(peft->adapter_state_dict(name), fixture() / "cases" / name / "adapter" /
                                                                "adapter_model.safetensors"),
              100 * kTensorTol)
        << name;
  }
}

// --- peft combine ----------------------------------------------------------------------

nlohmann::ordered_json recipe_for(const std::string& name, const fs::path& out) {
  const auto c = cases()["cases"][name];
  nlohmann::ordered_json r;
  r["base"] = base_dir().string();
  r["adapters"] = nlohmann::ordered_json::object();
  for (const auto& n : c["adapters"]) r["adapters"][n.get<std::string>()] = adapter_dir(n).string();
  for (const auto& [k, v] : c.items())
    if (k != "adapters") r[k] = v;
  r["output_dir"] = out.string();
  return r;
}

fs::path write_recipe(const nlohmann::ordered_json& r, const fs::path& p) {
  std::ofstream(p) << r.dump(2);
  return p;
}

// The folder peft combine wrote: HF's tensors, and HF PEFT loads it strictly and computes
// the logits of its own merged adapter.
void expect_folder_matches_peft(const fs::path& out, const std::string& name) {
  PeftModel loaded(load_model(base_dir().string()));
  loaded.load_adapter(out.string());
  EXPECT_LE(max_tensor_diff(loaded.adapter_state_dict("default"),
                            fixture() / "cases" / name / "adapter" / "adapter_model.safetensors"),
            kTensorTol);
  SafetensorsFile ref((fixture() / "cases" / name / "reference.safetensors").string());
  std::string log;
  auto expected = test::write_outputs(ref, "logits", ref.get("logits"), scratch(name + "_hf_logits.safetensors"));
  EXPECT_EQ(test::check_in_python(base_dir(), out.string(), expected, &log), 0) << log;
}

TEST(CombineCli, RecipeWritesAnAdapterPeftLoadsWithItsOwnOutputs) {
  const auto out = scratch("cli_dare_ties_svd");
  fs::remove_all(out);
  const auto recipe = write_recipe(recipe_for("dare_ties_svd", out), scratch("dare_ties_svd.json"));
  const auto r = test::run_cli({"combine", "--recipe", recipe.string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  expect_folder_matches_peft(out, "dare_ties_svd");
  // Again only with --overwrite.
  const auto again = test::run_cli({"combine", "--recipe", recipe.string()});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.output, HasSubstr("already holds an adapter (pass --overwrite"));
  EXPECT_EQ(test::run_cli({"combine", "--recipe", recipe.string(), "--overwrite"}).exit_code, 0);
}

TEST(CombineCli, KeyValueArgumentsAloneMakeARecipe) {
  const auto out = scratch("cli_linear_kv");
  fs::remove_all(out);
  const auto r = test::run_cli({"combine", "base=" + base_dir().string(), "adapters.a=" + adapter_dir("a").string(),
                                "adapters.b=" + adapter_dir("b").string(), "weights=[0.7, -0.4]",
                                "combination_type=linear", "output_dir=" + out.string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  expect_folder_matches_peft(out, "linear");
}

TEST(CombineCli, HelpShowsKeysTypesAndAnExample) {
  const auto r = test::run_cli({"combine", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const auto& t : combination_types()) EXPECT_THAT(r.output, HasSubstr(t));
  for (const auto& k : CombineRecipe::keys()) EXPECT_THAT(r.output, HasSubstr(k));
  EXPECT_THAT(r.output, HasSubstr("Example"));
}

// --- bad recipes: one line naming the key ---------------------------------------------

std::string cli_error(const nlohmann::ordered_json& recipe, const std::string& tag) {
  const auto r = test::run_cli({"combine", "--recipe", write_recipe(recipe, scratch(tag + ".json")).string()});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  return r.output;
}

TEST(CombineErrors, BadRecipesNameTheKey) {
  const auto out = scratch("never_written");
  auto base = recipe_for("linear", out);
  auto with = [&](const std::string& key, const nlohmann::ordered_json& v) {
    auto r = base;
    r[key] = v;
    return r;
  };
  EXPECT_THAT(cli_error(with("combination_type", "dare"), "type"),
              AllOf(HasSubstr("unknown combination_type 'dare'"), HasSubstr("valid: svd, linear, cat, ties")));
  EXPECT_THAT(cli_error(with("weights", {1.0}), "weights"), HasSubstr("'weights' has 1 entries for 2 adapters"));
  EXPECT_THAT(cli_error(with("svd_rank", 4), "svd_rank"), HasSubstr("'svd_rank' applies only to the *svd"));
  EXPECT_THAT(cli_error(with("desnity", 0.5), "typo"), HasSubstr("unknown key 'desnity' (did you mean 'density'?)"));
  EXPECT_THAT(cli_error(with("combination_type", "ties"), "no_density"), HasSubstr("'ties' needs 'density'"));
  EXPECT_THAT(cli_error(with("density", 0.5), "density_linear"), HasSubstr("'density' has no effect"));
  auto dare = with("combination_type", "dare_linear");
  dare["density"] = 0.5;
  dare.erase("seed");
  EXPECT_THAT(cli_error(dare, "dare_seed"), HasSubstr("give 'seed'"));
  auto missing = base;
  missing["adapters"]["x"] = (scratch("no_such_adapter")).string();
  missing["weights"] = {1, 1, 1};
  EXPECT_THAT(cli_error(missing, "missing"), HasSubstr("'adapters.x': no such folder"));
  auto no_base = base;
  no_base.erase("base");
  EXPECT_THAT(cli_error(no_base, "no_base"), HasSubstr("'base' is required"));
  // linear needs one rank: a has r=4, c has r=8.
  auto ranks = recipe_for("linear", out);
  ranks["adapters"] = {{"a", adapter_dir("a").string()}, {"c", adapter_dir("c").string()}};
  EXPECT_THAT(cli_error(ranks, "ranks"), HasSubstr("needs adapters of one rank, but 'a' has r=4 and 'c' has r=8"));
  auto big = recipe_for("svd", out);
  big["svd_rank"] = 65;
  EXPECT_THAT(cli_error(big, "svd_rank_big"), HasSubstr("svd_rank 65 exceeds min(out, in) = 64"));
  EXPECT_FALSE(fs::exists(out));
}

TEST(CombineErrors, AdapterOfAnotherBaseNamesTheFileAndKey) {
  // q_proj LoRA on llama_gqa_tied (another hidden size) does not load on llama_mha.
  const auto other = scratch("other_base_adapter");
  fs::remove_all(other);
  {
    PeftModel p(load_model((fs::path(PEFT_PARITY_DIR) / "llama_gqa_tied").string()));
    p.add_adapter("default", LoraConfig::from_json(nlohmann::ordered_json::parse(
                                                       R"({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"]})"),
                                                   "test"));
    p.save_adapter(other.string());
  }
  auto r = recipe_for("linear", scratch("never_written"));
  r["adapters"]["b"] = other.string();
  EXPECT_THAT(cli_error(r, "other_base"),
              AllOf(HasSubstr("adapter_model.safetensors"), HasSubstr("lora_A.weight' has shape"),
                    HasSubstr("another base model")));
}

TEST(CombineErrors, LibraryRefusesWhatHfWouldMergeIntoSomethingElse) {
  auto peft = with_adapters({"a", "b"});
  auto cfg = [](const std::string& json) {
    return LoraConfig::from_json(nlohmann::ordered_json::parse(json), "test");
  };
  // target_modules as a regex beside a list: HF refuses the mix.
  peft->add_adapter("rx", cfg(R"({"peft_type": "LORA", "r": 4, "target_modules": ".*q_proj"})"));
  EXPECT_THAT([&] { add_weighted_adapter(*peft, {"a", "rx"}, {1, 1}, "m1", {}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("as a list and as a regex")));
  peft->add_adapter("dora", cfg(R"({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "use_dora": true})"));
  EXPECT_THAT([&] { add_weighted_adapter(*peft, {"a", "dora"}, {1, 1}, "m2", {}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("uses DoRA")));
  EXPECT_THAT([&] { add_weighted_adapter(*peft, {"a", "nope"}, {1, 1}, "m3", {}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("adapter 'nope' does not exist")));
  EXPECT_THAT([&] { add_weighted_adapter(*peft, {"a", "b"}, {1, 1}, "a", {}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("an adapter named 'a' already exists")));
  WeightedAdapterOptions clamp;
  clamp.svd_clamp = 1.5;
  EXPECT_THAT([&] { add_weighted_adapter(*peft, {"a", "b"}, {1, 1}, "m4", clamp); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("'svd_clamp' is a quantile between 0 and 1")));
  // Nothing was added by the refusals.
  EXPECT_EQ(peft->adapters().size(), 4u);
}

// --- (IA)3: IA3Model.add_weighted_adapter ---------------------------------------------

// The merged vectors are one multiply-add per adapter, the same ATen ops as HF's.
constexpr double kIa3VectorTol = 1e-6;

std::unique_ptr<PeftModel> with_ia3_adapters() {
  return with_adapters(cases()["ia3_adapters"].get<std::vector<std::string>>());
}

std::vector<std::string> sorted_list(const nlohmann::json& v) {
  auto out = v.get<std::vector<std::string>>();
  std::sort(out.begin(), out.end());
  return out;
}

class Ia3CombineParity : public ::testing::TestWithParam<std::string> {};

TEST_P(Ia3CombineParity, VectorsConfigAndOutputsMatchPeft) {
  const std::string name = GetParam();
  const auto c = cases()["ia3_cases"][name];
  auto peft = with_ia3_adapters();
  add_weighted_ia3_adapter(*peft, c["adapters"].get<std::vector<std::string>>(),
                           c["weights"].get<std::vector<double>>(), name);
  const fs::path hf = fixture() / "cases" / name / "adapter";
  const auto ours_tensors = peft->adapter_state_dict(name);
  ASSERT_FALSE(ours_tensors.empty());
  const double d = max_tensor_diff(ours_tensors, hf / "adapter_model.safetensors");
  EXPECT_LE(d, kIa3VectorTol) << name;
  std::cout << "[ measured ] " << name << ": max |ia3_l - HF| = " << d;

  const auto hf_cfg = nlohmann::json::parse(std::ifstream(hf / "adapter_config.json"));
  const nlohmann::json ours = peft->config(name).to_json();
  EXPECT_EQ(ours["peft_type"], "IA3");
  EXPECT_EQ(sorted_list(ours["target_modules"]), sorted_list(hf_cfg["target_modules"]));
  EXPECT_EQ(sorted_list(ours["feedforward_modules"]), sorted_list(hf_cfg["feedforward_modules"]));
  EXPECT_EQ(ours["init_ia3_weights"], hf_cfg["init_ia3_weights"]);

  c10::InferenceMode guard;
  SafetensorsFile ref((fixture() / "cases" / name / "reference.safetensors").string());
  peft->set_adapter({name});
  const double dl = test::max_diff(peft->forward(test::inputs_of(ref)).logits, ref.get("logits"), test::mask_of(ref));
  EXPECT_LE(dl, kLogitTol) << name;
  std::cout << ", max |logits - HF| = " << dl << "\n";
}

INSTANTIATE_TEST_SUITE_P(Peft, Ia3CombineParity,
                         ::testing::Values("ia3_pair", "ia3_three", "ia3_negate", "ia3_scale"));

// Negating and scaling are what they say: -1 and 0.5 times the adapter's own vectors (so
// the parity above is not a match of two wrong merges).
TEST(Ia3Combine, OneAdapterIsScaledByItsWeight) {
  auto peft = with_ia3_adapters();
  add_weighted_ia3_adapter(*peft, {"ia3_y"}, {-1.0}, "neg");
  add_weighted_ia3_adapter(*peft, {"ia3_y"}, {0.5}, "half");
  const auto own = peft->adapter_state_dict("ia3_y"), neg = peft->adapter_state_dict("neg"),
             half = peft->adapter_state_dict("half");
  ASSERT_EQ(own.size(), neg.size());
  ASSERT_EQ(own.size(), half.size());
  for (size_t i = 0; i < own.size(); ++i) {
    ASSERT_EQ(neg[i].first, own[i].first);
    EXPECT_TRUE(at::equal(neg[i].second, -own[i].second)) << own[i].first;
    EXPECT_TRUE(at::allclose(half[i].second, own[i].second * 0.5)) << own[i].first;
  }
}

TEST(Ia3Combine, LibraryRefusesWhatHfCannotMerge) {
  auto peft = with_ia3_adapters();
  auto cfg = [](const std::string& json) { return IA3Config::from_json(nlohmann::ordered_json::parse(json), "test"); };
  // down_proj scales its input in ia3_x ([1, in]) and its output here ([out, 1]).
  peft->add_adapter("not_ff", cfg(R"({"peft_type": "IA3", "target_modules": ["down_proj"], "feedforward_modules": []})"));
  EXPECT_THAT([&] { add_weighted_ia3_adapter(*peft, {"ia3_x", "not_ff"}, {1, 1}, "m1"); },
              ::testing::ThrowsMessage<std::invalid_argument>(
                  AllOf(HasSubstr("mlp.down_proj"), HasSubstr("'not_ff' has ia3_l of shape"), HasSubstr("feed-forward"))));
  peft->add_adapter("rx", cfg(R"({"peft_type": "IA3", "target_modules": ".*v_proj", "feedforward_modules": []})"));
  EXPECT_THAT([&] { add_weighted_ia3_adapter(*peft, {"ia3_x", "rx"}, {1, 1}, "m2"); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("as a list and as a regex")));
  EXPECT_THAT([&] { add_weighted_ia3_adapter(*peft, {"ia3_x"}, {1, 1}, "m3"); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("'weights' has 2 entries for 1 adapters")));
  EXPECT_THAT([&] { add_weighted_ia3_adapter(*peft, {"ia3_x", "ia3_x"}, {1, 1}, "m4"); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("named twice")));
  // The LoRA merge points IA3 adapters to the IA3 one, and vice versa.
  EXPECT_THAT([&] { add_weighted_adapter(*peft, {"ia3_x", "ia3_y"}, {1, 1}, "m5", {}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("add_weighted_ia3_adapter")));
  peft->load_adapter(adapter_dir("a").string(), "lora_a");
  EXPECT_THAT([&] { add_weighted_ia3_adapter(*peft, {"ia3_x", "lora_a"}, {1, 1}, "m6"); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("adapter 'lora_a' is LORA")));
  // Nothing was added by the refusals.
  EXPECT_EQ(peft->adapters().size(), 6u);
}

nlohmann::ordered_json ia3_recipe_for(const std::string& name, const fs::path& out) {
  const auto c = cases()["ia3_cases"][name];
  nlohmann::ordered_json r;
  r["base"] = base_dir().string();
  r["adapters"] = nlohmann::ordered_json::object();
  for (const auto& n : c["adapters"]) r["adapters"][n.get<std::string>()] = adapter_dir(n).string();
  r["weights"] = c["weights"];
  r["output_dir"] = out.string();
  return r;
}

TEST(CombineCli, Ia3RecipeWritesAnAdapterPeftLoadsWithItsOwnOutputs) {
  for (const char* name : {"ia3_three"}) {  // (ia3_negate's vectors are checked above; one Python run here)
    const auto out = scratch(std::string("cli_") + name);
    fs::remove_all(out);
    const auto r = test::run_cli(
        {"combine", "--recipe", write_recipe(ia3_recipe_for(name, out), scratch(std::string(name) + ".json")).string()});
    ASSERT_EQ(r.exit_code, 0) << test::describe(r);
    expect_folder_matches_peft(out, name);
  }
}

TEST(CombineErrors, Ia3RecipesNameTheLoraOnlyKey) {
  const auto out = scratch("never_written_ia3");
  auto with = [&](const std::string& key, const nlohmann::ordered_json& v) {
    auto r = ia3_recipe_for("ia3_pair", out);
    r[key] = v;
    return r;
  };
  EXPECT_THAT(cli_error(with("combination_type", "svd"), "ia3_type"),
              AllOf(HasSubstr("'combination_type' is 'svd' but IA3 adapters merge only linearly"),
                    HasSubstr("ia3_type.json")));
  for (const auto& [key, v] : std::vector<std::pair<std::string, nlohmann::ordered_json>>{
           {"density", 0.5}, {"svd_rank", 4}, {"seed", 0}, {"majority_sign_method", "total"}})
    EXPECT_THAT(cli_error(with(key, v), "ia3_" + key), HasSubstr("'" + key + "' is a LoRA-only key")) << key;
  // combination_type linear says what IA3 does: accepted (checked by a run that writes).
  const auto linear_out = scratch("cli_ia3_linear");
  fs::remove_all(linear_out);
  auto linear = ia3_recipe_for("ia3_pair", linear_out);
  linear["combination_type"] = "linear";
  const auto ok = test::run_cli({"combine", "--recipe", write_recipe(linear, scratch("ia3_linear.json")).string()});
  EXPECT_EQ(ok.exit_code, 0) << test::describe(ok);
  // One method per recipe.
  auto mixed = ia3_recipe_for("ia3_pair", out);
  mixed["adapters"]["a"] = adapter_dir("a").string();
  mixed["weights"] = {1, 1, 1};
  EXPECT_THAT(cli_error(mixed, "ia3_mixed"),
              HasSubstr("'adapters.a' is LORA but 'adapters.ia3_x' is IA3; a recipe combines adapters of one method"));
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace peft
