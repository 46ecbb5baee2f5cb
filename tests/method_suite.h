// What the per-method parity suites (test_oft, test_hra, test_miss, test_vera,
// test_fourierft) share: the case folders tests/parity/make_<method>.py writes, the
// "loads with HF's logits" check, and training on the tiny llama with `peft train`.
//
// A case folder <parity>/<method>/<case>/ holds case.json ({"base": <model folder name>,
// "trainable": HF's print_trainable_parameters line, ...}), reference.safetensors (inputs,
// HF's logits, merged logits) and adapter/ (what HF PEFT saved).
#pragma once

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "test_util.h"

namespace peft::test {

inline at::Tensor logits(PeftModel& m, const ModelInputs& in) {
  c10::InferenceMode g;
  return m.forward(in).logits;
}

// 64 rows of 16 ids counting upward, within the tiny models' 64-token vocabulary.
inline std::filesystem::path write_small_counting_data(const std::filesystem::path& dir) {
  const auto p = dir / "counting.jsonl";
  std::ofstream f(p);
  std::mt19937 rng(5);
  for (int i = 0; i < 64; ++i) {
    nlohmann::json ids = nlohmann::json::array();
    for (int t = 0, s = 1 + rng() % 40; t < 16; ++t) ids.push_back(s + t);
    f << nlohmann::json{{"input_ids", ids}}.dump() << "\n";
  }
  return p;
}

class MethodSuite {
 public:
  explicit MethodSuite(std::string method) : method_(std::move(method)) {}
  const std::string& name() const { return method_; }  // the fixture folder's, e.g. "psoft"

  std::filesystem::path fixture(const std::string& name) const {
    return std::filesystem::path(PEFT_PARITY_DIR) / method_ / name;
  }
  // An empty scratch folder of this suite's own.
  std::filesystem::path scratch(const std::string& name) const {
    auto p = std::filesystem::path(PEFT_SCRATCH_DIR) / method_ / name;
    std::filesystem::remove_all(p);
    std::filesystem::create_directories(p);
    return p;
  }
  nlohmann::json case_json(const std::string& name) const {
    return nlohmann::json::parse(std::ifstream(fixture(name) / "case.json"));
  }
  std::filesystem::path base_of(const std::string& name) const {
    return fixture(case_json(name)["base"].get<std::string>());
  }

  // Case `name`'s adapter loads with HF's logits (<= tol), moves them off the base's, and
  // prints HF's trainable-parameter line character for character.
  void expect_loads_as_hf(const std::string& name, double tol) const {
    SafetensorsFile ref((fixture(name) / "reference.safetensors").string());
    PeftModel m(load_model(base_of(name).string()));
    m.load_adapter((fixture(name) / "adapter").string());
    const auto in = inputs_of(ref);
    const auto got = logits(m, in);
    const double diff = max_diff(got, ref.get("logits"), mask_of(ref));
    std::cout << name << ": max |logits - HF| = " << diff << "\n";
    EXPECT_LE(diff, tol);
    at::Tensor base;
    {
      auto off = m.disable_adapters();
      base = logits(m, in);
    }
    EXPECT_GT(max_diff(got, base, mask_of(ref)), 1e-2) << "the adapter must change the logits";
    EXPECT_EQ(m.trainable_parameters_line(), case_json(name)["trainable"].get<std::string>());
  }

  // `peft train --config` with `method` on the suite's tiny llama and counting data; returns
  // the output folder (work/out).
  std::filesystem::path train_with_cli(const std::filesystem::path& work, const nlohmann::json& method, int64_t steps,
                                       double learning_rate = 1e-2, const nlohmann::json& extra = nlohmann::json::object()) const {
    nlohmann::json cfg = {{"model", fixture("llama").string()}, {"train_file", write_small_counting_data(work).string()},
                          {"output_dir", (work / "out").string()}, {"method", method}, {"max_steps", steps},
                          {"learning_rate", learning_rate}, {"progress", false}};
    cfg.update(extra);
    std::ofstream(work / "train.json") << cfg.dump(1);
    const auto r = run_cli({"train", "--config", (work / "train.json").string()});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return work / "out";
  }

  // Our logits of `adapter` on `base` for case `ref_case`'s inputs, written under `work`;
  // returns the "BASE ADAPTER OUTPUTS" triple a checker script's `check` verb takes.
  std::vector<std::string> check_case(const std::filesystem::path& base, const std::filesystem::path& adapter,
                                      const std::string& ref_case, const std::filesystem::path& work) const {
    SafetensorsFile ref((fixture(ref_case) / "reference.safetensors").string());
    PeftModel m(load_model(base.string()));
    m.load_adapter(adapter.string());
    const auto outputs = write_outputs(ref, "logits", logits(m, inputs_of(ref)), work / "outputs.safetensors");
    return {base.string(), adapter.string(), outputs.string()};
  }
  // tests/parity/<checker> `check` on every triple of check_case, in one Python process.
  static void expect_hf_checks(const std::string& checker, const std::vector<std::string>& triples) {
    std::string joined;
    for (const auto& a : triples) joined += " " + a;
    int status = 0;
    const auto log = run_parity_script(checker, "check" + joined, &status);
    EXPECT_EQ(status, 0) << log;
    std::cerr << log;
  }

  // HF PEFT loads `adapter` on the tiny llama strictly and computes our logits on case
  // `ref_case`'s inputs. `checker` is the script that checks (tests/parity/check_adapter.py
  // when empty, else tests/parity/<checker> with a `check` verb).
  void expect_hf_loads_ours(const std::filesystem::path& base, const std::filesystem::path& adapter,
                            const std::string& ref_case, const std::filesystem::path& work,
                            const std::string& checker = "") const {
    SafetensorsFile ref((fixture(ref_case) / "reference.safetensors").string());
    PeftModel m(load_model(base.string()));
    m.load_adapter(adapter.string());
    const auto outputs = write_outputs(ref, "logits", logits(m, inputs_of(ref)), work / "outputs.safetensors");
    std::string log;
    int status = 0;
    if (checker.empty()) {
      status = check_in_python(base, adapter.string(), outputs, &log);
    } else {
      log = run_parity_script(checker, "check " + base.string() + " " + adapter.string() + " " + outputs.string(),
                              &status);
    }
    EXPECT_EQ(status, 0) << log;
  }

 private:
  std::string method_;
};

// The last eval_loss `peft train` wrote to an output folder's loss.dat (its second block).
inline double last_eval_loss(const std::filesystem::path& out) {
  std::ifstream f(out / "loss.dat");
  std::string line;
  int blanks = 0;
  double loss = -1;
  while (std::getline(f, line)) {
    if (line.empty()) ++blanks;
    else if (blanks >= 2) std::istringstream(line) >> loss >> loss;
  }
  return loss;
}

}  // namespace peft::test
