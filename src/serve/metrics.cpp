#include "metrics.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace peft {

namespace {

std::string num(double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void metric(std::ostringstream& o, const std::string& name, const char* type, const std::string& help,
            double value) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
    << name << " " << num(value) << "\n";
}

// The engine keeps recent samples only: a summary (quantiles of a recent window) fits.
void summary(std::ostringstream& o, const std::string& name, const std::string& help, std::vector<double> v) {
  o << "# HELP " << name << " " << help << " (recent requests)\n# TYPE " << name << " summary\n";
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  for (double q : {0.5, 0.9, 0.99}) {
    const double val = v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
    o << name << "{quantile=\"" << num(q) << "\"} " << num(val) << "\n";
  }
  o << name << "_sum " << num(sum) << "\n" << name << "_count " << v.size() << "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  std::lock_guard lock(mu_);
  const auto i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  ++counts_[static_cast<size_t>(i)];
  sum_ += v;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard lock(mu_);
  std::ostringstream o;
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    o << name << "_bucket{le=\"" << num(bounds_[i]) << "\"} " << cumulative << "\n";
  }
  o << name << "_bucket{le=\"+Inf\"} " << count_ << "\n";
  o << name << "_sum " << num(sum_) << "\n" << name << "_count " << count_ << "\n";
  return o.str();
}

void ServerMetrics::count_response(int status) {
  std::lock_guard lock(mu_);
  ++responses_[status];
}

std::string ServerMetrics::render(const EngineStats& s, size_t adapters) const {
  std::ostringstream o;
  metric(o, "peft_queue_depth", "gauge", "Requests waiting for a place in the running batch.", s.queued);
  metric(o, "peft_running_requests", "gauge", "Requests in the running batch.", s.running);
  metric(o, "peft_adapters_resident", "gauge", "Adapters loaded and servable.", adapters);
  metric(o, "peft_requests_submitted_total", "counter", "Requests accepted into the engine.", requests_submitted);
  metric(o, "peft_requests_finished_total", "counter", "Requests the engine finished.", s.requests_done);
  metric(o, "peft_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", prompt_tokens);
  metric(o, "peft_generated_tokens_total", "counter", "Tokens generated.", s.tokens_generated);
  metric(o, "peft_engine_steps_total", "counter", "Decoding steps the engine ran.", s.steps);
  metric(o, "peft_adapter_loads_total", "counter", "Adapters the engine read from disk.", s.adapter_loads);
  metric(o, "peft_adapter_evictions_total", "counter", "Adapters the engine unloaded to stay under --max-adapters.",
         s.adapter_evictions);
  {
    std::lock_guard lock(mu_);
    o << "# HELP peft_http_responses_total HTTP responses by status code.\n"
         "# TYPE peft_http_responses_total counter\n";
    for (const auto& [code, n] : responses_) o << "peft_http_responses_total{code=\"" << code << "\"} " << n << "\n";
  }
  o << ttft.render("peft_time_to_first_token_seconds", "Time from submission to the first token.");
  o << inter_token.render("peft_inter_token_latency_seconds", "Time between consecutive tokens of a request.");
  summary(o, "peft_engine_ttft_seconds", "Engine-measured time to first token", s.ttft_seconds);
  summary(o, "peft_engine_inter_token_seconds", "Engine-measured inter-token latency", s.inter_token_seconds);
  return o.str();
}

}  // namespace peft
