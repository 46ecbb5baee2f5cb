#include "tokenizer/jinja_eval.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tokenizer/jinja_text.h"

namespace peft::jinja {

using ast::Expr;
using ast::ExprKind;
using ast::Node;
using ast::NodeKind;

const Value* Scope::find(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent.get()) {
    const auto it = s->vars.find(name);
    if (it != s->vars.end()) return &it->second;
  }
  return nullptr;
}

std::vector<Value> bind(CallArgs& args, const char* fn, std::initializer_list<Param> params) {
  std::vector<Value> out;
  std::vector<bool> given(params.size(), false);
  if (args.positional.size() > params.size())
    fail(std::string(fn) + "() takes at most " + std::to_string(params.size()) + " arguments (" +
         std::to_string(args.positional.size()) + " given)");
  for (const Param& p : params) out.push_back(p.fallback);
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = args.positional[i], given[i] = true;
  for (auto& [name, value] : args.keyword) {
    size_t i = 0;
    for (const Param& p : params) {
      if (name == p.name) break;
      ++i;
    }
    if (i == params.size()) fail(std::string(fn) + "() got an unexpected keyword argument '" + name + "'");
    if (given[i]) fail(std::string(fn) + "() got multiple values for argument '" + name + "'");
    out[i] = value, given[i] = true;
  }
  size_t i = 0;
  for (const Param& p : params) {
    if (p.required && !given[i]) fail(std::string(fn) + "() missing required argument '" + p.name + "'");
    ++i;
  }
  return out;
}

// Counts nested evaluation (expressions and macro calls) against JinjaLimits::max_depth.
struct Renderer::DepthGuard {
  explicit DepthGuard(Renderer& r) : r_(r) {
    if (++r_.depth_ > r_.options_.limits.max_depth) {
      --r_.depth_;
      fail("maximum recursion depth exceeded (nesting deeper than " +
           std::to_string(r_.options_.limits.max_depth) + ")");
    }
  }
  ~DepthGuard() { --r_.depth_; }
  Renderer& r_;
};

Renderer::Renderer(const ChatTemplate::Program& program, const RenderOptions& options)
    : program_(program), options_(options) {}

Renderer::~Renderer() {
  // A macro refers to the scope that holds it, and namespaces can hold themselves;
  // clearing both frees every cycle.
  for (auto& scope : macro_scopes_) scope->vars.clear();
  for (Value& ns : namespaces_) ns.ns() = Dict();
}

std::string Renderer::render(const nlohmann::ordered_json& context) {
  if (!context.is_object()) throw JinjaError(program_.where, 0, 0, "the render context must be a JSON object");
  Budget budget{0, options_.limits.max_steps, options_.limits.max_output_bytes};
  ActiveBudget active(&budget);
  scope_ = std::make_shared<Scope>();
  try {
    for (const auto& [name, value] : context.items()) scope_->vars[name] = from_json(value);
  } catch (const Failure& f) {
    throw JinjaError(program_.where, 0, 0, "context: " + f.message);
  }
  std::string out;
  exec(program_.body, out);
  return out;
}

void Renderer::step(uint64_t n) { charge(n); }

void Renderer::check_size(size_t bytes) const { check_string_size(bytes); }

void Renderer::append(std::string& out, std::string_view text) const {
  check_string_size(out.size() + text.size());
  charge_bytes(text.size());
  out.append(text);
}

Value Renderer::make_namespace(Dict attrs) {
  for (const auto& [name, value] : attrs.items()) {
    (void)value;
    if (!name.empty() && name[0] == '_')
      fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got " +
           py_repr_string(name) + ". Please rename the attribute.");
  }
  namespaces_.push_back(Value::make_namespace(std::move(attrs)));
  return namespaces_.back();
}

// ---- statements ----

Renderer::Flow Renderer::exec(const Body& body, std::string& out) {
  for (const auto& node : body) {
    const Flow flow = exec_node(*node, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Renderer::Flow Renderer::exec_node(const Node& node, std::string& out) {
  Flow flow = Flow::kNormal;
  try {
    switch (node.kind) {
      case NodeKind::kData: append(out, node.text); break;
      case NodeKind::kOutput: {
        const Value v = eval(*node.expr);
        append(out, v.is_string() ? v.str() : to_str(v));
        break;
      }
      case NodeKind::kIf: exec_if(node, out, flow); break;
      case NodeKind::kFor: flow = exec_for(node, out); break;
      case NodeKind::kSet: assign(node.target, eval(*node.expr)); break;
      case NodeKind::kSetBlock: {  // {% set x | filters %}body{% endset %}
        const Value text = Value::string(render_nested(node.body, flow));
        assign(node.target, node.expr ? eval_filter(*node.expr, &text) : text);
        break;
      }
      case NodeKind::kMacro:
        scope_->vars[node.text] = Value::callable({Callable::Kind::kMacro, node.text, nullptr, &node, scope_});
        macro_scopes_.push_back(scope_);
        break;
      case NodeKind::kCallBlock: exec_call_block(node, out); break;
      case NodeKind::kFilterBlock: {
        const Value text = Value::string(render_nested(node.body, flow));
        append(out, to_str(eval_filter(*node.expr, &text)));
        break;
      }
      case NodeKind::kBreak: return Flow::kBreak;
      case NodeKind::kContinue: return Flow::kContinue;
      case NodeKind::kScope: {
        CallArgs none;
        append(out, call_macro(Callable{Callable::Kind::kCaller, "caller", nullptr, &node, scope_}, none).str());
        break;
      }
    }
  } catch (const Failure& f) {
    if (f.raised) throw JinjaRaised(program_.where, node.pos.line, node.pos.col, f.message);
    throw JinjaError(program_.where, node.pos.line, node.pos.col, f.message);
  }
  return flow;
}

// The output of a block body rendered in a child scope (block set, filter blocks).
std::string Renderer::render_nested(const Body& body, Flow& flow) {
  auto saved = scope_;
  scope_ = std::make_shared<Scope>(Scope{saved, {}});
  std::string text;
  flow = exec(body, text);
  scope_ = saved;
  return text;
}

void Renderer::exec_if(const Node& node, std::string& out, Flow& flow) {
  for (const auto& [test, body] : node.branches) {
    if (truthy(eval(*test))) {
      flow = exec(body, out);
      return;
    }
  }
  flow = exec(node.else_body, out);
}

Renderer::Flow Renderer::exec_for(const Node& node, std::string& out) {
  const Value iterable = eval(*node.expr);
  auto items = std::make_shared<List>(to_list(iterable));
  auto outer = scope_;
  if (node.cond) {  // `for x in xs if cond` filters before the loop counts
    List kept;
    for (const Value& item : *items) {
      step();
      scope_ = std::make_shared<Scope>(Scope{outer, {}});
      assign(node.target, item);
      const bool keep = truthy(eval(*node.cond));
      scope_ = outer;
      if (keep) kept.push_back(item);
    }
    *items = std::move(kept);
  }
  if (items->empty()) {  // the else block belongs to the enclosing loop, if any
    scope_ = std::make_shared<Scope>(Scope{outer, {}});
    const Flow flow = exec(node.else_body, out);
    scope_ = outer;
    return flow;
  }
  std::shared_ptr<Scope> body;
  for (size_t i = 0; i < items->size(); ++i) {
    step();
    // A fresh scope per iteration; the last one is reused unless a macro kept it.
    if (body && body.use_count() == 1) {
      body->vars.clear();
    } else {
      body = std::make_shared<Scope>(Scope{outer, {}});
    }
    scope_ = body;
    assign(node.target, (*items)[i]);
    scope_->vars["loop"] = Value::loop({static_cast<int64_t>(i), items});
    Flow flow;
    try {
      flow = exec(node.body, out);
    } catch (...) {
      scope_ = outer;
      throw;
    }
    scope_ = outer;
    if (flow == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

void Renderer::exec_call_block(const Node& node, std::string& out) {
  const Expr& call = *node.expr;
  const Value fn = eval(*call.args[0]);
  CallArgs args = eval_args(call.call_args);
  args.keyword.emplace_back("caller", Value::callable({Callable::Kind::kCaller, "caller", nullptr, &node, scope_}));
  const Value v = this->call(fn, args);
  append(out, to_str(v));
}

void Renderer::assign(const ast::Target& target, const Value& value) {
  if (!target.attr.empty()) {
    const Value* ns = scope_->find(target.names[0]);
    if (!ns || ns->kind() != Value::Kind::kNamespace) fail("cannot assign attribute on non-namespace object");
    if (target.attr[0] == '_')
      fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got " +
           py_repr_string(target.attr) + ". Please rename the attribute.");
    ns->ns().set(target.attr, value);
    return;
  }
  if (!target.unpack) {
    scope_->vars[target.names[0]] = value;
    return;
  }
  const List parts = to_list(value);
  const size_t want = target.names.size();
  if (parts.size() < want)
    fail("not enough values to unpack (expected " + std::to_string(want) + ", got " + std::to_string(parts.size()) +
         ")");
  if (parts.size() > want) fail("too many values to unpack (expected " + std::to_string(want) + ")");
  for (size_t i = 0; i < want; ++i) scope_->vars[target.names[i]] = parts[i];
}

// ---- expressions ----

Value Renderer::eval(const Expr& e) {
  try {
    DepthGuard guard(*this);
    return eval_inner(e);
  } catch (const Failure& f) {
    if (f.raised) throw JinjaRaised(program_.where, e.pos.line, e.pos.col, f.message);
    throw JinjaError(program_.where, e.pos.line, e.pos.col, f.message);
  }
}

Value Renderer::eval_inner(const Expr& e) {
  switch (e.kind) {
    case ExprKind::kConst: return e.value;
    case ExprKind::kName: return eval_name(e);
    case ExprKind::kList:
    case ExprKind::kTuple:
    case ExprKind::kDict: return eval_display(e);
    case ExprKind::kGetattr: return getattr(eval(*e.args[0]), e.name);
    case ExprKind::kGetitem: return eval_subscript(e);
    case ExprKind::kSlice: fail("unsupported: a slice outside a subscript");
    case ExprKind::kCall: {
      const Value fn = eval(*e.args[0]);
      CallArgs args = eval_args(e.call_args);
      return call(fn, args);
    }
    case ExprKind::kFilter: return eval_filter(e, nullptr);
    case ExprKind::kTest: {
      const Value v = eval(*e.args[0]);
      CallArgs args = eval_args(e.call_args);
      if (!e.builtin) fail("unsupported test '" + e.name + "'");
      return e.builtin(*this, v, args);
    }
    case ExprKind::kNeg:
    case ExprKind::kPos: return unary_op(e.kind == ExprKind::kNeg, eval(*e.args[0]));
    case ExprKind::kNot: return Value::boolean(!truthy(eval(*e.args[0])));
    case ExprKind::kBinary: {
      const Value a = eval(*e.args[0]);
      return binary_op(*this, e.name, a, eval(*e.args[1]));
    }
    case ExprKind::kConcat: {
      std::string out;
      for (const auto& a : e.args) {
        const Value v = eval(*a);
        append(out, v.is_string() ? v.str() : to_str(v));
      }
      return Value::string(std::move(out));
    }
    case ExprKind::kAnd:
    case ExprKind::kOr: {  // Python's and/or give an operand, not a bool
      Value a = eval(*e.args[0]);
      return truthy(a) == (e.kind == ExprKind::kAnd) ? eval(*e.args[1]) : a;
    }
    case ExprKind::kCompare: return eval_compare(e);
    case ExprKind::kCondExpr:
      if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
      if (e.args[2]) return eval(*e.args[2]);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.pos.line) +
                              " evaluated to false and no else section was defined.");
  }
  fail("unsupported expression");
}

// List, tuple and dict displays.
Value Renderer::eval_display(const Expr& e) {
  if (e.kind == ExprKind::kDict) {
    Dict d;
    for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
      const Value key = eval(*e.args[i]);
      if (!key.is_string()) fail("unsupported: dict keys that are not strings (" + type_name(key) + ")");
      d.set(key.str(), eval(*e.args[i + 1]));
    }
    return Value::dict(std::move(d));
  }
  List items;
  items.reserve(e.args.size());
  for (const auto& a : e.args) items.push_back(eval(*a));
  return e.kind == ExprKind::kList ? Value::list(std::move(items)) : Value::tuple(std::move(items));
}

Value Renderer::eval_subscript(const Expr& e) {
  const Value obj = eval(*e.args[0]);
  const Expr& key = *e.args[1];
  if (key.kind != ExprKind::kSlice) return getitem(obj, eval(key));
  if (obj.is_undefined()) fail_undefined(obj);
  Value part[3];
  for (size_t i = 0; i < 3; ++i) part[i] = key.args[i] ? eval(*key.args[i]) : Value::none();
  return slice_value(obj, part[0], part[1], part[2]);
}

Value Renderer::eval_name(const Expr& e) {
  if (const Value* v = scope_->find(e.name)) return *v;
  if (is_global_function(e.name)) return Value::callable({Callable::Kind::kBuiltin, e.name});
  return Value::undefined(py_repr_string(e.name) + " is undefined");
}

Value Renderer::eval_compare(const Expr& e) {
  Value left = eval(*e.args[0]);
  for (size_t i = 0; i < e.ops.size(); ++i) {
    Value right = eval(*e.args[i + 1]);
    const std::string& op = e.ops[i];
    bool ok;
    if (op == "==") {
      ok = equals(left, right);
    } else if (op == "!=") {
      ok = !equals(left, right);
    } else if (op == "in") {
      ok = contains(right, left);
    } else if (op == "notin") {
      ok = !contains(right, left);
    } else {
      const int c = compare(left, right, op.c_str());
      ok = op == "<" ? c == -1 : op == "<=" ? (c == -1 || c == 0) : op == ">" ? c == 1 : (c == 1 || c == 0);
    }
    if (!ok) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

// A filter chain node; `input` replaces the innermost operand (filter blocks, set blocks).
Value Renderer::eval_filter(const Expr& e, const Value* input) {
  if (e.kind != ExprKind::kFilter) fail("expected a filter");
  Value v;
  if (e.args[0]) {
    v = e.args[0]->kind == ExprKind::kFilter && input ? eval_filter(*e.args[0], input) : eval(*e.args[0]);
  } else {
    v = *input;
  }
  CallArgs args = eval_args(e.call_args);
  if (!e.builtin) fail("unsupported filter '" + e.name + "'");
  try {
    return e.builtin(*this, v, args);
  } catch (const Failure& f) {
    if (f.raised) throw;
    throw JinjaError(program_.where, e.pos.line, e.pos.col, f.message);
  }
}

CallArgs Renderer::eval_args(const std::vector<ast::Arg>& args) {
  CallArgs out;
  for (const auto& a : args) {
    if (a.name.empty()) {
      out.positional.push_back(eval(*a.value));
    } else if (a.name == "*") {
      for (Value& v : to_list(eval(*a.value))) out.positional.push_back(std::move(v));
    } else if (a.name == "**") {
      const Value d = eval(*a.value);
      if (d.kind() != Value::Kind::kDict) fail("argument after ** must be a mapping, not " + type_name(d));
      for (const auto& [k, v] : d.dict().items()) out.keyword.emplace_back(k, v);
    } else {
      out.keyword.emplace_back(a.name, eval(*a.value));
    }
  }
  return out;
}

Value Renderer::getattr(const Value& obj, const std::string& name) {
  using K = Value::Kind;
  switch (obj.kind()) {
    case K::kUndefined: fail_undefined(obj);
    case K::kDict: {
      if (auto m = find_method(obj, name)) return *m;
      if (const Value* v = obj.dict().find(name)) return *v;
      return undefined_attribute(obj, name);
    }
    case K::kNamespace: {
      if (const Value* v = obj.ns().find(name)) return *v;
      return undefined_attribute(obj, name);
    }
    case K::kLoop: {
      const LoopInfo& l = obj.loop_info();
      const auto n = static_cast<int64_t>(l.items->size());
      if (name == "index") return Value::integer(l.index0 + 1);
      if (name == "index0") return Value::integer(l.index0);
      if (name == "revindex") return Value::integer(n - l.index0);
      if (name == "revindex0") return Value::integer(n - l.index0 - 1);
      if (name == "first") return Value::boolean(l.index0 == 0);
      if (name == "last") return Value::boolean(l.index0 == n - 1);
      if (name == "length") return Value::integer(n);
      if (name == "depth") return Value::integer(1);
      if (name == "depth0") return Value::integer(0);
      if (name == "previtem")
        return l.index0 > 0 ? (*l.items)[l.index0 - 1] : Value::undefined("there is no previous item");
      if (name == "nextitem")
        return l.index0 + 1 < n ? (*l.items)[l.index0 + 1] : Value::undefined("there is no next item");
      if (name == "cycle" || name == "changed")
        return Value::callable({Callable::Kind::kMethod, name, std::make_shared<const Value>(obj)});
      return undefined_attribute(obj, name);
    }
    default:
      if (auto m = find_method(obj, name)) return *m;
      return undefined_attribute(obj, name);
  }
}

Value Renderer::getitem(const Value& obj, const Value& key) {
  using K = Value::Kind;
  switch (obj.kind()) {
    case K::kUndefined: fail_undefined(obj);
    case K::kDict:
      if (key.is_string()) {
        if (const Value* v = obj.dict().find(key.str())) return *v;
      } else if (key.kind() == K::kList || key.kind() == K::kDict) {
        fail("unhashable type: '" + type_name(key) + "'");
      }
      break;
    case K::kList:
    case K::kTuple:
    case K::kString:
      if (key.is_int()) {
        const int64_t n = py_len(obj);
        int64_t i = key.as_int();
        if (i < 0) i += n;
        if (i < 0 || i >= n) return undefined_element(obj, key);
        if (!obj.is_string()) return obj.items()[static_cast<size_t>(i)];
        if (is_ascii(obj.str())) return Value::string(obj.str().substr(static_cast<size_t>(i), 1));
        std::string c;
        append_utf8(c, decode_utf8(obj.str())[static_cast<size_t>(i)]);
        return Value::string(std::move(c));
      }
      break;
    default: break;
  }
  // jinja2 falls back to the attribute of that name (so d['items'] is the method).
  if (key.is_string()) {
    if (obj.kind() == K::kNamespace || obj.kind() == K::kLoop) return getattr(obj, key.str());
    if (auto m = find_method(obj, key.str())) return *m;
  }
  return undefined_element(obj, key);
}

Value Renderer::call(const Value& fn, CallArgs& args) {
  if (fn.is_undefined()) fail_undefined(fn);
  if (fn.kind() != Value::Kind::kCallable) fail("'" + type_name(fn) + "' object is not callable");
  const Callable& c = fn.fn();
  switch (c.kind) {
    case Callable::Kind::kBuiltin: return call_global(*this, c.name, args);
    case Callable::Kind::kMethod: return call_method(*this, *c.self, c.name, args);
    default: return call_macro(c, args);
  }
}

// The scope of one macro call: parameters bound as jinja2's Macro._invoke binds them.
// `bound` tells which parameters the call gave; the rest take their defaults later.
std::shared_ptr<Scope> Renderer::macro_scope(const Callable& fn, CallArgs& args, std::vector<bool>& bound) {
  const Node& node = *static_cast<const Node*>(fn.node);
  auto scope = std::make_shared<Scope>(Scope{fn.scope, {}});
  const size_t nparams = node.params.size();
  const std::string name = py_repr_string(fn.name);
  bound.assign(nparams, false);
  List extra;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i >= nparams) {
      extra.push_back(args.positional[i]);
      continue;
    }
    scope->vars[node.params[i]] = args.positional[i];
    bound[i] = true;
  }
  if (!extra.empty() && !node.catch_varargs)
    fail("macro " + name + " takes not more than " + std::to_string(nparams) + " argument(s)");
  Dict kwargs;
  scope->vars["caller"] = Value::undefined("No caller defined");
  for (auto& [key, value] : args.keyword) {
    const size_t i = static_cast<size_t>(std::find(node.params.begin(), node.params.end(), key) - node.params.begin());
    if (i < nparams) {
      if (bound[i]) fail("macro " + name + " got multiple values for argument " + py_repr_string(key));
      scope->vars[key] = value;
      bound[i] = true;
    } else if (key == "caller" && node.catch_caller) {
      scope->vars["caller"] = value;
    } else if (node.catch_kwargs) {
      kwargs.set(key, value);
    } else {
      fail("macro " + name + " takes no keyword argument " + py_repr_string(key));
    }
  }
  scope->vars["varargs"] = Value::tuple(std::move(extra));
  scope->vars["kwargs"] = Value::dict(std::move(kwargs));
  return scope;
}

Value Renderer::call_macro(const Callable& fn, CallArgs& args) {
  const Node& node = *static_cast<const Node*>(fn.node);
  DepthGuard guard(*this);
  step();
  std::vector<bool> bound;
  auto scope = macro_scope(fn, args, bound);
  auto saved = scope_;
  scope_ = scope;
  std::string out;
  try {
    // Missing arguments take their defaults, evaluated in the macro's scope.
    const size_t nparams = node.params.size(), first_default = nparams - node.defaults.size();
    for (size_t i = 0; i < nparams; ++i) {
      if (bound[i]) continue;
      scope->vars[node.params[i]] =
          i >= first_default ? eval(*node.defaults[i - first_default])
                             : Value::undefined("parameter " + py_repr_string(node.params[i]) + " was not provided");
    }
    exec(node.body, out);
  } catch (...) {
    scope_ = saved;
    throw;
  }
  scope_ = saved;
  return Value::string(std::move(out));
}

Value Renderer::filter(std::string_view name, const Value& v, CallArgs& args) {
  bool known = false;
  BuiltinFn fn = find_filter(name, &known);
  if (!fn) fail("unsupported filter '" + std::string(name) + "'");
  return fn(*this, v, args);
}

bool Renderer::test(std::string_view name, const Value& v, CallArgs& args) {
  bool known = false;
  BuiltinFn fn = find_test(name, &known);
  if (!fn) fail("unsupported test '" + std::string(name) + "'");
  return truthy(fn(*this, v, args));
}

}  // namespace peft::jinja
