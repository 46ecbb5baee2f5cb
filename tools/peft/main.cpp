// peft: the command-line tool.
#include <c10/util/Exception.h>

#include <iostream>

#include "common.h"
#include "peft/safetensors_header.h"
#include "util/allocator.h"

namespace peft::cli {
void register_extract(CLI::App& app);  // cmd_extract.cpp
void register_preprocess_image(CLI::App& app);  // cmd_preprocess_image.cpp
void register_preprocess_audio(CLI::App& app);  // cmd_preprocess_audio.cpp
void register_transcribe(CLI::App& app);  // cmd_transcribe.cpp (issue 18)
void register_federate(CLI::App& app);  // cmd_federate.cpp (issue 19)
}  // namespace peft::cli

int main(int argc, char** argv) {
  peft::keep_freed_memory();
  CLI::App app{"peft: parameter-efficient fine-tuning of Hugging Face transformers, in C++"};
  app.set_version_flag("--version", "peft 0.1.0");
  app.require_subcommand(1);
  peft::cli::register_inspect(app);
  peft::cli::register_forward(app);
  peft::cli::register_generate(app);
  peft::cli::register_merge(app);
  peft::cli::register_tokenize(app);
  peft::cli::register_train(app);
  peft::cli::register_eval(app);
  peft::cli::register_classify(app);
  peft::cli::register_convert(app);
  peft::cli::register_export_gguf(app);
  peft::cli::register_quantize(app);
  peft::cli::register_combine(app);
  peft::cli::register_extract(app);
  peft::cli::register_serve(app);
  peft::cli::register_preprocess_image(app);
  peft::cli::register_preprocess_audio(app);
  peft::cli::register_transcribe(app);
  peft::cli::register_federate(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const c10::Error& e) {
    // A torch error that got past our checks: its message, never its backtrace.
    std::string m = e.what_without_backtrace();
    std::cerr << "error: " << m.substr(0, m.find('\n')) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
