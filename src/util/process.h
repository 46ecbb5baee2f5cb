// Running another program. Input never reaches a shell: the program gets an argv.
#pragma once

#include <string>
#include <vector>

namespace peft {

// Runs argv[0] (looked up in PATH) with `argv` in the folder `cwd`, its output
// discarded, and waits. Returns its exit status; -1 if it could not be started or was
// killed by a signal.
int run_program(const std::vector<std::string>& argv, const std::string& cwd);

}  // namespace peft
