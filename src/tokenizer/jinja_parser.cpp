#include "tokenizer/jinja_parser.h"

#include <algorithm>
#include <initializer_list>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_lexer.h"

namespace peft::jinja {

namespace {

using ast::Body;
using ast::Expr;
using ast::ExprKind;
using ast::ExprPtr;
using ast::Node;
using ast::NodeKind;

// Nesting limits keep the recursion of parsing, rendering and freeing the tree shallow.
constexpr int kMaxParseDepth = 200;  // nested blocks and parenthesized expressions
constexpr int kMaxHeight = 512;      // height of one expression tree, chains included

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& where) : toks_(std::move(tokens)), where_(where) {}

  Body parse_all() {
    Body body = subparse({});
    return body;
  }

 private:
  // ---- tokens ----
  const Token& cur() const { return toks_[i_]; }
  const Token& peek() const { return toks_[i_ + 1 < toks_.size() ? i_ + 1 : i_]; }
  const Token& advance() { return toks_[i_ < toks_.size() - 1 ? i_++ : i_]; }

  bool is_op(const char* op) const { return cur().type == Tok::kOperator && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == Tok::kName && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::kData: return "template data";
      case Tok::kBlockBegin: return "'{%'";
      case Tok::kBlockEnd: return "end of statement block";
      case Tok::kVarBegin: return "'{{'";
      case Tok::kVarEnd: return "end of print statement";
      case Tok::kString: return "string literal";
      case Tok::kEof: return "end of template";
      default: return "'" + t.text + "'";
    }
  }

  [[noreturn]] void error(const Token& at, const std::string& what) const {
    throw JinjaError(where_, at.line, at.col, what);
  }

  void expect_op(const char* op) {
    if (!skip_op(op)) error(cur(), std::string("expected '") + op + "', got " + describe(cur()));
  }
  void expect(Tok type, const char* what) {
    if (cur().type != type) error(cur(), std::string("expected ") + what + ", got " + describe(cur()));
    advance();
  }
  std::string expect_name() {
    if (cur().type != Tok::kName) error(cur(), "expected a name, got " + describe(cur()));
    return advance().text;
  }

  static ast::Pos pos_of(const Token& t) { return {t.line, t.col}; }

  struct Depth {
    Depth(Parser& p, const Token& t) : p_(p) {
      if (++p_.depth_ > kMaxParseDepth) p_.error(t, "template nested too deeply");
    }
    ~Depth() { --p_.depth_; }
    Parser& p_;
  };

  // Adds a child (null for an absent part), tracking the tree's height.
  void add(Expr& parent, ExprPtr child) {
    if (child) grow(parent, *child);
    parent.args.push_back(std::move(child));
  }
  void grow(Expr& parent, const Expr& child) {
    parent.height = std::max(parent.height, child.height + 1);
    if (parent.height > kMaxHeight) error(cur(), "expression nested too deeply");
  }
  void grow_by_args(Expr& e) {
    for (const auto& a : e.call_args) grow(e, *a.value);
  }

  ExprPtr make(ExprKind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos_of(at);
    return e;
  }

  // ---- statements ----

  // Nodes up to a block starting with one of `ends` (left as the current token).
  Body subparse(std::initializer_list<const char*> ends) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::kEof) {
        if (ends.size() != 0) {
          std::string names;
          for (const char* e : ends) names += std::string(names.empty() ? "" : " or ") + "'" + e + "'";
          error(t, "unexpected end of template, expected " + names);
        }
        return body;
      }
      if (t.type == Tok::kData) {
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::kData;
        n->pos = pos_of(t);
        n->text = t.text;
        advance();
        body.push_back(std::move(n));
      } else if (t.type == Tok::kVarBegin) {
        advance();
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::kOutput;
        n->pos = pos_of(cur());
        n->expr = parse_tuple(false, true, {}, false);
        expect(Tok::kVarEnd, "'}}'");
        body.push_back(std::move(n));
      } else if (t.type == Tok::kBlockBegin) {
        advance();
        for (const char* e : ends)
          if (is_name(e)) return body;
        body.push_back(parse_statement());
        expect(Tok::kBlockEnd, "'%}'");
      } else {
        error(t, "unexpected " + describe(t));
      }
    }
  }

  // After a statement's header: its body up to one of `ends` (the current token then).
  Body parse_statements(std::initializer_list<const char*> ends) {
    skip_op(":");
    expect(Tok::kBlockEnd, "'%}'");
    Depth depth(*this, cur());
    return subparse(ends);
  }

  std::unique_ptr<Node> parse_statement() {
    const Token& t = cur();
    if (t.type != Tok::kName) error(t, "expected a tag name, got " + describe(t));
    const std::string& tag = t.text;
    if (tag == "if") return parse_if();
    if (tag == "for") return parse_for();
    if (tag == "set") return parse_set();
    if (tag == "macro") return parse_macro();
    if (tag == "call") return parse_call_block();
    if (tag == "filter") return parse_filter_block();
    if (tag == "generation") return parse_scope("endgeneration");
    if (tag == "break" || tag == "continue") {
      if (loops_ == 0) error(t, "'" + tag + "' outside a for loop");
      auto n = std::make_unique<Node>();
      n->kind = tag == "break" ? NodeKind::kBreak : NodeKind::kContinue;
      n->pos = pos_of(t);
      advance();
      return n;
    }
    if (tag.rfind("end", 0) == 0 || tag == "else" || tag == "elif")
      error(t, "unexpected '" + tag + "' tag: no block is open that it could end");
    error(t, "unsupported tag '" + tag + "'");
  }

  std::unique_ptr<Node> parse_if() {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kIf;
    n->pos = pos_of(advance());
    while (true) {
      ExprPtr test = parse_tuple(false, false, {}, false);
      Body body = parse_statements({"elif", "else", "endif"});
      n->branches.emplace_back(std::move(test), std::move(body));
      const std::string which = advance().text;
      if (which == "elif") continue;
      if (which == "else") {
        n->else_body = parse_statements({"endif"});
        advance();
      }
      return n;
    }
  }

  std::unique_ptr<Node> parse_for() {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kFor;
    n->pos = pos_of(advance());
    n->target = parse_assign_target(false, "in");
    if (!skip_name("in")) error(cur(), "expected 'in', got " + describe(cur()));
    n->expr = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) n->cond = parse_expression(true);
    if (is_name("recursive")) error(cur(), "unsupported: recursive for loops");
    ++loops_;
    n->body = parse_statements({"endfor", "else"});
    --loops_;
    if (advance().text == "else") {
      n->else_body = parse_statements({"endfor"});
      advance();
    }
    return n;
  }

  std::unique_ptr<Node> parse_set() {
    auto n = std::make_unique<Node>();
    n->pos = pos_of(advance());
    n->target = parse_assign_target(true, nullptr);
    if (skip_op("=")) {
      n->kind = NodeKind::kSet;
      n->expr = parse_tuple(false, true, {}, false);
      return n;
    }
    n->kind = NodeKind::kSetBlock;
    if (is_op("|")) n->expr = parse_filter(nullptr, false);
    n->body = parse_statements({"endset"});
    advance();
    return n;
  }

  // `(a, b=1, ...)` of a macro or caller.
  void parse_signature(Node& n) {
    expect_op("(");
    while (!is_op(")")) {
      if (!n.params.empty()) expect_op(",");
      const Token& at = cur();
      n.params.push_back(expect_name());
      if (skip_op("=")) {
        n.defaults.push_back(parse_expression(true));
      } else if (!n.defaults.empty()) {
        error(at, "non-default argument follows default argument");
      }
    }
    expect_op(")");
  }

  // A macro or caller body: loops outside it don't count, varargs/kwargs are noted.
  void parse_function_body(Node& n, const char* end) {
    const int loops = loops_;
    loops_ = 0;
    functions_.push_back(&n);
    n.body = parse_statements({end});
    functions_.pop_back();
    loops_ = loops;
    advance();
  }

  std::unique_ptr<Node> parse_macro() {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kMacro;
    n->pos = pos_of(advance());
    n->text = expect_name();
    parse_signature(*n);
    parse_function_body(*n, "endmacro");
    return n;
  }

  std::unique_ptr<Node> parse_call_block() {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kCallBlock;
    n->pos = pos_of(advance());
    if (is_op("(")) parse_signature(*n);
    const Token& at = cur();
    n->expr = parse_expression(true);
    if (n->expr->kind != ExprKind::kCall) error(at, "expected a call after 'call'");
    parse_function_body(*n, "endcall");
    return n;
  }

  std::unique_ptr<Node> parse_filter_block() {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kFilterBlock;
    n->pos = pos_of(advance());
    n->expr = parse_filter(nullptr, true);
    n->body = parse_statements({"endfilter"});
    advance();
    return n;
  }

  // transformers implements {% generation %} as a call block: its body is a function.
  std::unique_ptr<Node> parse_scope(const char* end) {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kScope;
    n->pos = pos_of(advance());
    parse_function_body(*n, end);
    return n;
  }

  // `x`, `a, b` (unpacking) or, for set, `ns.attr`. `end` ends a tuple (the `in` of for).
  ast::Target parse_assign_target(bool with_namespace, const char* end) {
    ast::Target target;
    const Token& first = cur();
    if (first.type != Tok::kName) error(first, "can't assign to " + describe(first));
    target.names.push_back(expect_name());
    if (with_namespace && is_op(".")) {
      advance();
      target.attr = expect_name();
      return target;
    }
    while (skip_op(",")) {
      target.unpack = true;
      if (cur().type == Tok::kBlockEnd || (end && is_name(end)) || is_op("=")) break;
      const Token& t = cur();
      if (t.type != Tok::kName) error(t, "can't assign to " + describe(t));
      target.names.push_back(expect_name());
    }
    for (const std::string& name : target.names)
      if (name == "true" || name == "false" || name == "none" || name == "True" || name == "False" || name == "None")
        error(first, "can't assign to '" + name + "'");
    return target;
  }

  // ---- expressions ----

  bool is_tuple_end(std::initializer_list<const char*> extra) const {
    if (cur().type == Tok::kVarEnd || cur().type == Tok::kBlockEnd || is_op(")")) return true;
    for (const char* e : extra)
      if (is_name(e)) return true;
    return false;
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, std::initializer_list<const char*> extra,
                      bool explicit_parens) {
    const Token& start = cur();
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra)) break;
      args.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) error(cur(), "expected an expression, got " + describe(cur()));
    }
    auto t = make(ExprKind::kTuple, start);
    for (auto& a : args) add(*t, std::move(a));
    return t;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    Depth depth(*this, cur());
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      auto c = make(ExprKind::kCondExpr, advance());
      ExprPtr test = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
      add(*c, std::move(test));
      add(*c, std::move(expr));
      add(*c, std::move(otherwise));
      expr = std::move(c);
    }
    return expr;
  }

  ExprPtr binary_chain(ExprKind kind, const char* word, ExprPtr (Parser::*next)()) {
    ExprPtr left = (this->*next)();
    while (is_name(word)) {
      auto e = make(kind, advance());
      add(*e, std::move(left));
      add(*e, (this->*next)());
      left = std::move(e);
    }
    return left;
  }
  ExprPtr parse_or() { return binary_chain(ExprKind::kOr, "or", &Parser::parse_and); }
  ExprPtr parse_and() { return binary_chain(ExprKind::kAnd, "and", &Parser::parse_not); }

  ExprPtr parse_not() {
    if (is_name("not")) {
      auto e = make(ExprKind::kNot, advance());
      Depth depth(*this, cur());
      add(*e, parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token& start = cur();
    ExprPtr first = parse_math1();
    auto e = make(ExprKind::kCompare, start);
    while (true) {
      if (cur().type == Tok::kOperator &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
           cur().text == "<=" || cur().text == ">=")) {
        e->ops.push_back(advance().text);
      } else if (is_name("in")) {
        advance();
        e->ops.push_back("in");
      } else if (is_name("not") && peek().type == Tok::kName && peek().text == "in") {
        advance();
        advance();
        e->ops.push_back("notin");
      } else {
        break;
      }
      add(*e, parse_math1());
    }
    if (e->ops.empty()) return first;
    grow(*e, *first);
    e->args.insert(e->args.begin(), std::move(first));
    return e;
  }

  ExprPtr parse_binary(std::initializer_list<const char*> ops, ExprPtr (Parser::*next)()) {
    ExprPtr left = (this->*next)();
    while (true) {
      const char* found = nullptr;
      for (const char* op : ops)
        if (is_op(op)) found = op;
      if (!found) return left;
      auto e = make(ExprKind::kBinary, advance());
      e->name = found;
      add(*e, std::move(left));
      add(*e, (this->*next)());
      left = std::move(e);
    }
  }
  ExprPtr parse_math1() { return parse_binary({"+", "-"}, &Parser::parse_concat); }
  ExprPtr parse_math2() { return parse_binary({"*", "/", "//", "%"}, &Parser::parse_pow); }
  ExprPtr parse_pow() { return parse_binary({"**"}, &Parser::parse_unary_filtered); }

  ExprPtr parse_concat() {
    const Token& start = cur();
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto e = make(ExprKind::kConcat, start);
    add(*e, std::move(first));
    while (skip_op("~")) add(*e, parse_math2());
    return e;
  }

  ExprPtr parse_unary_filtered() { return parse_unary(true); }

  ExprPtr parse_unary(bool with_filter) {
    Depth depth(*this, cur());
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const ExprKind kind = is_op("-") ? ExprKind::kNeg : ExprKind::kPos;
      auto e = make(kind, advance());
      add(*e, parse_unary(false));
      node = std::move(e);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case Tok::kName: {
        advance();
        auto e = make(ExprKind::kConst, t);
        if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
          e->value = Value::boolean(t.text[0] == 't' || t.text[0] == 'T');
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::none();
        } else {
          e->kind = ExprKind::kName;
          e->name = t.text;
          if (!functions_.empty() && t.text == "varargs") functions_.back()->catch_varargs = true;
          if (!functions_.empty() && t.text == "kwargs") functions_.back()->catch_kwargs = true;
          if (!functions_.empty() && t.text == "caller") functions_.back()->catch_caller = true;
        }
        return e;
      }
      case Tok::kString: {
        auto e = make(ExprKind::kConst, t);
        std::string s;
        while (cur().type == Tok::kString) s += advance().text;  // adjacent literals join
        e->value = Value::string(std::move(s));
        return e;
      }
      case Tok::kInteger:
      case Tok::kFloat: {
        auto e = make(ExprKind::kConst, advance());
        e->value = t.type == Tok::kInteger ? Value::integer(t.integer) : Value::number(t.number);
        return e;
      }
      case Tok::kOperator:
        if (t.text == "(") {
          advance();
          ExprPtr e = parse_tuple(false, true, {}, true);
          expect_op(")");
          return e;
        }
        if (t.text == "[") return parse_list();
        if (t.text == "{") return parse_dict();
        break;
      default: break;
    }
    error(t, "unexpected " + describe(t));
  }

  ExprPtr parse_list() {
    auto e = make(ExprKind::kList, advance());
    while (!is_op("]")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("]")) break;
      add(*e, parse_expression(true));
    }
    expect_op("]");
    return e;
  }

  ExprPtr parse_dict() {
    auto e = make(ExprKind::kDict, advance());
    while (!is_op("}")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("}")) break;
      add(*e, parse_expression(true));
      expect_op(":");
      add(*e, parse_expression(true));
    }
    expect_op("}");
    return e;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        node = parse_filter(std::move(node), false);
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& t = advance();
    if (t.text == ".") {
      const Token& attr = advance();
      if (attr.type == Tok::kName) {
        auto e = make(ExprKind::kGetattr, t);
        e->name = attr.text;
        add(*e, std::move(node));
        return e;
      }
      if (attr.type != Tok::kInteger) error(attr, "expected a name or number after '.'");
      auto e = make(ExprKind::kGetitem, t);
      auto key = make(ExprKind::kConst, attr);
      key->value = Value::integer(attr.integer);
      add(*e, std::move(node));
      add(*e, std::move(key));
      return e;
    }
    std::vector<ExprPtr> keys;
    while (!is_op("]")) {
      if (!keys.empty()) expect_op(",");
      keys.push_back(parse_subscribed());
    }
    expect_op("]");
    auto e = make(ExprKind::kGetitem, t);
    add(*e, std::move(node));
    if (keys.size() == 1) {
      add(*e, std::move(keys[0]));
    } else {
      auto tuple = make(ExprKind::kTuple, t);
      for (auto& k : keys) add(*tuple, std::move(k));
      add(*e, std::move(tuple));
    }
    return e;
  }

  // A subscript: an expression or a slice `a:b:c` with any part left out.
  ExprPtr parse_subscribed() {
    const Token& start = cur();
    ExprPtr first;
    if (!is_op(":")) {
      first = parse_expression(true);
      if (!is_op(":")) return first;
    }
    advance();
    auto s = make(ExprKind::kSlice, start);
    add(*s, std::move(first));
    add(*s, is_op(":") || is_op("]") || is_op(",") ? nullptr : parse_expression(true));
    if (skip_op(":")) {
      add(*s, is_op("]") || is_op(",") ? nullptr : parse_expression(true));
    } else {
      add(*s, nullptr);
    }
    return s;
  }

  std::vector<ast::Arg> parse_call_args() {
    const Token& open = cur();
    expect_op("(");
    std::vector<ast::Arg> args;
    bool keywords = false, star = false, star_star = false;
    while (!is_op(")")) {
      if (!args.empty()) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) {  // *iterable and **mapping, stored as "*" and "**"
        const bool one = is_op("*");
        if (star_star || (one && star)) error(open, "invalid syntax for function call expression");
        (one ? star : star_star) = true;
        advance();
        args.push_back({one ? "*" : "**", parse_expression(true)});
      } else if (cur().type == Tok::kName && peek().type == Tok::kOperator && peek().text == "=") {
        if (star_star) error(open, "invalid syntax for function call expression");
        std::string name = advance().text;
        advance();
        args.push_back({std::move(name), parse_expression(true)});
        keywords = true;
      } else {
        if (keywords || star || star_star) error(open, "invalid syntax for function call expression");
        args.push_back({"", parse_expression(true)});
      }
    }
    expect_op(")");
    return args;
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(ExprKind::kCall, cur());
    e->pos = node->pos;  // errors point at the callee
    e->call_args = parse_call_args();
    grow_by_args(*e);
    add(*e, std::move(node));
    return e;
  }

  // `| name(args) | name ...`; `inline_first` when the first pipe is implied (filter tags).
  ExprPtr parse_filter(ExprPtr node, bool inline_first) {
    while (is_op("|") || inline_first) {
      if (!inline_first) advance();
      inline_first = false;
      const Token& t = cur();
      std::string name = expect_name();
      bool known = false;
      BuiltinFn fn = find_filter(name, &known);
      if (!known) error(t, "unsupported filter '" + name + "'");
      auto e = make(ExprKind::kFilter, t);
      e->name = std::move(name);
      e->builtin = fn;
      if (is_op("(")) e->call_args = parse_call_args();
      grow_by_args(*e);
      add(*e, std::move(node));
      node = std::move(e);
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    const Token& is = advance();
    const bool negated = skip_name("not");
    const Token& t = cur();
    std::string name = expect_name();
    bool known = false;
    BuiltinFn fn = find_test(name, &known);
    if (!known) error(t, "unsupported test '" + name + "'");
    auto e = make(ExprKind::kTest, is);
    e->name = std::move(name);
    e->builtin = fn;
    if (is_op("(")) {
      e->call_args = parse_call_args();
    } else if ((cur().type == Tok::kName || cur().type == Tok::kString || cur().type == Tok::kInteger ||
                cur().type == Tok::kFloat || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) error(cur(), "you cannot chain multiple tests with is");
      e->call_args.push_back({"", parse_postfix(parse_primary())});
    }
    grow_by_args(*e);
    add(*e, std::move(node));
    if (!negated) return e;
    auto n = make(ExprKind::kNot, is);
    add(*n, std::move(e));
    return n;
  }

  std::vector<Token> toks_;
  size_t i_ = 0;
  const std::string& where_;
  int depth_ = 0;
  int loops_ = 0;                  // for loops around the current statement
  std::vector<Node*> functions_;   // macros and call blocks being parsed
};

}  // namespace

std::shared_ptr<const ChatTemplate::Program> parse_template(const std::string& source, const std::string& where) {
  auto program = std::make_shared<ChatTemplate::Program>();
  program->where = where;
  program->body = Parser(tokenize(source, where), where).parse_all();
  return program;
}

}  // namespace peft::jinja
