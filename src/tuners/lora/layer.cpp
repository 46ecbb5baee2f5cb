#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <stdexcept>

#include "peft/layers.h"
#include "peft/lora.h"
#include "tuners/lora/corda.h"
#include "tuners/lora/few_rows.h"
#include "tuners/lora/loftq.h"
#include "tuners/init_draws.h"
#include "tuners/lora/svd_lowrank.h"

namespace peft {

namespace {

// The data-driven inits' common preconditions: the calibration pass ran, and the weight
// they rewrite is a dense one.
void require_calibration(const at::Tensor& calibration, const AdaptableLayer& host, const std::string& method) {
  if (!calibration.defined())
    throw std::invalid_argument(method + " init needs a calibration pass over data first (peft train runs one on "
                                "the training file)");
  if (host.weight_quantized())
    throw std::invalid_argument(method + " init rewrites the weight: load the base unquantized");
}

// The draws HF's update_layer makes before a data-driven init: building nn.Linear(in, r)
// and nn.Linear(r, out) draws their kaiming init. Repeating them keeps the generator where
// HF's is, so a randomized SVD after them sketches with HF's numbers.
void skip_nn_linear_draws(int64_t rank, int64_t in, int64_t outf, at::Generator& gen) {
  kaiming_uniform_sqrt5(rank, in, gen);
  kaiming_uniform_sqrt5(outf, rank, gen);
}

}  // namespace

// --- LoraLinear ----------------------------------------------------------------------

LoraLinear::LoraLinear(AdaptableLayer* host, int64_t in, int64_t out, int64_t r, double scaling_, double dropout_,
                       bool use_dora_, bool fan_in_fan_out_)
    : LayerAdapter(host), scaling(scaling_), dropout(dropout_), use_dora(use_dora_), fan_in_fan_out(fan_in_fan_out_) {
  register_parameter("lora_A.weight", &lora_A, {r, in});
  register_parameter("lora_B.weight", &lora_B, {out, r});
  if (use_dora) register_parameter("lora_magnitude_vector", &magnitude, {out});
}

void LoraLinear::add_bias() {
  const int64_t out = lora_B.defined() ? lora_B.size(0) : host_->output_dim();
  lora_bias = at::zeros({out}, at::kFloat);
  register_parameter("lora_B.bias", &lora_bias, {out});
}

at::Tensor LoraLinear::host_weight() const {
  at::Tensor w = host_->dense_weight();
  if (!w.defined()) throw std::logic_error("LoRA on a " + host_->type_name() + ": it has no weight to merge into");
  return w;
}

at::Tensor LoraLinear::host_weight_out_in() const {
  at::Tensor w = host_weight();
  return fan_in_fan_out ? w.t() : w;
}

void LoraLinear::set_host_weight_out_in(const at::Tensor& w_out_in) {
  host_->assign_weight(fan_in_fan_out ? w_out_in.t() : w_out_in);
}

at::Tensor LoraLinear::host_bias() const {
  at::Tensor* b = host_->bias_tensor();
  return b ? *b : at::Tensor();
}

at::Tensor LoraLinear::delta_weight() const { return at::matmul(lora_B, lora_A) * scaling; }

// ||W + delta||, one value per output row (DoRA), never part of the graph.
at::Tensor LoraLinear::dora_weight_norm(const at::Tensor& delta) const {
  auto w = host_weight_out_in().to(at::kFloat) + delta;
  return at::linalg_vector_norm(w, 2, {1}).detach();
}

at::Tensor LoraLinear::forward(const at::Tensor& x, const at::Tensor& out) {
  const bool drop = training && dropout > 0;
  // Under autocast the products run in bf16 whatever x is: casting x to the fp32 adapter's
  // type would only copy it, to be cast back.
  const bool autocast = at::autocast::is_autocast_enabled(x.device().type());
  if (!use_dora && !drop && !autocast)  // decoding: a few rows, no gradient
    if (at::Tensor y = lora_few_rows(x, lora_A, lora_B, lora_bias, scaling, out); y.defined()) return y;
  auto xa = autocast ? x : x.to(lora_A.scalar_type());
  if (drop) xa = at::dropout(xa, dropout, true);
  auto lora = at::linear(at::linear(xa, lora_A), lora_B, lora_bias);  // HF's lora_B Linear, bias included
  // In bf16 one pass adds the scaled term (rounded once); fp32 keeps transformers' order.
  if (!use_dora && autocast && lora.scalar_type() == out.scalar_type()) return out.add(lora, scaling);
  // HF PEFT's `result + lora * scaling`: a bf16 result meets the fp32 term in fp32, and the
  // sum is cast back once.
  if (!use_dora) return (out + lora * scaling).to(out.scalar_type());
  // DoRA: the base output re-scaled per row by m / ||W + s B A||, plus the scaled LoRA
  // term; the bias is not rescaled.
  auto norm = dora_weight_norm(delta_weight().detach());
  auto mag_scale = (magnitude / norm).view({1, -1});
  at::Tensor base;
  if (drop) {
    base = at::linear(xa, host_weight_out_in().to(xa.scalar_type()));
  } else {
    base = out.to(at::kFloat);
    if (auto b = host_bias(); b.defined()) base = base - b.to(at::kFloat);
  }
  auto dora = (mag_scale - 1) * base + mag_scale * lora * scaling;
  return out + dora.to(out.scalar_type());
}

std::optional<LayerAdapter::LowRank> LoraLinear::low_rank() const {
  if (use_dora || lora_bias.defined() || (training && dropout > 0)) return std::nullopt;
  return LowRank{lora_A, lora_B, scaling};
}

bool LoraLinear::set_scale(double multiplier) {
  if (!unscaled_) unscaled_ = scaling;
  scaling = *unscaled_ * multiplier;
  return true;
}

void LoraLinear::merge() {
  if (merged_) return;
  c10::NoGradGuard no_grad;
  auto delta = delta_weight();
  at::Tensor w_oi = host_weight_out_in().to(at::kFloat);
  at::Tensor merged;
  if (use_dora) {
    merged_weight_norm_ = dora_weight_norm(delta);
    merged = (magnitude / merged_weight_norm_).view({-1, 1}) * (w_oi + delta);
  } else {
    merged = w_oi + delta;
  }
  merge_bias(+1);
  set_host_weight_out_in(merged);
  merged_ = true;
}

void LoraLinear::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard no_grad;
  auto delta = delta_weight();
  at::Tensor w_oi = host_weight_out_in().to(at::kFloat);
  at::Tensor orig = use_dora ? w_oi / (magnitude / merged_weight_norm_).view({-1, 1}) - delta : w_oi - delta;
  set_host_weight_out_in(orig);
  merge_bias(-1);
  merged_ = false;
}

// lora_bias: the host's bias gains (or loses) scaling * lora_B.bias, as HF merges it.
void LoraLinear::merge_bias(int sign) {
  if (!lora_bias.defined()) return;
  at::Tensor* b = host_->bias_tensor();
  if (!b || !b->defined())
    throw std::invalid_argument("cannot merge LoRA with lora_bias: the base layer has no bias (as in HF PEFT)");
  b->add_((lora_bias * (sign * scaling)).to(b->scalar_type()));
}

std::vector<at::Tensor*> LoraLinear::trainable_slots() {
  std::vector<at::Tensor*> s;
  if (!freeze_A) s.push_back(&lora_A);
  s.push_back(&lora_B);
  if (lora_bias.defined()) s.push_back(&lora_bias);
  if (use_dora) s.push_back(&magnitude);
  return s;
}

void LoraLinear::initialize(const std::string& init, bool dora, at::Generator& gen) {
  c10::NoGradGuard no_grad;
  const auto shapes = [&] {
    std::vector<std::vector<int64_t>> out;
    visit_slots([&](const std::string&, ParamSlot& s) { out.push_back(s.shape); });
    return out;
  }();
  const int64_t rank = shapes[0][0], in = shapes[0][1], outf = shapes[1][0];
  if (init == "true" || init == "false" || init == "gaussian") {
    lora_A = init == "gaussian" ? at::empty({rank, in}, at::kFloat).normal_(0.0, 1.0 / rank, gen)
                                : kaiming_uniform_sqrt5(rank, in, gen);
    lora_B = init == "false" ? kaiming_uniform_sqrt5(outf, rank, gen) : at::zeros({outf, rank}, at::kFloat);
    // lora_bias: zero, or with init false nn.Linear(r, out)'s own bias init, U(±1/√r).
    if (lora_bias.defined())
      lora_bias = init == "false" ? at::empty({outf}, at::kFloat).uniform_(-1.0 / std::sqrt(double(rank)),
                                                                         1.0 / std::sqrt(double(rank)), gen)
                                  : at::zeros({outf}, at::kFloat);
  } else if (init == "pissa" || init == "olora" || init.rfind("pissa_niter_", 0) == 0) {
    const at::Tensor w = host_weight();
    const auto dtype = w.scalar_type();
    at::Tensor residual;
    if (init == "pissa") {
      auto wf = host_weight_out_in().to(at::kFloat);
      auto [U, S, Vh] = at::linalg_svd(wf, /*full_matrices=*/false);
      auto Sr = S.narrow(0, 0, rank) / scaling;
      lora_A = at::matmul(at::diag(Sr.sqrt()), Vh.narrow(0, 0, rank)).contiguous();
      lora_B = at::matmul(U.narrow(1, 0, rank), at::diag(Sr.sqrt())).contiguous();
      residual = wf - scaling * at::matmul(lora_B, lora_A);
      if (fan_in_fan_out) residual = residual.t();
    } else if (init != "olora") {
      // pissa_niter_N: HF's fast PiSSA through torch.svd_lowrank, its sketch drawn after
      // HF's own draws, so the same seed gives HF's factors.
      const int64_t niter = std::stoll(init.substr(12));
      skip_nn_linear_draws(rank, in, outf, gen);
      auto wf = host_weight_out_in().to(at::kFloat);
      auto [U, S, V] = svd_lowrank(wf, rank, niter, gen);
      auto Sr = S / scaling;
      lora_A = at::matmul(at::diag(Sr.sqrt()), V.t()).contiguous();
      lora_B = at::matmul(U, at::diag(Sr.sqrt())).contiguous();
      residual = wf - scaling * at::matmul(lora_B, lora_A);
      if (fan_in_fan_out) residual = residual.t();
    } else {
      // HF PEFT factors the weight as stored, which only fits [out, in] weights.
      if (fan_in_fan_out)
        throw std::invalid_argument("OLoRA init is not defined for fan_in_fan_out layers (GPT-2's Conv1D)");
      auto wf = w.to(at::kFloat);
      auto [Q, R] = at::linalg_qr(wf);
      lora_A = R.narrow(0, 0, rank).contiguous();
      lora_B = Q.narrow(1, 0, rank).contiguous();
      residual = wf - scaling * at::matmul(lora_B, lora_A);
    }
    if (host_->weight_quantized()) host_->assign_weight(residual);
    else *host_->weight_tensor() = residual.to(dtype).contiguous();
  } else if (init == "orthogonal") {
    // HF PEFT's orthogonal_init: A and B from the odd and even rows of one random
    // orthogonal matrix, so B A = 0 (the output starts at the base) with both nonzero.
    if (rank % 2 != 0)
      throw std::invalid_argument("orthogonal init needs an even LoRA rank, got " + std::to_string(rank));
    auto [Q, R] = at::linalg_qr(at::empty({rank, rank}, at::kFloat).normal_(0.0, 1.0, gen));
    const auto q_odd = Q.slice(0, 0, rank, 2), q_even = Q.slice(0, 1, rank, 2);
    lora_A = at::empty({in, rank / 2}, at::kFloat).normal_(0.0, 1.0, gen).mm(q_odd).t().contiguous() / 10.0;
    lora_B = at::empty({rank / 2, outf}, at::kFloat).normal_(0.0, 1.0, gen).t().mm(q_even).contiguous() / 10.0;
  } else if (init == "corda") {
    require_calibration(calibration, *host_, "CorDA");
    auto f = corda_decompose(host_weight_out_in(), calibration, rank, scaling, corda_method);
    lora_A = f.lora_A;
    lora_B = f.lora_B;
    set_host_weight_out_in(f.residual);
  } else if (init == "lora_ga") {
    require_calibration(calibration, *host_, "LoRA-GA");
    skip_nn_linear_draws(rank, in, outf, gen);
    init_lora_ga(rank, gen);
  } else if (init == "eva") {
    // HF's EVA: A holds the principal components of the layer's inputs the calibration
    // found (src/tuners/lora/eva.h), B starts at zero; the base weight is left alone.
    if (!calibration.defined() || calibration.dim() != 2 || calibration.size(0) != rank || calibration.size(1) != in)
      throw std::invalid_argument("EVA init needs the layer's components [" + std::to_string(rank) + ", " +
                                  std::to_string(in) + "] from a calibration pass (peft train runs one on the "
                                  "training file)");
    lora_A = calibration.to(at::kCPU, at::kFloat).contiguous();
    lora_B = at::zeros({outf, rank}, at::kFloat);
  } else if (init == "loftq") {
    // HF PEFT factors the weight as stored, which only fits [out, in] weights.
    if (fan_in_fan_out)
      throw std::invalid_argument("LoftQ init is not defined for fan_in_fan_out layers (GPT-2's Conv1D)");
    if (host_->weight_quantized())
      throw std::invalid_argument("LoftQ init quantizes the weight itself: load the base unquantized");
    const at::Tensor w = host_weight();
    auto f = loftq_decompose(w, rank, loftq_iter);
    lora_A = f.lora_A;  // not divided by scaling: HF's loftq_init leaves that to lora_alpha = r
    lora_B = f.lora_B;
    *host_->weight_tensor() = f.dequantized.to(w.device(), w.scalar_type()).contiguous();
  } else {
    throw std::invalid_argument("unknown init_lora_weights '" + init + "'");
  }
  auto device = host_weight().device();
  lora_A = lora_A.to(device);
  lora_B = lora_B.to(device);
  if (lora_bias.defined()) lora_bias = lora_bias.to(device);
  if (dora) magnitude = dora_weight_norm(delta_weight()).clone();
}

// HF PEFT's lora_ga_init: the gradient's top 2r singular vectors (torch.svd_lowrank, q =
// min(4r, its smaller side), 4 iterations) split between A and B by `lora_ga_direction`,
// B scaled by `lora_ga_scale`; the layer keeps W - scaling B A.
void LoraLinear::init_lora_ga(int64_t r, at::Generator& gen) {
  const auto grad = calibration.to(host_weight().device(), at::kFloat);  // [out, in]
  auto [U, S, V] = svd_lowrank(grad, std::min<int64_t>(4 * r, std::min(grad.size(0), grad.size(1))), 4, gen);
  if (S.size(0) < 2 * r)
    throw std::invalid_argument("LoRA-GA: rank " + std::to_string(r) + " needs 2r singular vectors of a " +
                                c10::str(grad.sizes()) + " gradient");
  const auto Vh = V.t();
  at::Tensor A, B, S_B;
  auto take = [&](const at::Tensor& a_rows, const at::Tensor& b_cols) {
    A = Vh.index_select(0, a_rows);
    S_B = S.index_select(0, b_cols);
    B = at::matmul(U.index_select(1, b_cols), at::diag(S_B));
  };
  const auto opts = at::TensorOptions(at::kLong).device(S.device());
  if (lora_ga_direction == "ArBr") take(at::arange(1, 2 * r, 2, opts), at::arange(0, 2 * r, 2, opts));
  else if (lora_ga_direction == "A2rBr") take(at::arange(r, 2 * r, opts), at::arange(0, r, opts));
  else if (lora_ga_direction == "ArB2r") take(at::arange(0, r, opts), at::arange(r, 2 * r, opts));
  else {
    const auto idx = at::randperm(2 * r, gen, opts).narrow(0, 0, r);
    take(idx, idx);
  }
  const at::Tensor w = host_weight();
  if (lora_ga_scale == "stable") {
    // HF multiplies by the stored weight's first dimension (out, or in for a Conv1D).
    B = B * (std::pow(static_cast<double>(w.size(0)), 0.25) / std::sqrt(static_cast<double>(lora_ga_stable_gamma)));
  } else if (lora_ga_scale == "weight_svd") {
    auto weight_S = std::get<1>(svd_lowrank(host_weight_out_in().to(at::kFloat), r, 4, gen));
    if (S_B[0].item<double>() > 0) B = B * (weight_S[0] / S_B[0]);
  } else if (lora_ga_scale == "gd_scale") {
    A = A / scaling;
    B = B / scaling;
  }
  lora_A = A.contiguous();
  lora_B = B.contiguous();
  set_host_weight_out_in(host_weight_out_in().to(at::kFloat) - scaling * at::matmul(lora_B, lora_A));
}

// --- LoraEmbedding -------------------------------------------------------------------

LoraEmbedding::LoraEmbedding(AdaptableLayer* host, int64_t num, int64_t dim, int64_t r, double scaling_)
    : LayerAdapter(host), scaling(scaling_) {
  register_parameter("lora_embedding_A", &lora_embedding_A, {r, num});
  register_parameter("lora_embedding_B", &lora_embedding_B, {dim, r});
}

at::Tensor LoraEmbedding::forward(const at::Tensor& ids, const at::Tensor& out) {
  auto after_a = at::embedding(lora_embedding_A.t(), ids);
  return out + (at::matmul(after_a, lora_embedding_B.t()) * scaling).to(out.scalar_type());
}

at::Tensor LoraEmbedding::delta_weight() const {
  return at::matmul(lora_embedding_B, lora_embedding_A).t() * scaling;
}

bool LoraEmbedding::set_scale(double multiplier) {
  if (!unscaled_) unscaled_ = scaling;
  scaling = *unscaled_ * multiplier;
  return true;
}

void LoraEmbedding::merge() {
  if (merged_) return;
  c10::NoGradGuard no_grad;
  auto& w = static_cast<Embedding*>(host_)->weight;
  w.copy_(w.to(at::kFloat) + delta_weight());
  merged_ = true;
}

void LoraEmbedding::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard no_grad;
  auto& w = static_cast<Embedding*>(host_)->weight;
  w.copy_(w.to(at::kFloat) - delta_weight());
  merged_ = false;
}

std::vector<at::Tensor*> LoraEmbedding::trainable_slots() { return {&lora_embedding_A, &lora_embedding_B}; }

void LoraEmbedding::initialize(const std::string& init, at::Generator& gen) {
  c10::NoGradGuard no_grad;
  std::vector<std::vector<int64_t>> shapes;
  visit_slots([&](const std::string&, ParamSlot& s) { shapes.push_back(s.shape); });
  const int64_t r = shapes[0][0], num = shapes[0][1], dim = shapes[1][0];
  if (init == "pissa" || init == "olora" || init == "loftq" || init == "orthogonal")
    throw std::invalid_argument(init + " init is not defined for embeddings");
  // HF PEFT: A zero, B standard normal (the reverse of linear layers); "false" keeps both random.
  lora_embedding_A = init == "false" ? at::empty({r, num}, at::kFloat).normal_(0, 1, gen) : at::zeros({r, num}, at::kFloat);
  lora_embedding_B = at::empty({dim, r}, at::kFloat).normal_(0, 1, gen);
  auto device = static_cast<Embedding*>(host_)->weight.device();
  lora_embedding_A = lora_embedding_A.to(device);
  lora_embedding_B = lora_embedding_B.to(device);
}

}  // namespace peft
