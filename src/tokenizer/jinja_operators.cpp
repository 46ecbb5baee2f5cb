// Python's arithmetic, membership and unary operators on template values.
//
// Integers are 64-bit: where Python would grow a big integer we fail instead of
// wrapping. Division, floor division and modulo follow Python's signs and rounding.
#include <cmath>
#include <limits>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_text.h"

namespace peft::jinja {

namespace {

using K = Value::Kind;

[[noreturn]] void bad_operands(const std::string& op, const Value& a, const Value& b) {
  fail("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
}

[[noreturn]] void overflow() { fail("unsupported: integer overflow (Python would use a big integer)"); }

int64_t add(int64_t a, int64_t b) {
  int64_t v;
  if (__builtin_add_overflow(a, b, &v)) overflow();
  return v;
}
int64_t sub(int64_t a, int64_t b) {
  int64_t v;
  if (__builtin_sub_overflow(a, b, &v)) overflow();
  return v;
}
int64_t mul(int64_t a, int64_t b) {
  int64_t v;
  if (__builtin_mul_overflow(a, b, &v)) overflow();
  return v;
}

Value same_sequence_kind(const Value& like, List items) {
  return like.kind() == K::kTuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
}

// str * n, list * n, tuple * n.
Value repeat(Renderer& r, const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? Value::string("") : same_sequence_kind(seq, {});
  const auto times = static_cast<uint64_t>(n);
  if (seq.is_string()) {
    const size_t unit = seq.str().size();
    r.check_size(unit != 0 && times > std::numeric_limits<size_t>::max() / unit ? std::numeric_limits<size_t>::max()
                                                                              : unit * times);
    std::string out;
    out.reserve(unit * times);
    for (uint64_t i = 0; i < times; ++i) out += seq.str();
    return Value::string(std::move(out));
  }
  const size_t unit = seq.items().size();
  const uint64_t max = r.options().limits.max_steps;
  if (unit != 0 && times > max / unit) fail("unsupported: a list of more than " + std::to_string(max) + " items");
  charge(unit * times);  // before building it
  List out;
  for (uint64_t i = 0; i < times; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return same_sequence_kind(seq, std::move(out));
}

Value plus(Renderer& r, const Value& a, const Value& b) {
  if (a.is_int() && b.is_int()) return Value::integer(add(a.as_int(), b.as_int()));
  if (a.is_number() && b.is_number()) return Value::number(a.as_double() + b.as_double());
  if (a.is_string() && b.is_string()) {
    r.check_size(a.str().size() + b.str().size());
    if (!a.is_markup() && !b.is_markup()) return Value::string(a.str() + b.str());
    // Markup's + (and, as a str subclass, its reflected +) escapes the plain operand.
    const std::string x = a.is_markup() ? a.str() : html_escape(a.str());
    const std::string y = b.is_markup() ? b.str() : html_escape(b.str());
    r.check_size(x.size() + y.size());
    return Value::markup(x + y);
  }
  if (a.is_sequence() && a.kind() == b.kind()) {
    List out = a.items();
    out.insert(out.end(), b.items().begin(), b.items().end());
    return same_sequence_kind(a, std::move(out));
  }
  if (a.is_string() || a.is_sequence())
    fail("can only concatenate " + type_name(a) + " (not \"" + type_name(b) + "\") to " + type_name(a));
  bad_operands("+", a, b);
}

Value times(Renderer& r, const Value& a, const Value& b) {
  if (a.is_int() && b.is_int()) return Value::integer(mul(a.as_int(), b.as_int()));
  if (a.is_number() && b.is_number()) return Value::number(a.as_double() * b.as_double());
  if ((a.is_string() || a.is_sequence()) && b.is_int()) return repeat(r, a, b.as_int());
  if ((b.is_string() || b.is_sequence()) && a.is_int()) return repeat(r, b, a.as_int());
  if (a.is_string() || a.is_sequence() || b.is_string() || b.is_sequence())
    fail("can't multiply sequence by non-int of type '" + type_name(a.is_string() || a.is_sequence() ? b : a) + "'");
  bad_operands("*", a, b);
}

Value divide(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) bad_operands("/", a, b);
  if (b.as_double() == 0) fail("division by zero");
  return Value::number(a.as_double() / b.as_double());
}

// Python's float floor division and modulo (the result of % takes the divisor's sign).
void float_divmod(double a, double b, double* div, double* mod) {
  double m = std::fmod(a, b);
  double d = (a - m) / b;
  if (m != 0) {
    if ((b < 0) != (m < 0)) {
      m += b;
      d -= 1.0;
    }
  } else {
    m = std::copysign(0.0, b);
  }
  if (d != 0) {
    double f = std::floor(d);
    if (d - f > 0.5) f += 1.0;
    d = f;
  } else {
    d = std::copysign(0.0, a / b);
  }
  *div = d;
  *mod = m;
}

// a // b and a % b.
Value floor_divmod(const std::string& op, const Value& a, const Value& b) {
  if (a.is_string() && op == "%") fail("unsupported: printf-style string formatting ('%' on a string)");
  if (!a.is_number() || !b.is_number()) bad_operands(op, a, b);
  if (a.is_int() && b.is_int()) {
    const int64_t x = a.as_int(), y = b.as_int();
    if (y == 0) fail("integer division or modulo by zero");
    if (x == std::numeric_limits<int64_t>::min() && y == -1) overflow();
    int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) m += y, q -= 1;
    return Value::integer(op == "//" ? q : m);
  }
  if (b.as_double() == 0) fail(op == "//" ? "float floor division by zero" : "float modulo");
  double d, m;
  float_divmod(a.as_double(), b.as_double(), &d, &m);
  return Value::number(op == "//" ? d : m);
}

Value power(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) bad_operands("** or pow()", a, b);
  if (a.is_int() && b.is_int() && b.as_int() >= 0) {
    int64_t result = 1, base = a.as_int();
    for (int64_t e = b.as_int(); e > 0; e >>= 1) {
      if (e & 1) result = mul(result, base);
      if (e > 1) base = mul(base, base);
    }
    return Value::integer(result);
  }
  const double x = a.as_double(), y = b.as_double();
  if (x == 0 && y < 0) fail("0.0 cannot be raised to a negative power");
  if (x < 0 && y != std::floor(y)) fail("unsupported: complex result of a negative number raised to a fraction");
  return Value::number(std::pow(x, y));
}

}  // namespace

Value binary_op(Renderer& r, const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (op == "+") return plus(r, a, b);
  if (op == "-") {
    if (a.is_int() && b.is_int()) return Value::integer(sub(a.as_int(), b.as_int()));
    if (a.is_number() && b.is_number()) return Value::number(a.as_double() - b.as_double());
    bad_operands("-", a, b);
  }
  if (op == "*") return times(r, a, b);
  if (op == "/") return divide(a, b);
  if (op == "//" || op == "%") return floor_divmod(op, a, b);
  if (op == "**") return power(a, b);
  fail("unsupported operator '" + op + "'");
}

Value unary_op(bool negate, const Value& v) {
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_int()) return Value::integer(negate ? sub(0, v.as_int()) : v.as_int());
  if (v.kind() == K::kFloat) return Value::number(negate ? -v.as_double() : v.as_double());
  fail(std::string("bad operand type for unary ") + (negate ? "-" : "+") + ": '" + type_name(v) + "'");
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case K::kString:
      if (!item.is_string()) fail("'in <string>' requires string as left operand, not " + type_name(item));
      charge_bytes(container.str().size());
      return container.str().find(item.str()) != std::string::npos;
    case K::kList:
    case K::kTuple:
      for (const Value& e : container.items())
        if (equals(e, item)) return true;
      return false;
    case K::kDict:
      if (item.kind() == K::kList || item.kind() == K::kDict) fail("unhashable type: '" + type_name(item) + "'");
      return item.is_string() && container.dict().find(item.str()) != nullptr;
    case K::kUndefined: return false;  // iterating Undefined yields nothing
    case K::kIterator: {
      Value e;
      while (container.take_next(&e))
        if (equals(e, item)) return true;
      return false;
    }
    default: fail("argument of type '" + type_name(container) + "' is not iterable");
  }
}

}  // namespace peft::jinja
