// JPEG through libjpeg(-turbo) with the settings PIL's decoder uses (its defaults: the
// accurate integer IDCT, fancy upsampling), to 8-bit gray or RGB. CMYK/YCCK files, which
// PIL opens in its own CMYK mode, are refused.
// jpeglib.h uses size_t and FILE without including their headers.
#include <csetjmp>
#include <cstddef>
#include <cstdio>

#include <jpeglib.h>
#include <jerror.h>
#include <stdexcept>

#include "peft/image.h"

namespace peft {
namespace {

// A progressive file can hold thousands of scans of almost nothing; libjpeg-turbo's own
// tools stop at a limit too (djpeg -maxscans).
constexpr int kMaxScans = 1000;

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "corrupt JPEG";
  bool truncated = false;
};

void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  cinfo->err->format_message(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings about extraneous bytes are ignored, as PIL ignores them; the end of the data
// before the end of the image is remembered (libjpeg pads such a file with gray).
void on_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) reinterpret_cast<JpegError*>(cinfo->err)->truncated = true;
}

void on_progress(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxScans) {
    std::snprintf(reinterpret_cast<JpegError*>(cinfo->err)->message, JMSG_LENGTH_MAX, "more than %d scans", kMaxScans);
    std::longjmp(reinterpret_cast<JpegError*>(cinfo->err)->jump, 1);
  }
}

// Runs libjpeg; false with err->message set on failure. Only C objects live in this
// frame (the vector is the caller's), so longjmp skips no destructor.
bool run_libjpeg(std::span<const uint8_t> bytes, int64_t max_pixels, JpegError* err, Image* out) {
  jpeg_decompress_struct cinfo;
  jpeg_progress_mgr progress;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = on_error;
  err->mgr.emit_message = on_message;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  progress.progress_monitor = on_progress;
  cinfo.progress = &progress;
  cinfo.mem->max_memory_to_use = 1l << 30;
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(err->message, JMSG_LENGTH_MAX, "CMYK JPEG is not supported");
    std::longjmp(err->jump, 1);
  }
  if (int64_t{cinfo.image_width} * cinfo.image_height > max_pixels) {
    std::snprintf(err->message, JMSG_LENGTH_MAX, "%ux%u pixels is more than the limit of %lld", cinfo.image_width,
                  cinfo.image_height, static_cast<long long>(max_pixels));
    std::longjmp(err->jump, 1);
  }
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&cinfo);
  out->width = cinfo.output_width;
  out->height = cinfo.output_height;
  out->channels = cinfo.output_components;
  const size_t stride = size_t{cinfo.output_width} * cinfo.output_components;
  // Rows are added as they are decoded: a truncated file never costs its declared size, nor
  // the time to decode the gray rows libjpeg would invent past the end of its data.
  while (cinfo.output_scanline < cinfo.output_height && !err->truncated) {
    out->pixels.resize(out->pixels.size() + stride);
    JSAMPROW row = out->pixels.data() + out->pixels.size() - stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  // PIL raises on a truncated file (ImageFile.LOAD_TRUNCATED_IMAGES is off by default).
  if (err->truncated) {
    std::snprintf(err->message, JMSG_LENGTH_MAX, "truncated file (premature end of JPEG data)");
    std::longjmp(err->jump, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

}  // namespace

Image decode_jpeg(std::span<const uint8_t> bytes, const std::string& name, int64_t max_pixels) {
  JpegError err;
  Image out;
  if (!run_libjpeg(bytes, max_pixels, &err, &out)) throw std::runtime_error(name + ": bad JPEG: " + err.message);
  return out;
}

}  // namespace peft
