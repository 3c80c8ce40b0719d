#include <doctest/doctest.h>

#include <algorithm>

#include "citrus/memory/storage_executors.hpp"
#include "hub_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

namespace {

// A commander, two agents and a second commander, all authenticated.
struct routed : hub_fixture {
  memory::recording_client* backend = nullptr;
  memory::recording_client* other = nullptr;
  memory::recording_client* agent1 = nullptr;
  memory::recording_client* agent2 = nullptr;
  memory::loopback_connection* agent1_end = nullptr;
  memory::loopback_connection* backend_end = nullptr;

  explicit routed(hub_config cfg = {}) : hub_fixture(cfg) {
    std::tie(agent1, agent1_end) = connect("agent", "agent-1", agent1_key);
    agent2 = connect("agent", "agent-2", agent2_key).first;
    std::tie(backend, backend_end) = connect("commander", "backend-1", backend_key);
    other = connect("commander", "backend-2", other_commander_key).first;
    REQUIRE(hub().agent_online("agent-1"));
    REQUIRE(hub().commander_online("backend-1"));
    for (auto* c : {backend, other, agent1, agent2}) c->messages.clear();
  }

  std::size_t total_messages() const {
    return backend->messages.size() + other->messages.size() + agent1->messages.size() + agent2->messages.size();
  }
};

}  // namespace

TEST_SUITE("hub") {
  TEST_CASE("a command reaches its agent tagged with the sender's commanderId, then updates reach only that commander") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    REQUIRE(f.agent1->messages.size() == 1);
    const std::string& fwd = f.agent1->messages[0];
    CHECK(contains(fwd, R"("commanderId":"backend-1")"));
    CHECK(contains(fwd, R"("id":"r1")"));
    CHECK(contains(fwd, R"("payload":{"site_id":7})"));
    CHECK(f.agent2->messages.empty());
    CHECK(f.hub().requests_in_flight() == 1);

    f.agent1->send(progress_frame("r1", "backend-1", 50));
    f.agent1->send(result_frame("r1", "backend-1"));
    f.net->run();
    REQUIRE(f.backend->messages.size() == 2);
    CHECK(contains(f.backend->messages[0], R"("type":"progress")"));
    CHECK(contains(f.backend->messages[0], R"("agent":"agent-1")"));
    CHECK(contains(f.backend->messages[0], R"("percent":50)"));
    CHECK(contains(f.backend->messages[1], R"("type":"result")"));
    CHECK(f.other->messages.empty());
    CHECK(f.agent2->messages.empty());
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.hub().counters().routed == 3);
    CHECK(f.security_events() == 0);
  }

  TEST_CASE("a client-supplied commanderId is rejected, never trusted") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1", "site.deploy", R"({"site_id":7})", R"(,"commanderId":"backend-2")"));
    f.net->run();
    CHECK(f.agent1->messages.empty());
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("code":"invalid_value")"));
    CHECK(f.security_events() == 1);
  }

  TEST_CASE("an agent forging another commander's id is dropped and recorded") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    f.agent1->messages.clear();
    // agent-2 never received r1: it claims it, for backend-1.
    f.agent2->send(result_frame("r1", "backend-1"));
    // agent-1 received r1 from backend-1, but claims it came from backend-2.
    f.agent1->send(result_frame("r1", "backend-2"));
    f.net->run();
    CHECK(f.backend->messages.empty());
    CHECK(f.other->messages.empty());
    REQUIRE(f.agent2->messages.size() == 1);
    CHECK(contains(f.agent2->messages[0], R"("code":"unknown_request")"));
    REQUIRE(f.agent1->messages.size() == 1);
    CHECK(contains(f.agent1->messages[0], R"("code":"unknown_request")"));
    CHECK(f.security_events() == 2);
    CHECK(f.hub().requests_in_flight() == 1);  // the real request is untouched
    CHECK(f.hub().counters().dropped == 2);
    auto events = f.db.audit().query({audit_kind::security_event, 10});
    REQUIRE(events);
    CHECK((*events)[0].actor == "agent:agent-2");  // newest first
    CHECK((*events)[1].actor == "agent:agent-1");
  }

  TEST_CASE("a reply to a request never sent, or after the final status, is dropped") {
    routed f;
    f.agent1->send(result_frame("never-sent", "backend-1"));
    f.net->run();
    CHECK(f.backend->messages.empty());
    CHECK(f.security_events() == 1);

    f.backend->send(command_frame("r2", "agent-1"));
    f.net->run();
    f.agent1->send(result_frame("r2", "backend-1"));
    f.agent1->send(progress_frame("r2", "backend-1", 99));
    f.agent1->send(result_frame("r2", "backend-1", "failed"));
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);  // only the first final
    CHECK(contains(f.backend->messages[0], R"("status":"ok")"));
    CHECK(f.security_events() == 3);
  }

  TEST_CASE("an update naming another agent is an impersonation attempt") {
    routed f;
    f.backend->send(command_frame("r1", "agent-2"));
    f.net->run();
    f.agent1->send(R"({"v":1,"type":"result","id":"r1","commanderId":"backend-1","agent":"agent-2","status":"ok"})");
    f.net->run();
    CHECK(f.backend->messages.empty());
    CHECK(f.security_events() == 1);
    CHECK(f.hub().requests_in_flight() == 1);
  }

  TEST_CASE("agents may not send commands, then commanders may not send updates") {
    routed f;
    f.agent1->send(command_frame("x", "agent-2"));
    f.backend->send(result_frame("x", "backend-1"));
    f.net->run();
    CHECK(f.agent2->messages.empty());
    REQUIRE(f.agent1->messages.size() == 1);
    CHECK(contains(f.agent1->messages[0], R"("code":"forbidden_operation")"));
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("code":"forbidden_operation")"));
  }

  TEST_CASE("accepted is the backend's answer to users: from a commander or an agent the hub refuses it") {
    routed f;
    const auto routed_before = f.hub().counters().routed;
    f.backend->send(R"({"v":1,"type":"accepted","id":"u1","request":"r1"})");
    f.agent1->send(R"({"v":1,"type":"accepted","id":"u1","request":"r1"})");
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"({"v":1,"type":"error","id":"u1","code":"forbidden_operation")"));
    REQUIRE(f.agent1->messages.size() == 1);
    CHECK(contains(f.agent1->messages[0], R"("code":"forbidden_operation")"));
    CHECK(f.hub().counters().routed == routed_before);
  }

  TEST_CASE("a commander may command only the agents it is granted") {
    routed f;
    f.other->send(command_frame("r1", "agent-2"));  // backend-2 is granted agent-1 only
    f.net->run();
    CHECK(f.agent2->messages.empty());
    REQUIRE(f.other->messages.size() == 1);
    CHECK(contains(f.other->messages[0], R"("code":"agent_not_granted")"));
    CHECK(f.security_events() == 1);
  }

  TEST_CASE("unknown operations and invalid payloads never reach an agent") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1", "site.explode"));
    f.backend->send(command_frame("r2", "agent-1", "site.deploy", R"({"site_id":"seven"})"));
    f.backend->send(command_frame("r3", "agent-1", "site.deploy", R"({"site_id":7,"rm":"-rf"})"));
    f.net->run();
    CHECK(f.agent1->messages.empty());
    REQUIRE(f.backend->messages.size() == 3);
    CHECK(contains(f.backend->messages[0], R"("code":"unknown_operation","message")"));  // no field: not about one
    CHECK(contains(f.backend->messages[1], R"("id":"r2","code":"invalid_payload","field":"payload.site_id")"));
    CHECK(contains(f.backend->messages[2], R"("id":"r3","code":"invalid_payload","field":"payload.rm")"));
    CHECK(f.hub().counters().rejected == 3);
  }

  TEST_CASE("oversized and malformed messages are rejected with their code and deliver nothing") {
    hub_config cfg;
    cfg.limits.max_message_bytes = 512;
    routed f(cfg);
    f.backend->send(command_frame("r1", "agent-1", "site.deploy", R"({"site_id":7,"version":")" + std::string(600, 'a') + "\"}"));
    f.backend->send(R"({"v":1,"type":"command",)");
    f.backend->send(R"({"v":1,"type":"command","id":"r1","id":"r2","agent":"agent-1","op":"site.status"})");
    f.net->run();
    CHECK(f.agent1->messages.empty());
    REQUIRE(f.backend->messages.size() == 3);
    CHECK(contains(f.backend->messages[0], R"("code":"message_too_large")"));
    CHECK(contains(f.backend->messages[1], R"("code":"malformed_json")"));
    CHECK(contains(f.backend->messages[2], R"("code":"duplicate_key")"));
    CHECK(f.backend_end->is_open());  // a few bad messages do not cost the connection
  }

  TEST_CASE("agent offline: a clear error, nothing pending") {
    routed f;
    f.backend->send(command_frame("r1", "agent-3"));  // granted, registered, not connected
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("code":"agent_offline")"));
    CHECK(f.hub().requests_in_flight() == 0);
  }

  TEST_CASE("an agent disconnecting mid-command fails its requests for their commanders") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.backend->send(command_frame("r2", "agent-2"));
    f.other->send(command_frame("o1", "agent-1"));
    f.net->run();
    f.agent1_end->close(close_code::going_away, "bye");
    f.net->run();
    CHECK(f.hub().requests_in_flight() == 1);  // r2 on agent-2 lives on
    CHECK(count_with(*f.backend, R"("code":"agent_disconnected")") == 1);
    CHECK(count_with(*f.backend, R"("id":"r1")") == 1);
    CHECK(count_with(*f.other, R"("code":"agent_disconnected")") == 1);
    CHECK(count_with(*f.backend, R"("state":"offline")") == 1);  // presence
  }

  TEST_CASE("a request with no update before the timeout fails, then progress extends it") {
    hub_config cfg;
    cfg.request_timeout = 10s;
    routed f(cfg);
    f.backend->send(command_frame("r1", "agent-1"));
    f.backend->send(command_frame("r2", "agent-1"));
    f.net->run();
    f.clk.advance(8s);
    f.agent1->send(progress_frame("r2", "backend-1", 10));
    f.net->run();
    f.clk.advance(3s);
    f.hub().tick();
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"request_timeout")") == 1);
    CHECK(count_with(*f.backend, R"({"v":1,"type":"error","id":"r1")") == 1);
    CHECK(f.hub().requests_in_flight() == 1);
    f.clk.advance(8s);
    f.hub().tick();
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"request_timeout")") == 2);
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.hub().counters().timeouts == 2);
  }

  TEST_CASE("command latency: routing to the final update, by outcome, on the hub's clock") {
    hub_config cfg;
    cfg.request_timeout = 10s;
    routed f(cfg);
    f.backend->send(command_frame("r1", "agent-1"));
    f.backend->send(command_frame("r2", "agent-1"));
    f.backend->send(command_frame("r3", "agent-2"));
    f.net->run();
    f.clk.advance(30ms);
    f.agent1->send(result_frame("r1", "backend-1"));
    f.agent1->send(result_frame("r2", "backend-1", "failed"));
    f.net->run();
    f.clk.advance(11s);
    f.hub().tick();  // r3 times out: a failure after 11.03 s
    f.net->run();
    const auto& ok = f.hub().counters().command_ok_seconds;
    const auto& failed = f.hub().counters().command_failed_seconds;
    CHECK(ok.count() == 1);
    CHECK(ok.sum() == doctest::Approx(0.03));
    CHECK(failed.count() == 2);
    CHECK(failed.sum() == doctest::Approx(0.03 + 11.03));
    // 0.03 s lands in the le="0.05" bucket, 11.03 s in le="30".
    const auto& bounds = failed.upper_bounds();
    const auto at = [&](double le) { return std::find(bounds.begin(), bounds.end(), le) - bounds.begin(); };
    CHECK(failed.bucket_counts()[static_cast<std::size_t>(at(0.05))] == 1);
    CHECK(failed.bucket_counts()[static_cast<std::size_t>(at(30))] == 1);
  }

  TEST_CASE("online_agents lists the authenticated agents only, sorted, and forgets one that leaves") {
    routed f;
    CHECK(f.hub().online_agents() == std::vector<std::string>{"agent-1", "agent-2"});
    f.connect("agent", "agent-0", "ak_wrong");  // refused: never listed
    f.agent1_end->close(close_code::going_away, "bye");
    f.net->run();
    CHECK(f.hub().online_agents() == std::vector<std::string>{"agent-2"});
    CHECK(f.hub().counters().auth_agent.ok == 2);
    CHECK(f.hub().counters().auth_commander.ok == 2);
  }

  TEST_CASE("duplicate request ids and the in-flight cap") {
    hub_config cfg;
    cfg.max_in_flight_per_commander = 2;
    routed f(cfg);
    f.backend->send(command_frame("r1", "agent-1"));
    f.backend->send(command_frame("r1", "agent-1"));
    f.backend->send(command_frame("r2", "agent-1"));
    f.backend->send(command_frame("r3", "agent-1"));
    f.net->run();
    CHECK(f.agent1->messages.size() == 2);
    CHECK(count_with(*f.backend, R"("code":"duplicate_request")") == 1);
    CHECK(count_with(*f.backend, R"("code":"too_many_in_flight")") == 1);
    f.agent1->send(result_frame("r1", "backend-1"));
    f.net->run();
    f.backend->send(command_frame("r3", "agent-1"));
    f.net->run();
    CHECK(f.agent1->messages.size() == 3);
  }

  TEST_CASE("rate limits: per connection, then the connection is closed after repeated violations") {
    hub_config cfg;
    cfg.connection_rate = rate{1, 3};
    cfg.max_strikes = 5;
    routed f(cfg);
    for (int i = 0; i < 10; ++i) f.backend->send(command_frame("r" + std::to_string(i), "agent-1", "site.status"));
    f.net->run();
    CHECK(f.agent1->messages.size() == 3);
    CHECK(f.hub().counters().rate_limited == 5);
    CHECK(count_with(*f.backend, R"("code":"rate_limited")") == 5);
    CHECK_FALSE(f.backend_end->is_open());
    CHECK(f.backend_end->closed_with() == close_code::rate_limited);
    CHECK(f.agent1_end->is_open());  // nobody else pays for it
  }

  TEST_CASE("per-identity rate limit holds across connections of the same commander") {
    hub_config cfg;
    cfg.identity_rate = rate{1, 2};
    routed f(cfg);
    f.backend->send(command_frame("a", "agent-1", "site.status"));
    f.backend->send(command_frame("b", "agent-1", "site.status"));
    f.net->run();
    auto second = f.connect("commander", "backend-1", f.backend_key).first;  // replaces the first
    second->messages.clear();
    second->send(command_frame("c", "agent-1", "site.status"));
    f.net->run();
    CHECK(count_with(*second, R"("code":"rate_limited")") == 1);
    CHECK(f.agent1->messages.size() == 2);
  }
}

TEST_SUITE("hub_auth") {
  TEST_CASE("wrong key, unknown id and a user token are refused with auth_failed and closed") {
    hub_fixture f;
    auto [c1, e1] = f.connect("agent", "agent-1", "ak_wrong");
    auto [c2, e2] = f.connect("commander", "nobody", f.backend_key);
    auto [c3, e3] = f.connect();
    c3->send(R"({"v":1,"type":"auth","token":"eyJhbGciOiJub25lIn0.e30."})");
    f.net->run();
    for (auto* c : {c1, c2, c3}) {
      REQUIRE(c->messages.size() == 1);
      CHECK(contains(c->messages[0], R"("code":"auth_failed")"));
      CHECK(c->closed);
    }
    CHECK(e1->closed_with() == close_code::auth_failed);
    CHECK_FALSE(f.hub().agent_online("agent-1"));
    // Counted by the role each claimed: the user token claimed none.
    CHECK(f.hub().counters().auth_agent.failed == 1);
    CHECK(f.hub().counters().auth_commander.failed == 1);
    CHECK(f.hub().counters().auth_no_role.failed == 1);
    CHECK_FALSE(f.log.mentions("ak_wrong"));
    CHECK_FALSE(f.log.mentions(f.backend_key));
  }

  TEST_CASE("an agent key used as a commander key is refused") {
    hub_fixture f;
    auto [c, end] = f.connect("commander", "agent-1", f.agent1_key);
    CHECK(end->closed_with() == close_code::auth_failed);
  }

  TEST_CASE("after rotation the old key works during the overlap, then fails") {
    hub_fixture f;
    const std::string old_key = f.agent1_key;
    const std::string new_key = *f.creds.rotate(principal_kind::agent, "agent-1", 60s);
    auto during = f.connect("agent", "agent-1", old_key);
    CHECK(contains(during.first->messages.at(0), R"("type":"auth_ok")"));
    f.clk.advance(61s);
    auto after = f.connect("agent", "agent-1", old_key);
    CHECK(after.second->closed_with() == close_code::auth_failed);
    auto fresh = f.connect("agent", "agent-1", new_key);
    CHECK(contains(fresh.first->messages.at(0), R"("type":"auth_ok")"));
  }

  TEST_CASE("messages before authentication are refused, then no auth within the timeout closes") {
    hub_config cfg;
    cfg.auth_timeout = 2s;
    hub_fixture f(cfg);
    auto [c, end] = f.connect();
    c->send(command_frame("r1", "agent-1"));
    f.net->run();
    REQUIRE(c->messages.size() == 1);
    CHECK(contains(c->messages[0], R"("code":"auth_required")"));
    f.clk.advance(1s);
    f.hub().tick();
    f.net->run();
    CHECK(end->is_open());
    f.clk.advance(2s);
    f.hub().tick();
    f.net->run();
    CHECK(end->closed_with() == close_code::auth_timeout);
  }

  TEST_CASE("floods before authentication close the connection") {
    hub_fixture f;
    auto [c, end] = f.connect();
    for (int i = 0; i < 20; ++i) c->send("{}");
    f.net->run();
    CHECK(end->closed_with() == close_code::rate_limited);
  }

  TEST_CASE("the newest connection of an identity replaces the older, then in-flight requests carry over") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    auto fresh = f.connect("agent", "agent-1", f.agent1_key);
    CHECK(f.agent1_end->closed_with() == close_code::replaced);
    CHECK(f.hub().agent_online("agent-1"));
    CHECK(f.hub().counters().takeovers == 1);
    CHECK(f.audit_count(audit_kind::security_event, "hub_takeover", "replaced") == 1);
    fresh.first->send(result_frame("r1", "backend-1"));
    f.net->run();
    CHECK(count_with(*f.backend, R"("type":"result")") == 1);
    CHECK(count_with(*f.backend, R"("code":"agent_disconnected")") == 0);
  }

  TEST_CASE("two live connections with one identity cannot flap: one take-over, then every take-over within the window is refused") {
    hub_config cfg;
    cfg.takeover_window = 120s;
    hub_fixture f(cfg);
    auto [first, first_end] = f.connect("agent", "agent-1", f.agent1_key);
    auto [second, second_end] = f.connect("agent", "agent-1", f.agent1_key);  // takes over once
    CHECK(first_end->closed_with() == close_code::replaced);
    REQUIRE(contains(second->messages.at(0), R"("type":"auth_ok")"));
    // The first process comes back at once, then 60 s later (citrus-agent's wait): refused each time,
    // since each attempt restarts the window; the session in place stays.
    for (auto wait : {0s, 60s, 60s}) {
      f.clk.advance(wait);
      auto [back, back_end] = f.connect("agent", "agent-1", f.agent1_key);
      REQUIRE(back->messages.size() == 1);
      CHECK(back->messages[0] == R"({"v":1,"type":"error","code":"identity_in_use","message":"This identity is in use by another connection"})");
      CHECK(back_end->closed_with() == close_code::replaced);
      CHECK(second_end->is_open());
      CHECK(f.hub().agent_online("agent-1"));
    }
    CHECK(f.hub().counters().takeovers == 1);
    CHECK(f.hub().counters().takeovers_refused == 3);
    CHECK(f.audit_count(audit_kind::security_event, "hub_takeover_refused", "refused") == 3);
    // The session in place routes as before.
    auto backend = f.connect("commander", "backend-1", f.backend_key).first;
    backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    CHECK(count_with(*second, R"("type":"command")") == 1);
    // A quiet window later, a take-over is allowed again (a restarted process whose old connection is half-open).
    f.clk.advance(121s);
    auto [later, later_end] = f.connect("agent", "agent-1", f.agent1_key);
    CHECK(contains(later->messages.at(0), R"("type":"auth_ok")"));
    CHECK(second_end->closed_with() == close_code::replaced);
    // An identity that is offline is simply taken: no take-over at all.
    auto [backend2, backend2_end] = f.connect("commander", "backend-2", f.other_commander_key);
    CHECK(contains(backend2->messages.at(0), R"("type":"auth_ok")"));
    CHECK(f.hub().counters().takeovers == 2);
  }

  TEST_CASE("commanders follow the same take-over policy") {
    hub_fixture f;
    auto [a, a_end] = f.connect("commander", "backend-1", f.backend_key);
    auto [b, b_end] = f.connect("commander", "backend-1", f.backend_key);
    auto [c, c_end] = f.connect("commander", "backend-1", f.backend_key);
    CHECK(a_end->closed_with() == close_code::replaced);
    CHECK(b_end->is_open());
    CHECK(c_end->closed_with() == close_code::replaced);
    CHECK(contains(c->messages.at(0), R"("code":"identity_in_use")"));
    CHECK(f.hub().commander_online("backend-1"));
    // A refused newcomer's close does not take the identity offline.
    f.net->run();
    CHECK(f.hub().commander_online("backend-1"));
  }

  TEST_CASE("wrong keys for an agent never lock the agent out: its right key gets in at once, the identity is flagged, every failure audited") {
    hub_fixture f;
    auto from = [&](const std::string& remote, std::string_view key) {
      f.clients.push_back(std::make_unique<memory::recording_client>());
      auto* client = f.clients.back().get();
      auto& end = f.net->connect(*client, remote);
      f.net->run();
      client->send(auth_frame("agent", "agent-1", key));
      f.net->run();
      return std::make_pair(client, &end);
    };
    for (int i = 0; i < 12; ++i) {
      auto [c, end] = from("10.0.0.66:" + std::to_string(4000 + i), "ak_guess" + std::to_string(i));
      REQUIRE(c->messages.size() == 1);
      CHECK(contains(c->messages[0], R"("code":"auth_failed")"));
      CHECK(end->closed_with() == close_code::auth_failed);
    }
    auto real = from("10.0.0.1:5000", f.agent1_key);
    REQUIRE(real.first->messages.size() == 1);
    CHECK(contains(real.first->messages[0], R"("type":"auth_ok")"));
    CHECK(f.hub().agent_online("agent-1"));
    CHECK(f.hub().counters().auth_agent.failed == 12);
    CHECK(f.hub().counters().auth_agent.ok == 1);
    CHECK(f.hub().counters().auth_commander.failed == 0);
    CHECK(f.audit_count(audit_kind::authentication, "hub_auth", "denied") == 12);
    auto events = f.db.audit().query({audit_kind::security_event, 100});
    REQUIRE(events);
    REQUIRE(events->size() == 1);  // flagged once in the window, never locked
    CHECK((*events)[0].action == "hub_auth_failures");
    CHECK((*events)[0].target == "agent:agent-1");
    CHECK((*events)[0].outcome == "flagged");
  }

  TEST_CASE("guessing from one address locks that address, for every identity and even the right key, and no other address") {
    hub_fixture f;
    auto from = [&](const std::string& remote, std::string_view id, std::string_view key) {
      f.clients.push_back(std::make_unique<memory::recording_client>());
      auto* client = f.clients.back().get();
      auto& end = f.net->connect(*client, remote);
      f.net->run();
      client->send(auth_frame("agent", id, key));
      f.net->run();
      return std::make_pair(client, &end);
    };
    for (int i = 0; i < 50; ++i) from("10.0.0.7:" + std::to_string(4000 + i), "agent-" + std::to_string(100 + i % 7), "ak_x");
    auto locked = from("10.0.0.7:5000", "agent-1", f.agent1_key);
    CHECK(contains(locked.first->messages.at(0), R"("code":"account_locked")"));
    CHECK(locked.second->closed_with() == close_code::auth_failed);
    CHECK(f.audit_count(audit_kind::security_event, "hub_auth_lockout", "locked") == 1);
    auto elsewhere = from("10.0.0.8:5000", "agent-1", f.agent1_key);
    CHECK(contains(elsewhere.first->messages.at(0), R"("type":"auth_ok")"));
    f.clk.advance(301s);
    auto after = from("10.0.0.7:5001", "agent-2", f.agent2_key);
    CHECK(contains(after.first->messages.at(0), R"("type":"auth_ok")"));
  }

  TEST_CASE("a verifier that cannot answer does not count towards a lockout") {
    struct unavailable final : principal_verifier {
      void verify(principal_kind, std::string_view, std::string_view, callback done) override { done(errc::storage_unavailable); }
    } down;
    hub_fixture f;
    hub_config cfg;
    cfg.auth_failures_per_address.max_failures = 3;  // 8 counted failures would lock the address
    citrus::hub h(cfg, hub_services{f.clk, f.log, f.db.audit(), down, f.ops, nullptr});
    memory::loopback_transport net(h);
    std::vector<std::unique_ptr<memory::recording_client>> clients;
    for (int i = 0; i < 8; ++i) {
      clients.push_back(std::make_unique<memory::recording_client>());
      auto& end = net.connect(*clients.back());
      net.run();
      clients.back()->send(auth_frame("agent", "agent-1", f.agent1_key));
      net.run();
      REQUIRE(clients.back()->messages.size() == 1);
      CHECK(contains(clients.back()->messages[0], R"("code":"storage_unavailable")"));  // retryable, not a wrong key
      CHECK(end.closed_with() == close_code::try_again_later);
    }
    CHECK(f.security_events() == 0);
  }

  TEST_CASE("executor_verifier: keys are checked on the storage lane, answered when it has run; a full lane refuses at once") {
    hub_fixture f;
    memory::manual_storage_executor storage(f.db, 1);  // one verification may wait; the next finds the lane full
    executor_verifier verifier(storage, f.clk);
    citrus::hub h(hub_config{}, hub_services{f.clk, f.log, f.db.audit(), verifier, f.ops, nullptr});
    memory::loopback_transport net(h);
    auto connect = [&](std::string_view role, std::string_view id, std::string_view key) {
      auto client = std::make_unique<memory::recording_client>();
      auto& end = net.connect(*client);
      net.run();
      client->send(auth_frame(role, id, key));
      net.run();
      return std::make_pair(std::move(client), &end);
    };
    auto [commander, commander_end] = connect("commander", "backend-1", f.backend_key);
    CHECK(commander->messages.empty());  // nothing touched the store on the hub's thread
    CHECK(storage.pending(storage_lane::read) == 1);
    auto [agent, agent_end] = connect("agent", "agent-1", f.agent1_key);
    REQUIRE(agent->messages.size() == 1);  // refused at once, not queued behind the lane
    CHECK(contains(agent->messages[0], R"("code":"storage_unavailable")"));
    CHECK(agent_end->closed_with() == close_code::try_again_later);
    CHECK(f.security_events() == 0);

    CHECK(storage.run_all() == 1);
    net.run();
    REQUIRE(commander->messages.size() == 1);
    CHECK(contains(commander->messages[0], R"("type":"auth_ok")"));
    auto [again, again_end] = connect("agent", "agent-1", f.agent1_key);  // the retry finds room
    auto [wrong, wrong_end] = connect("agent", "agent-2", "ak_wrong");
    CHECK(wrong->messages.size() == 1);  // the lane was full again: refused, retryable
    storage.run_all();
    net.run();
    REQUIRE(again->messages.size() == 1);
    CHECK(contains(again->messages[0], R"("type":"auth_ok")"));
    auto [bad, bad_end] = connect("agent", "agent-2", "ak_wrong");
    storage.run_all();
    net.run();
    REQUIRE(bad->messages.size() == 1);
    CHECK(contains(bad->messages[0], R"("code":"auth_failed")"));  // a definite refusal stays auth_failed
    CHECK(bad_end->closed_with() == close_code::auth_failed);

    // A check the store has not answered yet delays nobody else: the commander's command reaches the
    // agent and the agent's result comes back while it waits.
    auto [waiting, waiting_end] = connect("agent", "agent-2", f.agent2_key);
    REQUIRE(storage.pending(storage_lane::read) == 1);
    commander->send(command_frame("r1", "agent-1"));
    net.run();
    REQUIRE(again->messages.size() == 2);
    CHECK(contains(again->messages[1], R"("id":"r1")"));
    again->send(result_frame("r1", "backend-1"));
    net.run();
    CHECK(count_with(*commander, R"("type":"result")") == 1);
    CHECK(waiting->messages.empty());
    storage.run_all();
    net.run();
    REQUIRE(waiting->messages.size() == 1);
    CHECK(contains(waiting->messages[0], R"("type":"auth_ok")"));
  }

  TEST_CASE("verifications in flight are bounded per address: one more is refused unverified, a closed one frees its slot") {
    struct held_verifier final : principal_verifier {
      std::vector<callback> waiting;
      std::size_t asked = 0;
      void verify(principal_kind, std::string_view, std::string_view, callback done) override {
        ++asked;
        waiting.push_back(std::move(done));
      }
    } slow;
    hub_fixture f;
    hub_config cfg;
    cfg.max_verifications_per_address = 2;
    citrus::hub h(cfg, hub_services{f.clk, f.log, f.db.audit(), slow, f.ops, nullptr});
    memory::loopback_transport net(h);
    std::vector<std::unique_ptr<memory::recording_client>> clients;
    auto attempt = [&](const std::string& remote) {
      clients.push_back(std::make_unique<memory::recording_client>());
      auto& end = net.connect(*clients.back(), remote);
      net.run();
      clients.back()->send(auth_frame("agent", "agent-1", "ak_guess"));
      net.run();
      return std::make_pair(clients.back().get(), &end);
    };
    auto first = attempt("10.0.0.9:1");
    attempt("10.0.0.9:2");
    auto third = attempt("10.0.0.9:3");
    CHECK(slow.asked == 2);
    REQUIRE(third.first->messages.size() == 1);
    CHECK(contains(third.first->messages[0], R"("code":"rate_limited")"));
    CHECK(third.second->closed_with() == close_code::rate_limited);
    attempt("10.0.0.10:1");  // another address has its own slots
    CHECK(slow.asked == 3);
    first.second->close(close_code::normal, "bye");  // the client leaves while verifying
    net.run();
    attempt("10.0.0.9:4");
    CHECK(slow.asked == 4);
    for (auto& done : slow.waiting) done(errc::auth_failed);  // answers for gone connections are ignored
    net.run();
    attempt("10.0.0.9:5");
    attempt("10.0.0.9:6");
    CHECK(slow.asked == 6);
  }

  TEST_CASE("commanders learn which granted agents are online") {
    hub_fixture f;
    f.connect("agent", "agent-2", f.agent2_key);
    auto other = f.connect("commander", "backend-2", f.other_commander_key).first;  // granted agent-1 only
    auto backend = f.connect("commander", "backend-1", f.backend_key).first;
    CHECK(count_with(*backend, R"("agent":"agent-2","state":"online")") == 1);
    CHECK(count_with(*other, "presence") == 0);
    f.connect("agent", "agent-1", f.agent1_key);
    CHECK(count_with(*other, R"("agent":"agent-1","state":"online")") == 1);
  }
}

TEST_SUITE("hub_flow") {
  TEST_CASE("queued commands are routed by priority, FIFO within one") {
    hub_fixture f;
    std::size_t wakeups = 0;
    f.hub().set_wakeup([&] { ++wakeups; });
    auto agent = f.connect("agent", "agent-1", f.agent1_key).first;
    auto backend = f.connect("commander", "backend-1", f.backend_key).first;
    agent->messages.clear();
    backend->send(command_frame("low1", "agent-1", "site.deploy", R"({"site_id":1})", R"(,"priority":"low")"));
    backend->send(command_frame("n1", "agent-1", "site.deploy", R"({"site_id":1})"));
    backend->send(command_frame("high1", "agent-1", "site.deploy", R"({"site_id":1})", R"(,"priority":"high")"));
    backend->send(command_frame("s1", "agent-1", "site.status", R"({"site_id":1})"));  // status defaults to high
    f.net->run();
    CHECK(wakeups == 1);
    CHECK(f.hub().queued() == 4);
    CHECK(f.hub().process() == 4);
    f.net->run();
    REQUIRE(agent->messages.size() == 4);
    CHECK(contains(agent->messages[0], R"("id":"high1")"));
    CHECK(contains(agent->messages[1], R"("id":"s1")"));
    CHECK(contains(agent->messages[2], R"("id":"n1")"));
    CHECK(contains(agent->messages[3], R"("id":"low1")"));
  }

  TEST_CASE("slow consumer: progress is coalesced, the final result is delivered, the hard limit closes") {
    hub_config cfg;
    cfg.outbound_soft_limit = 400;
    cfg.outbound_hard_limit = 2000;
    routed f(cfg);
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    f.backend_end->set_reading(false);  // the commander stops reading
    for (int p = 0; p <= 100; p += 5) f.agent1->send(progress_frame("r1", "backend-1", p));
    f.net->run();
    CHECK(f.hub().counters().coalesced > 0);
    const std::size_t buffered = f.backend_end->peer().buffered_amount();
    CHECK(buffered <= 400);
    f.agent1->send(result_frame("r1", "backend-1"));
    f.net->run();
    f.backend_end->set_reading(true);
    f.net->run();
    // Everything that was delivered is in order and the final is last; no progress after it.
    REQUIRE_FALSE(f.backend->messages.empty());
    CHECK(contains(f.backend->messages.back(), R"("type":"result")"));
    CHECK(count_with(*f.backend, R"("type":"result")") == 1);

    // Now a consumer that never reads: commands pile up to the hard limit, then it is closed.
    f.backend_end->set_reading(false);
    for (int i = 0; i < 40; ++i) f.backend->send(command_frame("q" + std::to_string(i), "agent-1", "site.status"));
    f.net->run();
    for (int i = 0; i < 40; ++i) f.agent1->send(result_frame("q" + std::to_string(i), "backend-1"));
    f.net->run();
    CHECK(f.hub().counters().slow_consumers == 1);
    CHECK(f.backend_end->closed_with() == close_code::slow_consumer);
    CHECK(f.agent1_end->is_open());
  }

  TEST_CASE("slow consumer: a commander that never reads the hub's own errors is closed at the hard limit") {
    hub_config cfg;
    cfg.outbound_soft_limit = 400;
    cfg.outbound_hard_limit = 2000;
    routed f(cfg);
    f.backend_end->set_reading(false);
    // agent-3 is granted but offline: every command is answered by the hub itself (agent_offline).
    for (int i = 0; i < 60; ++i) f.backend->send(command_frame("x" + std::to_string(i), "agent-3", "site.status"));
    f.net->run();
    CHECK(f.hub().counters().slow_consumers == 1);
    CHECK(f.backend_end->closed_with() == close_code::slow_consumer);
    CHECK(f.backend_end->peer().buffered_amount() <= cfg.outbound_hard_limit);
    CHECK(f.agent1_end->is_open());
  }

  // Found by tests/fuzz/fuzz_hub: a progress held back under backpressure was flushed on drain after a newer
  // progress of the same request that had been sent directly, once the buffer had drained part of the way.
  TEST_CASE("slow consumer: a held-back progress never arrives after a newer one of its request") {
    hub_config cfg;
    cfg.outbound_soft_limit = 300;  // three progress frames (77 bytes each) fit
    hub_fixture f(cfg);
    // The commander connects first, so the loopback delivers to it before it delivers the agent's messages.
    auto [backend, backend_end] = f.connect("commander", "backend-1", f.backend_key);
    auto agent = f.connect("agent", "agent-1", f.agent1_key).first;
    backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    backend->messages.clear();

    backend_end->set_reading(false);
    for (int p = 1; p <= 6; ++p) agent->send(progress_frame("r1", "backend-1", p));  // 4..6 are coalesced
    f.net->run();
    CHECK(f.hub().counters().coalesced == 3);
    backend_end->set_reading(true);  // the commander reads again while the agent reports 50
    agent->send(progress_frame("r1", "backend-1", 50));
    f.net->run();

    std::vector<int> seen;
    for (const std::string& m : backend->messages) {
      const std::size_t at = m.find(R"("percent":)");
      REQUIRE(at != std::string::npos);
      seen.push_back(std::stoi(m.substr(at + 10)));
    }
    CAPTURE(seen.size());
    REQUIRE_FALSE(seen.empty());
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    CHECK(seen.back() == 50);
  }

  TEST_CASE("every message is logged with metadata, never with secrets or payloads") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1", "site.deploy", R"({"site_id":7,"version":"s3cr3t-v"})"));
    f.net->run();
    CHECK(f.log.count("message_in") >= 1);
    bool found = false;
    for (const auto& r : f.log.records)
      if (r.event == "message_in" && r.get("id") == "r1") {
        found = true;
        CHECK(r.get("op") == "site.deploy");
        CHECK(r.get("identity") == "backend-1");
      }
    CHECK(found);
    CHECK_FALSE(f.log.mentions("s3cr3t-v"));
    CHECK_FALSE(f.log.mentions(f.agent1_key));
  }

  TEST_CASE("scale-out seam: a command for an agent elsewhere goes to the peer link with a route number") {
    // Across real hubs: tests/unit/test_hub_mesh.cpp. Here, what the hub hands the link.
    struct fake_link final : hub_peer_link {
      std::vector<std::string> commands;
      std::vector<std::uint64_t> routes;
      std::vector<std::string> claims;
      std::string_view self() const override { return "hub-1"; }
      bool forward_command(std::string_view agent, std::uint64_t route, protocol::priority,
                           std::string_view frame) override {
        if (agent != "agent-remote") return false;  // the link is down for the others
        commands.emplace_back(frame);
        routes.push_back(route);
        return true;
      }
      void forward_update(std::string_view, std::uint64_t, peer_update_kind, std::string_view) override {}
      void claim(principal_kind, std::string_view id) override { claims.emplace_back(id); }
      void release(principal_kind, std::string_view) override {}
      void revoke(principal_kind, std::string_view) override {}
    } link;
    memory::manual_clock clk;
    memory::recording_logger log;
    memory::memory_storage db;
    memory::seeded_random random;
    credential_service creds(db.credentials(), clk, random);
    store_verifier verifier(creds);
    auto ops = operation_registry::defaults();
    const std::string key = *creds.register_principal(principal_kind::commander, "backend-1", {"*"});
    citrus::hub h({}, hub_services{clk, log, db.audit(), verifier, ops, &link});
    memory::loopback_transport net(h);
    memory::recording_client backend;
    net.connect(backend);
    net.run();
    backend.send(auth_frame("commander", "backend-1", key));
    backend.send(command_frame("r1", "agent-remote"));
    backend.send(command_frame("r2", "agent-nowhere"));
    net.run();
    CHECK(link.claims == std::vector<std::string>{"backend-1"});
    REQUIRE(link.commands.size() == 1);
    CHECK(contains(link.commands[0], R"("commanderId":"backend-1")"));
    CHECK(count_with(backend, R"("code":"agent_offline")") == 1);
    CHECK(h.requests_in_flight() == 1);
    // The peer that accepts it answers on that number; a second final finds no route.
    h.deliver_remote_update("hub-3", link.routes[0], peer_update_kind::accepted, "");
    h.deliver_remote_update("hub-3", link.routes[0], peer_update_kind::final,
                            R"({"v":1,"type":"result","id":"r1","agent":"agent-remote","status":"ok"})");
    h.deliver_remote_update("hub-3", link.routes[0], peer_update_kind::final,
                            R"({"v":1,"type":"result","id":"r1","agent":"agent-remote","status":"ok"})");
    net.run();
    CHECK(count_with(backend, R"("id":"r1","agent":"agent-remote")") == 1);
    CHECK(h.requests_in_flight() == 0);
  }
}

TEST_SUITE("hub_order") {
  TEST_CASE("an agent's last progress and its result, queued together, arrive in order") {
    // Regression: results were queued above progress and overtook it, ending the route first, so
    // the honest progress was refused as unknown_request and audited as a security event.
    hub_fixture f;
    f.hub().set_wakeup([] {});
    auto agent = f.connect("agent", "agent-1", f.agent1_key).first;
    auto backend = f.connect("commander", "backend-1", f.backend_key).first;
    backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    f.hub().process();
    f.net->run();
    agent->send(progress_frame("r1", "backend-1", 100));
    agent->send(result_frame("r1", "backend-1"));
    f.net->run();
    f.hub().process();
    f.net->run();
    REQUIRE(count_with(*backend, R"("id":"r1")") == 2);
    CHECK(contains(backend->messages[backend->messages.size() - 2], R"("percent":100)"));
    CHECK(contains(backend->messages.back(), R"("type":"result")"));
    CHECK(count_with(*agent, "unknown_request") == 0);
    CHECK(f.security_events() == 0);
  }

  // ---------------------------------------------------------------- cancel (#12)

  TEST_CASE("cancel: routed like a command, tagged with the sender, to the agent of the request") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    f.agent1->messages.clear();
    f.backend->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-1"})");
    f.net->run();
    REQUIRE(f.agent1->messages.size() == 1);
    CHECK(f.agent1->messages[0] == R"({"v":1,"type":"cancel","id":"r1","commanderId":"backend-1"})");
    CHECK(f.hub().requests_in_flight() == 1);  // the request's own result answers it
    CHECK(f.backend->messages.empty());
    f.agent1->send(R"({"v":1,"type":"result","id":"r1","commanderId":"backend-1","status":"failed","code":"cancelled"})");
    f.net->run();
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("code":"cancelled")"));
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.security_events() == 0);
  }

  TEST_CASE("cancel of a request the hub has no route for opens one, which the agent's answer ends") {
    hub_config cfg;
    cfg.audit_commands = true;
    routed f(cfg);
    f.backend->send(R"({"v":1,"type":"cancel","id":"r9","agent":"agent-1"})");
    f.net->run();
    REQUIRE(f.agent1->messages.size() == 1);
    CHECK(f.hub().requests_in_flight() == 1);
    f.agent1->send(R"({"v":1,"type":"result","id":"r9","commanderId":"backend-1","status":"failed","code":"cancelled"})");
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"cancelled")") == 1);
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(f.audit_count(audit_kind::site_operation, "command:cancel", "routed") == 1);  // audited like a command
    CHECK(f.audit_count(audit_kind::site_operation, "result:cancel", "failed") == 1);
  }

  TEST_CASE("cancel: only commanders, never a commanderId of the client's, only granted and online agents") {
    routed f;
    f.agent1->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-1"})");
    f.net->run();
    CHECK(count_with(*f.agent1, R"("code":"forbidden_operation")") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "cancel_from_agent", "dropped") == 1);

    f.backend->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-1","commanderId":"backend-2"})");
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"invalid_value")") == 1);
    f.backend->send(R"({"v":1,"type":"cancel","id":"r1"})");
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"missing_field")") == 1);
    f.other->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-2"})");  // backend-2 is granted agent-1 only
    f.net->run();
    CHECK(count_with(*f.other, R"("code":"agent_not_granted")") == 1);
    f.backend->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-3"})");  // granted, not connected
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"agent_offline")") == 1);
    CHECK(f.agent1->messages.size() == 1);  // only the refusal of its own cancel
    CHECK(f.agent2->messages.empty());
    CHECK(f.hub().requests_in_flight() == 0);
  }

  TEST_CASE("cancel of another commander's request: a security event, and the agent is asked about the canceller's own id") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    f.agent1->messages.clear();
    f.other->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-1"})");
    f.net->run();
    CHECK(f.audit_count(audit_kind::security_event, "cancel_not_owner", "refused") == 1);
    REQUIRE(f.agent1->messages.size() == 1);
    CHECK(contains(f.agent1->messages[0], R"("commanderId":"backend-2")"));  // never backend-1's operation
    CHECK(f.hub().requests_in_flight() == 2);
    CHECK(f.backend->messages.empty());
  }

  TEST_CASE("cancel of one's own id in flight to another agent: unknown_request") {
    routed f;
    f.backend->send(command_frame("r1", "agent-2"));
    f.net->run();
    f.backend->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-1"})");
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"unknown_request")") == 1);
    CHECK(f.agent1->messages.empty());
  }

  TEST_CASE("a cancel overtaking its command in the hub's queue: the command is not sent, the cancel's answer ends it") {
    routed f;
    f.hub().set_wakeup([] {});
    f.backend->send(command_frame("r1", "agent-1", "site.deploy", R"({"site_id":7})", R"(,"priority":"low")"));
    f.backend->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-1"})");
    f.net->run();
    f.hub().process();
    f.net->run();
    REQUIRE(f.agent1->messages.size() == 1);
    CHECK(contains(f.agent1->messages[0], R"("type":"cancel")"));
    CHECK(f.backend->messages.empty());  // no duplicate_request for the command
    CHECK(f.hub().requests_in_flight() == 1);
    f.agent1->send(R"({"v":1,"type":"result","id":"r1","commanderId":"backend-1","status":"failed","code":"cancelled"})");
    f.net->run();
    f.hub().process();
    f.net->run();
    CHECK(count_with(*f.backend, R"("code":"cancelled")") == 1);
    CHECK(f.hub().requests_in_flight() == 0);
  }

  TEST_CASE("a late answer to a cancel that crossed the result is dropped quietly, once, then forgery is forgery again") {
    routed f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.backend->send(R"({"v":1,"type":"cancel","id":"r1","agent":"agent-1"})");
    f.net->run();
    const std::string result = result_frame("r1", "backend-1");
    f.agent1->send(result);
    f.agent1->send(result);  // the agent's answer to the cancel, from its journal
    f.net->run();
    CHECK(count_with(*f.backend, R"("type":"result")") == 1);
    CHECK(f.security_events() == 0);
    CHECK(f.agent1->messages.size() == 2);  // the command and the cancel; no error back
    f.agent1->send(result);  // a third: nothing explains it
    f.net->run();
    CHECK(f.audit_count(audit_kind::security_event, "unknown_request", "dropped") == 1);
  }
}
