// `peft serve` at the HTTP level: a server started here on a loopback port, spoken to with
// httplib's client. The model is the llama_mha parity model; its tokenizer is made here
// (one token per ASCII character, a few byte-fallback tokens, a ChatML template), so any
// id the model produces decodes. Greedy answers are checked against peft::generate, with
// adapters merged.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "peft/generate.h"
#include "peft/lora.h"
#include "peft/peft_model.h"
#include "peft/tokenizer.h"
#include "peft/tuner.h"
#include "serve/server.h"
#include "serve/text_stream.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace peft {
namespace {

const fs::path kScratch = fs::path(PEFT_SCRATCH_DIR) / "serve";
const fs::path kBase = fs::path(PEFT_PARITY_DIR) / "llama_mha";

// --- fixtures -----------------------------------------------------------------------

// 128 ids, as many as llama_mha's vocabulary.
json tokenizer_json() {
  json vocab = json::object(), added = json::array();
  auto special = [&](const std::string& s, int id) {
    vocab[s] = id;
    added.push_back({{"id", id}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  };
  special("<unk>", 0);
  special("<s>", 1);
  special("</s>", 2);
  int id = 3;
  for (char c = 32; c < 127; ++c) vocab[std::string(1, c)] = id++;
  for (const char* b : {"<0xC3>", "<0xA9>", "<0xE2>", "<0x82>", "<0xAC>"}) vocab[b] = id++;  // é, €
  vocab["\n"] = id++;
  special("<|im_start|>", id++);
  special("<|im_end|>", id++);
  for (int w = 0; id < 128; ++w) vocab[std::string("w") + std::to_string(w)] = id++;  // decodable, never encoded
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}}},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", true},
            {"ignore_merges", false}, {"vocab", vocab}, {"merges", json::array()}}}};
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

// scratch/model: llama_mha with the tokenizer; scratch/a1, a2: LoRA adapters (random B, so
// they change the output) of different ranks and targets.
void make_fixtures() {
  fs::create_directories(kScratch / "model");
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(kBase / f, kScratch / "model" / f, fs::copy_options::overwrite_existing);
  write(kScratch / "model" / "tokenizer.json", tokenizer_json().dump());
  const std::string chatml =
      "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
  write(kScratch / "model" / "tokenizer_config.json",
        json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"chat_template", chatml}}.dump());
  const std::pair<const char*, const char*> adapters[] = {
      {"a1", R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                 "init_lora_weights": false})"},
      {"a2", R"({"peft_type": "LORA", "r": 2, "lora_alpha": 16, "target_modules": ["o_proj", "up_proj"],
                 "init_lora_weights": false})"}};
  uint64_t seed = 1;
  for (const auto& [name, cfg] : adapters) {
    PeftModel p(load_model(kBase.string()));
    p.add_adapter(name, LoraConfig::from_json(nlohmann::ordered_json::parse(cfg), "test"), seed++);
    p.save_adapter((kScratch / name).string(), name);
  }
  // p1: a soft prompt of 4 virtual tokens (random rows, nn.Embedding's N(0, 1)).
  PeftModel p(load_model(kBase.string()));
  const auto prompt_cfg = nlohmann::ordered_json::parse(
      R"({"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4})");
  p.add_adapter("p1", *parse_user_adapter_config(prompt_cfg, "test"), seed);
  p.save_adapter((kScratch / "p1").string(), "p1");
}

// What the server must answer greedily: peft::generate, the adapter merged (a soft
// prompt, which cannot merge: active).
std::vector<int64_t> expected(const std::string& adapter, const std::vector<int64_t>& prompt, int64_t n) {
  auto model = load_model(kBase.string());
  PeftModel p(model);
  if (!adapter.empty()) {
    p.load_adapter((kScratch / adapter).string(), adapter);
    if (p.virtual_tokens(adapter) == 0) p.merge();
  }
  GenerationConfig g;
  g.max_new_tokens = n;
  g.eos_token_ids = {2};
  c10::InferenceMode guard;
  auto row = generate(*model, {prompt}, g)[0];
  return {row.begin() + static_cast<long>(prompt.size()), row.end()};
}

// peft::generate on the base with `g`: the new tokens.
std::vector<int64_t> expected_with(const GenerationConfig& g, const std::vector<int64_t>& prompt) {
  auto model = load_model(kBase.string());
  c10::InferenceMode guard;
  auto row = generate(*model, {prompt}, g)[0];
  return {row.begin() + static_cast<long>(prompt.size()), row.end()};
}

std::shared_ptr<const Tokenizer> tokenizer() {
  return std::make_shared<const Tokenizer>(Tokenizer::from_file((kScratch / "model").string()));
}

// A server on a free loopback port, the base and adapter a1 loaded.
std::unique_ptr<Server> start_server(ServerOptions o = {}) {
  auto peft = std::make_shared<PeftModel>(load_model(kBase.string()));
  peft->load_adapter((kScratch / "a1").string(), "a1");
  o.port = 0;
  o.served_model_name = "llama";
  auto s = std::make_unique<Server>(peft, tokenizer(), o);
  s->start();
  return s;
}

httplib::Client client(const Server& s) {
  httplib::Client c("127.0.0.1", s.port());
  c.set_read_timeout(120, 0);
  return c;
}

struct Reply {
  int status = 0;
  json body;
  std::string raw;
};

Reply post(const Server& s, const std::string& path, const std::string& body, const httplib::Headers& h = {}) {
  auto c = client(s);
  auto r = c.Post(path.c_str(), h, body, "application/json");
  if (!r) return {-1, nullptr, httplib::to_string(r.error())};
  return {r->status, json::parse(r->body, nullptr, false), r->body};
}

Reply post(const Server& s, const std::string& path, const json& body) { return post(s, path, body.dump()); }

// The error shape every failure must have.
void expect_error(const Reply& r, int status, const std::string& words) {
  EXPECT_EQ(r.status, status) << r.raw;
  ASSERT_TRUE(r.body.is_object() && r.body.contains("error")) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], status);
  EXPECT_TRUE(r.body["error"]["type"].is_string());
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find(words), std::string::npos) << r.raw;
}

// The data lines of an SSE body, [DONE] excluded (checked to be last).
std::vector<json> sse_events(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  bool done = false;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "an event not ended by a blank line";
    if (end == std::string::npos) break;
    const std::string ev = body.substr(pos, end - pos);
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    EXPECT_FALSE(done) << "an event after [DONE]";
    if (ev == "data: [DONE]")
      done = true;
    else
      out.push_back(json::parse(ev.substr(6)));
    pos = end + 2;
  }
  EXPECT_TRUE(done) << "no [DONE]";
  return out;
}

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    make_fixtures();
    server_ = start_server().release();
  }
  static void TearDownTestSuite() { delete server_; }
  static Server* server_;
  const std::vector<int64_t> prompt_{5, 17, 33, 60, 7};
};
Server* Serve::server_ = nullptr;

json greedy(const std::string& model, const json& prompt, int n) {
  return {{"model", model}, {"prompt", prompt}, {"max_tokens", n}, {"temperature", 0}};
}

}  // namespace
}  // namespace peft

namespace peft {
namespace {

// --- completions ----------------------------------------------------------------------

TEST_F(Serve, CompletionWithTokenIdsEqualsGenerate) {
  auto r = post(*server_, "/v1/completions", greedy("llama", prompt_, 12));
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "text_completion");
  EXPECT_EQ(r.body["model"], "llama");
  EXPECT_EQ(r.body["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_TRUE(r.body["created"].is_number_integer());
  const auto& c = r.body["choices"][0];
  EXPECT_EQ(c["index"], 0);
  const auto ids = c["token_ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(ids, expected("", prompt_, 12));
  // A whole decode shows a run of byte tokens that is not all valid UTF-8 as U+FFFD for
  // each byte, where the incremental decode shows the valid characters among them.
  if (std::none_of(ids.begin(), ids.end(), [](int64_t id) { return id >= 98 && id <= 102; }))
    EXPECT_EQ(c["text"], tokenizer()->decode(ids, true));
  EXPECT_EQ(c["finish_reason"], ids.size() == 12 ? "length" : "stop");
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(r.body["usage"]["completion_tokens"], ids.size());
  EXPECT_EQ(r.body["usage"]["total_tokens"], 5 + ids.size());
}

TEST_F(Serve, CompletionWithAdapterEqualsGenerateWithItMerged) {
  auto r = post(*server_, "/v1/completions", greedy("a1", prompt_, 12));
  ASSERT_EQ(r.status, 200) << r.raw;
  const auto ids = r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(ids, expected("a1", prompt_, 12));
  EXPECT_NE(ids, expected("", prompt_, 12)) << "the adapter should change the answer";
}

TEST_F(Serve, TextPromptIsTokenized) {
  auto r = post(*server_, "/v1/completions", greedy("llama", "Hello", 6));
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], tokenizer()->encode("Hello").ids.size());
  EXPECT_EQ(r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>(),
            expected("", tokenizer()->encode("Hello").ids, 6));
}

TEST_F(Serve, ChatGoesThroughTheChatTemplate) {
  json body = {{"model", "a1"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 8},
               {"temperature", 0}};
  auto r = post(*server_, "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "chat.completion");
  const auto& c = r.body["choices"][0];
  EXPECT_EQ(c["message"]["role"], "assistant");
  const auto prompt = tokenizer()->encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", false).ids;
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], prompt.size());
  const auto ids = c["token_ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(ids, expected("a1", prompt, 8));
  if (std::none_of(ids.begin(), ids.end(), [](int64_t id) { return id >= 98 && id <= 102; }))
    EXPECT_EQ(c["message"]["content"], tokenizer()->decode(ids, true));
}

TEST_F(Serve, SeededSamplingIsReproducible) {
  json body = {{"model", "llama"}, {"prompt", prompt_}, {"max_tokens", 10}, {"temperature", 0.9},
               {"top_p", 0.9}, {"top_k", 20}, {"seed", 7}};
  auto a = post(*server_, "/v1/completions", body), b = post(*server_, "/v1/completions", body);
  ASSERT_EQ(a.status, 200) << a.raw;
  EXPECT_EQ(a.body["choices"][0]["token_ids"], b.body["choices"][0]["token_ids"]);
}

// vLLM's repetition_penalty: the engine applies transformers' processor over the prompt and
// the tokens so far, as peft::generate (checked against transformers) does.
TEST_F(Serve, RepetitionPenaltyIsTransformers) {
  json body = greedy("llama", prompt_, 12);
  body["repetition_penalty"] = 1.8;
  auto r = post(*server_, "/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.raw;
  GenerationConfig g;
  g.max_new_tokens = 12;
  g.eos_token_ids = {2};
  g.repetition_penalty = 1.8;
  const auto ids = r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(ids, expected_with(g, prompt_));
  EXPECT_NE(ids, expected("", prompt_, 12)) << "the penalty should change the answer";
}

// What a request leaves out comes from the folder's generation_config.json (vLLM's
// --generation-config auto): sampling settings, the repetition penalty, max_tokens and the
// stop ids; what it names wins.
TEST(ServeDefaults, RequestsTakeTheFoldersGenerationConfig) {
  make_fixtures();
  const auto dir = kScratch / "model_gen";
  fs::create_directories(dir);
  for (const auto& f : fs::directory_iterator(kScratch / "model"))
    fs::copy_file(f.path(), dir / f.path().filename(), fs::copy_options::overwrite_existing);
  const int64_t stop = expected("", {5, 17, 33, 60, 7}, 4)[2];  // a stop id the greedy answer reaches
  write(dir / "generation_config.json",
        json{{"do_sample", true}, {"temperature", 0.8}, {"top_k", 7}, {"top_p", 0.9}, {"repetition_penalty", 1.3},
             {"max_new_tokens", 9}, {"eos_token_id", {2, stop}}}.dump());
  ServerOptions o;
  auto model = load_model(dir.string());
  o.defaults = serving_defaults(*model, dir.string());
  EXPECT_EQ(o.defaults.describe(), "temperature 0.8, top_k 7, top_p 0.9, repetition_penalty 1.3, max_new_tokens 9");
  auto server = start_server(o);
  const std::vector<int64_t> prompt = {9, 40, 22, 13};
  GenerationConfig g;
  g.do_sample = true, g.temperature = 0.8, g.top_k = 7, g.top_p = 0.9, g.repetition_penalty = 1.3;
  g.max_new_tokens = 9, g.seed = 11;
  g.eos_token_ids = {2, stop};
  auto r = post(*server, "/v1/completions", json{{"model", "llama"}, {"prompt", prompt}, {"seed", 11}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>(), expected_with(g, prompt));
  // Named in the request: greedy, no penalty, the folder's stop ids still.
  r = post(*server, "/v1/completions",
           json{{"model", "llama"}, {"prompt", {5, 17, 33, 60, 7}}, {"temperature", 0}, {"repetition_penalty", 1}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>().size(), 3u) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "stop");
  // A folder whose sampling values are out of range (a greedy model's temperature 0) leaves
  // them to the API's defaults.
  write(dir / "generation_config.json", json{{"temperature", 0.0}, {"top_p", 0}}.dump());
  EXPECT_EQ(serving_defaults(*model, dir.string()).describe(), "");
}

// An encoder-decoder model over HTTP: a text prompt is the encoder's input (tokenized with
// its special tokens); the answer is transformers' greedy one with the same repetition
// penalty (tests/parity/make_serving_seq2seq.py), its text tokenizers' decode.
TEST(ServeSeq2Seq, T5TextCompletionEqualsTransformers) {
  const json ref = json::parse(std::ifstream(PEFT_SERVING_SEQ2SEQ)).at("t5_fortunes_text");
  const fs::path dir = fs::path(PEFT_T5_DIR) / "t5_fortunes";
  auto peft = std::make_shared<PeftModel>(load_model(dir.string()));
  ServerOptions o;
  o.port = 0;
  o.served_model_name = "t5";
  Server server(peft, std::make_shared<const Tokenizer>(Tokenizer::from_file(dir.string())), o);
  server.start();
  const auto want = ref["tokens"].get<std::vector<int64_t>>();
  auto r = post(server, "/v1/completions",
                json{{"model", "t5"}, {"prompt", ref["prompt"]}, {"max_tokens", 12}, {"temperature", 0},
                     {"repetition_penalty", 3.0}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], ref["prompt_ids"].size());
  EXPECT_EQ(r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>(), want);
  EXPECT_EQ(r.body["choices"][0]["text"], ref["text"]);
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], want.size() == 12 ? "length" : "stop");
  // forced_bos_token_id (the target language of mBART-50, NLLB, M2M100): the answer
  // starts with it and goes on as transformers' with the same argument.
  const int64_t forced = ref["forced_bos_token_id"].get<int64_t>();
  r = post(server, "/v1/completions",
           json{{"model", "t5"}, {"prompt", ref["prompt"]}, {"max_tokens", 12}, {"temperature", 0},
                {"repetition_penalty", 3.0}, {"forced_bos_token_id", forced}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>(),
            ref["forced_tokens"].get<std::vector<int64_t>>());
  r = post(server, "/v1/completions",
           json{{"model", "t5"}, {"prompt", ref["prompt"]}, {"forced_bos_token_id", 1 << 20}});
  expect_error(r, 400, "outside the vocabulary");
}

// --- streaming ------------------------------------------------------------------------

TEST_F(Serve, StreamAddsUpToTheWholeAnswer) {
  for (bool chat : {false, true}) {
    json body = greedy("a1", prompt_, 14);
    const char* path = "/v1/completions";
    if (chat) {
      body.erase("prompt");
      body["messages"] = {{{"role", "user"}, {"content", "Tell me"}}};
      path = "/v1/chat/completions";
    }
    auto whole = post(*server_, path, body);
    ASSERT_EQ(whole.status, 200) << whole.raw;
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    auto s = post(*server_, path, body.dump());
    ASSERT_EQ(s.status, 200) << s.raw;
    std::string text, finish;
    std::vector<int64_t> ids;
    json usage;
    for (const auto& e : sse_events(s.raw)) {
      EXPECT_EQ(e["object"], chat ? "chat.completion.chunk" : "text_completion");
      if (e.contains("usage")) {
        usage = e["usage"];
        continue;
      }
      const auto& c = e["choices"][0];
      text += chat ? c["delta"].value("content", "") : c["text"].get<std::string>();
      for (auto id : c["token_ids"]) ids.push_back(id);
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
    }
    const auto& w = whole.body["choices"][0];
    EXPECT_EQ(text, chat ? w["message"]["content"] : w["text"]);
    EXPECT_EQ(json(ids), w["token_ids"]);
    EXPECT_EQ(finish, w["finish_reason"]);
    EXPECT_EQ(usage, whole.body["usage"]);
  }
}

// OpenAI's n: n choices, choice i drawn as a request of its own with seed + i; usage counts
// the prompt once and every choice's tokens; streamed, each chunk names its choice, every
// choice ends with its own finish chunk, and they add up to the whole answers.
TEST_F(Serve, SeveralChoicesAreSeparateDraws) {
  for (bool chat : {false, true}) {
    SCOPED_TRACE(chat ? "chat" : "completions");
    json body = {{"model", "a1"}, {"max_tokens", 10}, {"temperature", 1.5}, {"seed", 40}, {"n", 3}};
    const char* path = chat ? "/v1/chat/completions" : "/v1/completions";
    if (chat) body["messages"] = {{{"role", "user"}, {"content", "Tell me"}}};
    else body["prompt"] = prompt_;
    auto whole = post(*server_, path, body);
    ASSERT_EQ(whole.status, 200) << whole.raw;
    const auto& choices = whole.body["choices"];
    ASSERT_EQ(choices.size(), 3u);
    size_t tokens = 0;
    std::set<json> distinct;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(choices[i]["index"], i);
      json one = body;
      one["n"] = 1, one["seed"] = 40 + static_cast<int>(i);
      auto single = post(*server_, path, one);
      ASSERT_EQ(single.status, 200) << single.raw;
      EXPECT_EQ(choices[i]["token_ids"], single.body["choices"][0]["token_ids"]) << "choice " << i;
      tokens += choices[i]["token_ids"].size();
      distinct.insert(choices[i]["token_ids"]);
      EXPECT_EQ(whole.body["usage"]["prompt_tokens"], single.body["usage"]["prompt_tokens"]);
    }
    EXPECT_GT(distinct.size(), 1u) << "draws with different seeds should differ";
    EXPECT_EQ(whole.body["usage"]["completion_tokens"], tokens);

    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    auto s = post(*server_, path, body.dump());
    ASSERT_EQ(s.status, 200) << s.raw;
    std::vector<std::string> text(3);
    std::vector<json> ids(3, json::array()), finish(3);
    json usage;
    for (const auto& e : sse_events(s.raw)) {
      if (e.contains("usage")) {
        usage = e["usage"];
        continue;
      }
      const auto& c = e["choices"][0];
      const size_t i = c["index"].get<size_t>();
      ASSERT_LT(i, 3u);
      EXPECT_TRUE(finish[i].is_null()) << "a chunk of choice " << i << " after its finish";
      text[i] += chat ? c["delta"].value("content", "") : c["text"].get<std::string>();
      for (auto id : c["token_ids"]) ids[i].push_back(id);
      if (!c["finish_reason"].is_null()) finish[i] = c["finish_reason"];
    }
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(text[i], chat ? choices[i]["message"]["content"] : choices[i]["text"]) << i;
      EXPECT_EQ(ids[i], choices[i]["token_ids"]) << i;
      EXPECT_EQ(finish[i], choices[i]["finish_reason"]) << i;
    }
    EXPECT_EQ(usage, whole.body["usage"]);
  }
}

// --- stop strings ---------------------------------------------------------------------

TEST_F(Serve, StopStringCutsTheAnswer) {
  auto whole = post(*server_, "/v1/completions", greedy("llama", prompt_, 20));
  ASSERT_EQ(whole.status, 200);
  const std::string text = whole.body["choices"][0]["text"];
  const auto all_ids = whole.body["choices"][0]["token_ids"].get<std::vector<int64_t>>();
  // Two ASCII characters from the middle of the answer.
  size_t i = text.size() / 2;
  while (i + 2 < text.size() && (static_cast<unsigned char>(text[i]) >= 0x80 ||
                                 static_cast<unsigned char>(text[i + 1]) >= 0x80))
    ++i;
  ASSERT_LT(i + 2, text.size()) << text;
  const std::string stop = text.substr(i, 2);
  const std::string want = text.substr(0, text.find(stop));
  for (bool stream : {false, true}) {
    json body = greedy("llama", prompt_, 20);
    body["stop"] = json::array({"never-there", stop});
    body["stream"] = stream;
    auto r = post(*server_, "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.raw;
    std::string got, finish;
    std::vector<int64_t> ids;
    for (const auto& e : stream ? sse_events(r.raw) : std::vector<json>{r.body}) {
      got += e["choices"][0]["text"].get<std::string>();
      for (auto id : e["choices"][0]["token_ids"]) ids.push_back(id);
      if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
    }
    EXPECT_EQ(got, want) << "stop '" << stop << "' in '" << text << "'";
    EXPECT_EQ(finish, "stop");
    ASSERT_LE(ids.size(), all_ids.size());
    EXPECT_TRUE(std::equal(ids.begin(), ids.end(), all_ids.begin()));
  }
}

// --- models and adapters --------------------------------------------------------------

std::vector<std::string> model_ids(const Server& s) {
  auto c = client(s);
  auto r = c.Get("/v1/models");
  std::vector<std::string> ids;
  if (!r || r->status != 200) return ids;
  const json models = json::parse(r->body);
  for (const auto& m : models["data"]) ids.push_back(m["id"]);
  return ids;
}

int del(const Server& s, const std::string& name) {
  auto c = client(s);
  auto r = c.Delete(("/v1/adapters/" + name).c_str());
  return r ? r->status : -1;
}

TEST_F(Serve, AdaptersLoadListAndUnload) {
  EXPECT_EQ(model_ids(*server_), (std::vector<std::string>{"llama", "a1"}));
  auto r = post(*server_, "/v1/adapters", json{{"name", "a2"}, {"path", (kScratch / "a2").string()}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(model_ids(*server_), (std::vector<std::string>{"llama", "a1", "a2"}));
  auto c = post(*server_, "/v1/completions", greedy("a2", prompt_, 8));
  ASSERT_EQ(c.status, 200) << c.raw;
  EXPECT_EQ(c.body["choices"][0]["token_ids"].get<std::vector<int64_t>>(), expected("a2", prompt_, 8));
  expect_error(post(*server_, "/v1/adapters", json{{"name", "a2"}, {"path", (kScratch / "a2").string()}}), 409,
               "already loaded");
  EXPECT_EQ(del(*server_, "a2"), 200);
  EXPECT_EQ(model_ids(*server_), (std::vector<std::string>{"llama", "a1"}));
  expect_error(post(*server_, "/v1/completions", greedy("a2", prompt_, 4)), 404, "a2");
  EXPECT_EQ(del(*server_, "a2"), 404);
}

// A soft prompt is served beside LoRA adapters: its requests get its virtual tokens (the
// tokens of generate with it alone), and those take context a request for the base has.
TEST_F(Serve, SoftPromptAdapterIsServedAndItsVirtualTokensTakeContext) {
  auto r = post(*server_, "/v1/adapters", json{{"name", "p1"}, {"path", (kScratch / "p1").string()}});
  ASSERT_EQ(r.status, 200) << r.raw;
  auto c = post(*server_, "/v1/completions", greedy("p1", prompt_, 8));
  ASSERT_EQ(c.status, 200) << c.raw;
  const auto ids = c.body["choices"][0]["token_ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(ids, expected("p1", prompt_, 8));
  EXPECT_NE(ids, expected("", prompt_, 8)) << "the soft prompt should change the answer";
  // 58 + 4 fit llama_mha's 64 positions; with p1's 4 virtual tokens they do not.
  const std::vector<int64_t> long_prompt(58, 5);
  EXPECT_EQ(post(*server_, "/v1/completions", greedy("llama", long_prompt, 4)).status, 200);
  expect_error(post(*server_, "/v1/completions", greedy("p1", long_prompt, 4)), 400, "4 virtual tokens");
  // A chat answer without max_tokens may fill the context, virtual tokens counted.
  const json chat = {{"model", "p1"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"temperature", 0}};
  auto a = post(*server_, "/v1/chat/completions", chat);
  EXPECT_EQ(a.status, 200) << a.raw;
  EXPECT_EQ(del(*server_, "p1"), 200);
}

TEST_F(Serve, AdapterLoadErrors) {
  expect_error(post(*server_, "/v1/adapters", std::string("{\"name\": ")), 400, "");
  expect_error(post(*server_, "/v1/adapters", json{{"name", "x"}}), 400, "path");
  expect_error(post(*server_, "/v1/adapters", json{{"name", "x"}, {"path", "/nonexistent/dir"}}), 400, "no adapter");
  expect_error(post(*server_, "/v1/adapters", json{{"name", "x"}, {"path", kBase.string()}}), 400, "no adapter");
  expect_error(post(*server_, "/v1/adapters", json{{"name", "a b"}, {"path", (kScratch / "a2").string()}}), 400,
               "name");
  expect_error(post(*server_, "/v1/adapters", json{{"name", "llama"}, {"path", (kScratch / "a2").string()}}), 409,
               "base");
  // A damaged adapter: config fine, weights missing.
  fs::create_directories(kScratch / "broken");
  fs::copy_file(kScratch / "a2" / "adapter_config.json", kScratch / "broken" / "adapter_config.json",
                fs::copy_options::overwrite_existing);
  expect_error(post(*server_, "/v1/adapters", json{{"name", "broken"}, {"path", (kScratch / "broken").string()}}),
               400, "cannot load adapter 'broken'");
  EXPECT_EQ(model_ids(*server_), (std::vector<std::string>{"llama", "a1"}));
}

TEST_F(Serve, AdaptersComeAndGoWhileRequestsRun) {
  const auto base = expected("", prompt_, 10), a1 = expected("a1", prompt_, 10), a2 = expected("a2", prompt_, 10);
  std::atomic<int> failures{0}, a2_served{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t)
    clients.emplace_back([&, t] {
      for (int i = 0; i < 6; ++i) {
        const std::string model = (t + i) % 3 == 0 ? "llama" : (t + i) % 3 == 1 ? "a1" : "a2";
        auto r = post(*server_, "/v1/completions", greedy(model, prompt_, 10));
        if (model == "a2" && r.status == 404) continue;  // unloaded at that moment
        const auto& want = model == "llama" ? base : model == "a1" ? a1 : a2;
        if (r.status != 200 || r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>() != want) {
          ++failures;
          ADD_FAILURE() << model << ": " << r.raw;
        }
        if (model == "a2") ++a2_served;
      }
    });
  for (int k = 0; k < 4; ++k) {
    auto r = post(*server_, "/v1/adapters", json{{"name", "a2"}, {"path", (kScratch / "a2").string()}});
    EXPECT_EQ(r.status, 200) << r.raw;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(del(*server_, "a2"), 200);
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures, 0);
}

// --- errors ---------------------------------------------------------------------------

// vLLM's min_tokens holds stop ids back for that many tokens, as transformers'
// min_new_tokens; forced_bos_token_id is for encoder-decoder models only.
TEST_F(Serve, MinTokensHoldsStopIdsBack) {
  const int64_t stop = expected("", prompt_, 4)[1];  // the greedy answer reaches it second
  GenerationConfig g;
  g.max_new_tokens = 8;
  g.min_new_tokens = 5;
  g.eos_token_ids = {2, stop};
  const auto want = expected_with(g, prompt_);
  ASSERT_GE(want.size(), 5u);
  ServerOptions o;
  o.eos_token_ids = {2, stop};
  auto server = start_server(o);
  auto r = post(*server, "/v1/completions",
                json{{"model", "llama"}, {"prompt", prompt_}, {"max_tokens", 8}, {"temperature", 0}, {"min_tokens", 5}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>(), want);
  r = post(*server, "/v1/completions", json{{"model", "llama"}, {"prompt", prompt_}, {"min_tokens", 2}});  // max 16
  EXPECT_EQ(r.status, 200) << r.raw;
  r = post(*server, "/v1/completions",
           json{{"model", "llama"}, {"prompt", prompt_}, {"max_tokens", 4}, {"min_tokens", 5}});
  expect_error(r, 400, "'min_tokens' must be between 0 and max_tokens (4)");
  r = post(*server, "/v1/completions", json{{"model", "llama"}, {"prompt", prompt_}, {"forced_bos_token_id", 3}});
  expect_error(r, 400, "applies to encoder-decoder models");
}

TEST_F(Serve, BadRequestsGetOpenAIErrors) {
  const char* c = "/v1/completions";
  expect_error(post(*server_, c, std::string("{not json")), 400, "parse");
  expect_error(post(*server_, c, std::string("[1, 2]")), 400, "object");
  expect_error(post(*server_, c, std::string(100000, '[')), 400, "");  // deep nesting: refused, no crash
  expect_error(post(*server_, c, json{{"prompt", "x"}}), 400, "'model'");
  expect_error(post(*server_, c, greedy("nope", prompt_, 4)), 404, "nope");
  expect_error(post(*server_, c, greedy("llama", json::array(), 4)), 400, "empty");
  expect_error(post(*server_, c, greedy("llama", {1, 200}, 4)), 400, "vocabulary");
  expect_error(post(*server_, c, greedy("llama", {1, -3}, 4)), 400, "vocabulary");
  expect_error(post(*server_, c, greedy("llama", std::vector<int64_t>(70, 5), 4)), 400, "context");
  expect_error(post(*server_, c, greedy("llama", prompt_, 0)), 400, "max_tokens");
  expect_error(post(*server_, c, greedy("llama", prompt_, 60)), 400, "context");
  json fractional = greedy("llama", prompt_, 4);
  fractional["max_tokens"] = 4.5;
  expect_error(post(*server_, c, fractional), 400, "max_tokens");
  auto with = [&](const char* k, const json& v) {
    json b = greedy("llama", prompt_, 4);
    b[k] = v;
    return post(*server_, c, b);
  };
  expect_error(with("n", 0), 400, "'n'");
  expect_error(with("n", 17), 400, "'n'");
  expect_error(with("n", "two"), 400, "'n'");
  expect_error(with("temperature", 5), 400, "temperature");
  expect_error(with("top_p", 0), 400, "top_p");
  expect_error(with("top_k", -5), 400, "top_k");
  expect_error(with("min_p", 1.5), 400, "min_p");
  expect_error(with("repetition_penalty", 0), 400, "repetition_penalty");
  expect_error(with("repetition_penalty", "high"), 400, "repetition_penalty");
  expect_error(with("stop", 3), 400, "stop");
  expect_error(with("stop", json::array({""})), 400, "stop");
  expect_error(with("stream", "yes"), 400, "stream");
  expect_error(post(*server_, "/v1/chat/completions", json{{"model", "llama"}, {"messages", "hi"}}), 400,
               "messages");
  expect_error(post(*server_, "/v1/chat/completions", json{{"model", "llama"}, {"messages", {{{"content", "x"}}}}}),
               400, "role");
  expect_error(post(*server_, "/v1/nothing", std::string("{}")), 404, "no route");
  // Beyond the 8 MiB bound: 413, or the connection closed while the client still sends.
  auto big = post(*server_, c, std::string(9u << 20, ' '));
  if (big.status != -1) expect_error(big, 413, "too large");
  // The server is still fine.
  EXPECT_EQ(post(*server_, c, greedy("llama", prompt_, 2)).status, 200);
}

TEST(ServeLimits, FullQueueIs429) {
  make_fixtures();
  ServerOptions o;
  o.engine.max_queue = 0;
  auto s = start_server(o);
  expect_error(post(*s, "/v1/completions", greedy("llama", std::vector<int64_t>{1, 2}, 2)), 429, "queue");
}

TEST(ServeLimits, ApiKeyIsRequired) {
  make_fixtures();
  ServerOptions o;
  o.api_key = "s3cret";
  auto s = start_server(o);
  const auto body = greedy("llama", std::vector<int64_t>{1, 2}, 2).dump();
  expect_error(post(*s, "/v1/completions", body), 401, "API key");
  expect_error(post(*s, "/v1/completions", body, {{"Authorization", "Bearer wrong"}}), 401, "API key");
  EXPECT_EQ(post(*s, "/v1/completions", body, {{"Authorization", "Bearer s3cret"}}).status, 200);
  auto c = client(*s);
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  EXPECT_EQ(c.Get("/metrics")->status, 401);
  EXPECT_EQ(c.Get("/health")->status, 200);  // liveness needs no key
}

// --- health, metrics, shutdown ----------------------------------------------------------

TEST_F(Serve, HealthAndMetrics) {
  ASSERT_EQ(post(*server_, "/v1/completions", greedy("a1", prompt_, 5)).status, 200);
  auto c = client(*server_);
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  for (const char* line : {"# TYPE peft_queue_depth gauge", "# TYPE peft_running_requests gauge",
                           "peft_adapters_resident 1", "# TYPE peft_generated_tokens_total counter",
                           "# TYPE peft_time_to_first_token_seconds histogram",
                           "peft_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
                           "# TYPE peft_inter_token_latency_seconds histogram", "peft_http_responses_total{code=\"200\"}",
                           "peft_engine_ttft_seconds{quantile=\"0.5\"}"})
    EXPECT_NE(m->body.find(line), std::string::npos) << line << "\n" << m->body;
  EXPECT_EQ(m->body.find("peft_generated_tokens_total 0\n"), std::string::npos);
}

TEST(ServeLimits, StopDrainsRunningRequests) {
  make_fixtures();
  auto s = start_server();
  Reply r;
  std::thread t([&] { r = post(*s, "/v1/completions", greedy("a1", std::vector<int64_t>{3, 4}, 40).dump()); });
  // Wait until the engine has the request, then stop: it must still be answered in full.
  for (int i = 0; i < 500; ++i) {
    auto c = client(*s);
    auto m = c.Get("/metrics");
    if (m && m->body.find("peft_requests_submitted_total 1\n") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  s->stop();
  t.join();
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["token_ids"].get<std::vector<int64_t>>(), expected("a1", {3, 4}, 40));
  EXPECT_EQ(post(*s, "/v1/completions", greedy("a1", std::vector<int64_t>{3}, 2).dump()).status, -1);  // closed
}

// --- text streaming pieces ---------------------------------------------------------------

TEST(ServeText, SplitCharactersAreHeldBackUntilComplete) {
  make_fixtures();
  auto tok = tokenizer();
  const auto ids = tok->encode("a\xC3\xA9\xE2\x82\xAC" "b", false).ids;  // a é € b
  ASSERT_EQ(ids.size(), 7u);
  IncrementalDecoder d(*tok, {});
  std::vector<std::string> shown;
  for (auto id : ids) shown.push_back(d.push(id));
  shown.push_back(d.flush());
  EXPECT_EQ(shown, (std::vector<std::string>{"a", "", "\xC3\xA9", "", "", "\xE2\x82\xAC", "b", ""}));
  // An incomplete character at the very end comes out at flush, as the tokenizer shows it.
  IncrementalDecoder e(*tok, {});
  EXPECT_EQ(e.push(ids[0]), "a");
  EXPECT_EQ(e.push(ids[1]), "");
  EXPECT_EQ(e.flush(), tok->decode({ids[1]}));
}

TEST(ServeText, StopStringsAcrossPieces) {
  StopStrings s({"END", "xy"});
  EXPECT_EQ(s.push("abcE"), "abc");  // "E" may start "END"
  EXPECT_EQ(s.push("N"), "");
  EXPECT_EQ(s.push("Xz"), "ENXz");
  EXPECT_EQ(s.push("qqEN"), "qq");
  EXPECT_EQ(s.push("Dtail"), "");
  EXPECT_TRUE(s.hit());
  EXPECT_EQ(s.flush(), "");
  StopStrings t({"xy"});
  EXPECT_EQ(t.push("ax"), "a");
  EXPECT_EQ(t.flush(), "x");
}

// --- the CLI ----------------------------------------------------------------------------

TEST(ServeCli, ServesUntilSigtermThenDrains) {
  make_fixtures();
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const std::string cli = PEFT_CLI, model = (kScratch / "model").string(), a1 = "a1=" + (kScratch / "a1").string();
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    alarm(120);
    execl(cli.c_str(), cli.c_str(), "serve", model.c_str(), "--adapter", a1.c_str(), "--port", "0", nullptr);
    _exit(127);
  }
  close(out[1]);
  std::string log;
  char buf[512];
  int port = 0;
  while (port == 0) {
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    log.append(buf, static_cast<size_t>(n));
    const auto at = log.find("http://127.0.0.1:");
    if (at != std::string::npos && log.find(' ', at) != std::string::npos)
      port = std::stoi(log.substr(at + 17));
  }
  ASSERT_GT(port, 0) << log;
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_NE(models->body.find("\"model\""), std::string::npos) << "the folder's name serves the base";
  auto r = c.Post("/v1/completions", greedy("a1", std::vector<int64_t>{5, 6}, 6).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  kill(pid, SIGTERM);
  while (true) {
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    log.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
}

TEST(ServeCli, HelpHasAnExample) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const std::string cli = PEFT_CLI;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(cli.c_str(), cli.c_str(), "serve", "--help", nullptr);
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[512];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  waitpid(pid, nullptr, 0);
  for (const char* s : {"Example", "--adapter", "--api-key", "--max-batch", "--port"})
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
}

}  // namespace
}  // namespace peft
