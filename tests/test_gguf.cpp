// GGUF: reading, dequantizing and writing against the Python gguf package, llama
// mapping against transformers (fixtures: tests/parity/make_gguf.py), and every
// corruption the reader must reject with a message naming the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli_runner.h"
#include "peft/gguf.h"
#include "peft/gguf_llama.h"
#include "pyserver.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Json = nlohmann::json;

namespace peft {
namespace {

// ---------------------------------------------------------------- helpers

fs::path fixture(const std::string& rel) { return fs::path(PEFT_GGUF_DIR) / rel; }

const Json& manifest() {
  static const Json m = [] {
    std::ifstream in(fixture("manifest.json"));
    return Json::parse(in);
  }();
  return m;
}

// A tokenizer case of the manifest, by name.
const Json& tok_case(const std::string& name) {
  for (const auto& c : manifest()["tokenizers"])
    if (c["name"] == name) return c;
  throw std::runtime_error("no tokenizer case " + name);
}

fs::path scratch(const std::string& name) {
  const fs::path d = fs::path(PEFT_SCRATCH_DIR) / "gguf";
  fs::create_directories(d);
  return d / name;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<float> read_f32(const fs::path& p) {
  const std::string b = read_file(p);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

void write_json(const fs::path& p, const nlohmann::ordered_json& j) {
  std::ofstream(p) << j.dump(2) << "\n";
}

// Exit status of tests/parity/gguf_check.py ARGS; its output is printed.
int run_python(const std::string& args) {
  int status = 0;
  std::fputs(test::run_parity_script("gguf_check.py", args, &status).c_str(), stdout);
  return status;
}

// Bit equality of float arrays; on failure, names the first differing element.
::testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << got.size() << " values, expected " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], 4) != 0)
      return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << ", expected " << want[i];
  return ::testing::AssertionSuccess();
}

std::vector<float> dequantize_rows(const GgufFile& f, const GgufTensorInfo& t, int64_t rows) {
  const uint64_t nbytes = row_bytes(t.type, t.dims[0]) * rows;
  EXPECT_LE(nbytes, t.n_bytes);
  std::vector<float> out(static_cast<size_t>(t.dims[0] * rows));
  dequantize(t.type, f.data(t).data(), t.dims[0] * rows, out.data());
  return out;
}

// Runs `fn`, which must throw GgufError; returns the message.
template <class Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const GgufError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no GgufError thrown";
  return "";
}

// ---------------------------------------------------------------- dequantization

TEST(GgufDequant, SyntheticBitIdenticalForEveryType) {
  std::set<std::string> types;
  for (const auto& c : manifest()["synthetic"]) {
    GgufFile f(fixture(c["file"]).string());
    types.insert(c["type"].get<std::string>());
    for (const auto& t : c["tensors"]) {
      const std::string name = t["name"];
      SCOPED_TRACE(c["type"].get<std::string>() + " " + name);
      EXPECT_EQ(f.info(name).dims, t["dims"].get<std::vector<int64_t>>());
      EXPECT_EQ(ggml_type_name(f.info(name).type), c["type"].get<std::string>());
      EXPECT_TRUE(same_bits(f.dequantize(name), read_f32(fixture(t["expected"]))));
    }
  }
  EXPECT_EQ(types, (std::set<std::string>{"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K",
                                          "Q3_K", "Q4_K", "Q5_K", "Q6_K"}));
}

TEST(GgufDequant, RealTensorsBitIdentical) {
  const Json& real = manifest()["real"];
  GgufFile f(real["file"]);
  for (const auto& d : real["dequant"]) {
    const std::string name = d["name"];
    SCOPED_TRACE(name);
    const auto& t = f.info(name);
    EXPECT_TRUE(same_bits(dequantize_rows(f, t, d["rows"]), read_f32(fixture(d["expected"]))));
  }
}

TEST(GgufDequant, UnsupportedTypeIsAnError) {
  std::vector<uint8_t> block(256);
  float out[256];
  EXPECT_THAT(error_of([&] { dequantize(GgmlType::IQ2_XXS, block.data(), 256, out); }), HasSubstr("IQ2_XXS"));
  EXPECT_THAT(error_of([&] { dequantize(GgmlType::Q8_0, block.data(), 31, out); }), HasSubstr("32-element blocks"));
  EXPECT_FALSE(can_dequantize(GgmlType::I32));
}

TEST(GgufQuantize, ByteIdenticalToGgufPy) {
  for (const auto& c : manifest()["quantize"]) {
    SCOPED_TRACE(c["type"].get<std::string>());
    GgmlType type;
    ASSERT_TRUE(ggml_type_from_name(c["type"], &type));
    const auto input = read_f32(fixture(c["input"]));
    const std::string want = read_file(fixture(c["expected"]));
    ASSERT_EQ(row_bytes(type, static_cast<int64_t>(input.size())), want.size());
    std::string got(want.size(), '\0');
    quantize(type, input.data(), static_cast<int64_t>(input.size()), reinterpret_cast<uint8_t*>(got.data()));
    size_t first = 0;
    while (first < got.size() && got[first] == want[first]) ++first;
    EXPECT_EQ(first, got.size()) << "first differing byte " << first;
  }
}

// ---------------------------------------------------------------- reading

TEST(GgufReader, RealFileAsGgufPyReadsIt) {
  const Json& real = manifest()["real"];
  GgufFile f(real["file"]);
  EXPECT_EQ(f.header().version, real["version"].get<uint32_t>());
  EXPECT_EQ(f.header().alignment, real["alignment"].get<uint64_t>());
  EXPECT_EQ(f.header().data_start, real["data_start"].get<uint64_t>());

  ASSERT_EQ(f.metadata().size(), real["fields"].size());
  size_t i = 0;
  for (const auto& field : real["fields"]) {
    const auto& [key, v] = f.metadata().entries()[i++];
    SCOPED_TRACE(key);
    ASSERT_EQ(key, field["key"].get<std::string>());
    std::vector<std::string> types{gguf_type_name(v.type())};
    if (v.is_array()) types.push_back(gguf_type_name(v.elem_type()));
    EXPECT_EQ(types, field["types"].get<std::vector<std::string>>());
    if (!v.is_array()) {
      const Json& want = field["value"];
      if (v.type() == GgufType::STRING) EXPECT_EQ(v.as_string(), want.get<std::string>());
      else if (v.type() == GgufType::BOOL) EXPECT_EQ(v.as_bool(), want.get<bool>());
      else if (v.is_float()) EXPECT_EQ(v.as_float(), want.get<double>());
      else EXPECT_EQ(v.as_int(), want.get<int64_t>());
      continue;
    }
    Json got = Json::array();
    if (v.elem_type() == GgufType::STRING) for (const auto& s : v.as_string_array()) got.push_back(s);
    else for (int64_t x : v.as_int_array()) got.push_back(x);
    if (field.contains("value")) {
      EXPECT_EQ(got, field["value"]);
    } else {
      ASSERT_EQ(got.size(), field["len"].get<size_t>());
      EXPECT_EQ(Json(std::vector<Json>(got.begin(), got.begin() + 4)), field["head"]);
      EXPECT_EQ(Json(std::vector<Json>(got.end() - 2, got.end())), field["tail"]);
    }
  }

  ASSERT_EQ(f.tensors().size(), real["tensors"].size());
  std::map<std::string, int> counts;
  for (size_t k = 0; k < f.tensors().size(); ++k) {
    const auto& t = f.tensors()[k];
    const Json& want = real["tensors"][k];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, want["name"].get<std::string>());
    EXPECT_EQ(t.dims, want["dims"].get<std::vector<int64_t>>());
    EXPECT_EQ(ggml_type_name(t.type), want["type"].get<std::string>());
    EXPECT_EQ(f.header().data_start + t.offset, want["data_offset"].get<uint64_t>());
    EXPECT_EQ(t.n_bytes, want["n_bytes"].get<uint64_t>());
    EXPECT_EQ(f.data(t).size(), t.n_bytes);
    ++counts[ggml_type_name(t.type)];
  }
  // What SmolLM2-135M-Instruct.Q4_1.gguf holds: token_embd in Q8_0, norms in F32.
  EXPECT_EQ(counts, (std::map<std::string, int>{{"F32", 61}, {"Q4_1", 210}, {"Q8_0", 1}}));
}

TEST(GgufReader, TypedGettersNameFileAndKey) {
  const std::string path = manifest()["real"]["file"];
  GgufFile f(path);
  const GgufMetadata& m = f.metadata();
  EXPECT_EQ(m.get_u32("llama.block_count"), 30u);
  EXPECT_EQ(m.get_int("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(m.get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ(m.get_float("llama.attention.layer_norm_rms_epsilon"), static_cast<double>(1e-5f));
  EXPECT_FALSE(m.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(m.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(m.get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(m.get_string_array("tokenizer.ggml.tokens")[1], "<|im_start|>");
  EXPECT_EQ(m.get_int_array("tokenizer.ggml.token_type").at(0), 3);
  EXPECT_EQ(m.get_string_array("general.languages"), std::vector<std::string>{"en"});

  const std::string e1 = error_of([&] { m.get_u32("general.name"); });
  EXPECT_THAT(e1, HasSubstr(path));
  EXPECT_THAT(e1, HasSubstr("'general.name'"));
  EXPECT_THAT(e1, HasSubstr("expected UINT32, found STRING"));
  EXPECT_THAT(error_of([&] { m.get_float_array("tokenizer.ggml.tokens"); }),
              HasSubstr("found ARRAY of STRING"));
  EXPECT_THAT(error_of([&] { m.get_string("no.such.key"); }), HasSubstr("'no.such.key': missing"));
  EXPECT_THAT(error_of([&] { f.info("nope.weight"); }), HasSubstr("no tensor named 'nope.weight'"));
}

TEST(GgufReader, RejectsNonRegularFiles) {
  EXPECT_THAT(error_of([] { GgufFile f("/dev/null"); }), HasSubstr("not a regular file"));
  EXPECT_THAT(error_of([] { GgufFile f(fs::temp_directory_path().string()); }), HasSubstr("not a regular file"));
  EXPECT_THAT(error_of([] { GgufFile f("/no/such/file.gguf"); }), HasSubstr("cannot open"));
}

// ---------------------------------------------------------------- writing

// The content make_gguf.py's writer_reference_kvs / _tensors give GGUFWriter.
GgufWriter reference_writer(bool align64) {
  GgufWriter w;
  auto& m = w.metadata();
  m.add("general.architecture", GgufValue::string("testarch"));
  m.add("t.u8", GgufValue::u8(200));
  m.add("t.i8", GgufValue::i8(-100));
  m.add("t.u16", GgufValue::u16(65000));
  m.add("t.i16", GgufValue::i16(-30000));
  m.add("t.u32", GgufValue::u32(4000000000u));
  m.add("t.i32", GgufValue::i32(-2000000000));
  m.add("t.f32", GgufValue::f32(-1.5f));
  m.add("t.u64", GgufValue::u64((uint64_t{1} << 63) + 5));
  m.add("t.i64", GgufValue::i64(-(int64_t{1} << 40)));
  m.add("t.f64", GgufValue::f64(1.0 / 3.0));
  m.add("t.true", GgufValue::boolean(true));
  m.add("t.false", GgufValue::boolean(false));
  m.add("t.str", GgufValue::string("h\u00e9llo w\u00f6rld \u2713"));
  m.add("t.arr_i32", GgufValue::int_array(GgufType::I32, {1, -2, 3}));
  m.add("t.arr_f32", GgufValue::float_array(GgufType::F32, {0.5, -2.25}));
  m.add("t.arr_str", GgufValue::string_array({"a", "bc", "\u00e9"}));
  m.add("t.arr_bool", GgufValue::bool_array({true, false, true}));
  m.add("t.nested", GgufValue::array_of_arrays({GgufValue::int_array(GgufType::I32, {1, 2}),
                                                GgufValue::int_array(GgufType::I32, {3})}));
  m.add("t.arr_u8", GgufValue::int_array(GgufType::U8, {1, 255}));
  m.add("t.arr_u64", GgufValue::number_array(GgufType::U64, {0, ~uint64_t{0}}));
  m.add("t.arr_i64", GgufValue::int_array(GgufType::I64, {-(int64_t{1} << 62), 7}));
  m.add("t.arr_f64", GgufValue::float_array(GgufType::F64, {0.1, -1e300}));
  if (align64) m.add("general.alignment", GgufValue::u32(64));

  std::vector<float> a(15), q(128);
  for (int i = 0; i < 15; ++i) a[i] = static_cast<float>(i - 7) * 0.375f;
  for (int i = 0; i < 128; ++i) q[i] = static_cast<float>(i - 60) / 16;
  std::vector<uint8_t> fa(60), fh(14), fq(136), fi(24);
  quantize(GgmlType::F32, a.data(), 15, fa.data());
  std::vector<float> h(7);
  for (int i = 0; i < 7; ++i) h[i] = static_cast<float>(i - 3);
  quantize(GgmlType::F16, h.data(), 7, fh.data());
  quantize(GgmlType::Q8_0, q.data(), 128, fq.data());
  for (int i = 0; i < 6; ++i) {
    const int32_t v = i * 1000 - 2000;
    std::memcpy(fi.data() + 4 * i, &v, 4);
  }
  w.add_tensor("t.f32", {5, 3}, GgmlType::F32, fa);
  w.add_tensor("t.f16", {7}, GgmlType::F16, fh);
  w.add_tensor("t.q8_0", {64, 2}, GgmlType::Q8_0, fq);
  w.add_tensor("t.i32", {3, 2}, GgmlType::I32, fi);
  return w;
}

TEST(GgufWriter, ByteIdenticalToGgufPyWriter) {
  for (bool align64 : {false, true}) {
    const std::string ref = manifest()["writer"][align64 ? "align64" : "default"];
    SCOPED_TRACE(ref);
    const GgufWriter w = reference_writer(align64);
    const std::string want = read_file(fixture(ref));
    EXPECT_TRUE(w.to_bytes() == want);
    const fs::path out = scratch(ref);
    w.write(out.string());
    EXPECT_TRUE(read_file(out) == want);
    // and our reader reads gguf-py's file back to the same values
    GgufFile f(fixture(ref).string());
    EXPECT_EQ(f.metadata().entries(), w.metadata().entries());
    EXPECT_EQ(f.header().alignment, align64 ? 64u : 32u);
    EXPECT_EQ(f.metadata().at("t.u64").as_uint(), (uint64_t{1} << 63) + 5);
    EXPECT_EQ(f.metadata().at("t.nested").as_array_of_arrays()[1].as_int_array(), std::vector<int64_t>{3});
    EXPECT_EQ(f.metadata().get_float_array("t.arr_f64"), (std::vector<double>{0.1, -1e300}));
    EXPECT_EQ(f.dequantize("t.f16"), (std::vector<float>{-3, -2, -1, 0, 1, 2, 3}));
  }
}

TEST(GgufWriter, RewritesTheRealFileIdentically) {
  const std::string path = manifest()["real"]["file"];
  GgufFile f(path);
  GgufWriter w;
  for (const auto& [key, value] : f.metadata().entries()) w.metadata().add(key, value);
  for (const auto& t : f.tensors()) w.add_tensor_view(t.name, t.dims, t.type, f.data(t));
  const fs::path out = scratch("smollm2_rewritten.gguf");
  w.write(out.string());
  {
    GgufFile back(out.string());
    EXPECT_EQ(back.metadata().entries(), f.metadata().entries());
    ASSERT_EQ(back.tensors().size(), f.tensors().size());
    for (size_t i = 0; i < f.tensors().size(); ++i) {
      const auto &a = f.tensors()[i], &b = back.tensors()[i];
      ASSERT_EQ(a.name, b.name);
      EXPECT_EQ(a.dims, b.dims);
      EXPECT_TRUE(std::equal(f.data(a).begin(), f.data(a).end(), back.data(b).begin())) << a.name;
    }
  }
  // llama.cpp's own layout is gguf-py's, so the rewrite is the same file, byte for byte
  // (which also makes gguf-py read it as it reads the original).
  EXPECT_TRUE(read_file(out) == read_file(path));
  fs::remove(out);
}

TEST(GgufWriter, GgufPyReadsWhatWeWrite) {
  // A file of our own (not mirroring a gguf-py one): every value type, odd shapes.
  GgufWriter w;
  w.metadata().add("general.architecture", GgufValue::string("ours"));
  w.metadata().add("general.alignment", GgufValue::u32(128));
  w.metadata().add("a.strings", GgufValue::string_array({"x", "", "\u2581y"}));
  w.metadata().add("a.nested", GgufValue::array_of_arrays({GgufValue::string_array({"p", "q"}),
                                                           GgufValue::string_array({"r"})}));
  w.metadata().add("a.f32", GgufValue::float_array(GgufType::F32, {1.25, -0.0}));
  std::vector<float> x(3 * 64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
  std::vector<uint8_t> q8(row_bytes(GgmlType::Q8_0, 192)), bf(2 * 192);
  quantize(GgmlType::Q8_0, x.data(), 192, q8.data());
  quantize(GgmlType::BF16, x.data(), 192, bf.data());
  w.add_tensor("q8", {64, 3}, GgmlType::Q8_0, q8);
  w.add_tensor("bf16", {2, 3, 32}, GgmlType::BF16, bf);
  const fs::path a = scratch("ours_a.gguf"), b = scratch("ours_b.gguf");
  w.write(a.string());
  // Round trip through our reader and writer, then let gguf-py compare both.
  GgufFile f(a.string());
  EXPECT_EQ(f.header().alignment, 128u);
  EXPECT_EQ(f.tensors()[1].shape(), (std::vector<int64_t>{32, 3, 2}));
  GgufWriter w2;
  for (const auto& [key, value] : f.metadata().entries()) w2.metadata().add(key, value);
  for (const auto& t : f.tensors()) w2.add_tensor_view(t.name, t.dims, t.type, f.data(t));
  w2.write(b.string());
  EXPECT_TRUE(read_file(a) == read_file(b));
  EXPECT_EQ(run_python("same " + a.string() + " " + b.string()), 0);
}

TEST(GgufWriter, RefusesBadTensors) {
  GgufWriter w;
  std::vector<uint8_t> four(4);
  w.add_tensor("x", {1}, GgmlType::F32, four);
  EXPECT_THAT(error_of([&] { w.add_tensor("x", {1}, GgmlType::F32, four); }), HasSubstr("added twice"));
  EXPECT_THAT(error_of([&] { w.add_tensor("y", {2}, GgmlType::F32, four); }), HasSubstr("dims need 8"));
  EXPECT_THAT(error_of([&] { w.add_tensor("z", {16}, GgmlType::Q8_0, four); }), HasSubstr("block size 32"));
  EXPECT_THAT(error_of([&] { w.add_tensor("w", {1, 1, 1, 1, 1}, GgmlType::F32, four); }), HasSubstr("1 to 4 dims"));
  EXPECT_THAT(error_of([&] { w.add_tensor(std::string(64, 'n'), {1}, GgmlType::F32, four); }), HasSubstr("63 bytes"));
  w.metadata().add("general.alignment", GgufValue::u32(48));
  EXPECT_THAT(error_of([&] { w.to_bytes(); }), HasSubstr("power of two"));
  w.metadata().erase("general.alignment");
  EXPECT_THAT(error_of([&] { w.write("/no/such/dir/x.gguf"); }), HasSubstr("/no/such/dir/x.gguf"));
}

// ---------------------------------------------------------------- hostile files

// Builds a GGUF image field by field.
struct Image {
  std::string b;
  Image& u32(uint32_t v) { return raw(v, 4); }
  Image& u64(uint64_t v) { return raw(v, 8); }
  Image& str(const std::string& s) {
    u64(s.size());
    b += s;
    return *this;
  }
  Image& raw(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  Image& pad(size_t align) {
    b.resize((b.size() + align - 1) / align * align, '\0');
    return *this;
  }
  Image& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b = "GGUF";
    return u32(version).u64(n_tensors).u64(n_kv);
  }
  // A tensor info: name, dims, type, offset.
  Image& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
};

// The one-line error parsing `bytes` as "hostile.gguf" gives.
std::string parse_error(const std::string& bytes) {
  const std::string e =
      error_of([&] { parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "hostile.gguf"); });
  EXPECT_THAT(e, ::testing::StartsWith("hostile.gguf: "));
  EXPECT_EQ(e.find('\n'), std::string::npos);
  return e;
}

// One F32 tensor of 4 values after one string KV: a small valid file.
Image valid_image() {
  Image im;
  im.header(1, 1).str("general.architecture").u32(8).str("llama");
  im.tensor("w", {4}, 0, 0).pad(32);
  im.b += std::string(16, '\x01');
  return im;
}

TEST(GgufHostile, ValidImageParses) {
  const std::string b = valid_image().b;
  const auto h = parse_gguf(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "ok");
  EXPECT_EQ(h.tensors.at(0).n_bytes, 16u);
}

TEST(GgufHostile, EveryTruncationIsAnErrorNamingTheFile) {
  for (const std::string& ref : {std::string(manifest()["writer"]["align64"]), std::string("valid")}) {
    const std::string full = ref == "valid" ? valid_image().b : read_file(fixture(ref));
    const auto h = parse_gguf(reinterpret_cast<const uint8_t*>(full.data()), full.size(), "full");
    uint64_t data_end = 0;
    for (const auto& t : h.tensors) data_end = std::max(data_end, h.data_start + t.offset + t.n_bytes);
    for (size_t cut = 0; cut < data_end; ++cut) {
      SCOPED_TRACE("cut at " + std::to_string(cut));
      parse_error(full.substr(0, cut));
    }
  }
}

TEST(GgufHostile, HeaderErrors) {
  EXPECT_THAT(parse_error("GG"), HasSubstr("too short"));
  EXPECT_THAT(parse_error("GGML1234567890123456789012"), HasSubstr("not a GGUF file"));
  EXPECT_THAT(parse_error(Image().header(0, 0, 1).b), HasSubstr("GGUF v1 is not supported"));
  EXPECT_THAT(parse_error(Image().header(0, 0, 0x03000000).b), HasSubstr("big-endian"));
  EXPECT_THAT(parse_error(Image().header(0, 0, 4).b), HasSubstr("unsupported GGUF version 4"));
  EXPECT_THAT(parse_error(Image().header(0, uint64_t{1} << 60).b), HasSubstr("metadata count"));
  EXPECT_THAT(parse_error(Image().header(uint64_t{1} << 60, 0).b), HasSubstr("tensor count"));
}

TEST(GgufHostile, MetadataErrors) {
  auto kv = [](auto build) {
    Image im;
    im.header(0, 1);
    build(im);
    im.b += std::string(32, '\0');  // so that the entry, not the count, is what cannot fit
    return parse_error(im.b);
  };
  EXPECT_THAT(kv([](Image& im) { im.u64(uint64_t{1} << 62); }), HasSubstr("metadata entry #0 key"));
  EXPECT_THAT(kv([](Image& im) { im.str("k").u32(8).u64(~uint64_t{0}); }),
              HasSubstr("metadata key 'k' (18446744073709551615-byte string)"));
  EXPECT_THAT(kv([](Image& im) { im.str("k").u32(13); }), HasSubstr("'k': unknown value type 13"));
  EXPECT_THAT(kv([](Image& im) { im.str("k").u32(9).u32(4).u64(uint64_t{1} << 61); }),
              HasSubstr("'k': array of 2305843009213693952 UINT32 cannot fit"));
  EXPECT_THAT(kv([](Image& im) { im.str("k").u32(9).u32(77).u64(0); }), HasSubstr("unknown array element type 77"));
  EXPECT_THAT(kv([](Image& im) { im.str("\xff\xfe").u32(4).u32(1); }), HasSubstr("not valid UTF-8"));
  EXPECT_THAT(kv([](Image& im) {
                im.str("deep").u32(9);
                for (int i = 0; i < 9; ++i) im.u32(9).u64(1);
                im.u32(4).u64(0);
              }),
              HasSubstr("nested more than 8 deep"));
  // Duplicates and the alignment.
  Image dup;
  dup.header(0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(2);
  EXPECT_THAT(parse_error(dup.b), HasSubstr("metadata key 'k': appears twice"));
  for (uint32_t bad : {0u, 3u, 48u}) {
    Image a;
    a.header(0, 1).str("general.alignment").u32(4).u32(bad);
    EXPECT_THAT(parse_error(a.b), HasSubstr("is not a power of two"));
  }
  Image wrong_type;
  wrong_type.header(0, 1).str("general.alignment").u32(10).u64(32);
  EXPECT_THAT(parse_error(wrong_type.b), HasSubstr("general.alignment': expected UINT32, found UINT64"));
}

TEST(GgufHostile, TensorInfoErrors) {
  auto one = [](const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset,
                size_t data = 64) {
    Image im;
    im.header(1, 0).tensor(name, std::move(dims), type, offset).pad(32);
    im.b += std::string(data, '\0');
    return parse_error(im.b);
  };
  EXPECT_THAT(one("t", {}, 0, 0), HasSubstr("tensor 't': 0 dimensions"));
  EXPECT_THAT(one("t", {1, 1, 1, 1, 1}, 0, 0), HasSubstr("tensor 't': 5 dimensions"));
  EXPECT_THAT(one("t", {4, 0}, 0, 0), HasSubstr("tensor 't': dimension 1 is 0"));
  EXPECT_THAT(one("t", {uint64_t{1} << 63}, 0, 0), HasSubstr("dimension 0 is 9223372036854775808"));
  EXPECT_THAT(one("t", {uint64_t{1} << 40, uint64_t{1} << 30}, 0, 0), HasSubstr("element count overflows"));
  EXPECT_THAT(one("t", {4}, 99, 0), HasSubstr("tensor 't': unknown ggml type 99"));
  EXPECT_THAT(one("t", {4}, 5, 0), HasSubstr("unknown ggml type 5"));  // the removed Q4_3
  EXPECT_THAT(one("t", {48}, 8, 0), HasSubstr("row length 48 is not a multiple of the Q8_0 block size 32"));
  EXPECT_THAT(one("t", {4}, 0, 16), HasSubstr("tensor 't': offset 16 is not a multiple of the alignment 32"));
  EXPECT_THAT(one("t", {4}, 0, 64), HasSubstr("lie outside the 64-byte data section"));
  EXPECT_THAT(one("t", {32}, 0, 0), HasSubstr("tensor 't': bytes [0, +128) lie outside"));
  EXPECT_THAT(one("t", {4}, 0, ~uint64_t{0} - 31), HasSubstr("lie outside"));
  // Two tensors: duplicate names, overlapping bytes.
  Image dup;
  dup.header(2, 0).tensor("t", {4}, 0, 0).tensor("t", {4}, 0, 32).pad(32);
  dup.b += std::string(64, '\0');
  EXPECT_THAT(parse_error(dup.b), HasSubstr("tensor 't' appears twice"));
  Image overlap;
  overlap.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad(32);
  overlap.b += std::string(64, '\0');
  EXPECT_THAT(parse_error(overlap.b), HasSubstr("tensors 'a' and 'b' overlap"));
}

TEST(GgufHostile, FileErrorsNameThePath) {
  Image bad;
  bad.header(1, 0).tensor("blk.0.attn_q.weight", {4}, 99, 0).pad(32);
  bad.b += std::string(16, '\0');
  const fs::path p = scratch("hostile_type.gguf");
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bad.b;
  const std::string e = error_of([&] { GgufFile f(p.string()); });
  EXPECT_THAT(e, HasSubstr(p.string() + ": tensor 'blk.0.attn_q.weight': unknown ggml type 99"));
  EXPECT_EQ(e.find('\n'), std::string::npos);
}

// ---------------------------------------------------------------- llama mapping

Json expected_case(const Json& c) {
  std::ifstream in(fixture(c["dir"].get<std::string>() + "/expected.json"));
  return Json::parse(in);
}

TEST(GgufLlama, ConfigAsTransformersBuildsIt) {
  const Json& real = manifest()["real"];
  GgufFile f(real["file"]);
  const auto ours = llama_config_from_gguf(f.header());
  EXPECT_EQ(Json::parse(ours.dump()), real["config"]) << ours.dump(1);
  EXPECT_EQ(ours["tie_word_embeddings"], true);
  EXPECT_EQ(ours["head_dim"], 64);
  for (const auto& c : manifest()["tokenizers"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    GgufFile g(c["gguf"]);
    EXPECT_EQ(Json::parse(llama_config_from_gguf(g.header()).dump()), expected_case(c)["config"]);
  }
}

TEST(GgufLlama, TensorNamesAsTransformersMapsThem) {
  const Json& real = manifest()["real"];
  const Json& map = real["name_map"];
  GgufFile f(real["file"]);
  for (const auto& t : f.tensors()) {
    SCOPED_TRACE(t.name);
    const auto hf = llama_hf_name(t.name);
    ASSERT_TRUE(hf.has_value());
    EXPECT_EQ(*hf, map.at(t.name).get<std::string>());
    EXPECT_EQ(llama_gguf_name(*hf), t.name);
  }
  for (const auto& [gguf_name, hf] : map.items()) EXPECT_EQ(llama_gguf_name(hf), gguf_name);
  EXPECT_EQ(llama_hf_name("output.weight"), "lm_head.weight");
  EXPECT_EQ(llama_hf_name("blk.12.attn_q.bias"), "model.layers.12.self_attn.q_proj.bias");
  EXPECT_EQ(llama_hf_name("rope_freqs.weight"), std::nullopt);
  EXPECT_EQ(llama_hf_name("blk.x.attn_q.weight"), std::nullopt);
  EXPECT_EQ(llama_gguf_name("model.layers.3.mlp.gate_proj.weight"), "blk.3.ffn_gate.weight");
  EXPECT_EQ(llama_gguf_name("model.rotary_emb.inv_freq"), std::nullopt);
}

TEST(GgufLlama, QkPermutationAsTransformersUndoesIt) {
  const Json& real = manifest()["real"];
  GgufFile f(real["file"]);
  const auto config = llama_config_from_gguf(f.header());
  for (const auto& c : real["hf"]) {
    const std::string name = c["gguf"];
    SCOPED_TRACE(name);
    const auto& t = f.info(name);
    EXPECT_EQ(llama_qk_heads(name, config), c["n_head"].get<int64_t>());
    const std::vector<float> stored = f.dequantize(name);
    std::vector<float> w = stored;
    llama_unpermute_qk(w.data(), t.n_rows(), 4 * t.dims[0], c["n_head"]);
    EXPECT_TRUE(same_bits(w, read_f32(fixture(c["expected"]))));
    llama_permute_qk(w.data(), t.n_rows(), 4 * t.dims[0], c["n_head"]);
    EXPECT_TRUE(same_bits(w, stored));
    // Rows move whole, so the quantized rows can be reordered before dequantizing.
    std::vector<uint8_t> q(f.data(t).begin(), f.data(t).end());
    llama_unpermute_qk(q.data(), t.n_rows(), row_bytes(t.type, t.dims[0]), c["n_head"]);
    std::vector<float> from_q(static_cast<size_t>(t.n_elements));
    dequantize(t.type, q.data(), t.n_elements, from_q.data());
    EXPECT_TRUE(same_bits(from_q, read_f32(fixture(c["expected"]))));
  }
  EXPECT_EQ(llama_qk_heads("blk.0.attn_v.weight", config), 0);
  std::vector<float> odd(6);
  EXPECT_THAT(error_of([&] { llama_unpermute_qk(odd.data(), 6, 4, 2); }), HasSubstr("6 rows"));
}

TEST(GgufLlama, OtherArchitecturesAreRefused) {
  GgufFile f(fixture(manifest()["writer"]["default"]).string());
  EXPECT_THAT(error_of([&] { llama_config_from_gguf(f.header()); }), HasSubstr("'testarch', not 'llama'"));
  EXPECT_THAT(error_of([&] { hf_tokenizer_from_gguf(f.header()); }), HasSubstr("'tokenizer.ggml.model': missing"));
}

// ---------------------------------------------------------------- tokenizer

// Names the first place two JSON documents differ.
std::string first_difference(const Json& a, const Json& b, const std::string& path = "") {
  if (a.type() != b.type()) return path + ": " + a.dump().substr(0, 80) + " vs " + b.dump().substr(0, 80);
  if (a.is_object()) {
    for (const auto& [k, v] : a.items()) {
      if (!b.contains(k)) return path + "/" + k + ": only in ours";
      if (v != b[k]) return first_difference(v, b[k], path + "/" + k);
    }
    for (const auto& [k, v] : b.items())
      if (!a.contains(k)) return path + "/" + k + ": only in transformers'";
  }
  if (a.is_array()) {
    if (a.size() != b.size())
      return path + ": " + std::to_string(a.size()) + " vs " + std::to_string(b.size()) + " items";
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i] != b[i]) return first_difference(a[i], b[i], path + "/" + std::to_string(i));
  }
  return path + ": " + a.dump().substr(0, 80) + " vs " + b.dump().substr(0, 80);
}

TEST(GgufTokenizer, TokenizerJsonEqualsTransformers) {
  for (const auto& c : manifest()["tokenizers"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    GgufFile f(c["gguf"]);
    const HfTokenizerFiles ours = hf_tokenizer_from_gguf(f.header());
    std::ifstream in(fixture(c["dir"].get<std::string>() + "/expected_tokenizer.json"));
    const Json want = Json::parse(in);
    const Json got = Json::parse(ours.tokenizer.dump());
    EXPECT_TRUE(got == want) << first_difference(got, want);

    const Json exp = expected_case(c);
    const auto& cfg = ours.tokenizer_config;
    for (const auto& [key, value] : exp["special"].items()) EXPECT_EQ(Json::parse(cfg[key].dump()), value) << key;
    EXPECT_EQ(cfg["add_bos_token"], exp["add_bos_token"]);
    EXPECT_EQ(cfg["add_eos_token"], exp["add_eos_token"]);
    EXPECT_EQ(cfg.contains("chat_template") ? Json(cfg["chat_template"].get<std::string>()) : Json(nullptr),
              exp["chat_template"]);
  }
}

TEST(GgufTokenizer, IdsEqualTransformersOnTextsAndChats) {
  const fs::path root = scratch("tokenizers");
  for (const auto& c : manifest()["tokenizers"]) {
    GgufFile f(c["gguf"]);
    const HfTokenizerFiles ours = hf_tokenizer_from_gguf(f.header());
    const fs::path dir = root / c["name"].get<std::string>();
    fs::create_directories(dir);
    write_json(dir / "tokenizer.json", ours.tokenizer);
    write_json(dir / "tokenizer_config.json", ours.tokenizer_config);
  }
  EXPECT_EQ(run_python("tokenizers " + root.string() + " " + PEFT_GGUF_DIR), 0);
}

// `peft tokenize FILE.gguf --chat`: each {"messages", "add_generation_prompt"} line gives
// the text and ids transformers' apply_chat_template gives with the same GGUF's tokenizer.
TEST(GgufTokenizer, CliChatEqualsApplyChatTemplate) {
  int checked = 0;
  for (const auto& c : manifest()["tokenizers"]) {
    const Json exp = expected_case(c);
    if (exp["chats"].empty()) continue;
    SCOPED_TRACE(c["name"].get<std::string>());
    const fs::path in = scratch("chat_" + c["name"].get<std::string>() + ".jsonl");
    std::ofstream f(in, std::ios::trunc);
    for (const auto& chat : exp["chats"])
      f << Json{{"messages", chat["messages"]}, {"add_generation_prompt", chat["add_generation_prompt"]}}.dump() << "\n";
    f.close();
    test::CliLimits lim;
    lim.stdin_path = in.string();
    const auto r = test::run_cli({"tokenize", c["gguf"].get<std::string>(), "--chat"}, lim);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::istringstream lines(r.output);
    std::string line;
    for (const auto& chat : exp["chats"]) {
      do ASSERT_TRUE(std::getline(lines, line)) << r.output;
      while (line.empty() || line[0] != '{');  // skip notes on stderr
      const Json got = Json::parse(line);
      EXPECT_EQ(got["text"], chat["text"]);
      EXPECT_EQ(got["ids"], chat["ids"]);
      ++checked;
    }
  }
  EXPECT_GE(checked, 12);
  const fs::path bad = scratch("chat_bad.jsonl");
  std::ofstream(bad, std::ios::trunc) << "{\"messages\": [], \"add_generation_promt\": true}\n";
  test::CliLimits lim;
  lim.stdin_path = bad.string();
  const auto r = test::run_cli({"tokenize", manifest()["tokenizers"][0]["gguf"].get<std::string>(), "--chat"}, lim);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("stdin line 1: unknown key 'add_generation_promt'"));
}

TEST(GgufTokenizer, SplitRegexForEveryPreTokenizerTransformersKnows) {
  GgufFile f(tok_case("spm_bare")["gguf"]);  // a small vocabulary
  GgufHeader h = f.header();
  for (const auto& [pre, regex] : manifest()["pre_tokenizer_splits"].items()) {
    h.metadata.set("tokenizer.ggml.pre", GgufValue::string(pre));
    const auto files = hf_tokenizer_from_gguf(h);
    EXPECT_EQ(files.tokenizer.at("pre_tokenizer").at("pretokenizers").at(0).at("pattern").at("Regex"),
              regex.get<std::string>())
        << pre;
  }
  h.metadata.set("tokenizer.ggml.pre", GgufValue::string("smollm"));
  EXPECT_EQ(hf_tokenizer_from_gguf(h).tokenizer.at("pre_tokenizer").at("type"), "Metaspace");
}

TEST(GgufTokenizer, UnsupportedModelsAreRefused) {
  GgufFile f(tok_case("spm_scores")["gguf"]);
  GgufHeader h = f.header();
  h.metadata.set("tokenizer.ggml.model", GgufValue::string("t5"));
  EXPECT_THAT(error_of([&] { hf_tokenizer_from_gguf(h); }), HasSubstr("'t5' is not supported"));
  h.metadata.set("tokenizer.ggml.model", GgufValue::string("llama"));
  h.metadata.set("general.architecture", GgufValue::string("gemma"));
  EXPECT_THAT(error_of([&] { hf_tokenizer_from_gguf(h); }), HasSubstr("gemma"));
  h.metadata.set("general.architecture", GgufValue::string("llama"));
  h.metadata.set("tokenizer.ggml.bos_token_id", GgufValue::u32(1u << 30));
  EXPECT_THAT(error_of([&] { hf_tokenizer_from_gguf(h); }), HasSubstr("is not in the vocabulary"));
}

}  // namespace
}  // namespace peft
