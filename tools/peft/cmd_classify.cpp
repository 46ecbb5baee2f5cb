// peft classify MODEL_DIR --text ... [--adapter DIR]: label probabilities of a sequence classifier;
// with a CLIP model, --image ... --labels ... --template ...: zero-shot image classification.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <iostream>

#include "classify_zero_shot.h"
#include "common.h"
#include "peft/tokenizer.h"
#include "train/data.h"
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

// transformers names a class without id2label LABEL_<id>.
nlohmann::json label_name(const nlohmann::json& id2label, int64_t id) {
  const std::string key = std::to_string(id);
  return id2label.contains(key) ? id2label[key] : nlohmann::json("LABEL_" + key);
}

// One text's JSON line from its logits [num_labels], read as config.json's problem_type
// says (as transformers' text-classification pipeline does): a regression head prints its
// scores, a multi-label head sigmoid probabilities and every label over 0.5, a
// single-label head softmax probabilities and the best label.
nlohmann::json classify_line(const std::string& text, const at::Tensor& logits, const std::string& problem,
                             const nlohmann::json& id2label) {
  const auto values = [](const at::Tensor& t) {
    const auto c = t.to(at::kCPU, at::kFloat).contiguous();
    return std::vector<double>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  };
  nlohmann::json out = {{"text", text}};
  if (problem == "regression") {
    out["scores"] = values(logits);
    return out;
  }
  if (problem == "multi_label_classification") {
    const auto p = values(logits.sigmoid());
    nlohmann::json ids = nlohmann::json::array(), names = nlohmann::json::array();
    for (size_t i = 0; i < p.size(); ++i)
      if (p[i] > 0.5) ids.push_back(i), names.push_back(label_name(id2label, static_cast<int64_t>(i)));
    out["labels"] = ids;
    out["label_names"] = names;
    out["probabilities"] = p;
    return out;
  }
  const auto probs = logits.softmax(-1);
  const int64_t best = probs.argmax().item<int64_t>();
  out["label"] = best;
  out["probabilities"] = values(probs);
  out["label_name"] = label_name(id2label, best);
  return out;
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
      const auto logits = model->forward(in).logits[0];
      const auto problem = problem_type_of(model->config(), logits.size(-1), false);
      std::cout << classify_line(text, logits, problem, id2label).dump() << "\n";
    }
  });
}

}  // namespace peft::cli
