// What `peft train` wrote to loss.dat ("step loss" per line).
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

namespace peft::test {

// The loss of the run's first step (loss.dat's first line).
inline double first_step_loss(const std::filesystem::path& out) {
  std::ifstream loss(out / "loss.dat");
  std::string first;
  std::getline(loss, first);
  return std::stod(first.substr(first.find(' ') + 1));
}

}  // namespace peft::test
