#include "train/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>

#include "util/atomic_file.h"
#include "util/hash.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kLockFile = ".peft-train.lock";

// What `peft train` writes into its output folder, besides checkpoint-N folders.
const char* const kRunFiles[] = {"adapter_config.json", "adapter_model.safetensors", "prompt_encoder.safetensors",
                                 "metrics.jsonl",       "train_config.json",         "loss.dat",
                                 "loss.gp",             "loss.png"};

// checkpoint-N folders, oldest first; with `unfinished`, also checkpoint-N.tmp.
std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const fs::path& dir, bool unfinished = false) {
  std::vector<std::pair<int64_t, fs::path>> all;
  if (!fs::is_directory(dir)) return all;
  for (const auto& d : fs::directory_iterator(dir)) {
    auto name = d.path().filename().string();
    if (!d.is_directory() || name.rfind("checkpoint-", 0) != 0) continue;
    std::string num = name.substr(11);
    if (unfinished && num.size() > 4 && num.compare(num.size() - 4, 4, ".tmp") == 0) num.resize(num.size() - 4);
    if (num.empty() || num.size() > 18 || num.find_first_not_of("0123456789") != std::string::npos) continue;
    all.emplace_back(std::stoll(num), d.path());
  }
  std::sort(all.begin(), all.end());
  return all;
}

}  // namespace

nlohmann::json TrainerState::to_json() const {
  return {{"global_step", step},
          {"best_eval", std::isfinite(best_eval) ? nlohmann::json(best_eval) : nlohmann::json()},
          {"bad_evals", bad_evals},
          {"log_history", history}};
}

TrainerState TrainerState::from_json(const nlohmann::json& j, const std::string& where) {
  auto bad = [&](const std::string& m) -> TrainerState { throw std::runtime_error(where + ": " + m); };
  if (!j.is_object()) return bad("not a JSON object");
  TrainerState s;
  const auto& step = j.contains("global_step") ? j["global_step"] : nlohmann::json();
  if (!step.is_number_integer() || step.get<int64_t>() < 1) return bad("'global_step' must be an integer >= 1");
  s.step = step.get<int64_t>();
  const auto& best = j.contains("best_eval") ? j["best_eval"] : nlohmann::json();
  if (!best.is_null() && !best.is_number()) return bad("'best_eval' must be a number or null");
  if (best.is_number()) s.best_eval = best.get<double>();
  const auto& bad_evals = j.contains("bad_evals") ? j["bad_evals"] : nlohmann::json();
  if (!bad_evals.is_number_integer() || bad_evals.get<int64_t>() < 0) return bad("'bad_evals' must be an integer >= 0");
  s.bad_evals = bad_evals.get<int64_t>();
  const auto& hist = j.contains("log_history") ? j["log_history"] : nlohmann::json();
  if (!hist.is_array()) return bad("'log_history' must be a list");
  for (const auto& h : hist)
    if (!h.is_object() || !h.contains("step") || !h["step"].is_number_integer())
      return bad("'log_history' entries must be objects with an integer 'step'");
  s.history = hist;
  return s;
}

RunFolder::RunFolder(fs::path dir, nlohmann::json fingerprint)
    : dir_(std::move(dir)), fingerprint_(std::move(fingerprint)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_))
    throw std::runtime_error(dir_.string() + ": cannot create the output folder" + (ec ? ": " + ec.message() : ""));
  const std::string lock = (dir_ / kLockFile).string();
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw std::runtime_error(lock + ": cannot create the lock file: " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {0};
    const ssize_t n = ::pread(lock_fd_, pid, sizeof pid - 1, 0);
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw std::runtime_error(dir_.string() + ": another peft train is writing to this output_dir" +
                             (n > 0 ? std::string(" (pid ") + std::string(pid, strcspn(pid, "\n")) + ")" : "") +
                             "; wait for it or choose another output_dir");
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    std::cerr << "warning: " << lock << ": cannot record this process's id\n";
}

RunFolder::~RunFolder() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock; the file stays, harmless
}

std::optional<fs::path> RunFolder::prepare(bool resume, bool overwrite) {
  std::vector<std::string> found;
  for (const auto& [step, path] : list_checkpoints(dir_, true)) found.push_back(path.filename().string());
  for (const char* f : kRunFiles)
    if (fs::exists(dir_ / f)) found.emplace_back(f);
  if (found.empty()) return std::nullopt;
  const std::string listing = found.front() + (found.size() > 1 ? ", ..." : "");
  if (overwrite) {
    std::cerr << "note: --overwrite: removing the earlier run's files in " << dir_.string() << " (" << listing << ")\n";
    remove_run_files();
    return std::nullopt;
  }
  if (!resume)
    throw std::runtime_error(dir_.string() + ": output_dir holds an earlier run's files (" + listing +
                             "); pass --resume to continue that run, --overwrite to replace it, or choose another "
                             "output_dir");
  auto ckpt = newest_intact_checkpoint();
  if (!ckpt) {
    std::cerr << "note: no intact checkpoint in " << dir_.string() << "; starting fresh\n";
    return std::nullopt;
  }
  const auto stored = read_json_file((*ckpt / kStateFile).string()).value("run", nlohmann::json());
  if (auto why = fingerprint_mismatch(stored); !why.empty())
    throw std::runtime_error(ckpt->string() + " is from a different run (" + why +
                             "); pass --overwrite to start this run afresh, choose another output_dir, or start "
                             "from its weights with init_adapter=" + ckpt->string());
  return ckpt;
}

std::string RunFolder::fingerprint_mismatch(const nlohmann::json& stored) const {
  if (!stored.is_object() || !stored.contains("config") || !stored.contains("data"))
    return "it records no run fingerprint";
  std::vector<std::string> diffs;
  const auto& now = fingerprint_["config"];
  const auto& then = stored["config"];
  for (const auto& [k, v] : now.items()) {
    const auto old = then.contains(k) ? then[k] : nlohmann::json();
    if (old != v) diffs.push_back(k + " " + (old.is_null() ? "unset" : old.dump()) + " then, " + v.dump() + " now");
  }
  for (const auto& [k, v] : then.items())
    if (!now.contains(k)) diffs.push_back(k + " " + v.dump() + " then, unset now");
  for (const auto& [k, v] : fingerprint_["data"].items())
    if (!stored["data"].contains(k) || stored["data"][k] != v) diffs.push_back("the contents of " + k + " differ");
  std::string out;
  for (size_t i = 0; i < diffs.size() && i < 4; ++i) out += (i ? "; " : "") + diffs[i];
  if (diffs.size() > 4) out += "; and " + std::to_string(diffs.size() - 4) + " more";
  return out;
}

void RunFolder::remove_run_files() const {
  for (const auto& [step, path] : list_checkpoints(dir_, true)) fs::remove_all(path);
  for (const char* f : kRunFiles) fs::remove(dir_ / f);
  fsync_dir(dir_.string());
}

TrainerState RunFolder::read_state(const fs::path& checkpoint) {
  const auto path = (checkpoint / kStateFile).string();
  return TrainerState::from_json(read_json_file(path), path);
}

void RunFolder::save_checkpoint(const TrainerState& state, const std::function<void(const fs::path&)>& write_payload,
                                int64_t keep) {
  const std::string name = "checkpoint-" + std::to_string(state.step);
  const fs::path final_dir = dir_ / name, tmp = dir_ / (name + ".tmp");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    write_payload(tmp);
    nlohmann::json files = nlohmann::json::object();
    for (const auto& f : fs::directory_iterator(tmp))
      files[f.path().filename().string()] = {{"bytes", fs::file_size(f.path())},
                                             {"xxh3_128", file_content_hash(f.path().string())}};
    nlohmann::json j = state.to_json();
    j["files"] = files;
    j["run"] = fingerprint_;
    write_json_atomic((tmp / kStateFile).string(), j);
    fsync_dir(tmp.string());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);  // an unfinished checkpoint is never left to be mistaken for one
    throw;
  }
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_dir(dir_.string());
  const auto all = list_checkpoints(dir_);
  for (size_t i = 0; keep > 0 && i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove_all(all[i].second);
}

// The newest checkpoint whose state is valid and whose files all match their recorded
// sizes and checksums.
std::optional<fs::path> RunFolder::newest_intact_checkpoint() const {
  auto all = list_checkpoints(dir_);
  std::reverse(all.begin(), all.end());
  for (const auto& [step, dir] : all) {
    try {
      const auto j = read_json_file((dir / kStateFile).string());
      const auto st = TrainerState::from_json(j, kStateFile);
      if (st.step != step) throw std::runtime_error("global_step " + std::to_string(st.step) + " in a folder for step " +
                                                    std::to_string(step));
      if (!j.contains("files") || !j["files"].is_object() || j["files"].empty())
        throw std::runtime_error("trainer_state.json lists no files");
      for (const auto& [f, meta] : j["files"].items()) {
        if (f.find('/') != std::string::npos || f == "..") throw std::runtime_error("bad file name '" + f + "'");
        const auto p = dir / f;
        if (!fs::is_regular_file(p)) throw std::runtime_error(f + " is missing");
        if (!meta.is_object() || meta.value("bytes", nlohmann::json()) != nlohmann::json(fs::file_size(p)))
          throw std::runtime_error(f + " has the wrong size");
        if (meta.value("xxh3_128", std::string()) != file_content_hash(p.string()))
          throw std::runtime_error(f + " does not match its checksum");
      }
      // A composition's checkpoint (docs/COMPOSITION.md) holds its own files, not an adapter's.
      const bool composed = j["files"].contains("composition_config.json");
      const std::vector<std::string> needed =
          composed ? std::vector<std::string>{"composition_config.json", "optimizer.safetensors"}
                   : std::vector<std::string>{"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors"};
      for (const auto& f : needed)
        if (!j["files"].contains(f)) throw std::runtime_error(f + " is not in the checkpoint");
      return dir;
    } catch (const std::exception& e) {
      std::cerr << "warning: " << dir.string() << " is damaged (" << e.what() << "); trying an older checkpoint\n";
    }
  }
  return std::nullopt;
}

}  // namespace peft
