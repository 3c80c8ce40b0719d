// Commander and agent sessions at the real hub: they re-authenticate in band before their lifetime ends
// (a deploy running across it is not disturbed), and a key the backend revokes closes its live session
// at once at a hub that lists the backend in --revokers.
#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;

namespace {

std::size_t occurrences(const std::string& file, const std::string& needle) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  std::size_t n = 0;
  for (auto at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
  return n;
}

/// An administrator's token (user "root", added to the platform's database).
std::string admin_token(platform& p) {
  checked(run_command({CITRUS_BACKEND_EXE, "user", "add", "root", "--admin", "--db", p.dir + "/citrus.db", "--password-cost",
                       "minimum"},
                      "root-pw\n"),
          "user add root");
  return p.login("root", "root-pw");
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("peer sessions: the backend and the agent re-authenticate in band while a deploy runs across the lifetime") {
    platform::options o;
    o.step_delay_ms = 900;  // a deploy of three steps (2.7 s) lasts longer than the 2 s session lifetime
    o.hub_args = {"--session-lifetime-s", "2"};
    platform p(o);
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);
    auto created = http("POST", p.backend_url() + "/api/sites", R"({"name":"long","url":"https://long.test"})",
                        {bearer(alice)});
    REQUIRE(created.status == 201);
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("type":"result")", R"("status":"ok")") == 1; }, 20s));
    const std::string site = std::to_string(json_int(created.body, "id"));
    const auto started = std::chrono::steady_clock::now();
    REQUIRE(http("POST", p.backend_url() + "/api/sites/" + site + "/deploy", R"({"version":"v2"})", {bearer(alice)}).status ==
            202);
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("type":"result")", R"("status":"ok")") == 2; }, 30s));
    CHECK(std::chrono::steady_clock::now() - started > 2s);  // the deploy outlived one session lifetime
    auto row = http("GET", p.backend_url() + "/api/sites/" + site, {}, {bearer(alice)});
    CHECK(json_string(row.body, "deploy_status") == "deployed");
    // Each of the two re-authenticated at least once (every 1.5 s), and no session ran out.
    CHECK(occurrences(p.hub->log_file(), "\"reauth_ok\"") >= 2);
    CHECK(occurrences(p.hub->log_file(), "\"session_expired\"") == 0);
    CHECK(occurrences(p.hub->log_file(), "\"reauth_failed\"") == 0);
    CHECK(occurrences(p.agent->log_file(), "\"agent_reauthenticated\"") >= 1);
    CHECK(occurrences(p.backend->log_file(), "\"hub_link_reauthenticated\"") >= 1);
    CHECK(occurrences(p.agent->log_file(), "\"hub_connection_closed\"") == 0);
  }

  TEST_CASE("peer sessions: the backend revoking an agent's key closes its session at the hub within a second") {
    platform::options o;
    o.hub_args = {"--revokers", "backend-1"};
    platform p(o);
    p.start_all();
    const std::string root = admin_token(p);

    // With an overlap the old key keeps working: the session stays.
    REQUIRE(http("POST", p.backend_url() + "/api/admin/agents/agent-1/rotate", R"({"overlapSeconds":60})", {bearer(root)})
                .status == 200);
    std::this_thread::sleep_for(500ms);
    CHECK(occurrences(p.hub->log_file(), "\"session_revoked\"") == 0);

    // Revoked (no overlap): closed at once, not at the next re-authentication an hour later.
    const auto revoked_at = std::chrono::steady_clock::now();
    REQUIRE(http("POST", p.backend_url() + "/api/admin/agents/agent-1/rotate", R"({"overlapSeconds":0})", {bearer(root)})
                .status == 200);
    while (occurrences(p.hub->log_file(), "\"session_revoked\"") == 0 && std::chrono::steady_clock::now() - revoked_at < 5s)
      std::this_thread::sleep_for(20ms);
    CHECK(std::chrono::steady_clock::now() - revoked_at < 1s);
    CHECK(occurrences(p.hub->log_file(), "\"session_revoked\"") == 1);
    // The agent saw 4012, and its old key no longer authenticates.
    ws_client probe;
    REQUIRE(probe.connect(p.hub_url()));
    probe.send(auth_frame("agent", "agent-1", p.agent_key));
    REQUIRE(probe.wait_for([&] { return probe.closed; }));
    CHECK(probe.close_code() == static_cast<std::uint16_t>(close_code::auth_failed));
    CHECK(audit_count(p, audit_kind::security_event, "hub_revoked", 1, "closed") == 1);
    CHECK(occurrences(p.agent->log_file(), "\"hub_key_revoked\"") == 1);  // and it waits before trying again
  }
}
