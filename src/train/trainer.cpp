// The training loop, mirroring HF Trainer's arithmetic (see docs/TRAINING.md): token-
// weighted loss across gradient accumulation, global-norm clipping, torch's AdamW with
// HF's decay groups, LambdaLR schedules; atomic checkpoints that resume exactly.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/optim/adamw.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>

#include "peft/layers.h"
#include "peft/lora.h"
#include "peft/task_ids.h"
#include "tuners/lora/init_conversion.h"
#include "peft/train.h"
#include "models/checkpoint.h"
#include "util/autocast.h"
#include "train/distributed.h"
#include "train/gradient_reducer.h"
#include "train/evaluate.h"
#include "train/image_data.h"  // image folders
#include "train/run_folder.h"
#include "train/schedule.h"
#include "train/setup.h"
#include "train/precision.h"
#include "util/atomic_file.h"
#include "util/cuda_backend.h"
#include "util/hash.h"
#include "util/process.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

// Fisher-Yates with a fixed generator: the same order on every platform.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  if (!shuffle) return order;
  std::mt19937_64 rng(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  return order;
}

std::string fmt_time(double s) {
  char buf[32];
  const int t = static_cast<int>(s);
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

// What makes two runs the same run: every setting that changes the steps' results, and
// the contents (not the paths) of the data files. Where and how it computes (the device,
// gradient checkpointing: same results up to rounding) may change on resume, e.g. to
// recompute activations after running out of memory.
nlohmann::json run_fingerprint(const TrainConfig& cfg) {
  nlohmann::json config = cfg.to_json(), data = nlohmann::json::object();
  for (const char* k : {"output_dir", "progress", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
                        "device", "early_stopping_patience", "gradient_checkpointing",
                        "gradient_checkpointing_every", "gradient_checkpointing_offload", "ddp_bucket_cap_mb"})
    config.erase(k);
  for (const char* k : {"train_file", "label_file", "eval_file", "eval_label_file"}) {
    const std::string f = config[k];
    config.erase(k);
    if (!f.empty()) data[k] = fs::is_directory(f) ? image_folder_content_hash(f) : file_content_hash(f);
  }
  return {{"config", config}, {"data", data}};
}

// Draws loss.png with gnuplot, if it is installed. The script names its files relative
// to the output folder, where gnuplot runs: no path, and nothing from the config, ever
// reaches a command line or a script.
void plot_losses(const fs::path& out_dir, const nlohmann::json& history) {
  std::string data;
  for (const auto& h : history)
    if (h.contains("loss")) data += h["step"].dump() + " " + h["loss"].dump() + "\n";
  data += "\n\n";
  for (const auto& h : history)
    if (h.contains("eval_loss")) data += h["step"].dump() + " " + h["eval_loss"].dump() + "\n";
  write_file_atomic((out_dir / "loss.dat").string(), data);
  write_file_atomic((out_dir / "loss.gp").string(),
                    "set terminal pngcairo size 900,500\nset output 'loss.png'\nset xlabel 'step'\n"
                    "set ylabel 'loss'\nset grid\nplot 'loss.dat' index 0 with lines title 'train', "
                    "'' index 1 with linespoints title 'eval'\n");
  if (run_program({"gnuplot", "loss.gp"}, out_dir.string()) != 0)
    std::cerr << "note: gnuplot not found or failed; loss curve not drawn (" << (out_dir / "loss.dat").string()
              << " has the numbers)\n";
}

class Trainer {
 public:
  // Under data parallelism every rank builds one; only rank 0 owns the output folder.
  Trainer(const TrainConfig& cfg, bool resume, bool overwrite, DataParallel& dp);
  TrainResult run();

 private:
  void load_data();
  void build_optimizer();
  void resume(const fs::path& ckpt);
  StepLog step();
  bool evaluate();  // true: stop early
  void log(const StepLog& s);
  void show_progress(const StepLog& s);
  void checkpoint();
  std::optional<Batch> micro_batch(int64_t epoch, int64_t index);
  at::Tensor backward(const std::vector<Batch>& mbs, int64_t items, int64_t n_micro);
  at::Tensor clip_gradients();
  void optimizer_step();
  void fused_adamw_step();
  bool rank0_says(bool value);

  const TrainConfig cfg_;  // a copy: the precision is the one this run computes in (as_run)
  const at::Device dev_;
  DataParallel& dp_;
  std::optional<RunFolder> run_;  // rank 0's
  std::optional<fs::path> ckpt_;
  TrainSetup s_;
  std::vector<Example> train_data_, eval_data_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<GradientReducer> reducer_;  // sums params_' gradients over the ranks
  std::unique_ptr<torch::optim::AdamW> opt_;
  int64_t per_epoch_ = 0, steps_per_epoch_ = 0, total_ = 0, warmup_ = 0;
  TrainerState st_;
  std::unique_ptr<AppendFile> metrics_;
  std::vector<std::vector<size_t>> orders_;  // per epoch, built on demand
  TrainResult result_;
  // HF logs the mean loss over the logging interval; the progress bar shows the same.
  double loss_since_log_ = 0, aux_since_log_ = 0, shown_loss_ = NAN;
  int64_t steps_since_log_ = 0, start_step_ = 0;
  std::chrono::steady_clock::time_point t_start_;
};

// The config as the run computes: precision=bf16 becomes fp32 where bf16 products are slow.
static TrainConfig as_run(TrainConfig c) {
  c.precision = effective_precision(c.precision, at::Device(c.device).is_cpu());
  return c;
}

Trainer::Trainer(const TrainConfig& cfg, bool resume, bool overwrite, DataParallel& dp)
    : cfg_(as_run(cfg)), dev_(cfg.device), dp_(dp) {
  if (dp_.is_main()) {
    run_.emplace(cfg.output_dir, run_fingerprint(cfg));
    ckpt_ = run_->prepare(resume, overwrite);
  }
  // The other ranks resume from rank 0's checkpoint (multi-node: output_dir is shared).
  if (const auto from = dp_.share("resume_from", ckpt_ ? ckpt_->string() : ""); !from.empty()) ckpt_ = fs::path(from);
  std::vector<std::string> init;
  if (ckpt_) init = {ckpt_->string()};
  else if (!cfg.init_adapter.empty()) init = {cfg.init_adapter};
  s_ = load_setup(cfg_, init, true);
  // A checkpoint of a run whose init rewrote the base (PiSSA, OLoRA, CorDA) belongs to the
  // residual base, which the checkpoint does not hold.
  const auto names = s_.peft->adapters();
  if (ckpt_ && std::find(names.begin(), names.end(), "default") != names.end())
    if (const auto* lora = dynamic_cast<const LoraConfig*>(&s_.peft->config("default"));
        lora && init_rewrites_base(lora->init_lora_weights))
      throw std::runtime_error(ckpt_->string() + ": resuming a run with init_lora_weights '" +
                               lora->init_lora_weights + "' is not supported (its residual base is not saved); "
                               "start it again");
  if (dev_.is_cpu()) flush_denormals();
  load_data();
  build_optimizer();
  if (ckpt_) this->resume(*ckpt_);
  std::vector<at::Tensor> start;
  for (const auto& p : params_) start.push_back(p.detach());
  dp_.broadcast(start);  // every rank starts from rank 0's adapter
  reducer_ = std::make_unique<GradientReducer>(
      dp_, params_, std::max<int64_t>(1, static_cast<int64_t>(cfg_.ddp_bucket_cap_mb * (1 << 20))));
  if (!dp_.is_main()) return;
  std::string logged;
  for (const auto& h : st_.history) logged += h.dump() + "\n";
  metrics_ = std::make_unique<AppendFile>((fs::path(cfg.output_dir) / "metrics.jsonl").string(), logged);
}

void Trainer::load_data() {
  const auto opts = data_options(cfg_, s_);
  train_data_ = read_data(cfg_.train_file, cfg_.label_file, opts);
  if (!cfg_.eval_file.empty()) {
    eval_data_ = read_data(cfg_.eval_file, cfg_.eval_label_file, opts);
  } else if (cfg_.eval_split > 0) {
    // The split is fixed by the seed, not by the shuffle of the epochs.
    auto order = epoch_order(train_data_.size(), cfg_.seed + 7, -1, true);
    const size_t n_eval = std::max<size_t>(1, static_cast<size_t>(cfg_.eval_split * train_data_.size()));
    std::vector<Example> rest;
    for (size_t i = 0; i < order.size(); ++i) (i < n_eval ? eval_data_ : rest).push_back(train_data_[order[i]]);
    train_data_ = std::move(rest);
  }
  if (train_data_.empty())
    throw std::runtime_error(cfg_.train_file + ": no training examples are left after eval_split " +
                             std::to_string(cfg_.eval_split) + " (use a smaller eval_split, or an eval_file)");
  const int64_t bs = cfg_.per_device_train_batch_size, accum = cfg_.gradient_accumulation_steps;
  // As HF Trainer: the short last micro-batch of an epoch is kept, and an optimizer step
  // never accumulates across an epoch boundary (the epoch's last step may have fewer).
  per_epoch_ = (static_cast<int64_t>(train_data_.size()) + bs - 1) / bs;
  steps_per_epoch_ = (per_epoch_ + accum - 1) / accum;
  total_ = cfg_.max_steps > 0 ? cfg_.max_steps
                              : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(cfg_.num_train_epochs *
                                                                                    steps_per_epoch_)));
  warmup_ = cfg_.warmup_steps > 0 ? cfg_.warmup_steps : static_cast<int64_t>(std::ceil(cfg_.warmup_ratio * total_));
}

// AdamW with HF Trainer's groups: no weight decay for biases and norm weights.
void Trainer::build_optimizer() {
  params_ = s_.peft->trainable_tensors();
  if (params_.empty()) throw std::runtime_error("nothing to train: the adapter has no trainable parameters");
  std::set<const void*> no_decay_ptrs;
  for (auto& [name, m] : s_.model->named_modules()) {
    auto* layer = dynamic_cast<AdaptableLayer*>(m);
    const bool norm = layer && layer->kind() == LayerKind::kNorm;
    for (auto& [pn, t] : m->named_parameters())
      if (norm || pn.find("bias") != std::string::npos) no_decay_ptrs.insert(t.unsafeGetTensorImpl());
  }
  std::vector<at::Tensor> decay, no_decay;
  for (auto& t : params_) (no_decay_ptrs.count(t.unsafeGetTensorImpl()) ? no_decay : decay).push_back(t);
  auto group_opts = [&](double wd) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(cfg_.learning_rate);
    o->betas({cfg_.adam_beta1, cfg_.adam_beta2}).eps(cfg_.adam_epsilon).weight_decay(wd);
    return o;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.emplace_back(decay, group_opts(cfg_.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, group_opts(0.0));
  opt_ = std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(cfg_.learning_rate));
}

// Restores the state, AdamW's moments and the CPU generator, checking every tensor
// against the parameter it belongs to.
void Trainer::resume(const fs::path& ckpt) {
  st_ = RunFolder::read_state(ckpt);
  const std::string path = (ckpt / "optimizer.safetensors").string();
  SafetensorsFile f(path);
  auto get = [&](const std::string& key, at::IntArrayRef shape, at::ScalarType dtype) {
    if (!f.contains(key)) throw std::runtime_error(path + ": missing tensor '" + key + "'");
    at::Tensor t = f.get(key);
    if (t.sizes() != shape || t.scalar_type() != dtype)
      throw std::runtime_error(path + ": tensor '" + key + "' has shape " + c10::str(t.sizes()) + " " +
                               c10::toString(t.scalar_type()) + ", expected " + c10::str(shape) + " " +
                               c10::toString(dtype));
    return t.clone();
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto k = std::to_string(i);
    if (!f.contains(k + ".exp_avg")) continue;
    auto ps = std::make_unique<torch::optim::AdamWParamState>();
    ps->step(get(k + ".step", {}, at::kLong).item<int64_t>());
    ps->exp_avg(get(k + ".exp_avg", params_[i].sizes(), params_[i].scalar_type()).to(dev_));
    ps->exp_avg_sq(get(k + ".exp_avg_sq", params_[i].sizes(), params_[i].scalar_type()).to(dev_));
    opt_->state()[params_[i].unsafeGetTensorImpl()] = std::move(ps);
  }
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const at::Tensor now = gen.get_state();
  gen.set_state(get("rng_state", now.sizes(), now.scalar_type()));
  if (dp_.is_main()) std::cerr << "resumed from " << ckpt.string() << " at step " << st_.step << "\n";
}

void Trainer::checkpoint() {
  if (!run_) return;
  run_->save_checkpoint(st_, [&](const fs::path& tmp) {
    save_trained(*s_.peft, tmp.string(), /*checkpoint=*/true);
    NamedTensors t;
    for (size_t i = 0; i < params_.size(); ++i) {
      auto it = opt_->state().find(params_[i].unsafeGetTensorImpl());
      if (it == opt_->state().end()) continue;
      auto& ps = static_cast<torch::optim::AdamWParamState&>(*it->second);
      t.emplace_back(std::to_string(i) + ".exp_avg", ps.exp_avg());
      t.emplace_back(std::to_string(i) + ".exp_avg_sq", ps.exp_avg_sq());
      t.emplace_back(std::to_string(i) + ".step", at::scalar_tensor(ps.step(), at::kLong));
    }
    t.emplace_back("rng_state", at::detail::getDefaultCPUGenerator().get_state());
    save_safetensors((tmp / "optimizer.safetensors").string(), t);
  }, cfg_.save_total_limit);
}

// This rank's share of micro-batch `index`: per_device_train_batch_size examples in the
// seeded order, dealt round-robin over the ranks (none left for it: nullopt).
std::optional<Batch> Trainer::micro_batch(int64_t epoch, int64_t index) {
  while (static_cast<int64_t>(orders_.size()) <= epoch)
    orders_.push_back(epoch_order(train_data_.size(), cfg_.seed, static_cast<int64_t>(orders_.size()), cfg_.shuffle));
  const int64_t bs = cfg_.per_device_train_batch_size;
  std::vector<const Example*> xs;
  for (int64_t k = index * bs + dp_.rank(); k < std::min<int64_t>((index + 1) * bs, train_data_.size());
       k += dp_.world_size())
    xs.push_back(&train_data_[orders_[epoch][k]]);
  if (xs.empty()) return std::nullopt;
  return collate(xs, s_.pad_id, s_.causal, cfg_.padding_free);
}

// Forward and backward over this rank's micro-batches, each loss divided by the token
// (or example) count `items` of the whole step on all ranks, as one process would.
// Returns this rank's part of the step's loss and auxiliary loss: a 2-element double
// tensor on the device, summed there, so that a GPU never waits for the host between
// the micro-batches (step() reads it once).
at::Tensor Trainer::backward(const std::vector<Batch>& mbs, int64_t items, int64_t n_micro) {
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(dev_));
  at::Tensor aux_sum = at::zeros_like(loss_sum);
  for (const auto& b : mbs) {
    at::Tensor sum;
    // The rows' tasks, for multitask tuners, through the forward and the backward (where
    // checkpointed blocks run again).
    TaskIdsScope tasks(b.task_ids.defined() ? b.task_ids.to(dev_) : at::Tensor());
    CheckpointPolicyScope recompute({cfg_.gradient_checkpointing_every, cfg_.gradient_checkpointing_offload});
    {
      AutocastGuard autocast(dev_.type(), cfg_.precision == "bf16", at::kBFloat16);
      sum = batch_loss(*s_.peft, b, dev_, s_.causal, cfg_.gradient_checkpointing).sum;
    }
    auto loss = sum / static_cast<double>(std::max<int64_t>(1, items));
    loss_sum.add_(loss.detach().to(at::kDouble));
    // Auxiliary losses adapters report (MoLE's router load balancing), averaged over the
    // micro-batches (and ranks) like the task loss; logged apart, so `loss` stays the task's.
    if (at::Tensor aux = s_.peft->aux_loss(b.labels); aux.defined()) {
      // Losses computed inside the blocks are lost by the recompute; an input adapter's
      // (SHADOW's, from s⁰ before the blocks, asked for with the labels) is not.
      if (cfg_.gradient_checkpointing && s_.peft->aux_loss().defined())
        throw std::runtime_error("gradient_checkpointing cannot be combined with an adapter's auxiliary loss "
                                 "(e.g. MOLE's router_aux_loss_coef): the recomputed forward would lose it");
      aux = aux / static_cast<double>(n_micro * dp_.world_size());
      aux_sum.add_(aux.detach().to(at::kDouble));
      loss = loss + aux;
    }
    // The last backward of the step starts summing gradients over the ranks as they arrive.
    if (&b == &mbs.back()) reducer_->arm();
    loss.backward();
  }
  return at::stack({loss_sum, aux_sum});
}

// HF's clip_grad_norm_ (torch.nn.utils): the norm of the gradients' norms, and every
// gradient scaled by min(max_norm / (norm + 1e-6), 1), computed as torch computes it
// (1 / (norm + 1e-6) * max_norm, in the gradients' dtype) and on their device: no branch
// on the norm, so no wait for it. Returns the norm (before clipping).
at::Tensor Trainer::clip_gradients() {
  std::vector<at::Tensor> grads;
  for (auto& p : params_)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(dev_));
  const at::Tensor norm = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
  if (cfg_.max_grad_norm > 0)
    at::_foreach_mul_(grads, at::clamp_max((norm + 1e-6).reciprocal() * cfg_.max_grad_norm, 1.0));
  return norm;
}

void Trainer::optimizer_step() {
  const bool fused = cfg_.optim == "adamw_torch_fused" || (cfg_.optim == "auto" && dev_.is_cuda());
  fused ? fused_adamw_step() : static_cast<void>(opt_->step());
}

// adamw_torch_fused: torch's fused AdamW kernel (as torch.optim.AdamW(fused=True)), one
// call per group instead of about ten operations per parameter, over the optimizer's own
// state, so checkpoints and resuming are those of adamw_torch. The same arithmetic, rounded
// in another order.
void Trainer::fused_adamw_step() {
  at::NoGradGuard no_grad;
  for (auto& group : opt_->param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    std::map<int64_t, at::Tensor> step_tensors;  // the step count, as the kernel reads it
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = opt_->state()[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        fresh->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& st = static_cast<torch::optim::AdamWParamState&>(*slot);
      st.step(st.step() + 1);
      auto& step = step_tensors[st.step()];
      if (!step.defined())
        step = at::scalar_tensor(static_cast<double>(st.step()), p.options().dtype(at::kFloat));
      params.push_back(p);
      grads.push_back(p.grad());
      exp_avgs.push_back(st.exp_avg());
      exp_avg_sqs.push_back(st.exp_avg_sq());
      steps.push_back(step);
    }
    if (params.empty()) continue;
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, {}, steps, o.lr(), std::get<0>(o.betas()),
                      std::get<1>(o.betas()), o.weight_decay(), o.eps(), /*amsgrad=*/false, /*maximize=*/false);
  }
}

// One optimizer step over gradient_accumulation_steps micro-batches (on all ranks
// together: counts, gradients and losses summed over them).
StepLog Trainer::step() {
  s_.peft->train(true);
  const double lr = cfg_.learning_rate * lr_lambda(cfg_.lr_scheduler_type, st_.step, warmup_, total_);
  for (auto& g : opt_->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  std::vector<Batch> mbs;
  double items = 0, tokens = 0;
  const int64_t epoch = st_.step / steps_per_epoch_, first = (st_.step % steps_per_epoch_) * cfg_.gradient_accumulation_steps;
  const int64_t last = std::min(first + cfg_.gradient_accumulation_steps, per_epoch_);
  for (int64_t m = first; m < last; ++m) {
    auto b = micro_batch(epoch, m);
    if (!b) continue;
    items += static_cast<double>(b->num_items);
    tokens += static_cast<double>(b->attention_mask.defined() ? b->attention_mask.sum().item<int64_t>()
                                                              : b->num_items);  // images
    mbs.push_back(std::move(*b));
  }
  at::Tensor counts = at::tensor({items, tokens}, at::kDouble);
  dp_.all_reduce_sum(counts);
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor losses = backward(mbs, static_cast<int64_t>(counts[0].item<double>()), last - first);
  reducer_->finish();
  dp_.all_reduce_sum(losses);
  const at::Tensor norm = clip_gradients();
  optimizer_step();
  s_.peft->after_optimizer_step(st_.step);  // HF Trainer's on_optimizer_step: grads still there
  opt_->zero_grad();
  ++st_.step;
  // The step's one wait for the device: loss, auxiliary loss and gradient norm, read
  // once the optimizer's work is queued behind the backward.
  const at::Tensor stats = at::cat({losses, norm.to(at::kDouble).reshape({1})}).cpu();
  const double step_loss = stats[0].item<double>(), step_aux = stats[1].item<double>(),
               grad_norm = stats[2].item<double>();
  if (!std::isfinite(step_loss))
    throw std::runtime_error("loss is " + std::to_string(step_loss) + " at step " + std::to_string(st_.step) +
                             "; lower learning_rate or check the data");
  tokens = counts[1].item<double>();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {st_.step, step_loss, lr, grad_norm, tokens / std::max(secs, 1e-9), step_aux};
}

void Trainer::log(const StepLog& s) {
  result_.steps.push_back(s);
  loss_since_log_ += s.loss;
  aux_since_log_ += s.aux_loss;
  ++steps_since_log_;
  if (s.step % cfg_.logging_steps != 0 && s.step != total_) return;
  shown_loss_ = loss_since_log_ / static_cast<double>(steps_since_log_);
  const int64_t logged_steps = steps_since_log_;
  loss_since_log_ = 0;
  steps_since_log_ = 0;
  nlohmann::json h = {{"step", s.step}, {"loss", shown_loss_}, {"learning_rate", s.learning_rate},
                      {"grad_norm", s.grad_norm}, {"tokens_per_second", s.tokens_per_second}};
  if (aux_since_log_ != 0) h["aux_loss"] = aux_since_log_ / static_cast<double>(logged_steps);
  aux_since_log_ = 0;
  st_.history.push_back(h);
  if (metrics_) metrics_->append(h.dump() + "\n");
}

void Trainer::show_progress(const StepLog& s) {
  if (!cfg_.progress || !dp_.is_main()) return;
  const bool tty = isatty(STDERR_FILENO);
  const bool logged = s.step % cfg_.logging_steps == 0 || s.step == total_;
  if (!tty && !logged) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count();
  const double eta = elapsed / static_cast<double>(s.step - start_step_) * static_cast<double>(total_ - s.step);
  const int width = 24, filled = static_cast<int>(width * s.step / total_);
  // Before the first logged interval ends, the running mean of this interval.
  const double loss = std::isnan(shown_loss_) ? loss_since_log_ / std::max<int64_t>(1, steps_since_log_) : shown_loss_;
  char line[256];
  std::snprintf(line, sizeof line, "[%s%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %s",
                std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(),
                static_cast<long long>(s.step), static_cast<long long>(total_), loss, s.learning_rate,
                s.tokens_per_second, fmt_time(eta).c_str());
  if (tty) std::cerr << "\r" << line << (s.step == total_ ? "\n" : "") << std::flush;
  else std::cerr << line << "\n";
}

// On rank 0 (the others wait for its verdict in rank0_says).
bool Trainer::evaluate() {
  if (eval_data_.empty() || !dp_.is_main()) return false;
  auto r = run_eval(*s_.peft, eval_data_, cfg_.per_device_eval_batch_size, s_.pad_id, s_.causal, dev_,
                    cfg_.precision == "bf16");
  r["step"] = st_.step;
  st_.history.push_back(r);
  metrics_->append(r.dump() + "\n");
  result_.evals.push_back(r);
  if (cfg_.progress && isatty(STDERR_FILENO)) std::cerr << "\n";
  std::cerr << "eval @ " << st_.step << ": " << r.dump() << "\n";
  const double l = r["eval_loss"];
  if (l < st_.best_eval) {
    st_.best_eval = l;
    st_.bad_evals = 0;
  } else if (cfg_.early_stopping_patience > 0 && ++st_.bad_evals >= cfg_.early_stopping_patience) {
    std::cerr << "early stopping: eval_loss has not improved for " << st_.bad_evals << " evaluations\n";
    return true;
  }
  return false;
}

// The thread settings a run used, for reproducing its speed.
static std::string thread_report() {
  auto env = [](const char* k) {
    const char* v = std::getenv(k);
    return std::string(k) + "=" + (v ? v : "unset");
  };
  return std::to_string(at::get_num_threads()) + " intra-op threads (" + env("OMP_NUM_THREADS") + ", " +
         env("MKL_NUM_THREADS") + ", " + env("OMP_PROC_BIND") + ")";
}

bool Trainer::rank0_says(bool value) {
  std::vector<at::Tensor> flag{at::scalar_tensor(value ? 1 : 0, at::kLong).reshape({1})};
  dp_.broadcast(flag);
  return flag[0].item<int64_t>() != 0;
}

TrainResult Trainer::run() {
  if (cfg_.progress && dp_.is_main())
    std::cerr << "training on " << cfg_.device << ", " << cfg_.precision << ", " << thread_report()
              << (dp_.world_size() > 1 ? ", " + std::to_string(dp_.world_size()) + " data-parallel processes (" +
                                         dp_.backend() + ")"
                                   : "")
              << "\n";
  t_start_ = std::chrono::steady_clock::now();
  start_step_ = st_.step;
  result_.train_examples = static_cast<int64_t>(train_data_.size());
  s_.peft->begin_training(total_);
  bool stop = false;
  while (st_.step < total_ && !stop) {
    const StepLog s = step();
    log(s);
    show_progress(s);
    if (cfg_.eval_steps > 0 && st_.step % cfg_.eval_steps == 0 && st_.step < total_) stop = rank0_says(evaluate());
    if ((cfg_.save_steps > 0 && st_.step % cfg_.save_steps == 0) || st_.step == total_ || stop) checkpoint();
  }
  const fs::path out(cfg_.output_dir);
  result_.adapter_dir = out.string();
  if (!dp_.is_main()) return std::move(result_);
  if (!stop) evaluate();
  save_trained(*s_.peft, out.string(), /*checkpoint=*/false, &s_.initial_adapter);
  write_json_atomic((out / "train_config.json").string(), cfg_.to_json());
  plot_losses(out, st_.history);
  return std::move(result_);
}

// The config with this rank's GPU: with several ranks, device "cuda" means one GPU per
// local rank, which also becomes the thread's current device (for what names no index).
TrainConfig on_rank_device(TrainConfig cfg, const DistEnv& env) {
  if (env.world_size == 1 || cfg.device != "cuda") return cfg;
  usable_device(cfg.device);
  auto& cuda = at::detail::getCUDAHooks();
  cfg.device = rank_device(cfg.device, env, cuda.deviceCount());
  cuda.setCurrentDevice(at::Device(cfg.device).index());
  return cfg;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, bool resume, bool overwrite) {
  cfg.validate();
  torch::manual_seed(cfg.seed);
  const DistEnv env = DistEnv::from_environment();  // one process unless torchrun's variables say otherwise
  DataParallel dp(env, cfg.device);
  try {
    return Trainer(on_rank_device(cfg, env), resume, overwrite, dp).run();
  } catch (const std::exception& e) {
    dp.report_failure(e.what());  // the other ranks name this one and its error
    throw;
  }
}

}  // namespace peft
