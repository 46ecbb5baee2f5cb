// SentencePiece's model file, normalizer, Unigram encoder and decoder (sentencepiece.h).
// Line references are to google/sentencepiece 0.2: normalizer.cc (Normalize,
// NormalizePrefix), unigram_model.cc (EncodeOptimized), sentencepiece_processor.cc
// (PopulateSentencePieceText, Decode), model_interface.cc (InitializePieces).
#include "tokenizer/sentencepiece.h"

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

#include "tokenizer/charsmap.h"
#include "tokenizer/normalized.h"
#include "util/json_file.h"

namespace peft::tok {

namespace {

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  throw std::runtime_error(where + ": " + what);
}

// --- ModelProto, read with the few fields encoding needs (proto2 defaults) -------------

enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct NormalizerSpec {
  std::string charsmap;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

struct ProtoPiece {
  std::string text;
  float score = 0;
  int type = kNormal;
};

struct ModelProto {
  std::vector<ProtoPiece> pieces;
  int model_type = 1;  // UNIGRAM
  bool treat_whitespace_as_suffix = false, byte_fallback = false;
  std::string unk_surface = " \xE2\x81\x87 ";
  NormalizerSpec normalizer, denormalizer;
  bool has_denormalizer = false;
};

class Wire {
 public:
  Wire(std::string_view s, const std::string& where) : s_(s), where_(where) {}
  bool done() const { return pos_ >= s_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (done()) bad(where_, "not a SentencePiece model (truncated varint)");
      const auto b = static_cast<uint8_t>(s_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad(where_, "not a SentencePiece model (varint longer than 10 bytes)");
  }
  std::string_view take(size_t n) {
    if (n > s_.size() - pos_) bad(where_, "not a SentencePiece model (a field runs past its message)");
    const auto out = s_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  std::string_view bytes() { return take(varint()); }
  float fixed32() {
    float f;
    std::memcpy(&f, take(4).data(), 4);  // little-endian, as x86 and ARM hosts are
    return f;
  }
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); return;
      case 1: take(8); return;
      case 2: bytes(); return;
      case 5: take(4); return;
      default: bad(where_, "not a SentencePiece model (protobuf wire type " + std::to_string(wire) + ")");
    }
  }
  // Calls f(field, wire) for each field of the message.
  template <typename F>
  void fields(F f) {
    while (!done()) {
      const uint64_t key = varint();
      f(static_cast<int>(key >> 3), static_cast<int>(key & 7));
    }
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
  const std::string& where_;
};

NormalizerSpec read_normalizer(std::string_view msg, const std::string& where) {
  NormalizerSpec n;
  Wire w(msg, where);
  w.fields([&](int field, int wire) {
    if (field == 2 && wire == 2) n.charsmap = std::string(w.bytes());
    else if (field == 3 && wire == 0) n.add_dummy_prefix = w.varint() != 0;
    else if (field == 4 && wire == 0) n.remove_extra_whitespaces = w.varint() != 0;
    else if (field == 5 && wire == 0) n.escape_whitespaces = w.varint() != 0;
    else w.skip(wire);
  });
  return n;
}

ModelProto read_model(const std::string& bytes, const std::string& where) {
  ModelProto m;
  Wire w(bytes, where);
  w.fields([&](int field, int wire) {
    if (field == 1 && wire == 2) {
      ProtoPiece p;
      Wire pw(w.bytes(), where);
      pw.fields([&](int f, int t) {
        if (f == 1 && t == 2) p.text = std::string(pw.bytes());
        else if (f == 2 && t == 5) p.score = pw.fixed32();
        else if (f == 3 && t == 0) p.type = static_cast<int>(pw.varint());
        else pw.skip(t);
      });
      m.pieces.push_back(std::move(p));
    } else if (field == 2 && wire == 2) {
      Wire tw(w.bytes(), where);
      tw.fields([&](int f, int t) {
        if (f == 3 && t == 0) m.model_type = static_cast<int>(tw.varint());
        else if (f == 24 && t == 0) m.treat_whitespace_as_suffix = tw.varint() != 0;
        else if (f == 35 && t == 0) m.byte_fallback = tw.varint() != 0;
        else if (f == 44 && t == 2) m.unk_surface = std::string(tw.bytes());
        else tw.skip(t);
      });
    } else if (field == 3 && wire == 2) {
      m.normalizer = read_normalizer(w.bytes(), where);
    } else if (field == 5 && wire == 2) {
      m.denormalizer = read_normalizer(w.bytes(), where);
      m.has_denormalizer = true;
    } else {
      w.skip(wire);
    }
  });
  return m;
}

std::string byte_piece(unsigned char c) {
  static const char* hex = "0123456789ABCDEF";
  return std::string("<0x") + hex[c >> 4] + hex[c & 15] + ">";
}

// "<0xXX>" (upper-case hex, as ByteToPiece writes it) to its byte, else -1.
int piece_byte(const std::string& p) {
  auto digit = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  const int hi = digit(p[3]), lo = digit(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// sentencepiece's OneCharLen: the length a lead byte announces (1 for a stray one).
size_t one_char_len(unsigned char c) { return static_cast<size_t>("\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4]); }

// --- Normalizer::Normalize ------------------------------------------------------------

class SpmNormalizer {
 public:
  SpmNormalizer(const NormalizerSpec& spec, bool treat_whitespace_as_suffix, std::vector<std::string> user_defined,
                const std::string& where)
      : spec_(spec), suffix_(treat_whitespace_as_suffix), user_defined_(std::move(user_defined)) {
    if (!spec.charsmap.empty()) charsmap_ = std::make_unique<Charsmap>(spec.charsmap, where);
  }

  // The normalized text; norm_to_orig gets, for each byte and one past the end, the input
  // byte it came from.
  std::string normalize(std::string_view input, std::vector<size_t>* norm_to_orig) const {
    std::string out;
    norm_to_orig->clear();
    if (input.empty()) return out;
    size_t consumed = 0;
    if (spec_.remove_extra_whitespaces) {
      while (!input.empty()) {
        const auto [rep, n] = prefix(input);
        if (rep != " ") break;
        input.remove_prefix(n);
        consumed += n;
      }
    }
    if (input.empty()) return out;
    const std::string_view space = spec_.escape_whitespaces ? "\xE2\x96\x81" : " ";
    auto add = [&](std::string_view s) {
      out += s;
      norm_to_orig->insert(norm_to_orig->end(), s.size(), consumed);
    };
    if (!suffix_ && spec_.add_dummy_prefix) add(space);
    bool prev_space = spec_.remove_extra_whitespaces;
    while (!input.empty()) {
      auto [rep, n] = prefix(input);
      while (prev_space && !rep.empty() && rep.front() == ' ') rep.remove_prefix(1);
      if (!rep.empty()) {
        for (char c : rep) add(c == ' ' && spec_.escape_whitespaces ? space : std::string_view(&c, 1));
        prev_space = rep.back() == ' ';
      }
      consumed += n;
      input.remove_prefix(n);
      if (!spec_.remove_extra_whitespaces) prev_space = false;
    }
    if (spec_.remove_extra_whitespaces) {
      while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0) {
        const size_t length = out.size() - space.size();
        consumed = (*norm_to_orig)[length];
        out.resize(length);
        norm_to_orig->resize(length);
      }
    }
    if (suffix_ && spec_.add_dummy_prefix) add(space);
    norm_to_orig->push_back(consumed);
    return out;
  }

 private:
  // NormalizePrefix: a user-defined symbol verbatim, else the charsmap's longest rule, else
  // one UTF-8 char as it is (a malformed byte becomes U+FFFD).
  std::pair<std::string_view, size_t> prefix(std::string_view input) const {
    size_t best = 0;
    for (const auto& u : user_defined_)
      if (u.size() > best && input.substr(0, u.size()) == u) best = u.size();
    if (best) return {input.substr(0, best), best};
    if (charsmap_)
      if (const auto rule = charsmap_->longest(input)) return {rule->second, rule->first};
    const size_t n = one_char_len(static_cast<unsigned char>(input[0]));
    if (n > input.size() || !valid_utf8(std::string(input.substr(0, n))))
      return {"\xEF\xBF\xBD", 1};
    return {input.substr(0, n), n};
  }

  NormalizerSpec spec_;
  bool suffix_;
  std::vector<std::string> user_defined_;
  std::unique_ptr<Charsmap> charsmap_;
};

}  // namespace

struct SentencePiece::Impl {
  ModelProto proto;
  std::unordered_map<std::string, int64_t> pieces;    // NORMAL, USER_DEFINED, UNUSED: matched in text
  std::unordered_map<std::string, int64_t> reserved;  // CONTROL, UNKNOWN, BYTE: never matched
  int64_t unk_id = -1;
  float min_score = FLT_MAX, max_score = FLT_MIN;  // over NORMAL pieces (FLT_MIN as the library has it)
  // The matchable pieces sorted by their bytes: a walk narrows the range sharing the text's
  // prefix and stops once none does (as the library's trie traversal stops).
  std::vector<std::pair<std::string, int64_t>> sorted;
  std::unique_ptr<SpmNormalizer> normalizer, denormalizer;

  int64_t piece_to_id(const std::string& p) const {
    if (auto it = pieces.find(p); it != pieces.end()) return it->second;
    if (auto it = reserved.find(p); it != reserved.end()) return it->second;
    return unk_id;
  }
  int type_of(int64_t id) const { return proto.pieces[static_cast<size_t>(id)].type; }

  // EncodeOptimized: (piece, id) along the best path of the normalized text.
  std::vector<std::pair<std::string_view, int64_t>> best_path(std::string_view s) const;
};

SentencePiece::SentencePiece(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePiece::~SentencePiece() = default;
SentencePiece::SentencePiece(SentencePiece&&) noexcept = default;
SentencePiece& SentencePiece::operator=(SentencePiece&&) noexcept = default;

SentencePiece SentencePiece::from_file(const std::string& path) { return from_bytes(read_file_bytes(path), path); }

SentencePiece SentencePiece::from_bytes(const std::string& bytes, const std::string& where) {
  auto impl = std::make_unique<Impl>();
  impl->proto = read_model(bytes, where);
  const ModelProto& m = impl->proto;
  if (m.model_type != 1)
    bad(where, "only Unigram SentencePiece models are supported (model_type " + std::to_string(m.model_type) + ")");
  if (m.pieces.empty()) bad(where, "the model has no pieces");
  std::vector<std::string> user_defined;
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    const auto& p = m.pieces[i];
    const auto id = static_cast<int64_t>(i);
    if (p.text.empty()) bad(where, "piece " + std::to_string(i) + " is empty");
    if (p.type < kNormal || p.type > kByte) bad(where, "piece " + std::to_string(i) + " has unknown type " + std::to_string(p.type));
    const bool matched = p.type == kNormal || p.type == kUserDefined || p.type == kUnused;
    if (!(matched ? impl->pieces : impl->reserved).emplace(p.text, id).second)
      bad(where, "piece '" + p.text + "' is defined twice");
    if (p.type == kUserDefined) user_defined.push_back(p.text);
    if (p.type == kUnknown) {
      if (impl->unk_id >= 0) bad(where, "more than one unknown piece");
      impl->unk_id = id;
    }
    if (p.type == kByte && (!m.byte_fallback || piece_byte(p.text) < 0))
      bad(where, "byte piece '" + p.text + "' without byte_fallback, or not <0xXX>");
    if (p.type == kNormal) {
      impl->min_score = std::min(impl->min_score, p.score);
      impl->max_score = std::max(impl->max_score, p.score);
    }
    if (matched) impl->sorted.emplace_back(p.text, id);
  }
  if (impl->unk_id < 0) bad(where, "the model has no unknown piece");
  std::sort(impl->sorted.begin(), impl->sorted.end());
  if (m.byte_fallback)
    for (int b = 0; b < 256; ++b)
      if (!impl->reserved.count(byte_piece(static_cast<unsigned char>(b))))
        bad(where, "byte_fallback is on but piece " + byte_piece(static_cast<unsigned char>(b)) + " is missing");
  impl->normalizer = std::make_unique<SpmNormalizer>(m.normalizer, m.treat_whitespace_as_suffix, user_defined, where);
  if (m.has_denormalizer && !m.denormalizer.charsmap.empty())
    impl->denormalizer = std::make_unique<SpmNormalizer>(m.denormalizer, false, std::vector<std::string>(), where);
  return SentencePiece(std::move(impl));
}

std::vector<std::pair<std::string_view, int64_t>> SentencePiece::Impl::best_path(std::string_view s) const {
  struct Node {
    int64_t id = -1;
    float score = 0;
    long starts_at = -1;
  };
  std::vector<Node> best(s.size() + 1);
  // Scores and their sums are floats: equal-score segmentations (ties are common) then
  // resolve as sentencepiece 0.2.3 resolves them (its 0.2.1 source sums a double
  // candidate; checked against the 0.2.3 wheel by tests/parity/check_marian.py).
  const float unk_score = min_score - 10.0f;
  for (size_t start = 0; start < s.size();) {
    const float here = best[start].score;
    const size_t mblen = std::min(one_char_len(static_cast<unsigned char>(s[start])), s.size() - start);
    bool single = false;
    auto lo = sorted.begin(), hi = sorted.end();
    for (size_t end = start + 1; end <= s.size(); ++end) {
      const size_t depth = end - 1 - start;
      const int c = static_cast<unsigned char>(s[end - 1]);
      const auto byte_at = [depth](const auto& e) {
        return depth < e.first.size() ? static_cast<unsigned char>(e.first[depth]) : -1;
      };
      lo = std::lower_bound(lo, hi, c, [&](const auto& e, int v) { return byte_at(e) < v; });
      hi = std::upper_bound(lo, hi, c, [&](int v, const auto& e) { return v < byte_at(e); });
      if (lo == hi) break;
      if (lo->first.size() != depth + 1) continue;  // a prefix of pieces, not a piece
      const int64_t id = lo->second;
      const ProtoPiece& p = proto.pieces[static_cast<size_t>(id)];
      if (p.type == kUnused) continue;
      const size_t length = end - start;
      const float score =
          p.type == kUserDefined ? static_cast<float>(static_cast<float>(length) * max_score - 0.1) : p.score;
      const float cand = score + here;
      Node& t = best[end];
      if (t.starts_at == -1 || cand > t.score) t = {id, cand, static_cast<long>(start)};
      if (length == mblen) single = true;
    }
    if (!single) {
      Node& t = best[start + mblen];
      const float cand = unk_score + here;
      if (t.starts_at == -1 || cand > t.score) t = {unk_id, cand, static_cast<long>(start)};
    }
    start += mblen;
  }
  std::vector<std::pair<std::string_view, int64_t>> out;
  for (size_t end = s.size(); end > 0;) {
    const Node& n = best[end];
    const auto start = static_cast<size_t>(n.starts_at);
    out.emplace_back(s.substr(start, end - start), n.id);
    end = start;
  }
  return {out.rbegin(), out.rend()};
}

std::string SentencePiece::normalize(const std::string& text) const {
  std::vector<size_t> map;
  return impl_->normalizer->normalize(text, &map);
}

std::vector<SentencePiece::Piece> SentencePiece::encode(const std::string& text) const {
  std::vector<size_t> to_orig;
  const std::string norm = impl_->normalizer->normalize(text, &to_orig);
  std::vector<Piece> out;
  if (norm.empty()) return out;
  size_t consumed = 0;
  bool prev_unk = false;
  for (const auto& [w, id] : impl_->best_path(norm)) {
    const bool unk = id == impl_->unk_id;
    const size_t b = to_orig[consumed], e = to_orig[consumed + w.size()];
    if (unk && impl_->proto.byte_fallback) {
      // Each byte its own piece; the last one carries the char's span.
      for (size_t i = 0; i < w.size(); ++i)
        out.push_back({byte_piece(static_cast<unsigned char>(w[i])), b, i + 1 == w.size() ? e : b});
    } else if (unk && prev_unk) {
      out.back().text += w;
      out.back().end = e;
    } else {
      out.push_back({std::string(w), b, e});
    }
    consumed += w.size();
    prev_unk = unk;
  }
  return out;
}

std::string SentencePiece::decode(const std::vector<std::string>& pieces) const {
  const Impl& m = *impl_;
  const NormalizerSpec& spec = m.proto.normalizer;
  std::string text, bytes;
  // Byte pieces are gathered and turned into UTF-8 chars together; a byte that starts no
  // valid char becomes U+FFFD.
  auto flush_bytes = [&] {
    for (size_t i = 0; i < bytes.size();) {
      const size_t n = one_char_len(static_cast<unsigned char>(bytes[i]));
      if (n <= bytes.size() - i && valid_utf8(bytes.substr(i, n))) {
        text += bytes.substr(i, n);
        i += n;
      } else {
        text += "\xEF\xBF\xBD";
        ++i;
      }
    }
    bytes.clear();
  };
  bool bos_ws = true, bos_ws_seen = false;
  for (const auto& p : pieces) {
    const int64_t id = m.piece_to_id(p);
    const int type = m.type_of(id);
    if (type == kByte) {
      bytes += static_cast<char>(piece_byte(p));
      continue;
    }
    flush_bytes();
    if (bos_ws_seen || !text.empty()) bos_ws = false;
    bos_ws_seen = false;
    if (type == kControl) continue;
    if (type == kUnknown) {
      text += p == m.proto.pieces[static_cast<size_t>(id)].text ? m.proto.unk_surface : p;
      continue;
    }
    std::string_view piece = p;
    if (bos_ws && (spec.add_dummy_prefix || spec.remove_extra_whitespaces)) {
      const std::string_view ws = "\xE2\x96\x81";
      if (piece.substr(0, ws.size()) == ws) {
        piece.remove_prefix(ws.size());
        bos_ws_seen = !spec.remove_extra_whitespaces;
      }
    }
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, 3, "\xE2\x96\x81") == 0) {
        text += ' ';
        i += 3;
      } else {
        text += piece[i++];
      }
    }
  }
  flush_bytes();
  if (m.denormalizer) {
    std::vector<size_t> map;
    text = m.denormalizer->normalize(text, &map);
  }
  return text;
}

size_t SentencePiece::size() const { return impl_->proto.pieces.size(); }

std::optional<std::string> SentencePiece::id_to_piece(int64_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->proto.pieces.size()) return std::nullopt;
  return impl_->proto.pieces[static_cast<size_t>(id)].text;
}

}  // namespace peft::tok
