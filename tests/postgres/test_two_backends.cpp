// Two citrus-backend processes and one citrus-hub on one PostgreSQL database, each in its own working
// directory: no SQLite file anywhere (issue 10, point 4). A user logs in on either backend; a backend
// killed mid-deploy and restarted fails only its own interrupted deploy, never the other backend's;
// PostgreSQL stopped mid-run answers 503 within the bounded time and the backends come back by
// themselves when it returns, with nothing acknowledged lost.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "harness.hpp"
#include "pg_server.hpp"

namespace {

using namespace citrus::it;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

/// One backend process of the pair: its own directory, its own commander id, the shared database.
struct backend_process {
  std::string id, key, dir, db, hub_url;
  std::uint16_t port = 0;
  std::unique_ptr<process> proc;

  void start() {
    const std::string ready = dir + "/backend.port";
    fs::remove(ready);
    proc = std::make_unique<process>(
        std::vector<std::string>{CITRUS_BACKEND_EXE, "serve", "--listen", "127.0.0.1:" + std::to_string(port), "--db", db,
                                 "--hub-url", hub_url, "--commander-id", id, "--default-agent", "agent-1", "--rest-rate",
                                 "1000", "--db-busy-timeout-ms", "2000", "--ready-file", ready},
        dir + "/backend-" + std::to_string(++starts) + ".log",
        std::vector<std::string>{"CITRUS_COMMANDER_KEY=" + key, "CITRUS_JWT_SECRET=" + std::string(48, 'j')});
    port = wait_for_port(ready);
    REQUIRE(port != 0);
  }
  void kill() {
    proc->signal(SIGKILL);
    proc->wait(5s);
    proc.reset();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
  int starts = 0;
};

bool agent_online(const backend_process& b) {
  for (int i = 0; i < 150; ++i) {
    if (http("GET", b.url() + "/metrics").body.find("citrus_backend_agent_online{agent=\"agent-1\"} 1") != std::string::npos)
      return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

std::string status_of(const backend_process& b, const std::string& token, long long site) {
  return json_string(http("GET", b.url() + "/api/sites/" + std::to_string(site), {}, {bearer(token)}).body, "deploy_status");
}

bool wait_status(const backend_process& b, const std::string& token, long long site, const std::string& want,
                 std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (status_of(b, token, site) == want) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

long long create(const backend_process& b, const std::string& token, const std::string& name) {
  auto r = http("POST", b.url() + "/api/sites", R"({"name":")" + name + R"(","url":"https://)" + name + R"(.test"})",
                {bearer(token)});
  INFO(r.body);
  REQUIRE(r.status == 201);
  return json_int(r.body, "id");
}

}  // namespace

TEST_CASE("postgres: two backends and a hub on one database, no SQLite file: logins, deploys, restarts, an outage") {
  auto& pg = citrus::pgtest::server::shared();
  const std::string name = pg.create_database();
  const std::string db = pg.url(name);
  const fs::path root = fs::temp_directory_path() / ("citrus-pg-two-" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (const char* d : {"b1", "b2", "hub", "agent"}) fs::create_directories(root / d);

  checked(run_command({CITRUS_BACKEND_EXE, "user", "add", "alice", "--db", db, "--password-cost", "minimum"}, "alice-pw\n"),
          "user add");
  const std::string agent_key = last_line(checked(
      run_command({CITRUS_BACKEND_EXE, "agent", "register", "agent-1", "--trust", "backend-1,backend-2", "--db", db}),
      "agent register"));
  const std::string hub_url = "ws://127.0.0.1:" + std::to_string(citrus::pgtest::free_port()) + "/";
  backend_process b1, b2;
  b1.id = "backend-1";
  b2.id = "backend-2";
  b1.dir = (root / "b1").string();
  b2.dir = (root / "b2").string();
  for (auto* b : {&b1, &b2}) {
    b->db = db;
    b->hub_url = hub_url;
  }
  for (auto* b : {&b1, &b2})
    b->key = last_line(checked(
        run_command({CITRUS_BACKEND_EXE, "commander", "register", b->id, "--agents", "agent-1", "--db", db}), "commander"));
  b1.start();
  b2.start();
  const std::string hub_port = hub_url.substr(hub_url.rfind(':') + 1, hub_url.size() - hub_url.rfind(':') - 2);
  process hub({CITRUS_HUB_EXE, "--listen", "127.0.0.1:" + hub_port, "--db", db, "--ready-file", (root / "hub/port").string()},
              (root / "hub/hub.log").string());
  REQUIRE(wait_for_port((root / "hub/port").string()) != 0);
  // Slow deploy steps: a deploy stays in flight long enough to kill a backend in the middle of it.
  process agent({CITRUS_AGENT_EXE, "--hub-url", hub_url, "--agent-id", "agent-1", "--trust", "backend-1,backend-2", "--root",
                 (root / "agent/sites").string(), "--step-delay-ms", "400"},
                (root / "agent/agent.log").string(), {"CITRUS_AGENT_KEY=" + agent_key});
  REQUIRE(agent_online(b1));
  REQUIRE(agent_online(b2));

  // A user created once logs in on either backend and sees the same sites.
  auto login = [&](const backend_process& b) {
    auto r = http("POST", b.url() + "/api/login", R"({"username":"alice","password":"alice-pw"})");
    REQUIRE(r.status == 200);
    return json_string(r.body, "token");
  };
  const std::string t1 = login(b1), t2 = login(b2);
  const long long via2 = create(b2, t2, "via-two");
  REQUIRE(wait_status(b2, t2, via2, "created"));
  CHECK(http("GET", b1.url() + "/api/sites", {}, {bearer(t1)}).body.find("\"name\":\"via-two\"") != std::string::npos);
  const long long via1 = create(b1, t1, "via-one");
  REQUIRE(wait_status(b1, t1, via1, "created"));

  // Both deploy at once; backend 1 is killed while both are in flight and starts again.
  auto deploy = [&](const backend_process& b, const std::string& token, long long site) {
    auto r = http("POST", b.url() + "/api/sites/" + std::to_string(site) + "/deploy", {}, {bearer(token)});
    REQUIRE(r.status == 202);
  };
  deploy(b2, t2, via2);
  deploy(b1, t1, via1);
  REQUIRE(status_of(b2, t2, via2) == "deploying");
  CHECK(pg.exec(name, "SELECT operation_by FROM sites WHERE id = " + std::to_string(via2)) == "backend-2");
  CHECK(pg.exec(name, "SELECT operation_by FROM sites WHERE id = " + std::to_string(via1)) == "backend-1");
  b1.kill();
  b1.start();  // its start-up recovery runs against the shared database
  CHECK(status_of(b1, t1, via1) == "failed");     // its own interrupted deploy: failed, as before
  CHECK(status_of(b1, t1, via2) == "deploying");  // backend 2's: untouched...
  REQUIRE(wait_status(b2, t2, via2, "deployed")); // ...and it completes
  CHECK(pg.exec(name, "SELECT operation_by FROM sites WHERE id = " + std::to_string(via2)).empty());

  // PostgreSQL stops: both backends answer 503 within the bounded time, never hang; nothing
  // acknowledged before is lost; they recover by themselves once it is back.
  pg.stop();
  for (const auto* b : {&b1, &b2}) {
    const auto asked = std::chrono::steady_clock::now();
    auto r = http("GET", b->url() + "/api/sites", {}, {bearer(b == &b1 ? t1 : t2)});
    const auto waited = std::chrono::steady_clock::now() - asked;
    CHECK(r.status == 503);
    CHECK(r.body == R"({"success":false,"message":"Service temporarily unavailable"})");
    CHECK(waited < 20s);  // connect (2 s) + statement bounds; a hang would be the test's own timeout
    CHECK(http("GET", b->url() + "/healthz").status == 200);
  }
  pg.start();
  for (const auto* b : {&b1, &b2}) {
    long status = 0;
    for (int i = 0; i < 100 && status != 200; ++i) {
      status = http("GET", b->url() + "/api/sites", {}, {bearer(b == &b1 ? t1 : t2)}).status;
      if (status != 200) std::this_thread::sleep_for(200ms);
    }
    CHECK(status == 200);
  }
  auto listed = http("GET", b1.url() + "/api/sites", {}, {bearer(t1)});
  CHECK(listed.body.find("\"name\":\"via-one\"") != std::string::npos);
  CHECK(listed.body.find("\"name\":\"via-two\"") != std::string::npos);
  // Each storage thread has its own connection and reconnects on its next call after its backoff:
  // the write lane may need a moment more than the read lane did.
  http_result made;
  for (int i = 0; i < 100 && made.status != 201; ++i) {
    made = http("POST", b2.url() + "/api/sites", R"({"name":"after-outage","url":"https://a.test"})", {bearer(t2)});
    if (made.status != 201) std::this_thread::sleep_for(200ms);
  }
  REQUIRE(made.status == 201);
  CHECK(wait_status(b2, t2, json_int(made.body, "id"), "created"));

  for (process* p : {&agent, &hub, b1.proc.get(), b2.proc.get()}) {
    p->signal(SIGTERM);
    CHECK(p->wait(10s) == 0);
  }
  for (const auto& entry : fs::recursive_directory_iterator(root))
    CHECK_MESSAGE(entry.path().extension() != ".db", entry.path().string());  // no SQLite file anywhere
  fs::remove_all(root);
}
