#include <ATen/ATen.h>

#include <cmath>

#include "tuners/registry.h"
#include "peft/bottleneck.h"
#include "models/model_config.h"  // check_activation
#include "peft/layers.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

const ojson& bottleneck_defaults() {
  static const auto j = ojson::parse(R"({
    "adapter_type": "houlsby", "base_model_name_or_path": null, "bottleneck_size": 0, "exclude_modules": null,
    "inference_mode": true, "init_weights": true, "layers_pattern": null, "layers_to_transform": null,
    "modules_to_save": null, "non_linearity": "relu", "peft_type": "BOTTLENECK", "reduction_factor": 16,
    "scaling": 1.0, "target_modules": null, "task_type": null
  })");
  return j;
}

// Output projections of the attention block and of the feed-forward block, and the MLP
// block itself, by model_type (as module-name suffixes or regexes).
struct Placement {
  std::string attention_out, ffn_out, mlp;
};
const std::vector<std::pair<std::string, Placement>> kPlacements = {
    {"llama", {"self_attn.o_proj", "mlp.down_proj", "mlp"}},
    {"mistral", {"self_attn.o_proj", "mlp.down_proj", "mlp"}},
    {"qwen2", {"self_attn.o_proj", "mlp.down_proj", "mlp"}},
    {"qwen3", {"self_attn.o_proj", "mlp.down_proj", "mlp"}},
    {"gemma2", {"self_attn.o_proj", "mlp.down_proj", "mlp"}},
    {"gemma3_text", {"self_attn.o_proj", "mlp.down_proj", "mlp"}},
    {"phi3", {"self_attn.o_proj", "mlp.down_proj", "mlp"}},
    {"gpt2", {"attn.c_proj", "mlp.c_proj", "mlp"}},
    {"bert", {"attention.output.dense", R"(.*\.layer\.\d+\.output\.dense)", ""}},
    {"roberta", {"attention.output.dense", R"(.*\.layer\.\d+\.output\.dense)", ""}},
    {"deberta-v2", {"attention.output.dense", R"(.*\.layer\.\d+\.output\.dense)", ""}},
    {"deberta", {"attention.output.dense", R"(.*\.layer\.\d+\.output\.dense)", ""}},
    {"vit", {"attention.o_proj", "mlp.fc2", "mlp"}},
    // The audio encoder's layers only (Whisper's fc1 / fc2 sit in the layer: no MLP block).
    {"whisper", {R"(.*encoder\.layers\.\d+\.self_attn\.out_proj)", R"(.*encoder\.layers\.\d+\.fc2)", ""}}};

}  // namespace

BottleneckConfig BottleneckConfig::from_json(const ojson& j, const std::string& where,
                                             std::vector<std::string>* unknown) {
  BottleneckConfig c;
  ConfigFields f(j, bottleneck_defaults(), "BOTTLENECK", where, unknown, c);
  c.adapter_type = f.get<std::string>("adapter_type");
  c.bottleneck_size = f.get<int64_t>("bottleneck_size");
  c.reduction_factor = f.get<double>("reduction_factor");
  c.non_linearity = f.get<std::string>("non_linearity");
  c.scaling = f.get<double>("scaling");
  c.init_weights = f.get<bool>("init_weights");
  if (c.adapter_type != "houlsby" && c.adapter_type != "pfeiffer" && c.adapter_type != "parallel")
    f.fail("adapter_type must be houlsby, pfeiffer or parallel, got '" + c.adapter_type + "'");
  if (c.bottleneck_size < 0 || (c.bottleneck_size == 0 && c.reduction_factor <= 0))
    f.fail("bottleneck_size must be positive (or 0 with a positive reduction_factor)");
  try {
    check_activation(c.non_linearity);
  } catch (const std::exception& e) {
    f.fail(e.what());
  }
  return c;
}

ojson BottleneckConfig::to_json() const {
  ojson fields;
  fields["adapter_type"] = adapter_type;
  fields["bottleneck_size"] = bottleneck_size;
  fields["reduction_factor"] = reduction_factor;
  fields["non_linearity"] = non_linearity;
  fields["scaling"] = scaling;
  fields["init_weights"] = init_weights;
  return config_json(*this, bottleneck_defaults(), fields);
}

void BottleneckConfig::resolve(const Model& model) {
  if (bottleneck_size > 0) return;
  const auto& c = model.config();
  const int64_t hidden = c.contains("hidden_size") ? c["hidden_size"].get<int64_t>()
                       : c.contains("d_model")   ? c["d_model"].get<int64_t>()  // Whisper, T5
                                                 : c.value("n_embd", int64_t{0});
  if (hidden <= 0) throw std::invalid_argument("BOTTLENECK: the model's hidden size is unknown; set bottleneck_size");
  bottleneck_size = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(hidden) / reduction_factor));
}

NamedModules BottleneckConfig::layer_targets(Model& model) const {
  if (!targets.empty()) return find_targets(model, targets, task_type);
  const std::string type = model.config().value("model_type", std::string());
  const Placement* p = nullptr;
  for (const auto& [t, pl] : kPlacements)
    if (t == type) p = &pl;
  if (!p) throw std::invalid_argument("BOTTLENECK: no default placement for model_type '" + type + "'; set target_modules");
  auto suffix_regex = [](const std::string& s) {
    return s.rfind(".*", 0) == 0 ? s : ".*\\." + std::string(s);
  };
  std::string regex;
  if (adapter_type == "houlsby") regex = std::string("(") + suffix_regex(p->attention_out) + ")|(" + suffix_regex(p->ffn_out) + ")";
  else if (adapter_type == "pfeiffer") regex = suffix_regex(p->ffn_out);
  else if (p->mlp.empty())
    throw std::invalid_argument("BOTTLENECK parallel: " + model.type_name() +
                                " has no single MLP module to place the adapter beside");
  else regex = suffix_regex(p->mlp);
  TargetSpec spec = targets;
  spec.target_regex = regex;
  return find_targets(model, spec, task_type);
}

std::shared_ptr<LayerAdapter> BottleneckConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                  at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  const bool parallel = adapter_type == "parallel";
  // Serial adapters see the host's output, parallel ones its input.
  const int64_t d = parallel ? host->input_dim() : host->output_dim();
  if (parallel && host->input_dim() != host->output_dim())
    throw std::invalid_argument("BOTTLENECK parallel: '" + path + "' maps " + std::to_string(host->input_dim()) +
                                " features to " + std::to_string(host->output_dim()));
  const int64_t size = bottleneck_size > 0 ? bottleneck_size
                                           : std::max<int64_t>(1, static_cast<int64_t>(d / reduction_factor));
  auto a = std::make_shared<BottleneckAdapter>(host, size, parallel, non_linearity, scaling);
  // nn.Linear's default init for the down-projection; zero up-projection (AdaptFormer,
  // Houlsby's near-identity init) unless init_weights is false.
  const double bound = 1.0 / std::sqrt(static_cast<double>(d));
  const auto opts = at::TensorOptions(at::kFloat);
  a->down_w = at::rand({size, d}, gen, opts) * (2 * bound) - bound;
  a->down_b = at::rand({size}, gen, opts) * (2 * bound) - bound;
  if (!init_weights) {
    const double ub = 1.0 / std::sqrt(static_cast<double>(size));
    a->up_w = at::rand({d, size}, gen, opts) * (2 * ub) - ub;
    a->up_b = at::rand({d}, gen, opts) * (2 * ub) - ub;
  }
  const auto device = host->device();
  for (auto* t : a->trainable_slots()) *t = t->to(device);
  return a;
}


namespace {
[[maybe_unused]] const bool kBottleneckRegistered = register_method<BottleneckConfig>("BOTTLENECK");
}  // namespace

}  // namespace peft
