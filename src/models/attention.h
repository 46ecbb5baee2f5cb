// Attention shared by all architectures: masks, rotary embeddings, the core product.
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>

#include "peft/model.h"
#include <optional>

namespace peft {

// Boolean mask [batch, 1, q_len, kv_len], true = may attend. `padding` is the
// attention_mask [batch, kv_len] (undefined = all real). Rows with no visible key
// (queries on left padding) are opened fully so they yield finite values; their
// outputs are padding and never read.
at::Tensor make_attention_mask(const at::Tensor& padding, int64_t batch, int64_t q_len, int64_t kv_len,
                               bool causal, at::Device device);

// softmax(q k^T * scale + mask) v with q [b, h, q, d], k/v [b, kv_h, k, d]; kv heads are
// repeated for grouped-query attention. Returns [b, q, h * d]. An undefined mask with
// is_causal = true is plain causal attention, the queries being the last positions (ATen's
// fused kernels, no mask built).
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                  double scale, bool is_causal = false);

// attend's eager form, as transformers' eager_attention_forward: scores in the input dtype,
// optionally soft-capped (softcap * tanh(scores / softcap), Gemma 2), the mask added as
// -inf, softmax in float32. SDPA cannot cap scores. An undefined mask is plain causal.
at::Tensor attend_eager(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                        double scale, std::optional<double> softcap);

// A decoder mask (undefined = plain causal) narrowed to a sliding window: query at
// absolute position p sees keys at p - window < position <= p (transformers'
// sliding_window_overlay). Rows left with no visible key are opened, as
// make_attention_mask does.
at::Tensor sliding_window_mask(const at::Tensor& mask, int64_t batch, int64_t q_len, int64_t past, int64_t window,
                               at::Device device);

// The mask a decoder needs, or undefined when plain causal attention will do (no padding,
// and no past or one new position): then pass is_causal = true to attend.
at::Tensor decoder_mask(const at::Tensor& padding, int64_t batch, int64_t q_len, int64_t past, at::Device device);

// transformers' find_packed_sequence_indices: for position ids [b, s], the index of the
// sequence each token belongs to, a new one starting wherever a position does not follow
// the previous one by 1; undefined when every row holds one sequence.
at::Tensor packed_sequence_ids(const at::Tensor& position_ids);
// Causal attention within each packed sequence: [b, 1, s, s], true = may attend.
at::Tensor packed_causal_mask(const at::Tensor& sequence_ids);

// An attention module whose output can be extended from outside the model: while
// `extension` is set, the module adds extension->extra_output(hidden, q) (when defined)
// to its output, `hidden` being the module's input [b, s, hidden] and `q` its queries as
// they enter the product [b, heads, s, head_dim] (after the rotary embedding).
class AttentionExtension {
 public:
  virtual ~AttentionExtension() = default;
  virtual at::Tensor extra_output(const at::Tensor& hidden, const at::Tensor& q) = 0;
};

class ExtensibleAttention : public Module {
 public:
  AttentionExtension* extension = nullptr;  // not owned; whoever sets it clears it

 protected:
  // `out` plus the extension's extra output, if any.
  at::Tensor extended(const at::Tensor& out, const at::Tensor& hidden, const at::Tensor& q) const;
};

// transformers' rotate_every_two (GPT-J, Cohere's interleaved rotary): pairs of neighbouring
// features rotate together, (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...).
at::Tensor rotate_every_two(const at::Tensor& x);

// torch.finfo(dtype).min: what transformers' eager masks put on (or add to) a hidden key's
// score; finite, so a row with no visible key stays finite.
double dtype_lowest(at::ScalarType dtype);

// [b, s, h*d] -> [b, h, s, d]
at::Tensor split_heads(const at::Tensor& x, int64_t heads, int64_t head_dim);

// What a decoder forward needs before its layers: the cache sized to its layers, the
// number of cached positions, position ids (given, or counted from the cache), the mask.
struct DecoderStep {
  int64_t past;
  at::Tensor positions, mask;
  // `mask` narrowed to sliding_window_mask's `window`: built on first use, then shared by
  // every sliding layer of the step.
  const at::Tensor& window_mask(const ModelInputs& in, int64_t window, at::Device device);

 private:
  at::Tensor window_mask_;
};
DecoderStep begin_decoder_step(const ModelInputs& in, size_t num_layers, at::Device device);

// With a cache, prepends the layer's cached keys/values to k/v and stores the result.
void update_cache(KVCache* cache, size_t layer, at::Tensor& k, at::Tensor& v);

// Rotary embedding: inverse frequencies computed once per rope type, cos/sin per call.
class RotaryEmbedding {
 public:
  // rope: transformers' rope_parameters (rope_type, rope_theta, factor, ...). A
  // partial_rotary_factor < 1 (GPT-NeoX) rotates only the first dims of each head and is
  // refused unless the model's attention applies it that way (`partial_ok`).
  RotaryEmbedding(const nlohmann::json& rope, int64_t head_dim, int64_t max_positions, bool partial_ok = false);
  // cos and sin [b, 1, s, d] for position_ids [b, s]; computed once per forward, shared
  // by every layer.
  struct Angles {
    at::Tensor cos, sin;
  };
  Angles angles(const at::Tensor& position_ids, at::ScalarType dtype, at::Device device) const;
  // Rotates q, k [b, h, s, d]; with partial rotary the angles cover the first dims only
  // and the rest pass through, as transformers' apply_rotary_pos_emb does.
  static void apply(at::Tensor& q, at::Tensor& k, const Angles& a);

 private:
  at::Tensor inv_freq_;  // [d/2] float32
  double attention_scaling_ = 1.0;
};

}  // namespace peft
