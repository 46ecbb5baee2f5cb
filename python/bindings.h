// The parts of the peft_cpp Python module, one file each.
#pragma once

#include <pybind11/pybind11.h>

#include <nlohmann/json.hpp>

namespace peft::python {

// A Python object (dict, list, number, ...) as JSON, through Python's json module so
// that every type json.dumps accepts converts exactly as it would; and back.
nlohmann::ordered_json to_json(const pybind11::handle& obj);
pybind11::object from_json(const nlohmann::json& j);

void bind_training(pybind11::module_& m);  // train, evaluate
void bind_model(pybind11::module_& m);     // PeftModel: load, forward, generate, merge, save

}  // namespace peft::python
