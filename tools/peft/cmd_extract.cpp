// peft extract BASE FINETUNED OUT_DIR --rank r: a fine-tuned checkpoint's difference from its
// base as a LoRA adapter (a task vector), with how much of each delta the rank keeps.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common.h"
#include "peft/task_vector.h"

namespace fs = std::filesystem;

namespace peft::cli {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// One line per matrix, as it is done (the progress of a big model).
void print_matrix(const MatrixEnergy& m, size_t index, size_t count) {
  std::cout << "[" << index << "/" << count << "] " << m.path << " " << m.out << "x" << m.in;
  if (m.skipped()) std::cout << " skipped: delta is exactly zero\n";
  else std::cout << " rank " << m.kept << " energy " << fmt("%.9f", m.energy()) << "\n";
  std::cout.flush();
}

void print_summary(const TaskVectorReport& r, int64_t rank) {
  for (const auto& n : r.not_captured)
    std::cout << "not captured: " << n.name << " max_abs_diff " << fmt("%.6e", n.max_abs_diff) << "\n";
  std::cout << "total: " << r.matrices.size() << " matrices, " << r.skipped() << " skipped, rank " << rank
            << ", energy " << fmt("%.9f", r.total_energy()) << ", " << r.not_captured.size()
            << " parameters not captured\n";
}

}  // namespace

void register_extract(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "extract",
      "Extract a task vector: the difference between a fine-tuned checkpoint and its base, per Linear layer, "
      "truncated to rank r by an SVD and written as an HF PEFT LoRA adapter (r = lora_alpha = rank). Prints the "
      "energy each matrix keeps (sum of kept singular values squared / all), and the parameters outside the "
      "targets that differ (not captured). docs/COMBINE.md: task arithmetic with peft combine");
  cmd->footer(
      "Example:\n"
      "  peft extract SmolLM2-135M SmolLM2-135M-Instruct out/instruct_tv --rank 64\n"
      "  peft extract base/ finetuned/ out/qv --rank 8 --targets q_proj,v_proj\n"
      "then e.g. peft combine base=base/ adapters.tv=out/instruct_tv 'weights=[0.5]' output_dir=out/half");
  auto base = std::make_shared<std::string>();
  auto finetuned = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto rank = std::make_shared<int64_t>(0);
  auto targets = std::make_shared<std::vector<std::string>>();
  auto device = std::make_shared<std::string>("cpu");
  auto overwrite = std::make_shared<bool>(false);
  cmd->add_option("base", *base, "The base model (Hugging Face folder or .gguf)")->required()->check(CLI::ExistingPath);
  cmd->add_option("finetuned", *finetuned, "The fine-tuned model, same architecture")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("out_dir", *out, "Where adapter_config.json + adapter_model.safetensors go")->required();
  cmd->add_option("--rank,-r", *rank, "Rank of the adapter (singular values kept per matrix)")
      ->required()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--targets", *targets,
                  "Module names to extract, comma-separated (default: all-linear, every Linear but the output head)")
      ->delimiter(',');
  cmd->add_option("--device", *device, "cpu, cuda or cuda:N (both checkpoints are loaded there)")->capture_default_str();
  cmd->add_flag("--overwrite", *overwrite, "Replace an adapter already in out_dir");
  cmd->callback([=] {
    const fs::path dir(*out);
    if (!*overwrite && (fs::exists(dir / "adapter_model.safetensors") || fs::exists(dir / "adapter_config.json")))
      throw std::runtime_error("out_dir '" + *out + "' already holds an adapter (pass --overwrite to replace it)");
    LoadOptions lo;
    lo.device = *device;
    std::cerr << "loading " << *base << "\n";
    PeftModel peft(load_model(*base, lo));
    std::cerr << "loading " << *finetuned << "\n";
    auto ft = load_model(*finetuned, lo);
    TaskVectorOptions o;
    o.rank = *rank;
    if (!targets->empty()) o.targets = *targets;
    const auto report = extract_task_vector(peft, *ft, o, "default", print_matrix);
    print_summary(report, *rank);
    peft.save_adapter(*out, "default");
    std::cerr << "LoRA task vector (r=" << *rank << ", " << report.matrices.size() - report.skipped()
              << " matrices) written to " << *out << "\n";
  });
}

}  // namespace peft::cli
