// Reading an image file: bounded read, format told apart by its signature.
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <new>
#include <stdexcept>

#include "peft/image.h"

namespace peft {
namespace {

bool starts_with(std::span<const uint8_t> b, const char* sig, size_t n) {
  return b.size() >= n && std::memcmp(b.data(), sig, n) == 0;
}

std::string what_format(std::span<const uint8_t> b) {
  if (b.empty()) return "an empty file";
  if (starts_with(b, "GIF8", 4)) return "GIF";
  if (starts_with(b, "BM", 2)) return "BMP";
  if (starts_with(b, "RIFF", 4)) return "RIFF (WebP?)";
  if (starts_with(b, "II*\0", 4) || starts_with(b, "MM\0*", 4)) return "TIFF";
  if (starts_with(b, "\x93NUMPY", 6)) return "a .npy array";
  return "not an image PIL's PNG or JPEG reader would open";
}

}  // namespace

Image decode_image(std::span<const uint8_t> bytes, const std::string& name, int64_t max_pixels) {
  try {
    if (starts_with(bytes, "\x89PNG\r\n\x1a\n", 8)) return decode_png(bytes, name, max_pixels);
    if (starts_with(bytes, "\xff\xd8\xff", 3)) return decode_jpeg(bytes, name, max_pixels);
  } catch (const std::bad_alloc&) {  // a real image too large for the memory at hand
    throw std::runtime_error(name + ": out of memory decoding the image");
  }
  throw std::runtime_error(name + ": unsupported image format (" + what_format(bytes) + "); PNG and JPEG are read");
}

Image read_image(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error(path + ": cannot open image: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw std::runtime_error(path + ": not a regular file");
  if (st.st_size > kMaxImageFileBytes)
    throw std::runtime_error(path + ": " + std::to_string(st.st_size) + " bytes is more than the limit of " +
                             std::to_string(kMaxImageFileBytes) + " for an image file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open image: " + std::strerror(errno));
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (in.gcount() != static_cast<std::streamsize>(bytes.size())) throw std::runtime_error(path + ": short read");
  return decode_image(bytes, path);
}

}  // namespace peft
