// transformers' convert_to_rgb for PIL images: RGBA / LA composited onto opaque white
// with PIL's Image.alpha_composite, gray replicated into three channels.
#include <stdexcept>

#include "peft/image.h"

namespace peft {
namespace {

// PIL's AlphaComposite.c (scalar path) with dst = opaque white: 7 extra bits of precision,
// divisions by 255 done as ((x >> 8) + x) >> 8 with rounding.
uint8_t over_white(uint32_t value, uint32_t alpha) {
  constexpr uint32_t kPrecisionBits = 7;
  const uint32_t blend = 255 * (255 - alpha);
  const uint32_t outa255 = alpha * 255 + blend;
  const uint32_t coef1 = alpha * 255 * 255 * (1u << kPrecisionBits) / outa255;
  const uint32_t coef2 = 255 * (1u << kPrecisionBits) - coef1;
  const uint32_t tmp = value * coef1 + 255 * coef2 + (0x80u << kPrecisionBits);
  return static_cast<uint8_t>((((tmp >> 8) + tmp) >> 8) >> kPrecisionBits);
}

}  // namespace

Image to_rgb(const Image& image) {
  if (image.channels < 1 || image.channels > 4) throw std::invalid_argument("to_rgb: bad channel count");
  if (image.channels == 3) return image;
  Image out{image.width, image.height, 3, {}};
  const size_t n = static_cast<size_t>(image.width * image.height);
  out.pixels.resize(n * 3);
  const uint8_t* in = image.pixels.data();
  uint8_t* o = out.pixels.data();
  const bool gray = image.channels <= 2, alpha = image.channels % 2 == 0;
  for (size_t i = 0; i < n; ++i, in += image.channels, o += 3) {
    const uint8_t a = alpha ? in[image.channels - 1] : 255;
    for (int c = 0; c < 3; ++c) {
      const uint8_t v = in[gray ? 0 : c];
      o[c] = !alpha ? v : a == 0 ? 255 : over_white(v, a);
    }
  }
  return out;
}

}  // namespace peft
