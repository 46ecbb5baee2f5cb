// ggml tensor types: block sizes, dequantization and quantization.
//
// The reference is gguf-py's numpy code (gguf/quants.py). To be bit-identical every
// value is computed with the same float32 operations in the same order as there: half
// scales are widened to float32 first, then products and sums are formed one rounding
// at a time. This file is compiled with -ffp-contract=off so that `a * b + c` is never
// fused into one FMA, which would round once instead of twice.
#include <cmath>
#include <cstring>

#include "peft/gguf.h"

namespace peft {
namespace {

constexpr int64_t QK_K = 256;  // super-block size of the K-quants

struct TypeEntry {
  GgmlType type;
  const char* name;
  int64_t block_size;
  int64_t block_bytes;
};

// Sizes as in gguf-py's GGML_QUANT_SIZES.
constexpr TypeEntry kTypes[] = {
    {GgmlType::F32, "F32", 1, 4},
    {GgmlType::F16, "F16", 1, 2},
    {GgmlType::Q4_0, "Q4_0", 32, 2 + 16},
    {GgmlType::Q4_1, "Q4_1", 32, 2 + 2 + 16},
    {GgmlType::Q5_0, "Q5_0", 32, 2 + 4 + 16},
    {GgmlType::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16},
    {GgmlType::Q8_0, "Q8_0", 32, 2 + 32},
    {GgmlType::Q8_1, "Q8_1", 32, 4 + 4 + 32},
    {GgmlType::Q2_K, "Q2_K", 256, 2 + 2 + QK_K / 16 + QK_K / 4},
    {GgmlType::Q3_K, "Q3_K", 256, 2 + QK_K / 4 + QK_K / 8 + 12},
    {GgmlType::Q4_K, "Q4_K", 256, 2 + 2 + QK_K / 2 + 12},
    {GgmlType::Q5_K, "Q5_K", 256, 2 + 2 + QK_K / 2 + QK_K / 8 + 12},
    {GgmlType::Q6_K, "Q6_K", 256, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16},
    {GgmlType::Q8_K, "Q8_K", 256, 4 + QK_K + QK_K / 8},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 2 + QK_K / 4},
    {GgmlType::IQ2_XS, "IQ2_XS", 256, 2 + QK_K / 4 + QK_K / 32},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 2 + QK_K / 4 + QK_K / 8},
    {GgmlType::IQ1_S, "IQ1_S", 256, 2 + QK_K / 8 + QK_K / 16},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 2 + 16},
    {GgmlType::IQ3_S, "IQ3_S", 256, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4},
    {GgmlType::IQ2_S, "IQ2_S", 256, 2 + QK_K / 4 + QK_K / 16},
    {GgmlType::IQ4_XS, "IQ4_XS", 256, 2 + 2 + QK_K / 2 + QK_K / 64},
    {GgmlType::I8, "I8", 1, 1},
    {GgmlType::I16, "I16", 1, 2},
    {GgmlType::I32, "I32", 1, 4},
    {GgmlType::I64, "I64", 1, 8},
    {GgmlType::F64, "F64", 1, 8},
    {GgmlType::IQ1_M, "IQ1_M", 256, QK_K / 8 + QK_K / 16 + QK_K / 32},
    {GgmlType::BF16, "BF16", 1, 2},
    {GgmlType::TQ1_0, "TQ1_0", 256, 2 + 4 * 13},
    {GgmlType::TQ2_0, "TQ2_0", 256, 2 + 64},
    {GgmlType::MXFP4, "MXFP4", 32, 1 + 16},
    {GgmlType::NVFP4, "NVFP4", 64, 4 + 32},
    {GgmlType::Q1_0, "Q1_0", 128, 2 + 16},
};

const TypeEntry* entry(GgmlType t) {
  for (const auto& e : kTypes)
    if (e.type == t) return &e;
  return nullptr;
}

const TypeEntry& checked_entry(GgmlType t) {
  const TypeEntry* e = entry(t);
  if (!e) throw GgufError("unknown ggml type " + std::to_string(static_cast<uint32_t>(t)));
  return *e;
}

// ---------------------------------------------------------------- scalars

float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

uint32_t load_u32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// IEEE half -> float, exact. NaN payloads are kept and not quieted, as numpy does.
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));
  if (exp != 0) return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
  if (man == 0) return bits_to_float(sign);
  // Subnormal: shift the leading one up to the implicit bit.
  int e = 113;
  while (!(man & 0x400u)) {
    man <<= 1;
    --e;
  }
  return bits_to_float(sign | (static_cast<uint32_t>(e) << 23) | ((man & 0x3ffu) << 13));
}

float load_half(const uint8_t* p) { return half_to_float(load_u16(p)); }

// float -> IEEE half, rounding to nearest even, as numpy's astype(float16): overflow
// gives infinity; a NaN keeps the top of its payload, forced nonzero.
uint16_t float_to_half(float f) {
  const uint32_t b = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
  const uint32_t a = b & 0x7fffffffu;
  if (a > 0x7f800000u) {
    uint16_t payload = static_cast<uint16_t>((a & 0x7fffffu) >> 13);
    return sign | 0x7c00u | (payload ? payload : 1);
  }
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (a < 0x38800000u) {                        // below 2^-14: subnormal or zero
    if (a < 0x33000000u) return sign;           // at most 2^-25: rounds to zero
    const uint32_t man = (a & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(a >> 23);  // 14..24
    uint32_t h = man >> shift;
    const uint32_t rest = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1))) ++h;
    return sign | static_cast<uint16_t>(h);
  }
  uint32_t h = ((a >> 23) - 112) << 10 | ((a & 0x7fffffu) >> 13);
  const uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;  // may carry into the exponent
  return sign | static_cast<uint16_t>(h);
}

// gguf-py's BF16 rounding: NaNs quieted, then round to nearest even.
uint16_t float_to_bf16(float f) {
  uint32_t n = float_to_bits(f);
  if ((n & 0x7fffffffu) > 0x7f800000u) n = (n & 0xffff0000u) | 0x00400000u;
  return static_cast<uint16_t>((uint64_t{n} + 0x7fffu + ((n >> 16) & 1)) >> 16);
}

// ---------------------------------------------------------------- block decoders
// One function per type decodes one block into `y`, following the numpy reshapes of
// gguf/quants.py; comments give the element order they produce.

// Q4_0: d, qs[16]. Elements 0..15 are the low nibbles, 16..31 the high ones, minus 8.
void block_q4_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>((qs[j] & 0x0f) - 8);
    y[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

// Q4_1: d, m, qs[16]; (d * q) + m.
void block_q4_1(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    const float lo = d * static_cast<float>(qs[j] & 0x0f);
    const float hi = d * static_cast<float>(qs[j] >> 4);
    y[j] = lo + m;
    y[j + 16] = hi + m;
  }
}

// Q5_0: d, qh (u32: bit i is element i's fifth bit), qs[16]; q - 16.
void block_q5_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint32_t qh = load_u32(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 32; ++j) {
    const int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
    const int q = lo | static_cast<int>(((qh >> j) & 1) << 4);
    y[j] = d * static_cast<float>(q - 16);
  }
}

// Q5_1: d, m, qh, qs[16]; (d * q) + m.
void block_q5_1(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  const uint32_t qh = load_u32(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 32; ++j) {
    const int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
    const int q = lo | static_cast<int>(((qh >> j) & 1) << 4);
    const float dq = d * static_cast<float>(q);
    y[j] = dq + m;
  }
}

// Q8_0: d, qs[32] int8.
void block_q8_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Element
// e = 128a + 32s + l is bits 2s..2s+1 of qs[32a + l]; group e / 16.
void block_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = load_half(b + 80), dmin = load_half(b + 82);
  float dl[16], ml[16];
  for (int j = 0; j < 16; ++j) {
    dl[j] = d * static_cast<float>(scales[j] & 0x0f);
    ml[j] = dmin * static_cast<float>(scales[j] >> 4);
  }
  for (int e = 0; e < 256; ++e) {
    const int a = e / 128, s = (e / 32) % 4, l = e % 32;
    const float q = static_cast<float>((qs[32 * a + l] >> (2 * s)) & 3);
    const float t = dl[e / 16] * q;
    y[e] = t - ml[e / 16];
  }
}

// Q3_K: hmask[32], qs[64], scales[12] (16 six-bit scales), d. Low two bits as in Q2_K;
// the third bit is bit (e / 32) of hmask[e % 32], and a clear bit subtracts 4.
void block_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = load_half(b + 108);
  float dl[16];
  for (int i = 0; i < 16; ++i) {
    const int low = (sc[i % 8] >> (4 * (i / 8))) & 0x0f;
    const int high = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    dl[i] = d * static_cast<float>((low | (high << 4)) - 32);
  }
  for (int e = 0; e < 256; ++e) {
    const int a = e / 128, s = (e / 32) % 4, l = e % 32;
    const int low = (qs[32 * a + l] >> (2 * s)) & 3;
    const int h = ((hmask[e % 32] >> (e / 32)) & 1) ^ 1;
    y[e] = dl[e / 16] * static_cast<float>(low - (h << 2));
  }
}

// The eight 6-bit scales and mins packed in 12 bytes (Q4_K, Q5_K).
void scale_min_k4(const uint8_t* s, int* sc, int* mn) {
  for (int i = 0; i < 4; ++i) {
    sc[i] = s[i] & 0x3f;
    mn[i] = s[4 + i] & 0x3f;
    sc[4 + i] = (s[8 + i] & 0x0f) | ((s[i] >> 2) & 0x30);
    mn[4 + i] = (s[8 + i] >> 4) | ((s[4 + i] >> 2) & 0x30);
  }
}

// Q4_K: d, dmin, scales[12], qs[128]. Element e = 64c + 32k + l is nibble k of
// qs[32c + l]; group e / 32. (d * sc) * q - (dmin * m).
void block_q4_k(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  int sc[8], mn[8];
  scale_min_k4(b + 4, sc, mn);
  const uint8_t* qs = b + 16;
  float ds[8], dm[8];
  for (int j = 0; j < 8; ++j) {
    ds[j] = d * static_cast<float>(sc[j]);
    dm[j] = dmin * static_cast<float>(mn[j]);
  }
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, k = (e / 32) % 2, l = e % 32;
    const float q = static_cast<float>((qs[32 * c + l] >> (4 * k)) & 0x0f);
    const float t = ds[e / 32] * q;
    y[e] = t - dm[e / 32];
  }
}

// Q5_K: Q4_K plus qh[32]: the fifth bit of element e is bit (e / 32) of qh[e % 32].
void block_q5_k(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  int sc[8], mn[8];
  scale_min_k4(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  float ds[8], dm[8];
  for (int j = 0; j < 8; ++j) {
    ds[j] = d * static_cast<float>(sc[j]);
    dm[j] = dmin * static_cast<float>(mn[j]);
  }
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, k = (e / 32) % 2, l = e % 32;
    const int low = (qs[32 * c + l] >> (4 * k)) & 0x0f;
    const int high = (qh[l] >> (e / 32)) & 1;
    const float t = ds[e / 32] * static_cast<float>(low | (high << 4));
    y[e] = t - dm[e / 32];
  }
}

// Q6_K: ql[128], qh[64], scales[16] int8, d. Element e = 128a + 64k + l (l < 64) takes
// nibble k of ql[64a + l]; its top two bits are bits 2s..2s+1 of qh[32a + l % 32] with
// s = (e % 128) / 32. q - 32, group e / 16.
void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_half(b + 208);
  float ds[16];
  for (int j = 0; j < 16; ++j) ds[j] = d * static_cast<float>(scales[j]);
  for (int e = 0; e < 256; ++e) {
    const int a = e / 128, r = e % 128;
    const int low = (ql[64 * a + r % 64] >> (4 * (r / 64))) & 0x0f;
    const int high = (qh[32 * a + r % 32] >> (2 * (r / 32))) & 0x03;
    const int q = static_cast<int8_t>(low | (high << 4)) - 32;
    y[e] = ds[e / 16] * static_cast<float>(q);
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_decoder(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return block_q4_0;
    case GgmlType::Q4_1: return block_q4_1;
    case GgmlType::Q5_0: return block_q5_0;
    case GgmlType::Q5_1: return block_q5_1;
    case GgmlType::Q8_0: return block_q8_0;
    case GgmlType::Q2_K: return block_q2_k;
    case GgmlType::Q3_K: return block_q3_k;
    case GgmlType::Q4_K: return block_q4_k;
    case GgmlType::Q5_K: return block_q5_k;
    case GgmlType::Q6_K: return block_q6_k;
    default: return nullptr;
  }
}

// Q8_0 as gguf-py computes it: d = amax / 127, then each x * (1 / d) rounded half away
// from zero by numpy's floor-based np_roundf, all in float32. Non-finite input gives
// what numpy gives on x86: a NaN amax propagates, and a NaN quotient stores 0.
void quantize_q8_0_block(const float* x, uint8_t* out) {
  float amax = 0.0f;
  for (int j = 0; j < 32 && !std::isnan(amax); ++j) {
    const float a = std::fabs(x[j]);
    if (std::isnan(a) || a > amax) amax = a;
  }
  const float d = amax / 127.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  const uint16_t dh = float_to_half(d);
  out[0] = static_cast<uint8_t>(dh);
  out[1] = static_cast<uint8_t>(dh >> 8);
  for (int j = 0; j < 32; ++j) {
    const float v = x[j] * id;
    const float a = std::fabs(v);
    const float floored = std::floor(a);
    const float r = floored + std::floor(2.0f * (a - floored));
    const int q = std::isnan(r) ? 0 : static_cast<int>(r);
    out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(v < 0.0f ? -q : q));
  }
}

void check_count(GgmlType t, int64_t n) {
  const int64_t bs = checked_entry(t).block_size;
  if (n < 0 || n % bs != 0)
    throw GgufError(std::string(ggml_type_name(t)) + ": " + std::to_string(n) +
                    " elements is not a whole number of " + std::to_string(bs) + "-element blocks");
}

}  // namespace

bool ggml_type_known(uint32_t id) { return entry(static_cast<GgmlType>(id)) != nullptr; }

const char* ggml_type_name(GgmlType t) {
  const TypeEntry* e = entry(t);
  return e ? e->name : "?";
}

bool ggml_type_from_name(const std::string& name, GgmlType* out) {
  for (const auto& e : kTypes)
    if (name == e.name) {
      *out = e.type;
      return true;
    }
  return false;
}

int64_t type_block_size(GgmlType t) { return checked_entry(t).block_size; }
int64_t type_block_bytes(GgmlType t) { return checked_entry(t).block_bytes; }

uint64_t row_bytes(GgmlType t, int64_t n) {
  check_count(t, n);
  const TypeEntry& e = checked_entry(t);
  return static_cast<uint64_t>(n / e.block_size) * static_cast<uint64_t>(e.block_bytes);
}

bool can_dequantize(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || block_decoder(t) != nullptr;
}

void dequantize(GgmlType t, const uint8_t* src, int64_t n, float* dst) {
  if (!can_dequantize(t))
    throw GgufError(std::string("dequantizing ") + ggml_type_name(t) + " is not supported");
  check_count(t, n);
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_half(src + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bits_to_float(uint32_t{load_u16(src + 2 * i)} << 16);
      return;
    default: break;
  }
  const BlockFn fn = block_decoder(t);
  const TypeEntry& e = checked_entry(t);
  for (int64_t blk = 0; blk < n / e.block_size; ++blk)
    fn(src + blk * e.block_bytes, dst + blk * e.block_size);
}

bool can_quantize(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::Q8_0;
}

void quantize(GgmlType t, const float* src, int64_t n, uint8_t* dst) {
  if (!can_quantize(t)) throw GgufError(std::string("quantizing to ") + ggml_type_name(t) + " is not supported");
  check_count(t, n);
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = t == GgmlType::F16 ? float_to_half(src[i]) : float_to_bf16(src[i]);
        dst[2 * i] = static_cast<uint8_t>(h);
        dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
      }
      return;
    default:
      for (int64_t blk = 0; blk < n / 32; ++blk) quantize_q8_0_block(src + 32 * blk, dst + 34 * blk);
  }
}

}  // namespace peft
