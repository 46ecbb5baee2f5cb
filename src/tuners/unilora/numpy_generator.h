// NumPy's np.random.default_rng(seed) (NumPy >= 1.17's Generator over PCG64, seeded by
// SeedSequence), as far as UniLoRA's index draw uses it: the same integers for the same
// seed, so indices HF PEFT regenerates from proj_seed are ours too.
#pragma once

#include <cstdint>
#include <vector>

namespace peft {

class NumpyGenerator {
 public:
  // SeedSequence(seed).generate_state(4, uint64) -> PCG64's state and increment.
  explicit NumpyGenerator(uint64_t seed);

  uint64_t next_uint64();
  uint32_t next_uint32();  // the low half of a 64-bit draw, then its high half
  // random_interval(max): masked rejection in [0, max] (Generator.shuffle's draw).
  uint64_t interval(uint64_t max);
  // random_bounded_uint64(0, max, 0, use_masked=false): Lemire's method in [0, max].
  uint64_t bounded(uint64_t max);

  // Generator.choice(pop, size, replace=False) without p: Floyd's algorithm, or a tail
  // shuffle of arange(pop) for large populations, then shuffled.
  std::vector<int64_t> choice_without_replacement(int64_t pop, int64_t size);
  // Generator.shuffle of a 1-D array.
  void shuffle(std::vector<int64_t>& data);

 private:
  unsigned __int128 state_ = 0, inc_ = 0;
  bool has_uint32_ = false;
  uint32_t uinteger_ = 0;
};

}  // namespace peft
