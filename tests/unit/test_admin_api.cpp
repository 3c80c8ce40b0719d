// The administration console's REST routes through the whole backend (backend_service: the REST API
// wired to the users' gateway and the hub link): users, principals, presence, logout, and the
// refusals every non-administrator gets.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "platform_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;

namespace {

/// A hub that obeys this backend's revoke messages (citrus-hub --revokers backend-1).
hub_config revoking_hub() {
  hub_config cfg;
  cfg.revokers = {"backend-1"};
  return cfg;
}

struct admin_fixture : platform_fixture {
  user_record root;
  int calls = 0;

  admin_fixture() : platform_fixture({}, false, revoking_hub()) {
    root = *db.users().create_user("root", *hash_password("root-pw", password_cost::minimum()), user_role::admin,
                                   clk.wall_now());
  }

  http_response call(std::string_view method, std::string_view target, std::string_view body = {},
                     std::string_view authorization = {}) {
    // A new client address per call: the per-address limit is not what these tests are about.
    ++calls;
    const std::string address = "10.0." + std::to_string(calls / 200) + "." + std::to_string(calls % 200) + ":5000";
    const http_request req{method, target, body, address, authorization, body.empty() ? "" : "application/json"};
    http_response r = handle_now(backend->rest(), req);
    CHECK(r.header("Cache-Control") == "no-store");
    return r;
  }

  std::string bearer(const user_record& user) { return "Bearer " + *tokens.issue(user, clk.wall_now()); }
  std::string path(std::string_view prefix, const user_record& u, std::string_view suffix = "") const {
    return std::string(prefix) + std::to_string(u.id.value()) + std::string(suffix);
  }
};

std::string error_body(std::string_view message) {
  return std::string(R"({"success":false,"message":")") + std::string(message) + "\"}";
}

}  // namespace

TEST_SUITE("admin_api") {
  TEST_CASE("a non-administrator gets the same 403 on every administration route, and nothing changes") {
    admin_fixture f;
    const std::string alice = f.bearer(f.alice);
    const std::string bob_id = std::to_string(f.bob.id.value());
    struct admin_call {
      const char* method;
      std::string path;
      const char* body;
    };
    const std::vector<admin_call> calls = {
        {"GET", "/api/admin/agents", ""},
        {"GET", "/api/admin/commanders", ""},
        {"GET", "/api/admin/hubs", ""},
        {"GET", "/api/admin/users", ""},
        {"POST", "/api/admin/users", R"({"username":"eve","password":"pw"})"},
        {"POST", "/api/admin/users/" + bob_id + "/disable", ""},
        {"POST", "/api/admin/users/" + bob_id + "/enable", ""},
        {"POST", "/api/admin/users/" + bob_id + "/password", R"({"password":"x"})"},
        {"DELETE", "/api/admin/users/" + bob_id, ""},
        {"DELETE", "/api/admin/agents/agent-1", ""},
        {"DELETE", "/api/admin/commanders/backend-1", ""},
        {"DELETE", "/api/admin/hubs/hub-1", ""},
        {"POST", "/api/admin/commanders/backend-1/rotate", ""},
        {"POST", "/api/admin/hubs/hub-1/rotate", ""},
        {"PUT", "/api/admin/agents/agent-1/grants", R"({"grants":[]})"},
        {"PUT", "/api/admin/commanders/backend-1/grants", R"({"grants":[]})"},
        {"GET", "/api/admin/audit", ""},
        {"GET", "/api/admin/audit/flagged", ""},
        // Malformed ones too: the refusal comes before the path or the body is looked at.
        {"DELETE", "/api/admin/users/not-a-number", ""},
        {"PUT", "/api/admin/agents/agent-1/grants", R"({"nonsense":1})"},
    };
    for (const auto& c : calls) {
      CAPTURE(c.method);
      CAPTURE(c.path);
      auto r = f.call(c.method, c.path, c.body, alice);
      CHECK(r.status == 403);
      CHECK(r.body == error_body("Operation not allowed"));
      auto anonymous = f.call(c.method, c.path, c.body);
      CHECK(anonymous.status == 401);
      CHECK(anonymous.body == error_body("Authentication required"));
    }
    CHECK_FALSE(f.db.users().find_user(f.bob.id)->disabled);
    CHECK_FALSE(f.db.users().find_user_by_name("eve"));
    CHECK(f.db.credentials().find_principal(principal_kind::agent, "agent-1"));
    CHECK(f.db.credentials().find_principal(principal_kind::commander, "backend-1"));
    CHECK(f.audit_count(audit_kind::security_event, "user.list", "denied") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "user.delete", "denied") == 2);
    CHECK(f.audit_count(audit_kind::security_event, "agent.revoke", "denied") == 1);
  }

  TEST_CASE("administrators add, list, disable, enable, reset and delete users; every change is audited") {
    admin_fixture f;
    const std::string root = f.bearer(f.root);
    auto added = f.call("POST", "/api/admin/users", R"({"username":"carol","password":"carol-pw","role":"user"})", root);
    CHECK(added.status == 201);
    CHECK(contains(added.body, R"("name":"carol","role":"user","disabled":false)"));
    CHECK_FALSE(contains(added.body, "argon2"));
    auto carol = f.db.users().find_user_by_name("carol");
    REQUIRE(carol);
    CHECK(verify_password("carol-pw", carol->password_hash));

    CHECK(f.call("POST", "/api/admin/users", R"({"username":"carol","password":"x"})", root).status == 409);
    CHECK(f.call("POST", "/api/admin/users", R"({"username":"bad name","password":"x"})", root).body ==
          error_body("A field has an invalid value"));
    CHECK(f.call("POST", "/api/admin/users", R"({"username":"dave","password":""})", root).status == 400);
    CHECK(f.call("POST", "/api/admin/users", R"({"username":"dave","password":"x","role":"root"})", root).body ==
          error_body("A field has an invalid value"));
    CHECK_FALSE(f.db.users().find_user_by_name("dave"));

    auto list = f.call("GET", "/api/admin/users", {}, root);
    CHECK(list.status == 200);
    CHECK(contains(list.body, R"("name":"alice")"));
    CHECK(contains(list.body, R"("name":"root","role":"admin")"));
    CHECK_FALSE(contains(list.body, "password"));
    CHECK_FALSE(contains(list.body, "argon2"));

    auto disabled = f.call("POST", f.path("/api/admin/users/", *carol, "/disable"), {}, root);
    CHECK(disabled.status == 200);
    CHECK(contains(disabled.body, R"("disabled":true)"));
    CHECK(f.db.users().find_user(carol->id)->disabled);
    auto enabled = f.call("POST", f.path("/api/admin/users/", *carol, "/enable"), {}, root);
    CHECK(contains(enabled.body, R"("disabled":false)"));

    CHECK(f.call("POST", f.path("/api/admin/users/", *carol, "/password"), R"({"password":"new-pw"})", root).status == 200);
    CHECK(verify_password("new-pw", f.db.users().find_user(carol->id)->password_hash));

    CHECK(f.call("DELETE", f.path("/api/admin/users/", *carol), {}, root).status == 200);
    CHECK_FALSE(f.db.users().find_user(carol->id));
    CHECK(f.call("DELETE", f.path("/api/admin/users/", *carol), {}, root).status == 404);
    CHECK(f.call("POST", "/api/admin/users/99/disable", {}, root).status == 404);
    CHECK(f.call("DELETE", "/api/admin/users/0", {}, root).status == 400);
    CHECK(f.call("DELETE", "/api/admin/users/01", {}, root).status == 400);

    for (const char* action : {"user.create", "user.disable", "user.enable", "user.password_reset", "user.delete"})
      CHECK_MESSAGE(f.audit_count(audit_kind::administration, action, "ok") == 1, action);
    CHECK(f.audit_count(audit_kind::administration, "user.create", "failed") == 3);
    auto events = f.db.audit().query({audit_kind::administration, 100});
    REQUIRE(events);
    for (const auto& e : *events) {
      CHECK(e.actor == "user:" + std::to_string(f.root.id.value()));
      CHECK_FALSE(contains(e.detail, "pw"));
    }
  }

  TEST_CASE("an administrator cannot disable or delete their own account") {
    admin_fixture f;
    const std::string root = f.bearer(f.root);
    const std::string own = error_body("An administrator cannot disable or delete their own account");
    auto disable = f.call("POST", f.path("/api/admin/users/", f.root, "/disable"), {}, root);
    CHECK(disable.status == 409);
    CHECK(disable.body == own);
    auto remove = f.call("DELETE", f.path("/api/admin/users/", f.root), {}, root);
    CHECK(remove.status == 409);
    CHECK(remove.body == own);
    CHECK_FALSE(f.db.users().find_user(f.root.id)->disabled);
  }

  TEST_CASE("a disabled or deleted user is logged out at once, cannot log in, and their tokens stop working") {
    admin_fixture f;
    const std::string root = f.bearer(f.root);
    const std::string alice_token = f.bearer(f.alice);
    auto [alice_ws, alice_end] = f.user_socket(f.alice);
    auto [bob_ws, bob_end] = f.user_socket(f.bob);
    CHECK(f.call("GET", "/api/sites", {}, alice_token).status == 200);

    CHECK(f.call("POST", f.path("/api/admin/users/", f.alice, "/disable"), {}, root).status == 200);
    f.run();
    CHECK(alice_ws->closed);
    CHECK(alice_end->closed_with() == close_code::revoked);
    CHECK_FALSE(bob_ws->closed);
    CHECK(f.call("GET", "/api/sites", {}, alice_token).status == 401);
    CHECK(f.call("POST", "/api/token/refresh", {}, alice_token).status == 401);
    auto login = f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})");
    CHECK(login.status == 403);
    CHECK(login.body == error_body("This account is disabled"));
    CHECK(f.call("POST", "/api/login", R"({"username":"alice","password":"wrong"})").status == 401);

    CHECK(f.call("POST", f.path("/api/admin/users/", f.alice, "/enable"), {}, root).status == 200);
    CHECK(f.call("GET", "/api/sites", {}, alice_token).status == 200);
    CHECK(f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})").status == 200);

    CHECK(f.call("DELETE", f.path("/api/admin/users/", f.bob), {}, root).status == 200);
    f.run();
    CHECK(bob_ws->closed);
    CHECK(bob_end->closed_with() == close_code::revoked);
  }

  TEST_CASE("logout: the token stops working at once everywhere, its sessions close, the user's others stay") {
    admin_fixture f;
    const std::string first = f.bearer(f.alice);
    f.clk.advance(std::chrono::seconds(1));
    const std::string second = f.bearer(f.alice);
    CHECK(first != second);
    auto [ws, end] = f.user_socket(f.alice);  // another token of alice

    auto out = f.call("POST", "/api/logout", {}, first);
    CHECK(out.status == 200);
    CHECK(out.body == R"({"success":true})");
    CHECK(f.call("GET", "/api/sites", {}, first).status == 401);
    CHECK(f.call("POST", "/api/token/refresh", {}, first).status == 401);
    CHECK(f.call("POST", "/api/logout", {}, first).status == 401);
    CHECK(f.call("GET", "/api/sites", {}, second).status == 200);
    f.run();
    CHECK_FALSE(ws->closed);
    CHECK(f.audit_count(audit_kind::authentication, "logout", "ok") == 1);

    // A WebSocket session authenticated with a token is closed when that token logs out.
    const std::string token = *f.tokens.issue(f.bob, f.clk.wall_now());
    f.clients.push_back(std::make_unique<memory::recording_client>());
    auto* client = f.clients.back().get();
    auto& conn = f.users_net.connect(*client);
    f.run();
    client->send(R"({"v":1,"type":"auth","token":")" + token + R"("})");
    f.run();
    REQUIRE(contains(client->messages.at(0), "auth_ok"));
    CHECK(f.call("POST", "/api/logout", {}, "Bearer " + token).status == 200);
    f.run();
    CHECK(client->closed);
    CHECK(conn.closed_with() == close_code::revoked);
    // And a logged-out token cannot open a new one.
    f.clients.push_back(std::make_unique<memory::recording_client>());
    auto* again = f.clients.back().get();
    f.users_net.connect(*again);
    f.run();
    again->send(R"({"v":1,"type":"auth","token":")" + token + R"("})");
    f.run();
    CHECK(again->closed);
    CHECK(f.call("POST", "/api/logout", "{\"x\":1}", f.bearer(f.bob)).status == 400);
  }

  TEST_CASE("principals: listed without keys, agents with presence; rotate, grants and revoke for each kind") {
    admin_fixture f;
    const std::string root = f.bearer(f.root);
    auto agents = f.call("GET", "/api/admin/agents", {}, root);
    CHECK(agents.status == 200);
    CHECK(contains(agents.body, R"("agentId":"agent-1","grants":["backend-1","backend-2"])"));
    CHECK(contains(agents.body, R"("presence":{"hub":"hub-test","online":true,"since":)"));
    CHECK_FALSE(contains(agents.body, f.agent1_key));
    CHECK_FALSE(contains(agents.body, "hash"));
    auto commanders = f.call("GET", "/api/admin/commanders", {}, root);
    CHECK(contains(commanders.body, R"("commanderId":"backend-1")"));
    CHECK_FALSE(contains(commanders.body, "presence"));

    auto registered = f.call("POST", "/api/admin/hubs", R"({"hubId":"hub-7"})", root);
    CHECK(registered.status == 201);
    CHECK(contains(f.call("GET", "/api/admin/hubs", {}, root).body, R"("hubId":"hub-7")"));
    auto rotated = f.call("POST", "/api/admin/hubs/hub-7/rotate", R"({"overlapSeconds":0})", root);
    CHECK(rotated.status == 200);
    CHECK(contains(rotated.body, R"("hubId":"hub-7","key":"hk_)"));
    CHECK(f.call("POST", "/api/admin/commanders/backend-1/rotate", R"({"overlapSeconds":60})", root).status == 200);
    CHECK(f.audit_count(audit_kind::administration, "hub.rotate", "ok") == 1);
    CHECK(f.audit_count(audit_kind::administration, "commander.rotate", "ok") == 1);

    auto granted = f.call("PUT", "/api/admin/agents/agent-1/grants", R"({"grants":["backend-1","backend-2"]})", root);
    CHECK(granted.status == 200);
    CHECK(contains(granted.body, R"("grants":["backend-1","backend-2"])"));
    CHECK(f.db.credentials().find_principal(principal_kind::agent, "agent-1")->grants.size() == 2);
    CHECK(f.call("PUT", "/api/admin/commanders/backend-1/grants", R"({"grants":["*"]})", root).status == 200);
    CHECK(f.call("PUT", "/api/admin/agents/agent-1/grants", R"({"grants":["*"]})", root).status == 400);
    CHECK(f.call("PUT", "/api/admin/agents/ghost/grants", R"({"grants":[]})", root).status == 404);
    CHECK(f.call("PUT", "/api/admin/hubs/hub-7/grants", R"({"grants":[]})", root).status == 404);

    auto revoked = f.call("DELETE", "/api/admin/hubs/hub-7", {}, root);
    CHECK(revoked.status == 200);
    CHECK(revoked.body == R"({"success":true,"hubId":"hub-7","revoked":true})");
    CHECK_FALSE(f.db.credentials().find_principal(principal_kind::hub, "hub-7"));
    CHECK(f.call("DELETE", "/api/admin/hubs/hub-7", {}, root).status == 404);
    CHECK(f.call("DELETE", "/api/admin/agents/bad%20id", {}, root).status == 400);
    CHECK(f.audit_count(audit_kind::administration, "hub.revoke", "ok") == 1);
    CHECK(f.audit_count(audit_kind::administration, "hub.revoke", "failed") == 1);
    CHECK(f.audit_count(audit_kind::administration, "agent.grants", "ok") == 1);
    CHECK_FALSE(contains(f.call("GET", "/api/admin/hubs", {}, root).body, "hub-7"));

    // Revoking an agent also closes its live session at the hub at once, through the commander link.
    REQUIRE(f.call("DELETE", "/api/admin/agents/agent-1", {}, root).status == 200);
    f.run();
    CHECK(f.agent_end->closed_with() == close_code::revoked);
    CHECK_FALSE(f.agent->online());
    CHECK_FALSE(f.db.credentials().find_principal(principal_kind::agent, "agent-1"));
  }

  TEST_CASE("agent presence follows the hub's reports: since, last seen, offline after the link drops") {
    admin_fixture f;
    const std::string root = f.bearer(f.root);
    auto before = f.link->presence();
    REQUIRE(before.size() == 1);
    CHECK(before[0].agent == "agent-1");
    CHECK(before[0].online);
    CHECK(before[0].hub == "hub-test");
    const auto since = before[0].since;
    f.clk.advance(std::chrono::seconds(30));
    auto site = f.make_site(f.alice, "blog");  // the agent answers: seen again
    (void)site;
    auto seen = f.link->presence();
    CHECK(seen[0].since == since);
    CHECK(seen[0].last_seen > since);
    f.clk.advance(std::chrono::seconds(5));
    f.agent_end->close(close_code::normal, "bye");
    f.run();
    auto gone = f.link->presence();
    CHECK_FALSE(gone[0].online);
    CHECK(gone[0].since > since);
    CHECK(contains(f.call("GET", "/api/admin/agents", {}, root).body, R"("presence":{"hub":"hub-test","online":false)"));
  }

  TEST_CASE("the audit trail filters by actor, kind, outcome and time range, over every event") {
    admin_fixture f;
    const std::string root = f.bearer(f.root);
    const long long t0 = to_unix_seconds(f.clk.wall_now()) + 100;
    const auto at = [&](long long dt) { return from_unix_seconds(t0 + dt); };
    REQUIRE(f.db.audit().append({at(0), audit_kind::site_operation, "user:2", "site.create", "site:7", "ok", ""}));
    REQUIRE(f.db.audit().append({at(10), audit_kind::administration, "user:3", "user.create", "user:9", "ok", ""}));
    REQUIRE(f.db.audit().append({at(20), audit_kind::administration, "user:3", "user.delete", "user:9", "failed", ""}));
    const auto actions = [&](const std::string& query) {
      auto r = f.call("GET", "/api/admin/audit?since=" + std::to_string(t0) + "&" + query, {}, root);
      CAPTURE(query);
      CHECK(r.status == 200);
      std::vector<std::string> out;
      for (std::size_t i = r.body.find(R"("action":")"); i != std::string::npos; i = r.body.find(R"("action":")", i + 1)) {
        const std::size_t start = i + 10;
        out.push_back(r.body.substr(start, r.body.find('"', start) - start));
      }
      return out;
    };
    using list = std::vector<std::string>;
    CHECK(actions("actor=user:3") == list{"user.delete", "user.create"});
    CHECK(actions("actor=user:3&outcome=ok") == list{"user.create"});
    CHECK(actions("kind=site_operation") == list{"site.create"});
    CHECK(actions("until=" + std::to_string(t0 + 10)) == list{"user.create", "site.create"});
    CHECK(actions("actor=user:4") == list{});
    CHECK(f.call("GET", "/api/admin/audit?unacknowledged=1", {}, root).body ==
          R"j({"success":false,"message":"Message has an unknown field: unacknowledged","field":"unacknowledged"})j");
    CHECK(f.call("GET", "/api/admin/audit?until=x", {}, root).body ==
          R"j({"success":false,"message":"A field has an invalid value: until (Unix seconds)","field":"until"})j");
  }
}
