// Python's str semantics on UTF-8 strings, for the Jinja engine.
//
// Jinja runs on Python str, a sequence of code points: len(), indexing, slicing,
// strip() and split() all count and test code points, and whitespace is Unicode
// whitespace (str.isspace). These helpers give the same answers on UTF-8 bytes.
// Case mapping covers ASCII, Latin-1 and basic Cyrillic; other letters are unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace peft::jinja {

// Whether `s` is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF);
// if not, `bad_offset` gets the first bad byte.
bool valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

// Code points of valid UTF-8, and back.
std::u32string decode_utf8(std::string_view s);
void append_utf8(std::string& out, char32_t c);
std::string encode_utf8(std::u32string_view s);
size_t count_code_points(std::string_view s);
bool is_ascii(std::string_view s);

// str.isspace() for one code point (also what Python's re `\s` matches).
bool is_py_space(char32_t c);
// Line boundaries of str.splitlines().
bool is_line_break(char32_t c);

// str.strip/lstrip/rstrip: with no `chars` (nullptr), Unicode whitespace.
std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right);
// str.split(sep, maxsplit) and rsplit; `sep` nullptr splits on runs of whitespace.
std::vector<std::string> py_split(std::string_view s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> py_rsplit(std::string_view s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> py_splitlines(std::string_view s, bool keepends);
// str.replace(old, new, count); count < 0 means all. Python inserts `new` between every
// code point (and at both ends) when `old` is empty.
std::string py_replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);

std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);
std::string py_title(std::string_view s);  // str.title()
bool py_islower(std::string_view s);
bool py_isupper(std::string_view s);
bool is_cased_letter(char32_t c);

// Python's repr() of a str, and of a float (also its str()).
std::string py_repr_string(std::string_view s);
std::string py_float_repr(double x);

// json.dumps of a str.
void append_json_string(std::string& out, std::string_view s, bool ensure_ascii);

// markupsafe.escape.
std::string html_escape(std::string_view s);

// Python's float(s) and int(s, base) of a str (whitespace, sign, underscores between
// digits, inf/nan, base prefixes); false where Python raises ValueError. int() fails
// for values beyond 64 bits.
bool parse_py_float(std::string s, double* out);
bool parse_py_int(std::string s, int base, int64_t* out);

}  // namespace peft::jinja
