// UniloraLayer: HF PEFT 0.21's unilora.Linear (forward, get_delta_weight, merge, unmerge).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include "peft/unilora.h"
#include "tuners/delta_merge.h"

namespace peft {

UniloraLayer::UniloraLayer(AdaptableLayer* host, std::shared_ptr<UniloraVector> vector, at::Tensor indices_A_,
                           at::Tensor indices_B_, at::Tensor scales_A_, at::Tensor scales_B_, double dropout_,
                           std::string file_key)
    : LayerAdapter(host),
      indices_A(std::move(indices_A_)),
      indices_B(std::move(indices_B_)),
      scales_A(std::move(scales_A_)),
      scales_B(std::move(scales_B_)),
      dropout(dropout_),
      vector_(std::move(vector)),
      file_key_(std::move(file_key)) {
  // Every layer registers the one θ_d: the model's parameters list it once; it is filed
  // once, under its shared key (shared_slots).
  register_parameter("unilora_theta_d", &vector_->theta_d, {vector_->theta_d.size(0)});
}

std::vector<LayerAdapter::SharedSlot> UniloraLayer::shared_slots() {
  std::vector<SharedSlot> out = {{"base_model.unilora_theta_d", &vector_->theta_d}};
  if (!file_key_.empty()) {  // save_indices: HF's persistent index and scale buffers
    out.push_back({file_key_ + "indices_A", &indices_A});
    out.push_back({file_key_ + "indices_B", &indices_B});
    out.push_back({file_key_ + "scales_A", &scales_A});
    out.push_back({file_key_ + "scales_B", &scales_B});
  }
  return out;
}

std::pair<at::Tensor, at::Tensor> UniloraLayer::lora_matrices() const {
  const auto& theta = vector_->theta_d;
  const auto gather = [&](const at::Tensor& index) {
    return theta.index_select(0, index.reshape(-1).to(theta.device())).view(index.sizes());
  };
  return {gather(indices_A) * scales_A.to(theta.device(), theta.scalar_type()),
          gather(indices_B) * scales_B.to(theta.device(), theta.scalar_type())};
}

at::Tensor UniloraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto [A, B] = lora_matrices();
  // HF computes on x cast to θ_d's dtype; under autocast the products run in its dtype.
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(vector_->theta_d.scalar_type());
  if (training && dropout > 0) xa = at::dropout(xa, dropout, true);
  const auto delta = at::linear(at::linear(xa, A.to(xa.scalar_type())), B.to(xa.scalar_type()));
  // HF adds in the wider dtype and casts the sum back to the input's.
  return (out + delta).to(out.scalar_type());
}

at::Tensor UniloraLayer::delta_weight() const {
  const auto [A, B] = lora_matrices();
  return at::matmul(B.to(at::kFloat), A.to(at::kFloat));
}

void UniloraLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void UniloraLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
