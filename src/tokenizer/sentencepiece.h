// A SentencePiece model file (.model / .spm, a serialized ModelProto) and the library's
// own Unigram encoding and decoding, rule for rule as sentencepiece 0.2 does them.
//
// This is not HF tokenizers' emulation of SentencePiece (tokenizer.json's Precompiled +
// Metaspace + Unigram): the two differ on text such as combining marks, runs of
// whitespace, user-defined symbols and near-tie scores. Tokenizers that call the library
// itself (transformers' "slow" MarianTokenizer) need this one.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace peft::tok {

class SentencePiece {
 public:
  // Reads a Unigram model; throws std::runtime_error naming `where` on a malformed or
  // unsupported file (BPE, WORD and CHAR models are refused).
  static SentencePiece from_bytes(const std::string& bytes, const std::string& where);
  static SentencePiece from_file(const std::string& path);
  ~SentencePiece();
  SentencePiece(SentencePiece&&) noexcept;
  SentencePiece& operator=(SentencePiece&&) noexcept;

  // One piece of an encoding: its text, and the input bytes it came from.
  struct Piece {
    std::string text;
    size_t begin = 0, end = 0;
  };
  // EncodeAsPieces: normalization, the Unigram best path, runs of unknown pieces merged
  // (or split into <0xXX> byte pieces when the model has byte fallback).
  std::vector<Piece> encode(const std::string& text) const;
  // DecodePieces.
  std::string decode(const std::vector<std::string>& pieces) const;
  // The normalized text (what the model segments).
  std::string normalize(const std::string& text) const;

  size_t size() const;
  std::optional<std::string> id_to_piece(int64_t id) const;

  struct Impl;

 private:
  explicit SentencePiece(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace peft::tok
