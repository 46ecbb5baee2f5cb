// transformers' CLIPImageProcessor and ViTImageProcessor, as AutoImageProcessor builds
// them in transformers 5 (the torchvision backend, picked whenever torchvision is
// installed): preprocessor_config.json read with the classes' defaults, then convert to
// RGB, resize (torch's interpolate on uint8 with antialias, the very kernel torchvision
// calls), center crop, and rescale + normalize fused as transformers fuses them.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "peft/image.h"

namespace peft {

// transformers' SizeDict: either height and width, or shortest_edge (with an optional
// longest_edge). 0 = unset.
struct ImageSize {
  int64_t height = 0, width = 0, shortest_edge = 0, longest_edge = 0;
};

// PIL's resampling filters by their numbers in preprocessor_config.json.
enum class Resample { kNearest = 0, kLanczos = 1, kBilinear = 2, kBicubic = 3, kBox = 4, kHamming = 5 };

struct ImageProcessorConfig {
  std::string type;  // "CLIPImageProcessor" or "ViTImageProcessor"
  bool do_resize = true, do_center_crop = false, do_rescale = true, do_normalize = true, do_convert_rgb = false;
  ImageSize size, crop_size;
  Resample resample = Resample::kBilinear;
  double rescale_factor = 1.0 / 255.0;
  std::vector<double> image_mean, image_std;
};

// The class defaults of `type` ("CLIPImageProcessor", "ViTImageProcessor", or those
// names with "Fast"); throws for another type.
ImageProcessorConfig image_processor_defaults(const std::string& type);
// Reads a model folder's preprocessor_config.json (or that file itself). The type comes
// from its image_processor_type, else from config.json's model_type (vit, clip).
// Unknown or ill-typed values throw naming the file and key.
ImageProcessorConfig read_image_processor_config(const std::string& folder_or_file);

// The height and width an image of h x w gets from `size` (transformers' rules).
std::pair<int64_t, int64_t> resized_size(int64_t h, int64_t w, const ImageSize& size);
// torchvision's resize_image on a uint8 [N, C, H, W] tensor, antialiased; uint8 out.
at::Tensor resize_uint8(const at::Tensor& images, int64_t height, int64_t width, Resample resample);

// One image into pixel_values [C, H, W] float32 (C = 3 after RGB conversion).
at::Tensor preprocess_image(const Image& image, const ImageProcessorConfig& config);
// Several images of the same output size into [N, C, H, W].
at::Tensor preprocess_images(const std::vector<Image>& images, const ImageProcessorConfig& config);

}  // namespace peft
