// Commander and agent sessions at the hub: a maximum lifetime, in-band re-authentication (in time, late,
// with another identity, with a wrong or revoked key, during a rotation's overlap), the clients that
// re-authenticate by themselves, and revocation that closes a live session at once.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/commander_link.hpp"
#include "platform_fixture.hpp"

using namespace std::chrono_literals;

namespace citrus::testing {
namespace {

std::string reauth_frame(std::string_view role, std::string_view id, std::string_view key) {
  std::string frame = auth_frame(role, id, key);
  frame.replace(frame.find(R"("auth")"), 6, R"("reauth")");
  return frame;
}

hub_config lifetime(std::chrono::seconds s) {
  hub_config cfg;
  cfg.session_lifetime = s;
  return cfg;
}

/// A hub with a 60 s session lifetime, agent-1 and backend-1 authenticated, their messages cleared.
struct sessions : hub_fixture {
  memory::recording_client* agent = nullptr;
  memory::loopback_connection* agent_end = nullptr;
  memory::recording_client* backend = nullptr;
  memory::loopback_connection* backend_end = nullptr;

  explicit sessions(hub_config cfg = lifetime(60s)) : hub_fixture(cfg) {
    std::tie(agent, agent_end) = connect("agent", "agent-1", agent1_key);
    std::tie(backend, backend_end) = connect("commander", "backend-1", backend_key);
    REQUIRE(hub().agent_online("agent-1"));
    REQUIRE(hub().commander_online("backend-1"));
    agent->messages.clear();
    backend->messages.clear();
  }

  void later(std::chrono::seconds s) {
    clk.advance(s);
    hub().tick();
    net->run();
  }
};

/// Verifies through another verifier and records what it is told to forget.
struct remembering_verifier final : principal_verifier {
  explicit remembering_verifier(principal_verifier& v) : inner(v) {}
  void verify(principal_kind kind, std::string_view id, std::string_view key, callback done) override {
    inner.verify(kind, id, key, std::move(done));
  }
  void forget(principal_kind kind, std::string_view id) override {
    forgotten.push_back(std::string(to_string(kind)) + ":" + std::string(id));
  }
  principal_verifier& inner;
  std::vector<std::string> forgotten;
};

struct updates final : command_observer {
  std::vector<command_update> seen;
  void on_update(const command_update& u) override { seen.push_back(u); }
};

}  // namespace

TEST_SUITE("hub sessions") {
  TEST_CASE("auth_ok states the lifetime; a reauth in time extends it and requests in flight carry on") {
    hub_fixture f(lifetime(60s));
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    REQUIRE(agent->messages.size() == 1);
    CHECK(contains(agent->messages[0], R"({"v":1,"type":"auth_ok","expires_in":60})"));
    auto [backend, backend_end] = f.connect("commander", "backend-1", f.backend_key);
    backend->messages.clear();
    agent->messages.clear();

    backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    REQUIRE(agent->messages.size() == 1);
    f.clk.advance(40s);
    agent->send(reauth_frame("agent", "agent-1", f.agent1_key));
    backend->send(reauth_frame("commander", "backend-1", f.backend_key));
    f.net->run();
    REQUIRE(agent->messages.size() == 2);
    CHECK(contains(agent->messages[1], R"({"v":1,"type":"auth_ok","expires_in":60})"));
    REQUIRE(backend->messages.size() == 1);
    CHECK(contains(backend->messages[0], R"("type":"auth_ok")"));
    CHECK(f.hub().counters().reauth_ok == 2);
    CHECK(f.audit_count(audit_kind::authentication, "hub_reauth", "ok") == 2);

    f.clk.advance(40s);  // 80 s after the first auth, 40 s after the reauth: both sessions still live
    f.hub().tick();
    agent->send(result_frame("r1", "backend-1"));
    f.net->run();
    CHECK(agent_end->is_open());
    REQUIRE(backend->messages.size() == 2);
    CHECK(contains(backend->messages[1], R"("type":"result")"));
    CHECK(contains(backend->messages[1], R"("id":"r1")"));
    CHECK(f.hub().counters().sessions_expired == 0);
    CHECK(f.security_events() == 0);
    CHECK_FALSE(f.log.mentions(f.agent1_key));
  }

  TEST_CASE("no reauth in time: the session is closed with token_expired (4003) and its requests fail") {
    sessions f;
    f.clk.advance(30s);
    auto [late_backend, late_end] = f.connect("commander", "backend-2", f.other_commander_key);  // ends 30 s later
    late_backend->messages.clear();
    late_backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    REQUIRE(f.agent->messages.size() == 1);

    f.later(29s);  // 59 s: not yet
    CHECK(f.agent_end->is_open());
    f.later(1s);  // 60 s: agent-1 and backend-1 reach their end
    CHECK(contains(f.agent->messages.back(), R"("code":"token_expired")"));
    CHECK(f.agent_end->closed_with() == close_code::token_expired);
    CHECK(f.backend_end->closed_with() == close_code::token_expired);
    CHECK_FALSE(f.hub().agent_online("agent-1"));
    CHECK(f.hub().counters().sessions_expired == 2);
    CHECK(f.audit_count(audit_kind::authentication, "hub_session_expired", "closed") == 2);
    // backend-2's request to the agent that went away fails at once, as on any disconnection.
    CHECK(late_end->is_open());
    CHECK(count_with(*late_backend, R"("code":"agent_disconnected")") == 1);
    CHECK(f.hub().requests_in_flight() == 0);

    // A reauth that comes after the end reaches nothing: the connection is gone.
    CHECK_FALSE(f.agent->send(reauth_frame("agent", "agent-1", f.agent1_key)));
    CHECK(f.hub().counters().reauth_ok == 0);
  }

  TEST_CASE("a reauth with another identity closes the session, a security event") {
    sessions f;
    auto agent2 = f.connect("agent", "agent-2", f.agent2_key);
    SUBCASE("another agent's id and its valid key") {
      f.agent->send(reauth_frame("agent", "agent-2", f.agent2_key));
    }
    SUBCASE("the other role") {
      f.agent->send(reauth_frame("commander", "backend-1", f.backend_key));
    }
    SUBCASE("a user token") {
      f.agent->send(R"({"v":1,"type":"reauth","token":"eyJhbGciOiJub25lIn0.e30."})");
    }
    f.net->run();
    REQUIRE(f.agent->messages.size() == 1);
    CHECK(contains(f.agent->messages[0], R"("code":"auth_failed")"));
    CHECK(f.agent_end->closed_with() == close_code::auth_failed);
    CHECK_FALSE(f.hub().agent_online("agent-1"));
    CHECK(f.hub().agent_online("agent-2"));  // the identity named is not disturbed
    CHECK(agent2.second->is_open());
    CHECK(f.hub().counters().reauth_failed == 1);
    CHECK(f.audit_count(audit_kind::security_event, "hub_reauth_other_identity", "closed") == 1);
    CHECK(f.audit_count(audit_kind::authentication, "hub_auth", "denied") == 1);
  }

  TEST_CASE("a reauth with a wrong or revoked key closes the session, a security event") {
    sessions f;
    SUBCASE("wrong key") {
      f.backend->send(reauth_frame("commander", "backend-1", "ck_wrong"));
      f.net->run();
      CHECK(f.backend_end->closed_with() == close_code::auth_failed);
      CHECK(f.agent_end->is_open());
      CHECK_FALSE(f.log.mentions("ck_wrong"));
    }
    SUBCASE("a key revoked since the session began (rotated with no overlap)") {
      REQUIRE(f.creds.rotate(principal_kind::agent, "agent-1", 0s));
      f.clk.advance(1s);
      f.agent->send(reauth_frame("agent", "agent-1", f.agent1_key));
      f.net->run();
      REQUIRE_FALSE(f.agent->messages.empty());
      CHECK(contains(f.agent->messages.back(), R"("code":"auth_failed")"));
      CHECK(f.agent_end->closed_with() == close_code::auth_failed);
      CHECK(f.backend_end->is_open());
    }
    CHECK(f.hub().counters().reauth_failed == 1);
    CHECK(f.hub().counters().reauth_ok == 0);
    CHECK(f.audit_count(audit_kind::security_event, "hub_reauth_refused", "closed") == 1);
    CHECK(f.audit_count(audit_kind::authentication, "hub_auth", "denied") == 1);
  }

  TEST_CASE("during a rotation's overlap the old and the new key re-authenticate; after it only the new one") {
    sessions f(lifetime(3600s));
    const std::string new_key = *f.creds.rotate(principal_kind::agent, "agent-1", 120s);
    f.agent->send(reauth_frame("agent", "agent-1", f.agent1_key));
    f.net->run();
    f.agent->send(reauth_frame("agent", "agent-1", new_key));
    f.net->run();
    CHECK(count_with(*f.agent, R"("type":"auth_ok")") == 2);
    CHECK(f.hub().counters().reauth_ok == 2);

    f.clk.advance(121s);
    f.agent->send(reauth_frame("agent", "agent-1", new_key));
    f.net->run();
    CHECK(count_with(*f.agent, R"("type":"auth_ok")") == 3);
    f.agent->send(reauth_frame("agent", "agent-1", f.agent1_key));  // the overlap is over
    f.net->run();
    CHECK(f.agent_end->closed_with() == close_code::auth_failed);
    CHECK(f.hub().counters().reauth_ok == 3);
    CHECK(f.hub().counters().reauth_failed == 1);
  }

  TEST_CASE("a reauth before authentication is refused like any message") {
    hub_fixture f(lifetime(60s));
    auto [client, end] = f.connect();
    client->send(reauth_frame("agent", "agent-1", f.agent1_key));
    f.net->run();
    REQUIRE(client->messages.size() == 1);
    CHECK(contains(client->messages[0], R"("code":"auth_required")"));
    CHECK_FALSE(f.hub().agent_online("agent-1"));
    CHECK(f.hub().counters().reauth_ok == 0);
  }

  TEST_CASE("commander_link and agent_runtime re-authenticate by themselves, and a running task finishes") {
    hub_fixture f(lifetime(60s));
    updates seen;
    commander_link link(commander_link_config{"backend-1", f.backend_key}, f.clk, f.log, seen);
    memory::memory_journal journal;
    agent_runtime agent(agent_runtime_config{"agent-1", f.agent1_key, {"backend-1"}, {}}, f.ops, journal, f.log, f.clk);
    std::shared_ptr<agent_task> held;
    REQUIRE(agent.on("site.deploy", [&](std::shared_ptr<agent_task> t) { held = std::move(t); }));
    auto& agent_end = f.net->connect(agent);
    auto& link_end = f.net->connect(link);
    f.net->run();
    REQUIRE(link.online());
    REQUIRE(agent.online());
    REQUIRE(link.send(command_request{"site.deploy", agent_id{"agent-1"}, R"({"site_id":7})"}));
    f.net->run();
    REQUIRE(held);

    f.clk.advance(44s);  // before three quarters of 60 s: nothing sent yet
    link.tick();
    agent.tick();
    f.net->run();
    CHECK(f.hub().counters().reauth_ok == 0);
    f.clk.advance(1s);
    link.tick();
    agent.tick();
    f.net->run();
    CHECK(f.hub().counters().reauth_ok == 2);

    for (int s = 0; s < 170; ++s) {  // to 215 s: each client re-authenticates again at 90, 135 and 180 s
      f.clk.advance(1s);
      f.hub().tick();
      link.tick();
      agent.tick();
      f.net->run();
    }
    CHECK(f.hub().counters().reauth_ok == 8);
    CHECK(f.hub().counters().sessions_expired == 0);
    CHECK(agent_end.is_open());
    CHECK(link_end.is_open());
    held->succeed();
    f.net->run();
    REQUIRE(seen.seen.size() == 1);
    CHECK(seen.seen[0].what == command_update::kind::succeeded);
    CHECK_FALSE(f.log.mentions(f.backend_key));
    CHECK_FALSE(f.log.mentions(f.agent1_key));
  }

  TEST_CASE("revoke closes an identity's live session at once with 4012; its requests fail") {
    sessions f;
    f.backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    CHECK(f.hub().revoke(principal_kind::agent, "agent-1") == 1);
    f.net->run();
    CHECK(f.agent_end->closed_with() == close_code::revoked);
    CHECK(contains(f.agent->messages.back(), R"("code":"auth_failed")"));
    CHECK_FALSE(f.hub().agent_online("agent-1"));
    CHECK(count_with(*f.backend, R"("code":"agent_disconnected")") == 1);
    CHECK(f.hub().counters().sessions_revoked == 1);
    CHECK(f.audit_count(audit_kind::security_event, "hub_revoked", "closed") == 1);
    CHECK(f.hub().revoke(principal_kind::agent, "agent-1") == 0);  // nothing live any more
    CHECK(f.hub().revoke(principal_kind::commander, "nobody") == 0);
    CHECK(f.backend_end->is_open());
  }

  TEST_CASE("a revoke message is obeyed only from the hub's revokers") {
    hub_config cfg = lifetime(60s);
    cfg.revokers = {"backend-1"};
    sessions f(cfg);
    auto [other, other_end] = f.connect("commander", "backend-2", f.other_commander_key);
    auto [agent2, agent2_end] = f.connect("agent", "agent-2", f.agent2_key);
    other->messages.clear();

    other->send(R"({"v":1,"type":"revoke","role":"agent","id":"agent-1"})");  // not a revoker
    agent2->send(R"({"v":1,"type":"revoke","role":"agent","id":"agent-1"})");  // agents never are
    f.net->run();
    CHECK(f.agent_end->is_open());
    CHECK(contains(other->messages.back(), R"("code":"forbidden_operation")"));
    CHECK(f.audit_count(audit_kind::security_event, "hub_revoke_refused", "dropped") == 2);

    updates seen;
    commander_link link(commander_link_config{"backend-1", f.backend_key}, f.clk, f.log, seen);
    CHECK(link.revoke(principal_kind::agent, "agent-1").error() == make_error_code(errc::hub_unavailable));
    f.net->connect(link);  // takes backend-1's session over: the revoker, through its link
    f.net->run();
    REQUIRE(link.online());
    CHECK(link.revoke(principal_kind::hub, "hub-1").error() == make_error_code(errc::invalid_value));
    // The hub checks the sessions' keys again: revoke them first (a revoke for a key that still works
    // leaves its session alone, test_key_rotation.cpp).
    REQUIRE(f.creds.rotate(principal_kind::agent, "agent-1", 0s));
    REQUIRE(f.creds.rotate(principal_kind::commander, "backend-2", 0s));
    REQUIRE(link.revoke(principal_kind::agent, "agent-1"));
    REQUIRE(link.revoke(principal_kind::commander, "backend-2"));
    f.net->run();
    CHECK(f.agent_end->closed_with() == close_code::revoked);
    CHECK(other_end->closed_with() == close_code::revoked);
    CHECK(agent2_end->is_open());
    CHECK(f.hub().counters().sessions_revoked == 2);
    auto events = f.db.audit().query({audit_kind::security_event, 100});
    REQUIRE(events);
    std::size_t by_backend = 0;
    for (const auto& e : *events) by_backend += e.action == "hub_revoked" && e.actor == "commander:backend-1";
    CHECK(by_backend == 2);
  }

  TEST_CASE("the backend's key rotation with no overlap closes the agent's live session at once") {
    hub_config cfg;
    cfg.revokers = {"backend-1"};
    platform_fixture f({}, false, cfg);
    const user_record root = *f.db.users().create_user("root", *hash_password("root-pw", password_cost::minimum()),
                                                       user_role::admin, f.clk.wall_now());
    const std::string bearer = "Bearer " + *f.tokens.issue(root, f.clk.wall_now());
    auto rotate = [&](std::string_view body) {
      const http_request req{"POST", "/api/admin/agents/agent-1/rotate", body, "10.0.0.1:5000", bearer, "application/json"};
      return answer_now<http_response>([&](auto done) { f.backend->handle_http(req, done); });
    };
    CHECK(rotate(R"({"overlapSeconds":60})").status == 200);  // an overlap: the session stays
    f.run();
    CHECK(f.agent->online());
    CHECK(rotate(R"({"overlapSeconds":0})").status == 200);  // revoked: closed now, not at its next reauth
    f.run();
    CHECK_FALSE(f.agent->online());
    CHECK(f.agent_end->closed_with() == close_code::revoked);
    CHECK(f.link->online());
    CHECK(f.hub().counters().sessions_revoked == 1);
  }

  TEST_CASE("trust is enforced at the hub: a command from a commander the agent was not registered to trust is refused") {
    sessions f;
    // backend-1 is granted agent-3, but agent-3 was registered to trust backend-2 only.
    const std::string agent3_key = *f.creds.register_principal(principal_kind::agent, "agent-3", {"backend-2"});
    auto [agent3, agent3_end] = f.connect("agent", "agent-3", agent3_key);
    agent3->messages.clear();
    f.backend->messages.clear();
    f.backend->send(command_frame("r1", "agent-3"));
    f.backend->send(command_frame("r2", "agent-1"));  // agent-1 trusts backend-1: routed
    f.net->run();
    CHECK(agent3->messages.empty());
    REQUIRE(f.backend->messages.size() == 1);
    CHECK(contains(f.backend->messages[0], R"("id":"r1")"));
    CHECK(contains(f.backend->messages[0], R"("code":"untrusted_commander")"));
    CHECK(f.agent->messages.size() == 1);
    CHECK(f.hub().requests_in_flight() == 1);
    CHECK(f.audit_count(audit_kind::security_event, "commander_not_trusted", "dropped") == 1);
    CHECK(agent3_end->is_open());
    CHECK(f.backend_end->is_open());
  }

  TEST_CASE("revoke makes the verifier forget what it cached of the identity, so the revoked key cannot come back") {
    hub_fixture f;
    remembering_verifier verifier(f.verifier);
    citrus::hub h(hub_config{}, hub_services{f.clk, f.log, f.db.audit(), verifier, f.ops, nullptr});
    memory::loopback_transport net(h);
    memory::recording_client agent;
    auto& end = net.connect(agent);
    net.run();
    agent.send(auth_frame("agent", "agent-1", f.agent1_key));
    net.run();
    REQUIRE(h.agent_online("agent-1"));
    CHECK(verifier.forgotten.empty());
    CHECK(h.revoke(principal_kind::agent, "agent-1") == 1);
    CHECK(h.revoke(principal_kind::commander, "backend-2") == 0);  // no session, but forgotten all the same
    net.run();
    CHECK(end.closed_with() == close_code::revoked);
    CHECK(verifier.forgotten == std::vector<std::string>{"agent:agent-1", "commander:backend-2"});
  }
}

}  // namespace citrus::testing
