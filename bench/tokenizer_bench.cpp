// Encode throughput of our tokenizer on a corpus (one document per line), single thread.
// Usage: bench_tokenizer TOKENIZER_DIR CORPUS [REPEATS]; prints {"bytes", "seconds", "tokens"}
// for the best of REPEATS passes. bench/tokenizer_bench.py runs it beside `tokenizers`.
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "peft/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bench_tokenizer TOKENIZER_DIR CORPUS [REPEATS]\n";
    return 2;
  }
  try {
    auto tok = peft::Tokenizer::from_file(argv[1]);
    std::ifstream in(argv[2]);
    if (!in) throw std::runtime_error(std::string(argv[2]) + ": cannot open");
    std::vector<std::string> lines;
    size_t bytes = 0;
    for (std::string l; std::getline(in, l);) {
      bytes += l.size();
      lines.push_back(std::move(l));
    }
    const int repeats = argc > 3 ? std::stoi(argv[3]) : 3;
    double best = 1e300;
    size_t tokens = 0;
    for (int r = 0; r < repeats; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      size_t n = 0;
      for (const auto& l : lines) n += tok.encode(l).ids.size();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
      tokens = n;
    }
    std::cout << "{\"bytes\": " << bytes << ", \"seconds\": " << best << ", \"tokens\": " << tokens << "}\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
