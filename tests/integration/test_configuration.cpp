// An installation from `citrus-backend init` alone: its files pass --check-config, the three
// executables started with nothing but --config find each other and the agent gets online (its
// metrics say so, on the loopback port init gave it); a broken
// file is refused with one line, and init never overwrites.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "harness.hpp"

using namespace citrus::it;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The lines of a log meant for a person (the others are JSON log records).
std::vector<std::string> plain_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line.front() != '{') out.push_back(line);
  return out;
}

unsigned mode_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777u;
}

struct temp_dir {
  temp_dir() {
    char name[] = "/tmp/citrus-config-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path = name;
  }
  ~temp_dir() {
    std::error_code ec;
    if (!std::getenv("CITRUS_KEEP_TEST_DATA")) fs::remove_all(path, ec);
  }
  std::string path;
};

bool wait_for_text(const std::string& file, const std::string& text, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (slurp(file).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

}  // namespace

TEST_CASE("init writes a configuration the three executables start from, and never overwrites it") {
  temp_dir dir;
  const std::string etc = dir.path + "/etc", data = dir.path + "/data";
  const std::uint16_t backend_port = free_port(), hub_port = free_port(), agent_metrics_port = free_port();
  const std::string agent_metrics = "127.0.0.1:" + std::to_string(agent_metrics_port);
  const std::vector<std::string> init{CITRUS_BACKEND_EXE, "init", "--config-dir", etc, "--data-dir", data,
                                      "--web-root", CITRUS_SOURCE_DIR "/apps/web",
                                      "--backend-listen", "127.0.0.1:" + std::to_string(backend_port),
                                      "--hub-listen", "127.0.0.1:" + std::to_string(hub_port),
                                      "--agent-metrics-listen", agent_metrics};
  REQUIRE(run_command(init).first == 0);
  CHECK(slurp(etc + "/agent.toml").find("\nmetrics-listen = \"" + agent_metrics + "\"\n") != std::string::npos);
  CHECK(mode_of(etc + "/keys") == 0700u);
  for (const char* file : {"keys/commander.key", "keys/hub.key", "keys/agent.key", "keys/jwt.secret", "backend.toml",
                           "hub.toml", "agent.toml"})
    CHECK_MESSAGE(mode_of(etc + "/" + file) == 0600u, file);
  CHECK(slurp(etc + "/keys/jwt.secret").size() >= 33);

  SUBCASE("a second init refuses and leaves the files as they were") {
    const std::string before = slurp(etc + "/keys/agent.key");
    process again(init, dir.path + "/init-again.log");
    CHECK(again.wait(20s) == 1);
    const auto lines = plain_lines(slurp(dir.path + "/init-again.log"));
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == "citrus-backend: " + etc + "/backend.toml exists: init never overwrites (move it away to start afresh)");
    CHECK(slurp(etc + "/keys/agent.key") == before);
  }

  SUBCASE("--check-config accepts init's files and names every problem of a broken one, one line each") {
    for (const auto& argv : std::vector<std::vector<std::string>>{
             {CITRUS_BACKEND_EXE, "serve", "--config", etc + "/backend.toml", "--check-config"},
             {CITRUS_HUB_EXE, "--config", etc + "/hub.toml", "--check-config"},
             {CITRUS_AGENT_EXE, "--config", etc + "/agent.toml", "--check-config"}}) {
      const auto [code, out] = run_command(argv);
      CHECK(code == 0);
      CHECK(out.find(": configuration OK") != std::string::npos);
    }
    CHECK_FALSE(fs::exists(data + "/sites"));  // checking creates nothing
    // The file's own problems first (every key), then each value the executable refuses, in its order.
    std::ofstream(etc + "/hub.toml", std::ios::app) << "max-conections = 10\nmax-connections = 0\nsession-lifetime-s = 0\n";
    process hub({CITRUS_HUB_EXE, "--config", etc + "/hub.toml", "--check-config"}, dir.path + "/check.log");
    CHECK(hub.wait(20s) == 2);
    CHECK(plain_lines(slurp(dir.path + "/check.log")) ==
          std::vector<std::string>{
              "citrus-hub: " + etc + "/hub.toml: unknown key 'max-conections' (see citrus-hub --help)",
              "citrus-hub: --session-lifetime-s must be a number of seconds, 1..31536000",
              "citrus-hub: --max-connections must be a positive number"});
    std::ofstream(etc + "/backend.toml", std::ios::app) << "token-lifetime-s = 99999\nrest-rate = 0\n";
    process backend({CITRUS_BACKEND_EXE, "serve", "--config", etc + "/backend.toml", "--check-config",
                     "--jwt-secret-file", dir.path + "/missing.secret"},
                    dir.path + "/check-backend.log");
    CHECK(backend.wait(20s) == 2);  // the first problem's code: a bad value (an unreadable file alone: 1)
    CHECK(plain_lines(slurp(dir.path + "/check-backend.log")) ==
          std::vector<std::string>{"citrus-backend: --rest-rate must be 1..100000",
                                   "citrus-backend: cannot read --jwt-secret-file " + dir.path + "/missing.secret",
                                   "citrus-backend: invalid --token-lifetime-s '99999' (1..3600)"});
    std::ofstream(etc + "/agent.toml", std::ios::app) << "keep-releases = 0\nstep-delay-ms = -1\n";
    process agent({CITRUS_AGENT_EXE, "--config", etc + "/agent.toml", "--check-config", "--trust", "bad id"},
                  dir.path + "/check-agent.log");
    CHECK(agent.wait(20s) == 2);
    CHECK(plain_lines(slurp(dir.path + "/check-agent.log")) ==
          std::vector<std::string>{"citrus-agent: --trust: 'bad id' is not a valid commander id",
                                   "citrus-agent: --step-delay-ms must be an integer in 0..60000",
                                   "citrus-agent: --keep-releases must be an integer in 1..1000"});
  }

  SUBCASE("started with --config only, they find each other; the hub tells $NOTIFY_SOCKET it is ready") {
    const std::string socket_path = dir.path + "/notify.sock";
    const int notify = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(notify >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket_path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(notify, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    timeval timeout{20, 0};
    ::setsockopt(notify, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

    process backend({CITRUS_BACKEND_EXE, "serve", "--config", etc + "/backend.toml"}, dir.path + "/backend.log");
    REQUIRE(wait_for_text(dir.path + "/backend.log", "citrus-backend listening on", 20s));
    process hub({CITRUS_HUB_EXE, "--config", etc + "/hub.toml"}, dir.path + "/hub.log", {"NOTIFY_SOCKET=" + socket_path});
    char buffer[256] = {};
    const ssize_t n = ::recv(notify, buffer, sizeof buffer - 1, 0);
    ::close(notify);
    CHECK(std::string(buffer, n > 0 ? static_cast<std::size_t>(n) : 0) ==
          "READY=1\nSTATUS=listening on port " + std::to_string(hub_port));
    process agent({CITRUS_AGENT_EXE, "--config", etc + "/agent.toml"}, dir.path + "/agent.log");
    CHECK(wait_for_text(dir.path + "/agent.log", "citrus-agent connected", 20s));
    CHECK(http("GET", "http://127.0.0.1:" + std::to_string(backend_port) + "/healthz").status == 200);
    CHECK(http("GET", "http://127.0.0.1:" + std::to_string(backend_port) + "/").body.find("<html") != std::string::npos);
    CHECK(fs::is_directory(data + "/sites"));
    // The starter configuration gives the agent metrics, on loopback: online at the hub once connected.
    bool agent_online = false;
    for (int i = 0; i < 100 && !agent_online; ++i) {
      const auto metrics = http("GET", "http://" + agent_metrics + "/metrics");
      agent_online = metrics.status == 200 && metrics.body.find("\ncitrus_agent_hub_online 1\n") != std::string::npos;
      if (!agent_online) std::this_thread::sleep_for(100ms);
    }
    CHECK(agent_online);
    CHECK(http("GET", "http://" + agent_metrics + "/healthz").status == 200);
    for (process* p : {&agent, &hub, &backend}) {
      p->signal(SIGTERM);
      CHECK(p->wait(20s) == 0);
    }
  }
}
