// The preprocessing pipeline of transformers' TorchvisionBackend._preprocess, one image at
// a time (its batched calls run the same per-image kernels): RGB conversion, resize,
// center crop, then rescale and normalize fused into one float32 normalize.
#include <ATen/ATen.h>

#include <stdexcept>

#include "peft/image_processor.h"

namespace peft {
namespace {

// [1, C, H, W] uint8, as process_image leaves a PIL image (HWC array permuted, contiguous).
at::Tensor to_tensor(const Image& image) {
  auto hwc = at::from_blob(const_cast<uint8_t*>(image.pixels.data()), {image.height, image.width, image.channels},
                           at::kByte);
  return hwc.permute({2, 0, 1}).clone(at::MemoryFormat::Contiguous).unsqueeze(0);
}

// TorchvisionBackend.center_crop: zero padding (left/top get the smaller half) when the
// crop is larger, then the window at int((H - h) / 2), int((W - w) / 2).
at::Tensor center_crop(at::Tensor x, int64_t h, int64_t w) {
  int64_t H = x.size(-2), W = x.size(-1);
  if (w > W || h > H) {
    const int64_t l = w > W ? (w - W) / 2 : 0, t = h > H ? (h - H) / 2 : 0;
    const int64_t r = w > W ? (w - W + 1) / 2 : 0, b = h > H ? (h - H + 1) / 2 : 0;
    x = at::constant_pad_nd(x, {l, r, t, b}, 0);
    H = x.size(-2);
    W = x.size(-1);
    if (H == h && W == w) return x;
  }
  const int64_t top = (H - h) / 2, left = (W - w) / 2;
  return x.slice(-2, top, top + h).slice(-1, left, left + w);
}

// rescale_and_normalize: with both steps, mean and std are divided by the rescale factor
// in float32 (torch.tensor(mean) * (1 / factor)) and the uint8 pixels normalized with them.
at::Tensor rescale_and_normalize(const at::Tensor& x, const ImageProcessorConfig& c) {
  if (c.do_normalize) {
    auto mean = at::tensor(c.image_mean, at::kDouble).to(at::kFloat);
    auto std = at::tensor(c.image_std, at::kDouble).to(at::kFloat);
    if (c.do_rescale) {
      mean = mean * (1.0 / c.rescale_factor);
      std = std * (1.0 / c.rescale_factor);
    }
    const int64_t channels = x.size(1);
    for (const auto* v : {&c.image_mean, &c.image_std})
      if (v->size() != 1 && static_cast<int64_t>(v->size()) != channels)
        throw std::runtime_error("the image has " + std::to_string(channels) + " channels but image_mean/image_std " +
                                 std::to_string(v->size()) + " (set do_convert_rgb for gray or RGBA images)");
    if (mean.numel() > 1) mean = mean.view({-1, 1, 1});
    if (std.numel() > 1) std = std.view({-1, 1, 1});
    return x.to(at::kFloat).sub_(mean).div_(std);
  }
  if (c.do_rescale) return x * c.rescale_factor;
  return x.to(at::kFloat);
}

}  // namespace

at::Tensor preprocess_image(const Image& image, const ImageProcessorConfig& c) {
  if (image.width < 1 || image.height < 1 || image.channels < 1 || image.channels > 4 ||
      image.pixels.size() != static_cast<size_t>(image.width * image.height * image.channels))
    throw std::invalid_argument("preprocess_image: malformed image");
  if (!c.do_convert_rgb && image.pil_special_mode)
    throw std::runtime_error("a palette, 1-bit or 16-bit gray image needs do_convert_rgb (transformers would read "
                             "palette indices or raw values)");
  const Image rgb = c.do_convert_rgb ? to_rgb(image) : Image{};
  at::Tensor x = to_tensor(c.do_convert_rgb ? rgb : image);
  if (c.do_resize) {
    const auto [h, w] = resized_size(image.height, image.width, c.size);
    x = resize_uint8(x, h, w, c.resample);
  }
  if (c.do_center_crop) x = center_crop(x, c.crop_size.height, c.crop_size.width);
  return rescale_and_normalize(x, c).squeeze(0).contiguous();
}

at::Tensor preprocess_images(const std::vector<Image>& images, const ImageProcessorConfig& c) {
  std::vector<at::Tensor> out;
  out.reserve(images.size());
  for (const auto& im : images) out.push_back(preprocess_image(im, c));
  return at::stack(out);
}

}  // namespace peft
