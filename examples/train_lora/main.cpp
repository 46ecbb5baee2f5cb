// Loads a causal LM from a Hugging Face model folder, adds a LoRA adapter, trains it for a
// few steps on a tiny in-memory dataset with a hand-written AdamW, and saves the adapter
// as HF PEFT does (adapter_config.json + adapter_model.safetensors; HF PEFT loads it).
//
//   train_lora MODEL_DIR OUT_DIR [STEPS]
//
// With a tokenizer.json in MODEL_DIR the dataset is a few sentences; without one (a random
// test model) it is rows of counting token ids.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <peft/lora.h>
#include <peft/model.h>
#include <peft/peft_model.h>
#include <peft/tokenizer.h>

namespace {

std::vector<std::vector<int64_t>> tiny_dataset(const std::string& model_dir, int64_t vocab) {
  std::vector<std::vector<int64_t>> rows;
  if (std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json")) {
    auto tok = peft::Tokenizer::from_file(model_dir);
    for (const char* s : {"The quick brown fox jumps over the lazy dog.", "A journey of a thousand miles begins "
                          "with a single step.", "To be or not to be, that is the question."})
      rows.push_back(tok.encode(s).ids);
  } else {
    for (int64_t start : {3, 10, 17, 24})
      rows.push_back({start, start + 1, start + 2, start + 3, start + 4, start + 5});
    for (auto& r : rows)
      for (auto& id : r) id %= vocab;
  }
  return rows;
}

// Right-pads rows into input ids and next-token labels (-100 where there is no token).
void make_batch(const std::vector<std::vector<int64_t>>& rows, at::Tensor* ids, at::Tensor* mask, at::Tensor* labels) {
  size_t len = 0;
  for (const auto& r : rows) len = std::max(len, r.size());
  std::vector<int64_t> id(rows.size() * len, 0), m(rows.size() * len, 0), label(rows.size() * len, -100);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t t = 0; t < rows[i].size(); ++t) {
      id[i * len + t] = label[i * len + t] = rows[i][t];
      m[i * len + t] = 1;
    }
  const std::vector<int64_t> shape = {static_cast<int64_t>(rows.size()), static_cast<int64_t>(len)};
  *ids = at::tensor(id, at::kLong).view(shape);
  *mask = at::tensor(m, at::kLong).view(shape);
  *labels = at::tensor(label, at::kLong).view(shape);
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: train_lora MODEL_DIR OUT_DIR [STEPS]\n";
    return 2;
  }
  const std::string model_dir = argv[1], out_dir = argv[2];
  const int steps = argc > 3 ? std::stoi(argv[3]) : 10;

  auto model = peft::load_model(model_dir);
  if (model->task() != peft::TaskKind::kCausalLM) throw std::runtime_error("this example trains a causal LM");
  peft::PeftModel peft(model);
  peft::LoraConfig lora;  // adapter_config.json's fields; parse_user_adapter_config reads them from JSON
  lora.r = 4;
  lora.lora_alpha = 8;
  lora.targets.target_list = std::vector<std::string>{"q_proj", "v_proj"};
  lora.task_type = "CAUSAL_LM";
  lora.inference_mode = false;
  peft.add_adapter("default", lora, /*seed=*/0);
  peft.train(true);
  std::cout << peft.trainable_parameters_line() << "\n";

  at::Tensor ids, mask, labels;
  make_batch(tiny_dataset(model_dir, model->config().value("vocab_size", int64_t(32000))), &ids, &mask, &labels);

  // AdamW over the adapter's tensors (the only ones that require grad).
  std::vector<at::Tensor> params = peft.trainable_tensors(), m, v;
  for (const auto& p : params) m.push_back(at::zeros_like(p)), v.push_back(at::zeros_like(p));
  const double lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  for (int step = 1; step <= steps; ++step) {
    peft::ModelInputs in;
    in.input_ids = ids;
    in.attention_mask = mask;
    const at::Tensor logits = peft.forward(in).logits;  // [batch, seq, vocab]
    const int64_t vocab = logits.size(-1);
    // Token t predicts token t + 1, as transformers' causal LM loss.
    const at::Tensor loss = at::cross_entropy_loss(logits.slice(1, 0, -1).reshape({-1, vocab}),
                                                   labels.slice(1, 1).reshape({-1}), {}, at::Reduction::Mean, -100);
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    loss.backward();
    {
      c10::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) {
        const at::Tensor g = params[i].grad();
        m[i].mul_(beta1).add_(g, 1 - beta1);
        v[i].mul_(beta2).addcmul_(g, g, 1 - beta2);
        const double c1 = 1 - std::pow(beta1, step), c2 = 1 - std::pow(beta2, step);
        params[i].mul_(1 - lr * weight_decay);
        params[i].addcdiv_(m[i] / c1, (v[i] / c2).sqrt_().add_(eps), -lr);
      }
    }
    std::cout << "step " << step << " loss " << loss.item<double>() << "\n";
  }
  peft.save_adapter(out_dir);
  std::cout << "adapter saved to " << out_dir << "\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
