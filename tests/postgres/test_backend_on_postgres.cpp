// The real executables on a real PostgreSQL database and nothing else: no SQLite file anywhere (set-up A
// of docs/operations.md). Users and keys are created with the backend's CLI, the hub verifies commanders
// and agents in the same database and writes its audit events there, and a user logs in over REST,
// creates a site that the agent then builds, and deploys it.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "harness.hpp"
#include "pg_server.hpp"

namespace {

using namespace citrus::it;
namespace fs = std::filesystem;

}  // namespace

TEST_CASE("postgres: citrus-backend and citrus-hub on PostgreSQL: CLI user, REST login, a site created") {
  auto& pg = citrus::pgtest::server::shared();
  const std::string name = pg.create_database();
  const std::string db = pg.url(name);
  const fs::path dir = fs::temp_directory_path() / ("citrus-pg-it-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string sites_root = (dir / "sites").string();

  checked(run_command({CITRUS_BACKEND_EXE, "user", "add", "alice", "--db", db, "--password-cost", "minimum"}, "alice-pw\n"),
          "user add");
  const std::string agent_key = last_line(checked(
      run_command({CITRUS_BACKEND_EXE, "agent", "register", "agent-1", "--trust", "backend-1", "--db", db}), "agent"));
  const std::string commander_key = last_line(checked(
      run_command({CITRUS_BACKEND_EXE, "commander", "register", "backend-1", "--agents", "agent-1", "--db", db}),
      "commander"));
  REQUIRE(agent_key.rfind("ak_", 0) == 0);
  REQUIRE(commander_key.rfind("ck_", 0) == 0);
  CHECK(pg.exec(name, "SELECT count(*) FROM principals") == "2");

  const std::uint16_t hub_port = citrus::pgtest::free_port();
  const std::string hub_url = "ws://127.0.0.1:" + std::to_string(hub_port) + "/";
  process backend({CITRUS_BACKEND_EXE, "serve", "--listen", "127.0.0.1:0", "--db", db, "--hub-url", hub_url,
                   "--commander-id", "backend-1", "--default-agent", "agent-1", "--rest-rate", "1000", "--ready-file",
                   (dir / "backend.port").string()},
                  (dir / "backend.log").string(),
                  {"CITRUS_COMMANDER_KEY=" + commander_key, "CITRUS_JWT_SECRET=" + std::string(48, 'j')});
  const std::uint16_t backend_port = wait_for_port((dir / "backend.port").string());
  REQUIRE(backend_port != 0);
  const std::string api = "http://127.0.0.1:" + std::to_string(backend_port);
  // Commander keys from PostgreSQL; agent keys through the backend's API without a hub key: from --db too.
  process hub({CITRUS_HUB_EXE, "--listen", "127.0.0.1:" + std::to_string(hub_port), "--db", db, "--ready-file",
               (dir / "hub.port").string()},
              (dir / "hub.log").string());
  REQUIRE(wait_for_port((dir / "hub.port").string()) == hub_port);
  process agent({CITRUS_AGENT_EXE, "--hub-url", hub_url, "--agent-id", "agent-1", "--trust", "backend-1", "--root",
                 sites_root, "--step-delay-ms", "10"},
                (dir / "agent.log").string(), {"CITRUS_AGENT_KEY=" + agent_key});

  auto bad = http("POST", api + "/api/login", R"({"username":"alice","password":"wrong"})");
  CHECK(bad.status == 401);
  auto login = http("POST", api + "/api/login", R"({"username":"alice","password":"alice-pw"})");
  REQUIRE(login.status == 200);
  const std::string token = json_string(login.body, "token");
  REQUIRE_FALSE(token.empty());

  // The agent comes online through the hub, which verified both keys against PostgreSQL.
  bool online = false;
  for (int i = 0; i < 150 && !online; ++i) {
    online = http("GET", api + "/metrics").body.find("citrus_backend_agent_online{agent=\"agent-1\"} 1") != std::string::npos;
    if (!online) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(online);

  auto created = http("POST", api + "/api/sites", R"({"name":"blog","url":"https://blog.test"})", {bearer(token)});
  INFO(created.body);
  REQUIRE(created.status == 201);
  const long long site = json_int(created.body, "id");
  CHECK(site == 1);
  std::string status;
  for (int i = 0; i < 150 && status != "created"; ++i) {
    auto listed = http("GET", api + "/api/sites/" + std::to_string(site), {}, {bearer(token)});
    status = json_string(listed.body, "deploy_status");
    if (status != "created") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(status == "created");  // the agent's result came back and was written to PostgreSQL
  CHECK(pg.exec(name, "SELECT deploy_status FROM sites WHERE id = 1") == "created");
  auto deploy = http("POST", api + "/api/sites/1/deploy", R"({"version":"v2"})", {bearer(token)});
  REQUIRE(deploy.status == 202);
  for (int i = 0; i < 150 && status != "deployed"; ++i) {
    status = json_string(http("GET", api + "/api/sites/1", {}, {bearer(token)}).body, "deploy_status");
    if (status != "deployed") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(status == "deployed");

  // A wrong agent key at the hub: refused, and the hub's event lands in the trail the backend's
  // operators review (the hub writes it from its own audit thread into the shared database).
  {
    ws_client intruder;
    REQUIRE(intruder.connect(hub_url));
    intruder.send(auth_frame("agent", "agent-1", "ak_wrong"));
    REQUIRE(intruder.wait_for([&] { return intruder.closed; }));
    CHECK(intruder.count(R"("code":"auth_failed")") == 1);
  }
  std::string denied;
  for (int i = 0; i < 50 && denied.find("\"action\":\"hub_auth\"") == std::string::npos; ++i) {
    denied = checked(run_command({CITRUS_BACKEND_EXE, "audit", "--db", db, "--kind", "authentication"}), "audit");
    if (denied.find("\"action\":\"hub_auth\"") == std::string::npos) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(denied.find(R"("actor":"conn:)") != std::string::npos);
  CHECK(denied.find(R"("target":"agent:agent-1","outcome":"denied")") != std::string::npos);

  // The audit trail of the same database, through the CLI.
  const std::string audit =
      checked(run_command({CITRUS_BACKEND_EXE, "audit", "--db", db, "--kind", "site_operation"}), "audit");
  CHECK(audit.find("\"action\":\"site.create\"") != std::string::npos);

  for (auto* p : {&agent, &hub, &backend}) {
    p->signal(SIGTERM);
    CHECK(p->wait(std::chrono::seconds(10)) == 0);
  }
  CHECK_FALSE(fs::exists(dir / "citrus.db"));
  fs::remove_all(dir);
}
