// Content hashes (XXH3-128, hex) that tell one file or config from another. They detect
// damage and accidental reuse, not tampering.
#pragma once

#include <string>
#include <string_view>

namespace peft {

std::string content_hash(std::string_view bytes);
// Streams the file; throws naming it if it cannot be read.
std::string file_content_hash(const std::string& path);

}  // namespace peft
