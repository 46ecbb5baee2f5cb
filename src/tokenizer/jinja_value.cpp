#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <cmath>

#include "tokenizer/jinja_text.h"

namespace peft::jinja {

namespace {

struct IterState {
  List items;
  size_t pos = 0;
  const char* type_name;
};

struct Namespace {
  Dict attrs;
};

template <class T>
T& as(const std::shared_ptr<void>& p) {
  return *static_cast<T*>(p.get());
}

int nesting_of(int child_depth) {
  if (child_depth >= Value::kMaxNesting)
    fail("unsupported: values nested deeper than " + std::to_string(Value::kMaxNesting) + " levels");
  return child_depth + 1;
}

// Bounds recursion through namespaces, whose attributes can refer back to themselves.
class RecursionGuard {
 public:
  RecursionGuard() {
    if (++depth_ > Value::kMaxNesting + 16) {
      --depth_;
      fail("maximum recursion depth exceeded while printing or comparing a value");
    }
  }
  ~RecursionGuard() { --depth_; }

 private:
  static thread_local int depth_;
};
thread_local int RecursionGuard::depth_ = 0;

}  // namespace

Value Value::undefined(std::string hint) {
  Value v;
  v.p_ = std::make_shared<std::string>(std::move(hint));
  return v;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}

Value Value::number(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = f;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  check_string_size(s.size());
  charge_bytes(s.size());
  v.p_ = std::make_shared<std::string>(std::move(s));
  return v;
}

Value Value::markup(std::string s) {
  Value v = string(std::move(s));
  v.markup_ = true;
  return v;
}

Value Value::list(List items) {
  charge(items.size());
  Value v;
  v.kind_ = Kind::kList;
  int deepest = 0;
  for (const Value& e : items) deepest = std::max(deepest, e.depth());
  v.depth_ = static_cast<uint16_t>(nesting_of(deepest));
  v.p_ = std::make_shared<List>(std::move(items));
  return v;
}

Value Value::tuple(List items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::kTuple;
  return v;
}

Value Value::dict(Dict d) {
  Value v;
  v.kind_ = Kind::kDict;
  int deepest = 0;
  for (const auto& item : d.items()) deepest = std::max(deepest, item.second.depth());
  v.depth_ = static_cast<uint16_t>(nesting_of(deepest));
  v.p_ = std::make_shared<Dict>(std::move(d));
  return v;
}

Value Value::iterator(List items, const char* type_name) {
  Value v;
  v.kind_ = Kind::kIterator;
  v.p_ = std::make_shared<IterState>(IterState{std::move(items), 0, type_name});
  return v;
}

Value Value::make_namespace(Dict attrs) {
  Value v;
  v.kind_ = Kind::kNamespace;
  v.p_ = std::make_shared<Namespace>(Namespace{std::move(attrs)});
  return v;
}

Value Value::loop(LoopInfo info) {
  Value v;
  v.kind_ = Kind::kLoop;
  v.p_ = std::make_shared<LoopInfo>(std::move(info));
  return v;
}

Value Value::callable(Callable c) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.p_ = std::make_shared<Callable>(std::move(c));
  return v;
}

const std::string& Value::str() const { return as<std::string>(p_); }

const std::string& Value::undefined_hint() const {
  static const std::string kNone = "value is undefined";
  return p_ ? as<std::string>(p_) : kNone;
}

const List& Value::items() const { return as<List>(p_); }
const Dict& Value::dict() const { return as<Dict>(p_); }
Dict& Value::ns() const { return as<Namespace>(p_).attrs; }
const LoopInfo& Value::loop_info() const { return as<LoopInfo>(p_); }
const Callable& Value::fn() const { return as<Callable>(p_); }
const char* Value::iterator_type() const { return as<IterState>(p_).type_name; }

List Value::take_remaining() const {
  auto& it = as<IterState>(p_);
  List rest(it.items.begin() + static_cast<std::ptrdiff_t>(it.pos), it.items.end());
  it.pos = it.items.size();
  return rest;
}

bool Value::take_next(Value* out) const {
  auto& it = as<IterState>(p_);
  if (it.pos == it.items.size()) return false;
  *out = it.items[it.pos++];
  return true;
}

size_t Dict::position(std::string_view key) const {
  if (!index_.empty()) {
    const auto it = index_.find(std::string(key));
    return it == index_.end() ? items_.size() : it->second;
  }
  size_t i = 0;
  while (i < items_.size() && items_[i].first != key) ++i;
  return i;
}

const Value* Dict::find(std::string_view key) const {
  const size_t i = position(key);
  return i < items_.size() ? &items_[i].second : nullptr;
}

void Dict::set(const std::string& key, Value v) {
  if (const size_t i = position(key); i < items_.size()) {
    items_[i].second = std::move(v);
    return;
  }
  items_.emplace_back(key, std::move(v));
  constexpr size_t kIndexFrom = 16;  // linear search is faster below this
  if (items_.size() == kIndexFrom) {
    for (size_t i = 0; i < items_.size(); ++i) index_.emplace(items_[i].first, i);
  } else if (items_.size() > kIndexFrom) {
    index_.emplace(key, items_.size() - 1);
  }
}

bool truthy(const Value& v) {
  using K = Value::Kind;
  switch (v.kind()) {
    case K::kUndefined:
    case K::kNone: return false;
    case K::kBool: return v.as_bool();
    case K::kInt: return v.as_int() != 0;
    case K::kFloat: return v.as_double() != 0.0;
    case K::kString: return !v.str().empty();
    case K::kList:
    case K::kTuple: return !v.items().empty();
    case K::kDict: return v.dict().size() != 0;
    case K::kLoop: return !v.loop_info().items->empty();
    default: return true;  // generators, namespaces and functions are objects
  }
}

std::string type_name(const Value& v) {
  using K = Value::Kind;
  switch (v.kind()) {
    case K::kUndefined: return "Undefined";
    case K::kNone: return "NoneType";
    case K::kBool: return "bool";
    case K::kInt: return "int";
    case K::kFloat: return "float";
    case K::kString: return "str";
    case K::kList: return "list";
    case K::kTuple: return "tuple";
    case K::kDict: return "dict";
    case K::kIterator: return v.iterator_type();
    case K::kNamespace: return "Namespace";
    case K::kLoop: return "LoopContext";
    case K::kCallable:
      return v.fn().kind == Callable::Kind::kMacro || v.fn().kind == Callable::Kind::kCaller
                 ? "Macro"
                 : "builtin_function_or_method";
  }
  return "object";
}

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  return type_name(v) + " object";
}

namespace {

std::string join_repr(const List& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += to_repr(items[i]);
  }
  return out;
}

// Python compares int with float exactly; long double holds every int64 exactly.
long double as_long_double(const Value& v) {
  return v.is_int() ? static_cast<long double>(v.as_int()) : static_cast<long double>(v.as_double());
}

std::string dict_repr(const Dict& d) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : d.items()) {
    if (!first) out += ", ";
    first = false;
    out += py_repr_string(k) + ": " + to_repr(v);
  }
  return out + "}";
}

}  // namespace

std::string to_str(const Value& v) {
  using K = Value::Kind;
  RecursionGuard guard;
  switch (v.kind()) {
    case K::kUndefined: return "";
    case K::kNone: return "None";
    case K::kBool: return v.as_bool() ? "True" : "False";
    case K::kInt: return std::to_string(v.as_int());
    case K::kFloat: return py_float_repr(v.as_double());
    case K::kString: return v.str();
    case K::kList: return "[" + join_repr(v.items()) + "]";
    case K::kTuple: return "(" + join_repr(v.items()) + (v.items().size() == 1 ? ",)" : ")");
    case K::kDict: return dict_repr(v.dict());
    case K::kNamespace: return "<Namespace " + dict_repr(v.ns()) + ">";
    case K::kLoop:
      return "<LoopContext " + std::to_string(v.loop_info().index0 + 1) + "/" +
             std::to_string(v.loop_info().items->size()) + ">";
    case K::kCallable:
      if (v.fn().kind == Callable::Kind::kMacro) return "<Macro " + py_repr_string(v.fn().name) + ">";
      break;
    case K::kIterator: break;
  }
  // Python prints these with a memory address; no output could match.
  fail("unsupported: printing a " + type_name(v) + " object");
}

std::string to_repr(const Value& v) {
  if (v.is_undefined()) return "Undefined";
  if (v.is_markup()) return "Markup(" + py_repr_string(v.str()) + ")";
  if (v.is_string()) return py_repr_string(v.str());
  return to_str(v);
}

bool equals(const Value& a, const Value& b) {
  using K = Value::Kind;
  RecursionGuard guard;
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    const long double x = as_long_double(a), y = as_long_double(b);
    return x == y;
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kUndefined:
    case K::kNone: return true;
    case K::kString:
      charge_bytes(std::min(a.str().size(), b.str().size()));
      return a.str() == b.str();
    case K::kList:
    case K::kTuple: {
      const List &x = a.items(), &y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!equals(x[i], y[i])) return false;
      return true;
    }
    case K::kDict: {
      if (a.dict().size() != b.dict().size()) return false;
      for (const auto& [k, v] : a.dict().items()) {
        const Value* w = b.dict().find(k);
        if (!w || !equals(v, *w)) return false;
      }
      return true;
    }
    default: return a.identity() == b.identity();  // namespaces, loops, generators, functions
  }
}

int compare(const Value& a, const Value& b, const char* op) {
  using K = Value::Kind;
  RecursionGuard guard;
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
    const long double x = as_long_double(a), y = as_long_double(b);
    if (std::isnan(x) || std::isnan(y)) return 2;  // unordered: every comparison is false
    return x < y ? -1 : x > y;
  }
  if (a.is_string() && b.is_string()) {
    charge_bytes(std::min(a.str().size(), b.str().size()));
    const int c = a.str().compare(b.str());  // byte order of UTF-8 is code point order
    return c < 0 ? -1 : c > 0;
  }
  if ((a.kind() == K::kList || a.kind() == K::kTuple) && a.kind() == b.kind()) {
    const List &x = a.items(), &y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equals(x[i], y[i])) return compare(x[i], y[i], op);
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  fail(std::string("'") + op + "' not supported between instances of '" + type_name(a) + "' and '" +
       type_name(b) + "'");
}

List to_list(const Value& v) {
  using K = Value::Kind;
  switch (v.kind()) {
    case K::kUndefined: return {};
    case K::kList:
    case K::kTuple: return v.items();
    case K::kIterator: return v.take_remaining();
    case K::kDict: {
      List keys;
      keys.reserve(v.dict().size());
      for (const auto& item : v.dict().items()) keys.push_back(Value::string(item.first));
      return keys;
    }
    case K::kString: {
      List chars;
      std::string c;
      for (char32_t cp : decode_utf8(v.str())) {
        c.clear();
        append_utf8(c, cp);
        chars.push_back(Value::string(c));
      }
      return chars;
    }
    default: fail("'" + type_name(v) + "' object is not iterable");
  }
}

int64_t py_len(const Value& v) {
  using K = Value::Kind;
  switch (v.kind()) {
    case K::kUndefined: return 0;
    case K::kString: return static_cast<int64_t>(count_code_points(v.str()));
    case K::kList:
    case K::kTuple: return static_cast<int64_t>(v.items().size());
    case K::kDict: return static_cast<int64_t>(v.dict().size());
    case K::kLoop: return static_cast<int64_t>(v.loop_info().items->size());
    default: fail("object of type '" + type_name(v) + "' has no len()");
  }
}

void fail_undefined(const Value& v) { fail(v.undefined_hint()); }

Value undefined_attribute(const Value& obj, const std::string& name) {
  return Value::undefined("'" + object_type_repr(obj) + "' has no attribute " + py_repr_string(name));
}

Value undefined_element(const Value& obj, const Value& key) {
  if (key.is_string()) return undefined_attribute(obj, key.str());
  return Value::undefined(object_type_repr(obj) + " has no element " + to_repr(key));
}

Value from_json(const nlohmann::ordered_json& j) {
  using T = nlohmann::ordered_json::value_t;
  RecursionGuard guard;
  switch (j.type()) {
    case T::null: return Value::none();
    case T::boolean: return Value::boolean(j.get<bool>());
    case T::number_integer: return Value::integer(j.get<int64_t>());
    case T::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) fail("unsupported: integer " + std::to_string(u) + " in the context");
      return Value::integer(static_cast<int64_t>(u));
    }
    case T::number_float: return Value::number(j.get<double>());
    case T::string: return Value::string(j.get<std::string>());
    case T::array: {
      List items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::list(std::move(items));
    }
    case T::object: {
      Dict d;
      for (const auto& [k, e] : j.items()) d.set(k, from_json(e));
      return Value::dict(std::move(d));
    }
    default: fail("unsupported: binary data in the context");
  }
}

void dump_json(std::string& out, const Value& v, const JsonStyle& style, int level) {
  using K = Value::Kind;
  RecursionGuard guard;
  auto newline = [&](int lvl) {
    out += '\n';
    for (int i = 0; i < lvl; ++i) out += style.indent;
  };
  switch (v.kind()) {
    case K::kNone: out += "null"; return;
    case K::kBool: out += v.as_bool() ? "true" : "false"; return;
    case K::kInt: out += std::to_string(v.as_int()); return;
    case K::kFloat: {
      const double f = v.as_double();
      out += std::isnan(f) ? "NaN" : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity") : py_float_repr(f);
      return;
    }
    case K::kString: append_json_string(out, v.str(), style.ensure_ascii); return;
    case K::kList:
    case K::kTuple: {
      const List& items = v.items();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += style.item_separator;
        if (style.has_indent) newline(level + 1);
        dump_json(out, items[i], style, level + 1);
      }
      if (style.has_indent) newline(level);
      out += ']';
      return;
    }
    case K::kDict: {
      if (v.dict().size() == 0) {
        out += "{}";
        return;
      }
      std::vector<const Dict::Item*> items;
      for (const auto& item : v.dict().items()) items.push_back(&item);
      if (style.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += style.item_separator;
        if (style.has_indent) newline(level + 1);
        append_json_string(out, items[i]->first, style.ensure_ascii);
        out += style.key_separator;
        dump_json(out, items[i]->second, style, level + 1);
      }
      if (style.has_indent) newline(level);
      out += '}';
      return;
    }
    default: fail("Object of type " + type_name(v) + " is not JSON serializable");
  }
}

}  // namespace peft::jinja
