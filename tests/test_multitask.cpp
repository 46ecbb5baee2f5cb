// Multitask prompt tuning and Poly (HF PEFT 0.21's MULTITASK_PROMPT_TUNING and POLY)
// against adapters HF PEFT made (tests/parity/make_multitask.py):
//  - they load here with HF's logits for the rows' task ids (<= 1e-4) and HF's
//    trainable-parameter line; Poly's router gives HF's mixing weights;
//  - MPT's source-task inits (EXACT_SOURCE_TASK, AVERAGE_SOURCE_TASKS, ONLY_SOURCE_SHARED)
//    give HF's initial tensors from the source file;
//  - saved again, and trained here with `peft train` on data lines carrying "task_ids",
//    adapters load in HF PEFT with our logits (one Python process); training lowers the
//    eval loss; missing or out-of-range task ids, mixed lines and merging Poly are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_runner.h"
#include "method_suite.h"
#include "peft/multitask_prompt_tuning.h"
#include "peft/peft_model.h"
#include "peft/poly.h"
#include "peft/safetensors.h"
#include "peft/seq2seq.h"
#include "peft/task_ids.h"
#include "peft/train.h"
#include "train/data.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("multitask");
using test::logits;

at::Tensor task_ids_of(const std::string& name) {
  return SafetensorsFile((suite.fixture(name) / "reference.safetensors").string()).get("task_ids").clone();
}

class HfMultitask : public ::testing::TestWithParam<std::string> {};

TEST_P(HfMultitask, LoadsWithHfLogitsAndTrainableLine) {
  TaskIdsScope tasks(task_ids_of(GetParam()));
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
}

INSTANTIATE_TEST_SUITE_P(Multitask, HfMultitask,
                         ::testing::Values("mpt_llama", "mpt_source", "mpt_average", "mpt_shared", "poly_llama",
                                           "poly_llama_mhr"));

TEST(Poly, MixingWeightsAreHfs) {
  for (const std::string name : {"poly_llama", "poly_llama_mhr"}) {
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    PeftModel m(load_model(suite.base_of(name).string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    int layers = 0;
    for (const auto& key : ref.names()) {
      if (key.rfind("weights.", 0) != 0) continue;
      auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(key.substr(8)));
      ASSERT_NE(host, nullptr) << key;
      auto* poly = dynamic_cast<PolyLayer*>(host->adapter("default"));
      ASSERT_NE(poly, nullptr) << key;
      c10::InferenceMode g;
      EXPECT_LE((poly->mixing_weights(ref.get("task_ids")) - ref.get(key)).abs().max().item<double>(), 1e-6) << key;
      ++layers;
    }
    EXPECT_GE(layers, 2) << name;
  }
}

// Rows of different tasks get different prompts; a row's output depends on its task only.
TEST(Mpt, RowsFollowTheirTasks) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((suite.fixture("mpt_llama") / "adapter").string());
  SafetensorsFile ref((suite.fixture("mpt_llama") / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  auto run = [&](std::vector<int64_t> ids) {
    TaskIdsScope tasks(at::tensor(ids, at::kLong));
    return logits(m, in);
  };
  const auto a = run({2, 0}), b = run({1, 0});
  EXPECT_GT((a[0] - b[0]).abs().max().item<double>(), 1e-3);
  EXPECT_LE((a[1] - b[1]).abs().max().item<double>(), 1e-6);
}

// On T5 (one transformer submodule) the encoder's input gets the row's prompts.
TEST(Mpt, T5LogitsAreHfs) {
  SafetensorsFile ref((suite.fixture("mpt_t5") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("t5").string()));
  m.load_adapter((suite.fixture("mpt_t5") / "adapter").string());
  Seq2SeqInputs in;
  in.input_ids = ref.get("input_ids");
  in.attention_mask = ref.get("attention_mask");
  in.decoder_input_ids = ref.get("decoder_input_ids");
  TaskIdsScope tasks(ref.get("task_ids"));
  c10::InferenceMode g;
  const auto got = as_seq2seq(m.model())->forward_seq2seq(in).logits;
  const double diff = (got - ref.get("logits")).abs().max().item<double>();
  std::cout << "mpt_t5: max |logits - HF| = " << diff << "\n";
  EXPECT_LE(diff, kLogitTol);
  // HF's default for SEQ_2_SEQ_LM, two submodules, would prompt the decoder too: refused.
  PeftModel two(load_model(suite.fixture("t5").string()));
  try {
    two.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "MULTITASK_PROMPT_TUNING",
        "num_virtual_tokens": 3, "task_type": "SEQ_2_SEQ_LM"})"), "method"));
    ADD_FAILURE() << "two submodules accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("num_transformer_submodules 2"));
  }
}

// A new adapter made from the source file's tensors starts where HF's does.
TEST(Mpt, SourceTaskInitsAreHfs) {
  const auto source = suite.fixture("mpt_llama") / "adapter" / "adapter_model.safetensors";
  for (const std::string name : {"mpt_source", "mpt_average", "mpt_shared"}) {
    auto cfg_json = json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"));
    cfg_json["prompt_tuning_init_state_dict_path"] = source.string();
    PeftModel m(load_model(suite.fixture("llama").string()));
    m.add_adapter("default", *parse_user_adapter_config(cfg_json, "method"), 3);
    const auto saved = m.adapter_state_dict("default");
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    for (const auto& [key, t] : saved) {
      if (name == "mpt_shared" && key != "prompt_embeddings") continue;  // the factors are random there
      ASSERT_TRUE(ref.contains("init." + key)) << key;
      EXPECT_TRUE(at::equal(t.cpu(), ref.get("init." + key))) << name << ": " << key;
    }
  }
}

// --- ours in HF PEFT ----------------------------------------------------------------------

// 96 rows in three tasks, each drawing its tokens from its own 16 of the 64: learning
// which range a row's task uses takes the task id (a prompt on a random model can bias
// the output toward a range; it cannot teach arithmetic).
fs::path write_task_data(const fs::path& dir) {
  const auto p = dir / "tasks.jsonl";
  std::ofstream f(p);
  std::mt19937 rng(5);
  for (int i = 0; i < 96; ++i) {
    const int task = i % 3;
    json ids = json::array();
    for (int t = 0; t < 16; ++t) ids.push_back(16 * task + static_cast<int>(rng() % 16));
    f << json{{"input_ids", ids}, {"task_ids", task}}.dump() << "\n";
  }
  return p;
}

// Trains on llama_train (initializer_range 0.2: the tiny llama's own 0.02 leaves logits
// too small to move far).
fs::path train_cli(const fs::path& work, const json& method, int64_t steps, double lr) {
  json cfg = {{"model", suite.fixture("llama_train").string()}, {"train_file", write_task_data(work).string()},
              {"output_dir", (work / "out").string()}, {"method", method}, {"max_steps", steps},
              {"learning_rate", lr}, {"eval_split", 0.25}, {"eval_steps", steps}, {"progress", false}};
  std::ofstream(work / "train.json") << cfg.dump(1);
  const auto r = test::run_cli({"train", "--config", (work / "train.json").string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return work / "out";
}

// Our logits of `adapter` for case `ref_case`'s inputs and task ids, written for
// make_multitask.py's check; returns its BASE ADAPTER OUTPUTS triple.
std::vector<std::string> check_triple(const fs::path& base, const fs::path& adapter, const std::string& ref_case,
                                      const fs::path& work) {
  SafetensorsFile ref((suite.fixture(ref_case) / "reference.safetensors").string());
  PeftModel m(load_model(base.string()));
  m.load_adapter(adapter.string());
  TaskIdsScope tasks(ref.get("task_ids"));
  NamedTensors t = {{"input_ids", ref.get("input_ids")}, {"attention_mask", ref.get("attention_mask")},
                    {"task_ids", ref.get("task_ids")}, {"logits", logits(m, test::inputs_of(ref)).to(at::kFloat)}};
  const auto outputs = work / "outputs.safetensors";
  save_safetensors(outputs.string(), t);
  return {base.string(), adapter.string(), outputs.string()};
}

TEST(MultitaskTrain, ResavedAndTrainedAdaptersLoadInHf) {
  std::vector<std::string> triples;
  for (const std::string name : {"mpt_llama", "poly_llama_mhr"}) {
    const auto work = suite.scratch("resave_" + name);
    PeftModel m(load_model(suite.fixture("llama").string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    m.save_adapter((work / "adapter").string());
    const auto t = check_triple(suite.fixture("llama"), work / "adapter", name, work);
    triples.insert(triples.end(), t.begin(), t.end());
  }
  struct Run {
    std::string name, ref_case;
    json method;
    double lr;
  };
  for (const auto& run : {Run{"mpt", "mpt_llama",
                              {{"peft_type", "MULTITASK_PROMPT_TUNING"}, {"num_virtual_tokens", 4}, {"num_tasks", 3},
                               {"num_ranks", 2}, {"task_type", "CAUSAL_LM"}},
                              3e-1},
                          Run{"poly", "poly_llama",
                              {{"peft_type", "POLY"}, {"r", 4}, {"n_tasks", 3}, {"n_skills", 2}, {"n_splits", 2},
                               {"target_modules", {"q_proj", "v_proj", "up_proj", "down_proj"}}},
                              1e-1}}) {
    const auto work = suite.scratch("train_" + run.name);
    const auto out = train_cli(work, run.method, 80, run.lr);
    std::ifstream loss(out / "loss.dat");
    ASSERT_TRUE(loss.good()) << run.name;
    const double after = test::last_eval_loss(out);
    // The same data evaluated on the untrained base: the adapter must have learnt.
    TrainConfig c;
    c.model = suite.fixture("llama_train").string();
    c.eval_file = (work / "tasks.jsonl").string();
    c.method = run.method;
    c.progress = false;
    const double before = evaluate(c, {})["eval_loss"];
    std::cout << run.name << ": eval loss " << before << " -> " << after << "\n";
    EXPECT_LT(after, before - 0.3) << run.name << ": eval loss " << before << " -> " << after;
    const auto t = check_triple(suite.fixture("llama_train"), out, run.ref_case, work);
    triples.insert(triples.end(), t.begin(), t.end());
  }
  test::MethodSuite::expect_hf_checks("make_multitask.py", triples);
}

// --- errors ---------------------------------------------------------------------------

std::string forward_error(const std::string& name, const at::Tensor& task_ids) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  TaskIdsScope tasks(task_ids);
  try {
    logits(m, test::inputs_of(ref));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(MultitaskErrors, TaskIdsAreChecked) {
  for (const std::string name : {"mpt_llama", "poly_llama"}) {
    EXPECT_THAT(forward_error(name, at::Tensor()), HasSubstr("\"task_ids\" integer")) << name;
    EXPECT_THAT(forward_error(name, at::tensor({0, 3}, at::kLong)),
                HasSubstr("task id 3 is out of range: the adapter has 3 tasks"))
        << name;
    EXPECT_THAT(forward_error(name, at::tensor({0}, at::kLong)), HasSubstr("1 task ids for a batch of 2 rows")) << name;
  }
}

TEST(MultitaskErrors, DataLinesAreChecked) {
  const auto work = suite.scratch("bad_data");
  auto error_of = [&](const std::string& lines, bool packing) {
    std::ofstream(work / "d.jsonl") << lines;
    DataOptions o;
    o.packing = packing;
    try {
      load_examples((work / "d.jsonl").string(), o);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error_of("{\"input_ids\": [1, 2], \"task_ids\": -1}\n", false), HasSubstr("d.jsonl:1: 'task_ids'"));
  EXPECT_THAT(error_of("{\"input_ids\": [1, 2], \"task_ids\": \"a\"}\n", false), HasSubstr("'task_ids'"));
  EXPECT_THAT(error_of("{\"input_ids\": [1, 2], \"task_ids\": 0}\n{\"input_ids\": [1, 2]}\n", false),
              HasSubstr("1 of 2 examples have \"task_ids\""));
  EXPECT_THAT(error_of("{\"input_ids\": [1, 2], \"task_ids\": 0}\n", true), HasSubstr("packing"));
  EXPECT_EQ(error_of("{\"input_ids\": [1, 2], \"task_ids\": 1}\n", false), "");
}

// A source-task file that is not a .safetensors, is missing, or is not an MPT adapter is
// named in a one-line error when the adapter is made.
TEST(MultitaskErrors, SourceTaskFilesAreChecked) {
  auto error_of = [](const std::string& path, int64_t ranks = 2) {
    PeftModel m(load_model(suite.fixture("llama").string()));
    const json cfg = {{"peft_type", "MULTITASK_PROMPT_TUNING"}, {"num_virtual_tokens", 4}, {"num_ranks", ranks},
                      {"prompt_tuning_init", "EXACT_SOURCE_TASK"}, {"prompt_tuning_init_state_dict_path", path}};
    try {
      m.add_adapter("default", *parse_user_adapter_config(cfg, "method"));
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error_of("source.bin"), HasSubstr("must name a .safetensors file (got 'source.bin')"));
  const auto missing = (suite.scratch("no_source") / "gone.safetensors").string();
  EXPECT_THAT(error_of(missing), HasSubstr(missing));
  const auto poly = (suite.fixture("poly_llama") / "adapter" / "adapter_model.safetensors").string();
  EXPECT_THAT(error_of(poly), HasSubstr("has no 'prompt_embeddings'"));
  const auto three_tasks = (suite.fixture("mpt_llama") / "adapter" / "adapter_model.safetensors").string();
  EXPECT_THAT(error_of(three_tasks, 1), HasSubstr("'prefix_task_cols' gives [1, 4, 2] but this adapter needs [1, 4, 1]"));
  EXPECT_EQ(error_of(three_tasks), "");
}

TEST(MultitaskErrors, PolyIsNotMerged) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((suite.fixture("poly_llama") / "adapter").string());
  try {
    m.merge();
    FAIL() << "Poly's weights depend on each row's task";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("POLY"));
  }
}

TEST(MultitaskErrors, BadSettingsAreNamed) {
  auto error_of = [](const std::string& s) {
    try {
      parse_user_adapter_config(json::parse(s), "method");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error_of(R"({"peft_type": "POLY", "n_skills": 0})"), HasSubstr("'n_skills'"));
  EXPECT_THAT(error_of(R"({"peft_type": "POLY", "poly_type": "mhr"})"), HasSubstr("poly_type"));
  EXPECT_THAT(error_of(R"({"peft_type": "MULTITASK_PROMPT_TUNING", "num_virtual_tokens": 4, "num_tasks": 0})"),
              HasSubstr("'num_tasks'"));
  EXPECT_THAT(error_of(R"({"peft_type": "MULTITASK_PROMPT_TUNING", "num_virtual_tokens": 4,
                           "prompt_tuning_init": "EXACT_SOURCE_TASK"})"),
              HasSubstr("prompt_tuning_init_state_dict_path"));
}

}  // namespace
}  // namespace peft
