// Training: per-step loss parity with HF Trainer + PEFT (tests/parity/train_reference.py),
// exact resume after SIGKILL, damaged checkpoints, learning on LM and classification,
// and the errors bad data and configs must give.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "peft/npy.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "test_util.h"
#include "train/data.h"
#include "train/evaluate.h"
#include "train/precision.h"
#include "util/cpu_features.h"
#include <c10/core/GradMode.h>

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;

namespace peft {
namespace {

fs::path parity(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / name; }
fs::path ref_dir() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_train"; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "train" / name;
  fs::create_directories(p.parent_path());
  return p;
}

std::vector<json> metrics(const fs::path& dir) {
  std::vector<json> out;
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string l; std::getline(in, l);) {
    auto j = json::parse(l);
    if (j.contains("loss")) out.push_back(j);
  }
  return out;
}

// The configuration tests/parity/train_reference.py runs HF Trainer with.
TrainConfig parity_config(const fs::path& out) {
  TrainConfig c;
  c.model = parity("llama_mha").string();
  c.train_file = (ref_dir().parent_path() / "parity_train_data.jsonl").string();
  c.init_adapter = (ref_dir() / "initial_adapter").string();
  c.output_dir = out.string();
  c.max_steps = 24;
  c.per_device_train_batch_size = 2;
  c.gradient_accumulation_steps = 2;
  c.learning_rate = 1e-3;
  c.warmup_steps = 3;
  c.weight_decay = 0.01;
  c.max_grad_norm = 1.0;
  c.shuffle = false;
  c.progress = false;
  return c;
}

TEST(TrainParity, PerStepLossesMatchHfTrainer) {
  auto ref = json::parse(std::ifstream(ref_dir() / "losses.json"));
  const auto out = scratch("parity");
  fs::remove_all(out);
  auto result = train(parity_config(out));
  ASSERT_EQ(result.steps.size(), 24u);
  for (size_t i = 0; i < 24; ++i) {
    const double want = ref["loss"][i];
    EXPECT_LE(std::abs(result.steps[i].loss - want) / std::abs(want), 1e-4) << "step " << i + 1;
    EXPECT_NEAR(result.steps[i].learning_rate, ref["learning_rate"][i].get<double>(), 1e-12) << "step " << i + 1;
    EXPECT_LE(std::abs(result.steps[i].grad_norm - ref["grad_norm"][i].get<double>()),
              1e-4 * ref["grad_norm"][i].get<double>())
        << "step " << i + 1;
  }
  // The two final adapters agree, and each loads in the other's library.
  SafetensorsFile ours((out / "adapter_model.safetensors").string());
  SafetensorsFile theirs((ref_dir() / "final_adapter" / "adapter_model.safetensors").string());
  ASSERT_EQ(ours.names(), theirs.names());
  for (const auto& n : ours.names())
    EXPECT_LE((ours.get(n) - theirs.get(n)).abs().max().item<double>(), 1e-4) << n;
  PeftModel peft(load_model(parity("llama_mha").string()));
  peft.load_adapter((ref_dir() / "final_adapter").string());
  int status = -1;
  const std::string said = test::run_python(
      {"-c", "import sys; from transformers import AutoModelForCausalLM; from peft import PeftModel; "
             "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); PeftModel.from_pretrained(m, sys.argv[2])",
       parity("llama_mha").string(), out.string()},
      &status);
  EXPECT_EQ(status, 0) << "HF PEFT could not load our trained adapter: " << said;
}

// Padding-free micro-batches (one row per micro-batch, examples told apart by their
// positions) against HF Trainer with DataCollatorWithFlattening.
TEST(TrainParity, PaddingFreeMatchesHfFlatteningCollator) {
  const auto ref_pf = ref_dir().parent_path() / "parity_train_pf";
  auto ref = json::parse(std::ifstream(ref_pf / "losses.json"));
  const auto out = scratch("parity_padding_free");
  fs::remove_all(out);
  auto cfg = parity_config(out);
  cfg.train_file = (ref_dir().parent_path() / "parity_train_pf_data.jsonl").string();
  cfg.init_adapter = (ref_pf / "initial_adapter").string();
  cfg.padding_free = true;
  auto result = train(cfg);
  ASSERT_EQ(result.steps.size(), 24u);
  for (size_t i = 0; i < 24; ++i) {
    const double want = ref["loss"][i];
    EXPECT_LE(std::abs(result.steps[i].loss - want) / std::abs(want), 1e-4) << "step " << i + 1;
    EXPECT_LE(std::abs(result.steps[i].grad_norm - ref["grad_norm"][i].get<double>()),
              1e-4 * ref["grad_norm"][i].get<double>())
        << "step " << i + 1;
  }
  SafetensorsFile ours((out / "adapter_model.safetensors").string());
  SafetensorsFile theirs((ref_pf / "final_adapter" / "adapter_model.safetensors").string());
  for (const auto& n : theirs.names()) EXPECT_LE((ours.get(n) - theirs.get(n)).abs().max().item<double>(), 1e-4) << n;
}

// Best fit decreasing: lengths 5,4,3,3,2,1 into rows of 8 give [5,3], [4,3,1], [2].
TEST(TrainPacking, WholeExamplesBestFitLongestFirst) {
  std::vector<Example> xs;
  for (int64_t n : {3, 5, 1, 4, 2, 3}) {
    Example e;
    for (int64_t i = 0; i < n; ++i) e.input_ids.push_back(10 * n + i);
    e.labels = e.input_ids;
    xs.push_back(e);
  }
  auto rows = pack_examples(xs, 8);
  ASSERT_EQ(rows.size(), 3u);
  const std::vector<std::vector<int64_t>> ids = {{50, 51, 52, 53, 54, 30, 31, 32}, {40, 41, 42, 43, 30, 31, 32, 10}, {20, 21}};
  const std::vector<std::vector<int64_t>> pos = {{0, 1, 2, 3, 4, 0, 1, 2}, {0, 1, 2, 3, 0, 1, 2, 0}, {0, 1}};
  const std::vector<std::vector<int64_t>> labels = {{-100, 51, 52, 53, 54, -100, 31, 32},
                                                    {-100, 41, 42, 43, -100, 31, 32, -100},
                                                    {-100, 21}};
  for (size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(rows[r].input_ids, ids[r]) << r;
    EXPECT_EQ(rows[r].position_ids, pos[r]) << r;
    EXPECT_EQ(rows[r].labels, labels[r]) << r;
  }
  // Collated, the short row's padding is a sequence of its own and carries no loss.
  auto b = collate({&rows[0], &rows[1], &rows[2]}, 0, true);
  ASSERT_TRUE(b.position_ids.defined());
  EXPECT_TRUE(b.position_ids[2].equal(at::tensor({0, 1, 0, 1, 2, 3, 4, 5}, at::kLong)));
  EXPECT_EQ(b.num_items, 6 + 5 + 1);
}

// Packed rows give the loss HF computes for the same examples one by one: the first
// optimizer step of the parity run (4 examples, before any update).
TEST(TrainPacking, PackedRowsGiveHfsLossOfTheirExamples) {
  auto ref = json::parse(std::ifstream(ref_dir() / "losses.json"));
  PeftModel peft(load_model(parity("llama_mha").string()));
  peft.load_adapter((ref_dir() / "initial_adapter").string());
  DataOptions o;
  o.max_length = 40;
  auto all = load_examples((ref_dir().parent_path() / "parity_train_data.jsonl").string(), o);
  auto rows = pack_examples(std::vector<Example>(all.begin(), all.begin() + 4), o.max_length);
  ASSERT_LT(rows.size(), 4u) << "no two examples shared a row";
  std::vector<const Example*> xs;
  for (const auto& r : rows) xs.push_back(&r);
  const Batch b = collate(xs, 0, true);
  ASSERT_EQ(b.num_items, ref["num_items_in_batch"][0].get<int64_t>());
  c10::NoGradGuard no_grad;
  const double loss = batch_loss(peft, b, at::kCPU, true).sum.item<double>() / static_cast<double>(b.num_items);
  const double want = ref["loss"][0];
  EXPECT_LE(std::abs(loss - want) / want, 1e-5) << loss << " vs " << want;
}

TEST(TrainBadInput, PackingNeedsACausalLmWithoutVirtualTokens) {
  auto cfg = parity_config(scratch("packing_prompt"));
  cfg.packing = true;
  cfg.init_adapter.clear();
  cfg.method = {{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 4}};
  try {
    train(cfg);
    FAIL() << "prompt tuning with packing trained";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("packing cannot be used with PROMPT_TUNING"));
  }
}

TEST(TrainResume, SigkillThenResumeRepeatsTheUninterruptedLosses) {
  const auto full = scratch("resume_full"), cut = scratch("resume_cut");
  fs::remove_all(full);
  fs::remove_all(cut);
  auto base = parity_config(full);
  base.save_steps = 4;
  base.max_steps = 20;
  base.save_total_limit = 10;
  const auto want = train(base).steps;
  // The same run in a separate process, killed hard once checkpoint-8 exists.
  base.output_dir = cut.string();
  const auto cfg_file = scratch("resume_cfg.json");
  std::ofstream(cfg_file) << base.to_json().dump();
  const auto pid_file = scratch("resume.pid");
  const std::string launch = std::string(PEFT_CLI) + " train --config " + cfg_file.string() + " > " +
                             scratch("resume.log").string() + " 2>&1 & echo $! > " + pid_file.string();
  ASSERT_EQ(std::system(launch.c_str()), 0);
  int pid = 0;
  std::ifstream(pid_file) >> pid;
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(cut / "checkpoint-8") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(cut / "checkpoint-8"));
  kill(pid, SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_FALSE(fs::exists(cut / "adapter_model.safetensors")) << "the run finished before it was killed";
  auto resumed = train(base, /*resume=*/true);
  ASSERT_FALSE(resumed.steps.empty());
  const auto first = resumed.steps.front().step;
  EXPECT_GE(first, 9);
  for (const auto& s : resumed.steps) EXPECT_EQ(s.loss, want[s.step - 1].loss) << "step " << s.step;
  EXPECT_EQ(resumed.steps.back().step, 20);
}

TEST(TrainResume, DamagedNewestCheckpointFallsBackToThePrevious) {
  const auto out = scratch("damaged");
  fs::remove_all(out);
  auto cfg = parity_config(out);
  cfg.max_steps = 12;
  cfg.save_steps = 4;
  cfg.save_total_limit = 5;
  const auto want = train(cfg).steps;
  // Cut the newest checkpoint's optimizer state short, as a crash mid-copy would.
  const auto f = out / "checkpoint-12" / "optimizer.safetensors";
  fs::resize_file(f, fs::file_size(f) / 2);
  cfg.max_steps = 12;
  testing::internal::CaptureStderr();
  auto resumed = train(cfg, true);
  const auto err = testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("checkpoint-12 is damaged"));
  EXPECT_THAT(err, HasSubstr("resumed from"));
  ASSERT_EQ(resumed.steps.front().step, 9);
  for (const auto& s : resumed.steps) EXPECT_EQ(s.loss, want[s.step - 1].loss) << "step " << s.step;
}

// --- learning ------------------------------------------------------------------------

TEST(TrainLearns, LoraOnACausalLmLowersEvalLoss) {
  const auto data = scratch("counting.jsonl");
  test::write_counting_data(data);
  TrainConfig c;
  c.model = parity("llama_mha").string();
  c.train_file = data.string();
  c.eval_split = 0.2;
  c.output_dir = scratch("learn_lm").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"r": 8, "lora_alpha": 16, "target_modules": "all-linear"})");
  c.max_steps = 60;
  c.per_device_train_batch_size = 8;
  c.learning_rate = 5e-3;
  c.eval_steps = 30;
  c.progress = false;
  const double before = evaluate([&] {
                          auto e = c;
                          e.eval_file = data.string();
                          return e;
                        }(),
                                 {})["eval_loss"];
  auto r = train(c);
  const double after = r.evals.back()["eval_loss"];
  EXPECT_LT(after, 0.6 * before) << "eval loss " << before << " -> " << after;
  EXPECT_TRUE(fs::exists(fs::path(c.output_dir) / "loss.png"));
  EXPECT_TRUE(fs::exists(fs::path(c.output_dir) / "adapter_model.safetensors"));
}

// A copy of a BERT parity model with a word-level tokenizer over its vocabulary.
fs::path bert_with_words(const std::string& name, const std::string& base) {
  const auto model = scratch(name);
  fs::remove_all(model);
  fs::copy(parity(base), model, fs::copy_options::recursive);
  json vocab = json::object();
  for (int i = 0; i < 90; ++i) vocab[std::string("w").append(std::to_string(i))] = i;
  json tj = {{"version", "1.0"},
             {"pre_tokenizer", {{"type", "WhitespaceSplit"}}},
             {"model", {{"type", "WordPiece"}, {"unk_token", "w0"}, {"vocab", vocab}}}};
  std::ofstream(model / "tokenizer.json") << tj.dump();
  return model;
}

// 160 texts of 8 random words and a class marker word; labels as indices or as names.
fs::path marker_data(const std::string& name, const std::vector<std::string>& names = {}) {
  const auto data = scratch(name);
  std::ofstream f(data);
  std::mt19937 rng(5);
  for (int i = 0; i < 160; ++i) {
    std::string text;
    const int label = static_cast<int>(rng() % 3);
    for (int t = 0; t < 8; ++t) text += std::string("w") + std::to_string(10 + rng() % 70) + " ";
    text += std::string("w") + std::to_string(1 + label);  // the class marker
    f << json{{"text", text}, {"label", names.empty() ? json(label) : json(names[label])}}.dump() << "\n";
  }
  return data;
}

TEST(TrainLearns, LoraOnBertClassificationWithModulesToSave) {
  const auto model = bert_with_words("bert_cls_tok", "bert_cls");
  const auto data = marker_data("cls.jsonl");
  TrainConfig c;
  c.model = model.string();
  c.train_file = data.string();
  c.eval_split = 0.25;
  c.output_dir = scratch("learn_cls").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]})");
  c.max_steps = 150;
  c.per_device_train_batch_size = 8;
  c.learning_rate = 2e-2;
  c.progress = false;
  auto r = train(c);
  EXPECT_GE(r.evals.back()["eval_accuracy"].get<double>(), 0.8);
  auto cfg = json::parse(std::ifstream(fs::path(c.output_dir) / "adapter_config.json"));
  EXPECT_THAT(cfg["modules_to_save"].dump(), HasSubstr("classifier"));
  SafetensorsFile f((fs::path(c.output_dir) / "adapter_model.safetensors").string());
  EXPECT_TRUE(f.contains("base_model.model.classifier.weight"));
}

std::string train_error(TrainConfig c);

// String labels through `labels`, on a headless BERT given a new head; the head is the
// adapter's own (modules_to_save), so no "newly initialized" note.
TEST(TrainLearns, StringLabelsNameTheClassesOfANewHead) {
  TrainConfig c;
  c.model = bert_with_words("bert_tok", "bert").string();
  c.architecture = "BertForSequenceClassification";
  c.labels = {"alpha", "beta", "gamma"};
  c.train_file = marker_data("cls_names.jsonl", c.labels).string();
  c.eval_split = 0.25;
  c.output_dir = scratch("learn_cls_names").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]})");
  c.max_steps = 150;
  c.per_device_train_batch_size = 8;
  c.learning_rate = 2e-2;
  c.progress = false;
  testing::internal::CaptureStderr();
  auto r = train(c);
  EXPECT_THAT(testing::internal::GetCapturedStderr(), Not(HasSubstr("newly initialized")));
  EXPECT_GE(r.evals.back()["eval_accuracy"].get<double>(), 0.8);
  c.labels = {"alpha", "beta"};
  EXPECT_THAT(train_error(c), HasSubstr("label \"gamma\" is neither an index nor a name"));
}

TEST(TrainLearns, LoraOnVitImageClassification) {
  // 5 classes told apart by overall brightness, under noise (vit_cls: 3x12x12 images).
  const auto img = scratch("vit_images.npy"), lab = scratch("vit_labels.npy");
  test::write_brightness_images(img, lab);
  TrainConfig c;
  c.model = parity("vit_cls").string();
  c.train_file = img.string();
  c.label_file = lab.string();
  c.eval_split = 0.25;
  c.output_dir = scratch("learn_vit").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                             "modules_to_save": ["classifier"]})");
  c.max_steps = 100;
  c.per_device_train_batch_size = 16;
  c.learning_rate = 1e-2;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = img.string();
  before_cfg.eval_label_file = lab.string();
  const double before = evaluate(before_cfg, {})["eval_accuracy"];
  auto r = train(c);
  const double after = r.evals.back()["eval_accuracy"];
  EXPECT_GE(after, 0.9) << "accuracy " << before << " -> " << after;
  EXPECT_GT(after, before + 0.3);
  SafetensorsFile f((fs::path(c.output_dir) / "adapter_model.safetensors").string());
  EXPECT_TRUE(f.contains("base_model.model.classifier.weight"));
  EXPECT_TRUE(f.contains("base_model.model.vit.layers.0.attention.q_proj.lora_A.weight"));
}

TEST(Npy, ReadsNumpysFilesAndNumpyReadsOurs) {
  const auto dir = scratch("npy");
  fs::create_directories(dir);
  int status = -1;
  std::string said = test::run_python({"-c",
                                       "import sys, numpy as np; d = sys.argv[1]; "
                                       "np.save(d + '/f.npy', np.arange(24, dtype=np.float32).reshape(2, 3, 4)); "
                                       "np.save(d + '/u.npy', np.arange(6, dtype=np.uint8)); "
                                       "np.save(d + '/l.npy', np.array([7, -2]))",
                                       dir.string()},
                                      &status);
  ASSERT_EQ(status, 0) << said;
  EXPECT_TRUE(load_npy((dir / "f.npy").string()).equal(at::arange(24, at::kFloat).view({2, 3, 4})));
  EXPECT_TRUE(load_npy((dir / "u.npy").string()).equal(at::arange(6, at::kByte)));
  EXPECT_TRUE(load_npy((dir / "l.npy").string()).equal(at::tensor(std::vector<int64_t>{7, -2})));
  save_npy((dir / "ours.npy").string(), at::arange(12, at::kFloat).view({3, 4}));
  save_npy((dir / "ours1.npy").string(), at::tensor(std::vector<int64_t>{1, 2, 3}));
  said = test::run_python({"-c",
                           "import numpy as np, sys; d = sys.argv[1]; a = np.load(d + '/ours.npy'); "
                           "b = np.load(d + '/ours1.npy'); "
                           "sys.exit(0 if a.shape == (3, 4) and a.sum() == 66 and list(b) == [1, 2, 3] else 1)",
                           dir.string()},
                          &status);
  EXPECT_EQ(status, 0) << said;
  std::ofstream(dir / "bad.npy") << "not numpy";
  EXPECT_THROW(load_npy((dir / "bad.npy").string()), std::runtime_error);
}

// The bf16 tests below run the bf16 path on any CPU (on one without AVX-512, precision=bf16
// would otherwise compute in fp32; these models are small enough for ATen's slow bf16 GEMM).
void force_bf16_path() { ::setenv("PEFT_BF16_ANY_CPU", "1", 1); }

TEST(TrainPrecision, Bf16FallsBackToFp32OnlyWhereBf16ProductsAreSlow) {
  ::unsetenv("PEFT_BF16_ANY_CPU");
  EXPECT_EQ(effective_precision("fp32", true), "fp32");
  EXPECT_EQ(effective_precision("bf16", false), "bf16");  // CUDA: always bf16
  EXPECT_EQ(effective_precision("bf16", true), cpu_has_fast_bf16_matmul() ? "bf16" : "fp32");
  force_bf16_path();
  EXPECT_EQ(effective_precision("bf16", true), "bf16");
}

TEST(TrainPrecision, Bf16AutocastTrainsCloseToFp32) {
  force_bf16_path();
  auto c = parity_config(scratch("bf16"));
  fs::remove_all(c.output_dir);
  c.max_steps = 4;
  c.precision = "bf16";
  auto r = train(c);
  auto ref = json::parse(std::ifstream(ref_dir() / "losses.json"));
  for (size_t i = 0; i < r.steps.size(); ++i)
    EXPECT_NEAR(r.steps[i].loss, ref["loss"][i].get<double>(), 0.03 * ref["loss"][i].get<double>()) << i;
}

// The bf16 path (frozen base stored in bf16, fp32 adapter master weights, fused loss)
// follows the fp32 run, itself checked against HF Trainer by TrainParity, over 50 steps.
TEST(TrainPrecision, Bf16StaysWithinOnePercentOfFp32Over50Steps) {
  force_bf16_path();
  auto fp32 = parity_config(scratch("curve_fp32"));
  fp32.max_steps = 50;
  fs::remove_all(fp32.output_dir);
  auto bf16 = fp32;
  bf16.output_dir = scratch("curve_bf16").string();
  bf16.precision = "bf16";
  fs::remove_all(bf16.output_dir);
  const auto want = train(fp32).steps, got = train(bf16).steps;
  ASSERT_EQ(got.size(), 50u);
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_LE(std::abs(got[i].loss - want[i].loss), 1e-2 * std::abs(want[i].loss)) << "step " << i + 1;
}

// --- bad input -----------------------------------------------------------------------

std::string train_error(TrainConfig c) {
  try {
    train(c, /*resume=*/false, /*overwrite=*/true);  // each attempt starts from a clean output_dir
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TrainBadInput, MalformedJsonlNamesTheLine) {
  const auto data = scratch("bad.jsonl");
  std::ofstream(data) << "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, 2\n{\"input_ids\": [4, 5]}\n";
  auto c = parity_config(scratch("bad_out"));
  c.train_file = data.string();
  c.init_adapter.clear();
  c.method = json::parse(R"({"target_modules": ["q_proj"]})");
  c.max_steps = 2;
  EXPECT_THAT(train_error(c), HasSubstr("bad.jsonl:2:"));
  c.on_bad_line = "skip";
  testing::internal::CaptureStderr();
  EXPECT_EQ(train(c, false, /*overwrite=*/true).steps.size(), 2u);
  EXPECT_THAT(testing::internal::GetCapturedStderr(), HasSubstr("warning: skipped"));
}

TEST(TrainBadInput, UnknownConfigKeyIsAnError) {
  try {
    TrainConfig::from_json(json::parse(R"({"model": "m", "train_file": "t", "learning_rte": 1e-3})"), "cfg.json");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("cfg.json: unknown key 'learning_rte'"));
  }
}

TEST(TrainBadInput, UnknownOptimizerIsAnErrorNamingTheKey) {
  try {
    TrainConfig::from_json(json::parse(R"({"model": "m", "train_file": "t", "optim": "adamw_fused"})"), "cfg.json")
        .validate();
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown optim 'adamw_fused'"));
  }
}

// adamw_torch_fused runs torch's fused AdamW kernel over the same optimizer state: the
// parity run's per-step losses and final adapter stay within float rounding of
// adamw_torch's (1e-5 relative), here on the CPU (on a GPU it is the default).
TEST(TrainOptim, FusedAdamWTakesAdamWsSteps) {
  std::vector<TrainResult> runs;
  for (const char* optim : {"adamw_torch", "adamw_torch_fused"}) {
    auto c = parity_config(scratch(std::string("optim_") + optim));
    fs::remove_all(c.output_dir);
    c.optim = optim;
    c.max_steps = 12;
    runs.push_back(train(c));
  }
  ASSERT_EQ(runs[0].steps.size(), 12u);
  ASSERT_EQ(runs[1].steps.size(), 12u);
  for (size_t i = 0; i < 12; ++i)
    EXPECT_LE(std::abs(runs[1].steps[i].loss - runs[0].steps[i].loss), 1e-5 * std::abs(runs[0].steps[i].loss))
        << "step " << i + 1;
  SafetensorsFile plain((fs::path(runs[0].adapter_dir) / "adapter_model.safetensors").string());
  SafetensorsFile fused((fs::path(runs[1].adapter_dir) / "adapter_model.safetensors").string());
  for (const auto& n : plain.names()) {
    const at::Tensor a = plain.get(n), b = fused.get(n);
    EXPECT_LE((a - b).abs().max().item<double>(), 1e-5 * std::max(1.0, a.abs().max().item<double>())) << n;
    EXPECT_FALSE(at::equal(a, at::zeros_like(a))) << n;
  }
}

TEST(TrainBadInput, DivergingLossStopsWithAClearError) {
  auto c = parity_config(scratch("nan_out"));
  c.learning_rate = 1e30;
  c.warmup_steps = 0;
  c.max_grad_norm = 0;
  c.max_steps = 10;
  EXPECT_THAT(train_error(c), HasSubstr("lower learning_rate"));
}

}  // namespace
}  // namespace peft

namespace peft {
namespace {

// Trains `plain` (tag: its scratch name) with and without gradient checkpointing (of
// every `every`-th block); the per-step losses and gradient norms must agree within the
// given relative bounds.
void expect_checkpointing_gives_the_same_steps(TrainConfig plain, const std::string& tag, double loss_tol,
                                               double grad_tol, int64_t every = 1) {
  plain.output_dir = scratch(tag + "_off").string();
  fs::remove_all(plain.output_dir);
  auto want = train(plain).steps;
  auto ck = plain;
  ck.output_dir = scratch(tag + "_on").string();
  fs::remove_all(ck.output_dir);
  ck.gradient_checkpointing = true;
  ck.gradient_checkpointing_every = every;
  auto got = train(ck).steps;
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i].loss, want[i].loss, loss_tol * std::abs(want[i].loss)) << i;
    EXPECT_NEAR(got[i].grad_norm, want[i].grad_norm, grad_tol * want[i].grad_norm) << i;
  }
}

TEST(TrainMemory, GradientCheckpointingGivesTheSameSteps) {
  auto plain = parity_config(scratch("ckpt"));
  plain.max_steps = 6;
  plain.method = json::parse(R"({"r": 4, "target_modules": "all-linear", "lora_dropout": 0.1})");
  plain.init_adapter.clear();
  // Same dropout masks (the RNG is replayed), same gradients: identical up to rounding.
  expect_checkpointing_gives_the_same_steps(plain, "ckpt", 1e-6, 1e-5);
}

// Selective: every other block recomputed (its dropout replayed), the rest kept.
TEST(TrainMemory, CheckpointingEveryOtherBlockGivesTheSameSteps) {
  auto plain = parity_config(scratch("ckpt2"));
  plain.max_steps = 4;
  plain.method = json::parse(R"({"r": 4, "target_modules": "all-linear", "lora_dropout": 0.1})");
  plain.init_adapter.clear();
  expect_checkpointing_gives_the_same_steps(plain, "ckpt2", 1e-6, 1e-5, 2);
}

TEST(TrainMemory, CheckpointingSettingsAreChecked) {
  auto c = parity_config(scratch("ckpt_cfg"));
  auto error = [&c]() -> std::string {
    try {
      c.validate("cfg");
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  };
  c.gradient_checkpointing_every = 2;
  EXPECT_THAT(error(), HasSubstr("gradient_checkpointing_every needs gradient_checkpointing=true"));
  c.gradient_checkpointing = true;
  c.gradient_checkpointing_every = 0;
  EXPECT_THAT(error(), HasSubstr("'gradient_checkpointing_every' must be in [1,"));
  c.gradient_checkpointing_every = 1;
  c.gradient_checkpointing_offload = true;
  EXPECT_THAT(error(), HasSubstr("on device cpu they are there already"));
  c.device = "cuda";
  EXPECT_EQ(error(), "");
}

}  // namespace
}  // namespace peft

namespace peft {
namespace {

// Backward recomputes each block under the autocast state its forward had (bf16 here),
// with the frozen weights stored in bf16.
TEST(TrainMemory, GradientCheckpointingUnderBf16GivesTheSameSteps) {
  ::setenv("PEFT_BF16_ANY_CPU", "1", 1);  // the bf16 path on any CPU (see force_bf16_path)
  auto plain = parity_config(scratch("ckpt_bf16"));
  plain.max_steps = 4;
  plain.precision = "bf16";
  expect_checkpointing_gives_the_same_steps(plain, "ckpt_bf16", 1e-6, 1e-4);
}

TEST(TrainConfigTest, OverridesParseJsonAndReachIntoMethod) {
  auto j = TrainConfig::with_overrides(json::parse(R"({"model": "m", "method": {"r": 4}})"),
                                       {"train_file=data.jsonl", "learning_rate=1e-4", "method.r=16",
                                        "method.target_modules=[\"q_proj\"]", "shuffle=false"});
  auto c = TrainConfig::from_json(j, "test");
  EXPECT_EQ(c.train_file, "data.jsonl");
  EXPECT_DOUBLE_EQ(c.learning_rate, 1e-4);
  EXPECT_EQ(c.method["r"], 16);
  EXPECT_EQ(c.method["target_modules"][0], "q_proj");
  EXPECT_FALSE(c.shuffle);
  EXPECT_THROW(TrainConfig::with_overrides(json::object(), {"no_equals_sign"}), std::runtime_error);
  EXPECT_THROW(TrainConfig::from_json(TrainConfig::with_overrides(j, {"max_steps=\"many\""}), "t"), std::runtime_error);
}

}  // namespace
}  // namespace peft
