#include <pybind11/stl.h>

#include "bindings.h"
#include "peft/train.h"

namespace py = pybind11;

namespace peft::python {

nlohmann::ordered_json to_json(const py::handle& obj) {
  const std::string text = py::module_::import("json").attr("dumps")(obj).cast<std::string>();
  return nlohmann::ordered_json::parse(text);
}

py::object from_json(const nlohmann::json& j) {
  return py::module_::import("json").attr("loads")(j.dump());
}

namespace {

py::dict result_dict(const TrainResult& r) {
  nlohmann::json steps = nlohmann::json::array();
  for (const StepLog& s : r.steps)
    steps.push_back({{"step", s.step}, {"loss", s.loss}, {"learning_rate", s.learning_rate},
                     {"grad_norm", s.grad_norm}, {"tokens_per_second", s.tokens_per_second}});
  py::dict out;
  out["steps"] = from_json(steps);
  out["evals"] = from_json(nlohmann::json(r.evals));
  out["adapter_dir"] = r.adapter_dir;
  return out;
}

// peft train's config (docs/TRAINING.md), with key=value overrides as the CLI takes them.
TrainConfig parse_config(const py::dict& config, const std::vector<std::string>& overrides) {
  nlohmann::json j = to_json(config);
  if (!overrides.empty()) j = TrainConfig::with_overrides(j, overrides);
  return TrainConfig::from_json(j, "train config");
}

}  // namespace

void bind_training(py::module_& m) {
  m.def(
      "train",
      [](const py::dict& config, bool resume, bool overwrite, const std::vector<std::string>& overrides) {
        const TrainConfig cfg = parse_config(config, overrides);
        TrainResult r;
        {
          py::gil_scoped_release release;
          r = train(cfg, resume, overwrite);
        }
        return result_dict(r);
      },
      py::arg("config"), py::kw_only(), py::arg("resume") = false, py::arg("overwrite") = false,
      py::arg("overrides") = std::vector<std::string>{},
      "Runs `peft train` with a config dict (the JSON of docs/TRAINING.md). Returns\n"
      "{'steps': [{step, loss, learning_rate, grad_norm, tokens_per_second}], 'evals': [...],\n"
      "'adapter_dir': path}. Example:\n"
      "  peft_cpp.train({'model': 'm', 'train_file': 'd.jsonl', 'method': {'r': 8},\n"
      "                  'max_steps': 20, 'output_dir': 'out'})");
  m.def(
      "evaluate",
      [](const py::dict& config, const std::vector<std::string>& adapters) {
        const TrainConfig cfg = parse_config(config, {});
        nlohmann::json r;
        {
          py::gil_scoped_release release;
          r = evaluate(cfg, adapters);
        }
        return from_json(r);
      },
      py::arg("config"), py::arg("adapters") = std::vector<std::string>{},
      "`peft eval`: loss (and perplexity or accuracy) of the model with adapter folders on\n"
      "the config's eval_file.");
}

}  // namespace peft::python
