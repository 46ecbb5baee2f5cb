#include "tuners/p_tuning/layer.h"

#include <ATen/ATen.h>

namespace peft {

PromptEncoder::PromptEncoder(int64_t n_, int64_t dim_, int64_t hidden, bool use_lstm_, int64_t layers, double drop,
                             int64_t rows_)
    : SoftPrompt(n_, dim_, "embedding.weight", rows_), use_lstm(use_lstm_), lstm_layers(layers), dropout(drop) {
  // HF's parameter names and shapes; the tensors are created before any is registered so
  // that the slot pointers into the vectors stay valid.
  std::vector<std::pair<std::string, std::vector<int64_t>>> mlp_shapes, lstm_shapes;
  if (use_lstm) {
    for (int64_t l = 0; l < layers; ++l)
      for (const std::string dir : {"", "_reverse"}) {
        const int64_t in = l == 0 ? dim : 2 * hidden;
        const std::string s = "_l" + std::to_string(l) + dir;
        lstm_shapes.push_back({"lstm_head.weight_ih" + s, {4 * hidden, in}});
        lstm_shapes.push_back({"lstm_head.weight_hh" + s, {4 * hidden, hidden}});
        lstm_shapes.push_back({"lstm_head.bias_ih" + s, {4 * hidden}});
        lstm_shapes.push_back({"lstm_head.bias_hh" + s, {4 * hidden}});
      }
    mlp_shapes = {{"mlp_head.0.weight", {2 * hidden, 2 * hidden}}, {"mlp_head.0.bias", {2 * hidden}},
                  {"mlp_head.2.weight", {dim, 2 * hidden}},        {"mlp_head.2.bias", {dim}}};
  } else {
    mlp_shapes = {{"mlp_head.0.weight", {hidden, dim}},    {"mlp_head.0.bias", {hidden}},
                  {"mlp_head.2.weight", {hidden, hidden}}, {"mlp_head.2.bias", {hidden}},
                  {"mlp_head.4.weight", {dim, hidden}},    {"mlp_head.4.bias", {dim}}};
  }
  for (const auto& [name, shape] : lstm_shapes) lstm.push_back(at::zeros(shape, at::kFloat));
  for (const auto& [name, shape] : mlp_shapes) mlp.push_back(at::zeros(shape, at::kFloat));
  for (size_t i = 0; i < lstm.size(); ++i) register_parameter(lstm_shapes[i].first, &lstm[i], lstm_shapes[i].second);
  for (size_t i = 0; i < mlp.size(); ++i) register_parameter(mlp_shapes[i].first, &mlp[i], mlp_shapes[i].second);
}

at::Tensor PromptEncoder::prompts() {
  at::Tensor h = embedding.unsqueeze(0);  // [1, n, dim]
  if (use_lstm) {
    auto hx = at::zeros({2 * lstm_layers, 1, lstm[1].size(1)}, h.options());
    h = std::get<0>(at::lstm(h, {hx, hx}, lstm, /*has_biases=*/true, lstm_layers, dropout, training,
                             /*bidirectional=*/true, /*batch_first=*/true));
  }
  for (size_t i = 0; i < mlp.size(); i += 2) {
    h = at::linear(h, mlp[i], mlp[i + 1]);
    if (i + 2 < mlp.size()) h = at::relu(h);
  }
  return h.squeeze(0);
}

}  // namespace peft
