// Weighted merges of (IA)3 adapters: HF PEFT 0.21's IA3Model.add_weighted_adapter.
#pragma once

#include <string>
#include <vector>

#include "peft/peft_model.h"

namespace peft {

// Adds IA3 adapter `adapter_name` to `peft`, merged from `adapters` (IA3 adapters already on
// it) as HF PEFT does: its config is adapters[0]'s with target_modules and
// feedforward_modules the union of the adapters' (lists united, regexes joined as
// "(re1)|(re2)"), and on every layer it targets
//     ia3_l = sum_i weights[i] * ia3_l_i   (over the adapters that have that layer).
// There is no combination type: the vectors scale activations, so their weighted sum is
// the only merge HF defines. A single adapter with weight -1 or 0.5 negates or scales it.
// Stricter than HF, these are errors (std::invalid_argument naming the adapter or layer):
// weights of another length, an adapter that is not IA3, a layer none of the adapters has
// (HF leaves its vector zero, silencing the layer), a layer that is feed-forward in one
// adapter and not in another (HF fails with a broadcast error).
void add_weighted_ia3_adapter(PeftModel& peft, const std::vector<std::string>& adapters,
                              const std::vector<double>& weights, const std::string& adapter_name);

}  // namespace peft
