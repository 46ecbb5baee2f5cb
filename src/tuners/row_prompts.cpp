// Soft prompts in mixed-adapter batches: each row's virtual tokens placed in its own
// inputs, so prompt-tuned rows share a forward with other adapters' rows (serving).
#include <ATen/ATen.h>

#include <optional>
#include <stdexcept>

#include "peft/layers.h"
#include "peft/peft_model.h"

namespace peft {

at::Tensor PeftModel::row_prompts(const std::string& name) const {
  InputAdapter* in = input_adapter(name);
  return in ? in->row_prompts() : at::Tensor();
}

namespace {

// Every row 0...0 1...1: padding on the left only.
bool left_padded(const at::Tensor& mask) {
  if (mask.size(1) < 2) return true;
  const at::Tensor m = mask.ne(0);
  return m.narrow(1, 1, m.size(1) - 1).ge(m.narrow(1, 0, m.size(1) - 1)).all().item<bool>();
}

}  // namespace

ModelInputs PeftModel::with_row_prompts(const ModelInputs& in, const MixedBatch& m) {
  const int64_t b = in.batch_size();
  if (m.batch() != b)
    throw std::invalid_argument("with_row_prompts: " + std::to_string(m.batch()) + " adapter names for " +
                                std::to_string(b) + " rows");
  std::vector<at::Tensor> prompts(b);
  int64_t extra = 0;
  for (const auto& g : m.groups()) {
    at::Tensor p = row_prompts(g.adapter);
    if (!p.defined()) continue;
    const at::Tensor rows = g.rows.cpu();
    for (int64_t i = 0; i < g.count; ++i) prompts[rows[i].item<int64_t>()] = p;
    extra = std::max(extra, p.size(0));
  }
  if (extra == 0) return in;
  if (!in.input_ids.defined() || !in.attention_mask.defined() || in.input_ids.dim() != 2 ||
      in.token_type_ids.defined())
    throw std::invalid_argument("with_row_prompts: input_ids [batch, seq] and an attention_mask (no token types) "
                                "are required");
  if (in.cache && in.cache->length() > 0)
    throw std::invalid_argument("with_row_prompts: the cache is not empty (virtual tokens go in the first forward)");
  if (!left_padded(in.attention_mask))
    throw std::invalid_argument("with_row_prompts: the attention mask must pad on the left (0...0 1...1 per row)");
  Embedding* emb = model_->input_embeddings();
  if (!emb) throw std::invalid_argument(model_->type_name() + " has no token embedding to put soft prompts beside");
  at::Tensor embeds;
  {
    // Token embeddings as forward_mixed computes them: each row's adapters, no active copy.
    std::optional<Disabled> off;
    if (active_swaps_in()) off.emplace(this);
    MixedBatch::Scope scope(&m);
    embeds = emb->forward(in.input_ids);
  }
  const int64_t len = in.input_ids.size(1);
  at::Tensor wide = at::zeros({b, extra + len, embeds.size(2)}, embeds.options());
  wide.narrow(1, extra, len).copy_(embeds);
  at::Tensor mask = at::cat({at::zeros({b, extra}, in.attention_mask.options()), in.attention_mask}, 1);
  const at::Tensor tokens = in.attention_mask.ne(0).sum(1).cpu();
  for (int64_t i = 0; i < b; ++i) {
    if (!prompts[i].defined()) continue;
    const int64_t n = prompts[i].size(0), start = extra + len - tokens[i].item<int64_t>() - n;
    wide[i].narrow(0, start, n).copy_(prompts[i]);
    mask[i].narrow(0, start, n).fill_(1);
  }
  ModelInputs out = in;
  out.input_ids = at::Tensor();
  out.inputs_embeds = wide;
  out.attention_mask = mask;
  out.position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1);
  return out;
}

}  // namespace peft
