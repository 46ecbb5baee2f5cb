// CPT's loss: HF's PeftModelForCausalLM._cpt_forward and CPTEmbedding.calculate_loss.
#include <ATen/ATen.h>

#include <algorithm>
#include <set>

#include "peft/cpt.h"
#include "tuners/cpt/prompt.h"

namespace peft {

namespace {
// The model without its input adapter for one forward (the prompts are in the inputs
// already, and the loss needs the logits of their positions too).
struct InputAdapterOff {
  explicit InputAdapterOff(Model& m) : model(m), saved(m.input_adapter) { m.input_adapter = nullptr; }
  ~InputAdapterOff() { model.input_adapter = saved; }
  Model& model;
  InputAdapter* saved;
};
}  // namespace

at::Tensor cpt_loss(Model& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const at::Tensor& labels, const at::Tensor& input_type_mask, bool checkpoint_layers) {
  auto* cpt = dynamic_cast<CptPrompt*>(model.input_adapter);
  if (!cpt) return {};
  const int64_t b = input_ids.size(0), s = input_ids.size(1), n = cpt->n;
  if (!labels.defined() || labels.sizes() != input_ids.sizes())
    throw std::invalid_argument("CPT's loss needs labels [batch, seq] like input_ids");
  if (input_type_mask.defined() && input_type_mask.sizes() != input_ids.sizes())
    throw std::invalid_argument("CPT: input_type_mask has shape " + c10::str(input_type_mask.sizes()) +
                                ", input_ids " + c10::str(input_ids.sizes()));
  const auto dev = input_ids.device();
  const auto long_opts = at::TensorOptions(at::kLong).device(dev);

  ModelInputs in;
  in.input_ids = input_ids;
  if (attention_mask.defined()) in.attention_mask = attention_mask;
  in.checkpoint_layers = checkpoint_layers;
  cpt->prepare(model, in);  // the prompts before the input embeddings, ones before the mask
  at::Tensor logits;
  {
    InputAdapterOff off(model);
    logits = model.forward(in).logits.to(at::kFloat);  // [b, n + s, vocab]
  }

  // _cpt_forward: the template's ids as its labels; the inputs' types shifted past the
  // template's; labels kept where the type is a label type.
  const auto prefix_labels = at::tensor(cpt->token_ids, at::kLong).to(dev).unsqueeze(0).expand({b, n});
  const auto prefix_types = at::tensor(cpt->types, at::kLong).to(dev).unsqueeze(0).expand({b, n});
  const int64_t template_max = *std::max_element(cpt->types.begin(), cpt->types.end());
  at::Tensor types = input_type_mask.defined() ? input_type_mask.to(long_opts) : at::full({b, s}, 4, long_opts);
  types = at::where(types > 0, types + template_max, types);
  const auto all_types = at::cat({prefix_types, types}, 1);
  const auto is_label = (all_types > 0).logical_and(at::remainder(all_types, 4) == 0);
  const auto cpt_labels = at::where(is_label, at::cat({prefix_labels, labels.to(long_opts)}, 1),
                                    at::full({}, -100, long_opts));

  // calculate_loss: the shifted cross-entropy, per row weighted by label group under decay.
  const int64_t len = n + s - 1, vocab = logits.size(-1);
  const auto shift_logits = logits.narrow(1, 0, len).reshape({-1, vocab});
  const auto shift_labels = cpt_labels.narrow(1, 1, len);
  const auto shift_types = all_types.narrow(1, 1, len);
  const auto ce = at::cross_entropy_loss(shift_logits, shift_labels.reshape({-1}), {}, at::Reduction::None, -100)
                      .view({b, len});
  const auto valid = shift_labels != -100;
  auto weights = valid.to(at::kFloat);
  if (cpt->loss_type == "decay") {
    const auto t = shift_types.to(at::kCPU).contiguous();
    auto decay = at::ones({b, len}, at::kFloat);
    const int64_t* tp = t.data_ptr<int64_t>();
    float* dp = decay.data_ptr<float>();
    for (int64_t i = 0; i < b; ++i) {
      std::set<int64_t> groups;  // the row's label types
      for (int64_t k = 0; k < len; ++k)
        if (tp[i * len + k] > 0 && tp[i * len + k] % 4 == 0) groups.insert(tp[i * len + k]);
      double value = 1;  // the last group 1, each earlier one decay_factor times the next
      for (auto g = groups.rbegin(); g != groups.rend(); ++g) {
        for (int64_t k = 0; k < len; ++k)
          if (tp[i * len + k] == *g) dp[i * len + k] = static_cast<float>(value);
        value *= cpt->decay_factor;
      }
    }
    weights = weights * decay.to(dev);
  }
  return (ce.masked_select(valid) * weights.masked_select(valid)).mean();
}

}  // namespace peft
