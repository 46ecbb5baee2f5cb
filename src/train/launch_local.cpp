// `peft train --nproc N`: what torchrun does on one machine, without Python. The
// launcher hosts the rendezvous store (as torchrun's agent does), so that no port has to
// be guessed: the store binds port 0 and the workers are told which port it got.
#define USE_C10D_GLOO 1
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <stdexcept>
#include <thread>

#include "train/distributed.h"

extern char** environ;

namespace peft {

namespace {

// This process's environment without torchrun's variables, plus the worker's own.
std::vector<std::string> worker_env(int rank, int nproc, int port) {
  static const std::vector<std::string> ours = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                                "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string k = kv.substr(0, kv.find('='));
    if (std::find(ours.begin(), ours.end(), k) == ours.end()) env.push_back(kv);
  }
  for (const auto& [k, v] : std::map<std::string, std::string>{{"RANK", std::to_string(rank)},
                                                               {"LOCAL_RANK", std::to_string(rank)},
                                                               {"WORLD_SIZE", std::to_string(nproc)},
                                                               {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
                                                               {"MASTER_ADDR", "127.0.0.1"},
                                                               {"MASTER_PORT", std::to_string(port)},
                                                               {"TORCHELASTIC_USE_AGENT_STORE", "True"}})
    env.push_back(k + "=" + v);
  return env;
}

pid_t spawn(const std::string& exe, const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  std::vector<char*> a, e;
  a.push_back(const_cast<char*>(exe.c_str()));
  for (size_t i = 1; i < argv.size(); ++i) a.push_back(const_cast<char*>(argv[i].c_str()));
  a.push_back(nullptr);
  for (const auto& kv : env) e.push_back(const_cast<char*>(kv.c_str()));
  e.push_back(nullptr);
  pid_t pid = 0;
  if (const int rc = posix_spawn(&pid, exe.c_str(), nullptr, nullptr, a.data(), e.data()); rc != 0)
    throw std::runtime_error("--nproc: cannot start " + exe + ": " + std::strerror(rc));
  return pid;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
                                  strsignal(WTERMSIG(status)) + ")";
  return "ended";
}

}  // namespace

int launch_local_workers(int nproc, const std::vector<std::string>& argv) {
  if (nproc < 1 || nproc > 1024) throw std::invalid_argument("--nproc must be in [1, 1024], got " + std::to_string(nproc));
  c10d::TCPStoreOptions o;
  o.port = 0;  // a free port, whatever else runs
  o.isServer = true;
  o.waitWorkers = false;
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", o);
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::map<pid_t, int> rank_of;
  for (int r = 0; r < nproc; ++r) rank_of[spawn(exe, argv, worker_env(r, nproc, store->getPort()))] = r;
  const auto timeout = ddp_timeout();
  int result = 0;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  while (!rank_of.empty()) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno != EINTR) break;
    if (pid <= 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        for (const auto& [p, r] : rank_of) {
          std::cerr << "error: worker rank " << r << " did not stop after rank failures; killing it\n";
          kill(p, SIGKILL);
        }
        deadline = std::chrono::steady_clock::time_point::max();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    const int rank = rank_of.at(pid);
    rank_of.erase(pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    std::cerr << "error: worker rank " << rank << " " << describe(status) << "\n";
    if (result == 0) {
      result = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
      deadline = std::chrono::steady_clock::now() + timeout + std::chrono::seconds(10);
    }
  }
  return result;
}

}  // namespace peft
