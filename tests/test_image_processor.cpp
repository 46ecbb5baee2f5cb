// Image decoding and preprocessing against PIL and transformers' AutoImageProcessor
// (tests/parity/make_image_processor.py), hostile files, and training a tiny ViT on
// image folders and image JSONL through `peft train`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "peft/image.h"
#include "peft/image_processor.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "cli_runner.h"
#include "test_util.h"
#include "train/image_data.h"
#include "train/setup.h"

namespace fs = std::filesystem;
using namespace peft;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;

namespace {

fs::path ref_dir() { return fs::path(PEFT_PARITY_DIR) / "image_processor"; }
json manifest() { return json::parse(std::ifstream(ref_dir() / "manifest.json")); }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_PARITY_DIR).parent_path() / "image_processor_scratch" / name;
  fs::create_directories(p.parent_path());
  return p;
}

at::Tensor hwc(const Image& im) {
  return at::from_blob(const_cast<uint8_t*>(im.pixels.data()), {im.height, im.width, im.channels}, at::kByte).clone();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// Every generated PNG and JPEG decodes to PIL's pixels, and to_rgb gives transformers'
// convert_to_rgb (alpha composited onto white with PIL's integer arithmetic).
TEST(ImageDecode, EqualsPilAndConvertToRgb) {
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  for (const auto& name : manifest()["images"]) {
    const std::string n = name.get<std::string>();
    const Image im = read_image((ref_dir() / "images" / n).string());
    SCOPED_TRACE(n);
    if (ref.contains("decoded/" + n)) {
      auto want = ref.get("decoded/" + n);
      if (want.dim() == 2) want = want.unsqueeze(-1);
      ASSERT_EQ(hwc(im).sizes(), want.sizes());
      EXPECT_EQ((hwc(im).to(at::kInt) - want.to(at::kInt)).abs().max().item<int>(), 0);
    }
    const auto want = ref.get("rgb/" + n);
    const auto got = hwc(to_rgb(im));
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_EQ((got.to(at::kInt) - want.to(at::kInt)).abs().max().item<int>(), 0);
  }
}

// pixel_values equal AutoImageProcessor's (torchvision backend) for every processor and
// image; where transformers refuses an image, so do we.
TEST(ImageProcessor, MatchesTransformersPixelValues) {
  const auto m = manifest();
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  double worst = 0;
  int compared = 0;
  for (const auto& [proc, info] : m["processors"].items()) {
    const auto cfg = read_image_processor_config((ref_dir() / "processors" / proc).string());
    EXPECT_EQ(cfg.type, info["class"].get<std::string>());
    for (const auto& name : m["images"]) {
      const std::string n = name.get<std::string>(), key = proc + "/" + n;
      SCOPED_TRACE(key);
      const Image im = read_image((ref_dir() / "images" / n).string());
      if (m["errors"].contains(key)) {
        EXPECT_THROW(preprocess_image(im, cfg), std::runtime_error);
        continue;
      }
      const auto got = preprocess_image(im, cfg);
      const auto want = ref.get("pv/" + key);
      ASSERT_EQ(got.sizes(), want.sizes());
      const double d = (got - want).abs().max().item<double>();
      EXPECT_LE(d, 1e-5);
      worst = std::max(worst, d);
      ++compared;
    }
  }
  EXPECT_GE(compared, 100);
  std::cout << "[ image processor ] " << compared << " images x processors, max abs diff " << worst << "\n";
}

TEST(ImageProcessor, ConfigDefaultsAndOldForms) {
  const auto dir = scratch("cfg");
  fs::create_directories(dir);
  auto write = [&](const std::string& text) { std::ofstream(dir / "preprocessor_config.json") << text; };
  write(R"({"image_processor_type": "CLIPImageProcessor"})");
  auto c = read_image_processor_config(dir.string());
  EXPECT_EQ(c.size.shortest_edge, 224);
  EXPECT_EQ(c.crop_size.height, 224);
  EXPECT_EQ(c.resample, Resample::kBicubic);
  EXPECT_TRUE(c.do_convert_rgb && c.do_center_crop);
  EXPECT_DOUBLE_EQ(c.image_mean[0], 0.48145466);
  write(R"({"image_processor_type": "ViTImageProcessor", "size": 32, "crop_size": 20, "do_center_crop": null})");
  c = read_image_processor_config(dir.string());
  EXPECT_EQ(c.size.height, 32);  // ViT: an int size is a square
  EXPECT_EQ(c.size.width, 32);
  EXPECT_FALSE(c.do_center_crop);
  EXPECT_FALSE(c.do_convert_rgb);
  EXPECT_EQ(c.resample, Resample::kBilinear);
  write(R"({"feature_extractor_type": "CLIPFeatureExtractor", "size": 40})");
  EXPECT_EQ(read_image_processor_config(dir.string()).size.shortest_edge, 40);  // CLIP: shortest edge
  // No type: config.json's model_type decides.
  write(R"({"size": {"height": 8, "width": 9}})");
  std::ofstream(dir / "config.json") << R"({"model_type": "vit"})";
  EXPECT_EQ(read_image_processor_config(dir.string()).type, "ViTImageProcessor");
  // resized_size follows transformers' int() truncation.
  EXPECT_EQ(resized_size(23, 37, ImageSize{.shortest_edge = 30}), (std::pair<int64_t, int64_t>{30, 48}));
  EXPECT_EQ(resized_size(211, 300, ImageSize{.shortest_edge = 224}), (std::pair<int64_t, int64_t>{224, 318}));
  for (const auto& [text, key] : std::vector<std::pair<std::string, std::string>>{
           {R"({"image_processor_type": "SiglipImageProcessor"})", "SiglipImageProcessor"},
           {R"({"image_processor_type": "ViTImageProcessor", "size": {"max_height": 3}})", "size"},
           {R"({"image_processor_type": "ViTImageProcessor", "resample": 9})", "resample"},
           {R"({"image_processor_type": "ViTImageProcessor", "do_resize": "yes"})", "do_resize"},
           {R"({"image_processor_type": "ViTImageProcessor", "image_std": [0.5, 0, 0.5]})", "image_std"},
           {R"({"image_processor_type": "ViTImageProcessor", "image_mean": "x"})", "image_mean"},
           {R"({"image_processor_type": "CLIPImageProcessor", "size": 1000000})", "size"},
           {R"([1, 2])", "JSON object"}}) {
    write(text);
    const auto e = error_of([&] { read_image_processor_config(dir.string()); });
    EXPECT_THAT(e, HasSubstr("preprocessor_config.json")) << text;
    EXPECT_THAT(e, HasSubstr(key)) << text;
  }
  write(R"({"image_processor_type": "ViTImageProcessor", "resample": 1})");  // LANCZOS
  Image im{4, 4, 3, std::vector<uint8_t>(48, 7)};
  EXPECT_THAT(error_of([&] { preprocess_image(im, read_image_processor_config(dir.string())); }), HasSubstr("LANCZOS"));
}

// Truncated, garbage, empty, other formats, and headers that declare billions of pixels:
// one line naming the file, before any large allocation.
TEST(ImageHostile, EveryFileGetsOneLineNamingIt) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(ref_dir() / "hostile")) {
    const std::string path = e.path().string();
    const auto msg = error_of([&] { read_image(path); });
    EXPECT_THAT(msg, HasSubstr(path));
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    ++n;
    const auto name = e.path().filename().string();
    if (name.starts_with("huge_")) EXPECT_THAT(msg, HasSubstr("limit")) << msg;
    if (name.starts_with("bomb_")) EXPECT_THAT(msg, HasSubstr("can hold")) << msg;
    if (name.starts_with("truncated")) EXPECT_THAT(msg, HasSubstr("truncated")) << msg;
    if (name == "image.gif") EXPECT_THAT(msg, HasSubstr("unsupported image format (GIF)")) << msg;
  }
  EXPECT_GE(n, 13);
  EXPECT_THAT(error_of([] { read_image("/nonexistent/x.png"); }), HasSubstr("/nonexistent/x.png"));
  EXPECT_THAT(error_of([] { read_image("/tmp"); }), HasSubstr("not a regular file"));
}

// A lower pixel budget (the fuzzer's) refuses a PNG and a JPEG one pixel over it, naming
// them, and decodes them at exactly their size.
TEST(ImageHostile, APixelBudgetBelowTheLimit) {
  for (const char* base : {"rgb_37x23.png", "rgb420_45x33.jpg"}) {
    std::ifstream in(ref_dir() / "images" / base, std::ios::binary);
    const std::vector<uint8_t> b((std::istreambuf_iterator<char>(in)), {});
    const Image full = decode_image(b, base);
    const int64_t n = full.width * full.height;
    EXPECT_EQ(decode_image(b, base, n).pixels, full.pixels);
    const auto msg = error_of([&] { decode_image(b, base, n - 1); });
    EXPECT_THAT(msg, HasSubstr(base));
    EXPECT_THAT(msg, HasSubstr("more than the limit of " + std::to_string(n - 1))) << msg;
  }
}

// Fuzz-ish: a few hundred seeded mutations (byte flips, truncation, inserted runs) of a
// PNG and two JPEGs. Each either decodes to a consistent image or throws naming the input.
TEST(ImageHostile, MutatedFilesDecodeOrFailCleanly) {
  std::mt19937 rng(7);
  int ok = 0, failed = 0;
  for (const char* base : {"rgb_37x23.png", "interlaced_52x45.png", "rgb420_45x33.jpg", "progressive_170x250.jpg"}) {
    std::ifstream in(ref_dir() / "images" / base, std::ios::binary);
    const std::vector<uint8_t> orig((std::istreambuf_iterator<char>(in)), {});
    for (int i = 0; i < 150; ++i) {
      auto b = orig;
      const int kind = i % 3;
      if (kind == 0) {
        for (int k = 0; k < 1 + i % 8; ++k) b[8 + rng() % (b.size() - 8)] ^= static_cast<uint8_t>(1 + rng() % 255);
      } else if (kind == 1) {
        b.resize(rng() % b.size());
      } else {
        b.insert(b.begin() + 2 + rng() % (b.size() - 2), 1 + rng() % 64, static_cast<uint8_t>(rng()));
      }
      const std::string name = std::string("mutant-") + base + "-" + std::to_string(i);
      try {
        const Image im = decode_image(b, name);
        EXPECT_EQ(im.pixels.size(), static_cast<size_t>(im.width * im.height * im.channels));
        EXPECT_LE(im.width * im.height, kMaxImagePixels);
        ++ok;
      } catch (const std::runtime_error& e) {
        EXPECT_THAT(e.what(), HasSubstr(name));
        ++failed;
      }
    }
  }
  EXPECT_GT(failed, 100);
  std::cout << "[ mutants ] " << ok << " decoded, " << failed << " refused\n";
}

// An image folder (classes sorted, indexed through label2id when it names them all) and
// JSONL read the same files into the same pixel_values the processor gives.
TEST(ImageData, FolderAndJsonlThroughTheModelsProcessor) {
  DataOptions o;
  o.model_dir = (ref_dir() / "vit_tiny").string();
  o.num_labels = 3;
  o.label2id = json{{"red", 0}, {"green", 1}, {"blue", 2}};
  const auto colors = ref_dir() / "colors";
  EXPECT_EQ(image_folder_classes((colors / "train").string()), (std::vector<std::string>{"blue", "green", "red"}));
  const auto folder = load_image_folder((colors / "train").string(), o);
  ASSERT_EQ(folder.size(), 72u);
  EXPECT_EQ(folder.front().class_label, 2);  // blue, first in sorted order, is label 2 by name
  EXPECT_EQ(folder.back().class_label, 0);   // red
  ASSERT_TRUE(is_image_jsonl((colors / "train.jsonl").string()));
  const auto jsonl = load_image_jsonl((colors / "train.jsonl").string(), o);
  ASSERT_EQ(jsonl.size(), folder.size());
  const auto proc = read_image_processor_config(o.model_dir);
  const auto first = preprocess_image(read_image((colors / "train/blue/blue_00.jpg").string()), proc);
  EXPECT_TRUE(folder.front().pixel_values.equal(first));
  for (size_t i = 0; i < folder.size(); ++i) {
    EXPECT_EQ(jsonl[i].class_label, folder[i].class_label);
    EXPECT_TRUE(jsonl[i].pixel_values.equal(folder[i].pixel_values));
  }
  EXPECT_EQ(first.sizes(), (c10::IntArrayRef{3, 16, 16}));
  // Without names in label2id the index is the sorted position, as torchvision's ImageFolder.
  o.label2id = json::object();
  EXPECT_EQ(load_image_folder((colors / "train").string(), o).front().class_label, 0);
  // Errors name the line and the file.
  const auto bad = scratch("bad.jsonl");
  std::ofstream(bad) << R"({"image": "missing.png", "label": 0})" << "\n";
  EXPECT_THAT(error_of([&] { load_image_jsonl(bad.string(), o); }), HasSubstr("line 1 of " + bad.string()));
  EXPECT_THAT(error_of([&] { load_image_jsonl(bad.string(), o); }), HasSubstr("missing.png"));
  std::ofstream(bad) << R"({"image": "train/red/red_01.png", "label": 5})" << "\n";
  fs::copy_file(colors / "train/red/red_01.png", scratch("train/red/red_01.png"), fs::copy_options::overwrite_existing);
  EXPECT_THAT(error_of([&] { load_image_jsonl(bad.string(), o); }), HasSubstr("out of range"));
}

// `peft train` on an image folder (eval on JSONL): a tiny random ViT learns which color
// dominates; loss goes down and accuracy up.
TEST(ImageTrain, TinyVitLearnsFromAnImageFolder) {
  const auto colors = ref_dir() / "colors";
  TrainConfig c;
  c.model = (ref_dir() / "vit_tiny").string();
  c.train_file = (colors / "train").string();
  c.eval_file = (colors / "eval.jsonl").string();
  c.output_dir = scratch("train_colors").string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(R"({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                             "modules_to_save": ["classifier"]})");
  c.max_steps = 60;
  c.per_device_train_batch_size = 12;
  c.learning_rate = 2e-2;
  c.eval_steps = 60;
  c.progress = false;
  const auto before = evaluate(c, {});
  const auto r = train(c);
  const auto& after = r.evals.back();
  std::cout << "[ tiny ViT ] eval loss " << before["eval_loss"] << " -> " << after["eval_loss"] << ", accuracy "
            << before["eval_accuracy"] << " -> " << after["eval_accuracy"] << "\n";
  EXPECT_LT(after["eval_loss"].get<double>(), 0.6 * before["eval_loss"].get<double>());
  EXPECT_GE(after["eval_accuracy"].get<double>(), 0.9);
  EXPECT_LT(r.steps.back().loss, r.steps.front().loss);
}

// `peft preprocess-image` writes what preprocess_image gives, `peft forward --pixels`
// takes it, and a bad file is one `error:` line naming it.
TEST(ImageCli, PreprocessImageFeedsForward) {
  const auto colors = ref_dir() / "colors" / "eval";
  const auto out = scratch("pixels.safetensors"), logits = scratch("logits.safetensors");
  fs::remove(out);
  fs::remove(logits);
  const std::string model = (ref_dir() / "vit_tiny").string();
  const std::string a = (colors / "red/red_00.jpg").string(), b = (colors / "blue/blue_01.png").string();
  int status = 0;
  test::run_command(std::string(PEFT_CLI) + " preprocess-image " + model + " " + a + " " + b + " --out " + out.string(),
                    &status);
  ASSERT_EQ(status, 0);
  const auto proc = read_image_processor_config(model);
  SafetensorsFile f(out.string());
  EXPECT_TRUE(f.get("pixel_values").equal(at::stack({preprocess_image(read_image(a), proc),
                                                      preprocess_image(read_image(b), proc)})));
  test::run_command(std::string(PEFT_CLI) + " forward " + model + " --pixels " + out.string() + " --out " +
                        logits.string(), &status);
  ASSERT_EQ(status, 0);
  EXPECT_EQ(SafetensorsFile(logits.string()).get("logits").sizes(), (c10::IntArrayRef{2, 3}));
  // An existing output is kept without --overwrite; a hostile file fails naming it.
  auto msg = test::run_command(std::string(PEFT_CLI) + " preprocess-image " + model + " " + a + " --out " + out.string() + " 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(msg, HasSubstr("--overwrite"));
  const auto bad = (ref_dir() / "hostile" / "truncated.png").string();
  msg = test::run_command(std::string(PEFT_CLI) + " preprocess-image " + model + " " + bad + " --out " + out.string() +
                              " --overwrite 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(msg, HasSubstr("error: " + bad));
}

// The same files through the CLI under a 384 MiB data limit, less than the 432 MB the
// 12000x12000 "bomb" declares: each ends in one `error:` line naming it, no signal.
TEST(ImageHostile, CliUnderAMemoryLimit) {
  const std::string model = (ref_dir() / "vit_tiny").string();
  const auto out = scratch("hostile_pixels.safetensors").string();
  auto ok = test::run_cli({"preprocess-image", model, (ref_dir() / "colors/eval/red/red_00.jpg").string(), "--out", out,
                           "--overwrite"}, {.memory_bytes = size_t(384) << 20, .timeout_s = 60});
  ASSERT_EQ(ok.exit_code, 0) << test::describe(ok);  // the limit leaves room for real work
  for (const auto& e : fs::directory_iterator(ref_dir() / "hostile")) {
    const auto r = test::run_cli({"preprocess-image", model, e.path().string(), "--out", out, "--overwrite"},
                                 {.memory_bytes = size_t(384) << 20, .timeout_s = 60});
    EXPECT_EQ(r.exit_code, 1) << test::describe(r);
    EXPECT_THAT(r.output, HasSubstr("error: " + e.path().string())) << test::describe(r);
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}
