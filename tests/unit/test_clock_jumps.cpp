// Wall-clock jumps (an NTP step, an operator fixing the date) of hours, forward and backward, while
// monotonic time goes on. Token expiry is wall time by nature (the JWT "exp" claim); everything that
// measures a duration — rate limits, lockouts, auth timeouts, request timeouts, the lifetime of a
// session — must use the monotonic clock, so a jump neither grants a burst nor locks anyone out for
// hours, and nothing expires early or stays pending forever.
#include <doctest/doctest.h>

#include "citrus/backend/rest_api.hpp"
#include "platform_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

namespace {

std::string auth_message(const std::string& token, std::string_view type = "auth") {
  return R"({"v":1,"type":")" + std::string(type) + R"(","token":")" + token + R"("})";
}

http_response get(rest_api& api, std::string_view target, std::string_view authorization = {}) {
  return handle_now(api, http_request{"GET", target, {}, "10.0.0.9:4000", authorization, {}});
}

}  // namespace

TEST_SUITE("clock_jumps") {
  TEST_CASE("token verification follows the wall clock: forward past exp is expired, far back is not yet valid") {
    platform_fixture f;  // tokens: lifetime 300 s, leeway 5 s
    const std::string token = *f.tokens.issue(f.alice, f.clk.wall_now());
    f.clk.jump_wall(3h);
    CHECK(f.tokens.verify(token, f.clk.wall_now()).error() == make_error_code(errc::token_expired));
    f.clk.jump_wall(-6h);  // three hours before it was issued
    CHECK(f.tokens.verify(token, f.clk.wall_now()).error() == make_error_code(errc::auth_failed));
    // Either way a new login at the new wall time gives a working token at once.
    const std::string fresh = *f.tokens.issue(f.alice, f.clk.wall_now());
    CHECK(f.tokens.verify(fresh, f.clk.wall_now()));
  }

  TEST_CASE("a wall jump forward does not fire the auth timeout early") {
    platform_fixture f;
    memory::recording_client ws;
    auto& end = f.users_net.connect(ws);
    f.run();
    f.clk.jump_wall(3h);
    f.gateway.tick();
    f.run();
    CHECK(end.is_open());  // 3 h of wall time, 0 s of real time: still within the 5 s to authenticate
    ws.send(auth_message(*f.tokens.issue(f.alice, f.clk.wall_now())));
    f.run();
    REQUIRE(ws.messages.size() == 1);
    CHECK(contains(ws.messages[0], R"("type":"auth_ok","expires_in":300)"));
  }

  TEST_CASE("a wall jump backward does not stretch a session beyond its token's real lifetime") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);  // token valid for 300 s
    f.clk.jump_wall(-3h);
    f.clk.advance(200s);
    f.gateway.tick();
    f.run();
    CHECK(end->is_open());  // no premature expiry
    f.clk.advance(101s);  // 301 s have passed: the token's lifetime is over, whatever the wall clock says
    f.gateway.tick();
    f.run();
    CHECK(end->closed_with() == close_code::token_expired);
    CHECK(contains(ws->messages.back(), R"("code":"token_expired")"));
  }

  TEST_CASE("after a wall jump backward, re-authentication with a token issued at the new time extends the session") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);
    f.clk.jump_wall(-3h);
    f.clk.advance(200s);
    ws->send(auth_message(*f.tokens.issue(f.alice, f.clk.wall_now()), "reauth"));
    f.run();
    REQUIRE(ws->messages.size() == 1);
    CHECK(contains(ws->messages[0], R"("type":"auth_ok","expires_in":300)"));
    f.clk.advance(250s);  // past the first token's real lifetime, within the second's
    f.gateway.tick();
    f.run();
    CHECK(end->is_open());
    f.clk.advance(51s);
    f.gateway.tick();
    f.run();
    CHECK(end->closed_with() == close_code::token_expired);
  }

  TEST_CASE("a wall jump forward past the token's exp closes the session as expired, like the verifier would") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);
    const std::string old_token = *f.tokens.issue(f.alice, f.clk.wall_now());
    f.clk.jump_wall(2h);
    f.gateway.tick();
    f.run();
    CHECK(end->closed_with() == close_code::token_expired);
    CHECK(f.tokens.verify(old_token, f.clk.wall_now()).error() == make_error_code(errc::token_expired));
    auto [again, again_end] = f.user_socket(f.alice);  // a new login works at once
    CHECK(again_end->is_open());
  }

  TEST_CASE("the users' WebSocket rate limit: no burst from a jump forward, no lockout from a jump backward") {
    platform_fixture f;  // 20 messages/s, burst 40
    auto [ws, end] = f.user_socket(f.alice);
    f.clk.advance(1s);  // the bucket is full again after the auth message
    for (int i = 0; i < 40; ++i) ws->send(user_command("m" + std::to_string(i), "site.status", R"({"site_id":999})"));
    f.run();
    CHECK(count_with(*ws, R"("code":"unauthorized_access")") == 40);
    ws->send(user_command("over", "site.status", R"({"site_id":999})"));
    f.run();
    CHECK(contains(ws->messages.back(), R"("code":"rate_limited")"));
    f.clk.jump_wall(3h);
    ws->send(user_command("jumped", "site.status", R"({"site_id":999})"));
    f.run();
    CHECK(contains(ws->messages.back(), R"("code":"rate_limited")"));  // three wall hours refill nothing
    f.clk.jump_wall(-6h);
    f.clk.advance(1s);
    ws->messages.clear();
    for (int i = 0; i < 20; ++i) ws->send(user_command("b" + std::to_string(i), "site.status", R"({"site_id":999})"));
    f.run();
    CHECK(count_with(*ws, R"("code":"unauthorized_access")") == 20);  // one real second refilled 20
    CHECK(count_with(*ws, "rate_limited") == 0);
    CHECK(end->is_open());
  }

  TEST_CASE("login lockout and hold-back: a jump forward does not lift them early, a jump backward does not extend them") {
    platform_fixture f;
    login_config cfg;  // 5 failures for a name from one address: that pair locked for 300 s
    login_service service(cfg, f.storage, f.tokens, f.clk);
    logins_now login{service};
    for (int i = 0; i < 5; ++i) CHECK(login.login("alice", "wrong", "10.0.0.1").outcome.error() == make_error_code(errc::auth_failed));
    CHECK(login.login("alice", "alice-pw", "10.0.0.1").outcome.error() == make_error_code(errc::account_locked));
    f.clk.jump_wall(3h);
    CHECK(login.login("alice", "alice-pw", "10.0.0.1").outcome.error() == make_error_code(errc::account_locked));
    f.clk.jump_wall(-6h);
    f.clk.advance(299s);
    CHECK(login.login("alice", "alice-pw", "10.0.0.1").outcome.error() == make_error_code(errc::account_locked));
    f.clk.advance(2s);  // 301 s after the lockout, three hours before it on the wall clock
    CHECK(login.hold_back("alice") == 4s);  // the name's 15-minute count neither ended nor restarted
    auto ok = login.login("alice", "alice-pw", "10.0.0.1").outcome;
    REQUIRE(ok);
    CHECK(f.tokens.verify(ok->token, f.clk.wall_now()));
  }

  TEST_CASE("the REST per-address limit: no burst from a jump forward, no lockout from a jump backward") {
    platform_fixture f;
    login_service login(login_config{}, f.storage, f.tokens, f.clk);
    rest_config cfg;
    cfg.per_address = rate{1, 2};
    rest_api api(cfg, rest_services{f.storage, f.backend->sites(), login, f.tokens, f.clk, f.random, f.log, {}});
    CHECK(get(api, "/metrics").status == 200);
    CHECK(get(api, "/metrics").status == 200);
    CHECK(get(api, "/metrics").status == 429);
    f.clk.jump_wall(3h);
    CHECK(get(api, "/metrics").status == 429);
    f.clk.jump_wall(-6h);
    f.clk.advance(1s);
    CHECK(get(api, "/metrics").status == 200);
    CHECK(get(api, "/metrics").status == 429);
  }

  TEST_CASE("hub request timeouts: no premature expiry on a jump forward, nothing pending forever after a jump back") {
    hub_config cfg;
    cfg.request_timeout = 10s;
    cfg.auth_timeout = 5s;
    hub_fixture f(cfg);
    auto [agent, agent_end] = f.connect("agent", "agent-1", f.agent1_key);
    auto [backend, backend_end] = f.connect("commander", "backend-1", f.backend_key);
    auto [silent, silent_end] = f.connect();  // never authenticates
    backend->send(command_frame("r1", "agent-1"));
    f.net->run();
    REQUIRE(f.hub().requests_in_flight() == 1);
    f.clk.jump_wall(3h);
    f.hub().tick();
    f.net->run();
    CHECK(f.hub().requests_in_flight() == 1);
    CHECK(count_with(*backend, "request_timeout") == 0);
    CHECK(silent_end->is_open());
    f.clk.jump_wall(-6h);
    f.clk.advance(9s);
    f.hub().tick();
    f.net->run();
    CHECK(f.hub().requests_in_flight() == 1);
    CHECK(silent_end->closed_with() == close_code::auth_timeout);  // 9 real seconds > 5 s
    f.clk.advance(2s);
    f.hub().tick();
    f.net->run();
    CHECK(f.hub().requests_in_flight() == 0);
    CHECK(count_with(*backend, R"("code":"request_timeout")") == 1);
    CHECK(f.hub().counters().timeouts == 1);
    (void)agent;
    (void)agent_end;
    (void)backend_end;
  }

  TEST_CASE("the backend's own request guard: the owner is told after the real timeout, never early, never never") {
    platform_fixture f;
    f.hold_deploys = true;
    const site_record site = f.make_site(f.alice, "alpha");
    auto [ws, end] = f.user_socket(f.alice);
    ws->send(user_command("d1", "site.deploy", R"({"site_id":)" + std::to_string(site.id.value()) + "}"));
    f.run();
    REQUIRE(f.link->in_flight() == 1);
    f.clk.jump_wall(3h);
    f.link->tick();
    f.run();
    CHECK(f.link->in_flight() == 1);
    CHECK(count_with(*ws, "request_timeout") == 0);
    f.clk.jump_wall(-6h);
    f.clk.advance(5min);  // commander_link_config::request_timeout is 6 min
    f.link->tick();
    f.run();
    CHECK(f.link->in_flight() == 1);
    f.clk.advance(61s);
    f.link->tick();
    f.run();
    CHECK(f.link->in_flight() == 0);
    CHECK(count_with(*ws, R"("code":"request_timeout")") == 1);
    CHECK(f.sites->get(f.alice.id, site.id)->deploy_status == "failed");
    CHECK(end->is_open());
  }
}
