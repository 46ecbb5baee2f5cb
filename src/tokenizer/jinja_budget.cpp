#include "tokenizer/jinja_budget.h"

namespace peft::jinja {

namespace {
thread_local Budget* active = nullptr;
}  // namespace

void fail(std::string message) { throw Failure{std::move(message)}; }

ActiveBudget::ActiveBudget(Budget* budget) : saved_(active) { active = budget; }
ActiveBudget::~ActiveBudget() { active = saved_; }

void charge(uint64_t steps) {
  if (!active) return;
  active->used += steps;
  if (active->used > active->max_steps)
    fail("template exceeded its budget of " + std::to_string(active->max_steps) +
         " steps (loop iterations, macro calls, and work in proportion to the data)");
}

// One step per 64 bytes: the default budget then allows about a gigabyte of string work.
void charge_bytes(size_t bytes) { charge(bytes >> 6); }

void check_string_size(size_t bytes) {
  if (active && bytes > active->max_string)
    fail("a string of " + std::to_string(bytes) + " bytes exceeds the limit of " +
         std::to_string(active->max_string) + " bytes");
}

}  // namespace peft::jinja
