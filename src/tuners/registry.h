// Each method registers its config parser by peft_type from inside its own folder
// (config.cpp), so adding a method touches nothing shared but the build's source list:
//
//   namespace { const bool kRegistered = register_method<LoraConfig>("LORA"); }
//
// The registration runs when the library loads (its objects are always linked in).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

using ConfigParser = std::function<std::unique_ptr<AdapterConfig>(const nlohmann::ordered_json&, const std::string&,
                                                                  std::vector<std::string>*)>;

// Registers `parse` for `peft_type`; returns true so it can initialize a static.
bool register_adapter_config(const std::string& peft_type, ConfigParser parse);

// C::from_json(j, where, unknown) as the parser.
template <class C>
bool register_method(const std::string& peft_type) {
  return register_adapter_config(peft_type, [](const nlohmann::ordered_json& j, const std::string& where,
                                               std::vector<std::string>* unknown) {
    return std::make_unique<C>(C::from_json(j, where, unknown));
  });
}

}  // namespace peft
