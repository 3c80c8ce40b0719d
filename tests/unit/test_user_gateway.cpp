#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "flaky_storage.hpp"
#include "platform_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

namespace {

/// A message a user received, read with the protocol's own parser (as a client written from
/// docs/protocol.md would read it).
struct seen {
  protocol::message_type type = protocol::message_type::error;
  std::string id, request, op, status, code, payload, field;
  std::int64_t site = 0;
  std::optional<std::int64_t> percent;
};

seen read(const std::string& text) {
  protocol::parser parser;
  auto parsed = parser.parse(text);
  REQUIRE_MESSAGE(parsed, text);
  const protocol::envelope& e = **parsed;
  return seen{e.type, std::string(e.id), std::string(e.request), std::string(e.op), std::string(e.status),
              std::string(e.code), std::string(e.payload), std::string(e.field), e.site.value_or(0), e.percent};
}

std::vector<seen> read_all(const memory::recording_client& ws) {
  std::vector<seen> out;
  for (const auto& m : ws.messages) out.push_back(read(m));
  return out;
}

std::string site_payload(const site_record& site, std::string_view extra = {}) {
  return R"({"site_id":)" + std::to_string(site.id.value()) + std::string(extra) + "}";
}

using protocol::message_type;

}  // namespace

TEST_SUITE("user_gateway") {
  TEST_CASE("the owner sees progress and the final status live, then another user sees nothing") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    auto [alice, alice_end] = f.user_socket(f.alice);
    auto [bob, bob_end] = f.user_socket(f.bob);
    alice->send(user_command("u1", "site.deploy", site_payload(a)));
    f.run();
    REQUIRE(alice->messages.size() == 4);
    const auto got = read_all(*alice);
    // First the acknowledgement, under the user's id, naming the request; then only that request.
    CHECK(got[0].type == message_type::accepted);
    CHECK(got[0].id == "u1");
    CHECK(got[0].op == "site.deploy");
    CHECK(got[0].site == a.id.value());
    CHECK(contains(got[0].payload, R"("deploy_status":"deploying")"));
    const std::string request = got[0].request;
    CHECK(request.rfind('r', 0) == 0);
    CHECK(contains(alice->messages[0], R"({"v":1,"type":"accepted","id":"u1","request":")" + request + R"(","op":"site.deploy","site":)"));
    for (std::size_t i = 1; i < got.size(); ++i) CHECK(got[i].id == request);
    CHECK(got[1].type == message_type::progress);
    CHECK(got[1].percent == 30);
    CHECK(got[2].percent == 60);
    CHECK(got[3].type == message_type::result);
    CHECK(got[3].status == "ok");
    CHECK(contains(got[3].payload, R"("deploy_status":"deployed")"));
    CHECK(bob->messages.empty());
  }

  TEST_CASE("each operation's sequence: accepted then the request's updates, or one result under the user's id") {
    platform_fixture f;
    auto [ws, end] = f.user_socket(f.alice);
    // site.create: accepted (the new site, "creating"), then the agent's result under the request id.
    ws->send(user_command("c1", "site.create", R"({"name":"blog","url":"https://blog.test"})"));
    f.run();
    auto got = read_all(*ws);
    REQUIRE(got.size() == 2);
    CHECK(got[0].type == message_type::accepted);
    CHECK(got[0].id == "c1");
    CHECK(contains(got[0].payload, R"("deploy_status":"creating")"));
    const std::int64_t site = got[0].site;
    CHECK(site >= 1);
    CHECK(got[1].type == message_type::result);
    CHECK(got[1].id == got[0].request);
    CHECK(got[1].status == "ok");
    CHECK(got[1].site == site);
    CHECK(contains(got[1].payload, R"("deploy_status":"created")"));

    // site.update: accepted (the site as stored), then the result.
    ws->messages.clear();
    ws->send(user_command("u1", "site.update", R"({"site_id":)" + std::to_string(site) + R"(,"name":"journal"})"));
    f.run();
    got = read_all(*ws);
    REQUIRE(got.size() == 2);
    CHECK(got[0].type == message_type::accepted);
    CHECK(contains(got[0].payload, R"("name":"journal")"));
    CHECK(got[1].type == message_type::result);
    CHECK(got[1].id == got[0].request);
    CHECK(got[1].op == "site.update");

    // site.status completes at once: one final result under the user's own id.
    ws->messages.clear();
    ws->send(user_command("s1", "site.status", R"({"site_id":)" + std::to_string(site) + "}"));
    f.run();
    got = read_all(*ws);
    REQUIRE(got.size() == 1);
    CHECK(got[0].type == message_type::result);
    CHECK(got[0].id == "s1");
    CHECK(got[0].request.empty());
    CHECK(got[0].status == "ok");

    // site.delete: accepted without a site (the row is gone), then the result.
    ws->messages.clear();
    ws->send(user_command("x1", "site.delete", R"({"site_id":)" + std::to_string(site) + "}"));
    f.run();
    got = read_all(*ws);
    REQUIRE(got.size() == 2);
    CHECK(got[0].type == message_type::accepted);
    CHECK(got[0].site == site);
    CHECK(got[0].payload.empty());
    CHECK(got[1].type == message_type::result);
    CHECK(got[1].id == got[0].request);
    CHECK(got[1].status == "ok");

    // The agent's failure comes as the request's failed result.
    const site_record b = f.make_site(f.alice, "beta");
    ws->messages.clear();
    f.hold_deploys = true;
    ws->send(user_command("d1", "site.deploy", site_payload(b)));
    f.run();
    REQUIRE(f.held.size() == 1);
    f.held[0]->fail("disk full");
    f.run();
    got = read_all(*ws);
    REQUIRE(got.size() == 4);
    CHECK(got[0].type == message_type::accepted);
    CHECK(got[3].type == message_type::result);
    CHECK(got[3].id == got[0].request);
    CHECK(got[3].status == "failed");
    CHECK(got[3].code == "operation_failed");
    CHECK(contains(ws->messages[3], R"("message":"disk full")"));
    CHECK(contains(got[3].payload, R"("deploy_status":"failed")"));
  }

  TEST_CASE("with the hub unreachable: create and update and delete answer one result saying so, deploy an error") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alpha");
    const site_record b = f.make_site(f.alice, "beta");
    auto [ws, end] = f.user_socket(f.alice);
    f.link_end->close(close_code::going_away, "hub restarting");
    f.run();
    REQUIRE_FALSE(f.link->online());
    ws->send(user_command("c1", "site.create", R"({"name":"gamma","url":"https://gamma.test"})"));
    ws->send(user_command("u1", "site.update", site_payload(a, R"(,"name":"renamed")")));
    ws->send(user_command("x1", "site.delete", site_payload(b)));
    ws->send(user_command("d1", "site.deploy", site_payload(a)));
    f.run();
    const auto got = read_all(*ws);
    REQUIRE(got.size() == 4);
    // The site is kept, "failed": the agent never made it.
    CHECK(got[0].type == message_type::result);
    CHECK(got[0].id == "c1");
    CHECK(got[0].status == "failed");
    CHECK(got[0].code == "hub_unavailable");
    CHECK(contains(got[0].payload, R"("deploy_status":"failed")"));
    CHECK(contains(ws->messages[0], R"("message":"Hosting service temporarily unreachable")"));
    // Stored; only the agent was not told.
    CHECK(got[1].type == message_type::result);
    CHECK(got[1].status == "ok");
    CHECK(got[1].code == "hub_unavailable");
    CHECK(contains(got[1].payload, R"("name":"renamed")"));
    CHECK(f.sites->get(f.alice.id, a.id)->name == "renamed");
    CHECK(got[2].type == message_type::result);
    CHECK(got[2].status == "ok");
    CHECK(got[2].code == "hub_unavailable");
    CHECK(got[2].payload.empty());
    CHECK_FALSE(f.sites->get(f.alice.id, b.id));
    // Nothing started, nothing changed.
    CHECK(got[3].type == message_type::error);
    CHECK(got[3].id == "d1");
    CHECK(got[3].code == "hub_unavailable");
    CHECK(f.sites->get(f.alice.id, a.id)->deploy_status == "created");

    // Those that changed something hold their ids; the refused deploy does not.
    f.link_end = &f.net->connect(*f.link);
    f.run();
    REQUIRE(f.link->online());
    ws->messages.clear();
    ws->send(user_command("c1", "site.create", R"({"name":"gamma","url":"https://gamma.test"})"));
    ws->send(user_command("d1", "site.deploy", site_payload(a)));
    f.run();
    REQUIRE(ws->messages.size() >= 2);
    CHECK(contains(ws->messages[0], R"({"v":1,"type":"error","id":"c1","code":"duplicate_request","message":"Request id already in use"})"));
    CHECK(read(ws->messages[1]).type == message_type::accepted);
    CHECK(read(ws->messages[1]).id == "d1");
  }

  TEST_CASE("a repeated command id runs nothing: refused while its operation is open, for 10 minutes after, then free") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    auto [ws, end] = f.user_socket(f.alice);
    auto [other_tab, other_end] = f.user_socket(f.alice);
    auto [bob, bob_end] = f.user_socket(f.bob);
    f.hold_deploys = true;
    const auto routed = f.hub().counters().routed;
    ws->send(user_command("d1", "site.deploy", site_payload(a)));
    f.run();
    REQUIRE(f.held.size() == 1);
    const std::string request = read(ws->messages[0]).request;
    ws->messages.clear();
    other_tab->messages.clear();

    // While the deploy runs: the same id again, from any session of the user and for any operation.
    ws->send(user_command("d1", "site.deploy", site_payload(a)));
    other_tab->send(user_command("d1", "site.deploy", site_payload(a)));
    ws->send(user_command("d1", "site.status", site_payload(a)));
    f.run();
    const std::string refused = R"({"v":1,"type":"error","id":"d1","code":"duplicate_request","message":"Request id already in use"})";
    REQUIRE(ws->messages.size() == 2);
    CHECK(ws->messages[0] == refused);
    CHECK(ws->messages[1] == refused);
    REQUIRE(other_tab->messages.size() == 1);
    CHECK(other_tab->messages[0] == refused);
    CHECK(f.held.size() == 1);  // the agent got one deploy
    CHECK(f.hub().counters().routed == routed + 3);  // the command and its two progress updates
    // Another user's ids are their own.
    bob->send(user_command("d1", "site.status", R"({"site_id":999})"));
    f.run();
    CHECK(contains(bob->messages.back(), R"("id":"d1","code":"unauthorized_access")"));

    // The deploy ends; its id stays taken for the linger, across a reconnection too.
    f.held[0]->succeed();
    f.held.clear();
    f.run();
    CHECK(count_with(*ws, R"({"v":1,"type":"result","id":")" + request + R"(","op":"site.deploy")") == 1);
    end->close(close_code::normal, "bye");
    f.run();
    f.clk.advance(std::chrono::minutes(10) - 1s);
    f.gateway.tick();
    auto [again, again_end] = f.user_socket(f.alice);  // a new session (the others' tokens expired)
    again->send(user_command("d1", "site.deploy", site_payload(a)));
    f.run();
    REQUIRE(again->messages.size() == 1);
    CHECK(again->messages[0] == refused);
    CHECK(f.held.empty());
    CHECK(f.gateway.held_command_ids() == 1);
    f.clk.advance(1s);
    f.gateway.tick();
    CHECK(f.gateway.held_command_ids() == 0);  // memory back
    again->send(user_command("d1", "site.deploy", site_payload(a)));
    f.run();
    const seen fresh = read(again->messages.at(1));
    CHECK(fresh.type == message_type::accepted);
    CHECK(fresh.request != request);
    CHECK(f.held.size() == 1);
  }

  TEST_CASE("a refused command does not take its id, and reads are not held") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    const site_record theirs = f.make_site(f.bob, "bob-site");
    auto [ws, end] = f.user_socket(f.alice);
    ws->send(user_command("k1", "site.deploy", site_payload(theirs)));
    ws->send(user_command("k1", "site.deploy", site_payload(a)));
    ws->send(user_command("s1", "site.status", site_payload(a)));
    ws->send(user_command("s1", "site.status", site_payload(a)));
    f.run();
    REQUIRE(ws->messages.size() >= 4);
    CHECK(contains(ws->messages[0], R"("id":"k1","code":"unauthorized_access")"));
    CHECK(read(ws->messages[1]).type == message_type::accepted);
    CHECK(count_with(*ws, R"({"v":1,"type":"result","id":"s1")") == 2);
    CHECK(f.gateway.held_command_ids() == 1);
  }

  TEST_CASE("past an operation's per-user rate: an error rate_limited with retry_after; the session stays open") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    auto [ws, end] = f.user_socket(f.alice);
    f.hold_deploys = true;
    for (int i = 0; i < 11; ++i) ws->send(user_command("d" + std::to_string(i), "site.deploy", site_payload(a)));
    f.run();
    CHECK(count_with(*ws, R"("type":"accepted")") == 10);  // site.deploy's burst
    CHECK(count_with(*ws, R"({"v":1,"type":"error","id":"d10","code":"rate_limited","message":"Too many requests, slow down","retry_after":2})") == 1);
    // A client reads it with the protocol's parser, as docs/protocol.md describes it.
    const auto error = std::find_if(ws->messages.begin(), ws->messages.end(),
                                    [](const std::string& m) { return contains(m, R"("code":"rate_limited")"); });
    REQUIRE(error != ws->messages.end());
    protocol::parser parser;
    auto refused = parser.parse(*error);
    REQUIRE(refused);
    CHECK((*refused)->retry_after == 2);
    CHECK(end->is_open());
    // The id was not kept: once the rate allows, the same command runs.
    f.clk.advance(2s);
    ws->send(user_command("d10", "site.deploy", site_payload(a)));
    f.run();
    CHECK(count_with(*ws, R"("type":"accepted","id":"d10")") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "rate_limited", "denied") == 1);
  }

  TEST_CASE("held ids are bounded per user: past the cap, state-changing commands get rate_limited, reads still work") {
    user_gateway_config cfg;
    cfg.max_held_command_ids = 3;
    platform_fixture f(cfg);
    const site_record a = f.make_site(f.alice, "alice-site");
    auto [ws, end] = f.user_socket(f.alice);
    auto [bob, bob_end] = f.user_socket(f.bob);
    f.hold_deploys = true;
    for (const char* id : {"d1", "d2", "d3", "d4"}) ws->send(user_command(id, "site.deploy", site_payload(a)));
    ws->send(user_command("s1", "site.status", site_payload(a)));
    f.run();
    CHECK(f.held.size() == 3);
    CHECK(count_with(*ws, R"("type":"accepted")") == 3);
    CHECK(count_with(*ws, R"({"v":1,"type":"error","id":"d4","code":"rate_limited")") == 1);
    CHECK(count_with(*ws, R"({"v":1,"type":"result","id":"s1","op":"site.status")") == 1);
    CHECK(f.gateway.held_command_ids() == 3);
    CHECK(end->is_open());
    // The cap is per user.
    bob->send(user_command("b1", "site.create", R"({"name":"b","url":"https://b.test"})"));
    f.run();
    CHECK(count_with(*bob, R"("type":"accepted","id":"b1")") == 1);
    // An ended operation frees its place once its linger is over.
    f.held[0]->succeed();
    f.run();
    ws->send(user_command("d4", "site.deploy", site_payload(a)));
    f.run();
    CHECK(count_with(*ws, R"({"v":1,"type":"error","id":"d4","code":"rate_limited")") == 2);
    f.clk.advance(std::chrono::minutes(10));
    auto [later, later_end] = f.user_socket(f.alice);  // the first session's token has expired meanwhile
    later->send(user_command("d4", "site.deploy", site_payload(a)));
    f.run();
    CHECK(count_with(*later, R"("type":"accepted","id":"d4")") == 1);
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
    ws->send(R"({"v":1,"type":"accepted","id":"c5","request":"r1-1"})");  // the server's message, not a client's
    ws->send(user_command("c4", "site.create", R"({"name":"mine","url":"https://mine.test"})"));
    f.run();
    REQUIRE(ws->messages.size() >= 5);
    CHECK(contains(ws->messages[0], R"("code":"invalid_payload")"));
    CHECK(contains(ws->messages[1], R"("code":"unknown_operation")"));
    CHECK(contains(ws->messages[2], R"("code":"forbidden_operation")"));
    CHECK(contains(ws->messages[3], R"({"v":1,"type":"error","id":"c5","code":"forbidden_operation")"));
    CHECK(contains(ws->messages[4], R"("type":"accepted","id":"c4")"));
  }

  TEST_CASE("a refused payload names its member: the table's checks, a chosen site id, the backend's value checks") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    const std::string site = std::to_string(a.id.value());
    auto [ws, end] = f.user_socket(f.alice);
    const std::pair<std::string, std::string> cases[] = {
        {user_command("p1", "site.deploy", R"({"site_id":)" + site + R"(,"version":""})"), "payload.version"},
        {user_command("p2", "site.deploy", R"({"version":"1"})"), "payload.site_id"},
        {user_command("p3", "site.deploy", R"({"site_id":)" + site + R"(,"force":true})"), "payload.force"},
        {user_command("p4", "site.deploy", R"({"site_id":)" + site + R"(,"a b":1})"), "payload"},  // not repeated
        {user_command("p5", "site.create", R"({"site_id":5,"name":"x","url":"https://x.test"})"), "payload.site_id"},
        {user_command("p6", "site.update", R"({"site_id":)" + site + R"(,"name":"x","url":"https://not a url"})"), "payload.url"},
        {user_command("p7", "site.update", R"({"site_id":)" + site + R"(,"name":"tab\there"})"), "payload.name"},
        {user_command("p8", "site.deploy", R"({"site_id":)" + site + R"(,"version":"v\u0007"})"), "payload.version"},
    };
    for (const auto& c : cases) ws->send(c.first);
    f.run();
    REQUIRE(ws->messages.size() == std::size(cases));
    for (std::size_t i = 0; i < std::size(cases); ++i) {
      const std::string& m = ws->messages[i];
      CAPTURE(m);
      const seen e = read(m);
      CHECK(e.type == message_type::error);
      CHECK(e.id == "p" + std::to_string(i + 1));
      CHECK(e.field == cases[i].second);
      CHECK(contains(m, R"(,"field":")" + cases[i].second + R"(","message":)"));
    }
    CHECK(read(ws->messages[5]).code == "invalid_site_url");
    CHECK(read(ws->messages[6]).code == "invalid_site_name");
    CHECK(read(ws->messages[7]).code == "invalid_payload");
    CHECK(f.sites->get(f.alice.id, a.id)->name == "alice-site");
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
    flaky_storage flaky(f.db);
    auto& users = flaky.user_view;
    memory::inline_storage_executor lanes(flaky);
    user_gateway gateway(user_gateway_config{}, f.tokens, lanes, f.ops, f.clk, f.log, f.db.audit());
    gateway.bind_sites(f.backend->sites());
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
