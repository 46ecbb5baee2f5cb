// peft classify MODEL_DIR --text ... [--adapter DIR]: label probabilities of a sequence classifier;
// with a CLIP model, --image ... --labels ... --template ...: zero-shot image classification.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <iostream>

#include "classify_zero_shot.h"
#include "common.h"
#include "peft/tokenizer.h"
#include "util/json_file.h"

namespace peft::cli {

namespace {

// The class names an adapter was trained with: `peft train labels=[...]` records them in
// train_config.json beside the adapter. Empty when no adapter has any.
std::vector<std::string> trained_labels(const std::vector<std::string>& adapter_dirs) {
  for (const auto& dir : adapter_dirs) {
    const auto path = (std::filesystem::path(dir) / "train_config.json").string();
    if (!std::filesystem::exists(path)) continue;
    const auto j = read_json_file(path);
    if (!j.is_object() || !j.contains("labels") || !j["labels"].is_array() || j["labels"].empty()) continue;
    std::vector<std::string> names;
    for (const auto& v : j["labels"]) names.push_back(strict_get<std::string>(v, path + ": 'labels' entries"));
    return names;
  }
  return {};
}

}  // namespace

void register_classify(CLI::App& app) {
  auto* cmd = app.add_subcommand("classify", "Classify texts with a sequence classifier (+ adapters); prints JSON lines");
  struct Args {
    ModelArgs model;
    AdapterArgs adapters;
    std::vector<std::string> texts, labels;
    std::string architecture;
    int64_t num_labels = 0, max_length = 512;
    ZeroShotArgs zero_shot;
  };
  cmd->footer("Example: peft classify ./all-MiniLM-L6-v2 --architecture BertForSequenceClassification "
              "--adapter out/classifier --text 'In the beginning God created the heaven and the earth.'\n"
              "Zero-shot (CLIP): peft classify ./clip-vit-base-patch32 --image cat.png --image dog.jpg "
              "--labels \"cat,dog,bird\" --template \"a photo of a {}\"");
  auto a = std::make_shared<Args>();
  a->model.add_to(cmd);
  a->adapters.add_to(cmd);
  cmd->add_option("--text", a->texts, "Text to classify (repeatable)");
  cmd->add_option("--image", a->zero_shot.images, "CLIP: image to classify, PNG or JPEG (repeatable)");
  cmd->add_option("--template", a->zero_shot.templ,
                  "CLIP: the prompt each label is put into, at {} (transformers' zero-shot pipeline default)")
      ->default_val("This is a photo of {}.");
  cmd->add_option("--architecture", a->architecture, "Build this class, e.g. BertForSequenceClassification");
  cmd->add_option("--num-labels", a->num_labels, "With --architecture: classes of the head");
  cmd->add_option("--labels", a->labels,
                  "Class names in id order (default: the labels the adapter was trained with, from its "
                  "train_config.json, else config.json's id2label); CLIP: the candidate labels, e.g. \"cat,dog\"");
  cmd->add_option("--max-length", a->max_length, "Truncate to this many tokens")->capture_default_str();
  cmd->callback([a] {
    LoadOptions o;
    o.dtype = parse_dtype(a->model.dtype);
    o.device = a->model.device;
    o.architecture = a->architecture;
    o.num_labels = a->num_labels;
    o.labels = a->labels.empty() ? trained_labels(a->adapters.dirs) : a->labels;
    auto model = load_model(a->model.dir, o);
    if (!a->zero_shot.images.empty()) {
      if (!a->texts.empty()) throw std::invalid_argument("--text and --image do not go together");
      auto peft = a->adapters.apply(model);
      a->zero_shot.labels = a->labels;
      a->zero_shot.max_length = a->max_length < model->max_positions() ? a->max_length : 0;
      return classify_zero_shot(*model, a->model.dir, a->zero_shot);
    }
    if (a->texts.empty()) throw std::invalid_argument("classify needs --text (or, with a CLIP model, --image)");
    if (model->task() != TaskKind::kSequenceClassification)
      throw std::invalid_argument(model->type_name() + " is not a sequence classifier (see --architecture)");
    auto peft = a->adapters.apply(model);
    auto tok = Tokenizer::from_file(a->model.dir);
    c10::InferenceMode guard;
    const auto& id2label = model->config().value("id2label", nlohmann::json::object());
    for (const auto& text : a->texts) {
      auto ids = tok.encode(text).ids;
      if (static_cast<int64_t>(ids.size()) > a->max_length) ids.resize(a->max_length);
      ModelInputs in;
      in.input_ids = at::tensor(ids, at::kLong).unsqueeze(0).to(at::Device(a->model.device));
      auto probs = model->forward(in).logits.softmax(-1)[0].to(at::kCPU, at::kFloat);
      const int64_t best = probs.argmax().item<int64_t>();
      std::vector<double> p(probs.data_ptr<float>(), probs.data_ptr<float>() + probs.numel());
      const std::string key = std::to_string(best);
      nlohmann::json out = {{"text", text}, {"label", best}, {"probabilities", p}};
      // transformers names a class without id2label LABEL_<id>.
      out["label_name"] = id2label.contains(key) ? id2label[key] : nlohmann::json("LABEL_" + key);
      std::cout << out.dump() << "\n";
    }
  });
}

}  // namespace peft::cli
