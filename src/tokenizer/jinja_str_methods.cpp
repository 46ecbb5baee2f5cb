// The methods of Python's str that templates call: message.content.strip(),
// role.startswith('<'), text.split('</think>')[-1], ...
#include <algorithm>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_text.h"

namespace peft::jinja {

namespace {

using K = Value::Kind;
using Method = Value (*)(Renderer& r, const Value& self, const std::string& name, CallArgs& args);

const std::string& str_arg(const Value& v, const std::string& fn) {
  if (!v.is_string()) fail(fn + "() argument must be str, not " + type_name(v));
  return v.str();
}

int64_t int_arg(const Value& v, const std::string& fn) {
  if (!v.is_int()) fail("'" + type_name(v) + "' object cannot be interpreted as an integer (" + fn + ")");
  return v.as_int();
}

bool has_suffix(const std::string& s, const std::string& a) {
  return s.size() >= a.size() && s.compare(s.size() - a.size(), a.size(), a) == 0;
}

Value strings(Renderer& r, const std::vector<std::string>& parts) {
  List out;
  for (const auto& p : parts) out.push_back(Value::string(p));
  r.step(out.size());
  return Value::list(std::move(out));
}

Value m_strip(Renderer&, const Value& self, const std::string& name, CallArgs& args) {
  const Value chars = bind(args, name.c_str(), {{"chars", Value::none()}})[0];
  const std::string* set = chars.is_none() ? nullptr : &str_arg(chars, name);
  return Value::string(py_strip(self.str(), set, name != "rstrip", name != "lstrip"));
}

Value m_split(Renderer& r, const Value& self, const std::string& name, CallArgs& args) {
  const auto a = bind(args, name.c_str(), {{"sep", Value::none()}, {"maxsplit", Value::integer(-1)}});
  const std::string* sep = a[0].is_none() ? nullptr : &str_arg(a[0], name);
  if (sep && sep->empty()) fail("empty separator");
  const int64_t maxsplit = int_arg(a[1], name);
  return strings(r, name == "split" ? py_split(self.str(), sep, maxsplit) : py_rsplit(self.str(), sep, maxsplit));
}

Value m_splitlines(Renderer& r, const Value& self, const std::string&, CallArgs& args) {
  const bool keepends = truthy(bind(args, "splitlines", {{"keepends", Value::boolean(false)}})[0]);
  return strings(r, py_splitlines(self.str(), keepends));
}

// startswith / endswith: a str or a tuple of them.
Value m_affix_test(Renderer&, const Value& self, const std::string& name, CallArgs& args) {
  const Value affix = bind(args, name.c_str(), {{"prefix", Value(), true}})[0];
  const List options = affix.kind() == K::kTuple ? affix.items() : List{affix};
  const std::string& s = self.str();
  for (const Value& o : options) {
    const std::string& a = str_arg(o, name);
    if (name == "startswith" ? s.compare(0, a.size(), a) == 0 : has_suffix(s, a)) return Value::boolean(true);
  }
  return Value::boolean(false);
}

Value m_remove_affix(Renderer&, const Value& self, const std::string& name, CallArgs& args) {
  const std::string& a = str_arg(bind(args, name.c_str(), {{"affix", Value(), true}})[0], name);
  const std::string& s = self.str();
  if (name == "removeprefix") return s.compare(0, a.size(), a) == 0 ? Value::string(s.substr(a.size())) : self;
  return has_suffix(s, a) ? Value::string(s.substr(0, s.size() - a.size())) : self;
}

Value m_partition(Renderer&, const Value& self, const std::string& name, CallArgs& args) {
  const std::string& sep = str_arg(bind(args, name.c_str(), {{"sep", Value(), true}})[0], name);
  if (sep.empty()) fail("empty separator");
  const std::string& s = self.str();
  const size_t at = name == "partition" ? s.find(sep) : s.rfind(sep);
  const Value empty = Value::string("");
  if (at == std::string::npos)
    return name == "partition" ? Value::tuple({self, empty, empty}) : Value::tuple({empty, empty, self});
  return Value::tuple({Value::string(s.substr(0, at)), Value::string(sep), Value::string(s.substr(at + sep.size()))});
}

Value m_case(Renderer&, const Value& self, const std::string& name, CallArgs& args) {
  bind(args, name.c_str(), {});
  const std::string& s = self.str();
  if (name == "upper") return Value::string(py_upper(s));
  if (name == "lower" || name == "casefold") return Value::string(py_lower(s));
  if (name == "title") return Value::string(py_title(s));
  if (name == "capitalize") return Value::string(py_capitalize(s));
  std::string out;  // swapcase
  for (char32_t c : decode_utf8(s)) {
    std::string one;
    append_utf8(one, c);
    out += py_islower(one) ? py_upper(one) : py_isupper(one) ? py_lower(one) : one;
  }
  return Value::string(std::move(out));
}

Value m_replace(Renderer& r, const Value& self, const std::string&, CallArgs& args) {
  const auto a = bind(args, "replace", {{"old", Value(), true}, {"new", Value(), true}, {"count", Value::integer(-1)}});
  const std::string &s = self.str(), &old = str_arg(a[0], "replace"), &repl = str_arg(a[1], "replace");
  if (repl.size() > old.size()) {  // bound the result before building it
    const size_t n = old.empty() ? count_code_points(s) + 1 : s.size() / old.size();
    r.check_size(s.size() + n * (repl.size() - old.size()));
  }
  return Value::string(py_replace(s, old, repl, int_arg(a[2], "replace")));
}

// find / rfind / index / rindex / count: positions in code points.
Value m_search(Renderer&, const Value& self, const std::string& name, CallArgs& args) {
  const std::string& sub = str_arg(bind(args, name.c_str(), {{"sub", Value(), true}})[0], name);
  const std::string& s = self.str();
  charge_bytes(s.size());
  if (name == "count") {
    if (sub.empty()) return Value::integer(static_cast<int64_t>(count_code_points(s)) + 1);
    int64_t n = 0;
    for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
    return Value::integer(n);
  }
  const size_t at = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
  if (at == std::string::npos) {
    if (name == "index" || name == "rindex") fail("substring not found");
    return Value::integer(-1);
  }
  return Value::integer(static_cast<int64_t>(count_code_points(std::string_view(s).substr(0, at))));
}

Value m_join(Renderer& r, const Value& self, const std::string&, CallArgs& args) {
  const Value items = bind(args, "join", {{"iterable", Value(), true}})[0];
  const std::string& sep = self.str();
  std::string out;
  bool first = true;
  for (const Value& item : to_list(items)) {
    r.step();
    if (!item.is_string()) fail("sequence item: expected str instance, " + type_name(item) + " found");
    r.check_size(out.size() + sep.size() + item.str().size());
    charge_bytes(sep.size() + item.str().size());
    if (!first) out += sep;
    out += item.str();
    first = false;
  }
  return Value::string(std::move(out));
}

// center / ljust / rjust.
Value m_pad(Renderer& r, const Value& self, const std::string& name, CallArgs& args) {
  const auto a = bind(args, name.c_str(), {{"width", Value(), true}, {"fillchar", Value::string(" ")}});
  const std::string &s = self.str(), &fill = str_arg(a[1], name);
  const int64_t width = int_arg(a[0], name);
  const auto len = static_cast<int64_t>(count_code_points(s));
  if (count_code_points(fill) != 1) fail("The fill character must be exactly one character long");
  if (width <= len) return self;
  r.check_size(s.size() + static_cast<size_t>(width - len) * fill.size());
  const int64_t marg = width - len;
  const int64_t left = name == "ljust" ? 0 : name == "rjust" ? marg : marg / 2 + (marg & width & 1);
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = left; i < marg; ++i) out += fill;
  return Value::string(std::move(out));
}

Value m_zfill(Renderer& r, const Value& self, const std::string&, CallArgs& args) {
  const int64_t width = int_arg(bind(args, "zfill", {{"width", Value(), true}})[0], "zfill");
  const std::string& s = self.str();
  const auto len = static_cast<int64_t>(count_code_points(s));
  if (width <= len) return self;
  r.check_size(s.size() + static_cast<size_t>(width - len));
  const size_t sign = !s.empty() && (s[0] == '+' || s[0] == '-') ? 1 : 0;
  return Value::string(s.substr(0, sign) + std::string(static_cast<size_t>(width - len), '0') + s.substr(sign));
}

bool is_digit_cp(char32_t c) { return c >= '0' && c <= '9'; }
bool is_alpha_cp(char32_t c) { return (c < 0x80 && std::isalpha(static_cast<int>(c))) || (c >= 0x80 && is_cased_letter(c)); }

// isdigit, isalpha, ...: non-empty and every code point qualifies (digits and letters
// outside ASCII as far as jinja_text's tables know them).
Value m_predicate(Renderer&, const Value& self, const std::string& name, CallArgs& args) {
  bind(args, name.c_str(), {});
  const std::string& s = self.str();
  if (name == "islower") return Value::boolean(py_islower(s));
  if (name == "isupper") return Value::boolean(py_isupper(s));
  if (name == "isascii") return Value::boolean(is_ascii(s));
  bool (*pred)(char32_t) = is_py_space;
  if (name == "isalpha") pred = is_alpha_cp;
  if (name == "isalnum") pred = [](char32_t c) { return is_digit_cp(c) || is_alpha_cp(c); };
  if (name == "isdigit" || name == "isdecimal" || name == "isnumeric") pred = is_digit_cp;
  const std::u32string u = decode_utf8(s);
  return Value::boolean(!u.empty() && std::all_of(u.begin(), u.end(), pred));
}

// str.format with automatic or explicit field numbers and names; no conversions or specs.
Value m_format(Renderer& r, const Value& self, const std::string&, CallArgs& args) {
  const std::string& fmt = self.str();
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if ((c == '{' || c == '}') && i + 1 < fmt.size() && fmt[i + 1] == c) {
      out += c, ++i;
      continue;
    }
    if (c == '}') fail("Single '}' encountered in format string");
    if (c != '{') {
      out += c;
      continue;
    }
    const size_t close = fmt.find('}', i);
    if (close == std::string::npos) fail("Single '{' encountered in format string");
    const std::string field = fmt.substr(i + 1, close - i - 1);
    if (field.find_first_of("!:.[") != std::string::npos)
      fail("unsupported: str.format field '{" + field + "}' (conversions, specs and lookups)");
    Value v;
    if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      const size_t idx = field.empty() ? auto_index++ : std::stoul(field);
      if (idx >= args.positional.size())
        fail("Replacement index " + std::to_string(idx) + " out of range for positional args tuple");
      v = args.positional[idx];
    } else {
      const auto it = std::find_if(args.keyword.begin(), args.keyword.end(), [&](auto& kv) { return kv.first == field; });
      if (it == args.keyword.end()) fail(py_repr_string(field));
      v = it->second;
    }
    const std::string s = v.is_string() ? v.str() : to_str(v);
    r.check_size(out.size() + s.size());
    charge_bytes(s.size());
    out += s;
    i = close;
  }
  return Value::string(std::move(out));
}

struct Entry {
  const char* name;
  Method fn;  // null: Python has it, this engine does not
};

// Every attribute of Python's str, so that an unknown name is Undefined, as in jinja2.
const Entry kMethods[] = {
    {"capitalize", m_case},     {"casefold", m_case},        {"center", m_pad},         {"count", m_search},
    {"encode", nullptr},        {"endswith", m_affix_test},  {"expandtabs", nullptr},   {"find", m_search},
    {"format", m_format},       {"format_map", nullptr},     {"index", m_search},       {"isalnum", m_predicate},
    {"isalpha", m_predicate},   {"isascii", m_predicate},    {"isdecimal", m_predicate}, {"isdigit", m_predicate},
    {"isidentifier", nullptr},  {"islower", m_predicate},    {"isnumeric", m_predicate}, {"isprintable", nullptr},
    {"isspace", m_predicate},   {"istitle", nullptr},        {"isupper", m_predicate},  {"join", m_join},
    {"ljust", m_pad},           {"lower", m_case},           {"lstrip", m_strip},       {"maketrans", nullptr},
    {"partition", m_partition}, {"removeprefix", m_remove_affix}, {"removesuffix", m_remove_affix},
    {"replace", m_replace},     {"rfind", m_search},         {"rindex", m_search},      {"rjust", m_pad},
    {"rpartition", m_partition}, {"rsplit", m_split},        {"rstrip", m_strip},       {"split", m_split},
    {"splitlines", m_splitlines}, {"startswith", m_affix_test}, {"strip", m_strip},     {"swapcase", m_case},
    {"title", m_case},          {"translate", nullptr},      {"upper", m_case},         {"zfill", m_zfill},
};

const Entry* find_entry(const std::string& name) {
  for (const Entry& e : kMethods)
    if (name == e.name) return &e;
  return nullptr;
}

}  // namespace

bool is_str_method(const std::string& name) { return find_entry(name) != nullptr; }

Value call_str_method(Renderer& r, const Value& self, const std::string& name, CallArgs& args) {
  const Entry* e = find_entry(name);
  if (!e || !e->fn) fail("unsupported method 'str." + name + "'");
  return e->fn(r, self, name, args);
}

}  // namespace peft::jinja
