// Serving encoder-decoder models: mixed-adapter batches whose decoder rows are left-padded
// at their own positions (Seq2SeqInputs::decoder_position_ids) against transformers' and
// HF PEFT's logits (tests/parity/make_t5.py), and the engine's continuous batching against
// their greedy generations (tests/parity/make_serving_seq2seq.py). One family per kind of
// decoder positions: T5 (relative), BART (learned), M2M100 (fairseq sinusoids), Marian (a
// sinusoid table).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/engine.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/seq2seq.h"
#include "peft/tuner.h"
#include "token_collector.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

fs::path family_dir(const std::string& family) { return fs::path(PEFT_T5_DIR) / family; }

std::unique_ptr<PeftModel> with_adapters(const std::string& family) {
  auto peft = std::make_unique<PeftModel>(load_model(family_dir(family).string()));
  for (const char* a : {"lora", "ia3"}) peft->load_adapter((family_dir(family) / a).string(), a);
  return peft;
}

class Seq2SeqServing : public ::testing::TestWithParam<std::string> {};

// Three rows with three adapters (base, LoRA, (IA)3), each row's decoder left-padded by a
// different amount and given its own positions: every real position's logits equal
// transformers' (HF PEFT's) for that row alone, fp32 within 1e-4. Once in one forward, once
// prefilled to half the sequence and then stepped one token at a time through the cache.
TEST_P(Seq2SeqServing, LeftPaddedDecoderRowsAtTheirOwnPositionsEqualTransformers) {
  c10::InferenceMode guard;
  const std::string family = GetParam();
  auto peft = with_adapters(family);
  const std::vector<std::string> adapters = {"", "lora", "ia3"};
  const std::vector<int64_t> pads = {0, 3, 1};
  const SafetensorsFile base_ref((family_dir(family) / "reference.safetensors").string());
  const at::Tensor enc_ids = base_ref.get("input_ids"), enc_mask = base_ref.get("attention_mask");
  const at::Tensor dec = base_ref.get("decoder_input_ids");
  ASSERT_EQ(enc_ids.size(0), 3);
  const int64_t t = dec.size(1), width = t + 3;
  auto ids = at::zeros({3, width}, at::kLong), mask = at::zeros({3, width}, at::kLong);
  auto pos = at::zeros({3, width}, at::kLong);
  std::vector<at::Tensor> want;
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t p = pads[i];
    ids[i].narrow(0, p, t).copy_(dec[i]);
    mask[i].narrow(0, p, t).fill_(1);
    pos[i].narrow(0, p, t).copy_(at::arange(t, at::kLong));
    const fs::path ref_dir = adapters[i].empty() ? family_dir(family) : family_dir(family) / adapters[i];
    want.push_back(SafetensorsFile((ref_dir / "reference.safetensors").string()).get("logits")[i]);
  }
  const MixedBatch mixed = peft->mixed_batch(adapters);
  auto check = [&](const at::Tensor& logits, int64_t from, const std::string& how) {
    for (int64_t i = 0; i < 3; ++i) {
      const int64_t p = pads[i];
      const auto got = logits[i].narrow(0, p + from, t - from);
      const double diff = (got - want[i].narrow(0, from, t - from)).abs().max().item<double>();
      EXPECT_LT(diff, 1e-4) << family << " row " << i << " (" << (adapters[i].empty() ? "base" : adapters[i])
                            << ", " << p << " pad columns), " << how;
    }
  };
  {
    Seq2SeqInputs in;
    in.input_ids = enc_ids;
    in.attention_mask = enc_mask;
    in.decoder_input_ids = ids;
    in.decoder_attention_mask = mask;
    in.decoder_position_ids = pos;
    check(peft->forward_mixed(in, mixed).logits, 0, "one forward");
  }
  // Prefill through half the tokens, then one token a step.
  const int64_t half = 3 + t / 2;
  Seq2SeqCache cache;
  Seq2SeqInputs in;
  in.input_ids = enc_ids;
  in.attention_mask = enc_mask;
  in.cache = &cache;
  in.decoder_input_ids = ids.narrow(1, 0, half);
  in.decoder_attention_mask = mask.narrow(1, 0, half);
  in.decoder_position_ids = pos.narrow(1, 0, half);
  auto out = peft->forward_mixed(in, mixed);
  std::vector<at::Tensor> steps = {out.logits};
  in.input_ids = at::Tensor();
  in.encoder_hidden_states = out.encoder_last_hidden_state;
  for (int64_t c = half; c < width; ++c) {
    in.decoder_input_ids = ids.narrow(1, c, 1);
    in.decoder_attention_mask = mask.narrow(1, 0, c + 1);
    in.decoder_position_ids = pos.narrow(1, c, 1);
    steps.push_back(peft->forward_mixed(in, mixed).logits);
  }
  check(at::cat(steps, 1), 0, "prefilled, then cached steps");
}

// Eight requests through a batch of at most three rows, each with its own length, adapter
// and repetition penalty: they join rows already decoding (at other positions, with other
// source widths) and leave at different steps; each gets transformers' greedy tokens.
TEST_P(Seq2SeqServing, EngineRequestsJoiningAndLeavingEqualTransformersGreedy) {
  const std::string family = GetParam();
  auto peft = with_adapters(family);
  const json all = json::parse(std::ifstream(PEFT_SERVING_SEQ2SEQ));
  const json& cases = all.at(family);
  EngineOptions opts;
  opts.max_batch = 3;
  Engine engine(*peft, opts);
  Collector col;
  std::vector<uint64_t> ids(cases.size());
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < cases.size(); ++i) {
    ServeRequest r;
    r.prompt = cases[i]["prompt"].get<std::vector<int64_t>>();
    r.adapter = cases[i]["adapter"].get<std::string>();
    r.gen.repetition_penalty = cases[i]["repetition_penalty"].get<double>();
    r.gen.max_new_tokens = static_cast<int64_t>(10 - (i * 3) % 7);  // 10, 7, 4, 8, 5, ...
    lengths.push_back(r.gen.max_new_tokens);
    r.on_event = col.sink(&ids[i]);
    std::lock_guard lk(col.mu);  // the id is written before the first event reads it
    ids[i] = engine.submit(std::move(r));
  }
  ASSERT_NO_FATAL_FAILURE(col.wait_for(cases.size()));
  for (size_t i = 0; i < cases.size(); ++i) {
    auto want = cases[i]["tokens"].get<std::vector<int64_t>>();
    want.resize(lengths[i]);
    EXPECT_EQ(col.tokens[ids[i]], want) << family << " request " << i << " (adapter '"
                                        << cases[i]["adapter"].get<std::string>() << "')";
    EXPECT_EQ(col.reasons[ids[i]], "length");
  }
  EXPECT_EQ(engine.stats().requests_done, static_cast<int64_t>(cases.size()));
}

INSTANTIATE_TEST_SUITE_P(Families, Seq2SeqServing, ::testing::Values("t5_v11", "bart", "m2m100", "marian"));

// What an encoder-decoder engine cannot run is refused at submit, with the reason: a soft
// prompt (virtual tokens), a prompt beyond the encoder's positions, an answer beyond the
// decoder's.
TEST(Seq2SeqServingRefusals, SoftPromptsAndPositionLimits) {
  PeftModel peft(load_model(family_dir("bart").string()));
  peft.load_adapter((family_dir("bart") / "prompt_tuning").string(), "soft");
  Engine engine(peft);
  ServeRequest r;
  r.prompt = {5, 6, 7};
  r.gen.max_new_tokens = 4;
  r.adapter = "soft";
  EXPECT_THAT([&] { engine.submit(r); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("encoder-decoder model")));
  r.adapter.clear();
  r.prompt.assign(65, 5);  // the fixture's max_position_embeddings is 64
  EXPECT_THAT([&] { engine.submit(r); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("exceeds the encoder's 64 positions")));
  r.prompt = {5, 6, 7};
  r.gen.max_new_tokens = 64;  // plus decoder_start: 65 decoder positions
  EXPECT_THAT([&] { engine.submit(r); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("exceeds the decoder's 64 positions")));
  r.gen.max_new_tokens = 63;
  EXPECT_NO_THROW(engine.submit(r));
  engine.drain();
}

}  // namespace
}  // namespace peft
