// NumpyGenerator: numpy/random/bit_generator.pyx (SeedSequence), src/pcg64 (PCG64 XSL-RR),
// src/distributions (random_interval, bounded Lemire) and _generator.pyx (choice, shuffle).
#include "tuners/unilora/numpy_generator.h"

#include <algorithm>
#include <array>
#include <stdexcept>
#include <utility>

namespace peft {

namespace {

using u128 = unsigned __int128;

constexpr uint32_t kInitA = 0x43b0d7e5, kMultA = 0x931e8875, kInitB = 0x8b51f9dd, kMultB = 0x58f38ded;
constexpr uint32_t kMixL = 0xca01f9dd, kMixR = 0x4973f715;
constexpr u128 kPcgMult = (static_cast<u128>(0x2360ED051FC65DA4ULL) << 64) | 0x4385DF649FCCF645ULL;

// SeedSequence's pool of 4 words from the seed's 32-bit words (least significant first).
std::array<uint32_t, 4> seed_pool(uint64_t seed) {
  std::vector<uint32_t> entropy;
  do {
    entropy.push_back(static_cast<uint32_t>(seed));
    seed >>= 32;
  } while (seed != 0);
  uint32_t hash_const = kInitA;
  auto hashmix = [&](uint32_t v) {
    v ^= hash_const;
    hash_const *= kMultA;
    v *= hash_const;
    return v ^ (v >> 16);
  };
  auto mix = [](uint32_t x, uint32_t y) {
    uint32_t r = kMixL * x - kMixR * y;
    return r ^ (r >> 16);
  };
  std::array<uint32_t, 4> pool{};
  for (size_t i = 0; i < pool.size(); ++i) pool[i] = hashmix(i < entropy.size() ? entropy[i] : 0);
  for (size_t src = 0; src < pool.size(); ++src)
    for (size_t dst = 0; dst < pool.size(); ++dst)
      if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
  for (size_t src = pool.size(); src < entropy.size(); ++src)
    for (auto& p : pool) p = mix(p, hashmix(entropy[src]));
  return pool;
}

// SeedSequence.generate_state(4, np.uint64): 8 words, paired little-endian.
std::array<uint64_t, 4> generate_state(const std::array<uint32_t, 4>& pool) {
  std::array<uint64_t, 4> out{};
  uint32_t hash_const = kInitB;
  for (int i = 0; i < 8; ++i) {
    uint32_t v = pool[i % 4] ^ hash_const;
    hash_const *= kMultB;
    v *= hash_const;
    v ^= v >> 16;
    out[i / 2] |= static_cast<uint64_t>(v) << (32 * (i % 2));
  }
  return out;
}

uint64_t smallest_mask(uint64_t v) {
  for (int s : {1, 2, 4, 8, 16, 32}) v |= v >> s;
  return v;
}

}  // namespace

NumpyGenerator::NumpyGenerator(uint64_t seed) {
  const auto s = generate_state(seed_pool(seed));
  const u128 init = (static_cast<u128>(s[0]) << 64) | s[1];
  const u128 seq = (static_cast<u128>(s[2]) << 64) | s[3];
  // pcg_setseq_128_srandom_r
  inc_ = (seq << 1) | 1;
  state_ = inc_;  // 0 * mult + inc
  state_ += init;
  state_ = state_ * kPcgMult + inc_;
}

uint64_t NumpyGenerator::next_uint64() {
  state_ = state_ * kPcgMult + inc_;
  const uint64_t x = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
  const unsigned rot = static_cast<unsigned>(state_ >> 122);
  return (x >> rot) | (x << ((64 - rot) & 63));
}

uint32_t NumpyGenerator::next_uint32() {
  if (has_uint32_) {
    has_uint32_ = false;
    return uinteger_;
  }
  const uint64_t next = next_uint64();
  has_uint32_ = true;
  uinteger_ = static_cast<uint32_t>(next >> 32);
  return static_cast<uint32_t>(next);
}

uint64_t NumpyGenerator::interval(uint64_t max) {
  if (max == 0) return 0;
  const uint64_t mask = smallest_mask(max);
  uint64_t v;
  if (max <= 0xFFFFFFFFULL) {
    while ((v = next_uint32() & mask) > max) {
    }
  } else {
    while ((v = next_uint64() & mask) > max) {
    }
  }
  return v;
}

uint64_t NumpyGenerator::bounded(uint64_t max) {
  if (max == 0) return 0;
  if (max <= 0xFFFFFFFFULL) {
    if (max == 0xFFFFFFFFULL) return next_uint32();
    const uint32_t rng_excl = static_cast<uint32_t>(max) + 1;
    uint64_t m = static_cast<uint64_t>(next_uint32()) * rng_excl;
    uint32_t leftover = static_cast<uint32_t>(m);
    if (leftover < rng_excl) {
      const uint32_t threshold = (0xFFFFFFFFU - static_cast<uint32_t>(max)) % rng_excl;
      while (leftover < threshold) {
        m = static_cast<uint64_t>(next_uint32()) * rng_excl;
        leftover = static_cast<uint32_t>(m);
      }
    }
    return m >> 32;
  }
  if (max == ~uint64_t{0}) return next_uint64();
  const uint64_t rng_excl = max + 1;
  u128 m = static_cast<u128>(next_uint64()) * rng_excl;
  uint64_t leftover = static_cast<uint64_t>(m);
  if (leftover < rng_excl) {
    const uint64_t threshold = (~uint64_t{0} - max) % rng_excl;
    while (leftover < threshold) {
      m = static_cast<u128>(next_uint64()) * rng_excl;
      leftover = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

std::vector<int64_t> NumpyGenerator::choice_without_replacement(int64_t pop, int64_t size) {
  if (size < 0 || size > pop) throw std::invalid_argument("choice: cannot take a larger sample than the population");
  std::vector<int64_t> out;
  if (size == 0) return out;
  if (pop > 10000 && size > pop / 50) {
    // Tail shuffle: the last `size` of arange(pop) after a partial Fisher-Yates.
    std::vector<int64_t> idx(static_cast<size_t>(pop));
    for (int64_t i = 0; i < pop; ++i) idx[i] = i;
    for (int64_t i = pop - 1; i >= std::max<int64_t>(pop - size, 1); --i)
      std::swap(idx[i], idx[bounded(static_cast<uint64_t>(i))]);
    return {idx.end() - size, idx.end()};
  }
  // Floyd's algorithm; NumPy keeps the picks in an open-addressing set of 2^k slots.
  const uint64_t mask = smallest_mask(static_cast<uint64_t>(1.2 * static_cast<double>(size)));
  constexpr uint64_t kEmpty = ~uint64_t{0};
  std::vector<uint64_t> hash_set(mask + 1, kEmpty);
  out.resize(static_cast<size_t>(size));
  for (int64_t j = pop - size; j < pop; ++j) {
    const uint64_t val = bounded(static_cast<uint64_t>(j));
    uint64_t loc = val & mask;
    while (hash_set[loc] != kEmpty && hash_set[loc] != val) loc = (loc + 1) & mask;
    uint64_t pick = val;
    if (hash_set[loc] == val) {  // taken: insert j instead
      pick = static_cast<uint64_t>(j);
      loc = pick & mask;
      while (hash_set[loc] != kEmpty) loc = (loc + 1) & mask;
    }
    hash_set[loc] = pick;
    out[static_cast<size_t>(j - pop + size)] = static_cast<int64_t>(pick);
  }
  for (int64_t i = size - 1; i >= 1; --i) std::swap(out[i], out[bounded(static_cast<uint64_t>(i))]);
  return out;
}

void NumpyGenerator::shuffle(std::vector<int64_t>& data) {
  for (int64_t i = static_cast<int64_t>(data.size()) - 1; i >= 1; --i)
    std::swap(data[i], data[interval(static_cast<uint64_t>(i))]);
}

}  // namespace peft
