#include <doctest/doctest.h>

#include <algorithm>

#include "platform_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

TEST_SUITE("user_gateway") {
  TEST_CASE("the owner sees progress and the final status live, then another user sees nothing") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    auto [alice, alice_end] = f.user_socket(f.alice);
    auto [bob, bob_end] = f.user_socket(f.bob);
    alice->send(user_command("u1", "site.deploy", R"({"site_id":)" + std::to_string(a.id.value()) + "}"));
    f.run();
    REQUIRE(alice->messages.size() == 4);
    CHECK(contains(alice->messages[0], R"("type":"result","id":"u1")"));
    CHECK(contains(alice->messages[0], R"("payload":{"request":")"));
    CHECK(contains(alice->messages[1], R"("percent":30)"));
    CHECK(contains(alice->messages[2], R"("percent":60)"));
    CHECK(contains(alice->messages[3], R"("status":"ok")"));
    CHECK(contains(alice->messages[3], R"("deploy_status":"deployed")"));
    CHECK(bob->messages.empty());
  }

  TEST_CASE("another user's site over the WebSocket: Unauthorized access, for every operation") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    auto [bob, end] = f.user_socket(f.bob);
    const std::string target = R"({"site_id":)" + std::to_string(a.id.value()) + "}";
    bob->send(user_command("b1", "site.status", target));
    bob->send(user_command("b2", "site.deploy", target));
    bob->send(user_command("b3", "site.delete", target));
    bob->send(user_command("b4", "site.update", R"({"site_id":)" + std::to_string(a.id.value()) + R"(,"name":"mine"})"));
    bob->send(user_command("b5", "site.status", R"({"site_id":424242})"));
    f.run();
    REQUIRE(bob->messages.size() == 5);
    for (const auto& m : bob->messages) {
      CHECK(contains(m, R"("code":"unauthorized_access","message":"Unauthorized access")"));
      CHECK_FALSE(contains(m, "alice"));
    }
    CHECK(f.sites->get(f.alice.id, a.id)->name == "alice-site");
    CHECK(f.hub().counters().routed == 2);  // only the create of make_site and its result
  }

  TEST_CASE("users may not pick site ids, send updates, or use operations outside the table") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);
    ws->send(user_command("c1", "site.create", R"({"site_id":5,"name":"x","url":"https://x.test"})"));
    ws->send(user_command("c2", "site.reboot", R"({"site_id":5})"));
    ws->send(R"({"v":1,"type":"result","id":"c3","status":"ok"})");
    ws->send(user_command("c4", "site.create", R"({"name":"mine","url":"https://mine.test"})"));
    f.run();
    REQUIRE(ws->messages.size() >= 4);
    CHECK(contains(ws->messages[0], R"("code":"invalid_payload")"));
    CHECK(contains(ws->messages[1], R"("code":"unknown_operation")"));
    CHECK(contains(ws->messages[2], R"("code":"forbidden_operation")"));
    CHECK(contains(ws->messages[3], R"("type":"result","id":"c4")"));
  }

  TEST_CASE("the token goes in the first message, then without it, commands are refused and the socket times out") {
    platform_fixture f;
    memory::recording_client ws;
    auto& end = f.users_net.connect(ws);
    f.run();
    ws.send(user_command("x", "site.status", R"({"site_id":1})"));
    f.run();
    REQUIRE(ws.messages.size() == 1);
    CHECK(contains(ws.messages[0], R"("code":"auth_required")"));
    f.clk.advance(6s);
    f.gateway.tick();
    f.run();
    CHECK(end.closed_with() == close_code::auth_timeout);
  }

  TEST_CASE("expired, forged and deleted-user tokens are refused") {
    platform_fixture f;
    const std::string old_token = *f.tokens.issue(f.alice, f.clk.wall_now());
    const std::string bob_token = *f.tokens.issue(f.bob, f.clk.wall_now());
    f.clk.advance(10min);
    REQUIRE(f.db.users().delete_user(f.bob.id));
    jwt::hs256_token_service forger({std::string(48, 'x')}, f.random);
    const std::string forged = *forger.issue(f.alice, f.clk.wall_now());
    struct attempt {
      std::string token;
      std::string code;
      close_code close;
    };
    for (const auto& [token, code, close] : {attempt{old_token, "token_expired", close_code::token_expired},
                                             attempt{forged, "auth_failed", close_code::auth_failed},
                                             attempt{"garbage", "auth_failed", close_code::auth_failed}}) {
      memory::recording_client ws;
      auto& end = f.users_net.connect(ws);
      f.run();
      ws.send(R"({"v":1,"type":"auth","token":")" + token + R"("})");
      f.run();
      REQUIRE(ws.messages.size() == 1);
      CHECK(contains(ws.messages[0], "\"code\":\"" + code + "\""));
      CHECK(end.closed_with() == close);
    }
    (void)bob_token;
    memory::recording_client ws;
    auto& end = f.users_net.connect(ws);
    f.run();
    ws.send(R"({"v":1,"type":"auth","token":")" + *f.tokens.issue(user_record{f.bob.id, "bob", "", user_role::user, {}}, f.clk.wall_now()) + R"("})");
    f.run();
    CHECK(end.closed_with() == close_code::auth_failed);  // bob was deleted
  }

  TEST_CASE("a user deleted while their WebSocket is open: the next command is refused, the session closed 4002, audited") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);
    auto [bob, bob_end] = f.user_socket(f.bob);
    REQUIRE(f.db.users().delete_user(f.alice.id));
    const auto routed = f.hub().counters().routed;
    ws->send(user_command("d1", "site.create", R"({"name":"ghost","url":"https://ghost.test"})"));
    f.run();
    REQUIRE(ws->messages.size() == 1);
    CHECK(contains(ws->messages[0], R"("type":"error","id":"d1","code":"auth_failed")"));
    CHECK(end->closed_with() == close_code::auth_failed);
    CHECK(f.hub().counters().routed == routed);  // nothing was created or sent for a deleted user
    auto ghost = f.db.sites().list_sites(f.alice.id);
    REQUIRE(ghost);
    CHECK(ghost->empty());
    auto events = f.db.audit().query({audit_kind::authentication, 100});
    REQUIRE(events);
    CHECK(std::count_if(events->begin(), events->end(), [&](const audit_event& e) {
            return e.action == "ws_auth" && e.outcome == "denied" && e.detail == "user no longer exists" &&
                   e.target == "user:" + std::to_string(f.alice.id.value());
          }) == 1);
    // Another user's session is untouched.
    bob->send(user_command("b1", "site.status", R"({"site_id":999})"));
    f.run();
    CHECK(contains(bob->messages.back(), R"("code":"unauthorized_access")"));
    CHECK(bob_end->is_open());
  }

  TEST_CASE("a user deleted while their WebSocket is open: a re-authentication with a fresh genuine token is refused") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);
    const std::string fresh = *f.tokens.issue(f.alice, f.clk.wall_now());  // signed before the deletion
    REQUIRE(f.db.users().delete_user(f.alice.id));
    ws->send(R"({"v":1,"type":"reauth","token":")" + fresh + R"("})");
    f.run();
    REQUIRE(ws->messages.size() == 1);
    CHECK(contains(ws->messages[0], R"("code":"auth_failed")"));
    CHECK_FALSE(contains(ws->messages[0], "auth_ok"));
    CHECK(end->closed_with() == close_code::auth_failed);
    // A new user with the same name gets another id: the old token does not resolve to them.
    auto again = f.db.users().create_user("alice", f.alice.password_hash, user_role::user, f.clk.wall_now());
    REQUIRE(again);
    CHECK(again->id != f.alice.id);
    memory::recording_client other;
    auto& other_end = f.users_net.connect(other);
    f.run();
    other.send(R"({"v":1,"type":"auth","token":")" + fresh + R"("})");
    f.run();
    CHECK(other_end.closed_with() == close_code::auth_failed);
  }

  TEST_CASE("a store failure while checking the user refuses the command but keeps the session") {
    platform_fixture f;
    struct failing_users final : user_store {
      user_store& inner;
      bool down = false;
      explicit failing_users(user_store& u) : inner(u) {}
      result<user_record> create_user(std::string_view n, std::string_view h, user_role r, wall_time t) override {
        return inner.create_user(n, h, r, t);
      }
      result<user_record> find_user(user_id id) override {
        if (down) return errc::storage_unavailable;
        return inner.find_user(id);
      }
      result<user_record> find_user_by_name(std::string_view n) override { return inner.find_user_by_name(n); }
      result<std::vector<user_record>> list_users() override { return inner.list_users(); }
      result<void> delete_user(user_id id) override { return inner.delete_user(id); }
    } users(f.db.users());
    user_gateway gateway(user_gateway_config{}, f.tokens, users, f.ops, f.clk, f.log, f.db.audit());
    gateway.bind_sites(*f.sites);
    memory::loopback_transport net(gateway);
    memory::recording_client ws;
    auto& end = net.connect(ws);
    net.run();
    ws.send(R"({"v":1,"type":"auth","token":")" + *f.tokens.issue(f.alice, f.clk.wall_now()) + R"("})");
    net.run();
    REQUIRE(ws.messages.size() == 1);
    REQUIRE(contains(ws.messages[0], "auth_ok"));
    users.down = true;
    ws.send(user_command("s1", "site.status", R"({"site_id":1})"));
    ws.send(R"({"v":1,"type":"reauth","token":")" + *f.tokens.issue(f.alice, f.clk.wall_now()) + R"("})");
    net.run();
    REQUIRE(ws.messages.size() == 3);
    CHECK(contains(ws.messages[1], R"("id":"s1","code":"storage_unavailable")"));
    CHECK(contains(ws.messages[2], R"("code":"storage_unavailable")"));
    CHECK(end.is_open());  // not the user's fault: the session lives on
    users.down = false;
    ws.send(user_command("s2", "site.status", R"({"site_id":1})"));
    net.run();
    CHECK(contains(ws.messages.back(), R"("id":"s2","code":"unauthorized_access")"));
  }

  TEST_CASE("a session expires without re-authentication, then re-authentication extends it") {
    platform_fixture f;
    auto [kept, kept_end] = f.user_socket(f.alice);
    auto [lapsed, lapsed_end] = f.user_socket(f.alice);
    f.clk.advance(200s);
    kept->send(R"({"v":1,"type":"reauth","token":")" + *f.tokens.issue(f.alice, f.clk.wall_now()) + R"("})");
    f.run();
    REQUIRE(kept->messages.size() == 1);
    CHECK(contains(kept->messages[0], R"("type":"auth_ok","expires_in":300)"));
    f.clk.advance(101s);  // past the first token's expiry
    f.gateway.tick();
    f.run();
    CHECK(lapsed_end->closed_with() == close_code::token_expired);
    CHECK(contains(lapsed->messages.back(), R"("code":"token_expired")"));
    CHECK(kept_end->is_open());
  }

  TEST_CASE("re-authenticating with another user's token closes the session") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);
    ws->send(R"({"v":1,"type":"reauth","token":")" + *f.tokens.issue(f.bob, f.clk.wall_now()) + R"("})");
    f.run();
    CHECK(end->closed_with() == close_code::auth_failed);
    CHECK(f.security_events() == 1);
  }

  TEST_CASE("malformed messages get their error code, then a flood is rate limited then closed") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);
    ws->send("not json");
    ws->send(R"({"v":1,"type":"command","id":"x","op":"site.status","payload":{"site_id":1,"site_id":2}})");
    f.run();
    REQUIRE(ws->messages.size() == 2);
    CHECK(contains(ws->messages[0], R"("code":"malformed_json")"));
    CHECK(contains(ws->messages[1], R"("code":"duplicate_key")"));
    for (int i = 0; i < 100; ++i) ws->send(user_command("f", "site.status", R"({"site_id":1})"));
    f.run();
    CHECK(count_with(*ws, R"("code":"rate_limited")") > 0);
    CHECK_FALSE(end->is_open());
    CHECK(end->closed_with() == close_code::rate_limited);
  }

  TEST_CASE("a client that sends commands and never reads is closed as a slow consumer, not only for pushes") {
    user_gateway_config cfg;
    cfg.outbound_hard_limit = 2048;
    platform_fixture f(cfg);
    auto [bob, bob_end] = f.user_socket(f.bob);
    auto [ws, end] = f.user_socket(f.alice);
    end->set_reading(false);  // its answers pile up on the backend's side
    // Within the rate limit (burst 40): each answer (~85 bytes) is queued until the bound is reached.
    for (int i = 0; i < 30; ++i) ws->send(user_command("s" + std::to_string(i), "site.status", R"({"site_id":999})"));
    f.run();
    CHECK(end->closed_with() == close_code::slow_consumer);
    CHECK(end->peer().buffered_amount() <= cfg.outbound_hard_limit);
    // Another user is answered as before.
    bob->send(user_command("b1", "site.status", R"({"site_id":999})"));
    f.run();
    CHECK(count_with(*bob, R"("id":"b1")") == 1);
    CHECK(bob_end->is_open());
  }
}
