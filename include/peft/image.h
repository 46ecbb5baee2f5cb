// Images decoded from PNG and JPEG files (Debian's libpng and libjpeg-turbo), as 8-bit
// pixels the way PIL opens them, and PIL's conversion to RGB that transformers' image
// processors apply (transparency composited onto white).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace peft {

// An 8-bit image: `height` rows of `width * channels` bytes. Channels: 1 (gray), 2 (gray
// and alpha), 3 (RGB) or 4 (RGBA).
struct Image {
  int64_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  // Not plain 8-bit gray/RGB in PIL's terms (palette "P", bilevel "1", 16-bit "I;16"):
  // PIL hands such images to numpy as indices, bools or 16-bit values, so transformers
  // needs do_convert_rgb for them; pixels here are always the converted 8-bit values.
  bool pil_special_mode = false;
};

// PIL refuses images above 2 * Image.MAX_IMAGE_PIXELS (DecompressionBombError); so do we,
// before decoding a row. Memory grows with the rows actually decoded, never with what a
// header declares.
inline constexpr int64_t kMaxImagePixels = 2 * 89478485;
// Files larger than this are refused before they are read.
inline constexpr int64_t kMaxImageFileBytes = int64_t{1} << 30;

// Reads a PNG or JPEG file, told apart by its first bytes (not its name). Every failure
// (missing, truncated or corrupt file, unsupported format, too many pixels) throws
// std::runtime_error with one line naming the file.
Image read_image(const std::string& path);
// The same for bytes in memory; `name` names them in errors. `max_pixels` lowers the
// limit (the fuzzer's budget: a sanitizer build decodes ~6M pixels a second).
Image decode_image(std::span<const uint8_t> bytes, const std::string& name, int64_t max_pixels = kMaxImagePixels);
Image decode_png(std::span<const uint8_t> bytes, const std::string& name, int64_t max_pixels = kMaxImagePixels);
Image decode_jpeg(std::span<const uint8_t> bytes, const std::string& name, int64_t max_pixels = kMaxImagePixels);

// transformers' convert_to_rgb on a PIL image: an image with alpha is composited onto
// opaque white with PIL's alpha_composite (its integer arithmetic), gray is replicated.
Image to_rgb(const Image& image);

}  // namespace peft
