// peft merge BASE_DIR ADAPTER_DIR OUT_DIR: fold an adapter into the base, write an HF checkpoint.
#include <iostream>

#include "common.h"

namespace peft::cli {

void register_merge(CLI::App& app) {
  auto* cmd = app.add_subcommand("merge",
                                 "Merge adapters into the base model and write a plain Hugging Face checkpoint "
                                 "(config.json + model.safetensors) that transformers loads");
  auto model = std::make_shared<ModelArgs>();
  auto adapter_dir = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  model->add_to(cmd);
  cmd->add_option("adapter_dir", *adapter_dir, "Adapter folder (adapter_config.json + adapter_model.safetensors)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("out_dir", *out, "Output folder for the merged checkpoint")->required();
  cmd->callback([=] {
    AdapterArgs a;
    a.dirs = {*adapter_dir};
    a.merged = true;
    auto base = model->load();
    auto peft = a.apply(base);
    peft->merge_and_unload();
    save_pretrained(*base, *out);
    std::cerr << "wrote " << *out << " (" << base->type_name() << ", " << base->num_parameters() << " parameters)\n";
  });
}

}  // namespace peft::cli
