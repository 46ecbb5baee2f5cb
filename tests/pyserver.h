// Runs the tests' Python reference scripts in a warm interpreter (tests/parity/pyserver.py).
//
// Starting Python and importing torch, transformers and peft costs more than most checks
// themselves; with ~100 checks in the suite that was minutes of CI. The first test that
// needs Python starts one server per build folder (under a file lock, so tests running in
// parallel start one between them); it forks a fresh child per request and exits when the
// test runner is gone. Where it cannot start, scripts run in a new interpreter as before:
// the result is the same either way, only the time differs.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

extern char** environ;

namespace peft::test {

namespace pyserver_detail {

// One server per build folder: the socket's name comes from PEFT_SCRATCH_DIR (short
// enough for sun_path however deep the checkout is).
inline std::string base_path() {
  return "/tmp/peft-pyserver-" + std::to_string(std::hash<std::string>{}(PEFT_SCRATCH_DIR));
}

inline int connect_to(const std::string& sock) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (sock.size() >= sizeof(addr.sun_path)) return -1;
  sock.copy(addr.sun_path, sock.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Starts the server and waits for its "ready" line; false when it did not come up.
inline bool start_server(const std::string& sock) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return false;
  const std::string log = base_path() + ".log", owner = std::to_string(::getppid());
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const std::string script = std::string(PEFT_SOURCE_DIR) + "/tests/parity/pyserver.py";
  std::vector<std::string> args = {PEFT_PYTHON, script, sock, owner};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, PEFT_PYTHON, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  std::string said;
  char buf[64];
  ssize_t n = 0;
  while (rc == 0 && (n = ::read(out[0], buf, sizeof(buf))) > 0) said.append(buf, n);
  ::close(out[0]);
  // The server keeps running on its own; reap only a server that died starting.
  if (said.rfind("ready", 0) != 0 && rc == 0) ::waitpid(pid, nullptr, 0);
  return said.rfind("ready", 0) == 0;
}

// Connects to the build folder's server, starting it if none is listening; -1 if none can be had.
inline int connect_or_start() {
  const std::string sock = base_path() + ".sock";
  int fd = connect_to(sock);
  if (fd >= 0) return fd;
  const int lock = ::open((base_path() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0) return -1;
  ::flock(lock, LOCK_EX);
  fd = connect_to(sock);  // another test may have started it while we waited
  if (fd < 0 && start_server(sock)) fd = connect_to(sock);
  ::close(lock);
  return fd;
}

inline bool ask(int fd, const std::vector<std::string>& argv, int* status, std::string* output) {
  char cwd[4096];
  nlohmann::json env = nlohmann::json::object();  // the script sees our environment, not the server's
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  const std::string request =
      nlohmann::json{{"argv", argv}, {"cwd", ::getcwd(cwd, sizeof(cwd)) ? cwd : "/"}, {"env", env}}
          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buf[65536];
  ssize_t n = 0;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) reply.append(buf, n);
  const auto j = nlohmann::json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("status")) return false;
  *status = j["status"].get<int>();
  *output = j["output"].get<std::string>();
  return true;
}

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace pyserver_detail

// Runs `python argv...` (argv[0]: a script path, or "-c" and code); returns stdout and
// stderr together, and sets *status to the exit code (0: success).
inline std::string run_python(const std::vector<std::string>& argv, int* status) {
  using namespace pyserver_detail;
  std::string output;
  const int fd = connect_or_start();
  if (fd >= 0) {
    const bool ok = ask(fd, argv, status, &output);
    ::close(fd);
    if (ok) return output;
  }
  std::string cmd = PEFT_PYTHON;
  for (const auto& a : argv) {
    cmd += ' ';
    cmd += quote(a);
  }
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) output.append(buf, n);
  const int ws = ::pclose(p);
  *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
  return output;
}

// run_python with tests/parity/<script> and space-separated arguments (no quoting: paths
// in the build folder have no spaces).
inline std::string run_parity_script(const std::string& script, const std::string& args, int* status) {
  std::vector<std::string> argv = {std::string(PEFT_SOURCE_DIR) + "/tests/parity/" + script};
  size_t i = 0;
  while (i < args.size()) {
    const size_t j = args.find(' ', i);
    const std::string word = args.substr(i, j == std::string::npos ? std::string::npos : j - i);
    if (!word.empty()) argv.push_back(word);
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return run_python(argv, status);
}

}  // namespace peft::test
