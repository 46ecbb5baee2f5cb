#include "tokenizer/jinja_lexer.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <tuple>

#include "peft/jinja.h"
#include "tokenizer/jinja_text.h"

namespace peft::jinja {

namespace {

// jinja2 joins the source's lines with "\n" and drops one trailing newline.
std::string normalize_newlines(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '\r') {
      out += '\n';
      if (i + 1 < in.size() && in[i + 1] == '\n') ++i;
    } else {
      out += in[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The character a one-letter escape such as \n stands for, or 0.
char simple_escape(char d) {
  switch (d) {
    case '\\': return '\\';
    case '\'': return '\'';
    case '"': return '"';
    case 'a': return '\a';
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'v': return '\v';
    default: return 0;
  }
}

// The first `n` characters of `s` as hex digits; false if there are fewer.
bool read_hex(std::string_view s, size_t n, uint32_t* v) {
  *v = 0;
  for (size_t k = 0; k < n; ++k) {
    const char h = k < s.size() ? static_cast<char>(s[k] | 0x20) : 0;
    const int d = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : -1;
    if (d < 0) return false;
    *v = *v * 16 + static_cast<uint32_t>(d);
  }
  return true;
}

// jinja2 hands literals to unicode-escape as ASCII, writing a non-ASCII character as
// \xNN, \uNNNN or \UNNNNNNNN; after a backslash, that text's own backslash is escaped,
// so the text is what remains.
std::string escaped_text(char32_t c) {
  char buf[16];
  std::snprintf(buf, sizeof buf, c <= 0xFF ? "\\x%02x" : c <= 0xFFFF ? "\\u%04x" : "\\U%08x", static_cast<unsigned>(c));
  return buf;
}
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

class Lexer {
 public:
  Lexer(std::string src, const std::string& where) : src_(std::move(src)), where_(where) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) root();
    push(Tok::kEof, "", src_.size());
    return std::move(tokens_);
  }

 private:
  // Line and column (in code points) of a byte offset. Tokens arrive in order, so the
  // column is counted on from the previous token's when they share a line.
  std::pair<int, int> locate(size_t at) {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), at) - 1;
    const int line = static_cast<int>(it - line_starts_.begin()) + 1;
    if (line != cursor_line_ || at < cursor_at_) cursor_line_ = line, cursor_at_ = *it, cursor_col_ = 1;
    cursor_col_ += static_cast<int>(count_code_points(std::string_view(src_).substr(cursor_at_, at - cursor_at_)));
    cursor_at_ = at;
    return {line, cursor_col_};
  }

  [[noreturn]] void error(size_t at, const std::string& what) {
    const auto [line, col] = locate(at);
    throw JinjaError(where_, line, col, what);
  }

  Token& push(Tok type, std::string text, size_t at) {
    Token t{type, std::move(text)};
    std::tie(t.line, t.col) = locate(at);
    tokens_.push_back(std::move(t));
    return tokens_.back();
  }

  // Length of the Unicode whitespace run at `p` (what Python's \s* matches).
  size_t space_run(size_t p) const {
    size_t q = p;
    while (q < src_.size()) {
      const auto b = static_cast<unsigned char>(src_[q]);
      const size_t n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
      const std::u32string c = decode_utf8(std::string_view(src_).substr(q, n));
      if (c.empty() || !is_py_space(c[0])) break;
      q += n;
    }
    return q - p;
  }

  bool starts(size_t p, std::string_view s) const { return src_.compare(p, s.size(), s) == 0; }

  // `{% raw %}` (with optional - or +): the length of the opening tag, or 0.
  size_t raw_begin(size_t p) const {
    size_t q = p + 2;
    if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ++q;
    q += space_run(q);
    if (!starts(q, "raw")) return 0;
    q += 3;
    q += space_run(q);
    if (starts(q, "-%}")) return q + 3 + space_run(q + 3) - p;
    if (starts(q, "%}")) return q + 2 - p;
    return 0;
  }

  // Emits the text before a tag opening at `tag` whose whitespace-control sign is `sign`.
  void emit_text(size_t tag, char sign, bool lstrip_applies) {
    std::string text = src_.substr(pos_, tag - pos_);
    if (sign == '-') {
      text = py_strip(text, nullptr, false, true);
    } else if (sign != '+' && lstrip_applies) {
      const size_t nl = text.rfind('\n');
      const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting_) && l_pos < text.size() &&
          space_run_of(text, l_pos) == text.size() - l_pos)
        text.resize(l_pos);
    }
    if (!text.empty()) push(Tok::kData, std::move(text), pos_);
  }

  static size_t space_run_of(const std::string& s, size_t from) {
    size_t n = 0;
    for (char32_t c : decode_utf8(std::string_view(s).substr(from))) {
      if (!is_py_space(c)) break;
      std::string tmp;
      append_utf8(tmp, c);
      n += tmp.size();
    }
    return n;
  }

  void root() {
    size_t tag = pos_;
    while (true) {
      tag = src_.find('{', tag);
      if (tag == std::string::npos || tag + 1 >= src_.size()) {
        push(Tok::kData, src_.substr(pos_), pos_);
        pos_ = src_.size();
        return;
      }
      const char k = src_[tag + 1];
      if (k == '{' || k == '%' || k == '#') break;
      ++tag;
    }
    const char kind = src_[tag + 1];
    const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
    const size_t opener = 2 + (sign ? 1 : 0);
    if (kind == '%') {
      if (const size_t raw = raw_begin(tag)) {
        emit_text(tag, sign, true);
        raw_block(tag, tag + raw);
        return;
      }
    }
    emit_text(tag, sign, kind != '{');
    if (kind == '#') {
      comment(tag, tag + opener);
    } else {
      push(kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", tag);
      pos_ = tag + opener;
      inside_tag(kind == '{');
    }
  }

  void comment(size_t open, size_t p) {
    for (; p < src_.size(); ++p) {
      if (starts(p, "+#}")) return finish(p + 3);
      if (starts(p, "-#}")) return finish(p + 3 + space_run(p + 3));
      if (starts(p, "#}")) return finish(p + 2 + (starts(p + 2, "\n") ? 1 : 0));
    }
    error(open, "missing end of comment tag");
  }

  // Sets the position after a tag's end and remembers whether it ended a line.
  void finish(size_t end) {
    line_starting_ = end > 0 && src_[end - 1] == '\n';
    pos_ = end;
  }

  void raw_block(size_t open, size_t body) {
    line_starting_ = src_[body - 1] == '\n';
    for (size_t p = body; p < src_.size(); ++p) {
      if (!starts(p, "{%")) continue;
      size_t q = p + 2;
      const char sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q] : 0;
      if (sign) ++q;
      q += space_run(q);
      if (!starts(q, "endraw")) continue;
      q += 6;
      q += space_run(q);
      size_t end;
      if (starts(q, "+%}")) {
        end = q + 3;
      } else if (starts(q, "-%}")) {
        end = q + 3 + space_run(q + 3);
      } else if (starts(q, "%}")) {
        end = q + 2 + (starts(q + 2, "\n") ? 1 : 0);
      } else {
        continue;
      }
      pos_ = body;
      emit_text(p, sign, true);
      return finish(end);
    }
    error(open, "missing end of raw directive");
  }

  void inside_tag(bool variable) {
    std::vector<char> balance;
    while (true) {
      if (pos_ >= src_.size()) error(pos_, "unexpected end of template inside a tag");
      if (balance.empty()) {
        if (variable) {
          if (starts(pos_, "-}}")) return end_tag(Tok::kVarEnd, pos_ + 3 + space_run(pos_ + 3));
          if (starts(pos_, "}}")) return end_tag(Tok::kVarEnd, pos_ + 2);
        } else {
          if (starts(pos_, "+%}")) return end_tag(Tok::kBlockEnd, pos_ + 3);
          if (starts(pos_, "-%}")) return end_tag(Tok::kBlockEnd, pos_ + 3 + space_run(pos_ + 3));
          if (starts(pos_, "%}")) return end_tag(Tok::kBlockEnd, pos_ + 2 + (starts(pos_ + 2, "\n") ? 1 : 0));
        }
      }
      if (const size_t ws = space_run(pos_)) {
        pos_ += ws;
      } else if (lex_number()) {
      } else if (is_name_start(src_[pos_])) {
        size_t q = pos_;
        while (q < src_.size() && is_name_char(src_[q])) ++q;
        push(Tok::kName, src_.substr(pos_, q - pos_), pos_);
        pos_ = q;
      } else if (src_[pos_] == '\'' || src_[pos_] == '"') {
        lex_string();
      } else {
        lex_operator(balance);
      }
    }
  }

  void end_tag(Tok type, size_t end) {
    push(type, "", pos_);
    finish(end);
  }

  // (\d+_)*\d+ : digits with single underscores between them.
  size_t digits(size_t p, bool (*ok)(char)) const {
    size_t q = p;
    if (q >= src_.size() || !ok(src_[q])) return 0;
    while (q < src_.size()) {
      if (ok(src_[q])) {
        ++q;
      } else if (src_[q] == '_' && q + 1 < src_.size() && ok(src_[q + 1])) {
        q += 2;
      } else {
        break;
      }
    }
    return q - p;
  }

  bool lex_number() {
    const size_t p = pos_;
    if (!is_digit(src_[p])) return false;
    // Floats first, as jinja2's rules do: digits then a fraction and/or an exponent.
    if (p == 0 || src_[p - 1] != '.') {
      const size_t whole = digits(p, is_digit);
      size_t q = p + whole;
      size_t frac_end = q;
      if (starts(q, ".") && digits(q + 1, is_digit)) frac_end = q + 1 + digits(q + 1, is_digit);
      size_t e = frac_end;
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t f = e + 1;
        if (f < src_.size() && (src_[f] == '+' || src_[f] == '-')) ++f;
        if (const size_t ed = digits(f, is_digit)) return push_float(p, f + ed);
      }
      if (frac_end > q) return push_float(p, frac_end);
    }
    // Integers: 0b, 0o, 0x prefixes, decimal, or zeros.
    const char x = p + 1 < src_.size() ? static_cast<char>(src_[p + 1] | 0x20) : 0;
    int base = 10;
    size_t end;
    if (src_[p] == '0' && (x == 'b' || x == 'o' || x == 'x')) {
      base = x == 'b' ? 2 : x == 'o' ? 8 : 16;
      size_t q = p + 2;
      auto valid = [&](char c) {
        if (base == 2) return c == '0' || c == '1';
        if (base == 8) return c >= '0' && c <= '7';
        return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
      };
      while (q < src_.size() && (valid(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() && valid(src_[q + 1]))))
        q += src_[q] == '_' ? 2 : 1;
      if (q == p + 2) {
        end = p + 1;  // just "0"
        base = 10;
      } else {
        end = q;
      }
    } else if (src_[p] == '0') {
      end = p + digits(p, [](char c) { return c == '0'; });
    } else {
      end = p + digits(p, is_digit);
    }
    std::string text;
    for (size_t i = p + (base == 10 ? 0 : 2); i < end; ++i)
      if (src_[i] != '_') text += src_[i];
    errno = 0;
    char* stop = nullptr;
    const long long v = std::strtoll(text.c_str(), &stop, base);
    if (errno == ERANGE) error(p, "unsupported: integer literal " + src_.substr(p, end - p) + " does not fit 64 bits");
    push(Tok::kInteger, src_.substr(p, end - p), p).integer = v;
    pos_ = end;
    return true;
  }

  bool push_float(size_t p, size_t end) {
    std::string text;
    for (size_t i = p; i < end; ++i)
      if (src_[i] != '_') text += src_[i];
    push(Tok::kFloat, src_.substr(p, end - p), p).number = std::strtod(text.c_str(), nullptr);
    pos_ = end;
    return true;
  }

  void lex_string() {
    const size_t p = pos_;
    const char quote = src_[p];
    size_t q = p + 1;
    while (q < src_.size() && src_[q] != quote) q += src_[q] == '\\' ? 2 : 1;
    if (q >= src_.size()) error(p, "unterminated string literal");
    push(Tok::kString, unescape(p, std::string_view(src_).substr(p + 1, q - p - 1)), p);
    pos_ = q + 1;
  }

  // What Python's unicode-escape codec makes of the literal (jinja2 decodes string
  // literals with it after backslash-escaping non-ASCII characters).
  std::string unescape(size_t at, std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\\') {
        out += s[i];
        continue;
      }
      const char d = s[++i];  // the lexer guarantees a character after a backslash
      const size_t digits = d == 'x' ? 2 : d == 'u' ? 4 : d == 'U' ? 8 : 0;
      uint32_t c = 0;
      if (d == '\n') continue;  // an escaped newline continues the line
      if (const char plain = simple_escape(d)) {
        out += plain;
        continue;
      }
      if (d == 'N') error(at, "unsupported: \\N{...} escape in string literal");
      if (digits) {
        if (!read_hex(s.substr(i + 1), digits, &c)) error(at, "truncated escape in string literal");
        i += digits;
      } else if (d >= '0' && d <= '7') {  // up to three octal digits
        c = static_cast<uint32_t>(d - '0');
        for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k)
          c = c * 8 + static_cast<uint32_t>(s[++i] - '0');
      } else if (static_cast<unsigned char>(d) >= 0x80) {
        const auto b = static_cast<unsigned char>(d);
        const size_t n = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        out += escaped_text(decode_utf8(s.substr(i, n))[0]);
        i += n - 1;
        continue;
      } else {  // unknown escapes stay as written
        out += '\\';
        out += d;
        continue;
      }
      if (c > 0x10FFFF) error(at, "illegal Unicode character in string literal");
      if (c >= 0xD800 && c <= 0xDFFF) error(at, "unsupported: surrogate code point in string literal");
      append_utf8(out, c);
    }
    return out;
  }

  void lex_operator(std::vector<char>& balance) {
    static const char* kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : kTwo) {
      if (starts(pos_, op)) {
        push(Tok::kOperator, op, pos_);
        pos_ += 2;
        return;
      }
    }
    const char c = src_[pos_];
    if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
      std::string shown;
      const std::u32string cp = decode_utf8(std::string_view(src_).substr(pos_, 4));
      append_utf8(shown, cp.empty() ? U'?' : cp[0]);
      error(pos_, "unexpected char '" + shown + "'");
    }
    if (c == '{' || c == '(' || c == '[') balance.push_back(c == '{' ? '}' : c == '(' ? ')' : ']');
    if (c == '}' || c == ')' || c == ']') {
      if (balance.empty()) error(pos_, std::string("unexpected '") + c + "'");
      if (balance.back() != c) error(pos_, std::string("unexpected '") + c + "', expected '" + balance.back() + "'");
      balance.pop_back();
    }
    push(Tok::kOperator, std::string(1, c), pos_);
    ++pos_;
  }

  std::string src_;
  const std::string& where_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  int cursor_line_ = 0, cursor_col_ = 1;
  size_t cursor_at_ = 0;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source, const std::string& where) {
  size_t bad = 0;
  if (!valid_utf8(source, &bad))
    throw JinjaError(where, 0, 0, "template is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  return Lexer(normalize_newlines(source), where).run();
}

}  // namespace peft::jinja
