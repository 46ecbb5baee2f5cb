// Resizing as transformers' TorchvisionBackend.resize does: the output size from the
// SizeDict, then torchvision's resize_image, which hands uint8 images straight to torch's
// antialiased interpolation kernels on the CPU. Calling those same ATen kernels makes the
// result bit-identical.
#include <ATen/ATen.h>
#include <ATen/Version.h>

#include <cmath>
#include <stdexcept>

#include "peft/image_processor.h"

namespace peft {
namespace {

// get_resize_output_image_size(default_to_square=False): the short side to `size`, the
// long one int(size * long / short) in Python's float arithmetic.
std::pair<int64_t, int64_t> shortest_edge_size(int64_t h, int64_t w, int64_t size) {
  const bool w_short = w <= h;
  const int64_t s = w_short ? w : h, l = w_short ? h : w;
  const auto long_side = static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(l) / static_cast<double>(s));
  return w_short ? std::pair{long_side, size} : std::pair{size, long_side};
}

// get_size_with_aspect_ratio(image_size, shortest_edge, longest_edge).
std::pair<int64_t, int64_t> aspect_ratio_size(int64_t h, int64_t w, int64_t size, int64_t max_size) {
  double raw = -1;
  const double mn = static_cast<double>(std::min(h, w)), mx = static_cast<double>(std::max(h, w));
  if (mx / mn * static_cast<double>(size) > static_cast<double>(max_size)) {
    raw = static_cast<double>(max_size) * mn / mx;
    size = static_cast<int64_t>(std::nearbyint(raw));  // Python's round: half to even
  }
  if ((h <= w && h == size) || (w <= h && w == size)) return {h, w};
  const double hd = static_cast<double>(h), wd = static_cast<double>(w);
  const double base = raw >= 0 ? raw : static_cast<double>(size);
  if (w < h) return {static_cast<int64_t>(base * hd / wd), size};
  return {size, static_cast<int64_t>(base * wd / hd)};
}

// torchvision's _do_native_uint8_resize_on_cpu: bilinear needs AVX2 for the uint8 kernel.
bool native_uint8(Resample r) {
  if (r != Resample::kBilinear) return true;
  const auto cap = at::get_cpu_capability();
  return cap == "AVX2" || cap == "AVX512";
}

}  // namespace

std::pair<int64_t, int64_t> resized_size(int64_t h, int64_t w, const ImageSize& size) {
  if (size.shortest_edge && size.longest_edge) return aspect_ratio_size(h, w, size.shortest_edge, size.longest_edge);
  if (size.shortest_edge) return shortest_edge_size(h, w, size.shortest_edge);
  if (size.height && size.width) return {size.height, size.width};
  throw std::invalid_argument("size must hold height and width, or shortest_edge");
}

at::Tensor resize_uint8(const at::Tensor& images, int64_t height, int64_t width, Resample resample) {
  if (height < 1 || width < 1)
    throw std::runtime_error("resize to " + std::to_string(height) + "x" + std::to_string(width) + " pixels");
  if (images.size(-2) == height && images.size(-1) == width) return images;
  const std::vector<int64_t> size{height, width};
  const c10::IntArrayRef out(size);
  if (resample == Resample::kNearest) return at::_upsample_nearest_exact2d(images, out, std::nullopt, std::nullopt);
  if (resample != Resample::kBilinear && resample != Resample::kBicubic)
    throw std::runtime_error("resample " + std::to_string(static_cast<int>(resample)) +
                             " (PIL's LANCZOS, BOX or HAMMING) is not supported; use 2 (bilinear) or 3 (bicubic)");
  const bool bicubic = resample == Resample::kBicubic;
  auto run = [&](const at::Tensor& x) {
    return bicubic ? at::_upsample_bicubic2d_aa(x, out, false, std::nullopt, std::nullopt)
                   : at::_upsample_bilinear2d_aa(x, out, false, std::nullopt, std::nullopt);
  };
  if (native_uint8(resample)) return run(images.contiguous());
  auto y = run(images.to(at::kFloat));
  if (bicubic) y.clamp_(0, 255);
  return y.round_().to(at::kByte);
}

}  // namespace peft
