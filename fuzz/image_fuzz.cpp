// Feeds arbitrary bytes to the PNG and JPEG decoders (libpng, libjpeg-turbo) and the RGB
// conversion. Every outcome must be an image whose pixel count matches its size, or a
// std::runtime_error; never a crash, a sanitizer report, a hang or a leak.
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "peft/image.h"

// 4M pixels decode in under a second with ASan and UBSan; the library's own limit (PIL's
// 179M) would take half a minute, past libFuzzer's -timeout, for a valid tiny gray JPEG.
constexpr int64_t kFuzzMaxPixels = int64_t{1} << 22;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto im = peft::decode_image({data, size}, "fuzz", kFuzzMaxPixels);
    if (im.pixels.size() != static_cast<size_t>(im.width * im.height * im.channels)) std::abort();
    const auto rgb = peft::to_rgb(im);
    if (rgb.channels != 3 || rgb.pixels.size() != static_cast<size_t>(im.width * im.height * 3)) std::abort();
  } catch (const std::runtime_error&) {
  }
  return 0;
}
