#include "tuners/vpt/layer.h"

#include <ATen/ATen.h>

namespace peft {

VisualPrompts::VisualPrompts(int64_t layers, int64_t n_, int64_t hidden, bool deep_) : n(n_), deep(deep_) {
  const int64_t lp = deep ? layers : 1;
  vpt_prompts = at::zeros({lp, n, hidden}, at::kFloat);
  register_parameter("vpt_prompts", &vpt_prompts, {lp, n, hidden});
}

int64_t VisualPrompts::prepare(Model&, ModelInputs& in) {
  in.before_layer = [this](size_t i, const at::Tensor& h) -> at::Tensor {
    const int64_t b = h.size(0);
    auto prompt = [&](size_t k) { return vpt_prompts[k].to(h.scalar_type()).unsqueeze(0).expand({b, n, h.size(2)}); };
    if (i == 0) return at::cat({h.narrow(1, 0, 1), prompt(0), h.narrow(1, 1, h.size(1) - 1)}, 1);
    if (!deep) return h;
    return at::cat({h.narrow(1, 0, 1), prompt(i), h.narrow(1, 1 + n, h.size(1) - 1 - n)}, 1);
  };
  return 0;
}

}  // namespace peft
