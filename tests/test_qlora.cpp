// QLoRA (issue 12) against transformers + bitsandbytes + HF PEFT (fixtures from
// tests/parity/make_qlora.py, bitsandbytes' reference CPU path: see its docstring): 4-bit
// loading, bnb's saved folders, LoRA on a 4-bit base (unmerged and merged), training,
// `peft quantize`, `peft inspect`, and bad 4-bit checkpoints through the CLI.
//
// Tolerances. Our dequantized weights are bit-identical to bnb's (tests/test_quant.cpp), so
// in fp32 the logits differ only by the order of the sums inside the matrix products and
// attention. Measured max |diff| over the real positions (logits up to ~6.4 in size):
// 2.9e-6 .. 4.0e-6 (4-bit base), 1.8e-6 .. 5.3e-6 (the 5-token row: decode-sized products),
// 2.6e-6 .. 9.5e-6 (with LoRA), 2.4e-6 .. 3.3e-6 (merged). kFp32Tol = 2e-5 sits ~2x above
// the largest; one 4-bit code one step off moves logits by 0.0097 to 0.24 (tried in three
// layers of llama_mha_nf4). In bf16
// (weights, activations and compute) each op rounds to 8 mantissa bits and the two stacks
// round in different places: the plain bf16 model (no 4-bit) already differs from
// transformers' by 0.078, the 4-bit one by 0.109 (0.094 on the 5-token row; bf16's step
// at |logit| in [4, 8) is 0.031), so kBf16Tol = 0.25; its codes are compared bytewise.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_runner.h"
#include "peft/layers.h"
#include "peft/lora.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "quant/linear_4bit.h"
#include "test_util.h"
#include "util/format.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kFp32Tol = 2e-5;
constexpr double kBf16Tol = 0.25;

fs::path parity(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / name; }
fs::path qlora_dir() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_qlora"; }
fs::path case_dir(const std::string& c) { return qlora_dir() / c; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "qlora" / name;
  fs::create_directories(p.parent_path());
  return p;
}
json case_info(const std::string& c) { return json::parse(std::ifstream(case_dir(c) / "case.json")); }
fs::path base_of(const std::string& c) { return parity(case_info(c)["base"].get<std::string>()); }

// The options transformers was given: BitsAndBytesConfig(load_in_4bit=True, ...), dtype=...
LoadOptions load_options(const std::string& c) {
  const json info = case_info(c);
  LoadOptions o;
  const bool bf16 = info["dtype"] == "bfloat16";
  o.dtype = bf16 ? at::kBFloat16 : at::kFloat;
  o.load_in_4bit = Load4bit{info["quant_type"].get<std::string>(), info["double_quant"].get<bool>(), 64,
                            info["compute_dtype"] == "bfloat16" ? at::kBFloat16 : at::kFloat};
  return o;
}
double tol_of(const std::string& c) { return case_info(c)["dtype"] == "bfloat16" ? kBf16Tol : kFp32Tol; }

at::Tensor logits_of(Model& m, const SafetensorsFile& ref) { return m.forward(test::inputs_of(ref)).logits; }

int count_4bit(Model& m) {
  int n = 0;
  for (auto& [name, mod] : m.named_modules())
    if (auto* l = dynamic_cast<Linear*>(mod); l && l->weight_4bit) ++n;
  return n;
}

// Keys whose dtype, shape or bytes differ between two safetensors files (a key in one
// only counts too); empty when the files hold the same tensors byte for byte.
std::vector<std::string> differing_tensors(const fs::path& a, const fs::path& b) {
  SafetensorsFile fa(a.string()), fb(b.string());
  std::vector<std::string> out;
  for (const auto& k : fa.names()) {
    if (!fb.contains(k)) {
      out.push_back(k + " (only in " + a.string() + ")");
      continue;
    }
    const auto &ia = fa.info(k), &ib = fb.info(k);
    const at::Tensor ta = fa.get(k), tb = fb.get(k);
    if (ia.dtype != ib.dtype || ia.shape != ib.shape || ta.nbytes() != tb.nbytes() ||
        std::memcmp(ta.data_ptr(), tb.data_ptr(), ta.nbytes()) != 0)
      out.push_back(k);
  }
  for (const auto& k : fb.names())
    if (!fa.contains(k)) out.push_back(k + " (only in " + b.string() + ")");
  return out;
}

const std::vector<std::string> kNone;

json config_of(const fs::path& dir) { return json::parse(std::ifstream(dir / "config.json")); }

int python_check(const std::vector<std::string>& args, std::string* log) {
  std::vector<std::string> argv = {std::string(PEFT_SOURCE_DIR) + "/tests/parity/make_qlora.py", "check"};
  argv.insert(argv.end(), args.begin(), args.end());
  int status = 0;
  *log = test::run_python(argv, &status);
  return status;
}

const std::vector<std::string> kAllCases = {"llama_mha_nf4", "llama_mha_fp4_dq",  "llama_gqa_tied_nf4_dq",
                                            "qwen2_fp4",     "qwen2_nf4_dq",      "llama_mha_nf4_bf16"};
const std::vector<std::string> kLoraCases = {"llama_mha_nf4", "llama_mha_fp4_dq", "llama_gqa_tied_nf4_dq",
                                             "qwen2_fp4"};

// --- (a), (b): the 4-bit base ----------------------------------------------------------

class QloraBase : public ::testing::TestWithParam<std::string> {};

// (a) load_in_4bit on the full-precision folder gives transformers + bnb's logits.
TEST_P(QloraBase, LoadIn4bitMatchesTransformersAndBitsandbytes) {
  c10::InferenceMode guard;
  const auto c = GetParam();
  SafetensorsFile ref((case_dir(c) / "reference.safetensors").string());
  auto model = load_model(base_of(c).string(), load_options(c));
  EXPECT_EQ(count_4bit(*model), case_info(c)["linear4bit"].get<int>()) << "the layers transformers quantized";
  const double d = test::max_diff(logits_of(*model, ref), ref.get("logits"), test::mask_of(ref));
  EXPECT_LE(d, tol_of(c));
  // Five rows: the few-row products (decode's fused GEMV where a layer's rows are whole blocks).
  ModelInputs short_in;
  short_in.input_ids = ref.get("short_input_ids");
  const double ds = test::max_diff(model->forward(short_in).logits, ref.get("short_logits"), at::Tensor());
  EXPECT_LE(ds, tol_of(c));
  std::cout << c << ": max|logits - bnb| = " << d << ", 5 rows: " << ds << "\n";
}

// (b) The folder transformers saved 4-bit loads (no options) with the same logits; our
// quantization of the same weights writes bnb's tensors byte for byte (codes, absmax,
// quant_map, nested statistics, the quant-state JSON, the full-precision rest), and the
// saved folder round-trips through our save_pretrained unchanged.
TEST_P(QloraBase, SavedFolderLoadsWithBnbsCodesAndLogits) {
  c10::InferenceMode guard;
  const auto c = GetParam();
  SafetensorsFile ref((case_dir(c) / "reference.safetensors").string());
  const fs::path hf = case_dir(c) / "hf4bit";
  LoadOptions o;
  o.dtype = load_options(c).dtype;  // the full-precision layers' dtype, as saved
  auto loaded = load_model(hf.string(), o);
  EXPECT_EQ(count_4bit(*loaded), case_info(c)["linear4bit"].get<int>());
  EXPECT_LE(test::max_diff(logits_of(*loaded, ref), ref.get("logits"), test::mask_of(ref)), tol_of(c));

  const fs::path resaved = scratch(c + "_resaved");
  save_pretrained(*loaded, resaved.string(), true);
  EXPECT_EQ(differing_tensors(resaved / "model.safetensors", hf / "model.safetensors"), kNone);

  auto ours = load_model(base_of(c).string(), load_options(c));
  const fs::path quantized = scratch(c + "_ours");
  save_pretrained(*ours, quantized.string(), true);
  EXPECT_EQ(differing_tensors(quantized / "model.safetensors", hf / "model.safetensors"), kNone);
  EXPECT_EQ(config_of(quantized)["quantization_config"], config_of(hf)["quantization_config"]);
}

INSTANTIATE_TEST_SUITE_P(Bnb, QloraBase, ::testing::ValuesIn(kAllCases));

// --- (c): LoRA made by HF PEFT on the bnb model ------------------------------------------

class QloraLora : public ::testing::TestWithParam<std::string> {};

TEST_P(QloraLora, PeftAdapterOnOur4bitBaseMatches) {
  c10::InferenceMode guard;
  const auto c = GetParam();
  SafetensorsFile ref((case_dir(c) / "reference.safetensors").string());
  for (const fs::path& base : {base_of(c), case_dir(c) / "hf4bit"}) {  // quantized here, and bnb's folder
    PeftModel peft(load_model(base.string(), base == base_of(c) ? load_options(c) : LoadOptions{}));
    peft.load_adapter((case_dir(c) / "adapter").string());
    const double d = test::max_diff(peft.forward(test::inputs_of(ref)).logits, ref.get("lora_logits"), test::mask_of(ref));
    EXPECT_LE(d, kFp32Tol) << base;
    std::cout << c << " (" << base.filename().string() << "): max|lora logits - peft| = " << d << "\n";
  }
}

// PEFT counts a 4-bit weight as twice its packed bytes (Params4bit); so do we.
TEST_P(QloraLora, TrainableLineMatchesPeft) {
  const auto c = GetParam();
  auto j = case_info(c)["lora"];
  j["peft_type"] = "LORA";
  auto cfg = LoraConfig::from_json(nlohmann::ordered_json::parse(j.dump()), "case.json");
  PeftModel peft(load_model(base_of(c).string(), load_options(c)));
  peft.add_adapter("default", cfg);
  std::string want;
  std::getline(std::ifstream(case_dir(c) / "trainable.txt"), want);
  EXPECT_EQ(peft.trainable_parameters_line(), want);
}

// Merging into a 4-bit weight requantizes it (dequantize, add B A * scale, quantize): the
// codes and statistics equal PEFT's merge on bnb byte for byte, so the logits match to fp32
// rounding, even though the requantization itself moves them by up to ~4.6 from the
// unmerged adapter's (make_qlora.py prints max|merged-lora|).
TEST_P(QloraLora, MergeRequantizesExactlyAsPeftOnBnb) {
  c10::InferenceMode guard;
  const auto c = GetParam();
  SafetensorsFile ref((case_dir(c) / "reference.safetensors").string());
  PeftModel peft(load_model(base_of(c).string(), load_options(c)));
  peft.load_adapter((case_dir(c) / "adapter").string());
  peft.merge();
  const double d = test::max_diff(peft.forward(test::inputs_of(ref)).logits, ref.get("merged_logits"), test::mask_of(ref));
  EXPECT_LE(d, kFp32Tol);
  std::cout << c << ": max|merged logits - peft| = " << d << "\n";
  auto base = peft.merge_and_unload();
  const fs::path out = scratch(c + "_merged");
  save_pretrained(*base, out.string(), true);
  EXPECT_EQ(differing_tensors(out / "model.safetensors", case_dir(c) / "merged4bit" / "model.safetensors"), kNone);
}

INSTANTIATE_TEST_SUITE_P(Peft, QloraLora, ::testing::ValuesIn(kLoraCases));

// --- (d): QLoRA training -----------------------------------------------------------------

void write_eval_data(const fs::path& jsonl) {
  std::ofstream f(jsonl);
  std::mt19937 rng(17);
  for (int i = 0; i < 24; ++i) {
    json ids = json::array();
    for (int t = 0, s = 1 + rng() % 80; t < 16; ++t) ids.push_back(s + t);
    f << json{{"input_ids", ids}}.dump() << "\n";
  }
}

TEST(QloraTrain, LowersEvalLossAndTheAdapterLoadsInPeftOnBnb) {
  const auto train_file = scratch("counting.jsonl"), eval_file = scratch("counting_eval.jsonl");
  test::write_counting_data(train_file);
  write_eval_data(eval_file);
  const fs::path out = scratch("train");
  const std::string method = R"({"r": 8, "lora_alpha": 16, "target_modules": "all-linear"})";
  const auto r = test::run_cli({"train", "model=" + parity("llama_mha").string(), "train_file=" + train_file.string(),
                                "eval_file=" + eval_file.string(), "output_dir=" + out.string(), "load_in_4bit=true",
                                "quant_type=nf4", "double_quant=true", "max_steps=60", "per_device_train_batch_size=8",
                                "learning_rate=5e-3", "eval_steps=30", "progress=false", "method=" + method,
                                "--overwrite"},
                               {.timeout_s = 600});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);

  TrainConfig c;
  c.model = parity("llama_mha").string();
  c.train_file = train_file.string();
  c.eval_file = eval_file.string();
  c.load_in_4bit = true;
  c.quant_type = "nf4";
  c.double_quant = true;
  c.method = json::parse(method);
  c.progress = false;
  const double before = evaluate(c, {})["eval_loss"];
  double after = 0;
  std::ifstream metrics(out / "metrics.jsonl");
  for (std::string l; std::getline(metrics, l);)
    if (auto j = json::parse(l); j.contains("eval_loss")) after = j["eval_loss"];
  // The same bar as LoRA in full precision (TrainLearns.LoraOnACausalLmLowersEvalLoss).
  EXPECT_GT(after, 0);
  EXPECT_LT(after, 0.6 * before) << "eval loss " << before << " -> " << after;

  // Our outputs with the trained adapter on our 4-bit base, against HF PEFT loading it on
  // a base bnb quantizes with the same settings.
  c10::InferenceMode guard;
  LoadOptions o;
  o.load_in_4bit = Load4bit{"nf4", true, 64, at::kFloat};
  PeftModel peft(load_model(parity("llama_mha").string(), o));
  peft.load_adapter(out.string());
  SafetensorsFile ref((parity("llama_mha") / "reference.safetensors").string());
  const auto outputs = test::write_outputs(ref, "logits", peft.forward(test::inputs_of(ref)).logits,
                                           scratch("train_outputs.safetensors"));
  std::string log;
  EXPECT_EQ(python_check({parity("llama_mha").string(), out.string(), outputs.string(), "--quant-type", "nf4",
                          "--double-quant", "--tol", std::to_string(kFp32Tol)},
                         &log),
            0)
      << log;
  std::cout << log;
}

// --- (3): peft quantize ------------------------------------------------------------------

struct QuantizeCase {
  std::string fixture;                // bnb quantized the same weights with the same settings
  std::vector<std::string> flags;
};

void PrintTo(const QuantizeCase& c, std::ostream* os) { *os << c.fixture; }

class QloraQuantize : public ::testing::TestWithParam<QuantizeCase> {};

TEST_P(QloraQuantize, WritesBnbsFolderThatTransformersLoadsAsIs) {
  const auto& q = GetParam();
  const fs::path out = scratch("quantize_" + q.fixture);
  fs::remove_all(out);
  std::vector<std::string> args{"quantize", base_of(q.fixture).string(), out.string()};
  args.insert(args.end(), q.flags.begin(), q.flags.end());
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const int layers = case_info(q.fixture)["linear4bit"].get<int>();
  EXPECT_THAT(r.output, HasSubstr("quantized " + std::to_string(layers) + " of " + std::to_string(layers + 1) +
                                  " Linear layers to " + case_info(q.fixture)["quant_type"].get<std::string>()));
  EXPECT_THAT(r.output, HasSubstr("kept in float32: lm_head"));
  EXPECT_THAT(r.output, HasSubstr("bytes per parameter: 4.00 -> "));

  // The codes and every other tensor equal bnb's own quantization of the same weights.
  const fs::path hf = case_dir(q.fixture) / "hf4bit";
  EXPECT_EQ(differing_tensors(out / "model.safetensors", hf / "model.safetensors"), kNone);
  EXPECT_EQ(config_of(out)["quantization_config"], config_of(hf)["quantization_config"]);
  EXPECT_TRUE(fs::exists(out / "generation_config.json"));

  // transformers + bnb load it with no arguments and give our 4-bit model's logits.
  c10::InferenceMode guard;
  SafetensorsFile ref((case_dir(q.fixture) / "reference.safetensors").string());
  auto model = load_model(out.string());
  EXPECT_EQ(count_4bit(*model), layers);
  const auto outputs =
      test::write_outputs(ref, "logits", logits_of(*model, ref), scratch("quantize_" + q.fixture + ".safetensors"));
  std::string log;
  EXPECT_EQ(python_check({out.string(), "-", outputs.string(), "--tol", std::to_string(kFp32Tol)}, &log), 0) << log;
}

INSTANTIATE_TEST_SUITE_P(Cli, QloraQuantize,
                         ::testing::Values(QuantizeCase{"llama_mha_nf4", {}},
                                           QuantizeCase{"llama_mha_fp4_dq", {"--quant-type", "fp4", "--double-quant"}}),
                         [](const auto& info) { return info.param.fixture; });

TEST(QloraQuantizeCli, RefusesAQuantizedModelAndAFolderHoldingWeights) {
  const fs::path out = scratch("quantize_refuse");
  fs::remove_all(out);
  auto r = test::run_cli({"quantize", (case_dir("llama_mha_nf4") / "hf4bit").string(), out.string()});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("quantization_config says the model is quantized already"));
  r = test::run_cli({"quantize", parity("llama_mha").string(), out.string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  r = test::run_cli({"quantize", parity("llama_mha").string(), out.string()});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("already holds model weights"));
  EXPECT_THAT(r.output, HasSubstr("--overwrite"));
  r = test::run_cli({"quantize", parity("llama_mha").string(), out.string(), "--overwrite", "--blocksize", "128"});
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  r = test::run_cli({"quantize", parity("llama_mha").string(), parity("llama_mha").string(), "--overwrite"});
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("is the model folder itself"));
  r = test::run_cli({"quantize", "--help"});
  EXPECT_THAT(r.output, HasSubstr("Example: peft quantize"));
}

// --- (4): peft inspect -------------------------------------------------------------------

TEST(QloraInspect, Shows4bitSettingsLayersAndBytesPerParameter) {
  auto r = test::run_cli({"inspect", (case_dir("llama_mha_fp4_dq") / "hf4bit").string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("4-bit layers: 14 (fp4, blocksize 64, double quant yes, compute dtype float32)"));
  EXPECT_THAT(r.output, HasSubstr("bytes per parameter: "));
  // Parameters are counted as transformers counts them (a 4-bit weight: 2 x its bytes).
  SafetensorsFile base_ref((parity("llama_mha") / "reference.safetensors").string());
  const auto n = base_ref.get("num_parameters").item<int64_t>();
  EXPECT_THAT(r.output, HasSubstr("total parameters: " + with_commas(n) + " (" + std::to_string(n) + ")"));
  r = test::run_cli({"inspect", parity("llama_mha").string()});
  EXPECT_THAT(r.output, Not(HasSubstr("4-bit")));
}

// --- (e): bad 4-bit checkpoints through the CLI ----------------------------------------

// A copy of llama_mha_nf4's bnb folder with `edit` applied to its tensors and config.
fs::path broken_folder(const std::string& name, const std::function<void(NamedTensors&)>& tensors,
                       const std::function<void(json&)>& config) {
  const fs::path dir = scratch("bad_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path src = case_dir("llama_mha_nf4") / "hf4bit";
  NamedTensors t;
  {
    SafetensorsFile f((src / "model.safetensors").string());
    for (const auto& k : f.names()) t.emplace_back(k, f.get(k).clone());
  }
  tensors(t);
  save_safetensors((dir / "model.safetensors").string(), t);
  json cfg = config_of(src);
  config(cfg);
  std::ofstream(dir / "config.json") << cfg.dump(2);
  return dir;
}

struct BadCase {
  std::string name;
  std::function<fs::path()> make;
  std::vector<std::string> expect;  // fragments of the one-line error
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class QloraBadInput : public ::testing::TestWithParam<BadCase> {};

TEST_P(QloraBadInput, FailsWithOneLineNamingFileAndKey) {
  const auto& c = GetParam();
  const fs::path dir = c.make();
  const auto r = test::run_cli({"forward", dir.string(), "--ids", (parity("llama_mha") / "ids.json").string(), "--out",
                                scratch("bad_out.safetensors").string()},
                               {.memory_bytes = size_t(3) << 30, .timeout_s = 60});
  ASSERT_FALSE(r.crashed()) << test::describe(r);
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_THAT(r.output, Not(HasSubstr("Exception raised from")));
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  EXPECT_EQ(out.find('\n'), std::string::npos) << "one line: " << out;
  EXPECT_THAT(out, ::testing::StartsWith("error: "));
  for (const auto& e : c.expect) EXPECT_THAT(out, HasSubstr(e));
}

const std::string kQ = "model.layers.0.self_attn.q_proj.weight";

void replace(NamedTensors& t, const std::string& key, const at::Tensor& v) {
  for (auto& [k, x] : t)
    if (k == key) x = v;
}
at::Tensor bytes(const std::string& s) {
  auto t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  std::memcpy(t.data_ptr(), s.data(), s.size());
  return t;
}

std::vector<BadCase> bad_cases() {
  auto keep = [](json&) {};
  auto keep_t = [](NamedTensors&) {};
  return {
      {"corrupt_quant_state_json",
       [=] {
         return broken_folder(
             "json", [](NamedTensors& t) { replace(t, kQ + ".quant_state.bitsandbytes__nf4", bytes("{\"quant_type\": ")); },
             keep);
       },
       {"model.safetensors: " + kQ + ".quant_state.bitsandbytes__nf4", "not valid JSON"}},
      {"absmax_length",
       [=] {
         return broken_folder(
             "absmax",
             [](NamedTensors& t) {
               for (auto& [k, x] : t)
                 if (k == kQ + ".absmax") x = x.narrow(0, 0, x.size(0) - 1).clone();
             },
             keep);
       },
       {"model.safetensors: " + kQ + ".absmax: 63 elements, expected ceil(4096 / 64) = 64"}},
      {"unknown_quant_type",
       [=] {
         return broken_folder("qtype", keep_t, [](json& c) { c["quantization_config"]["bnb_4bit_quant_type"] = "nf3"; });
       },
       {"config.json", "bnb_4bit_quant_type", "nf3"}},
      {"quant_method_gptq",
       [=] { return broken_folder("gptq", keep_t, [](json& c) { c["quantization_config"]["quant_method"] = "gptq"; }); },
       {"config.json", "quant_method", "gptq"}},
      {"load_in_8bit",
       [=] {
         return broken_folder("8bit", keep_t, [](json& c) {
           c["quantization_config"]["load_in_8bit"] = true;
           c["quantization_config"]["load_in_4bit"] = false;
         });
       },
       {"config.json", "load_in_8bit", "8-bit"}},
      {"quant_type_not_a_string",
       [=] {
         return broken_folder("qtype_num", keep_t, [](json& c) { c["quantization_config"]["bnb_4bit_quant_type"] = 4; });
       },
       {"config.json", "bnb_4bit_quant_type", "expected a string"}},
  };
}

INSTANTIATE_TEST_SUITE_P(Cli, QloraBadInput, ::testing::ValuesIn(bad_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace peft
