// Helpers the test suites share.
#pragma once

#include <array>
#include <cstdio>
#include <string>

#include "peft/safetensors.h"

namespace peft::test {

// Runs a shell command; returns stdout and stderr together, and its exit status.
inline std::string run_command(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  *status = pclose(p);
  return out;
}

// Rewrites a safetensors file without the tensor `key` (a damaged checkpoint or adapter).
inline void drop_tensor(const std::string& path, const std::string& key) {
  SafetensorsFile f(path);
  NamedTensors kept;
  for (const auto& n : f.names())
    if (n != key) kept.emplace_back(n, f.get(n).clone());
  save_safetensors(path, kept);
}

}  // namespace peft::test
