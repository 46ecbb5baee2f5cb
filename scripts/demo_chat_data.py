"""Chat data for the main demo: ask about a topic, answer with a King James Bible verse.

Writes OUT_DIR/{train,eval}.jsonl with {"messages": [user, assistant]} lines. The user
asks "Speak to me of <topic>."; the assistant answers with a KJV verse about it (from
Debian's bible-kjv-text), so the model learns to answer in the King James style. Topics
held out of training are in OUT_DIR/held_out_topics.txt. Fixed seed; used by
scripts/demo.sh only.
"""
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "parity"))
from make_tokenizers import bible_lines  # noqa: E402

TOPICS = ["light", "water", "bread", "the sea", "fire", "the wind", "a mountain", "the night", "gold", "a king",
          "wisdom", "the earth", "a river", "sheep", "a tree", "rain", "wine", "the sun", "a stone", "a city",
          "war", "peace", "a garden", "the morning", "silver", "a lion", "a horse", "the heavens", "a house",
          "a field"]
HELD_OUT = ["the stars", "a bird", "the moon", "honey"]


def keyword(topic):
    return topic.split()[-1]


def verses_about(verses, topic):
    word = re.compile(r"\b" + re.escape(keyword(topic)) + r"s?\b", re.IGNORECASE)
    return [v for v in verses if word.search(v)]


def main():
    out, per_topic = sys.argv[1], int(sys.argv[2])
    rng = random.Random(7)
    verses = [l for l in bible_lines() if 40 <= len(l) <= 160]
    rows = []
    for topic in TOPICS:
        found = verses_about(verses, topic)
        rng.shuffle(found)
        for v in found[:per_topic]:
            rows.append({"messages": [{"role": "user", "content": f"Speak to me of {topic}."},
                                      {"role": "assistant", "content": v}]})
    rng.shuffle(rows)
    n_eval = max(16, len(rows) // 10)
    os.makedirs(out, exist_ok=True)
    for name, part in (("train", rows[n_eval:]), ("eval", rows[:n_eval])):
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")
    with open(os.path.join(out, "held_out_topics.txt"), "w") as f:
        f.write("\n".join(HELD_OUT) + "\n")
    print(f"{len(rows) - n_eval} training and {n_eval} evaluation conversations in {out}")


if __name__ == "__main__":
    main()
