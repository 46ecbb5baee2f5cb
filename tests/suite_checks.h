// Checks the newer per-method suites share on top of MethodSuite (tests/method_suite.h):
// each layer's delta against HF's "delta.<path>" references, and resaving HF's adapters
// for one batched "HF loads ours" run. Kept apart so adding to it rebuilds only its users.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loss_file.h"
#include "method_suite.h"

namespace peft::test {

// For every "delta.<path>" tensor of case `name`'s reference.safetensors: the adapter of
// type L on <path> gives it through `delta` (within `tol`). Returns how many layers matched.
template <class L>
int expect_deltas_as_hf(const MethodSuite& suite, const std::string& name,
                        const std::function<at::Tensor(const L&)>& delta, double tol = 1e-5) {
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("delta.", 0) != 0) continue;
    const auto path = key.substr(6);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    const auto* a = host ? dynamic_cast<const L*>(host->adapter("default")) : nullptr;
    EXPECT_NE(a, nullptr) << path;
    if (!a) continue;
    c10::InferenceMode g;
    const at::Tensor d = delta(*a);
    EXPECT_EQ(d.sizes(), ref.get(key).sizes()) << path;
    if (d.sizes() != ref.get(key).sizes()) continue;
    EXPECT_LE((d - ref.get(key)).abs().max().item<double>(), tol) << path;
    ++layers;
  }
  return layers;
}

// Loads case `name`'s HF adapter, saves it again under work/adapter (the same file keys as
// HF's) and appends the check_case triple for MethodSuite::expect_hf_checks.
inline void resave_for_hf_check(const MethodSuite& suite, const std::string& name, std::vector<std::string>* args) {
  const auto work = suite.scratch("resave_" + name);
  {
    PeftModel m(load_model(suite.base_of(name).string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    m.save_adapter((work / "adapter").string());
  }
  SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
  SafetensorsFile ours((work / "adapter" / "adapter_model.safetensors").string());
  // HF's file may also hold a targeted embedding's frozen table ("*.base_layer.weight",
  // save_embedding_layers="auto"), which we do not copy.
  std::set<std::string> want;
  for (const auto& k : hf.names())
    if (!k.ends_with(".base_layer.weight")) want.insert(k);
  const auto got = ours.names();
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), want) << name;
  const auto triple = suite.check_case(suite.base_of(name), work / "adapter", name, work);
  args->insert(args->end(), triple.begin(), triple.end());
}

// `peft train` with `method` on the suite's tiny llama (`steps` at `learning_rate`, a
// quarter of the data held out and evaluated at the end) lowers the eval loss by more than
// `min_drop`. Then `cases` resaved by us and the trained folder (on case `ref_case`'s
// inputs) load in HF PEFT with our logits: make_<suite>.py's check, one Python process.
inline void expect_trains_and_loads_in_hf(const MethodSuite& suite, const std::vector<std::string>& cases,
                                          const nlohmann::json& method, int64_t steps, double learning_rate,
                                          const std::string& ref_case, double min_drop = 0.1) {
  std::vector<std::string> args;
  for (const auto& name : cases) resave_for_hf_check(suite, name, &args);
  const auto work = suite.scratch("train");
  const auto out = suite.train_with_cli(work, method, steps, learning_rate, {{"eval_split", 0.25}, {"eval_steps", steps}});
  const double start = first_step_loss(out), end = last_eval_loss(out);
  std::cout << suite.name() << " train: first step loss " << start << ", final eval loss " << end << "\n";
  EXPECT_LT(end, start - min_drop);
  const auto triple = suite.check_case(suite.fixture("llama"), out, ref_case, work);
  args.insert(args.end(), triple.begin(), triple.end());
  suite.expect_hf_checks("make_" + suite.name() + ".py", args);
}

// Case `name`'s adapter decodes its reference's first (unpadded) row with a KV cache,
// `prefill` tokens then one at a time, to the full forward's logits (<= 1e-5); a cache its
// side pass (SideCache) has not followed, handed to a fresh model, is refused.
inline void expect_cached_decode_matches_full(const MethodSuite& suite, const std::string& name, int64_t prefill = 4) {
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  const auto ids = ref.get("input_ids").narrow(0, 0, 1);
  ModelInputs full;
  full.input_ids = ids;
  const auto want = logits(m, full);
  KVCache cache;
  std::vector<at::Tensor> got;
  for (int64_t t = 0, n = prefill; t < ids.size(1); t += n, n = 1) {
    ModelInputs in;
    in.input_ids = ids.narrow(1, t, std::min(n, ids.size(1) - t));
    in.cache = &cache;
    got.push_back(logits(m, in));
  }
  const double d = (at::cat(got, 1) - want).abs().max().item<double>();
  std::cout << name << ": max |cached - full| = " << d << "\n";
  EXPECT_LE(d, 1e-5) << name;
  PeftModel other(load_model(suite.base_of(name).string()));
  other.load_adapter((suite.fixture(name) / "adapter").string());
  ModelInputs again;
  again.input_ids = ids.narrow(1, 0, 1);
  again.cache = &cache;
  EXPECT_THROW(logits(other, again), std::runtime_error) << name;
}

// The message parse_user_adapter_config throws for the JSON `config`, or "".
inline std::string user_config_error(const std::string& config) {
  try {
    parse_user_adapter_config(nlohmann::json::parse(config), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The message add_adapter throws for the JSON `config` on fixture model `model`, or "".
inline std::string add_adapter_error(const MethodSuite& suite, const std::string& model, const std::string& config) {
  PeftModel m(load_model(suite.fixture(model).string()));
  try {
    m.add_adapter("default", *parse_user_adapter_config(nlohmann::json::parse(config), "method"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// For each case: a new adapter of its adapter_config.json with `init_key` set to `at_base`
// computes the base model's logits (<= 1e-5); set to `off_base` it moves off them (> min_move).
inline void expect_new_adapters_start_at_base(const MethodSuite& suite, const std::vector<std::string>& cases,
                                              const char* init_key, const nlohmann::json& at_base,
                                              const nlohmann::json& off_base, double min_move) {
  for (const auto& name : cases) {
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    auto cfg = nlohmann::json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"));
    PeftModel m(load_model(suite.base_of(name).string()));
    const auto in = inputs_of(ref);
    const auto base = logits(m, in);
    cfg[init_key] = at_base;
    m.add_adapter("init", *parse_adapter_config(cfg, "init"), 3);
    m.set_adapter({"init"});
    EXPECT_LE(max_diff(logits(m, in), base, mask_of(ref)), 1e-5) << name;
    cfg[init_key] = off_base;
    m.add_adapter("random", *parse_adapter_config(cfg, "random"), 3);
    m.set_adapter({"random"});
    EXPECT_GT(max_diff(logits(m, in), base, mask_of(ref)), min_move) << name;
  }
}

}  // namespace peft::test
