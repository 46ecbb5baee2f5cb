// A training run's output folder: its lock, the fingerprint that tells this run's files
// from another run's, and its checkpoints (checkpoint-N, each file checksummed).
#pragma once

#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace peft {

struct TrainerState {
  int64_t step = 0;  // optimizer steps done; fixes the data position too
  double best_eval = std::numeric_limits<double>::infinity();
  int64_t bad_evals = 0;
  nlohmann::json history = nlohmann::json::array();

  nlohmann::json to_json() const;
  // Validates every field; throws naming `where` and the field.
  static TrainerState from_json(const nlohmann::json& j, const std::string& where);
};

class RunFolder {
 public:
  // Creates the folder and locks it for this process: a second training run into the
  // same folder fails at once instead of corrupting this one's files.
  // `fingerprint` is {"config": {...}, "data": {...}}: what makes two runs the same run.
  RunFolder(std::filesystem::path dir, nlohmann::json fingerprint);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  // Before training: the checkpoint to resume from, if `resume` and one is intact and
  // from this run. Files of another run (or, without `resume`, of any earlier run) are
  // an error unless `overwrite`, which deletes them.
  std::optional<std::filesystem::path> prepare(bool resume, bool overwrite);

  // Writes checkpoint-<state.step>: `write_payload(tmp)` writes the adapter and
  // optimizer files into a temporary folder; trainer_state.json (state, fingerprint,
  // sizes and checksums) is added; the folder is renamed into place. Only the newest
  // `keep` checkpoints stay (0: all).
  void save_checkpoint(const TrainerState& state,
                       const std::function<void(const std::filesystem::path&)>& write_payload, int64_t keep);

  static TrainerState read_state(const std::filesystem::path& checkpoint);
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::optional<std::filesystem::path> newest_intact_checkpoint() const;
  std::string fingerprint_mismatch(const nlohmann::json& stored) const;
  void remove_run_files() const;

  std::filesystem::path dir_;
  nlohmann::json fingerprint_;
  int lock_fd_ = -1;
};

}  // namespace peft
