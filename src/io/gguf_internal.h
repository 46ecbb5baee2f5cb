// Helpers the GGUF sources share; not part of the public API.
#pragma once

#include <string>
#include <string_view>

#include "peft/gguf.h"

namespace peft {

// Bytes of a number or bool value of type t; 0 for STRING and ARRAY.
int gguf_type_width(GgufType t);

// Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
bool gguf_valid_utf8(std::string_view s);

// transformers' split regex for a tokenizer.ggml.pre value (GGUF_PRE_TOKENIZER_SPLITS), or
// nullptr; the exporter matches tokenizer.json against it.
const char* gguf_pre_split_regex(const std::string& pre);

}  // namespace peft
