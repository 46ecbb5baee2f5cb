// Image files into classification examples (train/image_data.h).
#include "train/image_data.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "peft/image_processor.h"
#include "util/hash.h"
#include "util/json_file.h"
#include "util/jsonl.h"

namespace peft {
namespace {

namespace fs = std::filesystem;

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

Example make_example(const std::string& path, int64_t label, const ImageProcessorConfig& proc) {
  Example ex;
  ex.class_label = label;
  try {
    ex.pixel_values = preprocess_image(read_image(path), proc);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(path + ": out of memory preprocessing the image");
  }
  return ex;
}

int64_t checked_label(int64_t label, const DataOptions& o, const std::string& where) {
  if (label < 0 || (o.num_labels > 0 && label >= o.num_labels))
    throw std::runtime_error(where + ": label " + std::to_string(label) + " is out of range: the model has " +
                             std::to_string(o.num_labels) + " labels");
  return label;
}

// Every output of the processor must have one shape, or batches cannot be stacked.
void check_shapes(const std::vector<Example>& xs, const std::string& where) {
  for (const auto& e : xs)
    if (!e.pixel_values.sizes().equals(xs.front().pixel_values.sizes()))
      throw std::runtime_error(where + ": preprocessing gives images of different sizes (" +
                               c10::str(xs.front().pixel_values.sizes()) + " and " + c10::str(e.pixel_values.sizes()) +
                               "); the processor config needs a fixed size or a center crop");
}

}  // namespace

std::vector<std::string> image_folder_classes(const std::string& dir) {
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) throw std::runtime_error(dir + ": no class folders (expected one subfolder per class)");
  return classes;
}

std::string image_folder_content_hash(const std::string& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::string listing;
  for (const auto& f : files) listing += fs::relative(f, dir).string() + '\0' + file_content_hash(f.string()) + '\n';
  return content_hash(listing);
}

std::vector<Example> load_image_folder(const std::string& dir, const DataOptions& o) {
  const auto proc = read_image_processor_config(o.model_dir);
  const auto classes = image_folder_classes(dir);
  const bool by_name = std::all_of(classes.begin(), classes.end(), [&](const std::string& c) {
    return o.label2id.contains(c) && o.label2id[c].is_number_integer();
  });
  std::vector<Example> out;
  for (size_t i = 0; i < classes.size(); ++i) {
    const fs::path class_dir = fs::path(dir) / classes[i];
    const int64_t label = checked_label(by_name ? o.label2id[classes[i]].get<int64_t>() : static_cast<int64_t>(i), o,
                                        class_dir.string());
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(class_dir, fs::directory_options::follow_directory_symlink))
      if (e.is_regular_file() && is_image_name(e.path())) files.push_back(e.path());
    if (files.empty()) throw std::runtime_error(class_dir.string() + ": no .png/.jpg/.jpeg files for class \"" + classes[i] + "\"");
    std::sort(files.begin(), files.end());
    for (const auto& f : files) out.push_back(make_example(f.string(), label, proc));
  }
  check_shapes(out, dir);
  return out;
}

bool is_image_jsonl(const std::string& path) { return jsonl_first_object_has(path, "image"); }

std::vector<Example> load_image_jsonl(const std::string& path, const DataOptions& o) {
  const auto proc = read_image_processor_config(o.model_dir);
  std::vector<Example> out;
  for_each_jsonl_line(path, [&](const nlohmann::json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("image") || !j.contains("label"))
      throw std::runtime_error(where + ": expected {\"image\": path, \"label\": ...}");
    const fs::path image = strict_get<std::string>(j.at("image"), where + ": \"image\"");
    const auto& l = j.at("label");
    int64_t label = -1;
    if (l.is_number_integer()) label = l.get<int64_t>();
    else if (l.is_string() && o.label2id.contains(l.get<std::string>()) && o.label2id[l.get<std::string>()].is_number_integer())
      label = o.label2id[l.get<std::string>()].get<int64_t>();
    else throw std::runtime_error(where + ": label " + quote_json(l) + " is neither an index nor a name in config.json's label2id");
    const std::string file = jsonl_relative(path, image);
    try {
      out.push_back(make_example(file, checked_label(label, o, where), proc));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(where + ": " + e.what());
    }
  });
  if (out.empty()) throw std::runtime_error(path + ": no examples");
  check_shapes(out, path);
  return out;
}

std::vector<Example> load_image_text_jsonl(const std::string& path, const DataOptions& o) {
  if (!o.tokenizer) throw std::runtime_error(path + ": {\"image\", \"text\"} pairs need the model's tokenizer.json");
  const auto proc = read_image_processor_config(o.model_dir);
  std::vector<Example> out;
  for_each_jsonl_line(path, [&](const nlohmann::json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("image") || !j.contains("text"))
      throw std::runtime_error(where + ": expected {\"image\": path, \"text\": \"...\"}");
    const fs::path image = strict_get<std::string>(j.at("image"), where + ": \"image\"");
    const auto text = strict_get<std::string>(j.at("text"), where + ": \"text\"");
    const std::string file = jsonl_relative(path, image);
    try {
      out.push_back(make_example(file, -1, proc));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(where + ": " + e.what());
    }
    auto ids = o.tokenizer->encode(text).ids;
    // As the tokenizer truncates: the text is cut, its last (end-of-text) token kept, since
    // the text tower pools there.
    if (static_cast<int64_t>(ids.size()) > o.max_length) {
      const int64_t last = ids.back();
      ids.resize(static_cast<size_t>(o.max_length));
      ids.back() = last;
    }
    if (ids.empty()) throw std::runtime_error(where + ": the text tokenizes to nothing");
    out.back().input_ids = std::move(ids);
  });
  if (out.empty()) throw std::runtime_error(path + ": no examples");
  check_shapes(out, path);
  return out;
}

}  // namespace peft
