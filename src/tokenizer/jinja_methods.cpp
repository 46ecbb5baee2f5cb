// The globals transformers gives chat templates, method lookup (the methods of dict
// and list are here, str's in jinja_str_methods.cpp), and slicing.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <locale.h>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_text.h"

namespace peft::jinja {

namespace {

using K = Value::Kind;

bool one_of(const std::string& name, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

// Python's attribute names (without dunders) of dict and list, and the ones that
// would modify them, which the sandbox refuses.
const std::initializer_list<const char*> kDictMethods = {"clear", "copy", "fromkeys", "get", "items", "keys",
                                                         "pop", "popitem", "setdefault", "update", "values"};
const std::initializer_list<const char*> kDictMutators = {"clear", "pop", "popitem", "setdefault", "update"};
const std::initializer_list<const char*> kListMethods = {"append", "clear", "copy", "count", "extend", "index",
                                                         "insert", "pop", "remove", "reverse", "sort"};
const std::initializer_list<const char*> kListMutators = {"append", "clear", "extend", "insert", "pop",
                                                          "remove", "reverse", "sort"};

Value bound(const Value& self, const std::string& name) {
  return Value::callable({Callable::Kind::kMethod, name, std::make_shared<const Value>(self)});
}

// The sandbox's answer for a method that would modify a list or dict.
Value unsafe(const Value& self, const std::string& name) {
  return Value::undefined("access to attribute " + py_repr_string(name) + " of " + py_repr_string(type_name(self)) +
                          " object is unsafe.");
}

const std::string& str_arg(const Value& v, const char* fn) {
  if (!v.is_string()) fail(std::string(fn) + "() argument must be str, not " + type_name(v));
  return v.str();
}

Value dict_method(Renderer& r, const Value& self, const std::string& name, CallArgs& args) {
  const Dict& d = self.dict();
  if (name == "get") {
    const auto a = bind(args, "get", {{"key", Value(), true}, {"default", Value::none()}});
    if (a[0].kind() == K::kList || a[0].kind() == K::kDict) fail("unhashable type: '" + type_name(a[0]) + "'");
    const Value* v = a[0].is_string() ? d.find(a[0].str()) : nullptr;
    return v ? *v : a[1];
  }
  if (name == "items" || name == "keys" || name == "values") {
    // dict views; lists of the same items (a view is not indexable, which templates
    // never rely on).
    bind(args, name.c_str(), {});
    List out;
    for (const auto& [k, v] : d.items()) {
      if (name == "items") {
        out.push_back(Value::tuple({Value::string(k), v}));
      } else {
        out.push_back(name == "keys" ? Value::string(k) : v);
      }
    }
    r.step(out.size());
    return Value::list(std::move(out));
  }
  if (name == "copy") {
    bind(args, "copy", {});
    return self;
  }
  fail("unsupported method 'dict." + name + "'");
}

Value list_method(Renderer& r, const Value& self, const std::string& name, CallArgs& args) {
  const List& items = self.items();
  if (name == "count" || name == "index") {
    const Value x = bind(args, name.c_str(), {{"value", Value(), true}})[0];
    r.step(items.size());
    int64_t n = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!equals(items[i], x)) continue;
      if (name == "index") return Value::integer(static_cast<int64_t>(i));
      ++n;
    }
    if (name == "index") fail(to_repr(x) + " is not in " + type_name(self));
    return Value::integer(n);
  }
  if (name == "copy") {
    bind(args, "copy", {});
    return Value::list(items);
  }
  fail("unsupported method '" + type_name(self) + "." + name + "'");
}

// dict(*args, **kwargs) and namespace(...): a mapping or (key, value) pairs, then keywords.
Dict dict_from_args(Renderer& r, CallArgs& args, const char* fn) {
  if (args.positional.size() > 1)
    fail(std::string(fn) + " expected at most 1 argument, got " + std::to_string(args.positional.size()));
  Dict d;
  if (!args.positional.empty()) {
    const Value& src = args.positional[0];
    if (src.kind() == K::kDict) {
      d = src.dict();
    } else if (src.kind() == K::kNamespace) {
      fail("'Namespace' object is not iterable");
    } else {
      for (const Value& pair : to_list(src)) {
        r.step();
        const List kv = to_list(pair);
        if (kv.size() != 2) fail("dictionary update sequence element has length " + std::to_string(kv.size()) + "; 2 is required");
        if (!kv[0].is_string()) fail("unsupported: dict keys that are not strings (" + type_name(kv[0]) + ")");
        d.set(kv[0].str(), kv[1]);
      }
    }
  }
  for (auto& [k, v] : args.keyword) d.set(k, v);
  return d;
}

Value range(Renderer& r, CallArgs& args) {
  if (!args.keyword.empty()) fail("range() takes no keyword arguments");
  const List& a = args.positional;
  if (a.empty() || a.size() > 3) fail("range expected at most 3 arguments, got " + std::to_string(a.size()));
  for (const Value& v : a)
    if (!v.is_int()) fail("'" + type_name(v) + "' object cannot be interpreted as an integer");
  const int64_t start = a.size() == 1 ? 0 : a[0].as_int();
  const int64_t stop = a.size() == 1 ? a[0].as_int() : a[1].as_int();
  const int64_t step = a.size() == 3 ? a[2].as_int() : 1;
  if (step == 0) fail("range() arg 3 must not be zero");
  // The sandbox's safe_range refuses more than MAX_RANGE items.
  constexpr int64_t kMaxRange = 100000;
  const long double span = step > 0 ? static_cast<long double>(stop) - start : static_cast<long double>(start) - stop;
  const long double count = span <= 0 ? 0 : (span - 1) / (step > 0 ? step : -static_cast<long double>(step)) + 1;
  if (count > kMaxRange)
    fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" + std::to_string(kMaxRange) + ").");
  const auto n = static_cast<int64_t>(count);
  r.step(static_cast<uint64_t>(n));
  List out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(Value::integer(start + i * step));
  return Value::list(std::move(out));
}

// datetime.now().strftime(fmt): %f, %z and %Z (empty for a naive datetime) are Python's
// own; the rest is the C library's strftime in the C locale, as Python's default.
Value strftime_now(Renderer& r, CallArgs& args) {
  const Value fmt = bind(args, "strftime_now", {{"format", Value(), true}})[0];
  const std::string& f = str_arg(fmt, "strftime_now");
  std::tm tm{};
  long micros = 0;
  if (r.options().now) {
    tm = *r.options().now;
    std::tm copy = tm;
    timegm(&copy);  // fills in the weekday and day of the year
    tm.tm_wday = copy.tm_wday;
    tm.tm_yday = copy.tm_yday;
  } else {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    localtime_r(&t, &tm);
    micros = static_cast<long>(
        std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000);
  }
  std::string c_fmt;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == '%' && i + 1 < f.size()) {
      const char k = f[i + 1];
      if (k == 'f') {
        char buf[8];
        std::snprintf(buf, sizeof buf, "%06ld", micros);
        c_fmt += buf;
        ++i;
        continue;
      }
      if (k == 'z' || k == 'Z') {
        ++i;
        continue;
      }
      c_fmt += f[i];
      c_fmt += f[++i];
      continue;
    }
    c_fmt += f[i];
  }
  if (c_fmt.empty()) return Value::string("");
  static locale_t c_locale = newlocale(LC_ALL_MASK, "C", nullptr);
  std::string buf(64 + c_fmt.size() * 8, '\0');
  for (int tries = 0; tries < 8; ++tries, buf.resize(buf.size() * 4)) {
    r.check_size(buf.size());
    // A leading space tells an empty result from a buffer that was too small.
    const size_t n = strftime_l(buf.data(), buf.size(), (" " + c_fmt).c_str(), &tm, c_locale);
    if (n > 0) return Value::string(buf.substr(1, n - 1));
  }
  fail("strftime_now: result too long");
}

}  // namespace

bool is_global_function(const std::string& name) {
  return one_of(name, {"range", "namespace", "dict", "raise_exception", "strftime_now", "lipsum", "cycler", "joiner"});
}

Value call_global(Renderer& r, const std::string& name, CallArgs& args) {
  if (name == "raise_exception") {
    const Value msg = bind(args, "raise_exception", {{"message", Value(), true}})[0];
    throw Failure{msg.is_string() ? msg.str() : to_str(msg), true};
  }
  if (name == "range") return range(r, args);
  if (name == "namespace") return r.make_namespace(dict_from_args(r, args, "namespace"));
  if (name == "dict") return Value::dict(dict_from_args(r, args, "dict"));
  if (name == "strftime_now") return strftime_now(r, args);
  fail("unsupported function '" + name + "'");
}

std::optional<Value> find_method(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case K::kString:
      if (is_str_method(name)) return bound(obj, name);
      break;
    case K::kDict:
      if (one_of(name, kDictMutators)) return unsafe(obj, name);
      if (one_of(name, kDictMethods)) return bound(obj, name);
      break;
    case K::kList:
      if (one_of(name, kListMutators)) return unsafe(obj, name);
      if (one_of(name, kListMethods)) return bound(obj, name);
      break;
    case K::kTuple:
      if (name == "count" || name == "index") return bound(obj, name);
      break;
    default: break;
  }
  return std::nullopt;
}

Value call_method(Renderer& r, const Value& self, const std::string& name, CallArgs& args) {
  switch (self.kind()) {
    case K::kString: return call_str_method(r, self, name, args);
    case K::kDict: return dict_method(r, self, name, args);
    case K::kList:
    case K::kTuple: return list_method(r, self, name, args);
    case K::kLoop:
      if (name == "cycle") {
        if (!args.keyword.empty()) fail("cycle() takes no keyword arguments");
        if (args.positional.empty()) fail("no items for cycling given");
        const auto i = static_cast<size_t>(self.loop_info().index0) % args.positional.size();
        return args.positional[i];
      }
      fail("unsupported: loop." + name + "()");
    default: fail("unsupported method '" + type_name(self) + "." + name + "'");
  }
}

Value slice_value(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (!obj.is_string() && !obj.is_sequence()) return undefined_element(obj, Value::string("slice"));
  for (const Value* v : {&start, &stop, &step})
    if (!v->is_none() && !v->is_int()) fail("slice indices must be integers or None or have an __index__ method");
  const int64_t st = step.is_none() ? 1 : step.as_int();
  if (st == 0) fail("slice step cannot be zero");
  const bool ascii = obj.is_string() && is_ascii(obj.str());
  std::u32string cps;
  if (obj.is_string() && !ascii) cps = decode_utf8(obj.str());
  const int64_t n = obj.is_string() ? static_cast<int64_t>(ascii ? obj.str().size() : cps.size())
                                    : static_cast<int64_t>(obj.items().size());
  // PySlice_AdjustIndices.
  auto adjust = [&](const Value& v, int64_t dflt) {
    if (v.is_none()) return dflt;
    int64_t i = v.as_int();
    if (i < 0) {
      i += n;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= n) {
      i = st < 0 ? n - 1 : n;
    }
    return i;
  };
  const int64_t b = adjust(start, st < 0 ? n - 1 : 0);
  const int64_t e = adjust(stop, st < 0 ? -1 : n);
  std::vector<size_t> idx;
  if (st > 0) {
    for (int64_t i = b; i < e; i += st) idx.push_back(static_cast<size_t>(i));
  } else {
    for (int64_t i = b; i > e; i += st) idx.push_back(static_cast<size_t>(i));
  }
  if (obj.is_string()) {
    std::string out;
    for (size_t i : idx) {
      if (ascii) {
        out += obj.str()[i];
      } else {
        append_utf8(out, cps[i]);
      }
    }
    return Value::string(std::move(out));
  }
  List out;
  for (size_t i : idx) out.push_back(obj.items()[i]);
  return obj.kind() == K::kTuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

}  // namespace peft::jinja
