// Errors and the work budget shared by every part of the Jinja engine.
//
// A template is untrusted code: the render in progress on a thread has a budget that
// loop iterations, macro calls and every operation taking time in proportion to the
// data it touches (building, scanning or comparing strings and lists) charge, and a
// size limit for strings. Outside rendering (parsing, constant folding) nothing is
// charged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace peft::jinja {

// An error that does not know its position yet: the evaluator catches it at the
// expression or statement being evaluated and rethrows it as a JinjaError there.
struct Failure {
  std::string message;
  bool raised = false;  // raise_exception() in the template
};
[[noreturn]] void fail(std::string message);

struct Budget {
  uint64_t used = 0;
  uint64_t max_steps = 0;
  size_t max_string = 0;
};

// Makes `budget` the one charged on this thread while it lives.
class ActiveBudget {
 public:
  explicit ActiveBudget(Budget* budget);
  ~ActiveBudget();
  ActiveBudget(const ActiveBudget&) = delete;
  ActiveBudget& operator=(const ActiveBudget&) = delete;

 private:
  Budget* saved_;
};

void charge(uint64_t steps);        // fails once the budget is spent
void charge_bytes(size_t bytes);    // work on `bytes` bytes of data
void check_string_size(size_t bytes);  // fails if a string would exceed the limit

}  // namespace peft::jinja
