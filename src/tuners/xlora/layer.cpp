// X-LoRA's computation: the experts of one layer scaled per token (HF's XLoraLinearLayer),
// and the classifier with the scaling pass in front of each forward (XLoraClassifier and
// XLoraModel._enable_peft_forward_hooks).
#include <ATen/ATen.h>

#include <c10/core/GradMode.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

#include "peft/xlora.h"
#include "tuners/xlora/keys.h"

namespace peft {

XLoraLayer::XLoraLayer(AdaptableLayer* host, const XLoraConfig& cfg, std::shared_ptr<XLoraState> state,
                       int64_t number, std::vector<Expert> fs)
    : LayerAdapter(host),
      experts(std::move(fs)),
      layer_number(number),
      state_(std::move(state)),
      column_expert_(cfg.column_experts()),
      top_k_(cfg.top_k_lora),
      softmax_topk_(cfg.enable_softmax_topk),
      global_weight_(cfg.global_scaling_weight),
      trainable_experts_(cfg.use_trainable_adapters) {
  // Registered, so that they count among the model's parameters (as HF's lora_A / lora_B
  // do) and train with use_trainable_adapters; XLoraConfig::to_file_tensors keeps them out
  // of the adapter file and loading fills them from the experts' folders.
  for (size_t i = 0; i < experts.size(); ++i) {
    auto& e = experts[i];
    if (!e.A.defined()) continue;
    register_parameter(xlora::expert_slot_name("lora_A", static_cast<int64_t>(i)), &e.A, e.A.sizes().vec());
    register_parameter(xlora::expert_slot_name("lora_B", static_cast<int64_t>(i)), &e.B, e.B.sizes().vec());
  }
}

at::Tensor XLoraLayer::layer_scalings(const at::Tensor& scalings) const {
  auto s = scalings.select(2, layer_number);  // [b, s, n_classes]
  if (top_k_) {
    const auto idx = std::get<1>(at::topk(s, *top_k_, -1));
    const auto mask = at::zeros_like(s, s.options().dtype(at::kBool)).scatter(-1, idx, true);
    s = s * mask.to(s.scalar_type());
  }
  if (softmax_topk_) {
    const auto nonzero = s != 0;
    const auto full = s.masked_fill(nonzero.logical_not(), -std::numeric_limits<double>::infinity());
    s = at::softmax(full, -1).masked_fill(nonzero.logical_not(), 0.0);
  }
  return s;
}

at::Tensor XLoraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  at::Tensor s;
  if (state_->scalings.defined()) {
    s = layer_scalings(state_->scalings);
    // The layer sees the tokens as the model does ([b, s, in]); a flattened input
    // ([b * s, in]) takes them in the same order.
    const int64_t classes = s.size(-1);
    auto lead = x.sizes().vec();
    lead.back() = classes;
    int64_t tokens = 1;
    for (size_t d = 0; d + 1 < lead.size(); ++d) tokens *= lead[d];
    if (s.numel() != tokens * classes)
      throw std::logic_error("XLORA: scalings " + c10::str(state_->scalings.sizes()) + " do not fit the input " +
                             c10::str(x.sizes()) + " of layer " + std::to_string(layer_number));
    s = s.reshape(lead);
  }
  at::Tensor result = out;
  for (size_t n = 0; n < column_expert_.size(); ++n) {
    const int64_t j = column_expert_[n];
    if (j < 0 || !experts[j].A.defined()) continue;
    const auto& e = experts[j];
    auto xe = x.to(e.A.scalar_type());
    double weight = 1.0;
    if (s.defined()) {
      xe = xe * s.select(-1, static_cast<int64_t>(n)).unsqueeze(-1).to(xe.scalar_type());
      weight = global_weight_;
    }
    if (e.dropout > 0 && training) xe = at::dropout(xe, e.dropout, true);
    const auto delta = at::matmul(at::matmul(xe, e.A.t()), e.B.t()) * e.scaling * weight;
    result = result + delta.to(result.scalar_type());
  }
  return result;
}

void XLoraLayer::merge() {
  throw std::logic_error("XLORA adapters cannot be merged: the mixture of LoRA adapters depends on each token");
}

std::vector<at::Tensor*> XLoraLayer::trainable_slots() {
  std::vector<at::Tensor*> out;
  if (trainable_experts_)
    for (auto& e : experts)
      if (e.A.defined()) {
        out.push_back(&e.A);
        out.push_back(&e.B);
      }
  return out;
}

// --- the classifier ---------------------------------------------------------------------

XLoraClassifier::XLoraClassifier(const XLoraConfig& cfg, std::shared_ptr<XLoraState> state)
    : state_(std::move(state)),
      n_classes_(cfg.n_classes()),
      n_layers_(state_->n_layers),
      layerwise_(cfg.layerwise_scalings),
      softmax_(cfg.enable_softmax),
      temperature_(cfg.softmax_temperature),
      dropout_p_(cfg.xlora_dropout_p),
      pass_value_(cfg.scaling_pass_value) {
  // HF's nn.Sequential: Linear, ReLU[, Dropout] per hidden layer, then the last Linear.
  const int64_t out = layerwise_ ? n_classes_ * n_layers_ : n_classes_;
  const int64_t step = dropout_p_ > 0 ? 3 : 2;
  std::vector<std::pair<int64_t, int64_t>> shapes;  // (out, in)
  if (cfg.xlora_depth == 1) {
    shapes.emplace_back(out, cfg.hidden_size);
  } else {
    shapes.emplace_back(cfg.xlora_size, cfg.hidden_size);
    for (int64_t i = 0; i < cfg.xlora_depth - 2; ++i) shapes.emplace_back(cfg.xlora_size, cfg.xlora_size);
    shapes.emplace_back(out, cfg.xlora_size);
  }
  layers.resize(shapes.size());  // no reallocation after the slots point into it
  for (size_t i = 0; i < shapes.size(); ++i) {
    auto& d = layers[i];
    d.index = static_cast<int64_t>(i) * step;
    const auto [o, in] = shapes[i];
    d.weight = at::zeros({o, in}, at::kFloat);
    d.bias = at::zeros({o}, at::kFloat);
    const std::string key = xlora::kClassifierPrefix + std::to_string(d.index);
    register_parameter(key + ".weight", &d.weight, {o, in});
    register_parameter(key + ".bias", &d.bias, {o});
  }
}

void XLoraClassifier::initialize(at::Generator& gen) {
  c10::NoGradGuard g;
  for (auto& d : layers) {
    // kaiming_uniform_(a=√5): bound √(6 / ((1 + 5) fan_in)) = 1/√fan_in; the bias the same.
    const double bound = 1.0 / std::sqrt(static_cast<double>(d.weight.size(1)));
    d.weight = (at::rand(d.weight.sizes(), gen, at::TensorOptions(at::kFloat)) * 2 - 1) * bound;
    d.bias = (at::rand(d.bias.sizes(), gen, at::TensorOptions(at::kFloat)) * 2 - 1) * bound;
  }
}

at::Tensor XLoraClassifier::classify(const at::Tensor& hidden) const {
  const int64_t b = hidden.size(0), s = hidden.size(1);
  at::Tensor h = hidden.to(layers.front().weight.scalar_type());
  for (size_t i = 0; i < layers.size(); ++i) {
    h = at::linear(h, layers[i].weight, layers[i].bias);
    if (i + 1 < layers.size()) {
      h = at::relu(h);
      if (dropout_p_ > 0) h = at::dropout(h, dropout_p_, training);
    }
  }
  if (!layerwise_) h = h.unsqueeze(2).expand({-1, -1, n_layers_, -1});
  auto scalings = h.reshape({b, s, n_layers_, n_classes_});
  if (softmax_) scalings = at::softmax(scalings / temperature_, -1);
  return scalings;
}

namespace {
// Takes the model's input adapter out for the scaling pass and puts it back.
struct Uninstalled {
  explicit Uninstalled(Model& m) : m_(m), saved_(m.input_adapter) { m.input_adapter = nullptr; }
  ~Uninstalled() { m_.input_adapter = saved_; }
  Model& m_;
  InputAdapter* saved_;
};
}  // namespace

int64_t XLoraClassifier::prepare(Model& model, ModelInputs& in) {
  const int64_t b = in.batch_size(), s = in.seq_len();
  at::Tensor hidden;
  {
    // The scaling pass: every layer's experts scaled by scaling_pass_value, no gradients.
    c10::NoGradGuard g;
    const auto dtype = layers.front().weight.scalar_type();
    state_->scalings = at::full({b, s, n_layers_, n_classes_}, pass_value_,
                                at::TensorOptions(dtype).device(layers.front().weight.device()));
    ModelInputs pass = in;
    pass.skip_logits = true;  // only the last hidden state is read
    pass.checkpoint_layers = false;
    // HF's X-LoRA requires use_cache=False and reruns both passes over the whole sequence
    // at each step. The model is causal and the classifier acts per position, so a decode
    // that keeps the scaling pass's keys/values beside the model's computes the same.
    if (in.cache) pass.cache = scaling_cache_.follow(in.cache, "XLORA: the scaling pass");
    Uninstalled off(model);
    try {
      hidden = model.forward(pass).last_hidden_state;
    } catch (...) {
      state_->scalings = at::Tensor();
      throw;
    }
  }
  if (!hidden.defined() || hidden.dim() != 3)
    throw std::logic_error("XLORA: " + model.type_name() + " gave no [batch, seq, hidden] last hidden state");
  state_->scalings = classify(hidden);
  state_->latest = state_->scalings;
  return 0;
}

}  // namespace peft
