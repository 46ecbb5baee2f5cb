// Tokenizers against HF `tokenizers` (fixtures from tests/parity/make_tokenizers.py): ids,
// tokens, byte offsets, decoding, pairs, batches with padding and truncation; bad files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "peft/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::AllOf;
using nlohmann::json;

namespace peft {
namespace {

fs::path tok_dir() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_tokenizers"; }

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(json::parse(l));
  return out;
}

json offsets_json(const Encoding& e) {
  json o = json::array();
  for (const auto& [s, t] : e.offsets) o.push_back({s, t});
  return o;
}

std::string show(const json& text) { return text.dump(); }

class TokenizerParity : public ::testing::TestWithParam<std::string> {
 protected:
  Tokenizer tok = Tokenizer::from_file((tok_dir() / GetParam()).string());
};

TEST_P(TokenizerParity, IdsTokensOffsetsMatch) {
  auto cases = read_jsonl(tok_dir() / GetParam() / "expected.jsonl");
  ASSERT_GT(cases.size(), 50u);
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    auto e = tok.encode(text);
    EXPECT_EQ(json(e.ids), c["ids"]) << show(c["text"]);
    EXPECT_EQ(json(e.tokens), c["tokens"]) << show(c["text"]);
    EXPECT_EQ(offsets_json(e), c["offsets"]) << show(c["text"]);
    EXPECT_EQ(json(e.special_tokens_mask), c["special_tokens_mask"]) << show(c["text"]);
    EXPECT_EQ(json(tok.encode(text, false).ids), c["ids_no_special"]) << show(c["text"]);
  }
}

TEST_P(TokenizerParity, DecodeMatches) {
  for (const auto& c : read_jsonl(tok_dir() / GetParam() / "expected.jsonl")) {
    const auto ids = c["ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(tok.decode(ids, false), c["decoded"].get<std::string>()) << show(c["text"]);
    EXPECT_EQ(tok.decode(ids, true), c["decoded_skip"].get<std::string>()) << show(c["text"]);
  }
}

TEST_P(TokenizerParity, PairsMatch) {
  for (const auto& c : read_jsonl(tok_dir() / GetParam() / "expected_pairs.jsonl")) {
    auto e = tok.encode_pair(c["a"].get<std::string>(), c["b"].get<std::string>());
    EXPECT_EQ(json(e.ids), c["ids"]) << show(c["a"]);
    EXPECT_EQ(json(e.type_ids), c["type_ids"]) << show(c["a"]);
    EXPECT_EQ(offsets_json(e), c["offsets"]) << show(c["a"]);
  }
}

TEST_P(TokenizerParity, PaddedTruncatedBatchMatches) {
  auto b = json::parse(std::ifstream(tok_dir() / GetParam() / "expected_batch.json"));
  tok.enable_truncation(b["truncation"]["max_length"].get<size_t>());
  PaddingOptions p;
  p.pad_id = b["padding"]["pad_id"].get<int64_t>();
  p.pad_token = b["padding"]["pad_token"].get<std::string>();
  tok.enable_padding(p);
  auto enc = tok.encode_batch(b["texts"].get<std::vector<std::string>>());
  ASSERT_EQ(enc.size(), b["ids"].size());
  for (size_t i = 0; i < enc.size(); ++i) {
    EXPECT_EQ(json(enc[i].ids), b["ids"][i]) << i;
    EXPECT_EQ(json(enc[i].attention_mask), b["attention_mask"][i]) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Hf, TokenizerParity,
                         ::testing::Values("gpt2_bpe", "llama2_bpe", "metaspace_bpe", "bert_wordpiece", "t5_unigram",
                                           "t5_precompiled", "llama3_split", "bert_cased_digits", "wordlevel"));

// --- malformed files -----------------------------------------------------------------

std::string load_error(const std::string& text) {
  try {
    Tokenizer::from_json(text, "bad/tokenizer.json");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerBadInput, MissingModel) {
  EXPECT_THAT(load_error(R"({"version": "1.0", "normalizer": null})"), HasSubstr("bad/tokenizer.json: missing 'model'"));
}

TEST(TokenizerBadInput, UnknownTypes) {
  EXPECT_THAT(load_error(R"({"model": {"type": "SuperBPE", "vocab": {}}})"), HasSubstr("unknown model type 'SuperBPE'"));
  EXPECT_THAT(load_error(R"({"normalizer": {"type": "Sparkle"}, "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}})"),
              HasSubstr("unknown normalizer type 'Sparkle'"));
  EXPECT_THAT(load_error(R"({"pre_tokenizer": {"type": "Nope"}, "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}})"),
              HasSubstr("unknown pre_tokenizer type 'Nope'"));
}

TEST(TokenizerBadInput, BadMerges) {
  EXPECT_THAT(load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})"),
              HasSubstr("merge 0 ('a', 'b') uses a token missing from the vocab"));
  EXPECT_THAT(load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}})"),
              HasSubstr("merge 0 ('ab') is not 'a b'"));
  EXPECT_THAT(load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}})"),
              HasSubstr("merge 0 is neither 'a b' nor [a, b]"));
}

// A charsmap whose trie holds the 128 units ASCII lookups reach (none of them an entry):
// its length (512) then the zero units, in base64.
std::string ascii_only_charsmap() {
  std::string b64 = "AAIA";
  for (int i = 0; i < 171; ++i) b64 += "AAAA";
  return b64;
}

// A corrupt SentencePiece charsmap is an error naming the file: at load, or when a lookup
// would leave the trie (where tokenizers would panic); never a read outside it.
TEST(TokenizerBadInput, CorruptPrecompiledCharsmap) {
  auto with_charsmap = [](const std::string& map) {
    return R"({"normalizer": {"type": "Precompiled", "precompiled_charsmap": ")" + map +
           R"("}, "model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}}})";
  };
  EXPECT_THAT(load_error(with_charsmap("not base64!")),
              AllOf(HasSubstr("bad/tokenizer.json"), HasSubstr("precompiled_charsmap is not base64")));
  EXPECT_THAT(load_error(with_charsmap("kAEAAGFiY2Q=")), HasSubstr("trie (400 bytes) is longer than the map"));
  EXPECT_THAT(load_error(with_charsmap("")), HasSubstr("precompiled_charsmap is shorter than its header"));
  // A root that points past the trie: found when the loader looks the ASCII chars up.
  EXPECT_THAT(load_error(with_charsmap("BAAAAACgDwA=")),
              AllOf(HasSubstr("bad/tokenizer.json"), HasSubstr("trie points outside itself")));
  // One that holds every ASCII byte but not the rest: found at the first such lookup.
  const auto tok = Tokenizer::from_json(with_charsmap(ascii_only_charsmap()), "bad/tokenizer.json");
  EXPECT_EQ(tok.encode("a", false).ids, std::vector<int64_t>{1});
  try {
    tok.encode("\u00e9");
    ADD_FAILURE() << "a lookup outside the trie was not refused";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("bad/tokenizer.json"), HasSubstr("trie points outside itself")));
  }
}

TEST(TokenizerBadInput, InvalidJsonAndVocab) {
  EXPECT_THAT(load_error("{\"model\": "), HasSubstr("invalid JSON"));
  EXPECT_THAT(load_error(R"({"model": {"type": "WordPiece", "vocab": {"a": -3}}})"),
              HasSubstr("vocab id of 'a' is not a non-negative integer"));
}

}  // namespace
}  // namespace peft

// --- chat templates ------------------------------------------------------------------


namespace peft {
namespace {

// The tokenizer renders chat with its own template (Jinja, checked against transformers in
// test_jinja), and with ChatML when it has none, as TRL's setup_chat_format does.
TEST(ChatTemplate, TokenizerUsesItsTemplateOrChatML) {
  const auto dir = fs::path(PEFT_SCRATCH_DIR) / "chat_template_tok";
  fs::create_directories(dir);
  fs::copy_file(tok_dir() / "gpt2_bpe" / "tokenizer.json", dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  fs::remove(dir / "tokenizer_config.json");
  const nlohmann::ordered_json msgs = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])");
  EXPECT_EQ(Tokenizer::from_file(dir.string()).apply_chat_template(msgs, false),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n");
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": "<s>", "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"})";
  EXPECT_EQ(Tokenizer::from_file(dir.string()).apply_chat_template(msgs, true),
            "<s>[user] Hi\n[assistant] Hello!\n[assistant] ");
}

}  // namespace
}  // namespace peft

// --- CLI -----------------------------------------------------------------------------

namespace peft {
namespace {

std::string run_cli(const std::string& args, const std::string& stdin_text, int* status) {
  // One stdin file per test: ctest -j runs tests in parallel processes.
  const auto in = fs::path(PEFT_SCRATCH_DIR) /
                  (std::string("cli_stdin_") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".txt");
  fs::create_directories(in.parent_path());
  std::ofstream(in) << stdin_text;
  return test::run_command(std::string(PEFT_CLI) + " " + args + " < " + in.string(), status);
}

TEST(TokenizeCli, JsonlEncodeAndDecodeMatchTheLibrary) {
  const auto dir = (tok_dir() / "llama2_bpe").string();
  auto tok = Tokenizer::from_file(dir);
  const std::vector<std::string> texts = {"Hello world", "café 😀", "東京"};
  std::string in;
  for (const auto& t : texts) in += json{{"text", t}}.dump() + "\n";
  int status = 0;
  auto out = run_cli("tokenize " + dir + " --jsonl", in, &status);
  ASSERT_EQ(status, 0) << out;
  std::istringstream lines(out);
  std::string decode_in;
  for (const auto& t : texts) {
    std::string l;
    std::getline(lines, l);
    auto j = json::parse(l);
    auto e = tok.encode(t);
    EXPECT_EQ(j["ids"], json(e.ids));
    EXPECT_EQ(j["offsets"], offsets_json(e));
    decode_in += json{{"ids", e.ids}}.dump() + "\n";
  }
  out = run_cli("tokenize " + dir + " --decode --skip-special", decode_in, &status);
  ASSERT_EQ(status, 0) << out;
  std::istringstream dl(out);
  for (const auto& t : texts) {
    std::string l;
    std::getline(dl, l);
    EXPECT_EQ(json::parse(l)["text"], tok.decode(tok.encode(t).ids, true));
  }
}

TEST(TokenizeCli, MalformedLineIsReportedWithItsNumber) {
  int status = 0;
  auto out = run_cli("tokenize " + (tok_dir() / "gpt2_bpe").string() + " --jsonl", "{\"text\": \"ok\"}\n{\"text\": 3}\n",
                     &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("stdin line 2: expected {\"text\": \"...\"}"));
}

}  // namespace
}  // namespace peft
