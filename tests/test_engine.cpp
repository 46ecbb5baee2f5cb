// Serving engine: mixed-adapter batches (PeftModel::forward_mixed) and continuous
// batching (Engine) against HF PEFT's greedy generations with each adapter alone
// (tests/parity/make_serving.py), and against our own merged models.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "peft/engine.h"
#include "peft/generate.h"
#include "peft/peft_model.h"
#include "peft/tuner.h"
#include "token_collector.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

fs::path base_dir() { return fs::path(PEFT_PARITY_DIR) / "llama_mha"; }
fs::path serving_dir() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_serving"; }

struct Case {
  std::vector<int64_t> prompt, tokens;
  std::string adapter;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const auto& r : json::parse(std::ifstream(serving_dir() / "requests.json")))
    out.push_back({r["prompt"].get<std::vector<int64_t>>(), r["tokens"].get<std::vector<int64_t>>(),
                   r["adapter"].get<std::string>()});
  return out;
}

std::vector<std::string> adapter_names() {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(serving_dir()))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::unique_ptr<PeftModel> model_with_all_adapters() {
  auto peft = std::make_unique<PeftModel>(load_model(base_dir().string()));
  for (const auto& n : adapter_names()) peft->load_adapter((serving_dir() / n).string(), n);
  return peft;
}

ServeRequest request(const Case& c, int64_t new_tokens) {
  ServeRequest r;
  r.prompt = c.prompt;
  r.adapter = c.adapter;
  r.gen.max_new_tokens = new_tokens;
  return r;
}

// Every row of one left-padded batch with its own adapter gives the logits that adapter
// gives alone (fp32, 1e-4); soft-prompt and prefix rows get their virtual tokens
// (with_virtual_tokens).
TEST(MixedBatch, EachRowEqualsItsAdapterAlone) {
  c10::InferenceMode guard;
  auto peft = model_with_all_adapters();
  const auto cs = cases();
  const int64_t b = static_cast<int64_t>(cs.size());
  int64_t len = 0;
  for (const auto& c : cs) len = std::max<int64_t>(len, c.prompt.size());
  auto ids = at::zeros({b, len}, at::kLong), mask = at::zeros({b, len}, at::kLong);
  std::vector<std::string> rows;
  int64_t virtual_rows = 0;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t n = cs[i].prompt.size();
    ids[i].narrow(0, len - n, n).copy_(at::tensor(cs[i].prompt, at::kLong));
    mask[i].narrow(0, len - n, n).fill_(1);
    rows.push_back(cs[i].adapter);
    virtual_rows += peft->virtual_tokens(cs[i].adapter) > 0;
  }
  EXPECT_GE(virtual_rows, 5);  // prompt tuning, P-tuning and prefix rows are in the batch
  KVCache cache;
  ModelInputs in;
  in.input_ids = ids;
  in.attention_mask = mask;
  in.cache = &cache;
  const MixedBatch m = peft->mixed_batch(rows);
  EXPECT_THAT([&] { peft->forward_mixed(in, m); }, ::testing::ThrowsMessage<std::invalid_argument>(
                                                       HasSubstr("need its virtual tokens in their inputs")));
  const ModelInputs placed = peft->with_virtual_tokens(in, m);
  EXPECT_EQ(cache.length(), 4);                             // the prefix: 4 positions
  EXPECT_EQ(placed.attention_mask.size(1), 4 + 5 + len);  // and the longest soft prompt: 5
  auto mixed = peft->forward_mixed(placed, m).logits;
  const int64_t wide = mixed.size(1);
  for (int64_t i = 0; i < b; ++i) {
    ModelInputs one;
    const int64_t n = cs[i].prompt.size();
    one.input_ids = ids.narrow(0, i, 1).narrow(1, len - n, n);
    at::Tensor alone;
    if (cs[i].adapter.empty()) {
      auto off = peft->disable_adapters();
      alone = peft->forward(one).logits;
    } else {
      peft->set_adapter({cs[i].adapter});
      alone = peft->forward(one).logits;
    }
    // The fp32 logit bound: one row and a batch take different GEMM blockings (4.7e-5 seen
    // on one intra-op thread).
    const double diff = (mixed.narrow(0, i, 1).narrow(1, wide - n, n) - alone).abs().max().item<double>();
    EXPECT_LE(diff, 1e-4) << "row " << i << " (" << cs[i].adapter << ")";
  }
}

// Soft prompts and prefixes join mixed batches only through with_virtual_tokens, with
// left padding (and a cache for prefixes); task-routed prompts still cannot join, and
// virtual tokens have no scale to set.
TEST(MixedBatch, VirtualTokensNeedLeftPaddingAndTaskRoutedPromptsAreRefused) {
  c10::InferenceMode guard;
  auto peft = model_with_all_adapters();
  ModelInputs in;
  in.input_ids = at::ones({2, 3}, at::kLong);
  in.attention_mask = at::tensor({1, 1, 0, 1, 1, 1}, at::kLong).view({2, 3});  // row 0 padded on the right
  using ::testing::ThrowsMessage;
  EXPECT_THAT([&] { peft->with_virtual_tokens(in, peft->mixed_batch({"prompt", ""})); },
              ThrowsMessage<std::invalid_argument>(HasSubstr("must pad on the left")));
  in.attention_mask = at::ones({2, 3}, at::kLong);
  EXPECT_THAT([&] { peft->with_virtual_tokens(in, peft->mixed_batch({"prefix", ""})); },
              ThrowsMessage<std::invalid_argument>(HasSubstr("prefixes need a KV cache")));
  for (const char* name : {"prompt", "prefix"})
    EXPECT_THAT([&] { peft->set_adapter_scale(name, 0.5); },
                ThrowsMessage<std::invalid_argument>(HasSubstr("has no scale to set")));
  const auto mpt = nlohmann::ordered_json::parse(R"({"peft_type": "MULTITASK_PROMPT_TUNING",
      "task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "num_tasks": 2})");
  peft->add_adapter("mpt", *parse_user_adapter_config(mpt, "test"));
  EXPECT_THAT(peft->mixed_batch_refusal("mpt"), HasSubstr("cannot join a batch mixing adapters"));
  EXPECT_EQ(peft->mixed_batch_refusal("ptuning"), "");
  EXPECT_EQ(peft->mixed_batch_refusal("prefix"), "");
  EXPECT_EQ(peft->virtual_tokens("all_r8"), 0);
  EXPECT_EQ(peft->virtual_tokens("prefix"), 4);
}

// All requests at once, 11 adapters (2 soft prompts and a prefix among them) and the base
// in one running batch: HF PEFT's greedy tokens for each request with its adapter alone,
// and ours with that adapter merged (soft prompts and prefixes: alone).
TEST(Engine, MixedBatchGreedyTokensEqualHfAndMerged) {
  auto peft = model_with_all_adapters();
  const auto cs = cases();
  Collector got;
  std::vector<uint64_t> ids(cs.size());
  {
    Engine engine(*peft, {.max_batch = 16});
    for (size_t i = 0; i < cs.size(); ++i) {
      auto r = request(cs[i], static_cast<int64_t>(cs[i].tokens.size()));
      r.on_event = got.sink(&ids[i]);
      std::lock_guard lk(got.mu);  // the id is known before the first event reads it
      ids[i] = engine.submit(std::move(r));
    }
    got.wait_for(cs.size());
    EXPECT_GE(engine.stats().steps, 1);
  }
  for (size_t i = 0; i < cs.size(); ++i) {
    EXPECT_EQ(got.tokens[ids[i]], cs[i].tokens) << "request " << i << " (" << cs[i].adapter << ")";
    EXPECT_EQ(got.reasons[ids[i]], "length");
    PeftModel merged(load_model(base_dir().string()));  // soft prompts, prefixes cannot merge: as loaded
    if (!cs[i].adapter.empty()) {
      merged.load_adapter((serving_dir() / cs[i].adapter).string(), cs[i].adapter);
      if (merged.virtual_tokens(cs[i].adapter) == 0) merged.merge();
    }
    GenerationConfig g;
    g.max_new_tokens = static_cast<int64_t>(cs[i].tokens.size());
    auto out = generate(merged.model(), {cs[i].prompt}, g)[0];
    EXPECT_EQ(std::vector<int64_t>(out.begin() + cs[i].prompt.size(), out.end()), got.tokens[ids[i]]) << "merged " << i;
  }
}

// Requests that come and go: a batch of 3, different lengths, later arrivals join while
// others run; every request still gets exactly its tokens.
TEST(Engine, RequestsJoinAndLeaveTheRunningBatch) {
  auto peft = model_with_all_adapters();
  const auto cs = cases();
  Collector got;
  std::vector<uint64_t> ids(cs.size());
  std::vector<int64_t> lengths;
  {
    Engine engine(*peft, {.max_batch = 3, .max_kv_tokens = 60});
    for (size_t i = 0; i < cs.size(); ++i) {
      lengths.push_back(1 + static_cast<int64_t>(i * 5 % cs[i].tokens.size()));
      auto r = request(cs[i], lengths.back());
      r.on_event = got.sink(&ids[i]);
      {
        std::lock_guard lk(got.mu);
        ids[i] = engine.submit(std::move(r));
      }
      if (i % 3 == 1) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    got.wait_for(cs.size());
    engine.drain();
    const auto st = engine.stats();
    EXPECT_EQ(st.requests_done, static_cast<int64_t>(cs.size()));
    EXPECT_EQ(st.running, 0);
  }
  for (size_t i = 0; i < cs.size(); ++i)
    EXPECT_EQ(got.tokens[ids[i]], std::vector<int64_t>(cs[i].tokens.begin(), cs[i].tokens.begin() + lengths[i]))
        << "request " << i;
}

TEST(Engine, StopIdsCancelAndRunTimeAdapters) {
  auto peft = std::make_unique<PeftModel>(load_model(base_dir().string()));
  const auto cs = cases();
  const Case* with = nullptr;
  for (const auto& c : cs)
    if (c.adapter == "all_r8") with = &c;
  ASSERT_NE(with, nullptr);
  Engine engine(*peft, {.max_batch = 4, .max_queue = 2});
  // Not loaded yet: refused by name; then loaded between steps and used.
  EXPECT_THROW(engine.submit(request(*with, 3)), UnknownAdapter);
  engine.run_between_steps([&](PeftModel& m) { m.load_adapter((serving_dir() / "all_r8").string(), "all_r8"); });
  Collector got;
  uint64_t a = 0, b = 0;
  auto ra = request(*with, static_cast<int64_t>(with->tokens.size()));
  ra.gen.eos_token_ids = {with->tokens[2]};  // a stop id: ends at the third token
  ra.on_event = got.sink(&a);
  {
    std::lock_guard lk(got.mu);
    a = engine.submit(std::move(ra));
  }
  got.wait_for(1);
  EXPECT_EQ(got.tokens[a], std::vector<int64_t>(with->tokens.begin(), with->tokens.begin() + 3));
  EXPECT_EQ(got.reasons[a], "stop");
  // A long request, cancelled while it runs.
  auto rb = request(*with, 400);
  rb.on_event = got.sink(&b);
  {
    std::lock_guard lk(got.mu);
    b = engine.submit(std::move(rb));
  }
  EXPECT_TRUE(engine.cancel(b));
  got.wait_for(2);
  EXPECT_EQ(got.reasons[b], "cancelled");
  EXPECT_FALSE(engine.cancel(b));
  // Removed under a running request: that request ends with an error naming it.
  uint64_t c = 0;
  auto rc = request(*with, 400);
  rc.on_event = got.sink(&c);
  {
    std::lock_guard lk(got.mu);
    c = engine.submit(std::move(rc));
  }
  {
    std::unique_lock lk(got.mu);  // running: its first token is out
    ASSERT_TRUE(got.cv.wait_for(lk, std::chrono::seconds(60), [&] { return !got.tokens[c].empty(); }));
  }
  engine.run_between_steps([](PeftModel& m) { m.delete_adapter("all_r8"); });
  got.wait_for(3);
  EXPECT_THAT(got.reasons[c], HasSubstr("adapter 'all_r8' was removed while the request ran"));
  // Removed between steps: refused again.
  EXPECT_THROW(engine.submit(request(*with, 3)), UnknownAdapter);
  EXPECT_TRUE(engine.adapters().empty());
}

// More registered adapters than may stay resident: the least recently used idle one is
// unloaded and read again when a request names it; tokens stay exact.
TEST(Engine, RegistryKeepsAtMostTheResidentBoundAndReloadsOnDemand) {
  auto peft = std::make_unique<PeftModel>(load_model(base_dir().string()));
  const auto cs = cases();
  Engine engine(*peft, {.max_batch = 4, .max_resident_adapters = 2});
  for (const auto& n : adapter_names()) engine.register_adapter(n, (serving_dir() / n).string());
  EXPECT_EQ(engine.adapters(), adapter_names());
  EXPECT_THROW(engine.register_adapter("qv_r2", (serving_dir() / "qv_r2").string()), std::invalid_argument);
  try {
    engine.register_adapter("broken", (serving_dir() / "no_such_folder").string());
    FAIL() << "a missing folder registered";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("no_such_folder"));
  }
  EXPECT_EQ(engine.adapters().size(), adapter_names().size());  // the failed one is not left behind
  EXPECT_LE(engine.stats().adapters_resident, 2);
  // Every case one after the other, twice: adapters cycle through the two resident slots.
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& c : cs) {
      Collector got;
      uint64_t id = 0;
      auto r = request(c, static_cast<int64_t>(c.tokens.size()));
      r.on_event = got.sink(&id);
      {
        std::lock_guard lk(got.mu);
        id = engine.submit(std::move(r));
      }
      got.wait_for(1);
      EXPECT_EQ(got.tokens[id], c.tokens) << c.adapter << " pass " << pass;
      EXPECT_LE(engine.stats().adapters_resident, 2);
    }
  const auto st = engine.stats();
  EXPECT_EQ(st.adapters_registered, static_cast<int64_t>(adapter_names().size()));
  EXPECT_GT(st.adapter_evictions, 0);
  EXPECT_GT(st.adapter_loads, static_cast<int64_t>(adapter_names().size()));
  engine.unregister_adapter("qv_r2");
  EXPECT_THROW(engine.unregister_adapter("qv_r2"), UnknownAdapter);
  EXPECT_THROW(engine.submit(request(cs[0], 2)), UnknownAdapter);
}

// A per-adapter scale (HF PEFT's set_scale): at 0 an adapter's requests get the base
// model's tokens (HF's, for the base request's prompt); at 1 its own.
TEST(Engine, AdapterScaleZeroGivesTheBaseAndOneTheAdapter) {
  auto peft = std::make_unique<PeftModel>(load_model(base_dir().string()));
  const auto cs = cases();
  const Case* base = nullptr;
  for (const auto& c : cs)
    if (c.adapter.empty()) base = &c;
  ASSERT_NE(base, nullptr);
  Engine engine(*peft, {.max_batch = 4});
  engine.register_adapter("all_r8_off", (serving_dir() / "all_r8").string(), 0.0);
  engine.register_adapter("all_r8_on", (serving_dir() / "all_r8").string(), 1.0);
  engine.register_adapter("loha_off", (serving_dir() / "loha").string(), 0.0);
  EXPECT_THROW(engine.register_adapter("ia3_half", (serving_dir() / "ia3").string(), 0.5), std::invalid_argument);
  EXPECT_THROW(engine.register_adapter("prompt_half", (serving_dir() / "prompt").string(), 0.5), std::invalid_argument);
  Collector got;
  std::vector<uint64_t> ids(2);
  const std::vector<std::string> names = {"all_r8_off", "loha_off"};
  for (size_t i = 0; i < names.size(); ++i) {
    Case c = *base;
    c.adapter = names[i];
    auto r = request(c, static_cast<int64_t>(c.tokens.size()));
    r.on_event = got.sink(&ids[i]);
    std::lock_guard lk(got.mu);
    ids[i] = engine.submit(std::move(r));
  }
  got.wait_for(2);
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(got.tokens[ids[i]], base->tokens) << names[i];
  for (const auto& c : cs) {
    if (c.adapter != "all_r8") continue;
    uint64_t id = 0;
    size_t before;
    {
      std::lock_guard lk(got.mu);
      before = got.reasons.size();
    }
    Case on = c;
    on.adapter = "all_r8_on";
    auto r = request(on, static_cast<int64_t>(c.tokens.size()));
    r.on_event = got.sink(&id);
    {
      std::lock_guard lk(got.mu);
      id = engine.submit(std::move(r));
    }
    got.wait_for(before + 1);
    EXPECT_EQ(got.tokens[id], c.tokens);
  }
}

TEST(Engine, BadRequestsAreRefusedWithTheReason) {
  auto peft = std::make_unique<PeftModel>(load_model(base_dir().string()));
  Engine engine(*peft, {.max_batch = 1, .max_kv_tokens = 64, .max_queue = 1, .max_context = 48});
  auto why = [&](ServeRequest r) {
    try {
      engine.submit(std::move(r));
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  ServeRequest r;
  EXPECT_THAT(why(r), HasSubstr("the prompt is empty"));
  r.prompt = {1, 2, 3};
  r.gen.max_new_tokens = 46;
  EXPECT_THAT(why(r), HasSubstr("exceeds the context of 48"));
  // A soft prompt's virtual tokens count against the context and the KV budget.
  engine.run_between_steps([&](PeftModel& m) { m.load_adapter((serving_dir() / "prompt").string(), "prompt"); });
  r.adapter = "prompt";
  r.gen.max_new_tokens = 41;  // 3 + 41 fit 48; 5 virtual tokens more do not
  EXPECT_THAT(why(r), HasSubstr("and the adapter's 5 virtual tokens exceeds the context of 48"));
  r.adapter.clear();
  r.gen.max_new_tokens = 4;
  r.prompt = {1, 100000};
  EXPECT_THAT(why(r), HasSubstr("token id 100000 is outside the vocabulary"));
  r.prompt = {1, 2};
  r.gen.top_p = 0;
  EXPECT_THAT(why(r), HasSubstr("top_p"));
  // A full queue: the engine is held between steps so nothing leaves it.
  std::mutex hold;
  std::unique_lock lk(hold);
  std::thread blocker([&] { engine.run_between_steps([&](PeftModel&) { std::lock_guard l(hold); }); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  r.gen.top_p = 1;
  EXPECT_EQ(why(r), "accepted");
  EXPECT_THROW(engine.submit(r), QueueFull);
  lk.unlock();
  blocker.join();
  engine.drain();
  EXPECT_THROW(engine.submit(r), QueueFull);  // draining: nothing new
}

}  // namespace
}  // namespace peft
