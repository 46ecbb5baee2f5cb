// Image classification data from image files, preprocessed by the model folder's
// preprocessor_config.json (peft/image_processor.h) when read:
//  - a folder with one subfolder per class, as torchvision's ImageFolder reads it: classes
//    are the subfolder names sorted, indexed in that order (unless every name is a key of
//    config.json's label2id, which then gives the index); *.png, *.jpg, *.jpeg files
//    (any case) anywhere under a class folder, sorted; other files ignored.
//  - JSONL of {"image": "path", "label": index or label2id name}; relative paths are
//    relative to the JSONL file's folder.
#pragma once

#include <string>
#include <vector>

#include "train/data.h"

namespace peft {

std::vector<Example> load_image_folder(const std::string& dir, const DataOptions& o);
std::vector<Example> load_image_jsonl(const std::string& path, const DataOptions& o);
// Contrastive (CLIP) pairs: JSONL of {"image": "path", "text": "..."}; the text tokenized
// (truncated to max_length), the image preprocessed; paths as load_image_jsonl's.
std::vector<Example> load_image_text_jsonl(const std::string& path, const DataOptions& o);
// True if the file's first non-blank line is a JSON object with an "image" key.
bool is_image_jsonl(const std::string& path);
// A hash of every file under `dir` (relative names and contents), for the run's fingerprint.
std::string image_folder_content_hash(const std::string& dir);
// The classes load_image_folder finds under `dir`, in index order.
std::vector<std::string> image_folder_classes(const std::string& dir);

}  // namespace peft
