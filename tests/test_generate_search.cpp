// Beam search and the logits processors (no-repeat n-grams, minimum lengths, forced first
// and last tokens) against transformers' generate() on the same folders
// (tests/parity/check_generate.py): decoder-only models (left-padded ragged prompts, GQA,
// tied embeddings) and encoder-decoder ones (T5 v1.1, BART, mBART, M2M100, Marian), token for token; and
// `peft generate` following a folder's generation_config.json as transformers does.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_runner.h"
#include "peft/generate.h"
#include "peft/model.h"
#include "peft/seq2seq.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;
using ES = peft::GenerationConfig::EarlyStopping;

namespace peft {
namespace {

fs::path model_dir(const std::string& name) {
  for (const char* root : {PEFT_PARITY_DIR, PEFT_T5_DIR})
    if (fs::exists(fs::path(root) / name / "config.json")) return fs::path(root) / name;
  ADD_FAILURE() << "no fixture " << name;
  return {};
}
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "generate_search" / name;
  fs::create_directories(p.parent_path());
  return p;
}

// Our settings as check_generate.py's generation_config attributes.
json as_hf(const GenerationConfig& g) {
  json j{{"max_new_tokens", g.max_new_tokens},
         {"num_beams", g.num_beams},
         {"length_penalty", g.length_penalty},
         {"early_stopping", g.early_stopping == ES::kNever ? json("never") : json(g.early_stopping == ES::kFinished)},
         {"pad_token_id", g.pad_token_id}};
  if (!g.eos_token_ids.empty()) j["eos_token_id"] = g.eos_token_ids;
  if (g.num_return_sequences > 1) j["num_return_sequences"] = g.num_return_sequences;
  if (g.do_sample)  // every setting named: transformers' unset top_k is 50
    j.update(json{{"do_sample", true}, {"seed", g.seed}, {"temperature", g.temperature}, {"top_k", g.top_k},
                  {"top_p", g.top_p}, {"min_p", g.min_p}});
  if (!g.forced_eos_token_ids.empty()) j["forced_eos_token_id"] = g.forced_eos_token_ids;
  if (g.forced_bos_token_id >= 0) j["forced_bos_token_id"] = g.forced_bos_token_id;
  if (g.no_repeat_ngram_size > 0) j["no_repeat_ngram_size"] = g.no_repeat_ngram_size;
  if (g.min_length > 0) j["min_length"] = g.min_length;
  if (g.min_new_tokens > 0) j["min_new_tokens"] = g.min_new_tokens;
  if (g.repetition_penalty != 1.0) j["repetition_penalty"] = g.repetition_penalty;
  if (!g.bad_words_ids.empty()) j["bad_words_ids"] = g.bad_words_ids;
  if (!g.suppress_tokens.empty()) j["suppress_tokens"] = g.suppress_tokens;
  if (!g.begin_suppress_tokens.empty()) j["begin_suppress_tokens"] = g.begin_suppress_tokens;
  if (!g.sequence_bias.empty()) {
    j["sequence_bias"] = json::array();
    for (const auto& [seq, b] : g.sequence_bias) j["sequence_bias"].push_back(json::array({seq, b}));
  }
  return j;
}

// transformers' new tokens per case and prompt.
json transformers_tokens(const fs::path& dir, const std::vector<std::vector<int64_t>>& prompts, const json& cases,
                         const std::string& name) {
  const auto in = scratch(name + "_cases.json"), out = scratch(name + "_hf.json");
  std::ofstream(in) << json{{"prompts", prompts}, {"cases", cases}}.dump();
  int status = 0;
  const auto log = test::run_parity_script("check_generate.py", dir.string() + " " + in.string() + " " + out.string(),
                                           &status);
  EXPECT_EQ(status, 0) << log;
  return json::parse(std::ifstream(out));
}

std::vector<std::vector<int64_t>> random_prompts(int64_t vocab, std::vector<size_t> lengths, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> id(3, vocab - 1);  // no pad, BOS or EOS ids among them
  std::vector<std::vector<int64_t>> out;
  for (size_t n : lengths) {
    out.emplace_back();
    for (size_t i = 0; i < n; ++i) out.back().push_back(id(rng));
  }
  return out;
}

// A copy of the BART fixture in scratch/`name` whose generation_config.json has `changes`
// merged in.
fs::path bart_with_generation_config(const std::string& name, const json& changes) {
  const auto src = model_dir("bart");
  const auto dir = scratch(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& f : fs::directory_iterator(src))
    if (f.is_regular_file()) fs::copy_file(f.path(), dir / f.path().filename());
  auto gen = json::parse(std::ifstream(src / "generation_config.json"));
  gen.update(changes);
  std::ofstream(dir / "generation_config.json") << gen.dump();
  return dir;
}

// `peft generate --ids` printed, per prompt, the prompt and then `want`'s tokens.
void expect_new_tokens(const test::CliResult& r, const std::vector<std::vector<int64_t>>& prompts, const json& want) {
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto rows = json::parse(r.output.substr(r.output.find('[')));
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> got = rows[i];
    got.erase(got.begin(), got.begin() + static_cast<long>(prompts[i].size()));
    EXPECT_EQ(got, want[i].get<std::vector<int64_t>>()) << "prompt " << i;
  }
}

class SearchMatchesTransformers : public ::testing::TestWithParam<std::string> {};

// Beam search with one and two EOS ids, every early_stopping mode, length penalties that
// favour longer and shorter hypotheses, the processors in beam and greedy decoding, and
// seeded sampling through temperature, top-k, top-p and min-p.
// EOS ids are tokens the model's greedy continuation produces, so hypotheses do finish
// early and the finished-beam bookkeeping is exercised, not only the length limit.
TEST_P(SearchMatchesTransformers, TokenForToken) {
  const auto dir = model_dir(GetParam());
  auto model = load_model(dir.string());
  const bool seq2seq = as_seq2seq(*model) != nullptr;
  const int64_t vocab = model->config().value("vocab_size", int64_t{0});
  ASSERT_GT(vocab, 8);
  const auto prompts = random_prompts(vocab, {6, 4, 5}, 11);
  const int64_t prompt_len = seq2seq ? 1 : 6;  // transformers' decoder prompt: decoder_start, or the padded prompts

  GenerationConfig greedy;
  greedy.max_new_tokens = 8;
  const auto plain = generate(*model, prompts, greedy);
  const int64_t e = plain[0][prompts[0].size() + 2], e2 = plain[1][prompts[1].size() + 1];
  const int64_t f = plain[2][prompts[2].size() + 3];
  std::map<int64_t, int> counts;  // the model's most frequent greedy token
  for (size_t i = 0; i < plain.size(); ++i)
    for (size_t t = prompts[i].size(); t < plain[i].size(); ++t) ++counts[plain[i][t]];
  const int64_t frequent = std::max_element(counts.begin(), counts.end(), [](const auto& x, const auto& y) {
                             return x.second < y.second;
                           })->first;

  std::vector<GenerationConfig> cases;
  auto add = [&](auto edit) {
    GenerationConfig g;
    g.max_new_tokens = 10;
    g.eos_token_ids = {e};
    edit(g);
    cases.push_back(g);
  };
  add([](GenerationConfig& g) { g.num_beams = 4; });
  add([](GenerationConfig& g) {
    g.num_beams = 3;
    g.length_penalty = 2.0;
    g.early_stopping = ES::kFinished;
    g.no_repeat_ngram_size = 2;
  });
  add([&](GenerationConfig& g) {
    g.num_beams = 4;
    g.early_stopping = ES::kNever;
    g.length_penalty = 0.5;
    g.min_new_tokens = 4;
    g.eos_token_ids = {e, e2};
    g.forced_eos_token_ids = {f};
    g.max_new_tokens = 9;
  });
  add([](GenerationConfig& g) {
    g.num_beams = 3;
    g.length_penalty = -1.0;
    g.no_repeat_ngram_size = 1;
  });
  add([](GenerationConfig& g) {
    g.num_beams = 2;
    g.eos_token_ids.clear();
    g.max_new_tokens = 6;
  });
  add([&](GenerationConfig& g) {  // raw sums: a hypothesis that ends early wins
    g.num_beams = 4;
    g.length_penalty = 0.0;
    g.eos_token_ids = {frequent};
  });
  add([&](GenerationConfig& g) {  // "never" with a strong penalty: runs on, as longer ones may win
    g.num_beams = 3;
    g.length_penalty = 2.0;
    g.early_stopping = ES::kNever;
    g.eos_token_ids = {frequent};
  });
  add([&](GenerationConfig& g) {  // greedy through every processor
    g.no_repeat_ngram_size = 2;
    g.min_length = prompt_len + 3;
    g.forced_eos_token_ids = {f};
    g.max_new_tokens = 8;
  });
  // The repetition penalty, banned, biased and suppressed tokens. The first generated token
  // of each prompt and a bigram the model produces are what they act on, so they change the
  // output; the pad id is the model's most frequent token, so counting the prompts' left
  // padding as repeats would change it too.
  const auto first = [&](size_t i, size_t k) { return plain[i][prompts[i].size() + k]; };
  add([&](GenerationConfig& g) {
    g.repetition_penalty = 1.6;
    g.pad_token_id = frequent == e ? 1 : frequent;
  });
  add([&](GenerationConfig& g) {
    g.num_beams = 3;
    g.repetition_penalty = 0.6;  // < 1 favours repeats: scores of both signs are scaled
  });
  add([&](GenerationConfig& g) {
    g.bad_words_ids = {{first(0, 0)}, {first(1, 0), first(1, 1)}, {e}};  // a lone EOS is not banned
    g.suppress_tokens = {first(2, 1)};
    g.begin_suppress_tokens = {first(1, 0), first(2, 0)};
  });
  add([&](GenerationConfig& g) {
    g.num_beams = 4;
    g.sequence_bias = {{{first(0, 1)}, 3.0}, {{first(1, 0), first(1, 1)}, -4.0}, {{first(2, 0)}, -2.5}};
    g.bad_words_ids = {{first(2, 1), first(2, 2)}};
    g.repetition_penalty = 1.4;  // after the biases: a biased score may turn positive
  });
  // Sampling: the same draws as transformers' from the same seed (torch's generator and
  // multinomial), after its warpers in its order and the processors before them.
  add([](GenerationConfig& g) {
    g.do_sample = true, g.seed = 3;
    g.temperature = 0.7;
    g.top_k = 5;
  });
  add([](GenerationConfig& g) {
    g.do_sample = true, g.seed = 4;
    g.temperature = 1.3;
    g.top_p = 0.8;
    g.repetition_penalty = 1.3;
  });
  add([](GenerationConfig& g) {
    g.do_sample = true, g.seed = 5;
    g.min_p = 0.1;
    g.top_k = 20;
  });
  if (seq2seq) add([&](GenerationConfig& g) {
      g.num_beams = 3;
      g.forced_bos_token_id = f;
      g.begin_suppress_tokens = {first(0, 1), first(1, 1)};  // the token after the forced one
    });

  json hf_cases = json::array();
  for (const auto& g : cases) hf_cases.push_back(as_hf(g));
  const auto want = transformers_tokens(dir, prompts, hf_cases, GetParam());
  ASSERT_EQ(want.size(), cases.size());
  size_t finished_early = 0;
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto rows = generate(*model, prompts, cases[c]);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::vector<int64_t> got(rows[i].begin() + static_cast<long>(prompts[i].size()), rows[i].end());
      EXPECT_EQ(got, want[c][i].get<std::vector<int64_t>>()) << "case " << c << " " << hf_cases[c] << ", prompt " << i;
      if (static_cast<int64_t>(got.size()) < cases[c].max_new_tokens) ++finished_early;
    }
  }
  EXPECT_GT(finished_early, 0u) << "no hypothesis ended with an EOS token: the cases test the length limit only";

  // Several answers per prompt, each prompt's together: the best beams, and draws.
  std::vector<GenerationConfig> multi(3);
  for (auto& g : multi) g.max_new_tokens = 10, g.eos_token_ids = {e};
  multi[0].num_beams = 4, multi[0].num_return_sequences = 3;
  multi[1].num_beams = 3, multi[1].num_return_sequences = 2, multi[1].length_penalty = 0.0;
  multi[1].eos_token_ids = {frequent};
  multi[2].do_sample = true, multi[2].seed = 6, multi[2].top_k = 12, multi[2].num_return_sequences = 3;
  json hf_multi = json::array();
  for (const auto& g : multi) hf_multi.push_back(as_hf(g));
  const auto want_multi = transformers_tokens(dir, prompts, hf_multi, GetParam() + "_multi");
  for (size_t c = 0; c < multi.size(); ++c) {
    const auto rows = generate(*model, prompts, multi[c]);
    const auto n = static_cast<size_t>(multi[c].num_return_sequences);
    ASSERT_EQ(rows.size(), prompts.size() * n);
    ASSERT_EQ(want_multi[c].size(), rows.size());
    size_t varied = 0;  // prompts whose answers are not all one
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto& prompt = prompts[r / n];
      ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), rows[r].begin())) << "row " << r;
      const std::vector<int64_t> got(rows[r].begin() + static_cast<long>(prompt.size()), rows[r].end());
      EXPECT_EQ(got, want_multi[c][r].get<std::vector<int64_t>>()) << "case " << hf_multi[c] << ", row " << r;
      if (r % n > 0 && rows[r] != rows[r - 1]) ++varied;
    }
    EXPECT_GT(varied, 0u) << "a prompt's answers should differ: " << hf_multi[c];
  }
}

INSTANTIATE_TEST_SUITE_P(Generate, SearchMatchesTransformers,
                         ::testing::Values("llama_gqa_tied", "gpt2", "qwen2", "t5_v11", "bart", "mbart", "m2m100",
                                           "marian"));

// A copy of the BART fixture whose generation_config.json asks for beams, n-gram and length
// rules and a forced EOS (as bart-large-cnn's does): `peft generate` with no options
// decodes as transformers' generate() with the folder's config, and options override it.
TEST(GenerateCli, FollowsTheFoldersGenerationConfig) {
  const auto dir = bart_with_generation_config(
      "bart_cnn_like", json{{"num_beams", 3}, {"length_penalty", 2.0}, {"early_stopping", true},
                            {"no_repeat_ngram_size", 2}, {"min_length", 5}, {"max_length", 12},
                            {"forced_eos_token_id", 2}, {"repetition_penalty", 1.3},
                            {"bad_words_ids", json::array({json::array({7}), json::array({8, 9})})},
                            {"suppress_tokens", json::array({10, 11})}});
  auto model = load_model(dir.string());
  const auto prompts = random_prompts(model->config()["vocab_size"].get<int64_t>(), {6, 4}, 5);
  const auto ids = scratch("bart_prompts.json");
  std::ofstream(ids) << json(prompts).dump();

  const auto want = transformers_tokens(dir, prompts, json::array({{{"folder_defaults", true}, {"max_new_tokens", 11}}}),
                                        "bart_cnn_like");
  expect_new_tokens(test::run_cli({"generate", dir.string(), "--ids", ids.string()}), prompts, want[0]);
  // Options override the file: greedy, no forced EOS, n-gram rule, minimum length, repetition
  // penalty or suppressed tokens.
  GenerationConfig g;
  g.max_new_tokens = 7;
  g.eos_token_ids = {2};
  g.bad_words_ids = {{7}, {8, 9}};  // not overridden
  const auto plain = transformers_tokens(dir, prompts, json::array({as_hf(g)}), "bart_cnn_like_plain");
  expect_new_tokens(test::run_cli({"generate", dir.string(), "--ids", ids.string(), "--num-beams", "1", "--forced-eos",
                                   "-1", "--no-repeat-ngram-size", "0", "--min-length", "0", "--max-new-tokens", "7",
                                   "--repetition-penalty", "1", "--suppress-tokens", "-1"}),
                    prompts, plain[0]);
}

// --do-sample samples with the folder's temperature, top_k, top_p and min_p (after its
// processors) and draws transformers' tokens from the same seed; decoding stays greedy
// without it. Sampling values out of range (a greedy model's temperature 0) do not stop
// greedy decoding and are named when sampling.
TEST(GenerateCli, DoSampleDrawsAsTransformersWithTheFoldersSettings) {
  const auto dir = bart_with_generation_config(
      "bart_sampling", json{{"do_sample", true}, {"temperature", 0.9}, {"top_k", 6}, {"top_p", 0.95},
                            {"min_p", 0.05}, {"repetition_penalty", 1.2}, {"max_length", 12}});
  auto model = load_model(dir.string());
  const auto prompts = random_prompts(model->config()["vocab_size"].get<int64_t>(), {6, 4, 5}, 8);
  const auto ids = scratch("sampling_prompts.json");
  std::ofstream(ids) << json(prompts).dump();
  const auto want = transformers_tokens(
      dir, prompts,
      json::array({{{"folder_defaults", true}, {"max_new_tokens", 11}, {"do_sample", true}, {"seed", 21}},
                   {{"folder_defaults", true}, {"max_new_tokens", 11}}}),
      "bart_sampling");
  EXPECT_NE(want[0], want[1]) << "sampling should change the answer";
  expect_new_tokens(test::run_cli({"generate", dir.string(), "--ids", ids.string(), "--do-sample", "--seed", "21"}),
                    prompts, want[0]);
  expect_new_tokens(test::run_cli({"generate", dir.string(), "--ids", ids.string()}), prompts, want[1]);
  // Two draws per prompt, printed after their prompt, each prompt's together.
  const auto want_two = transformers_tokens(dir, prompts,
                                            json::array({{{"folder_defaults", true},
                                                          {"max_new_tokens", 11},
                                                          {"do_sample", true},
                                                          {"seed", 21},
                                                          {"num_return_sequences", 2}}}),
                                            "bart_sampling_two");
  std::vector<std::vector<int64_t>> twice;
  for (const auto& p : prompts) twice.insert(twice.end(), 2, p);
  expect_new_tokens(test::run_cli({"generate", dir.string(), "--ids", ids.string(), "--do-sample", "--seed", "21",
                                   "--num-return-sequences", "2"}),
                    twice, want_two[0]);
  // A folder that names no top_k samples among transformers' default 50.
  const auto k50 = bart_with_generation_config("bart_sampling_k50", json{{"temperature", 1.5}, {"max_length", 12}});
  const auto want_k50 = transformers_tokens(
      k50, prompts, json::array({{{"folder_defaults", true}, {"max_new_tokens", 11}, {"do_sample", true}, {"seed", 5}}}),
      "bart_sampling_k50");
  expect_new_tokens(test::run_cli({"generate", k50.string(), "--ids", ids.string(), "--do-sample", "--seed", "5"}),
                    prompts, want_k50[0]);

  const auto greedy_dir = bart_with_generation_config("bart_temperature_0", json{{"temperature", 0.0}, {"top_p", 0}});
  auto r = test::run_cli({"generate", greedy_dir.string(), "--ids", ids.string(), "--max-new-tokens", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("note:"))) << r.output;
  r = test::run_cli({"generate", greedy_dir.string(), "--ids", ids.string(), "--max-new-tokens", "3", "--do-sample"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* key : {"'temperature' is not applied (out of range", "'top_p' is not applied (out of range"})
    EXPECT_THAT(r.output, HasSubstr(key)) << r.output;
}

// A generation_config.json key that would change transformers' output but is not applied
// here is named on stderr, one note line each; generation goes on.
TEST(GenerateCli, NamesTheKeysItDoesNotApply) {
  const auto dir = bart_with_generation_config(
      "bart_unapplied", json{{"encoder_no_repeat_ngram_size", 3}, {"num_return_sequences", 2}, {"do_sample", true},
                             {"encoder_repetition_penalty", 1.0}, {"renormalize_logits", false}});
  const auto ids = scratch("unapplied_prompts.json");
  std::ofstream(ids) << "[[5, 6, 7]]";
  const auto r = test::run_cli({"generate", dir.string(), "--ids", ids.string(), "--max-new-tokens", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* key : {"encoder_no_repeat_ngram_size", "num_return_sequences", "do_sample"})
    EXPECT_THAT(r.output, HasSubstr(std::string("generation_config.json: '") + key + "' is not applied")) << r.output;
  // Keys at values that change nothing are not mentioned.
  EXPECT_THAT(r.output, Not(HasSubstr("encoder_repetition_penalty"))) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("renormalize_logits"))) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 4) << r.output;  // three notes, one result
}

// A generation_config.json key of the wrong type or range, or a bad option, stops `peft
// generate` with one error line naming the file and key (or the option).
TEST(GenerateCli, BadGenerationSettingsAreOneLine) {
  const auto src = model_dir("bart");
  const auto ids = scratch("bad_prompts.json");
  std::ofstream(ids) << "[[5, 6, 7]]";
  for (const auto& [key, value] : std::vector<std::pair<std::string, json>>{{"num_beams", "4"},
                                                                            {"num_beams", 0},
                                                                            {"num_beams", 100000},
                                                                            {"early_stopping", "sometimes"},
                                                                            {"no_repeat_ngram_size", -1},
                                                                            {"length_penalty", "long"},
                                                                            {"forced_eos_token_id", json::array({-3})},
                                                                            {"min_new_tokens", 1.5},
                                                                            {"repetition_penalty", 0},
                                                                            {"bad_words_ids", json::array({5})},
                                                                            {"bad_words_ids", json::parse("[[-1]]")},
                                                                            {"bad_words_ids", json::parse("[[]]")},
                                                                            {"bad_words_ids", json::parse("[[5, 99999999]]")},
                                                                            {"sequence_bias", json::parse("[[[5], \"x\"]]")},
                                                                            {"sequence_bias", json::parse("[[5, 1.0]]")},
                                                                            {"suppress_tokens", "5"},
                                                                            {"begin_suppress_tokens", json::parse("[-2]")},
                                                                            {"temperature", "hot"},
                                                                            {"min_p", json::array({0.1})},
                                                                            {"num_return_sequences", "two"}}) {
    const auto dir = bart_with_generation_config("bart_bad_gen", json{{key, value}});
    const auto r = test::run_cli({"generate", dir.string(), "--ids", ids.string()});
    EXPECT_EQ(r.exit_code, 1) << key << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr("generation_config.json")) << key;
    EXPECT_THAT(r.output, HasSubstr(key)) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  for (const auto& args : std::vector<std::vector<std::string>>{{"--num-beams", "0"},
                                                                {"--num-beams", "3", "--temperature", "0.7"},
                                                                {"--early-stopping", "maybe"},
                                                                {"--no-repeat-ngram-size", "-2"},
                                                                {"--repetition-penalty", "-1"},
                                                                {"--min-p", "1.5"},
                                                                {"--num-return-sequences", "2"},
                                                                {"--num-return-sequences", "0", "--do-sample"}}) {
    std::vector<std::string> argv = {"generate", src.string(), "--ids", ids.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = test::run_cli(argv);
    EXPECT_NE(r.exit_code, 0) << args[0] << ": " << r.output;
    EXPECT_LT(r.exit_code, 128) << r.output;
    // One error line naming the option (CLI11 adds "Run with --help" to its own).
    const std::string first = r.output.substr(0, r.output.find('\n'));
    std::string key = args[0].substr(2);
    std::replace(key.begin(), key.end(), '-', '_');
    EXPECT_THAT(first, ::testing::AnyOf(HasSubstr(args[0]), HasSubstr(key))) << r.output;
    EXPECT_LE(std::count(r.output.begin(), r.output.end(), '\n'), 2) << r.output;
  }
}

}  // namespace
}  // namespace peft
