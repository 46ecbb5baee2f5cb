// Security and data safety (issue 13, first part): no input reaches a shell, merge never
// replaces weights it should not, every write is checked and atomic (a full disk fails
// loudly and leaves the old files), a run never resumes or clobbers another run's files,
// two runs never share an output_dir, and checkpoints are verified by checksum.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include <c10/core/GradMode.h>

#include "cli_runner.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "peft/tuner.h"
#include "test_util.h"
#include "util/hash.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;

namespace peft {
namespace {

fs::path parity(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / name; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "safety" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// A short LoRA run on llama_mha's counting task.
TrainConfig small_run(const fs::path& dir, const fs::path& out) {
  const auto data = dir / "counting.jsonl";
  if (!fs::exists(data)) test::write_counting_data(data);
  TrainConfig c;
  c.model = parity("llama_mha").string();
  c.train_file = data.string();
  c.output_dir = out.string();
  c.method = {{"r", 2}, {"target_modules", {"q_proj", "v_proj"}}};
  c.max_steps = 4;
  c.save_steps = 2;
  c.save_total_limit = 3;
  c.per_device_train_batch_size = 4;
  c.progress = false;
  return c;
}

fs::path write_config(const TrainConfig& c, const fs::path& file) {
  std::ofstream(file) << c.to_json().dump();
  return file;
}

// An adapter on `base` whose every trainable tensor is random, so merging changes weights.
fs::path random_adapter(const fs::path& base, const fs::path& dir) {
  PeftModel peft(load_model(base.string()));
  auto cfg = parse_adapter_config(json{{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"q_proj", "v_proj"}}}, "test");
  peft.add_adapter("default", *cfg, 7);
  {
    c10::NoGradGuard g;
    for (auto& t : peft.trainable_tensors()) t.normal_(0.0, 0.5);
  }
  peft.save_adapter(dir.string());
  return dir;
}

at::Tensor logits_of(const fs::path& model_dir) {
  c10::InferenceMode g;
  ModelInputs in;
  in.input_ids = at::arange(1, 9, at::kLong).view({1, 8});
  return load_model(model_dir.string())->forward(in).logits;
}

// --- no shell --------------------------------------------------------------------------

TEST(NoShell, OutputDirIsNeverPartOfACommandOrScript) {
  const auto dir = scratch("shell");
  const auto cwd = dir / "cwd";
  fs::create_directories(cwd);
  // Shell and gnuplot injection at once: $(...), backquotes, and a quote that would end
  // a gnuplot string and call system().
  const std::string hostile = "x$(touch PWNED)`touch PWNED2`y'; system(\"touch PWNED3\"); '";
  auto c = small_run(dir, cwd / hostile);
  c.save_steps = 0;
  c.max_steps = 2;
  const auto r = test::run_cli({"train", "--config", write_config(c, dir / "cfg.json").string()}, {.cwd = cwd.string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  for (const char* f : {"PWNED", "PWNED2", "PWNED3"}) {
    EXPECT_FALSE(fs::exists(cwd / f)) << f;
    EXPECT_FALSE(fs::exists(cwd / hostile / f)) << f;
  }
  EXPECT_TRUE(fs::exists(cwd / hostile / "loss.png")) << "gnuplot drew nothing: " << r.output;
  EXPECT_TRUE(fs::exists(cwd / hostile / "adapter_model.safetensors"));
}

// --- merge never replaces weights it should not ---------------------------------------------

TEST(MergeSafety, RefusesTheBaseFolderAndAnyFolderHoldingWeights) {
  const auto dir = scratch("merge_refuse");
  const auto base = dir / "base";
  fs::copy(parity("llama_mha"), base);
  const auto adapter = random_adapter(base, dir / "adapter");
  const std::string before = content_hash(slurp(base / "model.safetensors"));

  auto r = test::run_cli({"merge", base.string(), adapter.string(), base.string()});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("is the base model folder"));
  EXPECT_EQ(content_hash(slurp(base / "model.safetensors")), before) << "the base weights changed";

  const auto out = dir / "out";
  r = test::run_cli({"merge", base.string(), adapter.string(), out.string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const std::string merged = content_hash(slurp(out / "model.safetensors"));
  // Merging again into the same folder would apply the adapter on top of nothing new,
  // but it must be asked for.
  r = test::run_cli({"merge", base.string(), adapter.string(), out.string()});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("already holds model weights (model.safetensors)"));
  EXPECT_THAT(r.output, HasSubstr("--force"));
  r = test::run_cli({"merge", base.string(), adapter.string(), out.string(), "--force"});
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_EQ(content_hash(slurp(out / "model.safetensors")), merged);
}

TEST(MergeSafety, ForcedMergeIntoAShardedFolderLeavesNoStaleIndex) {
  const auto dir = scratch("merge_sharded");
  const auto base = dir / "base";
  fs::copy(parity("llama_sharded"), base);
  ASSERT_TRUE(fs::exists(base / "model.safetensors.index.json"));
  const auto adapter = random_adapter(base, dir / "adapter");
  const auto fresh = dir / "fresh";
  auto r = test::run_cli({"merge", base.string(), adapter.string(), fresh.string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const auto want = logits_of(fresh);
  EXPECT_GT((want - logits_of(base)).abs().max().item<double>(), 1e-3) << "the adapter changes nothing";

  r = test::run_cli({"merge", base.string(), adapter.string(), base.string(), "--force"});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_FALSE(fs::exists(base / "model.safetensors.index.json"));
  for (const auto& e : fs::directory_iterator(base))
    EXPECT_THAT(e.path().filename().string(), Not(HasSubstr("-of-"))) << "a stale shard is left";
  EXPECT_LE((logits_of(base) - want).abs().max().item<double>(), 1e-6) << "the merged weights are not the ones loaded";
}

TEST(MergeSafety, MergedFolderCarriesTheTokenizerAndGenerationFiles) {
  const auto dir = scratch("merge_companions");
  const auto base = dir / "base";
  fs::copy(parity("llama_mha"), base);
  std::ofstream(base / "tokenizer_config.json") << R"({"chat_template": "{{ messages }}", "eos_token": "</s>"})";
  std::ofstream(base / "generation_config.json") << R"({"eos_token_id": 2, "max_new_tokens": 7})";
  std::ofstream(base / "special_tokens_map.json") << R"({"eos_token": "</s>"})";
  const auto adapter = random_adapter(base, dir / "adapter");
  EXPECT_EQ(json::parse(std::ifstream(adapter / "adapter_config.json"))["base_model_name_or_path"],
            fs::absolute(base).lexically_normal().string())
      << "AutoPeftModel needs the base's path";
  const auto out = dir / "out";
  const auto r = test::run_cli({"merge", base.string(), adapter.string(), out.string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  for (const char* f : {"tokenizer_config.json", "generation_config.json", "special_tokens_map.json"})
    EXPECT_EQ(slurp(out / f), slurp(base / f)) << f;
}

// --- a full disk fails loudly and loses nothing ------------------------------------------------

TEST(FullDisk, MergeFailsNamingTheFileAndLeavesNoPartialFiles) {
  const auto dir = scratch("full_merge");
  const auto adapter = random_adapter(parity("llama_mha"), dir / "adapter");
  const auto out = dir / "out";
  const auto r = test::run_cli({"merge", parity("llama_mha").string(), adapter.string(), out.string()},
                               {.file_size_bytes = 16 << 10});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr((out / "model.safetensors").string() + ": write failed: File too large"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  EXPECT_FALSE(fs::exists(out / "config.json"));
  for (const auto& e : fs::directory_iterator(out)) ADD_FAILURE() << "left behind: " << e.path();
}

TEST(FullDisk, TrainFailsNamingTheFileAndCommitsNoBrokenCheckpoint) {
  const auto dir = scratch("full_train");
  const auto c = small_run(dir, dir / "out");
  const auto r = test::run_cli({"train", "--config", write_config(c, dir / "cfg.json").string()},
                               {.file_size_bytes = 2 << 10});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("File too large"));
  EXPECT_THAT(r.output, HasSubstr((dir / "out").string() + "/"));
  for (const auto& e : fs::directory_iterator(dir / "out"))
    EXPECT_THAT(e.path().filename().string(), Not(HasSubstr("checkpoint-"))) << "a checkpoint was left behind";
}

// --- one run, one folder ------------------------------------------------------------------

TEST(RunFolderSafety, AnotherRunsFilesAreNeitherResumedNorClobbered) {
  const auto dir = scratch("stale");
  auto first = small_run(dir, dir / "out");
  train(first);
  ASSERT_TRUE(fs::exists(dir / "out" / "checkpoint-4"));
  const std::string adapter_before = slurp(dir / "out" / "adapter_model.safetensors");

  auto second = first;
  second.max_steps = 3;
  try {
    train(second);
    FAIL() << "a new run started in a folder holding another run's files";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("holds an earlier run's files"));
    EXPECT_THAT(e.what(), HasSubstr("--overwrite"));
  }
  try {
    train(second, /*resume=*/true);
    FAIL() << "resumed another run's checkpoint";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("checkpoint-4 is from a different run (max_steps 4 then, 3 now)"));
  }
  auto changed_data = first;
  const auto other_data = dir / "other.jsonl";
  std::ofstream(other_data) << slurp(first.train_file) << R"({"input_ids": [1, 2, 3, 4]})" << "\n";
  changed_data.train_file = other_data.string();
  try {
    train(changed_data, /*resume=*/true);
    FAIL() << "resumed a run on other data";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("the contents of train_file differ"));
  }
  EXPECT_EQ(slurp(dir / "out" / "adapter_model.safetensors"), adapter_before) << "a refused run wrote files";

  const auto result = train(second, /*resume=*/false, /*overwrite=*/true);
  EXPECT_EQ(result.steps.size(), 3u);
  EXPECT_FALSE(fs::exists(dir / "out" / "checkpoint-4"));
  EXPECT_TRUE(fs::exists(dir / "out" / "checkpoint-3"));
  int losses = 0;
  std::ifstream m(dir / "out" / "metrics.jsonl");
  for (std::string l; std::getline(m, l);) losses += json::parse(l).contains("loss");
  EXPECT_EQ(losses, 3);
  // The same run resumes.
  testing::internal::CaptureStderr();
  train(second, /*resume=*/true);
  EXPECT_THAT(testing::internal::GetCapturedStderr(), HasSubstr("resumed from"));
}

TEST(RunFolderSafety, TwoTrainingRunsCannotShareAnOutputDir) {
  const auto dir = scratch("lock");
  auto c = small_run(dir, dir / "out");
  c.max_steps = 1000000;
  c.save_steps = 0;
  const auto cfg = write_config(c, dir / "cfg.json");
  std::thread first([&] { test::run_cli({"train", "--config", cfg.string()}, {.timeout_s = 15}); });
  const auto lock = dir / "out" / ".peft-train.lock";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(12);
  while ((!fs::exists(lock) || fs::file_size(lock) == 0) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto r = test::run_cli({"train", "--config", cfg.string(), "--resume"});
  int pid = 0;
  std::ifstream(lock) >> pid;
  if (pid > 0) kill(pid, SIGTERM);
  first.join();
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("another peft train is writing to this output_dir (pid "));
}

// --- checkpoints are verified --------------------------------------------------------------

TEST(CheckpointIntegrity, FlippedBytesAndABadStateFallBackToAnOlderCheckpoint) {
  const auto dir = scratch("integrity");
  auto c = small_run(dir, dir / "out");
  c.max_steps = 6;
  const auto want = train(c).steps;
  // Same size, one bit different, deep inside the tensor data.
  const auto f = dir / "out" / "checkpoint-6" / "adapter_model.safetensors";
  std::string bytes = slurp(f);
  bytes[bytes.size() - 3] ^= 0x10;
  std::ofstream(f, std::ios::binary | std::ios::trunc) << bytes;
  // checkpoint-4's state says step -4.
  const auto state = dir / "out" / "checkpoint-4" / "trainer_state.json";
  auto j = json::parse(std::ifstream(state));
  j["global_step"] = -4;
  std::ofstream(state) << j.dump();
  testing::internal::CaptureStderr();
  const auto resumed = train(c, /*resume=*/true);
  const auto err = testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("checkpoint-6 is damaged (adapter_model.safetensors does not match its checksum)"));
  EXPECT_THAT(err, HasSubstr("checkpoint-4 is damaged (trainer_state.json: 'global_step' must be an integer >= 1)"));
  EXPECT_THAT(err, HasSubstr("checkpoint-2 at step 2"));
  ASSERT_EQ(resumed.steps.size(), 4u);
  for (const auto& s : resumed.steps) EXPECT_EQ(s.loss, want[s.step - 1].loss) << "step " << s.step;
}

}  // namespace
}  // namespace peft
