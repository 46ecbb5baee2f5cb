#include <torch/csrc/utils/pybind.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "peft/generate.h"
#include "peft/peft_model.h"

namespace py = pybind11;

namespace peft::python {
namespace {

// A model with its adapters, as `peft forward/generate --adapter ...` hold it.
class PyPeftModel {
 public:
  PyPeftModel(const std::string& dir, const py::object& adapters, const std::string& dtype,
              const std::string& device, bool merged)
      : dir_(dir) {
    LoadOptions o;
    o.dtype = parse_dtype(dtype);
    o.device = device;
    model_ = load_model(dir, o);
    peft_ = std::make_unique<PeftModel>(model_);
    std::vector<std::string> names;
    for (const auto& [name, path] : adapter_dirs(adapters)) {
      peft_->load_adapter(path, name);
      names.push_back(name);
    }
    if (!names.empty()) peft_->set_adapter(names);
    if (merged) peft_->merge();
  }

  at::Tensor forward(const at::Tensor& input_ids, const std::optional<at::Tensor>& attention_mask,
                     const std::optional<at::Tensor>& token_type_ids, const std::optional<at::Tensor>& pixel_values) {
    ModelInputs in;
    if (input_ids.defined()) in.input_ids = input_ids.to(at::kLong);
    if (attention_mask) in.attention_mask = *attention_mask;
    if (token_type_ids) in.token_type_ids = *token_type_ids;
    if (pixel_values) in.pixel_values = *pixel_values;
    py::gil_scoped_release release;
    c10::NoGradGuard no_grad;
    ModelOutputs out = peft_->forward(in);
    return out.logits.defined() ? out.logits : out.last_hidden_state;
  }

  // The model's generation defaults (generation_config.json), then the caller's arguments,
  // as transformers' generate(**kwargs) combines them.
  std::vector<std::vector<int64_t>> generate(const std::vector<std::vector<int64_t>>& prompts, const py::kwargs& kwargs) {
    GenerationConfig g = generation_defaults(*model_, dir_);
    apply_generation_kwargs(*model_, to_json(kwargs), "generate()", g);
    py::gil_scoped_release release;
    c10::NoGradGuard no_grad;
    return peft::generate(*model_, prompts, g);
  }

  PeftModel& peft() { return *peft_; }
  Model& model() { return *model_; }

 private:
  static at::ScalarType parse_dtype(const std::string& name) {
    if (name == "float32" || name == "fp32") return at::kFloat;
    if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
    if (name == "float16" || name == "fp16") return at::kHalf;
    throw std::invalid_argument("unknown dtype '" + name + "' (float32, bfloat16, float16)");
  }

  // None, a folder, a list of folders (named default, adapter1, ...) or {name: folder}.
  static std::vector<std::pair<std::string, std::string>> adapter_dirs(const py::object& a) {
    std::vector<std::pair<std::string, std::string>> out;
    if (a.is_none()) return out;
    if (py::isinstance<py::str>(a)) return {{"default", a.cast<std::string>()}};
    if (py::isinstance<py::dict>(a)) {
      for (const auto& [k, v] : a.cast<py::dict>()) out.emplace_back(k.cast<std::string>(), v.cast<std::string>());
      return out;
    }
    const auto dirs = a.cast<std::vector<std::string>>();
    for (size_t i = 0; i < dirs.size(); ++i)
      out.emplace_back(i == 0 ? "default" : "adapter" + std::to_string(i), dirs[i]);
    return out;
  }

  std::string dir_;
  std::shared_ptr<Model> model_;
  std::unique_ptr<PeftModel> peft_;
};

void bind_adapters(py::class_<PyPeftModel>& c) {
  c.def("load_adapter", [](PyPeftModel& m, const std::string& dir, const std::string& name) { m.peft().load_adapter(dir, name); },
        py::arg("dir"), py::arg("name") = "default")
      .def("save_adapter", [](PyPeftModel& m, const std::string& dir, const std::string& name) { m.peft().save_adapter(dir, name); },
           py::arg("dir"), py::arg("name") = "default")
      .def("set_adapter", [](PyPeftModel& m, const std::vector<std::string>& names) { m.peft().set_adapter(names); })
      .def("delete_adapter", [](PyPeftModel& m, const std::string& name) { m.peft().delete_adapter(name); })
      .def_property_readonly("adapters", [](PyPeftModel& m) { return m.peft().adapters(); })
      .def_property_readonly("active_adapters", [](PyPeftModel& m) { return m.peft().active_adapters(); })
      .def("merge", [](PyPeftModel& m) { m.peft().merge(); }, "Folds the active adapters into the base weights.")
      .def("unmerge", [](PyPeftModel& m) { m.peft().unmerge(); })
      .def("merge_and_unload", [](PyPeftModel& m) { m.peft().merge_and_unload(); },
           "Merges the active adapters and removes every adapter; the model is then the plain merged model.")
      .def("trainable_parameters", [](PyPeftModel& m) { return m.peft().trainable_parameters(); },
           "(trainable, all) as HF PEFT counts them.")
      .def("trainable_parameters_line", [](PyPeftModel& m) { return m.peft().trainable_parameters_line(); });
}

}  // namespace

void bind_model(py::module_& m) {
  py::class_<PyPeftModel> c(m, "PeftModel",
                            "A model folder with adapters. Example:\n"
                            "  m = peft_cpp.PeftModel('model', adapters={'chat': 'out/adapter'})\n"
                            "  logits = m.forward(torch.tensor([[1, 2, 3]]))");
  c.def(py::init<const std::string&, const py::object&, const std::string&, const std::string&, bool>(),
        py::arg("model_dir"), py::arg("adapters") = py::none(), py::kw_only(), py::arg("dtype") = "float32",
        py::arg("device") = "cpu", py::arg("merged") = false)
      .def("forward", &PyPeftModel::forward, py::arg("input_ids"), py::arg("attention_mask") = py::none(),
           py::arg("token_type_ids") = py::none(), py::arg("pixel_values") = py::none(),
           "Logits (or last_hidden_state for headless models) as a torch.Tensor that shares the\n"
           "C++ result's memory; no gradients.")
      .def("generate", &PyPeftModel::generate, py::arg("prompts"),
           "Continues each prompt (a list of token-id lists) and returns, per answer, the prompt\n"
           "followed by the new tokens (up to and including an EOS token). Decoding starts from the\n"
           "model's generation_config.json and takes transformers' generate() keyword arguments:\n"
           "max_new_tokens, do_sample, temperature, top_k, top_p, min_p, num_beams,\n"
           "num_return_sequences, length_penalty, early_stopping, repetition_penalty,\n"
           "no_repeat_ngram_size, min_length, min_new_tokens, eos_token_id, forced_bos_token_id,\n"
           "forced_eos_token_id, bad_words_ids, sequence_bias, suppress_tokens,\n"
           "begin_suppress_tokens, pad_token_id (max_length: encoder-decoders), and seed (sampling).\n"
           "As `peft generate`, it samples only when do_sample=True. Example:\n"
           "  m.generate([[1, 2, 3]], max_new_tokens=20, num_beams=4, num_return_sequences=2)")
      .def(
          "named_parameters",
          [](PyPeftModel& self) {
            py::dict d;
            for (const auto& [name, t] : self.model().named_parameters()) d[py::str(name)] = t;
            return d;
          },
          "{name: tensor} of the model (transformers' names), sharing memory with the C++ model.")
      .def("save_pretrained",
           [](PyPeftModel& self, const std::string& dir, bool overwrite) { save_pretrained(self.model(), dir, overwrite); },
           py::arg("dir"), py::kw_only(), py::arg("overwrite") = false);
  bind_adapters(c);
}

}  // namespace peft::python
