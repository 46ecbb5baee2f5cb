#include "classify_zero_shot.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "peft/clip.h"
#include "peft/image_processor.h"
#include "peft/tokenizer.h"

namespace peft::cli {

std::vector<std::string> split_labels(const std::vector<std::string>& labels) {
  std::vector<std::string> out;
  for (const auto& entry : labels) {
    size_t start = 0;
    while (start <= entry.size()) {
      const size_t comma = std::min(entry.find(',', start), entry.size());
      std::string name = entry.substr(start, comma - start);
      const auto first = name.find_first_not_of(" \t"), last = name.find_last_not_of(" \t");
      name = first == std::string::npos ? "" : name.substr(first, last - first + 1);
      if (name.empty()) throw std::invalid_argument("--labels: an empty label in \"" + entry + "\"");
      out.push_back(name);
      start = comma + 1;
    }
  }
  return out;
}

namespace {

std::string prompt_for(const std::string& templ, const std::string& label) {
  const auto at = templ.find("{}");
  return templ.substr(0, at) + label + templ.substr(at + 2);
}

}  // namespace

void classify_zero_shot(Model& model, const std::string& model_dir, const ZeroShotArgs& a) {
  auto* clip = as_contrastive(model);
  if (!clip) throw std::invalid_argument(model.type_name() + " is not an image-text model (CLIPModel)");
  if (a.images.empty()) throw std::invalid_argument("zero-shot classification needs --image");
  if (model.input_adapter)  // soft prompts act through Model::forward, which the contrastive forward does not take
    throw std::invalid_argument("zero-shot classification takes layer adapters (LoRA, CLIP_ADAPTER, ...), not soft prompts");
  const auto labels = split_labels(a.labels);
  if (labels.size() < 2) throw std::invalid_argument("zero-shot classification needs --labels with two or more names");
  if (a.templ.find("{}") == std::string::npos)
    throw std::invalid_argument("--template must contain {} where the label goes, e.g. \"a photo of a {}\"");
  // Prompts, tokenized as the model's tokenizer does (CLIP: <|startoftext|> ... <|endoftext|>),
  // right-padded with its pad token; a long one is cut keeping its last token, where the
  // text tower pools.
  const auto tok = Tokenizer::from_file(model_dir);
  int64_t pad = 0;
  if (auto p = tok.special_token("pad_token"))
    if (auto id = tok.token_to_id(*p)) pad = *id;
  const int64_t limit = a.max_length > 0 ? a.max_length : model.max_positions();
  std::vector<std::vector<int64_t>> rows;
  for (const auto& label : labels) {
    auto ids = tok.encode(prompt_for(a.templ, label)).ids;
    if (limit > 0 && static_cast<int64_t>(ids.size()) > limit) {
      const int64_t last = ids.back();
      ids.resize(static_cast<size_t>(limit));
      ids.back() = last;
    }
    rows.push_back(std::move(ids));
  }
  ModelInputs in;
  pad_right(rows, pad, &in.input_ids, &in.attention_mask);
  const auto proc = read_image_processor_config(model_dir);
  std::vector<Image> images;
  for (const auto& path : a.images) images.push_back(read_image(path));
  in.pixel_values = preprocess_images(images, proc);
  const auto dev = model.device();
  in.input_ids = in.input_ids.to(dev);
  in.attention_mask = in.attention_mask.to(dev);
  in.pixel_values = in.pixel_values.to(dev);
  c10::InferenceMode guard;
  const auto probs = clip->forward_contrastive(in).logits_per_image.softmax(-1).to(at::kCPU, at::kFloat).contiguous();
  for (size_t i = 0; i < a.images.size(); ++i) {
    const auto row = probs[static_cast<int64_t>(i)];
    std::vector<double> p(row.data_ptr<float>(), row.data_ptr<float>() + row.numel());
    const int64_t best = row.argmax().item<int64_t>();
    nlohmann::json out = {{"image", a.images[i]}, {"label", labels[best]}, {"labels", labels}, {"probabilities", p}};
    std::cout << out.dump() << "\n";
  }
}

}  // namespace peft::cli
