#include "peft/npy.h"

#include <ATen/ATen.h>

#include <fstream>

#include "util/atomic_file.h"
#include <regex>
#include <sstream>

namespace peft {

namespace {

struct Descr {
  const char* name;
  at::ScalarType type;
};
constexpr Descr kDescrs[] = {{"<f4", at::kFloat}, {"<f8", at::kDouble}, {"|u1", at::kByte}, {"<u1", at::kByte},
                             {"<i4", at::kInt},   {"<i8", at::kLong},   {"|b1", at::kBool}};

}  // namespace

at::Tensor load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  char magic[8];
  in.read(magic, 8);
  if (!in || std::string(magic, 6) != "\x93NUMPY") throw std::runtime_error(path + ": not a .npy file");
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (!in) throw std::runtime_error(path + ": truncated header");
  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr':\s*'([^']+)')")))
    throw std::runtime_error(path + ": header has no descr");
  const std::string descr = m[1];
  if (std::regex_search(header, std::regex(R"('fortran_order':\s*True)")))
    throw std::runtime_error(path + ": Fortran-ordered arrays are not supported");
  if (!std::regex_search(header, m, std::regex(R"('shape':\s*\(([^)]*)\))")))
    throw std::runtime_error(path + ": header has no shape");
  std::vector<int64_t> shape;
  std::stringstream ss(m[1].str());
  for (std::string part; std::getline(ss, part, ',');)
    if (part.find_first_not_of(" ") != std::string::npos) shape.push_back(std::stoll(part));
  at::ScalarType type = at::kFloat;
  bool found = false;
  for (const auto& d : kDescrs)
    if (descr == d.name) {
      type = d.type;
      found = true;
    }
  if (!found) throw std::runtime_error(path + ": unsupported dtype '" + descr + "'");
  auto t = at::empty(shape, at::TensorOptions().dtype(type));
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (!in) throw std::runtime_error(path + ": data shorter than its shape says (truncated?)");
  return t;
}

void save_npy(const std::string& path, const at::Tensor& t_in) {
  auto t = t_in.contiguous().cpu();
  const char* descr = nullptr;
  for (const auto& d : kDescrs)
    if (d.type == t.scalar_type() && !descr) descr = d.name;
  if (!descr) throw std::runtime_error(path + ": no .npy dtype for " + std::string(c10::toString(t.scalar_type())));
  std::string shape;  // Python's tuple syntax: (), (5,), (2, 3)
  for (int64_t i = 0; i < t.dim(); ++i) shape += (i ? ", " : "") + std::to_string(t.size(i));
  if (t.dim() == 1) shape += ",";
  std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + shape + "), }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  AtomicFile out(path);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header);
  out.write(t.data_ptr(), t.nbytes());
  out.commit();
}

}  // namespace peft
