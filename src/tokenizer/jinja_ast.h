// The parsed form of a template: expressions and statements as jinja2's parser builds
// them (jinja2/nodes.py), reduced to what chat templates use.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/jinja.h"
#include "tokenizer/jinja_value.h"

namespace peft::jinja {

class Renderer;
struct CallArgs;
// A filter or test: `value` is what the pipe or `is` applies to.
using BuiltinFn = Value (*)(Renderer& r, const Value& value, CallArgs& args);

namespace ast {

struct Pos {
  int line = 0, col = 0;
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind : uint8_t {
  kConst,     // value
  kName,      // name
  kList,      // [args...]
  kTuple,     // (args...)
  kDict,      // {args[0]: args[1], args[2]: args[3], ...}
  kGetattr,   // args[0].name
  kGetitem,   // args[0][args[1]]
  kSlice,     // [args[0]:args[1]:args[2]] as a subscript; any may be null
  kCall,      // args[0](call_args)
  kFilter,    // args[0] | name(call_args); args[0] is null in filter blocks
  kTest,      // args[0] is name(call_args)
  kNeg,       // -args[0]
  kPos,       // +args[0]
  kNot,       // not args[0]
  kBinary,    // args[0] name args[1], name one of + - * / // % **
  kConcat,    // args[0] ~ args[1] ~ ...
  kAnd,
  kOr,
  kCompare,   // args[0] ops[0] args[1] ops[1] args[2] ...
  kCondExpr,  // args[1] if args[0] else args[2] (args[2] may be null)
};

struct Arg {
  std::string name;  // empty for a positional argument; "*" and "**" unpack
  ExprPtr value;
};

struct Expr {
  ExprKind kind;
  Pos pos;
  Value value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<Arg> call_args;
  std::vector<std::string> ops;  // kCompare: == != < <= > >= in notin
  BuiltinFn builtin = nullptr;   // kFilter, kTest: resolved when parsing
  int height = 1;                // of this subtree; the parser bounds it
};

// What `for` and `set` assign to: one name, names to unpack, or namespace.attr.
struct Target {
  std::vector<std::string> names;
  bool unpack = false;
  std::string attr;  // set ns.attr: names[0] is the namespace
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

enum class NodeKind : uint8_t {
  kData,         // text
  kOutput,       // {{ expr }}
  kIf,           // branches, else_body
  kFor,          // for target in expr [if cond]: body [else: else_body]
  kSet,          // set target = expr
  kSetBlock,     // set target [| expr filters]: body endset
  kMacro,        // macro text(params, defaults): body
  kCallBlock,    // call(params) expr: body, the body being `caller`
  kFilterBlock,  // filter expr: body
  kBreak,
  kContinue,
  kScope,        // generation: body (transformers' assistant-mask tag renders its body)
};

struct Node {
  NodeKind kind;
  Pos pos;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  Target target;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  // kMacro and kCallBlock's caller: parameters, defaults of the last ones, and whether
  // the body reads varargs / kwargs / caller (jinja2 then accepts extra positional
  // arguments, extra keyword arguments, or a call block).
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;
  bool catch_varargs = false;
  bool catch_kwargs = false;
  bool catch_caller = false;
};

}  // namespace ast
}  // namespace peft::jinja

struct peft::ChatTemplate::Program {
  std::string where;
  peft::jinja::ast::Body body;
};
