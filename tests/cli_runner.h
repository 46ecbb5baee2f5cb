// Runs the `peft` tool as a user would, but fenced: an argv (no shell), a memory limit,
// a file-size limit (to play a full disk), and a timeout. Reports how it ended.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <string>
#include <vector>

namespace peft::test {

struct CliLimits {
  size_t memory_bytes = size_t(6) << 30;  // RLIMIT_DATA: heap and anonymous mappings
  unsigned timeout_s = 120;
  size_t file_size_bytes = 0;             // RLIMIT_FSIZE; 0: none. Writes past it fail (EFBIG)
  std::string cwd;                        // default: the test's own
  std::string stdin_path;                 // default: /dev/null
};

struct CliResult {
  int exit_code = -1;   // when it exited
  int signal = 0;       // when a signal ended it (SIGALRM: timed out)
  std::string output;   // stdout and stderr together
  bool timed_out() const { return signal == SIGALRM; }
  bool crashed() const { return signal != 0 && signal != SIGALRM; }
};

inline CliResult run_cli(const std::vector<std::string>& args, const CliLimits& lim = {}) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    const int devnull = open(lim.stdin_path.empty() ? "/dev/null" : lim.stdin_path.c_str(), O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    if (!lim.cwd.empty() && chdir(lim.cwd.c_str()) != 0) _exit(126);
    rlimit mem{lim.memory_bytes, lim.memory_bytes};
    setrlimit(RLIMIT_DATA, &mem);
    if (lim.file_size_bytes) {
      rlimit fs{lim.file_size_bytes, lim.file_size_bytes};
      setrlimit(RLIMIT_FSIZE, &fs);
      signal(SIGXFSZ, SIG_IGN);  // stays ignored across exec: writes fail with EFBIG instead
    }
    rlimit core{0, 0};
    setrlimit(RLIMIT_CORE, &core);
    alarm(lim.timeout_s);  // survives exec; SIGALRM ends a hang
    std::vector<char*> argv;
    static std::string cli = PEFT_CLI;
    argv.push_back(cli.data());
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(cli.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  CliResult r;
  std::array<char, 4096> buf{};
  for (;;) {
    const ssize_t n = read(fds[0], buf.data(), buf.size());
    if (n > 0) r.output.append(buf.data(), static_cast<size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

// How a run ended, for assertion messages.
inline std::string describe(const CliResult& r) {
  return (r.signal ? "signal " + std::to_string(r.signal) : "exit " + std::to_string(r.exit_code)) + ": " + r.output;
}

}  // namespace peft::test
