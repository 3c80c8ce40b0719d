// Key rotation as a protocol operation (rotate_key → key), keys' maximum age, and revocations that reach
// live sessions: re-checked on `revoke`, authentications answered across a revocation verified again, the
// backend's watch of expiring keys, and a revoked hub key refused at once on every hub route.
#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/commander_link.hpp"
#include "citrus/core/protocol.hpp"
#include "platform_fixture.hpp"

using namespace std::chrono_literals;

namespace citrus::testing {
namespace {

constexpr std::string_view rotate_frame = R"({"v":1,"type":"rotate_key"})";

std::string reauth_frame(std::string_view role, std::string_view id, std::string_view key) {
  std::string frame = auth_frame(role, id, key);
  frame.replace(frame.find(R"("auth")"), 6, R"("reauth")");
  return frame;
}

/// The key in the last `key` message of `client` ("" when none came).
std::string issued_key(const memory::recording_client& client) {
  protocol::parser p;
  for (auto it = client.messages.rbegin(); it != client.messages.rend(); ++it) {
    auto parsed = p.parse(*it);
    if (parsed && (*parsed)->type == protocol::message_type::key) return std::string((*parsed)->key);
  }
  return {};
}

hub_config overlap(std::chrono::seconds s) {
  hub_config cfg;
  cfg.key_rotation_overlap = s;
  return cfg;
}

/// Verifies through another verifier, but holds each answer until the test releases it.
struct held_verifier final : principal_verifier {
  explicit held_verifier(principal_verifier& v) : inner(v) {}
  struct pending {
    principal_kind kind;
    std::string id, key;
    callback done;
  };
  void verify(principal_kind kind, std::string_view id, std::string_view key, callback done) override {
    held.push_back({kind, std::string(id), std::string(key), std::move(done)});
  }
  /// Answers the oldest held check as the store answers now.
  void release() {
    pending p = std::move(held.front());
    held.erase(held.begin());
    inner.verify(p.kind, p.id, p.key, std::move(p.done));
  }
  /// Answers the oldest held check with `answer` (what a store read before a revocation said).
  void release_with(result<verified_principal> answer) {
    pending p = std::move(held.front());
    held.erase(held.begin());
    p.done(std::move(answer));
  }
  principal_verifier& inner;
  std::vector<pending> held;
};

/// A verifier that verifies but cannot rotate (principal_verifier's default).
struct verify_only final : principal_verifier {
  explicit verify_only(principal_verifier& v) : inner(v) {}
  void verify(principal_kind kind, std::string_view id, std::string_view key, callback done) override {
    inner.verify(kind, id, key, std::move(done));
  }
  principal_verifier& inner;
};

struct updates final : command_observer {
  std::vector<command_update> seen;
  void on_update(const command_update& u) override { seen.push_back(u); }
};

/// An agent runtime for agent-1 whose save_key records what it was given (or fails when told to).
struct saving_agent {
  std::vector<std::string> saved;
  bool fail = false;
  std::size_t reauths_when_saved = 0;
  std::vector<std::shared_ptr<agent_task>> held;
  memory::memory_journal journal;
  std::unique_ptr<agent_runtime> runtime;

  saving_agent(hub_fixture& f, std::string key, bool can_save = true) {
    agent_runtime_config cfg{"agent-1", std::move(key), {"backend-1"}};
    if (can_save)
      cfg.save_key = [this, &f](const std::string& fresh) -> result<void> {
        reauths_when_saved = f.hub().counters().reauth_ok;
        if (fail) return errc::storage_unavailable;
        saved.push_back(fresh);
        return {};
      };
    runtime = std::make_unique<agent_runtime>(std::move(cfg), f.ops, journal, f.log, f.clk);
    REQUIRE(runtime->on("site.deploy", [this](std::shared_ptr<agent_task> t) { held.push_back(std::move(t)); }));
  }
};

}  // namespace

TEST_SUITE("key rotation") {
  TEST_CASE("protocol: rotate_key carries nothing; key needs its key, and may say how long the old one works") {
    protocol::parser p;
    auto ask = p.parse(rotate_frame);
    REQUIRE(ask);
    CHECK((*ask)->type == protocol::message_type::rotate_key);
    CHECK(p.parse(R"({"v":1,"type":"rotate_key","id":"r1"})").error() == make_error_code(errc::unknown_field));
    CHECK(p.parse(R"({"v":1,"type":"rotate_key","key":"ak_x"})").error() == make_error_code(errc::unknown_field));
    auto key = p.parse(R"({"v":1,"type":"key","key":"ak_new","expires_in":300})");
    REQUIRE(key);
    CHECK((*key)->type == protocol::message_type::key);
    CHECK((*key)->key == "ak_new");
    CHECK((*key)->expires_in == 300);
    CHECK(p.parse(R"({"v":1,"type":"key"})").error() == make_error_code(errc::missing_field));
    CHECK(p.parse(R"({"v":1,"type":"key","key":""})").error() == make_error_code(errc::invalid_value));
    CHECK(p.parse(R"({"v":1,"type":"key","key":"k","expires_in":-1})").error() == make_error_code(errc::invalid_value));
    CHECK(p.parse(R"({"v":1,"type":"key","key":"k","role":"agent"})").error() == make_error_code(errc::unknown_field));
    CHECK(protocol::to_string(protocol::message_type::rotate_key) == "rotate_key");
    CHECK(protocol::to_string(protocol::message_type::key) == "key");
  }

  TEST_CASE("an agent asks over its session: the key comes once, the old one works through the overlap, then fails") {
    hub_fixture f(overlap(60s));
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    agent->messages.clear();
    agent->send(std::string(rotate_frame));
    f.net->run();
    REQUIRE(agent->messages.size() == 1);
    CHECK(contains(agent->messages[0], R"("type":"key")"));
    CHECK(contains(agent->messages[0], R"("expires_in":60)"));
    const std::string fresh = issued_key(*agent);
    REQUIRE(fresh.rfind("ak_", 0) == 0);
    CHECK(fresh != f.agent1_key);
    CHECK_FALSE(f.log.mentions(fresh));  // never logged
    CHECK(f.hub().counters().key_rotations == 1);
    CHECK(f.audit_count(audit_kind::authentication, "hub_key_rotation", "requested") == 1);
    CHECK(f.audit_count(audit_kind::authentication, "hub_key_rotation", "issued") == 1);

    // During the overlap both keys verify; the session re-authenticates with the new one.
    CHECK(f.creds.verify(principal_kind::agent, "agent-1", f.agent1_key));
    agent->send(reauth_frame("agent", "agent-1", fresh));
    f.net->run();
    CHECK(contains(agent->messages.back(), R"("type":"auth_ok")"));
    CHECK(f.hub().counters().reauth_ok == 1);

    // After it, the old key fails and the new one works: a restart authenticates with the new key.
    f.clk.advance(61s);
    CHECK(f.creds.verify(principal_kind::agent, "agent-1", f.agent1_key).error() == make_error_code(errc::auth_failed));
    CHECK(f.creds.verify(principal_kind::agent, "agent-1", fresh));
    agent_end->close(close_code::normal, "restart");
    f.net->run();
    auto [again, again_end] = f.connect("agent", "agent-1", fresh);
    CHECK(contains(again->messages.back(), R"("type":"auth_ok")"));
    auto [old, old_end] = f.connect("agent", "agent-1", f.agent1_key);
    CHECK(old_end->closed_with() == close_code::auth_failed);
    CHECK(again_end->is_open());
  }

  TEST_CASE("one rotation per authentication; another during the overlap once the new key is in use") {
    hub_fixture f(overlap(60s));
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    agent->send(std::string(rotate_frame));
    f.net->run();
    const std::string first = issued_key(*agent);
    REQUIRE_FALSE(first.empty());
    agent->messages.clear();
    agent->send(std::string(rotate_frame));  // not re-authenticated with `first` yet
    f.net->run();
    REQUIRE(agent->messages.size() == 1);
    CHECK(contains(agent->messages[0], R"("code":"rate_limited")"));
    CHECK(f.hub().counters().key_rotations == 1);

    f.clk.advance(30s);  // within the first overlap
    agent->send(reauth_frame("agent", "agent-1", first));
    agent->send(std::string(rotate_frame));
    f.net->run();
    const std::string second = issued_key(*agent);
    REQUIRE_FALSE(second.empty());
    CHECK(second != first);
    // The original key still ends with the first overlap (a rotation never extends an old key)...
    f.clk.advance(31s);
    CHECK(f.creds.verify(principal_kind::agent, "agent-1", f.agent1_key).error() == make_error_code(errc::auth_failed));
    CHECK(f.creds.verify(principal_kind::agent, "agent-1", first));  // ...and `first` ends 60 s after the second
    f.clk.advance(30s);
    CHECK(f.creds.verify(principal_kind::agent, "agent-1", first).error() == make_error_code(errc::auth_failed));
    CHECK(f.creds.verify(principal_kind::agent, "agent-1", second));
    CHECK(agent_end->is_open());
  }

  TEST_CASE("late: a session still on the old key after the overlap is refused at its reauth (4002)") {
    hub_config cfg = overlap(10s);
    cfg.session_lifetime = 60s;
    hub_fixture f(cfg);
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    agent->send(std::string(rotate_frame));
    f.net->run();
    REQUIRE_FALSE(issued_key(*agent).empty());  // received, but never used
    f.clk.advance(11s);
    agent->send(reauth_frame("agent", "agent-1", f.agent1_key));
    f.net->run();
    CHECK(agent_end->closed_with() == close_code::auth_failed);
    CHECK(f.audit_count(audit_kind::security_event, "hub_reauth_refused", "closed") == 1);
  }

  TEST_CASE("a session whose key was revoked behind the hub's back gets no new key: it is closed (4012)") {
    hub_fixture f(overlap(60s));
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    agent->messages.clear();
    REQUIRE(f.creds.rotate(principal_kind::agent, "agent-1", 0s));  // the command line, say: nobody told the hub
    agent->send(std::string(rotate_frame));
    f.net->run();
    CHECK(issued_key(*agent).empty());
    CHECK(agent_end->closed_with() == close_code::revoked);
    CHECK(f.hub().counters().key_rotations_failed == 1);
    CHECK(f.audit_count(audit_kind::authentication, "hub_key_rotation", "failed") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "hub_revoked", "closed") == 1);
  }

  TEST_CASE("rotate_key before auth is auth_required; a key from a peer is refused; a verifier that cannot rotate says so") {
    hub_fixture f;
    auto [anon, anon_end] = f.connect();
    anon->send(std::string(rotate_frame));
    f.net->run();
    CHECK(contains(anon->messages.back(), R"("code":"auth_required")"));
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    agent->send(R"({"v":1,"type":"key","key":"ak_mine"})");
    f.net->run();
    CHECK(contains(agent->messages.back(), R"("code":"forbidden_operation")"));

    verify_only plain(f.verifier);
    citrus::hub other(hub_config{}, hub_services{f.clk, f.log, f.db.audit(), plain, f.ops, nullptr});
    memory::loopback_transport net(other);
    memory::recording_client client;
    auto& end = net.connect(client);
    net.run();
    client.send(auth_frame("agent", "agent-2", f.agent2_key));
    client.send(std::string(rotate_frame));
    net.run();
    CHECK(contains(client.messages.back(), R"("code":"forbidden_operation")"));
    CHECK(end.is_open());
    CHECK(f.creds.verify(principal_kind::agent, "agent-2", f.agent2_key));  // nothing rotated
  }

  TEST_CASE("agent runtime: the new key is saved before it is used, then the agent re-authenticates; a deploy carries on") {
    hub_fixture f(overlap(60s));
    saving_agent a(f, f.agent1_key);
    f.net->connect(*a.runtime);
    auto [backend, backend_end] = f.connect("commander", "backend-1", f.backend_key);
    f.net->run();
    REQUIRE(a.runtime->online());
    backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    REQUIRE(a.held.size() == 1);  // a deploy running
    REQUIRE(a.runtime->rotate_key());
    CHECK(a.runtime->rotate_key().error() == make_error_code(errc::rate_limited));  // already asked
    f.net->run();
    REQUIRE(a.saved.size() == 1);
    CHECK(a.reauths_when_saved == 0);  // saved before it was used
    CHECK(f.hub().counters().reauth_ok == 1);  // then used at once
    CHECK(f.log.count("key_rotated") == 2);  // the hub's and the agent's
    CHECK_FALSE(f.log.mentions(a.saved[0]));
    a.held[0]->succeed();
    f.net->run();
    CHECK(count_with(*backend, R"("status":"ok")") == 1);
    CHECK(a.runtime->online());

    // After the overlap only the saved key opens a session: a restarted agent uses it.
    f.clk.advance(61s);
    saving_agent restarted(f, a.saved[0]);
    f.net->connect(*restarted.runtime);
    f.net->run();
    CHECK(restarted.runtime->online());
  }

  TEST_CASE("agent runtime: a key that cannot be saved is never used; without save_key it never asks") {
    hub_fixture f(overlap(60s));
    saving_agent a(f, f.agent1_key);
    a.fail = true;
    f.net->connect(*a.runtime);
    f.net->run();
    REQUIRE(a.runtime->rotate_key());
    f.net->run();
    CHECK(a.saved.empty());
    CHECK(f.log.count("key_not_saved") == 1);
    CHECK(f.hub().counters().reauth_ok == 0);  // still on the old key, which works for the overlap
    CHECK(a.runtime->online());

    saving_agent cannot(f, f.agent2_key, false);
    CHECK(cannot.runtime->rotate_key().error() == make_error_code(errc::forbidden_operation));
    memory::memory_journal journal;
    agent_runtime offline(agent_runtime_config{"agent-2", f.agent2_key, {}, {}, [](const std::string&) -> result<void> { return {}; }},
                          f.ops, journal, f.log, f.clk);
    CHECK(offline.rotate_key().error() == make_error_code(errc::hub_unavailable));
  }

  TEST_CASE("commander link: rotates its key over the session, saved first; requests in flight carry on") {
    hub_fixture f(overlap(60s));
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    updates seen;
    std::vector<std::string> saved;
    commander_link_config cfg{"backend-1", f.backend_key};
    cfg.save_key = [&](const std::string& fresh) -> result<void> {
      CHECK(f.hub().counters().reauth_ok == 0);
      saved.push_back(fresh);
      return {};
    };
    commander_link link(std::move(cfg), f.clk, f.log, seen);
    f.net->connect(link);
    f.net->run();
    REQUIRE(link.online());
    auto sent = link.send(command_request{"site.deploy", agent_id{"agent-1"}, R"({"site_id":7})"});
    REQUIRE(sent);
    f.net->run();
    REQUIRE(link.rotate_key());
    f.net->run();
    REQUIRE(saved.size() == 1);
    CHECK(saved[0].rfind("ck_", 0) == 0);
    CHECK(f.hub().counters().reauth_ok == 1);
    agent->send(result_frame(sent->value(), "backend-1"));
    f.net->run();
    REQUIRE(seen.seen.size() == 1);
    CHECK(seen.seen[0].what == command_update::kind::succeeded);
    f.clk.advance(61s);
    CHECK(f.creds.verify(principal_kind::commander, "backend-1", f.backend_key).error() == make_error_code(errc::auth_failed));
    CHECK(f.creds.verify(principal_kind::commander, "backend-1", saved[0]));
  }

  TEST_CASE("maximum age: the hub asks an overdue peer to rotate, warns the operator, and the runtime obeys") {
    hub_config cfg = overlap(60s);
    cfg.key_max_age = 100s;
    hub_fixture f(cfg);
    f.clk.advance(101s);  // agent-1's key is now past its maximum age
    saving_agent a(f, f.agent1_key);
    f.net->connect(*a.runtime);
    f.net->run();
    CHECK(a.runtime->online());
    REQUIRE(a.saved.size() == 1);  // asked, rotated, saved
    CHECK(f.hub().counters().key_rotations_asked == 1);
    CHECK(f.hub().counters().key_rotations == 1);
    CHECK(f.hub().keys_overdue() == 0);  // re-authenticated with a new key
    CHECK(f.log.count("key_overdue") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "hub_key_overdue", "rotation_requested") == 1);

    // A peer that cannot rotate stays overdue, counted for the operator's alert.
    auto [plain, plain_end] = f.connect("agent", "agent-2", f.agent2_key);
    CHECK(contains(plain->messages.back(), R"({"v":1,"type":"rotate_key"})"));
    CHECK(f.hub().keys_overdue() == 1);
    CHECK(f.hub().counters().key_rotations_asked == 2);
    // A key young enough is not overdue.
    auto [fresh_backend, fresh_end] = f.connect("commander", "backend-2", *f.creds.rotate(principal_kind::commander, "backend-2", 0s));
    CHECK(count_with(*fresh_backend, "rotate_key") == 0);
    CHECK(f.hub().keys_overdue() == 1);
  }

  TEST_CASE("recheck: a revoke for a session whose key still works keeps it; one for a key that ended closes it (4012)") {
    hub_config cfg = overlap(60s);
    cfg.revokers = {"backend-1"};
    hub_fixture f(cfg);
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    auto [backend, backend_end] = f.connect("commander", "backend-1", f.backend_key);
    // Rotated over the session and re-authenticated with the new key...
    agent->send(std::string(rotate_frame));
    f.net->run();
    const std::string fresh = issued_key(*agent);
    agent->send(reauth_frame("agent", "agent-1", fresh));
    f.net->run();
    // ...so the end of the old key's overlap, told to the hub, leaves the session alone.
    f.clk.advance(61s);
    backend->send(R"({"v":1,"type":"revoke","role":"agent","id":"agent-1"})");
    f.net->run();
    CHECK(agent_end->is_open());
    CHECK(f.hub().counters().sessions_rechecked == 1);
    CHECK(f.hub().counters().sessions_revoked == 0);
    // A key revoked for good closes it.
    REQUIRE(f.creds.rotate(principal_kind::agent, "agent-1", 0s));
    backend->send(R"({"v":1,"type":"revoke","role":"agent","id":"agent-1"})");
    f.net->run();
    CHECK(agent_end->closed_with() == close_code::revoked);
    CHECK(f.hub().counters().sessions_revoked == 1);
    CHECK(f.hub().recheck(principal_kind::agent, "agent-1") == 0);  // nothing live any more
  }

  TEST_CASE("an authentication answered across a revocation is verified again: the revoked key does not get in") {
    hub_fixture base;
    held_verifier held(base.verifier);
    citrus::hub h(hub_config{}, hub_services{base.clk, base.log, base.db.audit(), held, base.ops, nullptr});
    memory::loopback_transport net(h);
    memory::recording_client client;
    auto& end = net.connect(client);
    net.run();
    client.send(auth_frame("agent", "agent-1", base.agent1_key));
    net.run();
    REQUIRE(held.held.size() == 1);
    const verified_principal stale = *base.creds.verify(principal_kind::agent, "agent-1", base.agent1_key);
    // Revoked while the check was on its way; the answer that comes back predates the revocation.
    REQUIRE(base.creds.rotate(principal_kind::agent, "agent-1", 0s));
    CHECK(h.revoke(principal_kind::agent, "agent-1") == 0);  // no live session yet
    held.release_with(stale);
    net.run();
    CHECK_FALSE(h.agent_online("agent-1"));
    REQUIRE(held.held.size() == 1);  // asked again
    held.release();
    net.run();
    CHECK_FALSE(h.agent_online("agent-1"));
    CHECK(end.closed_with() == close_code::auth_failed);

    // Without a revocation meanwhile, one answer suffices.
    memory::recording_client other;
    auto& other_end = net.connect(other);
    net.run();
    other.send(auth_frame("agent", "agent-2", base.agent2_key));
    net.run();
    held.release();
    net.run();
    CHECK(held.held.empty());
    CHECK(h.agent_online("agent-2"));
    CHECK(other_end.is_open());
  }

  TEST_CASE("the backend tells the hub of keys that expired since its last look (a rotation made on the command line)") {
    hub_config cfg;
    cfg.revokers = {"backend-1"};
    platform_fixture f({}, false, cfg);
    // What `citrus-backend agent rotate agent-1 --overlap-s 5` writes while the backend runs.
    REQUIRE(f.creds.rotate(principal_kind::agent, "agent-1", 5s));
    for (int i = 0; i < 5; ++i) {  // the overlap: the session stays
      f.clk.advance(1s);
      f.backend->tick();
      f.run();
    }
    CHECK(f.agent->online());
    for (int i = 0; i < 3; ++i) {  // expired (and the lag passed): the hub checks the session, which holds the old key
      f.clk.advance(1s);
      f.backend->tick();
      f.run();
    }
    CHECK_FALSE(f.agent->online());
    CHECK(f.agent_end->closed_with() == close_code::revoked);
    CHECK(f.audit_count(audit_kind::administration, "agent.key_expired", "ok") == 1);
    CHECK(f.link->online());
    // Told once: later looks find nothing new.
    for (int i = 0; i < 3; ++i) {
      f.clk.advance(1s);
      f.backend->tick();
      f.run();
    }
    CHECK(f.audit_count(audit_kind::administration, "agent.key_expired", "ok") == 1);
  }

  TEST_CASE("a backend that starts has the hub check the sessions of keys that expired shortly before (not audited again)") {
    hub_config cfg;
    cfg.revokers = {"backend-1"};
    platform_fixture f({}, false, cfg);
    REQUIRE(f.creds.rotate(principal_kind::agent, "agent-1", 0s));  // while no backend looked: f.backend never ticks
    f.clk.advance(10min);
    auto restarted = f.make_backend({});  // the next run of the backend, on the same database
    auto& end = f.net->connect(restarted->hub_link());
    f.run();
    REQUIRE(restarted->link().online());
    CHECK(f.agent->online());
    f.clk.advance(1s);
    restarted->tick();
    f.run();
    CHECK_FALSE(f.agent->online());
    CHECK(f.agent_end->closed_with() == close_code::revoked);
    CHECK(f.audit_count(audit_kind::administration, "agent.key_expired", "ok") == 0);  // the run that saw it pass audits
    end.close(close_code::normal, "stopping");
    f.run();
  }

  TEST_CASE("an expiry the hub could not be told of (the link was down) is told once the link is back") {
    hub_config cfg;
    cfg.revokers = {"backend-1"};
    platform_fixture f({}, false, cfg);
    f.link_end->close(close_code::going_away, "hub restarting");
    f.run();
    REQUIRE_FALSE(f.link->online());
    REQUIRE(f.creds.rotate(principal_kind::agent, "agent-1", 0s));
    for (int i = 0; i < 3; ++i) {
      f.clk.advance(1s);
      f.backend->tick();
      f.run();
    }
    CHECK(f.log.count("hub_revoke_not_sent") == 1);
    CHECK(f.agent->online());  // nobody told the hub yet
    f.link_end = &f.net->connect(*f.link);
    f.run();
    REQUIRE(f.link->online());
    f.clk.advance(1s);
    f.backend->tick();
    f.run();
    CHECK_FALSE(f.agent->online());
    CHECK(f.agent_end->closed_with() == close_code::revoked);
  }

  TEST_CASE("the hub route /api/rotate-key rotates only for a live key; a revoked hub key fails every hub route at once") {
    platform_fixture f;
    const std::string hub_key = *f.creds.register_principal(principal_kind::hub, "hub-1", {});
    auto call = [&](std::string_view target, std::string_view body, std::string auth) {
      const http_request req{"POST", target, body, "10.0.0.9:5000", auth, "application/json"};
      return answer_now<http_response>([&](auto done) { f.backend->handle_http(req, done); });
    };
    const std::string hub = "Bearer hub-1:" + hub_key;
    const std::string body = R"({"role":"agent","id":"agent-1","key":")" + f.agent1_key + R"(","overlapSeconds":30})";
    auto wrong = call("/api/rotate-key", R"({"role":"agent","id":"agent-1","key":"ak_wrong","overlapSeconds":30})", hub);
    CHECK(wrong.status == 200);
    CHECK(wrong.body == R"({"valid":false})");
    CHECK(call("/api/rotate-key", R"({"role":"hub","id":"hub-1","key":"x","overlapSeconds":1})", hub).status == 400);
    CHECK(call("/api/rotate-key", R"({"role":"agent","id":"agent-1","key":"x"})", hub).status == 400);
    auto rotated = call("/api/rotate-key", body, hub);
    REQUIRE(rotated.status == 200);
    CHECK(contains(rotated.body, R"("valid":true)"));
    CHECK(contains(rotated.body, R"("expiresIn":30)"));
    CHECK(f.audit_count(audit_kind::administration, "agent.rotate", "ok") == 1);
    const std::string verify = R"({"agentId":"agent-1","agentKey":")" + f.agent1_key + R"("})";
    auto verified = call("/api/verify-agent", verify, hub);
    CHECK(verified.status == 200);
    CHECK(contains(verified.body, R"("keyExpiresAt":)"));  // the old key, on its way out

    // The hub's key revoked: what it holds with the backend — verifying, rotating, sending events — ends at once.
    REQUIRE(f.db.credentials().delete_principal(principal_kind::hub, "hub-1"));
    CHECK(call("/api/verify-agent", verify, hub).status == 401);
    CHECK(call("/api/verify-commander", R"({"commanderId":"backend-1","commanderKey":"ck_x"})", hub).status == 401);
    CHECK(call("/api/hub-events", R"({"events":[]})", hub).status == 401);
    CHECK(call("/api/rotate-key", body, hub).status == 401);
  }
}

}  // namespace citrus::testing
