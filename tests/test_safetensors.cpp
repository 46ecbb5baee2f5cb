// safetensors: interop with the Python package both ways, and every corruption the
// reader must reject with a specific message.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "peft/safetensors.h"
#include "pyserver.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace peft {
namespace {

fs::path scratch(const std::string& name) {
  fs::path d = fs::path(PEFT_SCRATCH_DIR) / "safetensors";
  fs::create_directories(d);
  return d / name;
}

// Exit status of tests/parity/safetensors_ref.py ARGS; its output is printed.
int run_python(const std::string& args) {
  int status = 0;
  std::fputs(test::run_parity_script("safetensors_ref.py", args, &status).c_str(), stdout);
  return status;
}

// The same tensors tests/parity/safetensors_ref.py makes: element i of each [2,3,5]
// tensor follows a per-dtype rule exactly representable in that dtype.
NamedTensors expected_tensors() {
  auto i = at::arange(30, at::kLong).view({2, 3, 5});
  auto f = (i - 7).to(at::kDouble) * 0.375;
  return {
      {"F32", f.to(at::kFloat)},
      {"F16", f.to(at::kHalf)},
      {"BF16", f.to(at::kBFloat16)},
      {"F64", f},
      {"I64", (i - 7) * int64_t{1000000007}},
      {"I32", ((i - 7) * 100003).to(at::kInt)},
      {"I16", ((i - 7) * 1009).to(at::kShort)},
      {"I8", (i - 7).to(at::kChar)},
      {"U8", (i * 8).to(at::kByte)},
      {"BOOL", (i.remainder(3) == 0)},
      {"SCALAR_F32", at::scalar_tensor(2.5, at::kFloat)},
      {"EMPTY_F32", at::zeros({0, 4}, at::kFloat)},
  };
}

TEST(SafetensorsInterop, ReadsEveryDtypeWrittenByPython) {
  const auto path = scratch("from_python.safetensors");
  ASSERT_EQ(run_python("write " + path.string()), 0);
  SafetensorsFile f(path.string());
  EXPECT_EQ(f.metadata().at("source"), "python");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  for (const auto& [name, want] : expected_tensors()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(f.contains(name));
    auto got = f.get(name);
    EXPECT_EQ(got.scalar_type(), want.scalar_type());
    EXPECT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(got.equal(want));
  }
}

TEST(SafetensorsInterop, PythonReadsOurFilesBitForBit) {
  const auto path = scratch("from_cpp.safetensors");
  save_safetensors(path.string(), expected_tensors(), {{"source", "cpp"}, {"format", "pt"}});
  EXPECT_FALSE(fs::exists(path.string() + ".tmp")) << "the temporary file must be renamed away";
  EXPECT_EQ(run_python("check " + path.string()), 0);
}

TEST(Safetensors, RoundTripKeepsValuesAndMetadata) {
  const auto path = scratch("roundtrip.safetensors");
  auto t = expected_tensors();
  // Non-contiguous input is written in logical order.
  t.emplace_back("TRANSPOSED", at::arange(6, at::kFloat).view({2, 3}).t());
  save_safetensors(path.string(), t, {{"k", "v"}});
  SafetensorsFile f(path.string());
  EXPECT_EQ(f.metadata().at("k"), "v");
  for (const auto& [name, want] : t) EXPECT_TRUE(f.get(name).equal(want.contiguous())) << name;
}

TEST(Safetensors, GetIsZeroCopy) {
  const auto path = scratch("zerocopy.safetensors");
  save_safetensors(path.string(), {{"w", at::ones({64, 64})}});
  SafetensorsFile f(path.string());
  auto a = f.get("w"), b = f.get("w");
  EXPECT_EQ(a.data_ptr(), b.data_ptr()) << "two reads of one tensor should alias the same mapped bytes";
  // Writing into a view must not change the file (copy-on-write mapping).
  a.fill_(3.0);
  EXPECT_TRUE(SafetensorsFile(path.string()).get("w").equal(at::ones({64, 64})));
}

TEST(Safetensors, TensorOutlivesFileObject) {
  const auto path = scratch("outlive.safetensors");
  save_safetensors(path.string(), {{"w", at::full({5}, 7.0)}});
  at::Tensor t;
  { t = SafetensorsFile(path.string()).get("w"); }
  EXPECT_TRUE(t.equal(at::full({5}, 7.0)));
}

// --- corrupt input -----------------------------------------------------------------

// A file with the given raw header JSON and `data_bytes` zero bytes after it.
fs::path raw_file(const std::string& name, const std::string& header, size_t data_bytes,
                  int64_t declared_len = -1) {
  auto p = scratch(name);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  uint64_t n = declared_len >= 0 ? static_cast<uint64_t>(declared_len) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
  return p;
}

std::string error_of(const fs::path& p) {
  try {
    SafetensorsFile f(p.string());
  } catch (const SafetensorsError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SafetensorsCorrupt, FileShorterThanLengthPrefix) {
  auto p = scratch("short.safetensors");
  std::ofstream(p, std::ios::binary) << "abc";
  EXPECT_THAT(error_of(p), HasSubstr("shorter than the 8-byte header length"));
}

TEST(SafetensorsCorrupt, HeaderLengthPastEndOfFile) {
  auto p = raw_file("hdr_past_end.safetensors", "{}", 0, 1000);
  auto err = error_of(p);
  EXPECT_THAT(err, HasSubstr("header length 1000 runs past the end of the file"));
  EXPECT_THAT(err, HasSubstr(p.string()));
}

TEST(SafetensorsCorrupt, InvalidJson) {
  EXPECT_THAT(error_of(raw_file("bad_json.safetensors", "{\"a\": [1, ", 0)), HasSubstr("header is not valid JSON"));
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  EXPECT_THAT(error_of(raw_file("array.safetensors", "[1,2]", 0)), HasSubstr("header JSON is not an object"));
}

TEST(SafetensorsCorrupt, UnknownDtype) {
  auto h = R"({"w":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_THAT(error_of(raw_file("dtype.safetensors", h, 8)), HasSubstr("tensor 'w': unknown dtype 'F7'"));
}

TEST(SafetensorsCorrupt, ShapeDoesNotMatchByteCount) {
  auto h = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})";
  EXPECT_THAT(error_of(raw_file("shape.safetensors", h, 20)),
              HasSubstr("tensor 'w': shape [2,3] of F32 needs 24 bytes but data_offsets span 20"));
}

TEST(SafetensorsCorrupt, OffsetsOutOfRange) {
  // A truncated file: the header promises 16 bytes, 8 are there.
  auto h = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  EXPECT_THAT(error_of(raw_file("truncated.safetensors", h, 8)),
              HasSubstr("tensor 'w' data_offsets [0, 16) lie outside the 8-byte data buffer"));
}

TEST(SafetensorsCorrupt, OverlappingOffsets) {
  auto h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_THAT(error_of(raw_file("overlap.safetensors", h, 12)), HasSubstr("tensors 'a' and 'b' overlap"));
}

TEST(SafetensorsCorrupt, OffsetsEndBeforeBegin) {
  auto h = R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})";
  EXPECT_THAT(error_of(raw_file("reversed.safetensors", h, 8)), HasSubstr("data_offsets end before they begin"));
}

TEST(SafetensorsCorrupt, NegativeShapeAndMissingFields) {
  EXPECT_THAT(error_of(raw_file("neg.safetensors", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0)),
              HasSubstr("shape entries must be non-negative integers"));
  EXPECT_THAT(error_of(raw_file("nodtype.safetensors", R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4)),
              HasSubstr("missing or non-string 'dtype'"));
  EXPECT_THAT(error_of(raw_file("meta.safetensors", R"({"__metadata__":{"x":1}})", 0)),
              HasSubstr("__metadata__ value of 'x' is not a string"));
}

TEST(SafetensorsCorrupt, MissingTensorNamesFileAndKey) {
  const auto path = scratch("one.safetensors");
  save_safetensors(path.string(), {{"w", at::ones({2})}});
  SafetensorsFile f(path.string());
  try {
    f.get("nope");
    FAIL() << "expected an error";
  } catch (const SafetensorsError& e) {
    EXPECT_THAT(e.what(), HasSubstr("one.safetensors: no tensor named 'nope'"));
  }
}

}  // namespace
}  // namespace peft
