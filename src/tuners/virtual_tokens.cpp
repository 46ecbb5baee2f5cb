// Soft prompts and prefixes in mixed-adapter batches: each row's virtual tokens placed in
// its own inputs and cache, so their rows share a forward with other adapters' (serving).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <optional>
#include <stdexcept>

#include "peft/layers.h"
#include "peft/peft_model.h"
#include "util/mask_positions.h"

namespace peft {

at::Tensor PeftModel::row_prompts(const std::string& name) const {
  InputAdapter* in = input_adapter(name);
  return in ? in->row_prompts() : at::Tensor();
}

at::Tensor PeftModel::row_prefix(const std::string& name) const {
  InputAdapter* in = input_adapter(name);
  return in ? in->row_prefix() : at::Tensor();
}

int64_t PeftModel::virtual_tokens(const std::string& name) const {
  InputAdapter* in = input_adapter(name);
  if (!in) return 0;
  c10::NoGradGuard no_grad;  // only counted
  const at::Tensor p = in->row_prompts(), kv = in->row_prefix();
  return (p.defined() ? p.size(0) : 0) + (kv.defined() ? kv.size(3) : 0);
}

namespace {

// Every row 0...0 1...1: padding on the left only.
bool left_padded(const at::Tensor& mask) {
  if (mask.size(1) < 2) return true;
  const at::Tensor m = mask.ne(0);
  return m.narrow(1, 1, m.size(1) - 1).ge(m.narrow(1, 0, m.size(1) - 1)).all().item<bool>();
}

// What each row of a mixed batch gets: soft prompt rows, prefix keys and values.
struct RowVirtualTokens {
  std::vector<at::Tensor> prompts, prefixes;
  int64_t longest_prompt = 0, longest_prefix = 0;
};

void check_first_forward(const ModelInputs& in, bool prefixes) {
  if (!in.input_ids.defined() || !in.attention_mask.defined() || in.input_ids.dim() != 2 ||
      in.token_type_ids.defined())
    throw std::invalid_argument("with_virtual_tokens: input_ids [batch, seq] and an attention_mask (no token types) "
                                "are required");
  if (prefixes && !in.cache) throw std::invalid_argument("with_virtual_tokens: prefixes need a KV cache to fill");
  if (in.cache && in.cache->length() > 0)
    throw std::invalid_argument("with_virtual_tokens: the cache is not empty (virtual tokens go in the first forward)");
  if (!left_padded(in.attention_mask))
    throw std::invalid_argument("with_virtual_tokens: the attention mask must pad on the left (0...0 1...1 per row)");
}

// Soft prompts between each row's padding and its tokens; returns the widened mask.
at::Tensor place_prompts(const RowVirtualTokens& v, const at::Tensor& embeds, const at::Tensor& mask,
                         ModelInputs& out) {
  const int64_t b = embeds.size(0), len = embeds.size(1), extra = v.longest_prompt;
  at::Tensor wide = at::zeros({b, extra + len, embeds.size(2)}, embeds.options());
  wide.narrow(1, extra, len).copy_(embeds);
  at::Tensor m = at::cat({at::zeros({b, extra}, mask.options()), mask}, 1);
  const at::Tensor tokens = mask.ne(0).sum(1).cpu();
  for (int64_t i = 0; i < b; ++i) {
    if (!v.prompts[i].defined()) continue;
    const int64_t n = v.prompts[i].size(0), start = extra + len - tokens[i].item<int64_t>() - n;
    wide[i].narrow(0, start, n).copy_(v.prompts[i]);
    m[i].narrow(0, start, n).fill_(1);
  }
  out.input_ids = at::Tensor();
  out.inputs_embeds = wide;
  return m;
}

// Prefix keys and values in the cache, right-aligned; returns the mask with their columns.
at::Tensor place_prefixes(const RowVirtualTokens& v, const at::Tensor& mask, at::TensorOptions opts, KVCache& cache) {
  const int64_t b = mask.size(0), p = v.longest_prefix;
  at::Tensor shape;
  for (const auto& kv : v.prefixes)
    if (kv.defined()) shape = kv;
  const int64_t layers = shape.size(0), heads = shape.size(2), head_dim = shape.size(4);
  at::Tensor kv = at::zeros({layers, 2, b, heads, p, head_dim}, opts);
  at::Tensor pm = at::zeros({b, p}, mask.options());
  for (int64_t i = 0; i < b; ++i) {
    if (!v.prefixes[i].defined()) continue;
    const int64_t n = v.prefixes[i].size(3);
    kv.select(2, i).narrow(3, p - n, n).copy_(v.prefixes[i]);
    pm[i].narrow(0, p - n, n).fill_(1);
  }
  cache.keys.resize(layers);
  cache.values.resize(layers);
  for (int64_t l = 0; l < layers; ++l) {
    cache.keys[l] = kv[l][0];
    cache.values[l] = kv[l][1];
  }
  return at::cat({pm, mask}, 1);
}

}  // namespace

ModelInputs PeftModel::with_virtual_tokens(const ModelInputs& in, const MixedBatch& m) {
  const int64_t b = in.batch_size();
  if (m.batch() != b)
    throw std::invalid_argument("with_virtual_tokens: " + std::to_string(m.batch()) + " adapter names for " +
                                std::to_string(b) + " rows");
  RowVirtualTokens v{std::vector<at::Tensor>(b), std::vector<at::Tensor>(b)};
  for (const auto& g : m.groups()) {
    const at::Tensor p = row_prompts(g.adapter), kv = row_prefix(g.adapter), rows = g.rows.cpu();
    for (int64_t i = 0; i < g.count; ++i) {
      v.prompts[rows[i].item<int64_t>()] = p;
      v.prefixes[rows[i].item<int64_t>()] = kv;
    }
    if (p.defined()) v.longest_prompt = std::max(v.longest_prompt, p.size(0));
    if (kv.defined()) v.longest_prefix = std::max(v.longest_prefix, kv.size(3));
  }
  if (v.longest_prompt == 0 && v.longest_prefix == 0) return in;
  check_first_forward(in, v.longest_prefix > 0);
  ModelInputs out = in;
  at::Tensor mask = in.attention_mask;
  if (v.longest_prompt > 0) {
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
    mask = place_prompts(v, embeds, mask, out);
  }
  const int64_t seq = mask.size(1);
  if (v.longest_prefix > 0) {
    const auto opts = at::TensorOptions().dtype(model_->dtype()).device(model_->device());
    mask = place_prefixes(v, mask, opts, *out.cache);
  }
  out.attention_mask = mask;
  out.position_ids = positions_from_mask(mask).narrow(1, mask.size(1) - seq, seq);
  return out;
}

}  // namespace peft
