// peft generate MODEL_DIR --ids IDS.json: continue token-id prompts.
#include <ATen/ops/full.h>

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
  std::vector<int64_t> eos;
  bool no_eos = false;
  int64_t task_id = -1;  // multitask adapters: every prompt's task
};

// Multitask adapters (MPT, Poly) route each row by its task: --task-id for every prompt.
TaskIdsScope task_scope(int64_t task_id, size_t prompts) {
  if (task_id < 0) return TaskIdsScope(at::Tensor());
  return TaskIdsScope(at::full({static_cast<int64_t>(prompts)}, task_id, at::kLong));
}

void run_generate(GenerateArgs& a) {
  auto model = a.model.load();
  auto peft = a.adapters.apply(model);
  if (!a.eos.empty()) {
    a.gen.eos_token_ids = a.eos;
  } else if (!a.no_eos) {
    // config.json's eos_token_id (an id or a list), as transformers uses by default.
    const auto& c = model->config();
    const std::string where = a.model.dir + "/config.json: 'eos_token_id'";
    if (c.contains("eos_token_id") && c["eos_token_id"].is_array())
      for (const auto& v : c["eos_token_id"]) a.gen.eos_token_ids.push_back(strict_get<int64_t>(v, where));
    else if (c.contains("eos_token_id") && !c["eos_token_id"].is_null())
      a.gen.eos_token_ids = {strict_get<int64_t>(c["eos_token_id"], where)};
  }
  // An encoder-decoder config's forced_bos_token_id (mBART-50's target language), as
  // transformers' generate() applies it, unless --forced-bos says otherwise.
  if (a.gen.forced_bos_token_id < 0 && as_seq2seq(*model)) {
    const auto& c = model->config();
    if (c.contains("forced_bos_token_id") && !c["forced_bos_token_id"].is_null())
      a.gen.forced_bos_token_id =
          strict_get<int64_t>(c["forced_bos_token_id"], a.model.dir + "/config.json: 'forced_bos_token_id'");
  }
  if (a.prompts.empty() && a.chats.empty()) {
    if (a.ids.empty()) throw std::invalid_argument("give --ids, --prompt or --chat");
    const auto prompts = read_id_lists(a.ids);
    TaskIdsScope tasks = task_scope(a.task_id, prompts.size());
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
  TaskIdsScope tasks = task_scope(a.task_id, prompts.size());
  auto rows = generate(*model, prompts, a.gen);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<int64_t> completion(rows[i].begin() + static_cast<long>(prompts[i].size()), rows[i].end());
    std::cout << nlohmann::json{{"prompt", a.prompts[i]}, {"completion", tok.decode(completion, true)}}.dump(
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
                                 "Example: peft generate SmolLM2-135M-Instruct.Q4_1.gguf --chat 'What is the capital "
                                 "of France?'");
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
  cmd->add_option("--max-new-tokens", a->gen.max_new_tokens, "Tokens to generate per prompt")->capture_default_str();
  auto* t = cmd->add_option("--temperature", a->gen.temperature, "Sample with this temperature (default: greedy)");
  cmd->add_option("--top-k", a->gen.top_k, "Sample among the k most likely tokens (0: off)")->capture_default_str();
  cmd->add_option("--top-p", a->gen.top_p, "Sample from the smallest set with this much probability (1: off)")
      ->capture_default_str();
  cmd->add_option("--seed", a->gen.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_option("--eos", a->eos, "Stop tokens (default: config.json's eos_token_id)");
  cmd->add_option("--forced-bos", a->gen.forced_bos_token_id,
                  "Encoder-decoder models: force the first generated token, e.g. mBART-50's target language "
                  "(default: config.json's forced_bos_token_id)");
  cmd->add_option("--task-id", a->task_id,
                  "Multitask adapters (MULTITASK_PROMPT_TUNING, POLY): the task of every prompt")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-eos", a->no_eos, "Never stop early; always produce --max-new-tokens");
  cmd->callback([a, t, cmd] {
    a->gen.do_sample = t->count() > 0 || cmd->count("--top-k") > 0 || cmd->count("--top-p") > 0;
    run_generate(*a);
  });
}

}  // namespace peft::cli
