#include <cstdio>
#include <limits>
#include <mutex>
#include <queue>

#include "tokenizer/components.h"

namespace peft::tok {

namespace {

// A vocabulary: token <-> id.
struct Vocab {
  std::unordered_map<std::string, int64_t> ids;
  std::vector<std::string> tokens;
  void add(const std::string& t, int64_t id) {
    ids[t] = id;
    if (static_cast<size_t>(id) >= tokens.size()) tokens.resize(id + 1);
    tokens[id] = t;
  }
  std::optional<int64_t> find(const std::string& t) const {
    auto it = ids.find(t);
    return it == ids.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }
  std::optional<std::string> token(int64_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= tokens.size()) return std::nullopt;
    return tokens[id];
  }
};

Vocab read_vocab_object(const Json& v, const std::string& where) {
  if (!v.is_object()) fail(where, "'vocab' must be an object of token -> id");
  Vocab vocab;
  // Ids index a table: one far beyond the number of entries would size it absurdly.
  const int64_t max_id = static_cast<int64_t>(v.size()) + (int64_t{1} << 16);
  for (const auto& [t, id] : v.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) fail(where, "vocab id of '" + t + "' is not a non-negative integer");
    if (id.get<int64_t>() >= max_id)
      fail(where, "vocab id " + std::to_string(id.get<int64_t>()) + " of '" + t + "' is far beyond the vocabulary's " +
                      std::to_string(v.size()) + " entries");
    vocab.add(t, id.get<int64_t>());
  }
  return vocab;
}

std::string byte_token(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", b);
  return buf;
}

// Emits tokens for consecutive (id, byte length) symbols of a piece.
void emit(const NormalizedString& piece, const std::vector<std::pair<int64_t, size_t>>& symbols, const Vocab& vocab,
          std::vector<Token>& out) {
  size_t pos = 0;
  for (const auto& [id, len] : symbols) {
    out.push_back({id, vocab.tokens[id], piece.original(pos, pos + len)});
    pos += len;
  }
}

class BPE : public Model {
 public:
  BPE(const Json& j, const std::string& where) {
    vocab_ = read_vocab_object(j.at("vocab"), where);
    auto get_str = [&](const char* k) {
      return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
    };
    unk_ = get_str("unk_token");
    prefix_ = get_str("continuing_subword_prefix");
    suffix_ = get_str("end_of_word_suffix");
    fuse_unk_ = j.value("fuse_unk", false);
    byte_fallback_ = j.value("byte_fallback", false);
    ignore_merges_ = j.value("ignore_merges", false);
    if (j.contains("dropout") && j["dropout"].is_number() && j["dropout"].get<double>() > 0)
      fail(where, "BPE dropout is not supported (it is a training-time option)");
    if (!unk_.empty() && !vocab_.find(unk_)) fail(where, "unk_token '" + unk_ + "' is not in the vocab");
    int64_t rank = 0;
    for (const auto& m : j.at("merges")) {
      std::string a, b;
      if (m.is_string()) {
        const auto s = m.get<std::string>();
        const auto sp = s.find(' ');
        if (sp == std::string::npos) fail(where, "merge " + std::to_string(rank) + " ('" + s + "') is not 'a b'");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(where, "merge " + std::to_string(rank) + " is neither 'a b' nor [a, b]");
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b);
      std::string merged = a + (!prefix_.empty() && b.rfind(prefix_, 0) == 0 ? b.substr(prefix_.size()) : b);
      auto im = vocab_.find(merged);
      if (!ia || !ib || !im)
        fail(where, "merge " + std::to_string(rank) + " ('" + a + "', '" + b + "') uses a token missing from the vocab");
      merges_[key(*ia, *ib)] = {rank++, *im};
    }
  }

  void tokenize(const NormalizedString& piece, std::vector<Token>& out) const override {
    const std::string& s = piece.str();
    if (ignore_merges_)
      if (auto id = vocab_.find(s)) {
        out.push_back({*id, s, piece.original_span()});
        return;
      }
    {
      std::lock_guard<std::mutex> lock(cache_mu_);
      if (auto it = cache_.find(s); it != cache_.end()) return emit(piece, it->second, vocab_, out);
    }
    auto symbols = merge_word(s);
    {
      std::lock_guard<std::mutex> lock(cache_mu_);
      if (cache_.size() > 100000) cache_.clear();
      cache_.emplace(s, symbols);
    }
    emit(piece, symbols, vocab_, out);
  }

  std::optional<int64_t> token_to_id(const std::string& t) const override { return vocab_.find(t); }
  std::optional<std::string> id_to_token(int64_t id) const override { return vocab_.token(id); }
  size_t vocab_size() const override { return vocab_.ids.size(); }

 private:
  static uint64_t key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

  struct Symbol {
    int64_t id;
    int prev, next;
    size_t len;
  };

  // The word as symbols (one per char, byte fallback, unknowns), then merged in rank order.
  std::vector<std::pair<int64_t, size_t>> merge_word(const std::string& s) const {
    std::vector<Symbol> sym;
    std::optional<std::pair<int64_t, size_t>> unk;
    auto add = [&](int64_t id, size_t len) {
      sym.push_back({id, static_cast<int>(sym.size()) - 1, -1, len});
    };
    size_t i = 0;
    while (i < s.size()) {
      size_t n = std::min(utf8_len(static_cast<unsigned char>(s[i])), s.size() - i);
      std::string c = s.substr(i, n);
      if (i > 0 && !prefix_.empty()) c = prefix_ + c;
      if (i + n == s.size() && !suffix_.empty()) c += suffix_;
      if (auto id = vocab_.find(c)) {
        if (unk) {
          add(unk->first, unk->second);
          unk.reset();
        }
        add(*id, n);
      } else {
        bool done = false;
        if (byte_fallback_) {
          std::vector<int64_t> ids;
          for (size_t k = i; k < i + n; ++k)
            if (auto id = vocab_.find(byte_token(static_cast<uint8_t>(s[k])))) ids.push_back(*id);
          if (ids.size() == n) {
            if (unk) {
              add(unk->first, unk->second);
              unk.reset();
            }
            for (auto id : ids) add(id, 1);
            done = true;
          }
        }
        if (!done && !unk_.empty()) {
          const int64_t unk_id = *vocab_.find(unk_);
          if (unk && fuse_unk_) {
            unk->second += n;
          } else {
            if (unk) add(unk->first, unk->second);
            unk = std::make_pair(unk_id, n);
          }
        }
      }
      i += n;
    }
    if (unk) add(unk->first, unk->second);
    for (size_t k = 0; k + 1 < sym.size(); ++k) sym[k].next = static_cast<int>(k + 1);

    struct Cand {
      int64_t rank;
      int pos;
      int64_t new_id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> queue;
    auto push = [&](int pos) {
      if (pos < 0 || sym[pos].next < 0) return;
      auto it = merges_.find(key(sym[pos].id, sym[sym[pos].next].id));
      if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
    };
    for (size_t k = 0; k + 1 < sym.size(); ++k) push(static_cast<int>(k));
    while (!queue.empty()) {
      Cand top = queue.top();
      queue.pop();
      Symbol& left = sym[top.pos];
      if (left.len == 0 || left.next < 0) continue;
      auto it = merges_.find(key(left.id, sym[left.next].id));
      if (it == merges_.end() || it->second.second != top.new_id) continue;
      Symbol& right = sym[left.next];
      left.id = top.new_id;
      left.len += right.len;
      left.next = right.next;
      right.len = 0;
      if (left.next >= 0) sym[left.next].prev = top.pos;
      push(left.prev);
      push(top.pos);
    }
    std::vector<std::pair<int64_t, size_t>> out;
    for (const auto& x : sym)
      if (x.len > 0) out.emplace_back(x.id, x.len);
    return out;
  }

  Vocab vocab_;
  std::unordered_map<uint64_t, std::pair<int64_t, int64_t>> merges_;  // pair -> (rank, merged id)
  std::string unk_, prefix_, suffix_;
  bool fuse_unk_, byte_fallback_, ignore_merges_;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<std::pair<int64_t, size_t>>> cache_;
};

// One token per pre-tokenized piece: the piece itself if the vocabulary has it, else the
// unknown token (an error without one, as tokenizers gives).
class WordLevel : public Model {
 public:
  WordLevel(const Json& j, const std::string& where) : where_(where) {
    vocab_ = read_vocab_object(j.at("vocab"), where);
    unk_ = j.contains("unk_token") && j["unk_token"].is_string() ? j["unk_token"].get<std::string>() : "";
  }

  void tokenize(const NormalizedString& piece, std::vector<Token>& out) const override {
    if (auto id = vocab_.find(piece.str())) return out.push_back({*id, piece.str(), piece.original_span()});
    auto unk = unk_.empty() ? std::nullopt : vocab_.find(unk_);
    if (!unk) throw std::runtime_error(where_ + ": '" + piece.str() + "' is not in the vocabulary and there is no unk_token");
    out.push_back({*unk, unk_, piece.original_span()});
  }

  std::optional<int64_t> token_to_id(const std::string& t) const override { return vocab_.find(t); }
  std::optional<std::string> id_to_token(int64_t id) const override { return vocab_.token(id); }
  size_t vocab_size() const override { return vocab_.ids.size(); }

 private:
  Vocab vocab_;
  std::string unk_, where_;
};

class WordPiece : public Model {
 public:
  WordPiece(const Json& j, const std::string& where) {
    vocab_ = read_vocab_object(j.at("vocab"), where);
    unk_ = j.value("unk_token", std::string("[UNK]"));
    prefix_ = j.value("continuing_subword_prefix", std::string("##"));
    max_chars_ = j.value("max_input_chars_per_word", size_t{100});
    if (!vocab_.find(unk_)) fail(where, "unk_token '" + unk_ + "' is not in the vocab");
  }

  void tokenize(const NormalizedString& piece, std::vector<Token>& out) const override {
    const std::string& s = piece.str();
    std::vector<size_t> bounds;  // char starts, plus the end
    for (size_t i = 0; i < s.size(); i += std::min(utf8_len(static_cast<unsigned char>(s[i])), s.size() - i))
      bounds.push_back(i);
    bounds.push_back(s.size());
    if (bounds.size() - 1 > max_chars_) {
      out.push_back({*vocab_.find(unk_), unk_, piece.original_span()});
      return;
    }
    std::vector<Token> word;
    size_t start = 0;  // index into bounds
    const size_t last = bounds.size() - 1;
    while (start < last) {
      size_t end = last;
      std::optional<int64_t> found;
      while (start < end) {
        std::string sub = s.substr(bounds[start], bounds[end] - bounds[start]);
        if (start > 0) sub = prefix_ + sub;
        if ((found = vocab_.find(sub))) {
          word.push_back({*found, sub, piece.original(bounds[start], bounds[end])});
          break;
        }
        --end;
      }
      if (!found) {
        out.push_back({*vocab_.find(unk_), unk_, piece.original_span()});
        return;
      }
      start = end;
    }
    out.insert(out.end(), word.begin(), word.end());
  }

  std::optional<int64_t> token_to_id(const std::string& t) const override { return vocab_.find(t); }
  std::optional<std::string> id_to_token(int64_t id) const override { return vocab_.token(id); }
  size_t vocab_size() const override { return vocab_.ids.size(); }

 private:
  Vocab vocab_;
  std::string unk_, prefix_;
  size_t max_chars_;
};

class Unigram : public Model {
 public:
  Unigram(const Json& j, const std::string& where) {
    const auto& v = j.at("vocab");
    if (!v.is_array()) fail(where, "Unigram 'vocab' must be a list of [piece, score]");
    double min_score = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_array() || v[i].size() != 2 || !v[i][0].is_string() || !v[i][1].is_number())
        fail(where, "Unigram vocab entry " + std::to_string(i) + " is not [piece, score]");
      const auto piece = v[i][0].get<std::string>();
      vocab_.add(piece, static_cast<int64_t>(i));
      scores_.push_back(v[i][1].get<double>());
      min_score = std::min(min_score, scores_.back());
      max_len_ = std::max(max_len_, piece.size());
    }
    if (j.contains("unk_id") && j["unk_id"].is_number_integer()) unk_id_ = j["unk_id"].get<int64_t>();
    if (unk_id_ && (*unk_id_ < 0 || static_cast<size_t>(*unk_id_) >= v.size())) fail(where, "unk_id is out of range");
    byte_fallback_ = j.value("byte_fallback", false);
    unk_score_ = min_score - 10.0;
  }

  void tokenize(const NormalizedString& piece, std::vector<Token>& out) const override {
    const std::string& s = piece.str();
    if (s.empty()) return;
    struct Node {
      int64_t id = -1;
      double score = 0;
      long starts_at = -1;
    };
    std::vector<Node> best(s.size() + 1);
    best[0].starts_at = 0;
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t mblen = std::min(utf8_len(static_cast<unsigned char>(s[pos])), s.size() - pos);
      if (best[pos].starts_at < 0) {  // no segmentation reaches here (no unk_id): nothing starts from it
        pos += mblen;
        continue;
      }
      const double here = best[pos].score;
      bool single = false;
      // Common-prefix search, shortest first, over char boundaries.
      for (size_t end = pos + mblen; end <= s.size() && end - pos <= max_len_;) {
        auto it = vocab_.ids.find(s.substr(pos, end - pos));
        if (it != vocab_.ids.end()) {
          const double cand = scores_[it->second] + here;
          if (best[end].starts_at < 0 || cand > best[end].score) best[end] = {it->second, cand, static_cast<long>(pos)};
          if (end - pos == mblen) single = true;
        }
        if (end == s.size()) break;
        end += std::min(utf8_len(static_cast<unsigned char>(s[end])), s.size() - end);
      }
      if (!single && unk_id_) {
        const double cand = unk_score_ + here;
        if (best[pos + mblen].starts_at < 0 || cand > best[pos + mblen].score)
          best[pos + mblen] = {*unk_id_, cand, static_cast<long>(pos)};
      }
      pos += mblen;
    }
    if (best[s.size()].starts_at < 0) fail("Unigram", "no segmentation (the model has no unk_id)");
    // Backtrack; consecutive unknowns fuse into one token.
    std::vector<std::pair<size_t, size_t>> spans;
    std::vector<bool> is_unk;
    for (size_t end = s.size(); end > 0;) {
      const Node& n = best[end];
      const size_t start = static_cast<size_t>(n.starts_at);
      const bool u = unk_id_ && n.id == *unk_id_;
      if (u && !is_unk.empty() && is_unk.back()) spans.back().first = start;
      else {
        spans.emplace_back(start, end);
        is_unk.push_back(u);
      }
      end = start;
    }
    for (size_t k = spans.size(); k-- > 0;) {
      const auto [b, e] = spans[k];
      const std::string sub = s.substr(b, e - b);
      const auto off = piece.original(b, e);
      if (auto id = vocab_.find(sub)) {
        out.push_back({*id, sub, off});
        continue;
      }
      if (byte_fallback_) {
        std::vector<Token> bytes;
        for (unsigned char c : sub)
          if (auto id = vocab_.find(byte_token(c))) bytes.push_back({*id, byte_token(c), off});
        if (bytes.size() == sub.size()) {
          out.insert(out.end(), bytes.begin(), bytes.end());
          continue;
        }
      }
      out.push_back({*unk_id_, sub, off});
    }
  }

  std::optional<int64_t> token_to_id(const std::string& t) const override { return vocab_.find(t); }
  std::optional<std::string> id_to_token(int64_t id) const override { return vocab_.token(id); }
  size_t vocab_size() const override { return vocab_.ids.size(); }

 private:
  Vocab vocab_;
  std::vector<double> scores_;
  std::optional<int64_t> unk_id_;
  bool byte_fallback_ = false;
  double unk_score_ = 0;
  size_t max_len_ = 0;
};

}  // namespace

std::unique_ptr<Model> make_model(const Json& j, const std::string& where_in) {
  if (!j.is_object()) fail(where_in, "missing 'model'");
  std::string type = j.value("type", std::string());
  if (type.empty()) {  // old files omit the type: infer it
    if (j.contains("merges")) type = "BPE";
    else if (j.contains("vocab") && j["vocab"].is_array()) type = "Unigram";
    else if (j.contains("continuing_subword_prefix")) type = "WordPiece";
  }
  const std::string where = where_in + ": model " + type;
  try {
    if (type == "BPE") return std::make_unique<BPE>(j, where);
    if (type == "WordPiece") return std::make_unique<WordPiece>(j, where);
    if (type == "Unigram") return std::make_unique<Unigram>(j, where);
    if (type == "WordLevel") return std::make_unique<WordLevel>(j, where);
  } catch (const nlohmann::json::exception& e) {
    fail(where, e.what());
  }
  fail(where_in, "unknown model type '" + type + "' (supported: BPE, WordPiece, Unigram, WordLevel)");
}

}  // namespace peft::tok
