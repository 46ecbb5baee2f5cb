// Chat templates: real templates and small Jinja expressions rendered byte-identically to
// transformers (fixtures: tests/parity/make_chat_reference.py), errors raised where
// transformers raises them, and hostile templates failing cleanly. Torch-free.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "peft/jinja.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

namespace peft {
namespace {

// ---------------------------------------------------------------- helpers

const Json& reference() {
  static const Json j = [] {
    std::ifstream in(PEFT_CHAT_REFERENCE);
    return Json::parse(in);
  }();
  return j;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

fs::path template_dir() { return fs::path(PEFT_SOURCE_DIR) / "tests/data/chat_templates"; }

// The clock make_chat_reference.py gives strftime_now: 2024-07-26 12:34:56.
RenderOptions fixed_clock() {
  RenderOptions o;
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;
  tm.tm_mday = 26;
  tm.tm_hour = 12;
  tm.tm_min = 34;
  tm.tm_sec = 56;
  o.now = tm;
  return o;
}

// Checks a C++ outcome against the reference's: the same text, or an error where
// transformers raised one; raise_exception and UndefinedError messages must match.
void expect_outcome(const Json& ref, const std::function<std::string()>& render) {
  if (ref.contains("output")) {
    try {
      EXPECT_EQ(render(), ref["output"].get<std::string>());
    } catch (const JinjaError& e) {
      ADD_FAILURE() << "unexpected error: " << e.what();
    }
    return;
  }
  const Json& err = ref["error"];
  try {
    const std::string out = render();
    ADD_FAILURE() << "expected " << err["type"] << ": " << err["message"] << "\n  but rendered: " << out;
  } catch (const JinjaRaised& e) {
    EXPECT_TRUE(err["raised"].get<bool>()) << "raise_exception fired, transformers raised " << err["type"];
    EXPECT_EQ(e.detail(), err["message"].get<std::string>());
  } catch (const JinjaError& e) {
    EXPECT_FALSE(err["raised"].get<bool>()) << "expected raise_exception(" << err["message"] << "), got " << e.what();
    if (err["type"] == "UndefinedError") EXPECT_EQ(e.detail(), err["message"].get<std::string>()) << e.what();
  }
}

// ---------------------------------------------------------------- real chat templates

const char* const kTemplates[] = {
    "llama2_chat",      "llama3_1_instruct",  "llama3_2_instruct",        "mistral_7b_instruct_v0_1",
    "mistral_7b_instruct_v0_3", "mistral_nemo_instruct_2407", "mixtral_8x7b_instruct_v0_1", "qwen2_5_instruct",
    "qwen3",            "gemma2_it",          "gemma3_it",                "phi3_mini",
    "phi3_5_mini",      "smollm2_instruct",   "deepseek_r1",              "deepseek_v3",
    "deepseek_r1_distill_llama_8b", "smollm3_3b", "jamba_large_1_6", "minicpm3_4b",
};

class ChatTemplateParity : public ::testing::TestWithParam<const char*> {};

TEST_P(ChatTemplateParity, MatchesApplyChatTemplate) {
  const std::string name = GetParam();
  const ChatTemplate tmpl = ChatTemplate::parse(read_file(template_dir() / (name + ".jinja")), name + ".jinja");
  int cases = 0, rendered = 0;
  for (const Json& c : reference()["chat"]) {
    if (c["template"] != name) continue;
    ++cases;
    rendered += c.contains("output");
    SCOPED_TRACE(c["case"].get<std::string>() + (c["add_generation_prompt"].get<bool>() ? " +gen" : ""));
    expect_outcome(c, [&] {
      return render_chat(tmpl, c["messages"], c["add_generation_prompt"].get<bool>(), c["special_tokens"], c["extra"],
                         fixed_clock());
    });
  }
  EXPECT_GT(cases, 40);
  EXPECT_GT(rendered, 10);  // a template that errors on everything tests nothing
}

INSTANTIATE_TEST_SUITE_P(RealTemplates, ChatTemplateParity, ::testing::ValuesIn(kTemplates),
                         [](const auto& info) { return std::string(info.param); });

TEST(ChatTemplateParity, EveryTemplateFileIsChecked) {
  std::set<std::string> files, listed(std::begin(kTemplates), std::end(kTemplates));
  for (const auto& e : fs::directory_iterator(template_dir()))
    if (e.path().extension() == ".jinja") files.insert(e.path().stem().string());
  EXPECT_EQ(files, listed);
}

// ---------------------------------------------------------------- expression semantics

TEST(JinjaExpressions, MatchJinja2) {
  ASSERT_GT(reference()["expressions"].size(), 100u);
  for (const Json& c : reference()["expressions"]) {
    const std::string source = c["source"].get<std::string>();
    SCOPED_TRACE(source);
    expect_outcome(c, [&] { return ChatTemplate::parse(source, "expr").render(c["context"], fixed_clock()); });
  }
}

TEST(JinjaExpressions, ParseErrorsHappenWhenParsing) {
  for (const Json& c : reference()["expressions"]) {
    if (!c.contains("error") || c["error"]["phase"] != "parse") continue;
    SCOPED_TRACE(c["source"].get<std::string>());
    EXPECT_THROW(ChatTemplate::parse(c["source"].get<std::string>(), "expr"), JinjaError);
  }
}

std::string render(const std::string& source, const Json& context = Json::object(), RenderOptions options = {}) {
  return ChatTemplate::parse(source, "t").render(context, options);
}

// What a template fails with.
std::string error_of(const std::string& source, const Json& context = Json::object(), RenderOptions options = {}) {
  try {
    render(source, context, options);
  } catch (const JinjaError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(JinjaApi, ErrorsNameTheConstructAndPosition) {
  EXPECT_EQ(error_of("line one\n{% if true %}\n    {{ 'a' | xyz }}{% endif %}"),
            "jinja: t: line 3, col 14: unsupported filter 'xyz'");
  EXPECT_EQ(error_of("{{ 1 is shiny }}"), "jinja: t: line 1, col 9: unsupported test 'shiny'");
  EXPECT_EQ(error_of("ab\n  {% include 'x.html' %}"), "jinja: t: line 2, col 6: unsupported tag 'include'");
  EXPECT_EQ(error_of("{{ 'a' | batch(2) }}"), "jinja: t: line 1, col 10: unsupported filter 'batch'");
  EXPECT_EQ(error_of("{{ cycler(1) }}"), "jinja: t: line 1, col 4: unsupported function 'cycler'");
  EXPECT_EQ(error_of("{% for x in xs recursive %}{% endfor %}", {{"xs", Json::array()}}),
            "jinja: t: line 1, col 16: unsupported: recursive for loops");
  EXPECT_THAT(error_of("{{ '%s' % 1 }}"), HasSubstr("unsupported: printf-style string formatting"));
  EXPECT_THAT(error_of("{{ 2 ** 64 }}"), HasSubstr("integer overflow"));
}

TEST(JinjaApi, RaiseExceptionKeepsTheMessageVerbatim) {
  try {
    render("\n  {{ raise_exception('Bad\\nrole: ' + r) }}", {{"r", "x"}});
    FAIL();
  } catch (const JinjaRaised& e) {
    EXPECT_EQ(e.detail(), "Bad\nrole: x");
    EXPECT_EQ(e.line(), 2);
    EXPECT_STREQ(e.what(), "jinja: t: line 2, col 6: Bad\\nrole: x");  // one line
  }
}

TEST(JinjaApi, RenderChatBuildsTransformersContext) {
  const ChatTemplate t = ChatTemplate::parse(
      "{{ bos_token }}|{{ eos_token }}|{{ pad_token is defined }}|{{ tools }}|{{ documents }}|{{ messages }}|"
      "{{ add_generation_prompt }}|{{ flag }}",
      "ctx");
  const Json messages = Json::parse(R"([{"role": "user", "content": "hi", "x": null, "reasoning": "r"}])");
  const Json config = Json::parse(
      R"({"bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>", "pad_token": null,
          "chat_template": "ignored", "model_max_length": 5})");
  EXPECT_EQ(render_chat(t, messages, true, config, {{"flag", 3}, {"eos_token", "E"}}),
            "<s>|E|False|None|None|[{'thinking': 'r', 'role': 'user', 'content': 'hi', 'reasoning': 'r', "
            "'reasoning_content': 'r'}]|True|3");
}

TEST(JinjaApi, ChatTemplateFromConfig) {
  EXPECT_EQ(chat_template_from_config(Json::parse(R"({"chat_template": "x"})")), "x");
  const Json named = Json::parse(
      R"({"chat_template": [{"name": "default", "template": "d"}, {"name": "tool_use", "template": "t"}]})");
  EXPECT_EQ(chat_template_from_config(named), "d");
  EXPECT_EQ(chat_template_from_config(named, "tool_use"), "t");
  EXPECT_EQ(chat_template_from_config(named, "rag"), std::nullopt);
  EXPECT_EQ(chat_template_from_config(Json::object()), std::nullopt);
}

TEST(JinjaApi, StrftimeNowReadsTheRealClockByDefault) {
  const std::string year = render("{{ strftime_now('%Y') }}");
  ASSERT_EQ(year.size(), 4u);
  EXPECT_GE(std::stoi(year), 2024);
}

TEST(JinjaApi, ATemplateRendersManyTimes) {
  const ChatTemplate t = ChatTemplate::parse("{% set ns = namespace(n=0) %}{% set ns.n = ns.n + x %}{{ ns.n }}", "t");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(t.render({{"x", i}}), std::to_string(i));
}

// ---------------------------------------------------------------- hostile input

// Fails with a JinjaError, quickly, rather than crashing, hanging or allocating without bound.
void expect_clean_failure(const std::string& source, const std::string& what, RenderOptions options = {}) {
  const auto start = std::chrono::steady_clock::now();
  const std::string err = error_of(source, Json::object(), options);
  EXPECT_THAT(err, HasSubstr(what)) << source.substr(0, 80);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10)) << source.substr(0, 80);
}

TEST(JinjaHostile, DeepNestingIsAnError) {
  expect_clean_failure("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}", "nested too deeply");
  expect_clean_failure("{{ " + std::string(100000, '[') + std::string(100000, ']') + " }}", "nested too deeply");
  expect_clean_failure("{{ " + std::string(50000, '-') + "1 }}", "nested too deeply");
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += " + 1";
  expect_clean_failure(chain + " }}", "nested too deeply");
  std::string ifs;
  for (int i = 0; i < 20000; ++i) ifs += "{% if true %}";
  expect_clean_failure(ifs, "nested too deeply");
  expect_clean_failure("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "maximum recursion depth");
  expect_clean_failure("{% set ns = namespace(l=[]) %}{% for i in range(5000) %}{% set ns.l = [ns.l] %}{% endfor %}",
                       "nested deeper than");
  expect_clean_failure("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", "recursion depth");
}

TEST(JinjaHostile, HugeWorkIsBounded) {
  expect_clean_failure("{% for i in range(10**12) %}x{% endfor %}", "Range too big");
  expect_clean_failure("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                       "budget of");
  expect_clean_failure("{{ 'a' * 10**12 }}", "exceeds the limit");
  expect_clean_failure("{{ [1, 2] * 10**12 }}", "more than");
  expect_clean_failure(
      "{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
      "exceeds the limit");
  expect_clean_failure("{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{% set t = s ~ '' %}{% endfor %}",
                       "budget of");
  RenderOptions small;
  small.limits.max_output_bytes = 1000;
  expect_clean_failure("{% for i in range(1000) %}{{ i }}{% endfor %}", "exceeds the limit", small);
  small.limits.max_steps = 50;
  expect_clean_failure("{% for i in range(1000) %}{% endfor %}", "budget of", small);
}

TEST(JinjaHostile, MalformedTemplatesNameTheProblem) {
  expect_clean_failure("abc {{ x ", "line 1, col 10: unexpected end of template");
  expect_clean_failure("{% if x %}", "unexpected end of template, expected 'elif' or 'else' or 'endif'");
  expect_clean_failure("{# never closed", "missing end of comment tag");
  expect_clean_failure("{% raw %} never closed", "missing end of raw directive");
  expect_clean_failure("{{ 'abc }}", "unterminated string literal");
  expect_clean_failure("{{ x ) }}", "unexpected ')'");
  expect_clean_failure("{{ a & b }}", "unexpected char '&'");
  expect_clean_failure("{% endfor %}", "no block is open");
  expect_clean_failure("{% break %}", "outside a for loop");
  expect_clean_failure(std::string("{{ 'a") + '\xff' + "' }}", "not valid UTF-8");
  expect_clean_failure("{{ '\\N{BULLET}' }}", "unsupported");
  expect_clean_failure("{{ 99999999999999999999 }}", "does not fit 64 bits");
}

TEST(JinjaHostile, DeepContextIsAnError) {
  const Json deep = Json::parse(std::string(5000, '[') + std::string(5000, ']'));
  try {
    ChatTemplate::parse("{{ x }}", "t").render({{"x", deep}});
    FAIL();
  } catch (const JinjaError& e) {
    EXPECT_THAT(e.what(), HasSubstr("context"));
  }
}

// Random token soup: every input parses and renders or fails with a JinjaError.
TEST(JinjaHostile, RandomInputNeverCrashes) {
  const std::vector<std::string> pieces = {
      "{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", "+%}", "{%+", " if ", " for ", " in ",
      " else ", " endif ", " endfor ", " set ", " macro ", " endmacro ", " call ", " endcall ", " filter ",
      " endfilter ", " raw ", " endraw ", "(", ")", "[", "]", "{", "}", "'", "\"", "\\", ",", ":", ".", "|", "~",
      "+", "-", "*", "/", "//", "%", "**", "==", "<", "not ", " and ", " or ", " is ", "x", "loop", "ns",
      "namespace(a=1)", "range(3)", "1", "0.5", "1e3", "'s'", "none", "true", "\n", " ", "\t", "trim", "tojson",
      "selectattr", "length", "defined", "break", "continue", "caller", "messages", "é", "\xe6\x97\xa5"};
  std::mt19937 rng(12345);
  const Json context = Json::parse(R"({"x": [1, {"a": "b"}], "messages": [{"role": "user", "content": "hi"}]})");
  RenderOptions options;
  options.limits.max_steps = 20000;
  options.limits.max_output_bytes = 1 << 16;
  int parsed = 0, rendered = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string src;
    const int n = 1 + static_cast<int>(rng() % 24);
    for (int k = 0; k < n; ++k) {
      if (rng() % 16 == 0) {
        src += static_cast<char>(rng() % 256);
      } else {
        src += pieces[rng() % pieces.size()];
      }
    }
    try {
      const ChatTemplate t = ChatTemplate::parse(src, "fuzz");
      ++parsed;
      t.render(context, options);
      ++rendered;
    } catch (const JinjaError&) {
    }
  }
  EXPECT_GT(parsed, 1000);
  EXPECT_GT(rendered, 500);
}

}  // namespace
}  // namespace peft
