// Builds the syntax tree from tokens with jinja2's grammar and operator precedence
// (jinja2/parser.py): or < and < not < comparisons < + - < ~ < * / // % < ** < unary
// minus < filters, tests, calls, attributes and subscripts.
#pragma once

#include <memory>
#include <string>

#include "tokenizer/jinja_ast.h"

namespace peft::jinja {

// Throws JinjaError for syntax errors and for tags, filters and tests that jinja2 or
// this engine does not know, naming the position.
std::shared_ptr<const ChatTemplate::Program> parse_template(const std::string& source, const std::string& where);

}  // namespace peft::jinja
