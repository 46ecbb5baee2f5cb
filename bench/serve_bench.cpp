// Serving engine throughput: many adapters in mixed batches against one merged model, and
// the cost of a large adapter registry. Run by bench/serve_bench.py beside HF PEFT.
//
// Usage: bench_serve MODEL_DIR ADAPTERS_DIR [requests 128] [batch 16] [prompt 32] [new 32]
//                    [registered 1000]
// ADAPTERS_DIR holds one HF PEFT LoRA adapter folder per adapter. Requests pick their
// adapter with Zipf(1) popularity (seeded), prompts are random ids, decoding is greedy.
// Prints one JSON object.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "peft/engine.h"
#include "peft/layers.h"
#include "peft/lora.h"
#include "peft/peft_model.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

int64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * 4096;
}

struct Load {
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::string> adapters;
};

// Runs every request through an engine (all submitted at once); returns tokens/s and the
// engine's latency samples.
nlohmann::json serve(peft::PeftModel& peft, const Load& load, int64_t batch, int64_t new_tokens) {
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0, tokens = 0;
  peft::Engine engine(peft, {.max_batch = batch, .max_kv_tokens = int64_t{1} << 30,
                             .max_queue = static_cast<int64_t>(load.prompts.size())});
  const auto t0 = Clock::now();
  for (size_t i = 0; i < load.prompts.size(); ++i) {
    peft::ServeRequest r;
    r.prompt = load.prompts[i];
    r.adapter = load.adapters[i];
    r.gen.max_new_tokens = new_tokens;
    r.on_event = [&](const peft::TokenEvent& e) {
      std::lock_guard lk(mu);
      tokens += e.token >= 0;
      if (e.done) ++done, cv.notify_all();
    };
    engine.submit(std::move(r));
  }
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return done == load.prompts.size(); });
  const double wall = seconds_since(t0);
  const auto st = engine.stats();
  return {{"tokens_per_second", tokens / wall}, {"wall_s", wall}, {"steps", st.steps},
          {"ttft_p50_ms", 1e3 * percentile(st.ttft_seconds, 0.5)}, {"ttft_p99_ms", 1e3 * percentile(st.ttft_seconds, 0.99)},
          {"itl_p50_ms", 1e3 * percentile(st.inter_token_seconds, 0.5)},
          {"itl_p99_ms", 1e3 * percentile(st.inter_token_seconds, 0.99)}};
}

Load make_load(int64_t n, int64_t prompt, int64_t vocab, const std::vector<std::string>& names, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> w;
  for (size_t k = 0; k < names.size(); ++k) w.push_back(1.0 / static_cast<double>(k + 1));  // Zipf(1)
  std::discrete_distribution<size_t> pick(w.begin(), w.end());
  std::uniform_int_distribution<int64_t> tok(1, vocab - 1);
  Load l;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> p(prompt);
    for (auto& t : p) t = tok(rng);
    l.prompts.push_back(p);
    l.adapters.push_back(names.empty() ? "" : names[pick(rng)]);
  }
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bench_serve MODEL_DIR ADAPTERS_DIR [requests] [batch] [prompt] [new] [registered]\n";
    return 2;
  }
  const std::string model_dir = argv[1], adapters_dir = argv[2];
  auto arg = [&](int i, int64_t d) { return argc > i ? std::stoll(argv[i]) : d; };
  const int64_t requests = arg(3, 128), batch = arg(4, 16), prompt = arg(5, 32), new_tokens = arg(6, 32),
                registered = arg(7, 1000);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(adapters_dir))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  nlohmann::json out;

  // 1. Mixed batches over every adapter, Zipf popularity.
  {
    peft::PeftModel peft(peft::load_model(model_dir));
    for (const auto& n : names) peft.load_adapter((fs::path(adapters_dir) / n).string(), n);
    const int64_t vocab = peft.model().input_embeddings()->num_embeddings;
    auto load = make_load(requests, prompt, vocab, names, 0);
    serve(peft, make_load(batch, prompt, vocab, names, 1), batch, 4);  // warm-up
    out["mixed"] = serve(peft, load, batch, new_tokens);
    std::set<std::string> distinct(load.adapters.begin(), load.adapters.end());
    out["mixed"]["distinct_adapters"] = distinct.size();
  }
  // 2. The same load on one merged model.
  {
    peft::PeftModel with(peft::load_model(model_dir));
    with.load_adapter((fs::path(adapters_dir) / names[0]).string(), names[0]);
    peft::PeftModel peft(with.merge_and_unload());
    const int64_t vocab = peft.model().input_embeddings()->num_embeddings;
    auto load = make_load(requests, prompt, vocab, names, 0);
    std::fill(load.adapters.begin(), load.adapters.end(), "");
    serve(peft, make_load(batch, prompt, vocab, {}, 1), batch, 4);
    out["merged"] = serve(peft, load, batch, new_tokens);
  }
  // 3. A registry of many adapters: memory per adapter, and the cost a request pays for
  // having one (one-token requests, each with a different adapter, against the base).
  {
    peft::PeftModel peft(peft::load_model(model_dir));
    const int64_t vocab = peft.model().input_embeddings()->num_embeddings;
    peft::LoraConfig cfg;
    cfg.r = 8;
    cfg.lora_alpha = 16;
    cfg.init_lora_weights = "false";
    cfg.targets.target_list = {"q_proj", "v_proj"};
    const int64_t before = rss_bytes();
    std::vector<std::string> reg;
    for (int64_t i = 0; i < registered; ++i) {
      reg.push_back("r" + std::to_string(i));
      peft.add_adapter(reg.back(), cfg, static_cast<uint64_t>(i));
    }
    peft.set_adapter({});
    out["registry"] = {{"adapters", registered},
                       {"bytes_per_adapter", static_cast<double>(rss_bytes() - before) / static_cast<double>(registered)}};
    peft::Engine engine(peft, {.max_batch = 1, .max_queue = 1 << 20});
    std::vector<double> submit_us;
    auto one = [&](const std::string& adapter, const std::vector<int64_t>& p) {
      std::mutex mu;
      std::condition_variable cv;
      bool finished = false;
      peft::ServeRequest r;
      r.prompt = p;
      r.adapter = adapter;
      r.gen.max_new_tokens = 1;
      r.on_event = [&](const peft::TokenEvent& e) {
        std::lock_guard lk(mu);
        if (e.done) finished = true, cv.notify_all();
      };
      const auto t = Clock::now();
      engine.submit(std::move(r));
      submit_us.push_back(1e6 * seconds_since(t));
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return finished; });
    };
    auto load = make_load(64, prompt, vocab, reg, 2);
    for (int pass = 0; pass < 2; ++pass) one("", load.prompts[0]);  // warm-up
    // The same prompt without and with an adapter, interleaved so drift cancels; medians.
    std::vector<double> base_ms, adapter_ms, all_submit;
    for (size_t i = 0; i < load.prompts.size(); ++i) {
      auto t = Clock::now();
      one("", load.prompts[i]);
      base_ms.push_back(1e3 * seconds_since(t));
      submit_us.clear();
      t = Clock::now();
      one(reg[(i * 997) % reg.size()], load.prompts[i]);
      adapter_ms.push_back(1e3 * seconds_since(t));
      all_submit.push_back(submit_us.back());
    }
    submit_us = all_submit;
    out["registry"]["request_base_ms_p50"] = percentile(base_ms, 0.5);
    out["registry"]["request_adapter_ms_p50"] = percentile(adapter_ms, 0.5);
    out["registry"]["request_overhead_ms"] = percentile(adapter_ms, 0.5) - percentile(base_ms, 0.5);
    out["registry"]["submit_us_p50"] = percentile(submit_us, 0.5);
    out["registry"]["submit_us_p99"] = percentile(submit_us, 0.99);
  }
  std::cout << out.dump() << "\n";
  return 0;
}
