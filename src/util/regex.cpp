#define PCRE2_CODE_UNIT_WIDTH 8
#include "util/regex.h"

#include <pcre2.h>

#include <stdexcept>

namespace peft {

struct Regex::Impl {
  pcre2_code* code = nullptr;
  ~Impl() {
    if (code) pcre2_code_free(code);
  }
};

namespace {

// Any outcome but a match or "no match" (a match or depth limit, bad UTF-8) is an error:
// treating it as "no match" would silently change what a pattern selects.
[[noreturn]] void match_error(int rc, const std::string& pattern) {
  PCRE2_UCHAR msg[256];
  pcre2_get_error_message(rc, msg, sizeof msg);
  throw std::runtime_error("regular expression '" + pattern + "' could not be matched: " +
                           reinterpret_cast<const char*>(msg));
}

}  // namespace

Regex::Regex(const std::string& pattern) : pattern_(pattern), impl_(std::make_shared<Impl>()) {
  int err = 0;
  PCRE2_SIZE off = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err, &off,
                              nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw std::invalid_argument("invalid regular expression '" + pattern + "' at offset " + std::to_string(off) +
                                ": " + reinterpret_cast<const char*>(msg));
  }
  // Compiled to machine code where PCRE2 supports it; matching falls back otherwise.
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);
}

namespace {
bool run(pcre2_code* code, const std::string& s, uint32_t options, std::string* captured, int group,
         const std::string& pattern) {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, options, md, nullptr);
  if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
    pcre2_match_data_free(md);
    match_error(rc, pattern);
  }
  bool ok = rc >= 0;
  if (ok && captured) {
    captured->clear();
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (group < rc && ov[2 * group] != PCRE2_UNSET) *captured = s.substr(ov[2 * group], ov[2 * group + 1] - ov[2 * group]);
  }
  pcre2_match_data_free(md);
  return ok;
}
}  // namespace

std::vector<std::pair<size_t, size_t>> Regex::find_all(const std::string& s) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  size_t start = 0;
  // PCRE2 checks the subject's UTF-8 on every call; once is enough (else each call scans
  // the rest of the string and a long text takes quadratic time).
  uint32_t options = 0;
  while (start <= s.size()) {
    int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, options, md, nullptr);
    options = PCRE2_NO_UTF_CHECK;
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      match_error(rc, pattern_);
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    if (e == b) {  // empty match: keep it out, step one char forward
      if (b >= s.size()) break;
      start = b + 1;
      while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) ++start;
      continue;
    }
    out.emplace_back(b, e);
    start = e;
  }
  pcre2_match_data_free(md);
  return out;
}

bool Regex::full_match(const std::string& s) const {
  return run(impl_->code, s, PCRE2_ANCHORED | PCRE2_ENDANCHORED, nullptr, 0, pattern_);
}

bool Regex::match_prefix(const std::string& s, std::string* captured, int group) const {
  return run(impl_->code, s, PCRE2_ANCHORED, captured, group, pattern_);
}

}  // namespace peft
