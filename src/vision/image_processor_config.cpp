// preprocessor_config.json into an ImageProcessorConfig, with the defaults of
// transformers' CLIPImageProcessor, BitImageProcessor (DINOv2's; the same class defaults as
// CLIP's) and ViTImageProcessor classes (transformers 5).
#include <filesystem>
#include <stdexcept>

#include "peft/image_processor.h"
#include "util/json_file.h"

namespace peft {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// transformers' image_utils constants.
const std::vector<double> kOpenAiClipMean = {0.48145466, 0.4578275, 0.40821073};
const std::vector<double> kOpenAiClipStd = {0.26862954, 0.26130258, 0.27577711};
const std::vector<double> kImagenetStandardMean = {0.5, 0.5, 0.5};
const std::vector<double> kImagenetStandardStd = {0.5, 0.5, 0.5};

bool is_clip(const std::string& type) { return type == "CLIPImageProcessor" || type == "CLIPImageProcessorFast" ||
                                               type == "CLIPFeatureExtractor"; }
bool is_bit(const std::string& type) { return type == "BitImageProcessor" || type == "BitImageProcessorFast"; }
bool is_vit(const std::string& type) { return type == "ViTImageProcessor" || type == "ViTImageProcessorFast" ||
                                              type == "ViTFeatureExtractor"; }

// get_size_dict: an int is a square (default_to_square) or a shortest edge; a list is
// (height, width); a dict must have one of the key sets transformers accepts.
ImageSize read_size(const json& v, bool default_to_square, const std::string& where) {
  ImageSize s;
  if (v.is_number_integer()) {
    const auto n = strict_get<int64_t>(v, where);
    if (default_to_square) s.height = s.width = n;
    else s.shortest_edge = n;
  } else if (v.is_array() && v.size() == 2) {
    s.height = strict_get<int64_t>(v[0], where + "[0]");
    s.width = strict_get<int64_t>(v[1], where + "[1]");
  } else if (v.is_object()) {
    for (const auto& [k, x] : v.items()) {
      if (x.is_null()) continue;
      const auto n = strict_get<int64_t>(x, where + "." + k);
      if (k == "height") s.height = n;
      else if (k == "width") s.width = n;
      else if (k == "shortest_edge") s.shortest_edge = n;
      else if (k == "longest_edge") s.longest_edge = n;
      else throw std::runtime_error(where + ": key \"" + k + "\" is not supported (height/width or shortest_edge/longest_edge)");
    }
    const bool hw = s.height && s.width, edge = s.shortest_edge && !s.height && !s.width;
    if (!hw && !edge) throw std::runtime_error(where + " must have height and width, or shortest_edge, got " + quote_json(v));
  } else {
    throw std::runtime_error(where + " must be an integer, [height, width] or a dict, got " + quote_json(v));
  }
  for (int64_t n : {s.height, s.width, s.shortest_edge, s.longest_edge})
    if (n < 0 || n > 65536) throw std::runtime_error(where + " holds " + std::to_string(n) + ", outside [1, 65536]");
  return s;
}

std::vector<double> read_floats(const json& v, const std::string& where) {
  std::vector<double> out;
  if (v.is_number()) out.push_back(v.get<double>());
  else if (v.is_array() && !v.empty() && v.size() <= 4)
    for (size_t i = 0; i < v.size(); ++i) out.push_back(strict_get<double>(v[i], where + "[" + std::to_string(i) + "]"));
  else throw std::runtime_error(where + " must be a number or a list of 1 to 4 numbers, got " + quote_json(v));
  return out;
}

std::string type_of(const json& j, const fs::path& file) {
  for (const char* key : {"image_processor_type", "feature_extractor_type"})
    if (j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  const auto cfg = file.parent_path() / "config.json";
  if (fs::exists(cfg)) {
    const auto c = read_json_file(cfg.string());
    const std::string mt = c.value("model_type", "");
    if (mt == "vit") return "ViTImageProcessor";
    if (mt == "clip" || mt == "clip_vision_model") return "CLIPImageProcessor";
    if (mt == "dinov2") return "BitImageProcessor";
  }
  throw std::runtime_error(file.string() + ": no image_processor_type, and config.json names no model_type it implies");
}

}  // namespace

ImageProcessorConfig image_processor_defaults(const std::string& type) {
  ImageProcessorConfig c;
  c.type = type;
  if (is_clip(type) || is_bit(type)) {
    c.type = is_bit(type) ? "BitImageProcessor" : "CLIPImageProcessor";
    c.size.shortest_edge = 224;
    c.crop_size.height = c.crop_size.width = 224;
    c.resample = Resample::kBicubic;
    c.do_center_crop = c.do_convert_rgb = true;
    c.image_mean = kOpenAiClipMean;
    c.image_std = kOpenAiClipStd;
  } else if (is_vit(type)) {
    c.type = "ViTImageProcessor";
    c.size.height = c.size.width = 224;
    c.resample = Resample::kBilinear;
    c.image_mean = kImagenetStandardMean;
    c.image_std = kImagenetStandardStd;
  } else {
    throw std::runtime_error("image processor \"" + type +
                             "\" is not supported (CLIPImageProcessor, BitImageProcessor, ViTImageProcessor)");
  }
  return c;
}

ImageProcessorConfig read_image_processor_config(const std::string& folder_or_file) {
  fs::path file = folder_or_file;
  if (fs::is_directory(file)) file /= "preprocessor_config.json";
  const auto j = read_json_file(file.string());
  if (!j.is_object()) throw std::runtime_error(file.string() + ": expected a JSON object");
  const std::string where = file.string() + ": ";
  ImageProcessorConfig c;
  try {
    c = image_processor_defaults(type_of(j, file));
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).starts_with(file.string())) throw;
    throw std::runtime_error(where + e.what());
  }
  const bool square = j.contains("default_to_square") && !j["default_to_square"].is_null()
                          ? strict_get<bool>(j["default_to_square"], where + "default_to_square")
                          : c.type == "ViTImageProcessor";
  // null means "unset": transformers then finds None, which turns the step off.
  auto flag = [&](const char* key, bool& out) {
    if (j.contains(key)) out = !j[key].is_null() && strict_get<bool>(j[key], where + key);
  };
  flag("do_resize", c.do_resize);
  flag("do_center_crop", c.do_center_crop);
  flag("do_rescale", c.do_rescale);
  flag("do_normalize", c.do_normalize);
  flag("do_convert_rgb", c.do_convert_rgb);
  auto present = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  if (present("size")) c.size = read_size(j["size"], square, where + "size");
  if (present("crop_size")) c.crop_size = read_size(j["crop_size"], true, where + "crop_size");
  if (present("resample")) {
    const auto r = strict_get<int64_t>(j["resample"], where + "resample");
    if (r < 0 || r > 5) throw std::runtime_error(where + "resample " + std::to_string(r) + " is not a PIL filter (0-5)");
    c.resample = static_cast<Resample>(r);
  }
  if (present("rescale_factor")) c.rescale_factor = strict_get<double>(j["rescale_factor"], where + "rescale_factor");
  if (present("image_mean")) c.image_mean = read_floats(j["image_mean"], where + "image_mean");
  if (present("image_std")) c.image_std = read_floats(j["image_std"], where + "image_std");
  if (c.do_center_crop && !(c.crop_size.height && c.crop_size.width))
    throw std::runtime_error(where + "do_center_crop needs crop_size with height and width");
  if (c.do_rescale && !(c.rescale_factor > 0)) throw std::runtime_error(where + "rescale_factor must be > 0");
  if (c.do_normalize)
    for (double s : c.image_std)
      if (s == 0) throw std::runtime_error(where + "image_std holds 0 (division by zero)");
  return c;
}

}  // namespace peft
