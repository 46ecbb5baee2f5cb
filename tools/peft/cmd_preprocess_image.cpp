// peft preprocess-image MODEL_DIR IMAGE... --out PIXELS.safetensors: the model folder's
// image processor (preprocessor_config.json) run on PNG/JPEG files, written as the
// pixel_values that `peft forward --pixels` reads.
#include <ATen/ATen.h>

#include <filesystem>
#include <iostream>

#include "common.h"
#include "peft/image_processor.h"
#include "peft/safetensors.h"

namespace peft::cli {

namespace {

struct PreprocessArgs {
  std::string model, out;
  std::vector<std::string> images;
  bool overwrite = false;
};

void run_preprocess(const PreprocessArgs& a) {
  if (!a.overwrite && std::filesystem::exists(a.out))
    throw std::runtime_error(a.out + ": exists (pass --overwrite to replace it)");
  const auto cfg = read_image_processor_config(a.model);
  std::vector<at::Tensor> pixels;
  for (const auto& path : a.images) {
    try {
      pixels.push_back(preprocess_image(read_image(path), cfg));
    } catch (const std::bad_alloc&) {
      throw std::runtime_error(path + ": out of memory preprocessing the image");
    }
    if (!pixels.back().sizes().equals(pixels.front().sizes()))
      throw std::runtime_error(path + ": preprocessed to " + c10::str(pixels.back().sizes()) + ", the first image to " +
                               c10::str(pixels.front().sizes()) + " (the processor has no fixed output size)");
  }
  save_safetensors(a.out, {{"pixel_values", at::stack(pixels)}}, {{"format", "pt"}, {"image_processor", cfg.type}});
  std::cerr << "wrote " << a.out << ": pixel_values " << at::stack(pixels).sizes() << " (" << cfg.type << ")\n";
}

}  // namespace

void register_preprocess_image(CLI::App& app) {
  auto a = std::make_shared<PreprocessArgs>();
  auto* cmd = app.add_subcommand("preprocess-image",
                                 "Run a model folder's CLIP/ViT image processor on PNG/JPEG files (pixel_values for forward --pixels)");
  cmd->add_option("model", a->model, "Model folder with preprocessor_config.json (or the file itself)")->required();
  cmd->add_option("images", a->images, "PNG or JPEG files")->required();
  cmd->add_option("--out", a->out, "Output .safetensors with pixel_values [N, 3, H, W]")->required();
  cmd->add_flag("--overwrite", a->overwrite, "Replace --out if it exists");
  cmd->footer("Example: peft preprocess-image ./vit-base cat.png dog.jpg --out pixels.safetensors\n"
              "         peft forward ./vit-base --pixels pixels.safetensors --out logits.safetensors");
  cmd->callback([a] { run_preprocess(*a); });
}

}  // namespace peft::cli
