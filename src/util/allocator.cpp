#include "util/allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <malloc.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace peft {
namespace {

constexpr size_t kAlign = 64;               // as c10's CPU allocator (AVX-512 loads)
constexpr size_t kMinCached = 256 << 10;    // smaller blocks: glibc's bins are fast
constexpr uint64_t kMagic = 0x70656674626c6bULL;

// Each block starts with this header; the tensor's data follows at +kAlign.
struct Header {
  uint64_t magic;
  size_t capacity;  // bytes after the header; 0: not cached, freed straight to glibc
};

// Rounds up to one of 8 classes per power of two (at most 12.5% over the request).
size_t size_class(size_t n) {
  const int shift = 63 - __builtin_clzll(n) - 3;
  const size_t step = size_t{1} << shift;
  return (n + step - 1) & ~(step - 1);
}

class TensorBlockCache final : public c10::Allocator {
 public:
  explicit TensorBlockCache(size_t max_cached) : max_cached_(max_cached) {}

  c10::DataPtr allocate(size_t n) override {
    void* data = n >= kMinCached ? take(size_class(n)) : fresh(n, 0);
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, size_t count) const override { std::memcpy(dest, src, count); }

  TensorBlockCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {hits_, misses_, cached_};
  }

 private:
  static void* fresh(size_t bytes, size_t capacity) {
    void* raw = nullptr;
    if (posix_memalign(&raw, kAlign, bytes + kAlign) != 0) throw std::bad_alloc();
    *static_cast<Header*>(raw) = {kMagic, capacity};
    return static_cast<char*>(raw) + kAlign;
  }

  void* take(size_t capacity) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(capacity);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= capacity;
        ++hits_;
        return p;
      }
      ++misses_;
      if (cached_ + capacity > max_cached_) drop_all_locked();
    }
    return fresh(capacity, capacity);
  }

  void drop_all_locked() {
    for (auto& [capacity, blocks] : free_)
      for (void* p : blocks) std::free(static_cast<char*>(p) - kAlign);
    free_.clear();
    cached_ = 0;
  }

  void give_back(void* data) {
    auto* h = reinterpret_cast<Header*>(static_cast<char*>(data) - kAlign);
    if (h->magic != kMagic) std::abort();  // not ours: a heap corruption, never a silent free
    if (h->capacity != 0) {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + h->capacity <= max_cached_) {
        free_[h->capacity].push_back(data);
        cached_ += h->capacity;
        return;
      }
    }
    std::free(h);
  }

  static void release(void* data);

  const size_t max_cached_;
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0, hits_ = 0, misses_ = 0;
};

// Never destroyed: tensors may outlive static destruction order.
TensorBlockCache* instance = nullptr;

void TensorBlockCache::release(void* data) {
  if (data) instance->give_back(data);
}

}  // namespace

void install_tensor_block_cache(size_t max_cached_bytes) {
  static std::once_flag once;
  std::call_once(once, [&] {
    instance = new TensorBlockCache(max_cached_bytes);
    c10::SetCPUAllocator(instance, /*priority=*/1);
  });
}

TensorBlockCacheStats tensor_block_cache_stats() { return instance ? instance->stats() : TensorBlockCacheStats{}; }

void keep_freed_memory() {
  // 32 MiB is glibc's largest mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit);
  // setting it also stops the dynamic threshold from dropping back.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // keep up to 1 GiB of free heap top
  mallopt(M_TOP_PAD, 64 << 20);        // grow the heap in 64 MiB steps
  const char* off = std::getenv("PEFT_TENSOR_CACHE");  // "0": glibc alone (an A/B switch)
  if (!off || std::strcmp(off, "0") != 0) install_tensor_block_cache();
}

}  // namespace peft
