// Helpers the GGUF sources share; not part of the public API.
#pragma once

#include <string_view>

#include "peft/gguf.h"

namespace peft {

// Bytes of a number or bool value of type t; 0 for STRING and ARRAY.
int gguf_type_width(GgufType t);

// Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
bool gguf_valid_utf8(std::string_view s);

}  // namespace peft
