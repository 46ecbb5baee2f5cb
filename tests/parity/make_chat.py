"""Reference renderings of the ChatML and Llama-3 chat templates, by Jinja as transformers runs them.

Usage: python tests/parity/make_chat.py OUT.json
"""
import json
import sys

import jinja2

TEMPLATES = {
    # Qwen2-style ChatML without a default system prompt.
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    # Meta-Llama-3-8B-Instruct's template.
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
              "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
              "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
              "{{ content }}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "  Why is the sky blue?\n"},
     {"role": "assistant", "content": "Rayleigh scattering."}, {"role": "user", "content": "Thanks 😀"}],
    [{"role": "user", "content": "line one\nline two\n\n"}, {"role": "assistant", "content": ""}],
]


def main():
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers configures it
    out = []
    for name, src in TEMPLATES.items():
        tmpl = env.from_string(src)
        for conv in CONVERSATIONS:
            for gen in (False, True):
                out.append({"format": name, "template": src, "messages": conv, "add_generation_prompt": gen,
                            "text": tmpl.render(messages=conv, add_generation_prompt=gen,
                                                bos_token="<|begin_of_text|>")})
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print(f"{len(out)} chat renderings -> {sys.argv[1]}")


if __name__ == "__main__":
    main()
