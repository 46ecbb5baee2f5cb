// jinja2's tests, the right-hand side of `is` (jinja2/tests.py).
#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_text.h"

namespace peft::jinja {

namespace {

using K = Value::Kind;

Value yes(bool b) { return Value::boolean(b); }

// The one argument of a comparison test (`x is eq 3`, `select('equalto', 3)`).
Value other(CallArgs& args, const char* name) { return bind(args, name, {{"other", Value(), true}})[0]; }

Value t_defined(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "defined", {});
  return yes(!v.is_undefined());
}
Value t_undefined(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "undefined", {});
  return yes(v.is_undefined());
}
Value t_none(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "none", {});
  return yes(v.is_none());
}
Value t_boolean(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "boolean", {});
  return yes(v.kind() == K::kBool);
}
Value t_false(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "false", {});
  return yes(v.kind() == K::kBool && !v.as_bool());
}
Value t_true(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "true", {});
  return yes(v.kind() == K::kBool && v.as_bool());
}
Value t_integer(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "integer", {});
  return yes(v.kind() == K::kInt);
}
Value t_float(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "float", {});
  return yes(v.kind() == K::kFloat);
}
Value t_number(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "number", {});
  return yes(v.is_number());
}
Value t_string(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "string", {});
  return yes(v.is_string());
}
Value t_mapping(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "mapping", {});
  return yes(v.kind() == K::kDict);
}
// len() and __getitem__: Undefined has both (its __getitem__ raises), a loop has no
// __getitem__, a generator neither.
Value t_sequence(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "sequence", {});
  return yes(v.is_string() || v.is_sequence() || v.kind() == K::kDict || v.is_undefined());
}
Value t_iterable(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "iterable", {});
  return yes(v.is_string() || v.is_sequence() || v.kind() == K::kDict || v.is_undefined() ||
             v.kind() == K::kIterator || v.kind() == K::kLoop);
}
Value t_callable(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "callable", {});
  return yes(v.kind() == K::kCallable);
}
// `is`: identity. None and the booleans are singletons; objects compare by identity.
Value t_sameas(Renderer&, const Value& v, CallArgs& a) {
  const Value o = other(a, "sameas");
  if (v.is_none() || o.is_none()) return yes(v.is_none() && o.is_none());
  if (v.kind() == K::kBool || o.kind() == K::kBool) return yes(v.kind() == o.kind() && v.as_bool() == o.as_bool());
  return yes(v.identity() != nullptr && v.identity() == o.identity());
}
Value t_escaped(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "escaped", {});
  return yes(v.is_markup());
}
Value t_in(Renderer&, const Value& v, CallArgs& a) {
  return yes(contains(bind(a, "in", {{"seq", Value(), true}})[0], v));
}
Value t_lower(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "lower", {});
  return yes(py_islower(v.is_string() ? v.str() : to_str(v)));
}
Value t_upper(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "upper", {});
  return yes(py_isupper(v.is_string() ? v.str() : to_str(v)));
}
Value t_odd(Renderer& r, const Value& v, CallArgs& a) {
  bind(a, "odd", {});
  return yes(equals(binary_op(r, "%", v, Value::integer(2)), Value::integer(1)));
}
Value t_even(Renderer& r, const Value& v, CallArgs& a) {
  bind(a, "even", {});
  return yes(equals(binary_op(r, "%", v, Value::integer(2)), Value::integer(0)));
}
Value t_divisibleby(Renderer& r, const Value& v, CallArgs& a) {
  const Value num = bind(a, "divisibleby", {{"num", Value(), true}})[0];
  return yes(equals(binary_op(r, "%", v, num), Value::integer(0)));
}
Value t_eq(Renderer&, const Value& v, CallArgs& a) { return yes(equals(v, other(a, "eq"))); }
Value t_ne(Renderer&, const Value& v, CallArgs& a) { return yes(!equals(v, other(a, "ne"))); }
Value t_gt(Renderer&, const Value& v, CallArgs& a) { return yes(compare(v, other(a, "gt"), ">") == 1); }
Value t_ge(Renderer&, const Value& v, CallArgs& a) {
  const int c = compare(v, other(a, "ge"), ">=");
  return yes(c == 1 || c == 0);
}
Value t_lt(Renderer&, const Value& v, CallArgs& a) { return yes(compare(v, other(a, "lt"), "<") == -1); }
Value t_le(Renderer&, const Value& v, CallArgs& a) {
  const int c = compare(v, other(a, "le"), "<=");
  return yes(c == -1 || c == 0);
}
Value t_filter(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "filter", {});
  bool known = false;
  return yes(v.is_string() && find_filter(v.str(), &known) && known);
}
Value t_test(Renderer&, const Value& v, CallArgs& a) {
  bind(a, "test", {});
  bool known = false;
  return yes(v.is_string() && find_test(v.str(), &known) && known);
}

struct Entry {
  const char* name;
  BuiltinFn fn;
};

const Entry kTests[] = {
    {"odd", t_odd},         {"even", t_even},       {"divisibleby", t_divisibleby}, {"defined", t_defined},
    {"undefined", t_undefined}, {"filter", t_filter}, {"test", t_test},           {"none", t_none},
    {"boolean", t_boolean}, {"false", t_false},     {"true", t_true},             {"integer", t_integer},
    {"float", t_float},     {"lower", t_lower},     {"upper", t_upper},           {"string", t_string},
    {"mapping", t_mapping}, {"number", t_number},   {"sequence", t_sequence},     {"iterable", t_iterable},
    {"callable", t_callable}, {"sameas", t_sameas}, {"escaped", t_escaped},       {"in", t_in},
    {"==", t_eq},           {"eq", t_eq},           {"equalto", t_eq},            {"!=", t_ne},
    {"ne", t_ne},           {">", t_gt},            {"gt", t_gt},                 {"greaterthan", t_gt},
    {"ge", t_ge},           {">=", t_ge},           {"<", t_lt},                  {"lt", t_lt},
    {"lessthan", t_lt},     {"<=", t_le},           {"le", t_le},
};

}  // namespace

BuiltinFn find_test(std::string_view name, bool* known) {
  for (const Entry& e : kTests) {
    if (name == e.name) {
      *known = true;
      return e.fn;
    }
  }
  *known = false;
  return nullptr;
}

}  // namespace peft::jinja
