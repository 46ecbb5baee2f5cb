// The training loop, mirroring HF Trainer's arithmetic (see docs/TRAINING.md): token-
// weighted loss across gradient accumulation, global-norm clipping, torch's AdamW with
// HF's decay groups, LambdaLR schedules; atomic checkpoints that resume exactly.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>
#include <torch/optim/adamw.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "peft/layers.h"
#include "peft/peft_model.h"
#include "peft/train.h"
#include "models/bert.h"  // num_labels_of
#include "models/checkpoint.h"
#include "train/data.h"
#include "train/run_folder.h"
#include "train/schedule.h"
#include "util/atomic_file.h"
#include "util/hash.h"
#include "util/process.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

struct Setup {
  std::shared_ptr<Model> model;
  std::unique_ptr<PeftModel> peft;
  std::optional<Tokenizer> tokenizer;
  bool causal = true;
  int64_t pad_id = 0;
};

Setup load(const TrainConfig& cfg, const std::vector<std::string>& adapters, bool trainable_adapter) {
  Setup s;
  LoadOptions lo;
  lo.device = cfg.device;
  lo.architecture = cfg.architecture;
  lo.num_labels = cfg.num_labels;
  lo.seed = cfg.seed;
  s.model = load_model(cfg.model, lo);
  if (s.model->task() == TaskKind::kCausalLM) s.causal = true;
  else if (s.model->task() == TaskKind::kSequenceClassification || s.model->task() == TaskKind::kImageClassification)
    s.causal = false;
  else throw std::runtime_error(s.model->type_name() + ": training supports causal LMs and sequence/image classifiers");
  const std::string tok_dir = cfg.tokenizer.empty() ? cfg.model : cfg.tokenizer;
  if (fs::exists(fs::path(tok_dir) / "tokenizer.json") || fs::is_regular_file(tok_dir)) {
    s.tokenizer = Tokenizer::from_file(tok_dir);
    if (auto pad = s.tokenizer->special_token("pad_token"))
      if (auto id = s.tokenizer->token_to_id(*pad)) s.pad_id = *id;
  }
  s.peft = std::make_unique<PeftModel>(s.model);
  for (size_t i = 0; i < adapters.size(); ++i) s.peft->load_adapter(adapters[i], i == 0 ? "default" : "a" + std::to_string(i));
  if (trainable_adapter && adapters.empty()) {
    nlohmann::ordered_json m = cfg.method;
    if (!m.contains("peft_type")) m["peft_type"] = "LORA";
    if (!m.contains("task_type") && s.model->task() != TaskKind::kImageClassification)
      m["task_type"] = s.causal ? "CAUSAL_LM" : "SEQ_CLS";
    auto method = parse_user_adapter_config(m, "method");
    method->inference_mode = false;  // prompt encoders train through their reparameterization
    s.peft->add_adapter("default", *method, cfg.seed);
  }
  return s;
}

DataOptions data_options(const TrainConfig& cfg, const Setup& s) {
  DataOptions o;
  o.format = cfg.format;
  o.max_length = cfg.max_length;
  o.packing = cfg.packing;
  o.completion_only_loss = cfg.completion_only_loss;
  o.skip_bad_lines = cfg.on_bad_line == "skip";
  o.classification = !s.causal;
  o.tokenizer = s.tokenizer ? &*s.tokenizer : nullptr;
  o.label2id = s.model->config().value("label2id", nlohmann::json::object());
  if (!s.causal) o.num_labels = num_labels_of(s.model->config(), cfg.model);
  if (auto* emb = s.model->input_embeddings()) o.vocab_size = emb->num_embeddings;
  return o;
}

// JSONL, or for images a .npy with its labels .npy.
std::vector<Example> read_data(const std::string& file, const std::string& labels, const DataOptions& o) {
  if (file.size() > 4 && file.compare(file.size() - 4, 4, ".npy") == 0)
    return load_image_examples(file, labels, o.num_labels);
  return load_examples(file, o);
}

// Summed loss of one batch and the number of items it averages over.
at::Tensor batch_loss_sum(PeftModel& peft, const Batch& b, bool causal, at::Device dev, bool checkpoint = false) {
  ModelInputs in;
  in.checkpoint_layers = checkpoint;
  if (b.pixel_values.defined()) {
    in.pixel_values = b.pixel_values.to(dev);
  } else {
    in.input_ids = b.input_ids.to(dev);
    in.attention_mask = b.attention_mask.to(dev);
  }
  auto logits = peft.forward(in).logits.to(at::kFloat);
  auto labels = b.labels.to(dev);
  if (!causal) return at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum);
  const int64_t v = logits.size(-1);
  auto shifted = logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, v});
  auto targets = labels.narrow(1, 1, labels.size(1) - 1).reshape({-1});
  return at::cross_entropy_loss(shifted, targets, {}, at::Reduction::Sum, -100);
}

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
// the contents (not the paths) of the data files.
nlohmann::json run_fingerprint(const TrainConfig& cfg) {
  nlohmann::json config = cfg.to_json(), data = nlohmann::json::object();
  for (const char* k : {"output_dir", "progress", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
                        "device", "early_stopping_patience"})
    config.erase(k);
  for (const char* k : {"train_file", "label_file", "eval_file", "eval_label_file"}) {
    const std::string f = config[k];
    config.erase(k);
    if (!f.empty()) data[k] = file_content_hash(f);
  }
  return {{"config", config}, {"data", data}};
}

void save_checkpoint(RunFolder& run, PeftModel& peft, torch::optim::AdamW& opt, const std::vector<at::Tensor>& params,
                     const TrainerState& st, int64_t keep) {
  run.save_checkpoint(st, [&](const fs::path& tmp) {
    peft.save_adapter(tmp.string());
    NamedTensors opt_tensors;
    for (size_t i = 0; i < params.size(); ++i) {
      auto it = opt.state().find(params[i].unsafeGetTensorImpl());
      if (it == opt.state().end()) continue;
      auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
      opt_tensors.emplace_back(std::to_string(i) + ".exp_avg", s.exp_avg());
      opt_tensors.emplace_back(std::to_string(i) + ".exp_avg_sq", s.exp_avg_sq());
      opt_tensors.emplace_back(std::to_string(i) + ".step", at::scalar_tensor(s.step(), at::kLong));
    }
    opt_tensors.emplace_back("rng_state", at::detail::getDefaultCPUGenerator().get_state());
    save_safetensors((tmp / "optimizer.safetensors").string(), opt_tensors);
  }, keep);
}

// Restores AdamW's moments and the CPU generator from a checkpoint, checking each
// tensor against the parameter it belongs to.
void load_optimizer_state(const fs::path& ckpt, torch::optim::AdamW& opt, const std::vector<at::Tensor>& params,
                          at::Device dev) {
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
  for (size_t i = 0; i < params.size(); ++i) {
    const auto k = std::to_string(i);
    if (!f.contains(k + ".exp_avg")) continue;
    auto ps = std::make_unique<torch::optim::AdamWParamState>();
    ps->step(get(k + ".step", {}, at::kLong).item<int64_t>());
    ps->exp_avg(get(k + ".exp_avg", params[i].sizes(), params[i].scalar_type()).to(dev));
    ps->exp_avg_sq(get(k + ".exp_avg_sq", params[i].sizes(), params[i].scalar_type()).to(dev));
    opt.state()[params[i].unsafeGetTensorImpl()] = std::move(ps);
  }
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const at::Tensor now = gen.get_state();
  gen.set_state(get("rng_state", now.sizes(), now.scalar_type()));
}

// --- evaluation ----------------------------------------------------------------------

nlohmann::json run_eval(PeftModel& peft, const std::vector<Example>& data, int64_t batch, int64_t pad, bool causal,
                        at::Device dev) {
  c10::NoGradGuard no_grad;
  peft.train(false);
  double loss_sum = 0;
  int64_t items = 0, correct = 0;
  for (size_t i = 0; i < data.size(); i += static_cast<size_t>(batch)) {
    std::vector<const Example*> xs;
    for (size_t k = i; k < std::min(data.size(), i + static_cast<size_t>(batch)); ++k) xs.push_back(&data[k]);
    Batch b = collate(xs, pad, causal);
    loss_sum += batch_loss_sum(peft, b, causal, dev).item<double>();
    items += b.num_items;
    if (!causal) {
      ModelInputs in;
      if (b.pixel_values.defined()) {
        in.pixel_values = b.pixel_values.to(dev);
      } else {
        in.input_ids = b.input_ids.to(dev);
        in.attention_mask = b.attention_mask.to(dev);
      }
      correct += (peft.forward(in).logits.argmax(-1).cpu() == b.labels).sum().item<int64_t>();
    }
  }
  const double loss = loss_sum / std::max<int64_t>(1, items);
  nlohmann::json r = {{"eval_loss", loss}};
  if (causal) r["eval_perplexity"] = std::exp(loss);
  else r["eval_accuracy"] = static_cast<double>(correct) / static_cast<double>(std::max<size_t>(1, data.size()));
  return r;
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

}  // namespace

TrainResult train(const TrainConfig& cfg, bool resume, bool overwrite) {
  cfg.validate();
  torch::manual_seed(cfg.seed);
  const fs::path out_dir = cfg.output_dir;
  RunFolder run(out_dir, run_fingerprint(cfg));
  const std::optional<fs::path> ckpt = run.prepare(resume, overwrite);

  std::vector<std::string> init;
  if (ckpt) init = {ckpt->string()};
  else if (!cfg.init_adapter.empty()) init = {cfg.init_adapter};
  Setup s = load(cfg, init, true);
  const at::Device dev(cfg.device);

  auto opts = data_options(cfg, s);
  std::vector<Example> train_data = read_data(cfg.train_file, cfg.label_file, opts), eval_data;
  if (!cfg.eval_file.empty()) eval_data = read_data(cfg.eval_file, cfg.eval_label_file, opts);
  else if (cfg.eval_split > 0) {
    // The split is fixed by the seed, not by the shuffle of the epochs.
    auto order = epoch_order(train_data.size(), cfg.seed + 7, -1, true);
    const size_t n_eval = std::max<size_t>(1, static_cast<size_t>(cfg.eval_split * train_data.size()));
    std::vector<Example> rest;
    for (size_t i = 0; i < order.size(); ++i) (i < n_eval ? eval_data : rest).push_back(train_data[order[i]]);
    train_data = std::move(rest);
  }
  if (train_data.empty())
    throw std::runtime_error(cfg.train_file + ": no training examples are left after eval_split " +
                             std::to_string(cfg.eval_split) + " (use a smaller eval_split, or an eval_file)");

  // Parameters and AdamW groups: no decay for biases and norm weights, as HF Trainer.
  std::vector<at::Tensor> params = s.peft->trainable_tensors();
  if (params.empty()) throw std::runtime_error("nothing to train: the adapter has no trainable parameters");
  std::vector<at::Tensor> decay, no_decay;
  {
    std::set<const void*> no_decay_ptrs;
    for (auto& [name, m] : s.model->named_modules()) {
      const bool norm = dynamic_cast<LayerNorm*>(m) || dynamic_cast<RMSNorm*>(m);
      for (auto& [pn, t] : m->named_parameters())
        if (norm || pn.find("bias") != std::string::npos) no_decay_ptrs.insert(t.unsafeGetTensorImpl());
    }
    for (auto& t : params) (no_decay_ptrs.count(t.unsafeGetTensorImpl()) ? no_decay : decay).push_back(t);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto group_opts = [&](double wd) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(cfg.learning_rate);
    o->betas({cfg.adam_beta1, cfg.adam_beta2}).eps(cfg.adam_epsilon).weight_decay(wd);
    return o;
  };
  if (!decay.empty()) groups.emplace_back(decay, group_opts(cfg.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, group_opts(0.0));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(cfg.learning_rate));

  const int64_t bs = cfg.per_device_train_batch_size, accum = cfg.gradient_accumulation_steps;
  // As HF Trainer: the short last micro-batch of an epoch is kept, and an optimizer step
  // never accumulates across an epoch boundary (the epoch's last step may have fewer).
  const int64_t per_epoch = (static_cast<int64_t>(train_data.size()) + bs - 1) / bs;
  const int64_t steps_per_epoch = (per_epoch + accum - 1) / accum;
  const int64_t total = cfg.max_steps > 0 ? cfg.max_steps
                                          : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(
                                                                     cfg.num_train_epochs * steps_per_epoch)));
  const int64_t warmup = cfg.warmup_steps > 0 ? cfg.warmup_steps : static_cast<int64_t>(std::ceil(cfg.warmup_ratio * total));

  TrainerState st;
  if (ckpt) {
    st = RunFolder::read_state(*ckpt);
    load_optimizer_state(*ckpt, opt, params, dev);
    std::cerr << "resumed from " << ckpt->string() << " at step " << st.step << "\n";
  }
  std::string logged;
  for (const auto& h : st.history) logged += h.dump() + "\n";
  AppendFile metrics((out_dir / "metrics.jsonl").string(), logged);

  TrainResult result;
  const bool tty = isatty(STDERR_FILENO);
  const auto t_start = std::chrono::steady_clock::now();
  const int64_t start_step = st.step;
  std::vector<std::vector<size_t>> orders;  // per epoch, built on demand
  auto micro_batch = [&](int64_t epoch, int64_t within) {
    while (static_cast<int64_t>(orders.size()) <= epoch)
      orders.push_back(epoch_order(train_data.size(), cfg.seed, static_cast<int64_t>(orders.size()), cfg.shuffle));
    std::vector<const Example*> xs;
    for (int64_t k = within * bs; k < std::min<int64_t>((within + 1) * bs, train_data.size()); ++k)
      xs.push_back(&train_data[orders[epoch][k]]);
    return collate(xs, s.pad_id, s.causal);
  };
  auto do_eval = [&](int64_t step) -> bool {
    if (eval_data.empty()) return false;
    auto r = run_eval(*s.peft, eval_data, cfg.per_device_eval_batch_size, s.pad_id, s.causal, dev);
    r["step"] = step;
    st.history.push_back(r);
    metrics.append(r.dump() + "\n");
    result.evals.push_back(r);
    if (tty) std::cerr << "\n";
    std::cerr << "eval @ " << step << ": " << r.dump() << "\n";
    const double l = r["eval_loss"];
    if (l < st.best_eval) {
      st.best_eval = l;
      st.bad_evals = 0;
    } else if (cfg.early_stopping_patience > 0 && ++st.bad_evals >= cfg.early_stopping_patience) {
      std::cerr << "early stopping: eval_loss has not improved for " << st.bad_evals << " evaluations\n";
      return true;
    }
    return false;
  };

  bool stop = false;
  double loss_since_log = 0;  // HF logs the mean loss over the logging interval
  int64_t steps_since_log = 0;
  while (st.step < total && !stop) {
    s.peft->train(true);
    for (auto& g : opt.param_groups())
      static_cast<torch::optim::AdamWOptions&>(g.options())
          .lr(cfg.learning_rate * lr_lambda(cfg.lr_scheduler_type, st.step, warmup, total));
    const double lr_now = static_cast<torch::optim::AdamWOptions&>(opt.param_groups()[0].options()).lr();
    std::vector<Batch> mbs;
    int64_t items = 0, tokens = 0;
    const int64_t epoch = st.step / steps_per_epoch, first = (st.step % steps_per_epoch) * accum;
    for (int64_t m = first; m < std::min(first + accum, per_epoch); ++m) {
      mbs.push_back(micro_batch(epoch, m));
      items += mbs.back().num_items;
      tokens += mbs.back().attention_mask.defined() ? mbs.back().attention_mask.sum().item<int64_t>()
                                                    : mbs.back().num_items;  // images
    }
    const auto t0 = std::chrono::steady_clock::now();
    double step_loss = 0;
    for (const auto& b : mbs) {
      at::Tensor loss_sum;
      if (cfg.precision == "bf16") {
        at::autocast::set_autocast_enabled(dev.type(), true);
        at::autocast::set_autocast_dtype(dev.type(), at::kBFloat16);
        loss_sum = batch_loss_sum(*s.peft, b, s.causal, dev, cfg.gradient_checkpointing);
        at::autocast::set_autocast_enabled(dev.type(), false);
        at::autocast::clear_cache();
      } else {
        loss_sum = batch_loss_sum(*s.peft, b, s.causal, dev, cfg.gradient_checkpointing);
      }
      auto loss = loss_sum / static_cast<double>(std::max<int64_t>(1, items));
      if (!std::isfinite(loss.item<double>()))
        throw std::runtime_error("loss is " + std::to_string(loss.item<double>()) + " at step " +
                                 std::to_string(st.step + 1) + "; lower learning_rate or check the data");
      loss.backward();
      release_checkpoints();
      step_loss += loss.item<double>();
    }
    double grad_norm = 0;
    {
      std::vector<at::Tensor> norms;
      for (auto& p : params)
        if (p.grad().defined()) norms.push_back(at::linalg_vector_norm(p.grad(), 2));
      grad_norm = at::linalg_vector_norm(at::stack(norms), 2).item<double>();
      if (cfg.max_grad_norm > 0) {
        const double coef = std::min(1.0, cfg.max_grad_norm / (grad_norm + 1e-6));
        if (coef < 1.0)
          for (auto& p : params)
            if (p.grad().defined()) p.grad().mul_(coef);
      }
    }
    opt.step();
    opt.zero_grad();
    ++st.step;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    StepLog log{st.step, step_loss, lr_now, grad_norm, tokens / std::max(secs, 1e-9)};
    result.steps.push_back(log);
    loss_since_log += log.loss;
    ++steps_since_log;
    if (st.step % std::max<int64_t>(1, cfg.logging_steps) == 0 || st.step == total) {
      const double mean_loss = loss_since_log / static_cast<double>(steps_since_log);
      loss_since_log = 0;
      steps_since_log = 0;
      nlohmann::json h = {{"step", log.step}, {"loss", mean_loss}, {"learning_rate", log.learning_rate},
                          {"grad_norm", log.grad_norm}, {"tokens_per_second", log.tokens_per_second}};
      st.history.push_back(h);
      metrics.append(h.dump() + "\n");
    }
    if (cfg.progress) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      const double eta = elapsed / static_cast<double>(st.step - start_step) * static_cast<double>(total - st.step);
      const int width = 24, filled = static_cast<int>(width * st.step / total);
      char line[256];
      std::snprintf(line, sizeof line, "[%s%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %s",
                    std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(),
                    static_cast<long long>(st.step), static_cast<long long>(total), log.loss, log.learning_rate,
                    log.tokens_per_second, fmt_time(eta).c_str());
      if (tty) std::cerr << "\r" << line << std::flush;
      else if (st.step % std::max<int64_t>(1, cfg.logging_steps) == 0 || st.step == total) std::cerr << line << "\n";
    }
    if (cfg.eval_steps > 0 && st.step % cfg.eval_steps == 0 && st.step < total) stop = do_eval(st.step);
    if ((cfg.save_steps > 0 && st.step % cfg.save_steps == 0) || st.step == total || stop)
      save_checkpoint(run, *s.peft, opt, params, st, cfg.save_total_limit);
  }
  if (tty && cfg.progress) std::cerr << "\n";
  if (!stop) do_eval(st.step);
  s.peft->save_adapter(out_dir.string());
  result.adapter_dir = out_dir.string();
  write_json_atomic((out_dir / "train_config.json").string(), cfg.to_json());
  plot_losses(out_dir, st.history);
  return result;
}

nlohmann::json evaluate(const TrainConfig& cfg, const std::vector<std::string>& adapters) {
  Setup s = load(cfg, adapters, false);
  auto data = cfg.eval_file.empty() ? read_data(cfg.train_file, cfg.label_file, data_options(cfg, s))
                                    : read_data(cfg.eval_file, cfg.eval_label_file, data_options(cfg, s));
  return run_eval(*s.peft, data, cfg.per_device_eval_batch_size, s.pad_id, s.causal, at::Device(cfg.device));
}

}  // namespace peft
