// `import peft_cpp`: the C++ trainer and models from Python. Tensors cross the boundary
// without copies (torch's own type casters wrap the same storage), configs cross as JSON
// (a dict is dumped by Python's json module and parsed by the same schema the CLI uses),
// and C++ errors arrive as ValueError / RuntimeError with the CLI's one-line messages.
#include <torch/csrc/utils/pybind.h>

#include "bindings.h"

PYBIND11_MODULE(peft_cpp, m) {
  m.doc() = "peft-cpp: parameter-efficient fine-tuning in C++ (LibTorch), HF PEFT's file formats";
  pybind11::module_::import("torch");  // registers torch.Tensor for the casters
  peft::python::bind_training(m);
  peft::python::bind_model(m);
}
