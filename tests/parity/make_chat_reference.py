#!/usr/bin/env python
"""Reference renderings of real chat templates and of small Jinja expressions, made by
transformers itself, for tests/test_jinja.cpp.

Usage: python tests/parity/make_chat_reference.py OUT.json

Chat cases go through tokenizer.apply_chat_template(..., tokenize=False) of a real
transformers tokenizer (a one-word WordLevel vocabulary with the family's special
tokens), so the environment (sandbox, trim_blocks, lstrip_blocks, loopcontrols,
raise_exception, strftime_now, tojson), the message clean-up (None-valued keys
dropped, reasoning fields aliased) and the variables (special tokens, tools, documents)
are exactly transformers'. Expression cases render small templates with transformers'
compiled environment. strftime_now reads a fixed clock, 2024-07-26 12:34:56, which the
C++ test sets too.

Every case records its inputs and either the output or the error: its type, message,
and whether the template raised it with raise_exception.
"""

import datetime as dt
import json
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jinja2  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from tokenizers.models import WordLevel  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
import transformers.utils.chat_template_utils as ctu  # noqa: E402

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "chat_templates")


class FixedClock(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2024, 7, 26, 12, 34, 56)


ctu.datetime = FixedClock  # strftime_now() looks the module's datetime up when called

# The special tokens of each family's tokenizer_config.json (None: the model has none).
LLAMA2 = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
LLAMA3 = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
QWEN = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}  # Qwen has no bos_token
GEMMA = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
PHI3 = {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"}
SMOLLM = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
          "pad_token": "<|im_end|>"}
DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
SMOLLM3 = {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
JAMBA = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|unk|>", "pad_token": "<|pad|>"}
MINICPM3 = {"bos_token": "<s>", "eos_token": "<|im_end|>", "unk_token": "<unk>"}

TEMPLATES = {
    "llama2_chat": LLAMA2,
    "llama3_1_instruct": LLAMA3,
    "llama3_2_instruct": LLAMA3,
    "mistral_7b_instruct_v0_1": MISTRAL,
    "mistral_7b_instruct_v0_3": MISTRAL,
    "mistral_nemo_instruct_2407": MISTRAL,
    "mixtral_8x7b_instruct_v0_1": MISTRAL,
    "qwen2_5_instruct": QWEN,
    "qwen3": QWEN,
    "gemma2_it": GEMMA,
    "gemma3_it": GEMMA,
    "phi3_mini": PHI3,
    "phi3_5_mini": PHI3,
    "smollm2_instruct": SMOLLM,
    "deepseek_r1": DEEPSEEK,
    "deepseek_v3": DEEPSEEK,
    "deepseek_r1_distill_llama_8b": DEEPSEEK,
    # Beyond the families above: macros, call blocks, recursion and *args in real templates.
    "smollm3_3b": SMOLLM3,
    "jamba_large_1_6": JAMBA,
    "minicpm3_4b": MINICPM3,
}


def u(content):
    return {"role": "user", "content": content}


def a(content):
    return {"role": "assistant", "content": content}


def s(content):
    return {"role": "system", "content": content}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}


def tool_turns(arguments):
    return [
        u("What's the weather in Paris?"),
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call12345", "type": "function",
                         "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temp\": 21.5}"},
        a("It is 21.5 °C in Paris."),
    ]


# (name, messages, extra apply_chat_template kwargs)
CONVERSATIONS = [
    ("single_user", [u("Hello!")], {}),
    ("system_user", [s("You are a helpful assistant."), u("What is 2+2?")], {}),
    ("multi_turn", [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke.")], {}),
    ("system_multi_turn", [s("Be terse."), u("Capital of France?"), a("Paris."), u("And Italy?"), a("Rome.")], {}),
    ("unicode", [u("Grüß Gott! 日本語 😀 — «quotes» مرحبا"), a("Ça va? Ἀθῆναι ΣΟΦΟΣ"), u("ß İ ǅ Ⅻ")], {}),
    ("special_chars", [u("He said \"hi\" and 'bye'\n{{ not a tag }} {% raw %} {# x #} \\n \\ \t tab"),
                       a("<|im_end|> </s> [INST] <<SYS>> \x00\x1f\x7f \u2028 \ufeff"),
                       u("{\"json\": [1, 2, {\"a\": null}]}")], {}),
    ("whitespace", [s("  padded system  \n"), u("\tTabbed question?\n\n"), a("  \n Sure thing.\n\n  "),
                    u(" ")], {}),
    ("empty_strings", [u(""), a(""), u("")], {}),
    ("ends_with_assistant", [u("Say hi."), a("Hi!")], {}),
    ("assistant_first", [a("I start."), u("Odd.")], {}),
    ("two_users", [u("One."), u("Two.")], {}),
    ("system_only", [s("Only a system prompt.")], {}),
    ("long", [m for i in range(12) for m in (u(f"Question {i}?"), a(f"Answer {i}."))], {}),
    ("tool_call_dict_args", tool_turns({"city": "Paris", "unit": "celsius"}), {}),
    ("tool_call_str_args", tool_turns("{\"city\": \"Paris\"}"), {}),
    ("tools_available", [s("Use tools when needed."), u("Weather in Oslo?")], {"tools": [WEATHER_TOOL]}),
    ("tools_with_calls", tool_turns({"city": "Paris"}), {"tools": [WEATHER_TOOL]}),
    ("reasoning_field", [u("2+2?"), {"role": "assistant", "content": "4", "reasoning_content": "Add them."},
                         u("3+3?")], {}),
    ("think_in_content", [u("2+2?"), a("<think>\nAdd 2 and 2.\n</think>\n\nIt is 4.")], {}),
    ("enable_thinking_false", [u("Quick answer?")], {"enable_thinking": False}),
    ("date_string", [s("Know the date."), u("What day is it?")], {"date_string": "01 Jan 2025"}),
    ("list_content", [{"role": "system", "content": [{"type": "text", "text": "System as parts."}]},
                      {"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "image"},
                                                   {"type": "text", "text": " please."}]}], {}),
    ("null_content", [u("Nothing?"), {"role": "assistant", "content": None}, u("Still there?")], {}),
    ("numbers_in_content", [u("Compute"), a("42")], {"custom_flag": True}),
]


def error_of(e):
    return {"type": type(e).__name__, "message": str(e), "raised": type(e) is jinja2.exceptions.TemplateError}


def make_tokenizer(special):
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                   **special)


def chat_cases():
    cases = []
    for name, special in TEMPLATES.items():
        with open(os.path.join(TEMPLATE_DIR, name + ".jinja"), encoding="utf-8") as f:
            source = f.read()
        tok = make_tokenizer(special)
        for case, messages, extra in CONVERSATIONS:
            for gen in (False, True):
                rec = {"template": name, "case": case, "messages": messages, "add_generation_prompt": gen,
                       "special_tokens": special, "extra": extra}
                try:
                    rec["output"] = tok.apply_chat_template(json.loads(json.dumps(messages)), chat_template=source,
                                                            tokenize=False, add_generation_prompt=gen, **extra)
                except Exception as e:  # the template's own error, or jinja2's
                    rec["error"] = error_of(e)
                cases.append(rec)
    return cases


# Small templates for expression semantics: (source, context).
EXPRESSIONS = [
    # printing values as Python's str() does
    ("{{ 1 }}|{{ -7 }}|{{ 1.0 }}|{{ 0.1 + 0.2 }}|{{ 1e16 }}|{{ 1.5e-7 }}|{{ 123456789.125 }}|{{ 1e22 }}", {}),
    ("{{ 10 / 4 }}|{{ 10 / 5 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7 % -3 }}|{{ 2 ** 10 }}", {}),
    ("{{ 7.5 // 2 }}|{{ -7.5 % 2 }}|{{ 2 ** -1 }}|{{ 2 ** 3 ** 2 }}|{{ 3 - 5 }}|{{ 2 * 3.5 }}|{{ -0.0 }}", {}),
    ("{{ true }}|{{ True }}|{{ false }}|{{ none }}|{{ None }}|{{ x }}|{{ true + 1 }}|{{ -true }}", {}),
    ("{{ [1, 'a', none, true, 2.5] }}|{{ {'a': 1, 'b': [2]} }}|{{ (1,) }}|{{ (1, 'x') }}|{{ () }}|{{ [] }}", {}),
    ("{{ ['it\\'s', \"say \\\"hi\\\"\", 'both \\' \"', 'nl\\n\\ttab\\\\'] }}", {}),
    ("{{ ['é', '日本', '\\x00\\x1f\\x7f', '\\xa0\\u200b'] }}", {}),
    ("{{ messages }}", {"messages": [{"role": "user", "content": "hi", "n": 3, "f": 0.5, "b": False, "z": None}]}),
    # string literals and escapes
    ("{{ 'a\\nb' }}|{{ \"tab\\there\" }}|{{ '\\u00e9\\x41\\101\\U0001F600' }}|{{ 'back\\\\slash' }}|{{ 'q\\'s' }}", {}),
    ("{{ 'adj' 'acent' \"strings\" }}|{{ 'unknown \\d escape' }}", {}),
    # concatenation and arithmetic
    ("{{ 'a' ~ 1 ~ 2.0 ~ none ~ true ~ x }}|{{ 'a' + 'b' }}|{{ [1] + [2, 3] }}|{{ (1,) + (2,) }}", {}),
    ("{{ 'ab' * 3 }}|{{ 2 * 'xy' }}|{{ [0] * 3 }}|{{ 'a' * 0 }}|{{ 'a' * -1 }}", {}),
    ("{{ 1 + 2 * 3 - 4 / 2 }}|{{ (1 + 2) * 3 }}|{{ 2 ~ 3 + 4 }}", {}),
    # comparisons, boolean logic, membership
    ("{{ 1 == 1.0 }}|{{ 1 != 2 }}|{{ 'a' < 'b' }}|{{ 2 >= 2 }}|{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}|{{ [1, 2] < [1, 3] }}", {}),
    ("{{ 'a' in 'cat' }}|{{ 'x' not in 'cat' }}|{{ 2 in [1, 2] }}|{{ 'k' in {'k': 1} }}|{{ 1 in {'k': 1} }}", {}),
    ("{{ 0 or 'x' }}|{{ 'a' and 'b' }}|{{ none or [] }}|{{ not 0 }}|{{ not not 'a' }}|{{ '' and 1 }}", {}),
    ("{{ true == 1 }}|{{ none == none }}|{{ x == none }}|{{ x == y }}|{{ [1] == (1,) }}|{{ {'a': 1} == {'a': 1} }}", {}),
    ("{{ 'x' in y }}|{{ x in [1] }}", {}),
    # inline if
    ("{{ 'yes' if 1 else 'no' }}|{{ 'yes' if 0 else 'no' }}|[{{ 'only' if false }}]|{{ 1 if 0 else 2 if 0 else 3 }}", {}),
    # attribute and item access
    ("{{ d.a }}|{{ d['a'] }}|{{ d.missing }}|{{ d['b'][1] }}|{{ d.b.0 }}|{{ l[-1] }}|{{ l[5] }}|{{ s[0] }}|{{ s[-1] }}",
     {"d": {"a": 1, "b": [10, 20]}, "l": [1, 2, 3], "s": "héllo"}),
    ("{{ l[1:] }}|{{ l[:-1] }}|{{ l[::-1] }}|{{ l[::2] }}|{{ s[1:3] }}|{{ s[::-1] }}|{{ l[5:] }}|{{ l[-100:2] }}|{{ s[:] }}",
     {"l": [1, 2, 3, 4], "s": "héllo wörld"}),
    ("{{ d.items }}" if False else "{{ d.get('a') }}|{{ d.get('zz') }}|{{ d.get('zz', 'dflt') }}|{{ d.keys() | list }}|{{ d.values() | list }}",
     {"d": {"a": 1, "b": 2}}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in d %}{{ k }}{% endfor %}", {"d": {"x": 1, "y": [2]}}),
    ("{{ d['items'] is defined }}|{{ d.content }}|{{ d['content'] }}", {"d": {"content": "c", "items": 5}}),
    # string methods
    ("[{{ '  pad  '.strip() }}][{{ 'xxhixx'.strip('x') }}][{{ '  a '.lstrip() }}][{{ ' a  '.rstrip() }}][{{ '\\n\\na\\n'.strip('\\n') }}]", {}),
    ("{{ 'a,b,,c'.split(',') }}|{{ '  a  b \\n c '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a<think>b</think>c'.split('</think>')[-1] }}", {}),
    ("{{ 'a b c'.rsplit(' ', 1) }}|{{ 'l1\\nl2\\r\\nl3'.splitlines() }}", {}),
    ("{{ 'Hello'.startswith('He') }}|{{ 'Hello'.endswith(('x', 'lo')) }}|{{ 'hello wORLD'.title() }}|{{ 'hELLO'.capitalize() }}", {}),
    ("{{ 'Mixed'.upper() }}|{{ 'Mixed'.lower() }}|{{ 'a-b-c'.replace('-', '+') }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'abc'.find('c') }}", {}),
    ("{{ 'x'.join(['a', 'b']) }}|{{ 'abcabc'.count('b') }}|{{ '42'.isdigit() }}|{{ 'ab'.isalpha() }}|{{ '{} and {}'.format(1, 'b') }}", {}),
    ("{{ 'abc'.removeprefix('a') }}|{{ 'abc'.removesuffix('c') }}|{{ '7'.zfill(3) }}|{{ 'a=b=c'.partition('=') }}|{{ 'x'.center(5, '*') }}", {}),
    # filters
    ("[{{ '  t  ' | trim }}][{{ 'xtx' | trim('x') }}][{{ x | trim }}][{{ 5 | trim }}]", {}),
    ("{{ 'abc' | length }}|{{ [1, 2] | count }}|{{ {'a': 1} | length }}|{{ x | length }}|{{ 'héllo' | length }}", {}),
    ("{{ 'Hello World' | lower }}|{{ 'hello' | upper }}|{{ 'hELLO wORLD' | capitalize }}|{{ 'hello-world (x) [y] <z>' | title }}", {}),
    ("{{ 42 | string }}|{{ [1] | string }}|{{ '3' | int + 1 }}|{{ '3.7' | int }}|{{ 'x' | int }}|{{ 'x' | int(7) }}|{{ 3.9 | int }}|{{ '0x1A' | int(0, 16) }}", {}),
    ("{{ '2.5' | float }}|{{ 'x' | float }}|{{ 3 | float }}|{{ '1e3' | float }}|{{ ' 7 ' | int }}|{{ true | int }}", {}),
    ("{{ [1, 2, 3] | join(', ') }}|{{ 'abc' | join('-') }}|{{ users | join(', ', attribute='name') }}|{{ [1, none] | join }}",
     {"users": [{"name": "ann"}, {"name": "bob"}]}),
    ("{{ [3, 1, 2] | first }}|{{ [3, 1, 2] | last }}|{{ 'abc' | first }}|{{ [] | first }}|{{ {'k': 1, 'j': 2} | first }}", {}),
    ("{{ x | default('d') }}|{{ '' | default('d') }}|{{ '' | default('d', true) }}|{{ none | d('n') }}|{{ 0 | default(5, boolean=true) }}", {}),
    ("{{ '<a href=\"x\">&\\'</a>' | e }}|{{ '<b>' | escape }}|{{ '<b>' | safe }}", {}),
    ("{{ [3, 1, 2] | sort }}|{{ ['b', 'A', 'c'] | sort }}|{{ ['b', 'A', 'c'] | sort(case_sensitive=true) }}|{{ [3, 1, 2] | sort(reverse=true) }}", {}),
    ("{{ users | sort(attribute='age') | map(attribute='name') | list }}|{{ users | map(attribute='name') | join('/') }}",
     {"users": [{"name": "b", "age": 30}, {"name": "a", "age": 20}, {"name": "c", "age": 25}]}),
    ("{{ [1, 2, 1, 'A', 'a'] | unique | list }}|{{ [1, 2, 3] | reverse | list }}|{{ 'abc' | reverse }}|{{ [1, 2] | list }}|{{ 'ab' | list }}", {}),
    ("{{ {'b': 1, 'a': 2} | dictsort }}|{{ {'b': 1, 'a': 2} | items | list }}|{{ {'b': 1, 'a': 2} | dictsort(by='value', reverse=true) }}", {}),
    ("{{ msgs | selectattr('role', 'equalto', 'user') | list | length }}|{{ msgs | rejectattr('role', 'eq', 'user') | map(attribute='content') | list }}",
     {"msgs": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}),
    ("{{ msgs | selectattr('tool_calls', 'undefined') | list | length }}|{{ msgs | selectattr('tool_calls') | list | length }}|{{ msgs | selectattr('tool_calls', 'defined') | map(attribute='role') | first }}",
     {"msgs": [{"role": "user"}, {"role": "assistant", "tool_calls": [1]}]}),
    ("{{ [1, 2, 3, 4] | select('odd') | list }}|{{ [1, 2, 3, 4] | reject('even') | list }}|{{ [0, 1, '', 'a'] | select | list }}|{{ ['a', 'b'] | reject('in', ['a']) | list }}", {}),
    ("{{ ['A', 'b'] | map('lower') | join }}|{{ [' a ', 'b '] | map('trim') | list }}|{{ [1.5, 2.5] | map('round') | list }}", {}),
    ("{{ [1, 2, 3] | sum }}|{{ [1, 5, 3] | max }}|{{ ['b', 'A'] | min }}|{{ [] | max }}|{{ users | sum(attribute='n') }}",
     {"users": [{"n": 1}, {"n": 2}]}),
    ("{{ 2.5 | round }}|{{ 3.5 | round }}|{{ 2.675 | round(2) }}|{{ 2.1 | round(method='ceil') }}|{{ 2.9 | round(0, 'floor') }}|{{ 5 | round }}|{{ -3 | abs }}|{{ -2.5 | abs }}", {}),
    ("{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent('> ', blank=true) }}", {}),
    ("{{ 'one two  three' | wordcount }}|{{ 'a-b' | replace('-', '_') }}|{{ 'aaa' | replace('a', 'b', 2) }}|{{ 'hello' | center(9) }}", {}),
    ("{{ 'The quick brown fox jumps' | truncate(12) }}|{{ 'The quick brown fox' | truncate(9, true) }}", {}),
    # tojson exactly as transformers defines it
    ("{{ d | tojson }}", {"d": {"a": "é \"q\" \n\t<>&'", "b": [1, 2.5, True, None], "c": {}, "e": [], "f": 1e20}}),
    ("{{ d | tojson(indent=2) }}", {"d": {"a": [1, {"b": None}], "c": {}, "e": [], "s": "x"}}),
    ("{{ d | tojson(indent=4) }}|{{ d | tojson(ensure_ascii=true) }}|{{ d | tojson(sort_keys=true) }}",
     {"d": {"z": "日本 😀", "a": 1}}),
    ("{{ d | tojson(separators=(',', ':')) }}|{{ 'str' | tojson }}|{{ 1.0 | tojson }}|{{ none | tojson }}|{{ (1, 2) | tojson }}",
     {"d": {"a": [1, 2], "b": "c"}}),
    # tests
    ("{{ x is defined }}|{{ d is defined }}|{{ d.a is defined }}|{{ d.zz is undefined }}|{{ none is none }}|{{ 0 is none }}",
     {"d": {"a": 1}}),
    ("{{ 'a' is string }}|{{ 1 is string }}|{{ 1 is number }}|{{ 1.5 is number }}|{{ true is number }}|{{ 1 is integer }}|{{ true is integer }}|{{ 1.0 is float }}", {}),
    ("{{ {} is mapping }}|{{ [] is mapping }}|{{ [] is sequence }}|{{ 'a' is sequence }}|{{ {} is sequence }}|{{ 1 is sequence }}|{{ x is sequence }}", {}),
    ("{{ [] is iterable }}|{{ 'a' is iterable }}|{{ 1 is iterable }}|{{ x is iterable }}|{{ none is iterable }}|{{ {} is iterable }}", {}),
    ("{{ true is boolean }}|{{ 1 is boolean }}|{{ true is true }}|{{ 1 is true }}|{{ false is false }}|{{ 0 is false }}", {}),
    ("{{ 3 is odd }}|{{ 3 is even }}|{{ 9 is divisibleby 3 }}|{{ 9 is divisibleby(2) }}|{{ 2 is in [1, 2] }}|{{ 'A' is upper }}|{{ 'a' is lower }}", {}),
    ("{{ 1 is eq 1 }}|{{ 1 is equalto 2 }}|{{ 2 is gt 1 }}|{{ 2 is lt 1 }}|{{ 2 is ge 2 }}|{{ 1 is ne 1 }}|{{ x is not defined }}", {}),
    ("{{ none is sameas none }}|{{ true is sameas true }}|{{ 1 is sameas true }}|{{ 'upper' is filter }}|{{ 'odd' is test }}|{{ 'nope' is filter }}", {}),
    # for loops
    ("{% for x in [10, 20, 30] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
     "{{ loop.first }}{{ loop.last }}{{ loop.length }}:{{ x }};{% endfor %}", {}),
    ("{% for x in [1, 2, 3] %}[{{ loop.previtem }}|{{ loop.nextitem }}|{{ loop.previtem is defined }}]{% endfor %}", {}),
    ("{% for x in [] %}no{% else %}empty{% endfor %}|{% for x in [1] %}one{% else %}never{% endfor %}|{% for x in y %}{% else %}undef{% endfor %}", {}),
    ("{% for x in [1, 2, 3, 4, 5] if x is odd %}{{ x }}:{{ loop.index }}/{{ loop.length }},{% endfor %}", {}),
    ("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}|{% for a, b in ['xy'] %}{{ b }}{{ a }}{% endfor %}", {}),
    ("{% for x in [1, 2] %}{% for y in 'ab' %}{{ loop.index }}{{ x }}{{ y }} {% endfor %}{{ loop.index }};{% endfor %}", {}),
    ("{{ range(5) | list }}|{{ range(2, 5) | list }}|{{ range(10, 0, -3) | list }}|{{ range(0) | list }}", {}),
    ("{% for x in 'héllo' %}{{ x }}.{% endfor %}|{% for c in ['a', 'b'] %}{{ loop.cycle('odd', 'even') }}{% endfor %}", {}),
    ("{% for m in messages[::-1] %}{{ m }}{% endfor %}|{% for m in messages | reverse %}{{ m }}{% endfor %}", {"messages": [1, 2, 3]}),
    # scoping: loops don't leak, namespaces do, if doesn't scope
    ("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i * 10 %}{{ x }},{% endfor %}{{ x }}", {}),
    ("{% for i in [1, 2] %}[{{ y }}]{% set y = i %}{% endfor %}[{{ y }}]", {}),
    ("{% set ns = namespace(total=0, seen=[]) %}{% for i in [1, 2, 3] %}{% set ns.total = ns.total + i %}"
     "{% set ns.seen = ns.seen + [i] %}{% endfor %}{{ ns.total }}{{ ns.seen }}{{ ns }}", {}),
    ("{% if true %}{% set z = 5 %}{% endif %}{{ z }}|{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set t = (1, 2) %}{{ t }}", {}),
    ("{% set messages = messages[1:] %}{{ messages | length }}", {"messages": [1, 2, 3]}),
    ("{% set ns = namespace(d={'a': 1}) %}{{ ns.d.a }}{{ ns.missing is defined }}{% set n2 = namespace({'k': 'v'}, z=1) %}{{ n2.k }}{{ n2.z }}", {}),
    ("{{ dict(a=1, b='x') }}|{{ dict({'k': 1}, j=2) }}|{{ dict([['p', 1]]) }}", {}),
    # block set, filter blocks, macros, call blocks
    ("{% set body %}  Hi {{ name }}  {% endset %}[{{ body }}]|{% set t | trim | upper %}  x  {% endset %}[{{ t }}]", {"name": "Ann"}),
    ("{% filter upper %}shout {{ 'it' }}{% endfilter %}|{% filter replace('a', 'o') | trim %}  banana  {% endfilter %}", {}),
    ("{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }}|{{ greet('Bob', '?') }}|{{ greet(punct='.', name='C') }}|[{{ greet() }}]", {}),
    ("{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}", {}),
    ("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * (fact(n - 1) | int) }}{% endif %}{% endmacro %}{{ fact(10) }}", {}),
    ("{% set x = 'outer' %}{% macro show() %}{{ x }}{% endmacro %}{% set x = 'later' %}{{ show() }}", {}),
    ("{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ 1 + 1 }}{% endcall %}", {}),
    ("{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}<{{ x }}>{% endcall %}", {}),
    ("{% generation %}gen {{ 1 }}{% endgeneration %}|{%- generation -%}  trimmed  {%- endgeneration -%}|", {}),
    # whitespace control: trim_blocks, lstrip_blocks, - and +
    ("a\n  {% if true %}\n    b\n  {% endif %}\nc\n", {}),
    ("a\n  {%+ if true %}\n    b\n  {% endif +%}\nc", {}),
    ("a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("x\n    {{ 'v' }}\n    {# comment #}\ny\n  {#- c2 -#}  \nz", {}),
    ("{% for i in [1, 2] %}\n  item {{ i }}\n{% endfor %}\ndone", {}),
    ("{{- '  lead' -}}   \n   {{ 'x' }}  {{- 'y' }}\n", {}),
    ("line1\r\nline2\r  {% if true %}\r\n  kept\r\n  {% endif %}\r\n", {}),
    ("{% raw %}{{ not rendered }} {% if %}{% endraw %}|\n  {% raw -%}  \n  a  {%- endraw %}|", {}),
    ("  {% if true %}x{% endif %}  \n{% if true %}\n{% endif %}trailing\n\n", {}),
    ("{% if true %}\t \n{% endif %}\t{% if true %}y{% endif %}", {}),
    ("a {%- if true %} b{% endif -%}\n\n c {#- x #}  d", {}),
    # undefined and errors
    ("[{{ x }}][{{ x | string }}][{{ x ~ 'a' }}][{{ x | lower }}][{{ x | list }}][{{ x | join }}][{% for i in x %}no{% endfor %}]", {}),
    ("{{ x.y }}", {}),
    ("{{ x + 1 }}", {}),
    ("{{ d.a.b }}", {"d": {"a": None}}),
    ("{{ d.zz.yy }}", {"d": {}}),
    ("{{ l[9].a }}", {"l": [1]}),
    ("{{ 'abc'.nope() }}", {}),
    ("{{ raise_exception('Custom failure: ' ~ 3) }}", {}),
    ("{% if true %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}", {}),
    ("{{ 1 / 0 }}", {}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ [] | tojson }}{{ x | tojson }}", {}),
    ("{{ range(1000000) | length }}", {}),
    ("{{ 1 < 'a' }}", {}),
    ("{{ none.attr }}|{{ 5.attr }}", {}),
    ("{% for x in none %}{% endfor %}", {}),
    ("{{ [1, 2].append(3) }}", {}),
    ("{{ {'a': 1}.update({}) }}", {}),
    ("{% set d = {'a': 1} %}{% set d.a = 2 %}", {}),
    ("{% set ns = namespace() %}{% set ns._private = 1 %}", {}),
    ("{{ (msgs | selectattr('role', 'equalto', 'user') | list)[0].content }}|{% if msgs | selectattr('role', 'equalto', 'x') %}gen is truthy{% endif %}",
     {"msgs": [{"role": "user", "content": "first"}]}),
    ("{{ 'x' | unknown_filter }}", {}),
    ("{% unknowntag %}", {}),
    ("{{ 1 is unknowntest }}", {}),
    ("{% if %}", {}),
    ("{{ 'unterminated }}", {}),
    ("{% for x in [1] %}", {}),
    ("{{ (1 }}", {}),
    ("{% endif %}", {}),
    ("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}),
    ("{% macro m(a) %}{% endmacro %}{{ m(b=1) }}", {}),
    ("{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
    ("{{ strftime_now('%Y-%m-%d %H:%M:%S %a %b %j %%') }}|{{ strftime_now('%d %B %Y') }}", {}),
    # more corners: exact int/float comparison, Unicode, generators, macros, scoping, markup
    ("{{ 9007199254740993 == 9007199254740992.0 }}|{{ 1 < 1.5 }}|{{ [1, 'a'] == [1, 'a'] }}", {}),
    ("{{ 'a' < 'B' }}|{{ 'é' > 'z' }}|{{ (1, 2) < (1, 2, 0) }}|{{ none == 0 }}|{{ false == 0 }}", {}),
    ("{{ \"it's\" | title }}|{{ 'a_b c-d' | title }}|{{ '  lead' | capitalize }}|{{ 'ÉCOLE' | capitalize }}", {}),
    ("{{ 3 | string | length }}|{{ 1.0 | string }}|{{ [1.0, 2] | string }}|{{ {'a': none} | string }}", {}),
    ("{{ 'a\\tb' | replace('\\t', '  ') }}|{{ 'abc' | replace('', '-') }}|{{ 'aaa' | replace('a', '') }}", {}),
    ("{{ ' a b '.split(' ') }}|{{ ''.split() }}|{{ ''.split(',') }}|{{ 'a  b'.split(None, 0) }}|{{ ' a b c '.split(None, 1) }}|{{ ' a b c '.rsplit(None, 1) }}", {}),
    ("{{ 'x'.strip('') }}|{{ 'xyx'.strip('xy') }}|{{ '\\u3000a\\xa0'.strip() }}|{{ '\\x1c a \\x1f'.strip() | length }}", {}),
    ("{{ [1, [2, [3]]] | tojson }}|{{ {'a': {'b': {}}} | tojson(indent=1) }}|{{ 'ü' | tojson(ensure_ascii=True) }}|{{ '\\u2028\\x7f\\x1b' | tojson }}", {}),
    ("{{ d | tojson(indent='\\t') }}|{{ d | tojson(indent=0) }}|{{ d | tojson(indent=-1) }}", {"d": {"a": [1]}}),
    ("{{ 0.1 | tojson }}|{{ 1e-7 | tojson }}|{{ 3.0e15 | tojson }}|{{ 123456789012345678 | tojson }}|{{ -0.0 | tojson }}", {}),
    ("{{ d.f | tojson }}|{{ d.f }}|{{ d.g }}", {"d": {"f": 1e300, "g": 5e-324}}),
    ("{{ (1 / 3) | round(3) }}|{{ 1234.5 | round(-2) }}|{{ -2.5 | round }}|{{ 0.5 | round }}|{{ 1.005 | round(2) }}|{{ 10 | round(1, 'ceil') }}", {}),
    ("{% set x = [3, 1] | sort %}{{ x }}|{{ ['b', 'a', 'B'] | unique | list }}|{{ ['b', 'a', 'B'] | unique(true) | list }}", {}),
    ("{{ [{'a': 2}, {'a': 1}] | sort(attribute='a') }}|{{ [{'a': 'B'}, {'a': 'a'}] | map(attribute='a') | sort | list }}", {}),
    ("{{ users | map(attribute='missing', default='?') | list }}|{{ users | map(attribute='n.0') | list }}", {"users": [{"n": [1]}, {"n": [2]}]}),
    ("{{ [1, 2] | map('string') | list }}|{{ ['a'] | map('upper') | first }}|{{ [[1, 2]] | map('join', '-') | list }}", {}),
    ("{{ [1, 2, 3] | select('>', 1) | list }}|{{ [1, 2, 3] | select('in', [1, 3]) | list }}|{{ ['', 'a'] | reject | list }}", {}),
    ("{% for x in [1, 2, 3] | select('odd') %}{{ loop.length }}{% endfor %}|{{ [3, 2] | sort | first }}|{{ ([1, 2] | reverse | list)[0] }}", {}),
    ("{% set g = [1, 2, 3] | select('odd') %}{{ g | list }}{{ g | list }}|{% set h = [1, 2] | map('string') %}{{ h | first }}{{ h | list }}", {}),
    ("{{ [1, 2] | reverse | length }}", {}),
    ("{{ ([1, 2] | select) | length }}", {}),
    ("{{ [] | first is defined }}|{{ [] | last is defined }}|{{ '' | first is undefined }}|{{ {} | list }}", {}),
    ("{{ x | default }}|{{ x | default(none) }}|{{ none | default('n', boolean=True) }}|{{ false | default('f') }}", {}),
    ("{{ 'abc'[1:] ~ 'abc'[:1] }}|{{ 'abc'[10] is defined }}|{{ [1,2,3][1:2] }}|{{ (1,2,3)[::-1] }}|{{ 'abc'[-10:-1] }}|{{ [1,2,3][-1:0:-1] }}", {}),
    ("{{ l[0:2:0] }}", {"l": [1, 2]}),
    ("{{ 'abc'['x'] }}|{{ [1]['x'] }}|{{ {'a': 1}[0] }}|{{ 5[0] }}|{{ none[0] }}", {}),
    ("{{ loop is defined }}|{% for x in [1] %}{{ loop.depth }}{{ loop.depth0 }}{{ loop | length }}{{ loop.index is number }}{% endfor %}", {}),
    ("{% for x in [1, 2] %}{% set loop_var = loop %}{% endfor %}{{ loop_var is defined }}", {}),
    ("{% for i in [1, 2] %}{% for j in [3, 4] %}{% if j == 4 %}{% break %}{% endif %}{{ i }}{{ j }}{% endfor %}{% endfor %}", {}),
    ("{% for i in [] %}{% else %}{% set z = 1 %}{{ z }}{% endfor %}{{ z }}", {}),
    ("{% macro m(a, b) %}{{ a }}-{{ b }}{% endmacro %}{{ m(1) }}|{{ m(b=2, a=1) }}", {}),
    ("{% macro m(a, b) %}{{ a }}-{{ b is defined }}{% endmacro %}{{ m(1) }}", {}),
    ("{% macro m() %}x{% endmacro %}{{ m }}|{{ m is callable }}|{{ range is callable }}|{{ 'a'.strip is callable }}", {}),
    ("{% macro outer() %}{% macro inner() %}in{% endmacro %}{{ inner() }}{% endmacro %}{{ outer() }}|{{ inner is defined }}", {}),
    ("{% macro m(x) %}{% set x = x + 1 %}{{ x }}{% endmacro %}{% set x = 10 %}{{ m(1) }}{{ x }}", {}),
    ("{% macro m() %}{{ caller is defined }}{% endmacro %}{{ m() }}", {}),
    ("{% macro m() %}{{ caller() }}{% endmacro %}{{ m() }}", {}),
    ("{% set ns = namespace(a=1) %}{% macro bump() %}{% set ns.a = ns.a + 1 %}{% endmacro %}{{ bump() }}{{ bump() }}{{ ns.a }}", {}),
    ("{% set ns = namespace() %}{{ ns.a is defined }}{% set ns.a = [1] %}{{ ns.a }}{{ ns['a'] }}", {}),
    ("{{ namespace(a=1).a }}|{{ dict(a=1).a }}|{{ dict() }}|{{ dict(**{'x': 1}) }}", {}),
    ("{{ range(3)[1] }}|{{ range(3) | length }}|{{ range(5)[1:3] | list }}|{{ 2 in range(3) }}", {}),
    ("{{ 'abc' | list | join('.') }}|{{ 'ab' ~ ['c'] }}|{{ ['a'] ~ ['b'] }}", {}),
    ("{{ 'x' if none else 'y' }}|{{ [] or 'e' }}|{{ {} and 1 }}|{{ 0.0 or 'z' }}|{{ 'a' if 'b' }}", {}),
    ("{% if [] %}t{% elif {} %}t2{% elif 0 %}t3{% else %}f{% endif %}|{% if x.y is defined %}{% endif %}", {}),
    ("{{ 1 if x is defined and x.y else 2 }}", {}),
    ("{{ - 3 ** 2 }}|{{ (-3) ** 2 }}|{{ -x | default(4) }}|{{ not true == false }}|{{ 2 * -1 }}", {}),
    ("{{ 10 % 3 ** 2 }}|{{ 2 ** 0.5 }}|{{ 4 ** 0.5 }}|{{ 1e308 * 10 }}|{{ -1e308 * 10 }}", {}),
    ("{{ 7 // 0.0 }}", {}),
    ("{{ 1 // 0 }}", {}),
    ("{{ 5 % 0 }}", {}),
    ("{{ 'a' * 2.0 }}", {}),
    ("{{ [1] + 'a' }}", {}),
    ("{{ 1 - 'a' }}", {}),
    ("{{ -'a' }}", {}),
    ("{{ 'a' in 1 }}", {}),
    ("{{ 1 in 'abc' }}", {}),
    ("{{ [1] in {'a': 1} }}", {}),
    ("{{ {'a': 1} < {'b': 2} }}", {}),
    ("{{ x() }}", {}),
    ("{{ 'a'() }}", {}),
    ("{{ m.content.strip() }}", {"m": {"role": "user"}}),
    ("{{ m['content'] | trim }}|{{ m.content is none }}|{{ m.content | default('d') }}", {"m": {"role": "user", "content": None}}),
    ("{{ messages[0].content[0].text }}|{{ messages[0]['content'][0]['type'] }}", {"messages": [{"content": [{"type": "text", "text": "t"}]}]}),
    ("{{ x | attr('y') }}|{{ 'a' | attr('upper') is defined }}|{{ {'k': 1} | attr('k') }}", {}),
    ("{{ 'The quick brown fox jumps over' | wordcount }}|{{ 'héllo wörld, 日本語 42_x' | wordcount }}", {}),
    ("{{ [1, 2, 3] | sum(start=10) }}|{{ [0.1, 0.2] | sum }}|{{ [[1], [2]] | sum(start=[]) }}", {}),
    ("{{ ['b', 'a'] | max }}|{{ [{'v': 2}, {'v': 9}] | max(attribute='v') }}|{{ ['B', 'a'] | max(case_sensitive=true) }}", {}),
    ("{{ 'abc' | center(2) }}|{{ 'ab' | center(5) }}|{{ 'ab' | indent(first=true) }}|{{ '' | indent(first=true) }}", {}),
    ("{{ 'a\\r\\nb\\rc' | indent(1) }}|{{ 'x' | indent('--', true) }}", {}),
    ("{{ 'abc' | truncate(2) }}", {}),
    ("{{ '🙂x' | length }}|{{ '🙂x'[0] }}|{{ '🙂x'[1:] }}|{{ '🙂x' | reverse }}|{{ '日本'.find('本') }}", {}),
    ("{{ strftime_now('%A %I%p %U %w %y %C %e|%D|%R|%T|%Z|%z|%f') }}", {}),
    ("{{ strftime_now('') }}|{{ strftime_now('%') }}|{{ strftime_now('%Q') }}", {}),
    ("{% set a, b = 'xy' %}{{ b }}{{ a }}|{% set a, b = [1, 2] %}{{ a + b }}|{% for k, v in {'a': 1}.items() %}{{ k }}{{ v }}{% endfor %}", {}),
    ("{% set x %}{% for i in [1,2] %}{{ i }}{% endfor %}{% endset %}{{ x | length }}{{ x * 2 }}", {}),
    ("{{ '{{' }}|{{ '}}' }}|{{ \"{% raw %}\" }}|{{ '{#' }}", {}),
    ("{# a {{ comment }} with {% tags %} #}x{#-\n-#}y", {}),
    ("{{ 'a' -}}\n\n{{- 'b' }}|{{ 'c' }} {{- ' d' }}", {}),
    ("  {{ 'x' }}\n  {%- if true %}\n  y\n  {%- endif %}\n", {}),
    ("{%- if true -%}\n\n  a\n\n{%- endif -%}\n\nb", {}),
    ("{% if true %}a{% else %}b{% endif %}{% if false %}c{% elif true %}d{% endif %}", {}),
    ("{% for c in 'ab' %}{{ c }}{% if not loop.last %}, {% endif %}{% endfor %}", {}),
    ("{{ tools is none }}|{{ tools is defined }}|{{ documents }}", {"tools": None, "documents": None}),
    ("{{ 1 is divisibleby 0 }}", {}),
    ("{{ 'a' is odd }}", {}),
    ("{{ x is odd }}", {}),
    ("{{ [1, 2] is sameas [1, 2] }}|{{ none is sameas none }}|{{ x is undefined }}|{{ 'x' is escaped }}|{{ ('<'|e) is escaped }}", {}),
]


def expression_cases():
    cases = []
    for source, context in EXPRESSIONS:
        rec = {"source": source, "context": context}
        try:
            tmpl = ctu._compile_jinja_template(source)
        except Exception as e:
            rec["error"] = dict(error_of(e), phase="parse")
            cases.append(rec)
            continue
        try:
            rec["output"] = tmpl.render(**context)
        except Exception as e:
            rec["error"] = dict(error_of(e), phase="render")
        cases.append(rec)
    return cases


def main():
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[1])), exist_ok=True)
    out = {"jinja2": jinja2.__version__, "chat": chat_cases(), "expressions": expression_cases()}
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    n_err = sum("error" in c for c in out["chat"])
    print(f"{len(out['chat'])} chat renderings ({n_err} errors), {len(out['expressions'])} expressions -> {sys.argv[1]}")


if __name__ == "__main__":
    main()
