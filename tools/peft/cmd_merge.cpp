// peft merge BASE_DIR ADAPTER_DIR OUT_DIR: fold an adapter into the base, write an HF checkpoint.
#include <filesystem>
#include <iostream>

#include "common.h"
#include "peft/layers.h"
#include "io/checkpoint_reader.h"
#include "io/load_4bit.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft::cli {


void register_merge(CLI::App& app) {
  auto* cmd = app.add_subcommand("merge",
                                 "Merge an adapter into the base model and write a plain Hugging Face model folder "
                                 "(config.json + model.safetensors, with the base's tokenizer and generation files) "
                                 "that transformers and peft generate load.\n"
                                 "Example: peft merge ./base ./my-adapter ./merged");
  auto model = std::make_shared<ModelArgs>();
  auto adapter_dir = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  auto dequantize = std::make_shared<bool>(false);
  model->add_to(cmd);
  cmd->add_option("adapter_dir", *adapter_dir, "Adapter folder (adapter_config.json + adapter_model.safetensors)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("out_dir", *out, "Output folder for the merged model (must not hold weights yet)")->required();
  cmd->add_flag("--force", *force, "Replace the weights already in out_dir (even the base folder's own)");
  cmd->add_flag("--dequantize", *dequantize,
                "With a 4-bit base: merge into its dequantized weights and write them dense in --dtype (no "
                "requantization error) instead of requantizing the merged weights to 4-bit");
  cmd->callback([=] {
    std::error_code ec;
    if (!*force && fs::exists(*out) && fs::equivalent(model->dir, *out, ec))
      throw std::runtime_error(*out + ": is the base model folder; merging into it would replace the base weights "
                               "(choose another out_dir, or pass --force)");
    check_save_target(*out, *force);
    AdapterArgs a;
    a.dirs = {*adapter_dir};
    a.merged = true;
    auto base = model->load();
    if (*dequantize && dequantize_4bit_weights(*base, parse_dtype(model->dtype)) == 0)
      throw std::runtime_error("--dequantize: the base has no 4-bit weights (it is not a 4-bit checkpoint and "
                               "--load-in-4bit was not given)");
    auto peft = a.apply(base);
    peft->merge_and_unload();
    double requant = 0.0;
    int64_t requantized = 0;
    for (auto& [name, l] : layers_4bit(*base))
      if (l->requantization_error > 0) {
        requant = std::max(requant, l->requantization_error);
        ++requantized;
      }
    if (requantized > 0)
      std::cerr << "merged into " << requantized << " 4-bit layers and requantized them: largest weight change "
                << "from requantizing " << requant << " (pass --dequantize to write the merge dense instead)\n";
    save_pretrained(*base, *out, *force);
    copy_companions(model->dir, *out);
    std::cerr << "wrote " << *out << " (" << base->type_name() << ", " << base->num_parameters() << " parameters)\n";
  });
}

}  // namespace peft::cli
