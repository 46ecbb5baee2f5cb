// jinja2's filters (jinja2/filters.py), with transformers' tojson.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_text.h"

namespace peft::jinja {

namespace {

const std::string kDot = ".", kComma = ",";

// soft_str(): str() of anything, "" for Undefined.
std::string text(const Value& v) { return v.is_string() ? v.str() : to_str(v); }

int64_t int_arg(const Value& v, const char* what) {
  if (!v.is_int()) fail(std::string("'") + type_name(v) + "' object cannot be interpreted as an integer (" + what + ")");
  return v.as_int();
}

// list(v) for filters, charging one step per item.
List items_of(Renderer& r, const Value& v) {
  List items = to_list(v);
  r.step(items.size());
  return items;
}

// make_attrgetter: "a.b.0" looks up a, then b, then item 0, as environment.getitem does.
Value get_attribute(Renderer& r, Value item, const Value& attribute, const Value* fallback = nullptr) {
  if (attribute.is_none()) return item;
  std::vector<Value> parts;
  if (attribute.is_string()) {
    for (const std::string& part : py_split(attribute.str(), &kDot, -1)) {
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      parts.push_back(digits ? Value::integer(std::strtoll(part.c_str(), nullptr, 10)) : Value::string(part));
    }
  } else {
    parts.push_back(attribute);
  }
  for (const Value& part : parts) {
    item = r.getitem(item, part);
    if (fallback && item.is_undefined()) item = *fallback;
  }
  return item;
}

Value lower_if_string(const Value& v) { return v.is_string() ? Value::string(py_lower(v.str())) : v; }

Value f_abs(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "abs", {});
  if (v.kind() == Value::Kind::kFloat) return Value::number(std::fabs(v.as_double()));
  if (v.is_int()) {
    if (v.as_int() == std::numeric_limits<int64_t>::min()) fail("unsupported: integer overflow");
    return Value::integer(v.as_int() < 0 ? -v.as_int() : v.as_int());
  }
  fail("bad operand type for abs(): '" + type_name(v) + "'");
}

Value f_attr(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "attr", {{"name", Value(), true}});
  if (!a[0].is_string()) fail("attribute name must be a string");
  if (v.is_undefined()) fail_undefined(v);
  // Only real attributes: dict keys are not attributes.
  if (v.kind() == Value::Kind::kNamespace || v.kind() == Value::Kind::kLoop) return r.getattr(v, a[0].str());
  if (auto m = find_method(v, a[0].str())) return *m;
  return undefined_attribute(v, a[0].str());
}

Value f_capitalize(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "capitalize", {});
  return Value::string(py_capitalize(text(v)));
}

Value f_center(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "center", {{"width", Value::integer(80)}});
  const std::string s = text(v);
  const int64_t width = int_arg(a[0], "width");
  const auto len = static_cast<int64_t>(count_code_points(s));
  if (width <= len) return Value::string(s);
  r.check_size(s.size() + static_cast<size_t>(width - len));
  const int64_t marg = width - len;
  const int64_t left = marg / 2 + (marg & width & 1);
  return Value::string(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(marg - left), ' '));
}

Value f_length(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "length", {});
  return Value::integer(py_len(v));
}

Value f_default(Renderer&, const Value& v, CallArgs& args) {
  const auto a = bind(args, "default", {{"default_value", Value::string("")}, {"boolean", Value::boolean(false)}});
  if (v.is_undefined() || (truthy(a[1]) && !truthy(v))) return a[0];
  return v;
}

Value f_dictsort(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "dictsort", {{"case_sensitive", Value::boolean(false)}, {"by", Value::string("key")},
                                         {"reverse", Value::boolean(false)}});
  if (v.kind() != Value::Kind::kDict) fail("dictsort needs a dict, not '" + type_name(v) + "'");
  if (!a[1].is_string() || (a[1].str() != "key" && a[1].str() != "value"))
    fail("You can only sort by either \"key\" or \"value\"");
  const size_t pos = a[1].str() == "key" ? 0 : 1;
  List pairs;
  for (const auto& [k, item] : v.dict().items()) pairs.push_back(Value::tuple({Value::string(k), item}));
  r.step(pairs.size() * (1 + static_cast<uint64_t>(std::log2(pairs.size() + 1))));
  auto key = [&](const Value& p) { return truthy(a[0]) ? p.items()[pos] : lower_if_string(p.items()[pos]); };
  const bool reverse = truthy(a[2]);
  std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& x, const Value& y) {
    return reverse ? compare(key(y), key(x), "<") == -1 : compare(key(x), key(y), "<") == -1;
  });
  return Value::list(std::move(pairs));
}

Value f_escape(Renderer& r, const Value& v, CallArgs& args) {
  bind(args, "escape", {});
  if (v.is_markup()) return v;  // already escaped
  std::string s = html_escape(text(v));
  r.check_size(s.size());
  return Value::markup(std::move(s));
}

Value f_forceescape(Renderer& r, const Value& v, CallArgs& args) {
  bind(args, "forceescape", {});
  std::string s = html_escape(text(v));
  r.check_size(s.size());
  return Value::markup(std::move(s));
}

Value f_first(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "first", {});
  if (v.kind() == Value::Kind::kIterator) {
    Value out;
    if (v.take_next(&out)) return out;
  } else {
    const List items = to_list(v);
    if (!items.empty()) return items.front();
  }
  return Value::undefined("No first item, sequence was empty.");
}

Value f_float(Renderer&, const Value& v, CallArgs& args) {
  const auto a = bind(args, "float", {{"default", Value::number(0.0)}});
  if (v.is_number()) return Value::number(v.as_double());
  double x;
  if (v.is_string() && parse_py_float(v.str(), &x)) return Value::number(x);
  return a[0];
}

Value f_int(Renderer&, const Value& v, CallArgs& args) {
  const auto a = bind(args, "int", {{"default", Value::integer(0)}, {"base", Value::integer(10)}});
  if (v.is_int()) return Value::integer(v.as_int());
  if (v.kind() == Value::Kind::kFloat) {
    const double t = std::trunc(v.as_double());
    if (!std::isfinite(t)) return a[0];
    if (std::fabs(t) >= 9.2e18) fail("unsupported: integer does not fit 64 bits");
    return Value::integer(static_cast<int64_t>(t));
  }
  if (v.is_string()) {
    int64_t i;
    if (parse_py_int(v.str(), static_cast<int>(int_arg(a[1], "base")), &i)) return Value::integer(i);
    double x;  // "42.23"|int is 42
    if (parse_py_float(v.str(), &x) && std::isfinite(x) && std::fabs(x) < 9.2e18)
      return Value::integer(static_cast<int64_t>(std::trunc(x)));
  }
  return a[0];
}

Value f_indent(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "indent", {{"width", Value::integer(4)}, {"first", Value::boolean(false)},
                                       {"blank", Value::boolean(false)}});
  if (v.is_undefined()) fail_undefined(v);
  if (!v.is_string()) fail("unsupported operand type(s) for +=: '" + type_name(v) + "' and 'str'");
  std::string indention;
  if (a[0].is_string()) {
    indention = a[0].str();
  } else {
    const int64_t w = int_arg(a[0], "width");
    if (w > 0) {
      r.check_size(static_cast<size_t>(w));
      indention.assign(static_cast<size_t>(w), ' ');
    }
  }
  const std::vector<std::string> lines = py_splitlines(v.str() + "\n", false);
  r.check_size(v.str().size() + lines.size() * (indention.size() + 1));
  std::string out;
  if (truthy(a[2])) {
    for (size_t i = 0; i < lines.size(); ++i) out += (i ? "\n" + indention : "") + lines[i];
  } else {
    out = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) out += "\n" + (lines[i].empty() ? "" : indention + lines[i]);
  }
  if (truthy(a[1])) out = indention + out;
  return Value::string(std::move(out));
}

Value f_join(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "join", {{"d", Value::string("")}, {"attribute", Value::none()}});
  const std::string sep = text(a[0]);
  std::string out;
  bool first = true;
  for (const Value& item : items_of(r, v)) {
    const Value x = get_attribute(r, item, a[1]);
    const std::string s = text(x);
    r.check_size(out.size() + sep.size() + s.size());
    charge_bytes(sep.size() + s.size());
    if (!first) out += sep;
    out += s;
    first = false;
  }
  return Value::string(std::move(out));
}

Value f_last(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "last", {});
  if (v.kind() == Value::Kind::kIterator) fail("'" + type_name(v) + "' object is not reversible");
  const List items = to_list(v);
  if (!items.empty()) return items.back();
  return Value::undefined("No last item, sequence was empty.");
}

Value f_list(Renderer& r, const Value& v, CallArgs& args) {
  bind(args, "list", {});
  return Value::list(items_of(r, v));
}

Value f_lower(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "lower", {});
  return Value::string(py_lower(text(v)));
}

Value f_upper(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "upper", {});
  return Value::string(py_upper(text(v)));
}

Value f_items(Renderer& r, const Value& v, CallArgs& args) {
  bind(args, "items", {});
  if (v.is_undefined()) return Value::iterator({}, "generator");
  if (v.kind() != Value::Kind::kDict) fail("Can only get item pairs from a mapping.");
  List pairs;
  for (const auto& [k, item] : v.dict().items()) pairs.push_back(Value::tuple({Value::string(k), item}));
  r.step(pairs.size());
  return Value::iterator(std::move(pairs), "generator");
}

Value f_map(Renderer& r, const Value& v, CallArgs& args) {
  List out;
  if (args.positional.empty()) {
    Value attribute, fallback = Value::none();
    bool has_attribute = false;
    for (auto& [name, value] : args.keyword) {
      if (name == "attribute") {
        attribute = value, has_attribute = true;
      } else if (name == "default") {
        fallback = value;
      } else {
        fail("Unexpected keyword argument " + py_repr_string(name));
      }
    }
    if (!has_attribute) fail("map requires a filter argument");
    if (!truthy(v)) return Value::iterator({}, "generator");
    for (const Value& item : items_of(r, v))
      out.push_back(get_attribute(r, item, attribute, fallback.is_none() ? nullptr : &fallback));
  } else {
    if (!args.positional[0].is_string()) fail("map requires a filter name");
    const std::string name = args.positional[0].str();
    CallArgs rest{List(args.positional.begin() + 1, args.positional.end()), args.keyword};
    if (!truthy(v)) return Value::iterator({}, "generator");
    for (const Value& item : items_of(r, v)) {
      CallArgs each = rest;
      out.push_back(r.filter(name, item, each));
    }
  }
  return Value::iterator(std::move(out), "generator");
}

// min/max: the first smallest or largest item by the (case-folded) attribute.
Value min_or_max(Renderer& r, const Value& v, CallArgs& args, bool want_max) {
  const auto a = bind(args, want_max ? "max" : "min",
                      {{"case_sensitive", Value::boolean(false)}, {"attribute", Value::none()}});
  const List items = items_of(r, v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key = [&](const Value& item) {
    const Value k = get_attribute(r, item, a[1]);
    return truthy(a[0]) ? k : lower_if_string(k);
  };
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = key(items[i]);
    if (compare(k, best_key, want_max ? ">" : "<") == (want_max ? 1 : -1)) best = i, best_key = std::move(k);
  }
  return items[best];
}
Value f_max(Renderer& r, const Value& v, CallArgs& args) { return min_or_max(r, v, args, true); }
Value f_min(Renderer& r, const Value& v, CallArgs& args) { return min_or_max(r, v, args, false); }

// select / reject / selectattr / rejectattr.
Value select_or_reject(Renderer& r, const Value& v, CallArgs& args, bool keep_if, bool lookup_attr) {
  if (!truthy(v)) return Value::iterator({}, "generator");
  size_t off = 0;
  Value attr = Value::none();
  if (lookup_attr) {
    if (args.positional.empty()) fail("Missing parameter for attribute name");
    attr = args.positional[0];
    off = 1;
  }
  const bool has_test = args.positional.size() > off;
  const std::string test = has_test && args.positional[off].is_string() ? args.positional[off].str() : "";
  if (has_test && !args.positional[off].is_string()) fail("test name must be a string");
  CallArgs rest{List(args.positional.begin() + static_cast<std::ptrdiff_t>(std::min(args.positional.size(), off + 1)),
                     args.positional.end()),
                args.keyword};
  List out;
  for (const Value& item : items_of(r, v)) {
    const Value x = lookup_attr ? get_attribute(r, item, attr) : item;
    bool ok;
    if (has_test) {
      CallArgs each = rest;
      ok = r.test(test, x, each);
    } else {
      ok = truthy(x);
    }
    if (ok == keep_if) out.push_back(item);
  }
  return Value::iterator(std::move(out), "generator");
}
Value f_select(Renderer& r, const Value& v, CallArgs& a) { return select_or_reject(r, v, a, true, false); }
Value f_reject(Renderer& r, const Value& v, CallArgs& a) { return select_or_reject(r, v, a, false, false); }
Value f_selectattr(Renderer& r, const Value& v, CallArgs& a) { return select_or_reject(r, v, a, true, true); }
Value f_rejectattr(Renderer& r, const Value& v, CallArgs& a) { return select_or_reject(r, v, a, false, true); }

Value f_replace(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "replace", {{"old", Value(), true}, {"new", Value(), true}, {"count", Value::none()}});
  const int64_t count = a[2].is_none() ? -1 : int_arg(a[2], "count");
  const std::string s = text(v), old = text(a[0]), repl = text(a[1]);
  if (repl.size() > old.size()) {  // bound the result before building it
    const size_t n = old.empty() ? count_code_points(s) + 1 : s.size() / old.size();
    r.check_size(s.size() + n * (repl.size() - old.size()));
  }
  return Value::string(py_replace(s, old, repl, count));
}

Value f_reverse(Renderer& r, const Value& v, CallArgs& args) {
  bind(args, "reverse", {});
  if (v.is_string()) {
    std::u32string u = decode_utf8(v.str());
    std::reverse(u.begin(), u.end());
    return Value::string(encode_utf8(u));
  }
  List items = items_of(r, v);
  std::reverse(items.begin(), items.end());
  // reversed() gives an iterator; a generator has none, so jinja2 builds a list instead.
  if (v.kind() == Value::Kind::kIterator) return Value::list(std::move(items));
  return Value::iterator(std::move(items), v.kind() == Value::Kind::kDict ? "dict_reversekeyiterator"
                                                                          : "list_reverseiterator");
}

// Python's round(x, n): correctly rounded, ties to even on the exact binary value.
double round_half_even(double x, int64_t n) {
  if (!std::isfinite(x)) return x;
  if (n == 0) return std::nearbyint(x);
  if (n > 0) {
    if (n > 330) return x;
    char buf[512];
    const auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::fixed, static_cast<int>(n));
    double y = 0;
    std::from_chars(buf, res.ptr, y);
    return y == 0 ? std::copysign(0.0, x) : y;
  }
  if (n < -330) return std::copysign(0.0, x);
  const double p = std::pow(10.0, static_cast<double>(-n));
  return std::nearbyint(x / p) * p;
}

Value f_round(Renderer&, const Value& v, CallArgs& args) {
  const auto a = bind(args, "round", {{"precision", Value::integer(0)}, {"method", Value::string("common")}});
  const std::string method = a[1].is_string() ? a[1].str() : "";
  if (method != "common" && method != "ceil" && method != "floor") fail("method must be common, ceil or floor");
  if (v.is_undefined()) fail_undefined(v);
  if (!v.is_number()) fail("type " + type_name(v) + " doesn't define __round__ method");
  const int64_t n = int_arg(a[0], "precision");
  if (method == "common") {
    if (v.is_int()) {
      if (n >= 0) return Value::integer(v.as_int());
      return Value::integer(static_cast<int64_t>(round_half_even(static_cast<double>(v.as_int()), n)));
    }
    return Value::number(round_half_even(v.as_double(), n));
  }
  const double p = std::pow(10.0, static_cast<double>(n));
  const double scaled = v.as_double() * p;
  return Value::number((method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) / p);
}

Value f_safe(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "safe", {});
  return v.is_markup() ? v : Value::markup(text(v));
}

Value f_sort(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "sort", {{"reverse", Value::boolean(false)}, {"case_sensitive", Value::boolean(false)},
                                     {"attribute", Value::none()}});
  List items = items_of(r, v);
  std::vector<Value> attrs;  // "a,b" sorts by a, then b
  if (a[2].is_string()) {
    for (const std::string& part : py_split(a[2].str(), &kComma, -1))
      attrs.push_back(Value::string(part));
  } else if (!a[2].is_none()) {
    attrs.push_back(a[2]);
  }
  auto key = [&](const Value& item) {
    if (attrs.size() <= 1) {
      const Value k = get_attribute(r, item, attrs.empty() ? Value::none() : attrs[0]);
      return truthy(a[1]) ? k : lower_if_string(k);
    }
    List ks;
    for (const Value& at : attrs) {
      const Value k = get_attribute(r, item, at);
      ks.push_back(truthy(a[1]) ? k : lower_if_string(k));
    }
    return Value::list(std::move(ks));
  };
  List keys;
  for (const Value& item : items) keys.push_back(key(item));
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  r.step(items.size() * (1 + static_cast<uint64_t>(std::log2(items.size() + 1))));
  const bool reverse = truthy(a[0]);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return reverse ? compare(keys[y], keys[x], "<") == -1 : compare(keys[x], keys[y], "<") == -1;
  });
  List out;
  for (size_t i : order) out.push_back(items[i]);
  return Value::list(std::move(out));
}

Value f_string(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "string", {});
  return v.is_string() ? v : Value::string(to_str(v));
}

Value f_sum(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "sum", {{"attribute", Value::none()}, {"start", Value::integer(0)}});
  Value total = a[1];
  for (const Value& item : items_of(r, v)) total = binary_op(r, "+", total, get_attribute(r, item, a[0]));
  return total;
}

// jinja2's title: capitalize each run after "-", whitespace, "(", "{", "[" or "<".
Value f_title(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "title", {});
  const std::u32string u = decode_utf8(text(v));
  auto is_sep = [](char32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || is_py_space(c); };
  std::string out;
  for (size_t i = 0; i < u.size(); ++i) {
    std::string one;
    append_utf8(one, u[i]);
    const bool starts_item = i == 0 || is_sep(u[i]) != is_sep(u[i - 1]);
    out += starts_item ? py_upper(one) : py_lower(one);
  }
  return Value::string(std::move(out));
}

// transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
Value f_tojson(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "tojson", {{"ensure_ascii", Value::boolean(false)}, {"indent", Value::none()},
                                       {"separators", Value::none()}, {"sort_keys", Value::boolean(false)}});
  JsonStyle style;
  style.ensure_ascii = truthy(a[0]);
  style.sort_keys = truthy(a[3]);
  if (!a[1].is_none()) {
    style.has_indent = true;
    if (a[1].is_string()) {
      style.indent = a[1].str();
    } else {
      const int64_t n = int_arg(a[1], "indent");
      if (n > 0) {
        r.check_size(static_cast<size_t>(n));
        style.indent.assign(static_cast<size_t>(n), ' ');
      }
    }
    style.item_separator = ",";
  }
  if (!a[2].is_none()) {
    if (!a[2].is_sequence() || a[2].items().size() != 2 || !a[2].items()[0].is_string() ||
        !a[2].items()[1].is_string())
      fail("separators must be a pair of strings");
    style.item_separator = a[2].items()[0].str();
    style.key_separator = a[2].items()[1].str();
  }
  std::string out;
  dump_json(out, v, style);
  r.check_size(out.size());
  return Value::string(std::move(out));
}

Value f_trim(Renderer&, const Value& v, CallArgs& args) {
  const auto a = bind(args, "trim", {{"chars", Value::none()}});
  if (a[0].is_none()) return Value::string(py_strip(text(v), nullptr, true, true));
  if (!a[0].is_string()) fail("strip arg must be None or str");
  return Value::string(py_strip(text(v), &a[0].str(), true, true));
}

Value f_truncate(Renderer&, const Value& v, CallArgs& args) {
  const auto a = bind(args, "truncate", {{"length", Value::integer(255)}, {"killwords", Value::boolean(false)},
                                         {"end", Value::string("...")}, {"leeway", Value::integer(5)}});
  const std::u32string s = decode_utf8(text(v));
  const std::u32string end = decode_utf8(text(a[2]));
  const int64_t length = int_arg(a[0], "length"), leeway = a[3].is_none() ? 5 : int_arg(a[3], "leeway");
  if (length < static_cast<int64_t>(end.size())) fail("expected length >= " + std::to_string(end.size()));
  if (leeway < 0) fail("expected leeway >= 0");
  if (static_cast<int64_t>(s.size()) <= length + leeway) return Value::string(text(v));
  std::u32string head = s.substr(0, static_cast<size_t>(length) - end.size());
  if (!truthy(a[1])) {
    const size_t space = head.rfind(U' ');
    if (space != std::u32string::npos) head.resize(space);
  }
  return Value::string(encode_utf8(head + end));
}

Value f_unique(Renderer& r, const Value& v, CallArgs& args) {
  const auto a = bind(args, "unique", {{"case_sensitive", Value::boolean(false)}, {"attribute", Value::none()}});
  List seen, out;
  for (const Value& item : items_of(r, v)) {
    Value key = get_attribute(r, item, a[1]);
    if (!truthy(a[0])) key = lower_if_string(key);
    if (key.kind() == Value::Kind::kList || key.kind() == Value::Kind::kDict)
      fail("unhashable type: '" + type_name(key) + "'");
    r.step(seen.size() / 64);
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, key); })) {
      seen.push_back(key);
      out.push_back(item);
    }
  }
  return Value::iterator(std::move(out), "generator");
}

// Python's \w on code points: letters, digits and underscore (non-ASCII letters are
// taken to be everything outside whitespace and the common punctuation blocks).
bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (is_py_space(c) || (c >= 0x80 && c <= 0xBF && c != 0xAA && c != 0xB2 && c != 0xB3 && c != 0xB5 && c != 0xB9 &&
                         c != 0xBA && c != 0xBC && c != 0xBD && c != 0xBE))
    return false;
  if (c == 0xD7 || c == 0xF7) return false;
  if ((c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) || (c >= 0xFF00 && c <= 0xFF0F) ||
      (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0x1F000 && c <= 0x1FAFF))
    return false;
  return true;
}

Value f_wordcount(Renderer&, const Value& v, CallArgs& args) {
  bind(args, "wordcount", {});
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : decode_utf8(text(v))) {
    const bool w = is_word_char(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}

struct Entry {
  const char* name;
  BuiltinFn fn;  // null: jinja2 has it, this engine does not
};

const Entry kFilters[] = {
    {"abs", f_abs},           {"attr", f_attr},         {"batch", nullptr},         {"capitalize", f_capitalize},
    {"center", f_center},     {"count", f_length},      {"d", f_default},           {"default", f_default},
    {"dictsort", f_dictsort}, {"e", f_escape},          {"escape", f_escape},       {"filesizeformat", nullptr},
    {"first", f_first},       {"float", f_float},       {"forceescape", f_forceescape},  {"format", nullptr},
    {"groupby", nullptr},     {"indent", f_indent},     {"int", f_int},             {"join", f_join},
    {"last", f_last},         {"length", f_length},     {"list", f_list},           {"lower", f_lower},
    {"items", f_items},       {"map", f_map},           {"min", f_min},             {"max", f_max},
    {"pprint", nullptr},      {"random", nullptr},      {"reject", f_reject},       {"rejectattr", f_rejectattr},
    {"replace", f_replace},   {"reverse", f_reverse},   {"round", f_round},         {"safe", f_safe},
    {"select", f_select},     {"selectattr", f_selectattr}, {"slice", nullptr},     {"sort", f_sort},
    {"string", f_string},     {"striptags", nullptr},   {"sum", f_sum},             {"title", f_title},
    {"trim", f_trim},         {"truncate", f_truncate}, {"unique", f_unique},       {"upper", f_upper},
    {"urlencode", nullptr},   {"urlize", nullptr},      {"wordcount", f_wordcount}, {"wordwrap", nullptr},
    {"xmlattr", nullptr},     {"tojson", f_tojson},
};

}  // namespace

BuiltinFn find_filter(std::string_view name, bool* known) {
  for (const Entry& e : kFilters) {
    if (name == e.name) {
      *known = true;
      return e.fn;
    }
  }
  *known = false;
  return nullptr;
}

}  // namespace peft::jinja
