// Durable writes. Nothing is lost: a file is written to a private temporary beside its
// target, every write is checked, then it is fsynced, renamed over the target and the
// folder is fsynced. A failure (a full disk, a write error) names the file and leaves
// the old target untouched.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace peft {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // opens "<path>.tmp-<pid>-<n>"
  ~AtomicFile();                          // an uncommitted temporary is removed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // fsync, close, rename over the target, fsync the folder. Throws naming the file.
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// A log that grows line by line (metrics.jsonl): each append is checked and reaches
// the disk before the call returns.
class AppendFile {
 public:
  // truncate: start the file with `initial` (written atomically); else append to it.
  AppendFile(std::string path, std::string_view initial);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  void append(std::string_view s);

 private:
  std::string path_;
  int fd_ = -1;
};

void write_file_atomic(const std::string& path, std::string_view contents);
// JSON with `indent` spaces and a final newline.
void write_json_atomic(const std::string& path, const nlohmann::json& j, int indent = 2);
void write_json_atomic(const std::string& path, const nlohmann::ordered_json& j, int indent = 2);
// Makes a rename or removal inside `dir` durable.
void fsync_dir(const std::string& dir);

}  // namespace peft
