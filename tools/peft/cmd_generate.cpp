// peft generate MODEL_DIR --ids IDS.json: continue token-id prompts.
#include <ATen/ops/full.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "peft/generate.h"
#include "peft/seq2seq.h"
#include "peft/task_ids.h"
#include "peft/tokenizer.h"
#include "util/json_file.h"

namespace peft::cli {

namespace {

struct GenerateArgs {
  ModelArgs model;
  AdapterArgs adapters;
  std::string ids, tokenizer;
  std::vector<std::string> prompts, chats;
  std::string system;
  GenerationConfig gen;
  std::vector<int64_t> eos, forced_eos;
  std::string early_stopping;
  bool no_eos = false;
  int64_t task_id = -1;  // multitask adapters: every prompt's task
};

// Multitask adapters (MPT, Poly) route each row by its task: --task-id for every row the
// model reads (each prompt's beams, or its sampled answers).
TaskIdsScope task_scope(int64_t task_id, size_t prompts, const GenerationConfig& g) {
  if (task_id < 0) return TaskIdsScope(at::Tensor());
  const int64_t rows = static_cast<int64_t>(prompts) * (g.num_beams > 1 ? g.num_beams : g.num_return_sequences);
  return TaskIdsScope(at::full({rows}, task_id, at::kLong));
}

// The model's generation defaults (generation_config.json, else config.json, as
// transformers' generate() uses them), then every option given on the command line.
GenerationConfig generation_settings(Model& model, const GenerateArgs& a, const CLI::App& cmd) {
  std::vector<std::string> not_applied;
  GenerationConfig g = generation_defaults(model, a.model.dir, &not_applied);
  const GenerationConfig& o = a.gen;
  // Say where the output will differ from transformers' generate() on this folder.
  const std::string file = (std::filesystem::path(a.model.dir) / "generation_config.json").string();
  for (const auto& key : not_applied) {
    const bool sampling_key = key == "temperature" || key == "top_k" || key == "top_p" || key == "min_p";
    if (key == "do_sample" && o.do_sample) continue;  // asked to sample: the file's wish holds
    if (sampling_key && !o.do_sample) continue;        // out of range, but greedy decoding never reads it
    std::cerr << "note: " << file << ": '" << key << "' is not applied ("
              << (key == "do_sample"  ? "decoding is greedy unless --do-sample or a sampling option is given"
                  : sampling_key ? "out of range for sampling; transformers' default is used"
                                 : "transformers' generate() would apply it")
              << ")\n";
  }
  auto given = [&cmd](const char* flag) { return cmd.count(flag) > 0; };
  if (given("--max-new-tokens")) g.max_new_tokens = o.max_new_tokens;
  g.do_sample = o.do_sample;  // the file's temperature, top_k, top_p and min_p hold unless given
  if (given("--temperature")) g.temperature = o.temperature;
  if (given("--top-k")) g.top_k = o.top_k;
  if (given("--top-p")) g.top_p = o.top_p;
  if (given("--min-p")) g.min_p = o.min_p;
  g.seed = o.seed;
  if (!a.eos.empty()) g.eos_token_ids = a.eos;
  if (a.no_eos) g.eos_token_ids.clear();
  if (given("--forced-bos")) g.forced_bos_token_id = o.forced_bos_token_id;
  if (given("--forced-eos")) g.forced_eos_token_ids = a.forced_eos;
  if (a.forced_eos == std::vector<int64_t>{-1}) g.forced_eos_token_ids.clear();
  if (given("--num-beams")) g.num_beams = o.num_beams;
  if (given("--length-penalty")) g.length_penalty = o.length_penalty;
  if (given("--early-stopping"))
    g.early_stopping = a.early_stopping == "never"  ? GenerationConfig::EarlyStopping::kNever
                       : a.early_stopping == "true" ? GenerationConfig::EarlyStopping::kFinished
                                                    : GenerationConfig::EarlyStopping::kHeuristic;
  if (given("--no-repeat-ngram-size")) g.no_repeat_ngram_size = o.no_repeat_ngram_size;
  if (given("--min-new-tokens")) g.min_new_tokens = o.min_new_tokens;
  if (given("--min-length")) g.min_length = o.min_length;
  if (given("--repetition-penalty")) g.repetition_penalty = o.repetition_penalty;
  if (given("--suppress-tokens")) g.suppress_tokens = o.suppress_tokens;
  if (o.suppress_tokens == std::vector<int64_t>{-1}) g.suppress_tokens.clear();
  if (g.do_sample && !given("--num-beams")) g.num_beams = 1;  // asked to sample: the file's beams give way
  if (given("--num-return-sequences")) g.num_return_sequences = o.num_return_sequences;
  else if (g.num_return_sequences > g.num_beams) g.num_return_sequences = 1;  // the file's, for beams no longer run
  g.validate();
  return g;
}

void run_generate(GenerateArgs& a, const CLI::App& cmd) {
  auto model = a.model.load();
  auto peft = a.adapters.apply(model);
  a.gen = generation_settings(*model, a, cmd);
  if (a.prompts.empty() && a.chats.empty()) {
    if (a.ids.empty()) throw std::invalid_argument("give --ids, --prompt or --chat");
    const auto prompts = read_id_lists(a.ids);
    TaskIdsScope tasks = task_scope(a.task_id, prompts.size(), a.gen);
    auto rows = generate(*model, prompts, a.gen);
    std::cout << nlohmann::json(rows).dump() << "\n";
    return;
  }
  // Text in, text out: the model folder's tokenizer unless --tokenizer names another.
  auto tok = Tokenizer::from_file(a.tokenizer.empty() ? a.model.dir : a.tokenizer);
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& p : a.prompts) prompts.push_back(tok.encode(p).ids);
  // A chat message goes through the model's chat template, as a user turn with the
  // assistant's turn opened; the template carries its own special tokens.
  for (const auto& c : a.chats) {
    nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
    if (!a.system.empty()) msgs.push_back({{"role", "system"}, {"content", a.system}});
    msgs.push_back({{"role", "user"}, {"content", c}});
    a.prompts.push_back(c);
    prompts.push_back(tok.encode(tok.apply_chat_template(msgs, true), false).ids);
  }
  TaskIdsScope tasks = task_scope(a.task_id, prompts.size(), a.gen);
  auto rows = generate(*model, prompts, a.gen);
  const size_t per = static_cast<size_t>(a.gen.num_return_sequences);  // each prompt's answers, together
  for (size_t i = 0; i < rows.size(); ++i) {
    const size_t p = i / per;
    std::vector<int64_t> completion(rows[i].begin() + static_cast<long>(prompts[p].size()), rows[i].end());
    std::cout << nlohmann::json{{"prompt", a.prompts[p]}, {"completion", tok.decode(completion, true)}}.dump(
                     -1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate",
                                 "Continue prompts: token ids (--ids; prints a JSON list of id lists, prompt then new "
                                 "tokens), text (--prompt, with the model's tokenizer) or chat messages (--chat, "
                                 "through the model's chat template).\n"
                                 "Decoding follows the model's generation_config.json (beams, repetition penalty, "
                                 "n-gram and length rules, banned, biased and forced tokens) as transformers' "
                                 "generate() does, except that it samples only when asked (--do-sample, with the model's "
                                 "temperature, top_k, top_p and min_p); the options below override it.\n"
                                 "Example: peft generate SmolLM2-135M-Instruct.Q4_1.gguf --chat 'What is the capital "
                                 "of France?'\n"
                                 "Example: peft generate bart-large-cnn --prompt \"$(cat article.txt)\" --num-beams 4 "
                                 "--no-repeat-ngram-size 3");
  auto a = std::make_shared<GenerateArgs>();
  a->model.add_to(cmd);
  a->adapters.add_to(cmd);
  cmd->add_option("--ids", a->ids, "JSON list of token-id lists (the prompts)")->check(CLI::ExistingFile);
  cmd->add_option("--prompt", a->prompts, "Prompt text (repeatable); prints JSON lines {prompt, completion}");
  cmd->add_option("--chat", a->chats,
                  "A user message, sent through the model's chat template (repeatable); prints JSON lines "
                  "{prompt, completion}");
  cmd->add_option("--system", a->system, "With --chat: a system message first");
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer folder or tokenizer.json (default: the model folder)");
  cmd->add_option("--max-new-tokens", a->gen.max_new_tokens,
                  "Tokens to generate per prompt (default: the model's generation_config.json, else 32)");
  cmd->add_flag("--do-sample", a->gen.do_sample,
                "Sample (default: greedy) with the model's temperature, top_k, top_p and min_p from "
                "generation_config.json, else transformers' defaults (top_k 50), as generate(do_sample=True)");
  cmd->add_option("--temperature", a->gen.temperature, "Sample with this temperature");
  cmd->add_option("--top-k", a->gen.top_k, "Sample among the k most likely tokens (0: off; default: the model's, else 50)");
  cmd->add_option("--top-p", a->gen.top_p,
                  "Sample from the smallest set with this much probability (1: off; default: the model's)");
  cmd->add_option("--min-p", a->gen.min_p,
                  "Sample among tokens at least this fraction as likely as the best one (0: off; default: the "
                  "model's)");
  cmd->add_option("--seed", a->gen.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_option("--eos", a->eos, "Stop tokens (default: config.json's eos_token_id)");
  cmd->add_option("--forced-bos", a->gen.forced_bos_token_id,
                  "Force the first generated token, e.g. mBART-50's target language (default: the model's "
                  "forced_bos_token_id; -1: off)");
  cmd->add_option("--forced-eos", a->forced_eos,
                  "Force the last token when --max-new-tokens is reached (default: the model's "
                  "forced_eos_token_id, which BART's configs set; -1: off)");
  cmd->add_option("--num-beams", a->gen.num_beams,
                  "Beam search with this many beams, as transformers' generate (default: the model's "
                  "generation_config.json, else 1: greedy)");
  cmd->add_option("--num-return-sequences", a->gen.num_return_sequences,
                  "Answers per prompt, each printed after its prompt: the best beams (<= --num-beams), or "
                  "independent draws when sampling (default: 1)");
  cmd->add_option("--length-penalty", a->gen.length_penalty,
                  "Beam search: a finished beam scores log-probability / length^this (> 0 favours longer ones)");
  cmd->add_option("--early-stopping", a->early_stopping,
                  "Beam search stops: 'false' when no running beam is likely to win, 'true' when num-beams "
                  "have finished, 'never' when none can win")
      ->check(CLI::IsMember({"false", "true", "never"}));
  cmd->add_option("--no-repeat-ngram-size", a->gen.no_repeat_ngram_size,
                  "Never repeat an n-gram of this size, prompt included for decoder-only models (0: off)");
  cmd->add_option("--min-new-tokens", a->gen.min_new_tokens, "No EOS before this many new tokens");
  cmd->add_option("--min-length", a->gen.min_length,
                  "No EOS while the sequence (padded prompt, or decoder start, plus new tokens) is shorter "
                  "(default: the model's min_length)");
  cmd->add_option("--repetition-penalty", a->gen.repetition_penalty,
                  "Divide the score of a token already in the sequence by this (> 1 discourages repeats; 1: off; "
                  "default: the model's repetition_penalty)");
  cmd->add_option("--suppress-tokens", a->gen.suppress_tokens,
                  "Token ids never generated (default: the model's suppress_tokens; -1: none)");
  cmd->add_option("--task-id", a->task_id,
                  "Multitask adapters (MULTITASK_PROMPT_TUNING, POLY): the task of every prompt")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-eos", a->no_eos, "Never stop early; always produce --max-new-tokens");
  cmd->callback([a, cmd] {
    for (const char* flag : {"--temperature", "--top-k", "--top-p", "--min-p"})
      if (cmd->count(flag) > 0) a->gen.do_sample = true;  // a sampling option asks to sample
    run_generate(*a, *cmd);
  });
}

}  // namespace peft::cli
