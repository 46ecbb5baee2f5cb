// Renders a parsed template: statements, expressions, scoping and limits.
//
// Scoping follows jinja2: the template's top level is one scope over the context
// variables; every iteration of a for loop and every macro call gets a fresh child
// scope, so a `set` inside them is gone afterwards (templates use namespace() to carry
// state out); `if` opens no scope.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_value.h"

namespace peft::jinja {

struct Scope {
  std::shared_ptr<Scope> parent;
  std::unordered_map<std::string, Value> vars;
  const Value* find(const std::string& name) const;
};

struct CallArgs {
  List positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// A parameter of a builtin: its name and default (required when `required`).
struct Param {
  const char* name;
  Value fallback = Value::none();
  bool required = false;
};
// Binds `args` to `params` as Python binds a call (positionally, then by name); fails
// on missing, duplicate, unknown or surplus arguments naming `fn`.
std::vector<Value> bind(CallArgs& args, const char* fn, std::initializer_list<Param> params);

// Filters and tests by name. `known` tells whether jinja2 has the name at all (unknown
// names fail when parsing, as jinja2 fails when compiling); a null function for a known
// name means this engine does not implement it and fails if it is ever applied.
BuiltinFn find_filter(std::string_view name, bool* known);
BuiltinFn find_test(std::string_view name, bool* known);

class Renderer {
 public:
  Renderer(const ChatTemplate::Program& program, const RenderOptions& options);
  ~Renderer();
  std::string render(const nlohmann::ordered_json& context);

  // For builtins.
  const RenderOptions& options() const { return options_; }
  void step(uint64_t n = 1);                  // charges the work budget
  void check_size(size_t bytes) const;        // fails for a string longer than the limit
  Value getattr(const Value& obj, const std::string& name);  // obj.name, as the sandbox does
  Value getitem(const Value& obj, const Value& key);         // obj[key], as the sandbox does
  Value call(const Value& fn, CallArgs& args);
  Value filter(std::string_view name, const Value& v, CallArgs& args);
  bool test(std::string_view name, const Value& v, CallArgs& args);
  Value make_namespace(Dict attrs);  // tracked so that cycles are broken after rendering

 private:
  using Body = ast::Body;
  enum class Flow { kNormal, kBreak, kContinue };

  Flow exec(const Body& body, std::string& out);
  Flow exec_node(const ast::Node& node, std::string& out);
  void exec_if(const ast::Node& node, std::string& out, Flow& flow);
  Flow exec_for(const ast::Node& node, std::string& out);
  void exec_call_block(const ast::Node& node, std::string& out);
  std::string render_nested(const Body& body, Flow& flow);
  void assign(const ast::Target& target, const Value& value);
  void append(std::string& out, std::string_view text) const;

  Value eval(const ast::Expr& e);
  Value eval_inner(const ast::Expr& e);
  Value eval_name(const ast::Expr& e);
  Value eval_display(const ast::Expr& e);
  Value eval_subscript(const ast::Expr& e);
  Value eval_compare(const ast::Expr& e);
  Value eval_filter(const ast::Expr& e, const Value* input);
  CallArgs eval_args(const std::vector<ast::Arg>& args);
  Value call_macro(const Callable& fn, CallArgs& args);
  std::shared_ptr<Scope> macro_scope(const Callable& fn, CallArgs& args, std::vector<bool>& bound);

  const ChatTemplate::Program& program_;
  const RenderOptions& options_;
  std::shared_ptr<Scope> scope_;
  int depth_ = 0;
  std::vector<Value> namespaces_;
  std::vector<std::shared_ptr<Scope>> macro_scopes_;
  struct DepthGuard;
};

// Python's binary operators (+ - * / // % **), unary minus and plus, and
// `item in container` (jinja_operators.cpp).
Value binary_op(Renderer& r, const std::string& op, const Value& a, const Value& b);
Value unary_op(bool negate, const Value& v);
bool contains(const Value& container, const Value& item);

// Globals (range, namespace, dict, raise_exception, strftime_now) and the methods of
// str, dict and list (jinja_methods.cpp).
bool is_global_function(const std::string& name);
Value call_global(Renderer& r, const std::string& name, CallArgs& args);
// `obj.name` when it is a method of obj's Python type: a bound method, an Undefined
// for methods the sandbox forbids, or nothing (then jinja2 looks for an item).
std::optional<Value> find_method(const Value& obj, const std::string& name);
Value call_method(Renderer& r, const Value& self, const std::string& name, CallArgs& args);
// Whether Python's str has the attribute `name`, and calling it (jinja_str_methods.cpp).
bool is_str_method(const std::string& name);
Value call_str_method(Renderer& r, const Value& self, const std::string& name, CallArgs& args);

// Python slicing and indexing on code points and lists (jinja_methods.cpp).
Value slice_value(const Value& obj, const Value& start, const Value& stop, const Value& step);

}  // namespace peft::jinja
