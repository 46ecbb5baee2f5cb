// 4-bit quantization (src/quant) against bitsandbytes 0.50.2's CPU path, bit for bit:
// fixtures from tests/parity/make_quant.py.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <set>

#include "peft/safetensors.h"
#include "quant/quant_4bit.h"
#include "quant/quant_internal.h"

namespace peft::quant {
namespace {

using ::testing::HasSubstr;

const std::string kDir = PEFT_QUANT_DIR;

const SafetensorsFile& cases_file() {
  static const SafetensorsFile f(kDir + "/cases.safetensors");
  return f;
}

const SafetensorsFile& state_dict_file() {
  static const SafetensorsFile f(kDir + "/state_dict.safetensors");
  return f;
}

struct Case {
  std::string name, native;
  QuantType type;
  int64_t blocksize;
  bool double_quant;
  std::vector<int64_t> shape;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const auto& c : nlohmann::json::parse(cases_file().metadata().at("cases"))) {
    out.push_back({c["name"], c["native"], c["quant_type"] == "nf4" ? QuantType::kNF4 : QuantType::kFP4,
                   c["blocksize"], c["double_quant"], c["shape"].get<std::vector<int64_t>>()});
  }
  return out;
}

at::Tensor get(const Case& c, const std::string& what) { return cases_file().get(c.name + "." + what); }

// Same dtype, shape and bytes (so -0.0 differs from 0.0 and NaN payloads count).
::testing::AssertionResult same_bits(const at::Tensor& got, const at::Tensor& want) {
  if (got.scalar_type() != want.scalar_type() || got.sizes() != want.sizes()) {
    return ::testing::AssertionFailure() << "got " << got.scalar_type() << got.sizes() << ", want "
                                         << want.scalar_type() << want.sizes();
  }
  const at::Tensor a = got.contiguous().view({-1}).view(at::kByte), b = want.contiguous().view({-1}).view(at::kByte);
  if (std::memcmp(a.data_ptr(), b.data_ptr(), a.numel()) == 0) return ::testing::AssertionSuccess();
  const int64_t first = (a != b).nonzero()[0].item<int64_t>() / got.element_size();
  return ::testing::AssertionFailure() << (a != b).sum().item<int64_t>() << " bytes differ, first at element "
                                       << first << ": got " << got.view({-1})[first].item<double>() << ", want "
                                       << want.view({-1})[first].item<double>();
}

QuantState4bit bnb_state(const Case& c) {
  QuantState4bit s;
  s.type = c.type;
  s.blocksize = c.blocksize;
  s.shape = c.shape;
  s.dtype = get(c, "x").scalar_type();
  s.absmax = get(c, "absmax");
  s.code = at::tensor(code_table(c.type), at::kFloat);
  if (c.double_quant) {
    s.nested = true;
    s.nested_absmax = get(c, "nested_absmax");
    s.nested_code = get(c, "nested_code");
    s.offset = get(c, "offset").item<float>();
  }
  return s;
}

TEST(Quant, FixturesCoverTheCases) {
  const auto all = cases();
  EXPECT_EQ(all.size(), 104u);
  std::set<int64_t> blocksizes;
  for (const auto& c : all) blocksizes.insert(c.blocksize);
  EXPECT_EQ(blocksizes, (std::set<int64_t>{32, 64, 128, 256, 4096}));
}

TEST(Quant, CodeTablesAreBnbs) {
  const auto& f = state_dict_file();
  EXPECT_TRUE(same_bits(at::tensor(code_table(QuantType::kNF4), at::kFloat), f.get("lin_nf4_dq.weight.quant_map")));
  EXPECT_TRUE(same_bits(at::tensor(code_table(QuantType::kFP4), at::kFloat), f.get("lin_fp4.weight.quant_map")));
  EXPECT_TRUE(same_bits(at::tensor(dynamic_map(), at::kFloat), f.get("lin_nf4_dq.weight.nested_quant_map")));
}

// Codes, absmax and the double-quantized statistics, for every case.
TEST(Quant, QuantizeMatchesBnbBitForBit) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const Quantized4bit q = quantize_4bit(get(c, "x"), c.type, c.blocksize, c.double_quant);
    EXPECT_TRUE(at::equal(q.packed, get(c, "packed")) && q.packed.sizes() == get(c, "packed").sizes());
    EXPECT_TRUE(same_bits(q.state.absmax, get(c, "absmax")));
    EXPECT_EQ(q.state.nested, c.double_quant);
    if (c.double_quant) {
      EXPECT_TRUE(same_bits(q.state.nested_absmax, get(c, "nested_absmax")));
      EXPECT_TRUE(same_bits(q.state.nested_code, get(c, "nested_code")));
      EXPECT_TRUE(same_bits(at::tensor({q.state.offset}, at::kFloat), get(c, "offset")));
    }
  }
}

// The 8-bit quantizer double quantization runs, against libbitsandbytes_cpu's, including
// inputs on and around every midpoint of the dynamic map (bnb rounds through a
// 65536-entry table there, not to the exact nearest code).
TEST(Quant, Blockwise8bitMatchesBnbBitForBit) {
  const auto& f = cases_file();
  const at::Tensor x = f.get("blockwise8.x").contiguous();
  const int64_t n = x.numel();
  at::Tensor codes = at::empty({n}, at::kByte), absmax = at::empty({(n + 255) / 256}, at::kFloat);
  detail::quantize_blockwise_8bit(x.data_ptr<float>(), n, 256, codes.data_ptr<uint8_t>(), absmax.data_ptr<float>());
  EXPECT_TRUE(same_bits(codes, f.get("blockwise8.codes")));
  EXPECT_TRUE(same_bits(absmax, f.get("blockwise8.absmax")));
  at::Tensor deq = at::empty({n}, at::kFloat);
  detail::dequantize_blockwise_8bit(codes.data_ptr<uint8_t>(), n, 256, dynamic_map().data(),
                                    absmax.data_ptr<float>(), deq.data_ptr<float>());
  EXPECT_TRUE(same_bits(deq, f.get("blockwise8.deq")));
}

// bnb's reference dequantization from bnb's own codes and statistics, and its native
// kernel's wherever that agrees with the reference (make_quant.py's native_note).
TEST(Quant, DequantizeMatchesBnbBitForBit) {
  int native_checked = 0;
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const QuantState4bit s = bnb_state(c);
    EXPECT_TRUE(same_bits(dequantize_absmax(s), get(c, "scales")));
    const at::Tensor deq = dequantize_4bit(get(c, "packed"), s);
    EXPECT_TRUE(same_bits(deq, get(c, "deq")));
    if (c.native == "same") {
      EXPECT_TRUE(same_bits(deq, get(c, "deq_native")));
      ++native_checked;
    } else {
      // The native kernel's known departures only (make_quant.py's native_note).
      EXPECT_THAT((std::set<std::string>{"row_absmax", "signed_zero", "subnormal_flush"}),
                  ::testing::Contains(c.native));
    }
  }
  EXPECT_GT(native_checked, 50);
}

TEST(Quant, DequantizeToAnotherDtypeRoundsTheFp32Product) {
  for (const Case& c : cases()) {
    if (c.name.find("bfloat16_bs64_16x128") == std::string::npos) continue;
    SCOPED_TRACE(c.name);
    const QuantState4bit s = bnb_state(c);
    const at::Tensor f32 = dequantize_4bit(get(c, "packed"), s, at::kFloat);
    EXPECT_TRUE(same_bits(dequantize_4bit(get(c, "packed"), s, at::kHalf), f32.to(at::kHalf)));
    EXPECT_TRUE(same_bits(dequantize_4bit(get(c, "packed"), s), f32.to(at::kBFloat16)));
  }
}

// Tiles of rows that start and end mid-block (and mid-byte when cols is odd) give exactly
// the rows of the full dequantization.
TEST(Quant, RowTilesEqualTheFullDequantization) {
  at::manual_seed(3);
  struct Geo {
    std::vector<int64_t> shape;
    int64_t blocksize;
    bool dq;
  };
  const std::vector<Geo> geos = {{{7, 37}, 32, false}, {{12, 40}, 64, true}, {{9, 130}, 128, false},
                                 {{33, 96}, 64, true},  {{5, 3}, 32, false},  {{301}, 64, true}};
  for (const Geo& g : geos) {
    for (QuantType type : {QuantType::kNF4, QuantType::kFP4}) {
      const Quantized4bit q = quantize_4bit(at::randn(g.shape).to(at::kBFloat16), type, g.blocksize, g.dq);
      const at::Tensor scales = dequantize_absmax(q.state);
      for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
        const at::Tensor full = dequantize_4bit(q.packed, q.state, dt).reshape({q.state.rows(), q.state.cols()});
        const int64_t rows = q.state.rows();
        for (int64_t r0 = 0; r0 < rows; r0 += 1 + r0 % 3) {
          for (int64_t r1 : {r0, r0 + 1, std::min(rows, r0 + 2), std::min(rows, r0 + 5), rows}) {
            SCOPED_TRACE(std::to_string(r0) + ".." + std::to_string(r1) + " of " + std::to_string(rows));
            at::Tensor tile = at::full({r1 - r0, q.state.cols()}, 7.0, at::TensorOptions().dtype(dt));
            dequantize_4bit_rows(q.packed, q.state, scales, r0, r1, tile);
            ASSERT_TRUE(same_bits(tile, full.slice(0, r0, r1)));
          }
        }
      }
    }
  }
}

std::map<std::string, at::Tensor> file_entries(const std::string& prefix) {
  std::map<std::string, at::Tensor> out;
  for (const std::string& k : state_dict_file().names()) {
    if (k.rfind(prefix, 0) == 0) out[k] = state_dict_file().get(k);
  }
  return out;
}

// What bnb.nn.Linear4bit's state dict holds for the weight: read back and written again,
// and made from the float weight by our quantizer: the same keys, dtypes, shapes, bytes.
TEST(Quant, Linear4bitStateDictRoundTrips) {
  for (const std::string lin : {"lin_nf4_dq", "lin_fp4", "lin_nf4_bs128"}) {
    SCOPED_TRACE(lin);
    const std::string wk = lin + ".weight";
    std::map<std::string, at::Tensor> bnb = file_entries(wk + ".");
    const at::Tensor packed = state_dict_file().get(wk);
    const QuantState4bit s = quant_state_from_tensors(file_entries(lin + "."), wk);
    auto ours = quant_state_to_tensors(s, wk);
    ASSERT_EQ(ours.size(), bnb.size());
    for (const auto& [k, v] : bnb) {
      SCOPED_TRACE(k);
      ASSERT_TRUE(ours.count(k));
      EXPECT_TRUE(same_bits(ours[k], v));
    }
    const at::Tensor src = state_dict_file().get("src." + wk);
    const Quantized4bit q = quantize_4bit(src, s.type, s.blocksize, s.nested);
    EXPECT_TRUE(same_bits(q.packed, packed));
    for (const auto& [k, v] : quant_state_to_tensors(q.state, wk)) {
      SCOPED_TRACE("quantized here: " + k);
      EXPECT_TRUE(same_bits(v, bnb.at(k)));
    }
    EXPECT_TRUE(same_bits(dequantize_4bit(packed, s), dequantize_4bit(q.packed, q.state)));
    EXPECT_EQ(dequantize_4bit(packed, s).scalar_type(), src.scalar_type());
  }
}

TEST(Quant, PackedJsonIsBnbsText) {
  const at::Tensor qs = state_dict_file().get("lin_nf4_dq.weight.quant_state.bitsandbytes__nf4");
  const std::string text(reinterpret_cast<const char*>(qs.data_ptr<uint8_t>()), qs.numel());
  EXPECT_THAT(text, ::testing::StartsWith(
                        "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [40, 96], "
                        "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": "));
}

TEST(Quant, PythonFloatRepr) {
  const std::vector<std::pair<double, std::string>> want = {
      {0.0, "0.0"},         {-0.0, "-0.0"},       {1e-05, "1e-05"},         {0.0001, "0.0001"},
      {1e16, "1e+16"},      {1.5e16, "1.5e+16"},  {123.0, "123.0"},         {0.1, "0.1"},
      {1.0 / 3, "0.3333333333333333"},            {5e-324, "5e-324"},       {-2.5, "-2.5"},
      {1234567890123456.0, "1234567890123456.0"}, {12345678901234567.0, "1.2345678901234568e+16"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},                  {2.592968702316284, "2.592968702316284"},
      {0.00012345, "0.00012345"},                 {1.2345e-05, "1.2345e-05"}};
  for (const auto& [v, s] : want) EXPECT_EQ(python_float_repr(v), s);
}

TEST(Quant, OwnStateRoundTripsThroughTensors) {
  at::manual_seed(5);
  const at::Tensor w = at::randn({33, 70}).to(at::kHalf);
  for (bool dq : {false, true}) {
    const Quantized4bit q = quantize_4bit(w, QuantType::kFP4, 128, dq);
    auto entries = quant_state_to_tensors(q.state, "w");
    entries["w"] = q.packed;
    const QuantState4bit back = quant_state_from_tensors(entries, "w");
    EXPECT_EQ(back.shape, q.state.shape);
    EXPECT_EQ(back.dtype, at::kHalf);
    EXPECT_EQ(back.nested, dq);
    EXPECT_EQ(back.offset, q.state.offset);
    EXPECT_TRUE(same_bits(dequantize_4bit(q.packed, back), dequantize_4bit(q.packed, q.state)));
  }
}

// --- Errors: each names the offending key -------------------------------------------------

const std::string kWk = "lin_nf4_dq.weight";
const std::string kQs = kWk + ".quant_state.bitsandbytes__nf4";

std::map<std::string, at::Tensor> good_entries() {
  std::map<std::string, at::Tensor> m;
  for (auto& [k, v] : file_entries(kWk)) m[k] = v.clone();
  return m;
}

std::string json_of(const std::map<std::string, at::Tensor>& m) {
  const at::Tensor t = m.at(kQs);
  return std::string(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), t.numel());
}

void set_json(std::map<std::string, at::Tensor>& m, const std::string& s) {
  at::Tensor t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  std::memcpy(t.data_ptr(), s.data(), s.size());
  m[kQs] = t;
}

void replace_in_json(std::map<std::string, at::Tensor>& m, const std::string& from, const std::string& to) {
  std::string s = json_of(m);
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  set_json(m, s.replace(at, from.size(), to));
}

void expect_error(const std::map<std::string, at::Tensor>& m, const std::string& key, const std::string& what) {
  try {
    quant_state_from_tensors(m, kWk);
    ADD_FAILURE() << "no error; expected " << key << ": " << what;
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_THAT(msg, ::testing::StartsWith(key + ": "));
    EXPECT_THAT(msg, HasSubstr(what));
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(QuantErrors, GoodEntriesLoad) { EXPECT_NO_THROW(quant_state_from_tensors(good_entries(), kWk)); }

TEST(QuantErrors, CorruptOrMissingQuantStateJson) {
  auto m = good_entries();
  set_json(m, json_of(m).substr(0, 40));
  expect_error(m, kQs, "not valid JSON");
  set_json(m, "[1, 2]");
  expect_error(m, kQs, "not an object");
  m = good_entries();
  replace_in_json(m, "\"blocksize\": 64, ", "");
  expect_error(m, kQs, "missing field 'blocksize'");
  m = good_entries();
  replace_in_json(m, "\"blocksize\": 64", "\"blocksize\": \"64\"");
  expect_error(m, kQs, "not an integer");
  m = good_entries();
  replace_in_json(m, "\"quant_type\"", "\"extra\": 1, \"quant_type\"");
  expect_error(m, kQs, "unexpected field 'extra'");
  m = good_entries();
  m.erase(kQs);
  expect_error(m, kQs, "missing");
  m = good_entries();
  m[kWk + ".quant_state.bitsandbytes__fp4"] = m[kQs];
  expect_error(m, kQs, "both");
}

TEST(QuantErrors, UnknownQuantTypeOrDtype) {
  auto m = good_entries();
  replace_in_json(m, "\"nf4\"", "\"int4\"");
  expect_error(m, kQs, "unknown quant type 'int4'");
  m = good_entries();
  replace_in_json(m, "\"nf4\"", "\"fp4\"");
  expect_error(m, kQs, "does not match");
  m = good_entries();
  replace_in_json(m, "\"bfloat16\"", "\"int8\"");
  expect_error(m, kQs, "dtype 'int8'");
}

TEST(QuantErrors, BlocksizeOutOfRange) {
  for (const std::string bad : {"48", "16", "8192", "0", "-64"}) {
    auto m = good_entries();
    replace_in_json(m, "\"blocksize\": 64", "\"blocksize\": " + bad);
    expect_error(m, kQs, "blocksize " + bad + " is not one of");
  }
}

TEST(QuantErrors, AbsmaxLengthAndDtype) {
  auto m = good_entries();
  m[kWk + ".absmax"] = m[kWk + ".absmax"].slice(0, 1);
  expect_error(m, kWk + ".absmax", "59 elements, expected ceil(3840 / 64) = 60");
  m = good_entries();
  m[kWk + ".absmax"] = m[kWk + ".absmax"].to(at::kFloat);
  expect_error(m, kWk + ".absmax", "dtype Float, expected Byte");
  m = good_entries();
  m.erase(kWk + ".absmax");
  expect_error(m, kWk + ".absmax", "missing");
  m = good_entries();
  replace_in_json(m, "[40, 96]", "[40, 97]");  // 3880 elements: 61 blocks
  expect_error(m, kWk + ".absmax", "expected ceil(3880 / 64) = 61");
}

TEST(QuantErrors, NestedSizesAndPresence) {
  auto m = good_entries();
  m[kWk + ".nested_absmax"] = at::zeros({2}, at::kFloat);
  expect_error(m, kWk + ".nested_absmax", "2 elements, expected ceil(60 / 256) = 1");
  m = good_entries();
  m[kWk + ".nested_quant_map"] = m[kWk + ".nested_quant_map"].slice(0, 0, 255);
  expect_error(m, kWk + ".nested_quant_map", "255 elements");
  m = good_entries();
  m[kWk + ".nested_absmax"] = m[kWk + ".nested_absmax"].to(at::kHalf);
  expect_error(m, kWk + ".nested_absmax", "dtype Half");
  m = good_entries();
  m.erase(kWk + ".nested_absmax");
  expect_error(m, kWk + ".nested_absmax", "missing");
  m = good_entries();
  replace_in_json(m, "\"nested_blocksize\": 256, ", "");
  expect_error(m, kQs, "missing field 'nested_blocksize'");
  m = good_entries();
  replace_in_json(m, "\"nested_blocksize\": 256", "\"nested_blocksize\": 0");
  expect_error(m, kQs, "nested_blocksize 0");
}

TEST(QuantErrors, QuantMapAndPackedWeight) {
  auto m = good_entries();
  m[kWk + ".quant_map"] = at::tensor(code_table(QuantType::kFP4), at::kFloat);
  expect_error(m, kWk + ".quant_map", "not bitsandbytes' nf4 table");
  m = good_entries();
  m[kWk + ".quant_map"] = m[kWk + ".quant_map"].to(at::kDouble);
  expect_error(m, kWk + ".quant_map", "dtype Double");
  m = good_entries();
  m[kWk] = m[kWk].slice(0, 0, -1);
  expect_error(m, kWk, "1919 bytes, expected ceil(3840 / 2) = 1920");
}

TEST(QuantErrors, QuantizeRejectsWhatBnbRejects) {
  const at::Tensor w = at::randn({4, 64});
  EXPECT_THROW(quantize_4bit(w, QuantType::kNF4, 48), std::invalid_argument);
  EXPECT_THROW(quantize_4bit(w, QuantType::kNF4, 8192), std::invalid_argument);
  EXPECT_THROW(quantize_4bit(w.to(at::kDouble), QuantType::kNF4), std::invalid_argument);
  EXPECT_THROW(quantize_4bit(w.to(at::kInt), QuantType::kFP4), std::invalid_argument);
  const Quantized4bit q = quantize_4bit(w, QuantType::kNF4);
  const at::Tensor scales = dequantize_absmax(q.state);
  at::Tensor out = at::empty({2, 64});
  EXPECT_THROW(dequantize_4bit_rows(q.packed, q.state, scales, 3, 5, out), std::out_of_range);
  EXPECT_THROW(dequantize_4bit_rows(q.packed, q.state, scales, 0, 1, out), std::invalid_argument);
  EXPECT_THROW(dequantize_4bit_rows(q.packed, q.state, scales, 0, 2, out.to(at::kDouble)), std::invalid_argument);
  EXPECT_THROW(dequantize_4bit(q.packed.slice(0, 1), q.state), std::runtime_error);
}

}  // namespace
}  // namespace peft::quant
