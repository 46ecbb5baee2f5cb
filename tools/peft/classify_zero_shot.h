// Zero-shot image classification with a contrastive model (CLIP), for `peft classify`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "peft/model.h"
#include "peft/peft_model.h"

namespace peft::cli {

struct ZeroShotArgs {
  std::vector<std::string> images;  // PNG / JPEG files
  std::vector<std::string> labels;  // class names; an entry "a,b,c" is split at its commas
  std::string templ;                // a prompt with "{}" where the label goes
  int64_t max_length = 0;           // 0: the text tower's position limit
};

// Scores every image against the prompt of every label: softmax over logits_per_image, as
// transformers' zero-shot-image-classification pipeline does. Prints one JSON line per
// image: {"image", "label" (the best), "labels", "probabilities"}.
void classify_zero_shot(Model& model, const std::string& model_dir, const ZeroShotArgs& a);

// The label list with comma-separated entries split and blanks trimmed.
std::vector<std::string> split_labels(const std::vector<std::string>& labels);

}  // namespace peft::cli
