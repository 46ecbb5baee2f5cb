// Feeds arbitrary bytes, as a JSONL training file, to the data reader in every format and
// both chat-loss modes, with a small byte-level BPE tokenizer and ChatML: the same code
// path as peft train's, tokenization of arbitrary text included. Every outcome must be
// examples or a std::exception. Like fuzz_adapter_config it links the built libpeft.
#include <cstdint>
#include <string>

#include "peft/tokenizer.h"
#include "train/data.h"

namespace {

const peft::Tokenizer& tokenizer() {
  static const auto t = peft::Tokenizer::from_json(R"({"version": "1.0",
    "added_tokens": [{"id": 8, "content": "<|im_start|>", "special": true, "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false},
                     {"id": 9, "content": "<|im_end|>", "special": true, "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "Ġ": 4, "Ċ": 5, "Ġa": 6, "x": 7},
              "merges": ["a b", "Ġ a"], "byte_fallback": false, "ignore_merges": false}})",
                                                   "fuzz");
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const char* format : {"auto", "input_ids", "text", "prompt_completion", "messages", "text_label"})
    for (bool last : {false, true}) {
      peft::DataOptions o;
      o.format = format;
      o.tokenizer = &tokenizer();
      o.max_length = 64;
      o.last_turn_only = last;
      o.skip_bad_lines = last;
      o.vocab_size = 10;
      o.classification = std::string(format) == "text_label";
      o.num_labels = 3;
      o.packing = last && !o.classification;
      try {
        peft::parse_examples(text, "fuzz.jsonl", o);
      } catch (const std::exception&) {
      }
    }
  return 0;
}
