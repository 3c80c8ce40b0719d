#include <doctest/doctest.h>

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
}
