// Splits template source into tokens, applying whitespace control exactly as jinja2's
// lexer does with trim_blocks and lstrip_blocks:
//
//   {%- / {{- / {#-   strip all whitespace before the tag;
//   -%} / -}} / -#}   strip all whitespace after it;
//   %} and #}         eat one newline right after them (trim_blocks), unless written +%};
//   {% and {#         drop spaces and tabs between the start of their line and the tag
//                     (lstrip_blocks), unless written {%+; never for {{.
//
// Newlines are normalized to "\n" and one trailing newline is dropped, as jinja2 does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace peft::jinja {

enum class Tok : uint8_t {
  kData,        // template text
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kVarBegin,    // {{
  kVarEnd,      // }}
  kName,
  kString,      // text holds the unescaped value
  kInteger,
  kFloat,
  kOperator,    // text holds the operator: "+", "//", "(", ...
  kEof,
};

struct Token {
  Tok type;
  std::string text;
  int64_t integer = 0;
  double number = 0;
  int line = 1, col = 1;
};

// Throws JinjaError (naming `where` and the position) on invalid UTF-8, unterminated
// tags, comments, strings or raw blocks, unbalanced brackets and unexpected characters.
std::vector<Token> tokenize(const std::string& source, const std::string& where);

}  // namespace peft::jinja
