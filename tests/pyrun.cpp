// peft_pyrun SCRIPT [ARGS...]: runs `python SCRIPT ARGS...` in the build folder's warm
// interpreter (tests/pyserver.h), prints its output and exits with its status. CTest's
// reference-fixture steps (parity.make_*) go through it, so the suite imports torch,
// transformers and peft once rather than once per fixture; where no server can be had it
// falls back to a new interpreter, with the same result.
#include <iostream>
#include <string>
#include <vector>

#include "pyserver.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: peft_pyrun SCRIPT [ARGS...]\n";
    return 2;
  }
  int status = 1;
  std::cout << peft::test::run_python(std::vector<std::string>(argv + 1, argv + argc), &status) << std::flush;
  return status;
}
