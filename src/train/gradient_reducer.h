// Sums a data-parallel run's gradients over its ranks in buckets that start while the
// backward is still running (what DDP's reducer does, for an adapter's parameters).
// See docs/TRAINING.md, "Data-parallel".
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace peft {

class DataParallel;

class GradientReducer {
 public:
  // DDP's bucket sizes: the first bucket at most 1 MiB of fp32 gradients (so the first
  // sum starts early), the others at most bucket_bytes. Buckets are filled from the last
  // parameter back: the order in which a backward produces the gradients.
  static constexpr int64_t kFirstBucketBytes = int64_t{1} << 20;
  GradientReducer(DataParallel& dp, std::vector<at::Tensor> params, int64_t bucket_bytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Before the backward of a step's last micro-batch: from then on a bucket's sum starts
  // as soon as each of its parameters' gradients is complete (and every bucket before it
  // has started: the ranks start their sums in one order).
  void arm();
  // After that backward: starts the buckets not yet started, waits for all, and writes
  // the sums into the gradients. A gradient a rank lacks counts as zero; one that no rank
  // has stays undefined (as in one process). Without arm(), all of it happens here.
  void finish();

  size_t buckets() const;
  // Of the last step's buckets, those whose sum started during the backward.
  size_t started_in_backward() const;
  // A gradient was accumulated into again after its bucket had started (a parameter that
  // a checkpointed block's recompute reaches more than once): the run then sums every
  // gradient after the backward instead.
  bool overlap_disabled() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace peft
