// Values of the Jinja engine, with Python's semantics.
//
// A template sees Python objects: str, int, float, bool, None, list, tuple, dict, and
// jinja2's own Undefined, Namespace and LoopContext, plus the generators that filters
// such as selectattr return (always true, no len(), consumed by iteration). Lists and
// dicts are immutable here (the sandbox forbids mutating them); namespaces and
// generators are shared mutable state, as in Python. Strings are immutable and shared
// too, so copying any Value is cheap.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/jinja_budget.h"

namespace peft::jinja {

class Value;
class Dict;
struct Scope;
using List = std::vector<Value>;

struct LoopInfo {  // the `loop` variable of one iteration
  int64_t index0 = 0;
  std::shared_ptr<const std::vector<Value>> items;  // everything the loop iterates over
};

struct Callable {
  enum class Kind : uint8_t { kBuiltin, kMethod, kMacro, kCaller };
  Kind kind;
  std::string name;                 // function, method or macro name
  std::shared_ptr<const Value> self;  // kMethod: the object the method is bound to
  const void* node = nullptr;       // kMacro, kCaller: the ast::Node defining it
  std::shared_ptr<Scope> scope;     // kMacro, kCaller: the scope it was defined in
};

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kTuple, kDict,
    kIterator, kNamespace, kLoop, kCallable,
  };

  // Undefined; `hint` is the UndefinedError message if it is used where a value is needed.
  Value() = default;
  static Value undefined(std::string hint);
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value number(double f);
  static Value string(std::string s);
  // markupsafe.Markup, what |safe and |e make: a str that + and |e don't escape again.
  static Value markup(std::string s);
  static Value list(List items);
  static Value tuple(List items);
  static Value dict(Dict d);
  static Value iterator(List items, const char* type_name);  // a one-shot generator
  static Value make_namespace(Dict attrs);
  static Value loop(LoopInfo info);
  static Value callable(Callable c);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_markup() const { return markup_; }
  bool is_int() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }  // Python bool is an int
  bool is_number() const { return is_int() || kind_ == Kind::kFloat; }
  bool is_sequence() const { return kind_ == Kind::kList || kind_ == Kind::kTuple; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::kBool ? b_ : i_; }
  double as_double() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(as_int()); }
  const std::string& str() const;             // kString
  const std::string& undefined_hint() const;  // kUndefined
  const List& items() const;                               // kList, kTuple
  const Dict& dict() const;                                // kDict
  Dict& ns() const;                                        // kNamespace: its attributes
  const LoopInfo& loop_info() const;
  const Callable& fn() const;
  // kIterator: the items not consumed yet, and consuming them.
  List take_remaining() const;
  bool take_next(Value* out) const;
  const char* iterator_type() const;
  // What `is` compares for objects with identity (namespaces, generators, functions).
  const void* identity() const { return p_.get(); }
  // Nesting of lists, tuples and dicts (1 for anything else); creating a value nested
  // deeper than kMaxNesting fails, so recursion over values is bounded.
  int depth() const { return depth_; }
  static constexpr int kMaxNesting = 1000;

 private:
  Kind kind_ = Kind::kUndefined;
  uint16_t depth_ = 1;
  bool markup_ = false;
  union {
    bool b_;
    int64_t i_;
    double f_ = 0;
  };
  std::shared_ptr<void> p_;  // the string (or hint), list, dict, namespace, loop, callable or generator
};

// A dict: string keys in insertion order, as Python's dict.
class Dict {
 public:
  using Item = std::pair<std::string, Value>;
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);  // in place if present, else appended
  const std::vector<Item>& items() const { return items_; }
  size_t size() const { return items_.size(); }

 private:
  size_t position(std::string_view key) const;  // size() if absent

  std::vector<Item> items_;
  std::unordered_map<std::string, size_t> index_;  // only once the dict is large
};

// Python semantics.
bool truthy(const Value& v);
std::string type_name(const Value& v);         // type(v).__name__
std::string object_type_repr(const Value& v);  // jinja2's "'dict object'" wording, unquoted
std::string to_str(const Value& v);            // str(v); Undefined prints as ""
std::string to_repr(const Value& v);           // repr(v)
bool equals(const Value& a, const Value& b);   // a == b
// a < b etc.: -1, 0 or 1; fails as Python's TypeError for unorderable operands.
int compare(const Value& a, const Value& b, const char* op);
// list(v): elements, dict keys, code points; consumes generators; Undefined is empty.
List to_list(const Value& v);
int64_t py_len(const Value& v);  // len(v)

// Raises the UndefinedError of `v` (which is undefined).
[[noreturn]] void fail_undefined(const Value& v);
// jinja2's Undefined for a missing attribute or item of `obj`.
Value undefined_attribute(const Value& obj, const std::string& name);
Value undefined_element(const Value& obj, const Value& key);

Value from_json(const nlohmann::ordered_json& j);

// json.dumps(v, ensure_ascii=, indent=, separators=, sort_keys=).
struct JsonStyle {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;  // one level
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
void dump_json(std::string& out, const Value& v, const JsonStyle& style, int level = 0);

}  // namespace peft::jinja
