// peft forward MODEL_DIR --ids IDS.json --out OUT.safetensors: one forward pass.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <iostream>

#include "common.h"
#include "models/seq_cls_head.h"
#include "peft/safetensors.h"

namespace peft::cli {

namespace {

struct ForwardArgs {
  ModelArgs model;
  AdapterArgs adapters;
  std::string ids, token_type_ids, pixels, out;
};

void run_forward(const ForwardArgs& a) {
  auto model = a.model.load();
  auto peft = a.adapters.apply(model);
  c10::InferenceMode guard;
  const auto device = model->device();
  ModelInputs in;
  NamedTensors result;
  if (model->input_kind() == InputKind::kPixels) {
    if (a.pixels.empty()) throw std::invalid_argument(model->type_name() + " needs --pixels");
    SafetensorsFile f(a.pixels);
    if (!f.contains("pixel_values")) throw std::runtime_error(a.pixels + ": no tensor 'pixel_values'");
    in.pixel_values = f.get("pixel_values").to(device);
  } else {
    if (a.ids.empty()) throw std::invalid_argument(model->type_name() + " needs --ids");
    at::Tensor ids, mask;
    pad_right(read_id_lists(a.ids), classifier_pad_id(*model, 0), &ids, &mask);  // decoders pool by it
    in.input_ids = ids.to(device);
    in.attention_mask = mask.to(device);
    if (!a.token_type_ids.empty()) {
      at::Tensor types, types_mask;
      pad_right(read_id_lists(a.token_type_ids), 0, &types, &types_mask);
      if (types.sizes() != ids.sizes() || !types_mask.equal(mask))
        throw std::invalid_argument(a.token_type_ids + ": rows do not have the same lengths as " + a.ids);
      in.token_type_ids = types.to(device);
    }
    result.emplace_back("attention_mask", mask);
  }
  auto out = model->forward(in);
  auto f32 = [](const at::Tensor& t) { return t.to(at::kCPU, at::kFloat); };
  if (out.logits.defined()) result.emplace_back("logits", f32(out.logits));
  if (model->task() == TaskKind::kEncoder) {
    result.emplace_back("last_hidden_state", f32(out.last_hidden_state));
    if (out.pooler_output.defined()) result.emplace_back("pooler_output", f32(out.pooler_output));
  }
  save_safetensors(a.out, result, {{"format", "pt"}, {"model", model->type_name()}});
  std::cerr << "wrote " << a.out << "\n";
}

}  // namespace

void register_forward(CLI::App& app) {
  auto* cmd = app.add_subcommand("forward",
                                 "Run one forward pass and write float32 outputs to safetensors.\n"
                                 "LMs: logits [batch, seq, vocab]; classifiers: logits [batch, num_labels]; token classifiers: logits [batch, seq, num_labels]; "
                                 "encoders: last_hidden_state (+ pooler_output). attention_mask is written too.");
  cmd->footer("Example: peft forward ./SmolLM2-135M --ids ids.json --adapter out/adapter --out logits.safetensors\n"
              "  with ids.json = [[1, 2, 3], [4, 5]]");
  auto a = std::make_shared<ForwardArgs>();
  a->model.add_to(cmd);
  a->adapters.add_to(cmd);
  cmd->add_option("--ids", a->ids, "JSON list of token-id lists; ragged rows are right-padded with a mask")
      ->check(CLI::ExistingFile);
  cmd->add_option("--token-type-ids", a->token_type_ids, "BERT: JSON lists of segment ids, same shape as --ids")
      ->check(CLI::ExistingFile);
  cmd->add_option("--pixels", a->pixels, "ViT: safetensors file with tensor 'pixel_values' [b, c, h, w]")
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", a->out, "Output .safetensors")->required();
  cmd->callback([a] { run_forward(*a); });
}

}  // namespace peft::cli
