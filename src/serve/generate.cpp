#include "peft/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "generate_rows.h"
#include "peft/seq2seq.h"
#include "util/mask_positions.h"

namespace peft {

namespace {

// Filters logits [b, vocab] in transformers' order: temperature, top-k, top-p.
at::Tensor warp(at::Tensor logits, const GenerationConfig& cfg) {
  if (cfg.temperature <= 0) throw std::invalid_argument("temperature must be > 0 when sampling");
  logits = logits / cfg.temperature;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (cfg.top_k > 0 && cfg.top_k < logits.size(-1)) {
    auto kth = std::get<0>(logits.topk(cfg.top_k, -1)).narrow(-1, cfg.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (cfg.top_p < 1.0) {
    auto [sorted, idx] = logits.sort(-1, /*descending=*/false);
    auto cum = sorted.softmax(-1).cumsum(-1);
    auto remove = cum <= (1.0 - cfg.top_p);
    remove.select(-1, remove.size(-1) - 1).fill_(false);  // keep at least the best token
    logits = logits.masked_fill(remove.scatter(-1, idx, remove), neg_inf);
  }
  return logits;
}

}  // namespace

GeneratedRows::GeneratedRows(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg)
    : cfg_(cfg), out_(prompts), done_(prompts.size(), false) {
  for (const auto& p : prompts) {
    if (p.empty()) throw std::invalid_argument("generate: empty prompt");
    longest_prompt_ = std::max<int64_t>(longest_prompt_, static_cast<int64_t>(p.size()));
  }
}

bool GeneratedRows::append(at::Tensor& next) {
  auto acc = next.accessor<int64_t, 1>();
  bool all_done = true;
  for (int64_t i = 0; i < rows(); ++i) {
    if (done_[i]) {
      acc[i] = cfg_.pad_token_id;
      continue;
    }
    out_[i].push_back(acc[i]);
    for (auto e : cfg_.eos_token_ids)
      if (acc[i] == e) done_[i] = true;
    all_done = all_done && done_[i];
  }
  return all_done;
}

at::Tensor next_tokens(const at::Tensor& logits, const GenerationConfig& cfg, at::Generator& gen) {
  if (!cfg.do_sample) return logits.argmax(-1).cpu();
  auto probs = warp(logits, cfg).softmax(-1).cpu();
  return at::multinomial(probs, 1, false, gen).squeeze(-1);
}

void GenerationConfig::validate() const {
  auto bad = [](const std::string& m) { throw std::invalid_argument(m); };
  if (max_new_tokens < 0 || max_new_tokens > (int64_t{1} << 24))
    bad("max_new_tokens must be between 0 and 16777216, got " + std::to_string(max_new_tokens));
  if (!(temperature > 0) || !std::isfinite(temperature)) bad("temperature must be a finite number > 0");
  if (top_k < 0) bad("top_k must be >= 0 (0: off), got " + std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1)) bad("top_p must be in (0, 1] (1: off)");
  for (int64_t id : eos_token_ids)
    if (id < 0) bad("eos token ids must be >= 0, got " + std::to_string(id));
  if (pad_token_id < 0) bad("pad_token_id must be >= 0");
  if (forced_bos_token_id < -1) bad("forced_bos_token_id must be a token id or -1 (off)");
}

std::vector<std::vector<int64_t>> generate(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerationConfig& cfg) {
  if (as_seq2seq(model)) return generate_seq2seq(model, prompts, cfg);  // T5: encoder input, decoder output
  if (model.task() != TaskKind::kCausalLM)
    throw std::invalid_argument(model.type_name() + " is not a causal LM; it cannot generate");
  if (prompts.empty()) return {};
  cfg.validate();
  c10::InferenceMode guard;
  GeneratedRows rows(prompts, cfg);
  const int64_t b = rows.rows(), len = rows.longest_prompt();
  at::Device device = model.device();
  auto ids = at::full({b, len}, cfg.pad_token_id, at::kLong);
  auto mask = at::zeros({b, len}, at::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t n = static_cast<int64_t>(prompts[i].size());
    ids[i].narrow(0, len - n, n).copy_(at::tensor(prompts[i], at::kLong));
    mask[i].narrow(0, len - n, n).fill_(1);
  }
  ids = ids.to(device);
  mask = mask.to(device);
  auto pos = positions_from_mask(mask);

  auto gen = at::detail::createCPUGenerator(cfg.seed);
  KVCache cache;
  ModelInputs in;
  in.input_ids = ids;
  in.attention_mask = mask;
  in.position_ids = pos;
  in.cache = &cache;
  for (int64_t step = 0; step < cfg.max_new_tokens; ++step) {
    auto logits = model.forward(in).logits.select(1, -1).to(at::kFloat);
    at::Tensor next = next_tokens(logits, cfg, gen);
    if (rows.append(next)) break;
    in.input_ids = next.to(device).unsqueeze(1);
    mask = at::cat({mask, at::ones({b, 1}, mask.options())}, 1);
    in.attention_mask = mask;
    in.position_ids = in.position_ids.select(1, -1).unsqueeze(1) + 1;
  }
  return rows.take();
}

}  // namespace peft
