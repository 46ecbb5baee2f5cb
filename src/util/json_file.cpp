#include "util/json_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace peft {

namespace {

template <class Json>
Json parse_bounded(std::string_view text, const std::string& where) {
  // The parser itself is iterative; bounding the depth protects what recurses later
  // (copies, dump, comparisons).
  auto guard = [&](int depth, typename Json::parse_event_t, Json&) {
    if (depth > kMaxJsonDepth)
      throw std::runtime_error((where.empty() ? "" : where + ": ") + "JSON nested deeper than " +
                               std::to_string(kMaxJsonDepth) + " levels");
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), guard);
  } catch (const typename Json::exception& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 3: ..." -> the part after "] ".
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    throw std::runtime_error((where.empty() ? "" : where + ": ") + "invalid JSON: " + what);
  }
}

}  // namespace

std::string read_file_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  struct stat sb {};
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path + ": not a regular file");
  }
  std::string out(static_cast<size_t>(sb.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error(path + ": read failed: " + std::strerror(err));
    }
    if (n == 0) break;  // shrank while reading
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

nlohmann::json parse_json(std::string_view text, const std::string& where) {
  return parse_bounded<nlohmann::json>(text, where);
}

nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& where) {
  return parse_bounded<nlohmann::ordered_json>(text, where);
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_file_bytes(path), path); }

nlohmann::ordered_json read_ordered_json_file(const std::string& path) {
  return parse_ordered_json(read_file_bytes(path), path);
}

std::string quote_json(const nlohmann::ordered_json& v, size_t max_chars) {
  return quote_json(nlohmann::json(v), max_chars);
}

std::string quote_json(const nlohmann::json& v, size_t max_chars) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > max_chars) {
    size_t cut = max_chars;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 sequence
    s = s.substr(0, cut) + "...";
  }
  return s;
}

}  // namespace peft
