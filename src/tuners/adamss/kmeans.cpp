// scikit-learn's KMeans(init="random", n_init=1) on the CPU in plain loops: the rows are
// few (a layer's outputs) and the features R <= r, and only exact agreement with sklearn's
// labels matters, not speed.
#include "tuners/adamss/kmeans.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>

namespace peft {

namespace {

// numpy's legacy RandomState(seed): MT19937 seeded as std::mt19937 is (init_genrand), so
// the 32-bit outputs agree.
struct NumpyRandomState {
  explicit NumpyRandomState(uint32_t seed) : mt(seed) {}
  // random_sample(): 53 bits from two draws, as numpy's mt19937_next_double.
  double next_double() {
    const uint32_t a = static_cast<uint32_t>(mt()) >> 5, b = static_cast<uint32_t>(mt()) >> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
  }
  std::mt19937 mt;
};

// RandomState.choice(n, size=k, replace=False, p=p) with p given (sklearn passes
// sample_weight / sample_weight.sum(), float32 ones / n): draws of uniform doubles located
// in the renormalized cdf, duplicates dropped (first occurrences kept), repeated with the
// found entries' p zeroed until k are found.
std::vector<int64_t> numpy_choice_without_replacement(NumpyRandomState& rs, int64_t n, int64_t k,
                                                     std::vector<double> p) {
  std::vector<int64_t> found;
  while (static_cast<int64_t>(found.size()) < k) {
    const int64_t want = k - static_cast<int64_t>(found.size());
    std::vector<double> x(want);
    for (auto& v : x) v = rs.next_double();
    for (auto f : found) p[f] = 0;
    std::vector<double> cdf(n);
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) cdf[i] = (acc += p[i]);
    const double last = cdf[n - 1];
    for (auto& v : cdf) v /= last;
    std::vector<int64_t> fresh;
    for (double v : x) {  // searchsorted(side="right")
      const int64_t idx = std::upper_bound(cdf.begin(), cdf.end(), v) - cdf.begin();
      if (std::find(fresh.begin(), fresh.end(), idx) == fresh.end()) fresh.push_back(idx);
    }
    // np.unique(return_index) then sorting the indices keeps first occurrences in draw order.
    found.insert(found.end(), fresh.begin(), fresh.end());
  }
  return found;
}

// Row-major float32 rows [n, d].
struct Rows {
  std::vector<float> v;
  int64_t n, d;
  const float* row(int64_t i) const { return v.data() + i * d; }
};

// The rows minus their float32 mean (sklearn's copy_x path; the mean as numpy's).
Rows centered(const at::Tensor& x_in) {
  const auto x32 = x_in.detach().to(at::kCPU, at::kFloat).contiguous();
  Rows X{std::vector<float>(x32.data_ptr<float>(), x32.data_ptr<float>() + x32.numel()), x32.size(0), x32.size(1)};
  const auto mean = x32.mean(0);
  const float* m = mean.data_ptr<float>();
  for (int64_t i = 0; i < X.n; ++i)
    for (int64_t j = 0; j < X.d; ++j) X.v[i * X.d + j] -= m[j];
  return X;
}

// sklearn's _tolerance: the mean over features of the variance, times tol (1e-4).
double tolerance(const Rows& X) {
  double tol = 0;
  for (int64_t j = 0; j < X.d; ++j) {
    double mu = 0, var = 0;
    for (int64_t i = 0; i < X.n; ++i) mu += X.row(i)[j];
    mu /= X.n;
    for (int64_t i = 0; i < X.n; ++i) var += (X.row(i)[j] - mu) * (X.row(i)[j] - mu);
    tol += var / X.n;
  }
  return tol / X.d * 1e-4;
}

double squared_distance(const float* a, const float* c, int64_t d) {
  double s = 0;
  for (int64_t j = 0; j < d; ++j) {
    const double t = static_cast<double>(a[j]) - c[j];
    s += t * t;
  }
  return s;
}

// Each row's nearest center (the first on ties).
void assign(const Rows& X, const std::vector<float>& centers, int64_t k, std::vector<int64_t>& labels) {
  for (int64_t i = 0; i < X.n; ++i) {
    double best = std::numeric_limits<double>::infinity();
    labels[i] = 0;
    for (int64_t c = 0; c < k; ++c)
      if (const double dist = squared_distance(X.row(i), &centers[c * X.d], X.d); dist < best) best = dist, labels[i] = c;
  }
}

// _relocate_empty_clusters_dense: the rows farthest from their centers seed the empty
// clusters, moving out of their old clusters' sums.
void relocate_empty(const Rows& X, const std::vector<float>& centers, const std::vector<int64_t>& labels,
                    std::vector<float>& sums, std::vector<float>& weight) {
  std::vector<int64_t> empty;
  for (size_t c = 0; c < weight.size(); ++c)
    if (weight[c] == 0.f) empty.push_back(static_cast<int64_t>(c));
  if (empty.empty()) return;
  const int64_t d = X.d;
  std::vector<double> dist(X.n);
  for (int64_t i = 0; i < X.n; ++i) dist[i] = squared_distance(X.row(i), &centers[labels[i] * d], d);
  std::vector<int64_t> order(X.n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return dist[a] > dist[b]; });
  for (size_t e = 0; e < empty.size(); ++e) {
    const int64_t far = order[e], old = labels[far], fresh = empty[e];
    for (int64_t j = 0; j < d; ++j) {
      sums[old * d + j] -= X.row(far)[j];
      sums[fresh * d + j] = X.row(far)[j];
    }
    weight[fresh] = 1.f;
    weight[old] -= 1.f;
  }
}

// One Lloyd update: the new centers from the labels; returns the summed squared shift.
double update_centers(const Rows& X, const std::vector<int64_t>& labels, int64_t k, std::vector<float>& centers) {
  const int64_t d = X.d;
  std::vector<float> sums(k * d, 0.f), weight(k, 0.f);
  for (int64_t i = 0; i < X.n; ++i) {
    weight[labels[i]] += 1.f;
    for (int64_t j = 0; j < d; ++j) sums[labels[i] * d + j] += X.row(i)[j];
  }
  relocate_empty(X, centers, labels, sums, weight);
  double total = 0;
  for (int64_t c = 0; c < k; ++c) {
    if (weight[c] > 0)
      for (int64_t j = 0; j < d; ++j) sums[c * d + j] /= weight[c];
    const float shift = static_cast<float>(std::sqrt(squared_distance(&sums[c * d], &centers[c * d], d)));
    total += static_cast<double>(shift) * shift;
  }
  centers.swap(sums);
  return total;
}

}  // namespace

std::vector<int64_t> sklearn_kmeans_random(const at::Tensor& x, int64_t k, int64_t max_iter, uint32_t seed) {
  const Rows X = centered(x);
  if (k > X.n) throw std::invalid_argument("ADAMSS: KMeans needs at least as many rows as clusters");
  const double tol = tolerance(X);
  NumpyRandomState rs(seed);
  const double p = static_cast<double>(1.0f / static_cast<float>(X.n));
  const auto seeds = numpy_choice_without_replacement(rs, X.n, k, std::vector<double>(X.n, p));
  std::vector<float> centers(k * X.d);
  for (int64_t c = 0; c < k; ++c) std::copy(X.row(seeds[c]), X.row(seeds[c]) + X.d, &centers[c * X.d]);
  std::vector<int64_t> labels(X.n, 0), labels_old(X.n, -1);
  for (int64_t it = 0; it < max_iter; ++it) {
    assign(X, centers, k, labels);
    const double shift = update_centers(X, labels, k, centers);
    if (labels == labels_old) return labels;  // converged strictly: the labels stand
    if (shift <= tol) break;
    labels_old = labels;
  }
  assign(X, centers, k, labels);  // labels of the final centers
  return labels;
}

}  // namespace peft
