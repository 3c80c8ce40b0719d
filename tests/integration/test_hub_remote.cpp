// A hub with no database (set-up B of docs/operations.md): citrus-hub started with --verify-url and no
// --db verifies commanders and agents through the backend and sends its audit events there.
#include <doctest/doctest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;
namespace fs = std::filesystem;

namespace {

/// Events of `kind` in the backend's trail reported by hub-1 (actor "hub:hub-1/...") with this action
/// and outcome, polled for up to `polls` × 5 s (the hub batches and retries).
std::size_t hub_events(platform& p, audit_kind kind, const std::string& action, const std::string& outcome,
                       std::size_t at_least, int polls = 1) {
  std::size_t n = 0;
  for (int i = 0; i < polls && n < at_least; ++i)
    n = audit_count(p.dir + "/citrus.db", kind,
                    [&](const audit_event& e) {
                      return e.actor.rfind("hub:hub-1/", 0) == 0 && e.action == action && e.outcome == outcome;
                    },
                    at_least);
  return n;
}

/// A connection to the hub that authenticates as (role, id, key) and is refused: its one error frame.
std::string refused_at_hub(platform& p, const std::string& role, const std::string& id, const std::string& key) {
  ws_client ws;
  REQUIRE(ws.connect(p.hub_url()));
  ws.send(auth_frame(role, id, key));
  REQUIRE(ws.wait_for([&] { return ws.closed; }));
  REQUIRE(ws.messages.size() == 1);
  return ws.messages[0];
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("a hub without a database: deploys work, its security events reach the backend's trail") {
    platform::options o;
    o.hub_db = false;
    platform p(o);
    p.start_all();  // the backend's commander and the agent were both verified through the backend
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);
    auto created = http("POST", p.backend_url() + "/api/sites", R"({"name":"remote","url":"https://remote.test"})",
                        {bearer(alice)});
    REQUIRE(created.status == 201);
    const std::string site = std::to_string(json_int(created.body, "id"));
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("type":"result")", R"("status":"ok")") == 1; }));
    auto deploy = http("POST", p.backend_url() + "/api/sites/" + site + "/deploy", R"({"version":"v2"})", {bearer(alice)});
    REQUIRE(deploy.status == 202);
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("type":"result")", R"("status":"ok")") == 2; }));
    auto row = http("GET", p.backend_url() + "/api/sites/" + site, {}, {bearer(alice)});
    CHECK(json_string(row.body, "deploy_status") == "deployed");

    // A wrong agent key and a wrong commander key at the hub: refused, and the hub's own events land in
    // the backend's trail under its name, next to the backend's record of the verifications it refused.
    CHECK(refused_at_hub(p, "agent", "agent-1", "ak_wrong").find(R"("code":"auth_failed")") != std::string::npos);
    CHECK(refused_at_hub(p, "commander", "backend-1", "ck_wrong").find(R"("code":"auth_failed")") != std::string::npos);
    CHECK(hub_events(p, audit_kind::authentication, "hub_auth", "denied", 2) == 2);
    CHECK(audit_count(p, audit_kind::security_event, "verify_agent", 1, "denied") == 1);
    CHECK(audit_count(p, audit_kind::security_event, "verify_commander", 1, "denied") == 1);

    // The same trail through the operators' CLI.
    auto trail = run_command({CITRUS_BACKEND_EXE, "audit", "--db", p.dir + "/citrus.db", "--kind", "authentication"});
    REQUIRE(trail.first == 0);
    CHECK(trail.second.find(R"("actor":"hub:hub-1/conn:)") != std::string::npos);

    // Only a registered hub may report events or verify keys.
    const std::string batch =
        R"({"events":[{"at":1,"kind":"security_event","actor":"agent:x","action":"forged","target":"","outcome":"dropped","detail":""}]})";
    for (const std::string route : {"/api/hub-events", "/api/verify-commander"}) {
      CAPTURE(route);
      auto wrong = http("POST", p.backend_url() + route, batch, {"Authorization: Bearer hub-1:hk_wrong"});
      CHECK(wrong.status == 401);
      auto stranger = http("POST", p.backend_url() + route, batch,
                           {"Authorization: Bearer hub-9:" + p.hub_key});
      CHECK(stranger.status == 401);
    }
    CHECK(audit_count(p, audit_kind::security_event, "hub_auth", 4, "denied") == 4);
    CHECK(audit_count(p.dir + "/citrus.db", audit_kind::security_event,
                      [](const audit_event& e) { return e.action == "forged"; }, 0) == 0);
  }

  TEST_CASE("a hub without a database keeps its events while the backend is down and delivers them after") {
    platform::options o;
    o.hub_db = false;
    platform p(o);
    p.start_all();
    p.backend->signal(SIGTERM);
    REQUIRE(p.backend->wait() == 0);
    // Nobody can verify a key now (agent-1's is still in the hub's short cache): the hub refuses as
    // retryable and records it.
    const std::string refused = refused_at_hub(p, "agent", "agent-9", p.agent_key);
    CHECK(refused.find(R"("code":"storage_unavailable")") != std::string::npos);
    p.start_backend();
    CHECK(hub_events(p, audit_kind::authentication, "hub_auth", "denied", 1, 4) == 1);
    CHECK(p.wait_agent_online());  // the restarted backend is back on the hub and sees the agent again
  }

  TEST_CASE("a hub without a database needs a --verify-url whose neighbours it can find") {
    platform p;
    const std::string key_file = p.dir + "/hub.key";
    { std::ofstream(key_file) << p.hub_key << '\n'; }
    auto r = run_command({CITRUS_HUB_EXE, "--listen", "127.0.0.1:0", "--verify-url", "http://127.0.0.1:1/check",
                          "--hub-key-file", key_file});
    CHECK(r.first == 2);
    CHECK(r.second.find("--verify-url must end in /api/verify-agent") != std::string::npos);
  }
}
