// DINOv2 (Dinov2Model, Dinov2ForImageClassification) with transformers' (v5) names: a
// pre-norm ViT whose two residual branches are scaled per channel (layer_scale1/2.lambda1),
// with a GELU MLP or a SwiGLU one (use_swiglu_ffn), and position embeddings resampled
// bicubically to the image's patch grid when it differs from image_size's. The classifier
// reads the [CLS] state beside the mean of the patch states. Checkpoints with the v4 names
// (attention.attention.query, attention.output.dense, mlp.weights_in / weights_out), which
// transformers 5 still writes, are renamed on load and written on save.
#pragma once

#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct Dinov2Config {
  int64_t image_size, patch_size, num_channels, hidden_size, num_layers, num_heads, head_dim, mlp_hidden, num_labels;
  double layer_norm_eps, layerscale_value;
  bool qkv_bias, use_swiglu_ffn, use_mask_token;
  std::string hidden_act;
  static Dinov2Config from_json(const nlohmann::json& j, const std::string& where);
};

class Dinov2PatchEmbeddings : public Module {
 public:
  explicit Dinov2PatchEmbeddings(const Dinov2Config& c);
  std::string type_name() const override { return "Dinov2PatchEmbeddings"; }
  std::shared_ptr<Conv2d> projection;
};

class Dinov2Embeddings : public Module {
 public:
  explicit Dinov2Embeddings(const Dinov2Config& c);
  std::string type_name() const override { return "Dinov2Embeddings"; }
  at::Tensor forward(const at::Tensor& pixels);  // [b, 1 + patches, hidden]
  at::Tensor cls_token, mask_token, position_embeddings;  // mask_token: loaded, unused (no masked inputs)
  std::shared_ptr<Dinov2PatchEmbeddings> patch_embeddings;

 private:
  // transformers' interpolate_pos_encoding: the table as it is for a square image of the
  // configured patch count, else its patch rows resampled (bicubic, float32) to the grid.
  at::Tensor positions_for(int64_t height, int64_t width) const;
  Dinov2Config c_;
};

class Dinov2Attention : public Module {
 public:
  explicit Dinov2Attention(const Dinov2Config& c);
  std::string type_name() const override { return "Dinov2Attention"; }
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;

 private:
  int64_t heads_, head_dim_;
};

// x * lambda1, per channel.
class Dinov2LayerScale : public Module {
 public:
  explicit Dinov2LayerScale(int64_t hidden);
  std::string type_name() const override { return "Dinov2LayerScale"; }
  at::Tensor forward(const at::Tensor& x) const { return x * lambda1; }
  at::Tensor lambda1;
};

// fc2(act(fc1(x))), or with use_swiglu_ffn down_proj(silu(gate_proj(x)) * up_proj(x)).
class Dinov2MLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit Dinov2MLP(const Dinov2Config& c);
  std::string type_name() const override { return swiglu_ ? "Dinov2SwiGLUFFN" : "Dinov2MLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return hidden_; }
  int64_t output_dim() const override { return hidden_; }
  std::shared_ptr<Linear> fc1, fc2;                        // GELU MLP
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;  // SwiGLU

 private:
  bool swiglu_;
  int64_t hidden_;
  std::string act_;
};

class Dinov2Layer : public Module {
 public:
  explicit Dinov2Layer(const Dinov2Config& c);
  std::string type_name() const override { return "Dinov2Layer"; }
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<LayerNorm> norm1;
  std::shared_ptr<Dinov2Attention> attention;
  std::shared_ptr<Dinov2LayerScale> layer_scale1;
  std::shared_ptr<LayerNorm> norm2;
  std::shared_ptr<Dinov2MLP> mlp;
  std::shared_ptr<Dinov2LayerScale> layer_scale2;
};

class Dinov2Encoder : public Module {
 public:
  explicit Dinov2Encoder(const Dinov2Config& c);
  std::string type_name() const override { return "Dinov2Encoder"; }
  std::shared_ptr<ModuleList<Dinov2Layer>> layer;
};

// A DINOv2 checkpoint key in transformers' v4 names renamed to the v5 module names (the
// renames of transformers' conversion mapping); other keys unchanged. The SwiGLU's fused
// mlp.weights_in is split by the checkpoint reader (io/split_keys.h).
std::string dinov2_rename_legacy_key(const std::string& key);
// The reverse: the v4 key transformers 5 writes for a module name.
std::string dinov2_legacy_key(const std::string& name);

class Dinov2Model : public Model {
 public:
  Dinov2Model(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "Dinov2Model"; }
  InputKind input_kind() const override { return InputKind::kPixels; }
  TaskKind task() const override { return TaskKind::kEncoder; }
  std::string name_for_checkpoint_key(const std::string& key) const override { return dinov2_rename_legacy_key(key); }
  std::string checkpoint_key_for_name(const std::string& name) const override { return dinov2_legacy_key(name); }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "dinov2"; }
  const Dinov2Config& dinov2_config() const { return cfg_; }
  std::shared_ptr<Dinov2Embeddings> embeddings;
  std::shared_ptr<Dinov2Encoder> encoder;
  std::shared_ptr<LayerNorm> layernorm;

 private:
  Dinov2Config cfg_;
};

class Dinov2ForImageClassification : public Model {
 public:
  Dinov2ForImageClassification(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "Dinov2ForImageClassification"; }
  InputKind input_kind() const override { return InputKind::kPixels; }
  TaskKind task() const override { return TaskKind::kImageClassification; }
  std::string name_for_checkpoint_key(const std::string& key) const override { return dinov2_rename_legacy_key(key); }
  std::string checkpoint_key_for_name(const std::string& name) const override { return dinov2_legacy_key(name); }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "dinov2"; }
  std::vector<std::string> head_parameter_names() const override { return {"classifier.weight", "classifier.bias"}; }
  std::shared_ptr<Dinov2Model> dinov2;
  std::shared_ptr<Linear> classifier;  // over [CLS state, mean of the patch states]
};

}  // namespace peft
