// PNG through libpng, producing the pixels PIL's PngImagePlugin gives: palettes and low
// bit depths expanded, tRNS as alpha, 16-bit color reduced to its high byte, 16-bit gray
// ("I;16") clipped to 255 as PIL's convert("RGB") / ("L") does. No gamma or ICC
// correction (PIL applies none).
#include <png.h>

#include <cstring>
#include <stdexcept>

#include "peft/image.h"

namespace peft {
namespace {

struct PngSource {
  std::span<const uint8_t> bytes;
  size_t offset = 0;
};

struct PngError {
  char message[200] = "corrupt PNG";
};

void read_from_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->bytes.size() - src->offset) png_error(png, "truncated file");
  std::memcpy(out, src->bytes.data() + src->offset, n);
  src->offset += n;
}

void on_error(png_structp png, png_const_charp msg) {
  auto* err = static_cast<PngError*>(png_get_error_ptr(png));
  std::snprintf(err->message, sizeof err->message, "%s", msg);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // PIL ignores ancillary-chunk complaints too

struct PngHeader {
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  int64_t raw_bytes = 0;  // the decompressed stream: filter byte + packed row per row
};

// What libpng must do to give 8-bit gray, gray+alpha, RGB or RGBA rows; returns channels.
int set_transforms(png_structp png, png_infop info, const PngHeader& h, bool* gray16) {
  const bool has_trns = png_get_valid(png, info, PNG_INFO_tRNS);
  *gray16 = h.color_type == PNG_COLOR_TYPE_GRAY && h.bit_depth == 16 && !has_trns;
  if (h.color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (h.color_type == PNG_COLOR_TYPE_GRAY && h.bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (has_trns) png_set_tRNS_to_alpha(png);
  if (h.bit_depth == 16 && !*gray16) png_set_strip_16(png);  // PIL's ";16B" raw modes keep the high byte
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  return png_get_channels(png, info);
}

// Runs libpng; returns false with err->message set on failure. Only C objects live in
// this frame, so longjmp out of libpng skips no destructor.
bool run_libpng(PngSource* src, int64_t max_pixels, PngError* err, Image* out) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, err, on_error, on_warning);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  png_bytep* volatile rows = nullptr;
  if (!info || setjmp(png_jmpbuf(png))) {
    delete[] rows;
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    return false;
  }
  png_set_read_fn(png, src, read_from_memory);
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_set_chunk_malloc_max(png, 64u << 20);  // text and ICC chunks: PIL's own cap is similar
  png_read_info(png, info);
  PngHeader h;
  png_get_IHDR(png, info, &h.width, &h.height, &h.bit_depth, &h.color_type, nullptr, nullptr, nullptr);
  if (int64_t{h.width} * h.height > max_pixels) {
    std::snprintf(err->message, sizeof err->message, "%ux%u pixels is more than the limit of %lld", h.width, h.height,
                  static_cast<long long>(max_pixels));
    png_longjmp(png, 1);
  }
  // Deflate expands at most ~1032x: a header that declares more than the file can hold is
  // refused before its pixels are allocated.
  const int64_t row_bytes = (int64_t{h.width} * h.bit_depth * png_get_channels(png, info) + 7) / 8 + 1;
  if (row_bytes * h.height > 1040 * static_cast<int64_t>(src->bytes.size()) + (1 << 16)) {
    std::snprintf(err->message, sizeof err->message, "declares %ux%u pixels, more than its %zu bytes can hold",
                  h.width, h.height, src->bytes.size());
    png_longjmp(png, 1);
  }
  bool gray16 = false;
  const int channels = set_transforms(png, info, h, &gray16);
  const size_t stride = png_get_rowbytes(png, info);
  out->width = h.width;
  out->height = h.height;
  out->channels = channels;
  out->pil_special_mode = h.color_type == PNG_COLOR_TYPE_PALETTE || h.bit_depth == 1 || gray16;
  std::vector<uint8_t>& px = out->pixels;  // the caller's; resized before any row is read
  px.assign(stride * h.height, 0);
  rows = new png_bytep[h.height];
  for (png_uint_32 y = 0; y < h.height; ++y) rows[y] = px.data() + y * stride;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  delete[] rows;
  png_destroy_read_struct(&png, &info, nullptr);
  if (gray16) {  // big-endian samples, clipped to 8 bits as PIL converts "I;16"
    for (size_t i = 0, n = size_t{h.width} * h.height; i < n; ++i)
      px[i] = px[2 * i] ? 255 : px[2 * i + 1];
    px.resize(size_t{h.width} * h.height);
  }
  return true;
}

}  // namespace

Image decode_png(std::span<const uint8_t> bytes, const std::string& name, int64_t max_pixels) {
  PngSource src{bytes};
  PngError err;
  Image out;
  if (!run_libpng(&src, max_pixels, &err, &out)) throw std::runtime_error(name + ": bad PNG: " + err.message);
  return out;
}

}  // namespace peft
