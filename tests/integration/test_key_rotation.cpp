// Key rotation against the real executables: an agent whose key is past the hub's maximum age is asked
// to rotate while a deploy runs; it writes the new key to its key file, re-authenticates with it and
// keeps working; the old key is refused once the overlap ended; a restart uses the new key. A key the
// command line revokes reaches the running hub through the backend's look at expiring keys.
#include <doctest/doctest.h>

#include <signal.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;

namespace {

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::size_t occurrences(const std::string& file, const std::string& needle) {
  const std::string s = file_text(file);
  std::size_t n = 0;
  for (auto at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
  return n;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

/// A fresh key for agent-1 from the command line, the old one revoked (created now: its age starts now).
std::string cli_rotate(platform& p) {
  return last_line(checked(run_command({CITRUS_BACKEND_EXE, "agent", "rotate", "agent-1", "--overlap-s", "0", "--db",
                                        p.dir + "/citrus.db"}),
                           "agent rotate"));
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("key rotation: an agent rotates its key while a deploy runs and keeps working") {
    platform::options o;
    o.step_delay_ms = 2000;  // a deploy of three steps lasts 6 s
    o.agent_key_file = true;
    // Sessions re-authenticate every 4.5 s; a key 4 s old is overdue then; the old key works 2 s more.
    o.hub_args = {"--revokers", "backend-1", "--session-lifetime-s", "6", "--key-max-age-s", "4", "--key-overlap-s", "2"};
    platform p(o);
    p.start_all();
    const std::string alice = p.login("alice", "alice-pw");
    auto alice_ws = user_socket(p, alice);
    auto created = http("POST", p.backend_url() + "/api/sites", R"({"name":"turn","url":"https://turn.test"})",
                        {bearer(alice)});
    REQUIRE(created.status == 201);
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("type":"result")", R"("status":"ok")") == 1; }, 30s));
    const std::string site = std::to_string(json_int(created.body, "id"));

    // A key created now, for an agent started now: its first authentication is in time, its first
    // re-authentication (4.5 s later) is overdue, in the middle of the deploy started at once.
    p.kill_agent();
    const std::string first_key = cli_rotate(p);
    REQUIRE(first_key.rfind("ak_", 0) == 0);
    p.start_agent(first_key);
    REQUIRE(p.wait_agent_online());
    REQUIRE(http("POST", p.backend_url() + "/api/sites/" + site + "/deploy", R"({"version":"v2"})", {bearer(alice)}).status ==
            202);
    const auto deploy_started = std::chrono::steady_clock::now();

    REQUIRE(wait_until([&] { return occurrences(p.agent->log_file(), "\"key_rotated\"") == 1; }, 20s));
    const auto rotated_at = std::chrono::steady_clock::now();
    CHECK(alice_ws->count(R"("type":"result")", R"("status":"ok")") == 1);  // the deploy is still running
    CHECK(rotated_at - deploy_started > 1s);
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("type":"result")", R"("status":"ok")") == 2; }, 30s));
    auto row = http("GET", p.backend_url() + "/api/sites/" + site, {}, {bearer(alice)});
    CHECK(json_string(row.body, "deploy_status") == "deployed");

    // The key file holds the new key (whole, with its newline); the agent never left the hub.
    std::string saved = file_text(p.agent_key_file());
    REQUIRE_FALSE(saved.empty());
    CHECK(saved.back() == '\n');
    saved.pop_back();
    CHECK(saved.rfind("ak_", 0) == 0);
    CHECK(saved != first_key);
    CHECK(occurrences(p.agent->log_file(), saved) == 0);  // never logged
    CHECK(occurrences(p.hub->log_file(), saved) == 0);
    CHECK(occurrences(p.hub->log_file(), "\"key_overdue\"") >= 1);
    CHECK(occurrences(p.agent->log_file(), "\"hub_connection_closed\"") == 0);
    CHECK(occurrences(p.hub->log_file(), "\"session_revoked\"") == 0);  // the end of the overlap left it alone

    // After the overlap the old key is refused; the session on the new key stays.
    std::this_thread::sleep_until(rotated_at + 3s);
    ws_client probe;
    REQUIRE(probe.connect(p.hub_url()));
    probe.send(auth_frame("agent", "agent-1", first_key));
    REQUIRE(probe.wait_for([&] { return probe.closed; }));
    CHECK(probe.close_code() == static_cast<std::uint16_t>(close_code::auth_failed));
    CHECK(p.wait_agent_online(2s));

    // Audited at each step: asked for, issued (hub and backend), the old key expired.
    CHECK(audit_count(p, audit_kind::authentication, "hub_key_rotation", 1, "requested") >= 1);
    CHECK(audit_count(p, audit_kind::authentication, "hub_key_rotation", 1, "issued") >= 1);
    CHECK(audit_count(p.dir + "/citrus.db", audit_kind::administration,
                      [](const audit_event& e) { return e.action == "agent.rotate" && e.actor == "hub:hub-1" && e.outcome == "ok"; },
                      1) >= 1);
    CHECK(audit_count(p, audit_kind::administration, "agent.key_expired", 2, "ok") >= 2);  // the CLI's and the overlap's
    CHECK(audit_count(p, audit_kind::security_event, "hub_key_overdue", 1, "rotation_requested") >= 1);

    // A restart reads the key file: the new key authenticates.
    p.kill_agent();
    p.start_agent();
    CHECK(p.wait_agent_online());
  }

  TEST_CASE("key rotation: the backend's commander key, overdue at a hub without a database, is rotated through the backend") {
    platform::options o;
    o.hub_db = false;  // commanders verified through /api/verify-commander, rotated through /api/rotate-key
    o.commander_key_file = true;
    // Keys are stored with whole seconds: 2 s, so that a key rotated a moment ago is never taken for overdue.
    o.hub_args = {"--key-max-age-s", "2", "--key-overlap-s", "60"};
    platform p(o);
    std::this_thread::sleep_for(2100ms);  // the registered keys are past the maximum age
    p.start_all();
    REQUIRE(wait_until([&] { return occurrences(p.backend->log_file(), "\"key_rotated\"") == 1; }, 10s));
    std::string saved = file_text(p.commander_key_file());
    REQUIRE(saved.size() > 1);
    saved.pop_back();
    CHECK(saved.rfind("ck_", 0) == 0);
    CHECK(saved != p.commander_key);
    CHECK(occurrences(p.backend->log_file(), saved) == 0);
    CHECK(audit_count(p.dir + "/citrus.db", audit_kind::administration,
                      [](const audit_event& e) { return e.action == "commander.rotate" && e.actor == "hub:hub-1" && e.outcome == "ok"; },
                      1) == 1);
    // The agent, whose key is in its environment, cannot keep a new one: it stays overdue, for the operator.
    CHECK(wait_until([&] { return occurrences(p.agent->log_file(), "\"key_rotation_not_asked\"") >= 1; }, 5s));
    const std::string hub_metrics = http("GET", "http://127.0.0.1:" + std::to_string(p.hub_port) + "/metrics").body;
    CHECK(hub_metrics.find("citrus_hub_keys_overdue 1") != std::string::npos);
    CHECK(hub_metrics.find(R"(citrus_hub_key_rotations_total{outcome="issued"} 1)") != std::string::npos);
    // Restarted, the backend reads its key file: the new key opens its session (a refused one would
    // log hub_auth_failed and never come online).
    p.backend->signal(SIGTERM);
    REQUIRE(p.backend->wait() == 0);
    p.start_backend();
    CHECK(p.wait_agent_online());
    CHECK(occurrences(p.backend->log_file(), "\"hub_link_online\"") == 2);  // the log holds both runs
    CHECK(occurrences(p.hub->log_file(), "\"auth_failed\"") == 0);
  }

  TEST_CASE("key rotation: the hub's rotation options are checked") {
    CHECK(run_command({CITRUS_HUB_EXE, "--key-overlap-s", "-1", "--check-config"}).first == 2);
    CHECK(run_command({CITRUS_HUB_EXE, "--key-overlap-s", "86401", "--check-config"}).first == 2);
    CHECK(run_command({CITRUS_HUB_EXE, "--key-max-age-s", "soon", "--check-config"}).first == 2);
    CHECK(run_command({CITRUS_HUB_EXE, "--key-overlap-s", "0", "--key-max-age-s", "604800", "--check-config"}).first == 0);
  }

  TEST_CASE("key rotation: a key revoked on the command line closes the running agent's session within two seconds") {
    platform::options o;
    o.hub_args = {"--revokers", "backend-1"};
    platform p(o);
    p.start_all();
    const auto revoked_at = std::chrono::steady_clock::now();
    cli_rotate(p);  // another process: only the database knows
    REQUIRE(wait_until([&] { return occurrences(p.hub->log_file(), "\"session_revoked\"") == 1; }, 6s));
    CHECK(std::chrono::steady_clock::now() - revoked_at < 3s);
    // The agent logs the close once it has read it: a moment after the hub logged it.
    CHECK(wait_until([&] { return occurrences(p.agent->log_file(), "\"hub_key_revoked\"") == 1; }, 5s));
    CHECK(audit_count(p, audit_kind::administration, "agent.key_expired", 1, "ok") == 1);
  }
}
