#include "train/evaluate.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <optional>

#include "peft/clip.h"
#include "peft/cpt.h"
#include "peft/seq2seq.h"
#include "peft/task_ids.h"
#include "train/lm_loss.h"
#include "train/precision.h"
#include "train/seq2seq_data.h"
#include "train/token_data.h"
#include "train/token_metrics.h"
#include "util/autocast.h"
#include "train/setup.h"

namespace peft {

BatchLoss batch_loss(PeftModel& peft, const Batch& b, at::Device dev, bool causal, bool checkpoint_layers) {
  if (as_seq2seq(peft.model())) return {seq2seq_loss_sum(peft, b, dev, checkpoint_layers), {}};
  if (auto* clip = as_contrastive(peft.model())) {
    // CLIP's loss is the batch's (symmetric InfoNCE); times the batch size, since the
    // trainer divides by num_items. logits: logits_per_image, whose label is the row.
    ModelInputs in;
    in.input_ids = b.input_ids.to(dev);
    in.attention_mask = b.attention_mask.to(dev);
    in.pixel_values = b.pixel_values.to(dev);
    in.checkpoint_layers = checkpoint_layers;
    const auto out = clip->forward_contrastive(in);
    return {clip_loss(out.logits_per_text.to(at::kFloat)) * static_cast<double>(b.num_items),
            out.logits_per_image.to(at::kFloat)};
  }
  // CPT's own loss (HF's _cpt_forward): its mean over the kept labels, times num_items
  // because the trainer divides by them (one micro-batch per step: HF's loss exactly).
  if (causal && b.input_ids.defined() && !b.position_ids.defined())
    if (auto l = cpt_loss(peft.model(), b.input_ids.to(dev),
                          b.attention_mask.defined() ? b.attention_mask.to(dev) : at::Tensor(), b.labels.to(dev),
                          b.input_type_mask.defined() ? b.input_type_mask.to(dev) : at::Tensor(), checkpoint_layers);
        l.defined())
      return {l * static_cast<double>(std::max<int64_t>(1, b.num_items)), {}};
  ModelInputs in;
  in.checkpoint_layers = checkpoint_layers;
  if (b.pixel_values.defined()) {
    in.pixel_values = b.pixel_values.to(dev);
  } else {
    in.input_ids = b.input_ids.to(dev);
    // Packed rows are told apart by their positions; a padding mask would hide that.
    if (b.position_ids.defined()) in.position_ids = b.position_ids.to(dev);
    else in.attention_mask = b.attention_mask.to(dev);
  }
  AdaptableLayer* head = causal ? peft.model().output_layer() : nullptr;
  in.skip_logits = head != nullptr;
  ModelOutputs out = peft.forward(in);
  auto labels = b.labels.defined() ? b.labels.to(dev) : at::Tensor();  // float targets instead
  if (head) return {causal_lm_loss_sum(*head, out.last_hidden_state, labels), {}};
  auto logits = out.logits.to(at::kFloat);
  if (!causal && logits.dim() == 3)  // token classification: every labelled token, no shift
    return {at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}), {},
                                   at::Reduction::Sum, -100),
            logits};
  if (!causal && b.targets.defined()) {
    // Regression (MSE) or multi-label (binary cross-entropy with logits): transformers
    // averages over every logit, so each example's sum counts 1 / num_labels.
    const auto t = b.targets.to(dev);
    const double n = static_cast<double>(logits.size(-1));
    if (t.sizes() != logits.sizes())
      throw std::runtime_error("labels have " + std::to_string(t.size(-1)) + " values per example, the model " +
                               std::to_string(logits.size(-1)) + " outputs");
    const bool multi = problem_type_of(peft.model().config(), logits.size(-1), true) == "multi_label_classification";
    const auto sum = multi ? at::binary_cross_entropy_with_logits(logits, t, {}, {}, at::Reduction::Sum)
                           : at::mse_loss(logits, t, at::Reduction::Sum);
    return {sum / n, logits};
  }
  if (!causal) return {at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum), logits};
  const int64_t v = logits.size(-1);
  auto shifted = logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, v});
  auto targets = labels.narrow(1, 1, labels.size(1) - 1).reshape({-1});
  return {at::cross_entropy_loss(shifted, targets, {}, at::Reduction::Sum, -100), {}};
}

nlohmann::json run_eval(PeftModel& peft, const std::vector<Example>& data, int64_t batch, int64_t pad, bool causal,
                        at::Device dev, bool bf16) {
  c10::NoGradGuard no_grad;
  peft.train(false);
  double total = 0;
  int64_t items = 0, correct = 0;
  std::string float_problem;  // regression / multi-label
  std::optional<TokenClassificationMetrics> tokens;  // token classifiers
  for (size_t i = 0; i < data.size(); i += static_cast<size_t>(batch)) {
    std::vector<const Example*> xs;
    for (size_t k = i; k < std::min(data.size(), i + static_cast<size_t>(batch)); ++k) xs.push_back(&data[k]);
    const Batch b = collate(xs, pad, causal);
    BatchLoss r;
    {
      TaskIdsScope tasks(b.task_ids.defined() ? b.task_ids.to(dev) : at::Tensor());
      AutocastGuard autocast(dev.type(), bf16, at::kBFloat16);
      r = batch_loss(peft, b, dev, causal);
    }
    total += r.sum.item<double>();
    items += b.num_items;
    if (!causal && r.logits.dim() == 3) {
      if (!tokens) tokens.emplace(label_names(peft.model().config(), r.logits.size(-1)));
      tokens->add_batch(r.logits, b.labels);
    } else if (!causal && b.targets.defined()) {
      float_problem = problem_type_of(peft.model().config(), r.logits.size(-1), true);
      // multi-label: an example is right when every label is
      correct += ((r.logits.cpu() > 0) == (b.targets > 0.5)).all(-1).sum().item<int64_t>();
    } else if (!causal) {
      correct += (r.logits.argmax(-1).cpu() == b.labels).sum().item<int64_t>();
    }
  }
  const double loss = total / static_cast<double>(std::max<int64_t>(1, items));
  nlohmann::json r = {{"eval_loss", loss}};
  if (causal) r["eval_perplexity"] = std::exp(loss);
  else if (tokens) r.update(tokens->to_json());
  else if (float_problem == "regression") r["eval_mse"] = loss;
  else r["eval_accuracy"] = static_cast<double>(correct) / static_cast<double>(std::max<size_t>(1, data.size()));
  return r;
}

nlohmann::json evaluate(const TrainConfig& cfg, const std::vector<std::string>& adapters) {
  if (cfg.precision != "fp32" && cfg.precision != "bf16") throw std::invalid_argument("dtype must be fp32 or bf16");
  if (cfg.per_device_eval_batch_size < 1 || cfg.max_length < 2)
    throw std::invalid_argument("batch size must be >= 1 and max length >= 2");
  TrainConfig run = cfg;
  run.precision = effective_precision(cfg.precision, at::Device(cfg.device).is_cpu());
  TrainSetup s = load_setup(run, adapters, false);
  const auto opts = data_options(cfg, s);
  auto data = cfg.eval_file.empty() ? read_data(cfg.train_file, cfg.label_file, opts)
                                    : read_data(cfg.eval_file, cfg.eval_label_file, opts);
  return run_eval(*s.peft, data, cfg.per_device_eval_batch_size, s.pad_id, s.causal, at::Device(cfg.device),
                  run.precision == "bf16");
}

}  // namespace peft
