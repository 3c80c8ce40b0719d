#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <stdexcept>

#include "citrus/backend/rest_api.hpp"
#include "citrus/core/audit_verify.hpp"
#include "flaky_storage.hpp"
#include "platform_fixture.hpp"
#include "base64url.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

namespace {

std::string error_body(std::string_view message) {
  return std::string(R"({"success":false,"message":")") + std::string(message) + R"("})";
}

/// The error body of a request that is wrong about one field: the message names it, and so does "field".
std::string field_error_body(std::string_view message, std::string_view field) {
  return std::string(R"({"success":false,"message":")") + std::string(message) + R"(","field":")" + std::string(field) + R"("})";
}

const std::string unauthorized_body = error_body("Unauthorized access");
const std::string auth_required_body = error_body("Authentication required");

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

/// The text between the first `before` and the next `after` ("" when absent).
std::string between(const std::string& s, std::string_view before, std::string_view after) {
  const std::size_t start = s.find(before);
  if (start == std::string::npos) return {};
  const std::size_t from = start + before.size();
  const std::size_t end = s.find(after, from);
  if (end == std::string::npos) return {};
  return s.substr(from, end - from);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

using citrus::test_support::b64url;

std::string site_body(const site_record& site) {
  std::string out = R"({"success":true,"site":)";
  append_site_json(out, site);
  return out + "}";
}

rest_config no_address_limit() {
  rest_config cfg;
  cfg.per_address = rate{0, 0};
  return cfg;
}

struct rest_fixture : platform_fixture {
  login_config login_cfg = [] {
    login_config c;
    c.per_user_address.max_failures = 3;
    return c;
  }();
  login_service login{login_cfg, storage, tokens, clk};
  user_record root;
  std::string hub_key;
  std::function<std::string()> metrics;
  std::unique_ptr<rest_api> api;

  explicit rest_fixture(rest_config cfg = no_address_limit()) {
    root = *db.users().create_user("root", *hash_password("root-pw", password_cost::minimum()), user_role::admin,
                                   clk.wall_now());
    hub_key = *creds.register_principal(principal_kind::hub, "hub-1", {});
    api = std::make_unique<rest_api>(cfg, services());
  }

  rest_services services() { return rest_services{storage, backend->sites(), login, tokens, clk, random, log, metrics}; }

  /// Every answer: Cache-Control no-store; every error: the public JSON shape, nothing internal.
  static void check_shape(const http_response& r) {
    CHECK(r.header("Cache-Control") == "no-store");
    if (r.status < 400) return;
    CAPTURE(r.body);
    CHECK(r.content_type == "application/json");
    CHECK(starts_with(r.body, R"({"success":false,"message":")"));
    CHECK(r.body.size() > 2);
    CHECK(r.body.substr(r.body.size() - 2) == "\"}");
    const std::string text = lower(r.body);
    for (const char* word : {"sqlite", "exception", "std::", "simdjson", "what()", "errno", "stack", "0x"})
      CHECK_MESSAGE(text.find(word) == std::string::npos, word);
  }

  http_response call(std::string_view method, std::string_view target, std::string_view body = {},
                     std::string_view authorization = {}, std::string_view content_type = "application/json",
                     std::string_view address = "10.0.0.1:5000") {
    return call_on(*api, method, target, body, authorization, content_type, address);
  }

  static http_response call_on(rest_api& on, std::string_view method, std::string_view target, std::string_view body = {},
                               std::string_view authorization = {}, std::string_view content_type = "application/json",
                               std::string_view address = "10.0.0.1:5000") {
    const http_request req{method, target, body, address, authorization, content_type};
    http_response r = handle_now(on, req);
    check_shape(r);
    return r;
  }

  std::string bearer(const user_record& user) { return "Bearer " + *tokens.issue(user, clk.wall_now()); }
  std::string hub_auth() const { return "Bearer hub-1:" + hub_key; }

  std::string verify_body(std::string_view agent_name, std::string_view key) const {
    return std::string(R"({"agentId":")") + std::string(agent_name) + R"(","agentKey":")" + std::string(key) + R"("})";
  }

  std::string site_path(const site_record& s, std::string_view suffix = "") const {
    return "/api/sites/" + std::to_string(s.id.value()) + std::string(suffix);
  }

  std::string id_of(const user_record& u) const { return std::to_string(u.id.value()); }

  bool audit_mentions(std::string_view needle) {
    auto events = db.audit().query({std::nullopt, 10000});
    REQUIRE(events);
    for (const auto& e : *events)
      for (const std::string* s : {&e.actor, &e.action, &e.target, &e.outcome, &e.detail})
        if (s->find(needle) != std::string::npos) return true;
    return false;
  }
};

}  // namespace

TEST_SUITE("rest_api") {
  TEST_CASE("readiness follows the dependencies: 503 naming what is down, never rate limited") {
    rest_config cfg;
    cfg.per_address = rate{1, 1};  // one request at most: /readyz must not count
    rest_fixture f(cfg);
    std::vector<std::string> down{"hub_link", "database"};
    f.api = std::make_unique<rest_api>(cfg, [&] {
      auto s = f.services();
      s.unready = [&down] { return down; };
      return s;
    }());
    for (int i = 0; i < 5; ++i) {
      auto r = f.call("GET", "/readyz");
      CHECK(r.status == 503);
      CHECK(r.body == error_body("Not ready: waiting for hub_link, database"));
    }
    down = {"database"};
    CHECK(f.call("GET", "/readyz").body == error_body("Not ready: waiting for database"));
    down.clear();
    auto ready = f.call("GET", "/readyz");
    CHECK(ready.status == 200);
    CHECK(ready.body == R"({"status":"ready"})");
    CHECK(f.call("POST", "/readyz").status == 405);
    CHECK(f.call("GET", "/healthz").status == 200);  // liveness does not depend on them
  }

  TEST_CASE("health, metrics, unknown paths and wrong methods") {
    rest_fixture f;
    auto health = f.call("GET", "/healthz");
    CHECK(health.status == 200);
    CHECK(health.body == R"({"status":"ok"})");
    CHECK(health.content_type == "application/json");
    CHECK(f.call("GET", "/readyz").body == R"({"status":"ready"})");  // nothing to wait for by default

    auto metrics = f.call("GET", "/metrics");
    CHECK(metrics.status == 200);
    CHECK(metrics.body == "citrus_up 1\n");
    CHECK(metrics.content_type == "text/plain; version=0.0.4");
    f.metrics = [] { return std::string("citrus_hub_messages_received_total 42\n"); };
    rest_api with_metrics(no_address_limit(), f.services());
    auto custom = rest_fixture::call_on(with_metrics, "GET", "/metrics");
    CHECK(custom.status == 200);
    CHECK(custom.body == "citrus_hub_messages_received_total 42\n");

    // With a metrics token, only the scraper that presents it reads them.
    rest_config guarded = no_address_limit();
    guarded.metrics_token = "scrape-secret-0123456789";
    rest_api with_token(guarded, f.services());
    for (const char* authorization : {"", "Bearer", "Bearer scrape-secret-012345678", "Bearer scrape-secret-0123456789x",
                                      "Basic scrape-secret-0123456789", "Bearer scrape-secret-0123456789, x"}) {
      CAPTURE(authorization);
      auto refused = rest_fixture::call_on(with_token, "GET", "/metrics", {}, authorization);
      CHECK(refused.status == 401);
      CHECK(refused.header("WWW-Authenticate") == "Bearer");
      CHECK(refused.body.find("citrus_hub_messages_received_total") == std::string::npos);
    }
    auto scraped = rest_fixture::call_on(with_token, "GET", "/metrics", {}, "bearer  scrape-secret-0123456789 ");
    CHECK(scraped.status == 200);
    CHECK(scraped.body == "citrus_hub_messages_received_total 42\n");
    CHECK_FALSE(f.log.mentions("scrape-secret"));

    for (const char* path : {"/nope", "/api", "/api/", "/api/sites/1/deploy/now", "/api/admin", "/api/token",
                             "api/sites", "/API/sites", "//api/sites", "/healthz/", "http://x/api/sites", "",
                             "/api/admin/agents/a/b/rotate"}) {
      CAPTURE(path);
      auto r = f.call("GET", path);
      CHECK(r.status == 404);
      CHECK(r.body == error_body("Not found"));
    }

    struct wrong {
      const char* method;
      const char* path;
      const char* allow;
    };
    for (const wrong& w : {wrong{"DELETE", "/api/sites", "GET, POST"}, wrong{"GET", "/api/login", "POST"},
                           wrong{"PATCH", "/api/sites/1", "GET, PUT, DELETE"}, wrong{"GET", "/api/site/1", "PUT"},
                           wrong{"POST", "/healthz", "GET"}, wrong{"get", "/healthz", "GET"},
                           wrong{"PUT", "/metrics", "GET"}, wrong{"GET", "/api/verify-agent", "POST"},
                           wrong{"GET", "/api/sites/1/deploy", "POST"}, wrong{"PUT", "/api/admin/hubs", "GET, POST"},
                           wrong{"GET", "/api/admin/users/1", "DELETE"}, wrong{"GET", "/api/admin/agents/a/grants", "PUT"},
                           wrong{"HEAD", "/api/token/refresh", "POST"}}) {
      CAPTURE(w.method);
      CAPTURE(w.path);
      auto r = f.call(w.method, w.path);
      CHECK(r.status == 405);
      CHECK(r.body == error_body("Method not allowed"));
      CHECK(r.header("Allow") == w.allow);
    }
    // The query string is not part of the route.
    CHECK(f.call("GET", "/api/sites?limit=5", {}, f.bearer(f.alice)).body == R"({"success":true,"sites":[]})");
    CHECK(f.call("GET", "/healthz?probe=1").status == 200);
  }

  TEST_CASE("rest_routes() is the table the router serves: each pattern answers its methods and refuses the others") {
    rest_fixture f;
    const std::vector<rest_route> routes = rest_routes();
    REQUIRE(!routes.empty());
    std::set<std::string> patterns;
    for (const rest_route& route : routes) {
      CAPTURE(route.pattern);
      CHECK(patterns.insert(std::string(route.pattern)).second);  // each once
      std::string path;  // the pattern with "1" for its parameter, a value every route's parameter accepts
      for (std::size_t i = 0; i < route.pattern.size();) {
        if (route.pattern[i] == ':') {
          path += '1';
          i = std::min(route.pattern.find('/', i), route.pattern.size());
        } else {
          path += route.pattern[i++];
        }
      }
      auto refused = f.call("PATCH", path);  // no route takes PATCH
      CHECK(refused.status == 405);
      CHECK(refused.header("Allow") == route.methods);
    }
  }

  TEST_CASE("an exception inside a handler becomes a bare 500") {
    rest_fixture f;
    f.metrics = []() -> std::string { throw std::runtime_error("sqlite: database is locked in std::map exception"); };
    rest_api api(no_address_limit(), f.services());
    auto r = rest_fixture::call_on(api, "GET", "/metrics");
    CHECK(r.status == 500);
    CHECK(r.body == error_body("Internal error"));
    CHECK(f.log.count("rest_exception") == 1);
  }

  TEST_CASE("login returns a token, the user and its lifetime, then nothing secret is logged") {
    rest_fixture f;
    auto r = f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})");
    CHECK(r.status == 200);
    const std::string token = between(r.body, R"("token":")", "\"");
    REQUIRE(token.size() > 20);
    CHECK(r.body == R"({"success":true,"token":")" + token + R"(","expires_in":300,"user":{"id":)" + f.id_of(f.alice) +
                        R"(,"name":"alice","role":"user"}})");
    // The token works on the API, and the admin's login says so.
    CHECK(f.call("GET", "/api/sites", {}, "Bearer " + token).body == R"({"success":true,"sites":[]})");
    auto admin = f.call("POST", "/api/login", R"({"username":"root","password":"root-pw"})");
    CHECK(admin.status == 200);
    CHECK(contains(admin.body, R"("name":"root","role":"admin"})"));
    CHECK(f.audit_count(audit_kind::authentication, "login", "ok") == 2);
    CHECK_FALSE(f.log.mentions("alice-pw"));
    CHECK_FALSE(f.log.mentions(token));
    CHECK_FALSE(f.audit_mentions("alice-pw"));
    CHECK_FALSE(f.audit_mentions(token));
    CHECK(f.log.count("http_request") == 3);
  }

  TEST_CASE("wrong credentials: one answer for a wrong password and an unknown user, then a lockout of that address only") {
    rest_fixture f;
    const std::string bad = error_body("Invalid username or password");
    auto unknown = f.call("POST", "/api/login", R"({"username":"nobody","password":"alice-pw"})");
    CHECK(unknown.status == 401);
    CHECK(unknown.body == bad);
    for (int i = 0; i < 3; ++i) {
      auto wrong = f.call("POST", "/api/login", R"({"username":"alice","password":"guess"})");
      CHECK(wrong.status == 401);
      CHECK(wrong.body == bad);
    }
    // Locked from this address: even the right password is refused until the lockout ends.
    auto locked = f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})");
    CHECK(locked.status == 429);
    CHECK(locked.body == error_body("Too many failed attempts, try again later"));
    CHECK(locked.header("Retry-After") == "300");  // the whole lockout is still ahead
    CHECK(locked.hold_back == 0ms);                // a refusal costs nothing: answered at once
    CHECK(f.audit_count(audit_kind::security_event, "login_lockout", "locked") == 1);
    // Alice from elsewhere is let in at once, her answer held back by her name's 3 recent failures.
    auto elsewhere = f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})", {}, "application/json",
                            "10.0.0.2:6000");
    CHECK(elsewhere.status == 200);
    CHECK(elsewhere.hold_back == 1s);
    f.clk.advance(200s);
    CHECK(f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})").header("Retry-After") == "100");
    f.clk.advance(101s);
    CHECK(f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})").status == 200);
    CHECK_FALSE(f.log.mentions("guess"));
  }

  TEST_CASE("a login for a name under brute force is held back alike for a right and a wrong password; other routes never") {
    rest_fixture f;
    for (int i = 0; i < 5; ++i)
      (void)f.call("POST", "/api/login", R"({"username":"alice","password":"guess"})", {}, "application/json",
                   "10.9.0." + std::to_string(i) + ":1000");
    auto wrong = f.call("POST", "/api/login", R"({"username":"alice","password":"guess"})", {}, "application/json", "10.9.1.1:1000");
    auto right = f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})", {}, "application/json", "10.9.1.2:1000");
    CHECK(wrong.status == 401);
    CHECK(right.status == 200);
    CHECK(wrong.hold_back == 4s);  // 5 failures before it
    CHECK(right.hold_back == 8s);  // 6 before it: capped from here on
    CHECK(f.call("GET", "/api/sites", {}, f.bearer(f.alice)).hold_back == 0ms);
    CHECK(f.call("POST", "/api/login", R"({"username":"bob","password":"bob-pw"})").hold_back == 0ms);
    std::vector<std::string> held;  // what the request log says was held back, in order
    for (const auto& r : f.log.records)
      if (r.event == "http_request")
        for (const auto& [key, value] : r.fields)
          if (key == "hold_ms" && value != "0") held.push_back(value);
    CHECK(held == std::vector<std::string>{"1000", "2000", "4000", "8000"});
  }

  // Found by tests/fuzz/fuzz_rest: the login's 401 was the only one without WWW-Authenticate (RFC 9110 requires
  // it on every 401, and rest_api.hpp promises it).
  TEST_CASE("a refused login is a 401 with WWW-Authenticate, like every other 401") {
    rest_fixture f;
    for (const char* body : {R"({"username":"alice","password":"guess"})", R"({"username":"nobody","password":"x"})"}) {
      CAPTURE(body);
      auto r = f.call("POST", "/api/login", body);
      CHECK(r.status == 401);
      CHECK(r.body == error_body("Invalid username or password"));
      CHECK(r.header("WWW-Authenticate") == "Bearer");
    }
  }

  TEST_CASE("token refresh: a live token gets a fresh one, then missing, garbage, expired and deleted users do not") {
    rest_fixture f;
    auto first = f.call("POST", "/api/login", R"({"username":"bob","password":"bob-pw"})");
    const std::string token = between(first.body, R"("token":")", "\"");
    REQUIRE_FALSE(token.empty());
    f.clk.advance(60s);
    auto fresh = f.call("POST", "/api/token/refresh", {}, "Bearer " + token, "");
    CHECK(fresh.status == 200);
    const std::string fresh_token = between(fresh.body, R"("token":")", "\"");
    CHECK(fresh_token != token);
    CHECK(fresh.body == R"({"success":true,"token":")" + fresh_token + R"(","expires_in":300,"user":{"id":)" +
                            f.id_of(f.bob) + R"(,"name":"bob","role":"user"}})");
    CHECK(f.call("POST", "/api/token/refresh", "{}", "Bearer " + token).status == 200);
    CHECK(f.call("POST", "/api/token/refresh", R"({"token":"x"})", "Bearer " + token).body ==
          field_error_body("Message has an unknown field: token", "token"));

    auto missing = f.call("POST", "/api/token/refresh");
    CHECK(missing.status == 401);
    CHECK(missing.body == auth_required_body);
    CHECK(missing.header("WWW-Authenticate") == "Bearer");
    auto garbage = f.call("POST", "/api/token/refresh", {}, "Bearer not.a.token");
    CHECK(garbage.status == 401);
    CHECK(garbage.body == auth_required_body);

    f.clk.advance(400s);
    auto expired = f.call("POST", "/api/token/refresh", {}, "Bearer " + fresh_token);
    CHECK(expired.status == 401);
    CHECK(expired.body == error_body("Session expired"));

    const std::string live = f.bearer(f.bob);
    REQUIRE(f.db.users().delete_user(f.bob.id));
    auto deleted = f.call("POST", "/api/token/refresh", {}, live);
    CHECK(deleted.status == 401);
    CHECK(deleted.body == auth_required_body);
    auto events = f.db.audit().query({audit_kind::authentication, 1000});
    REQUIRE(events);
    CHECK(std::count_if(events->begin(), events->end(), [&](const audit_event& e) {
            return e.action == "token_refresh" && e.outcome == "denied" &&
                   e.target == "user:" + std::to_string(f.bob.id.value());
          }) == 1);  // the deleted user's refresh only, not the garbage or expired ones
  }

  TEST_CASE("token refresh never extends a session past its absolute lifetime") {
    rest_fixture f;
    const auto max_session = f.login_cfg.max_session;
    REQUIRE(max_session == std::chrono::hours(12));
    auto first = f.call("POST", "/api/login", R"({"username":"bob","password":"bob-pw"})");
    std::string token = between(first.body, R"("token":")", "\"");
    // Refreshing every 4 minutes keeps the session alive until 12 hours after the login, not longer.
    const auto login_at = f.clk.wall_now();
    while (f.clk.wall_now() + 240s < login_at + max_session) {
      f.clk.advance(240s);
      auto fresh = f.call("POST", "/api/token/refresh", {}, "Bearer " + token);
      REQUIRE(fresh.status == 200);
      token = between(fresh.body, R"("token":")", "\"");
    }
    auto claims = f.tokens.verify(token, f.clk.wall_now());
    REQUIRE(claims);
    CHECK(claims->expires_at <= login_at + max_session);
    CHECK(claims->authenticated_at == from_unix_seconds(to_unix_seconds(login_at)));
    f.clk.advance(std::chrono::duration_cast<std::chrono::seconds>(login_at + max_session - f.clk.wall_now()));
    auto ended = f.call("POST", "/api/token/refresh", {}, "Bearer " + token);
    CHECK(ended.status == 401);
    CHECK(ended.body == error_body("Session expired"));
    CHECK(f.audit_mentions("absolute session lifetime reached"));
    // A new login starts a new session.
    CHECK(f.call("POST", "/api/login", R"({"username":"bob","password":"bob-pw"})").status == 200);
  }

  TEST_CASE("sites: create, list, get, update on both paths, deploy, delete") {
    rest_fixture f;
    const std::string alice = f.bearer(f.alice);
    auto created = f.call("POST", "/api/sites", R"({"name":"blog","url":"https://blog.test/"})", alice);
    CHECK(created.status == 201);
    auto sites = f.sites->list(f.alice.id);
    REQUIRE(sites);
    REQUIRE(sites->size() == 1);
    const site_record site = (*sites)[0];
    CHECK(site.name == "blog");
    CHECK(site.url == "https://blog.test/");
    CHECK(site.owner == f.alice.id);
    CHECK(created.body == site_body(site));
    f.run();

    auto stored = *f.sites->get(f.alice.id, site.id);
    CHECK(stored.deploy_status == "created");
    auto list = f.call("GET", "/api/sites", {}, alice);
    CHECK(list.status == 200);
    std::string expected_list = R"({"success":true,"sites":[)";
    append_site_json(expected_list, stored);
    CHECK(list.body == expected_list + "]}");

    auto got = f.call("GET", f.site_path(site), {}, alice);
    CHECK(got.status == 200);
    CHECK(got.body == site_body(stored));

    f.clk.advance(5s);
    auto renamed = f.call("PUT", f.site_path(site), R"({"name":"blog2"})", alice);
    CHECK(renamed.status == 200);
    stored = *f.sites->get(f.alice.id, site.id);
    CHECK(stored.name == "blog2");
    CHECK(stored.url == "https://blog.test/");
    CHECK(renamed.body == site_body(stored));

    auto moved = f.call("PUT", "/api/site/" + std::to_string(site.id.value()), R"({"url":"https://new.test/"})", alice);
    CHECK(moved.status == 200);
    stored = *f.sites->get(f.alice.id, site.id);
    CHECK(stored.name == "blog2");
    CHECK(stored.url == "https://new.test/");
    CHECK(moved.body == site_body(stored));
    f.run();

    auto deploy = f.call("POST", f.site_path(site, "/deploy"), R"({"version":"v2"})", alice);
    CHECK(deploy.status == 202);
    const std::string request = between(deploy.body, R"("request":")", "\"");
    REQUIRE_FALSE(request.empty());
    CHECK(deploy.body == R"({"success":true,"request":")" + request + R"("})");
    CHECK(f.sites->get(f.alice.id, site.id)->deploy_status == "deploying");
    f.run();
    CHECK(f.sites->get(f.alice.id, site.id)->deploy_status == "deployed");
    // No body, no Content-Type: a deploy of the default version.
    auto again = f.call("POST", f.site_path(site, "/deploy"), {}, alice, "");
    CHECK(again.status == 202);
    CHECK(between(again.body, R"("request":")", "\"") != request);
    f.run();

    auto removed = f.call("DELETE", f.site_path(site), {}, alice);
    CHECK(removed.status == 200);
    CHECK(removed.body == R"({"success":true})");
    CHECK(f.call("GET", "/api/sites", {}, alice).body == R"({"success":true,"sites":[]})");
    auto gone = f.call("GET", f.site_path(site), {}, alice);
    CHECK(gone.status == 403);
    CHECK(gone.body == unauthorized_body);
  }

  TEST_CASE("site input is validated") {
    rest_fixture f;
    const std::string alice = f.bearer(f.alice);
    const std::string invalid_version =
        field_error_body("Invalid payload for this operation: version (up to 64 characters, no control characters)", "version");
    const std::string bad_name = field_error_body(public_message(errc::invalid_site_name), "name");
    const std::string bad_url = field_error_body(public_message(errc::invalid_site_url), "url");
    for (const auto& [body, answer] : std::vector<std::pair<std::string, std::string>>{
             {R"({"name":"","url":"https://x.test"})", bad_name},
             {R"({"name":"tab\there","url":"https://x.test"})", bad_name},
             {R"j({"name":"ok","url":"javascript:alert(1)"})j", bad_url},
             {R"({"name":"ok","url":""})", bad_url},
             {R"({"name":"ok","url":"https://not a url"})", bad_url},
             {R"({"name":"ok","url":"https://"})", bad_url},
             {R"({"name":"ok","url":"http://a b"})", bad_url}}) {
      CAPTURE(body);
      auto r = f.call("POST", "/api/sites", body, alice);
      CHECK(r.status == 400);
      CHECK(r.body == answer);
    }
    CHECK(bad_url.find("url") != std::string::npos);  // the message names the field
    CHECK(bad_name.find("name") != std::string::npos);
    CHECK(f.call("POST", "/api/sites", R"({"name":"ok"})", alice).body ==
          field_error_body("Message lacks a required field: url", "url"));
    CHECK(f.call("POST", "/api/sites", R"({"url":"https://x.test"})", alice).body ==
          field_error_body("Message lacks a required field: name", "name"));
    CHECK(f.call("POST", "/api/sites", R"({"name":"ok","url":7})", alice).body ==
          field_error_body("A field has the wrong type: url (expected a string)", "url"));
    CHECK(f.call("POST", "/api/sites", R"({"name":"ok","url":"https://x.test","owner":2})", alice).body ==
          field_error_body("Message has an unknown field: owner", "owner"));
    CHECK(f.call("POST", "/api/sites", R"({"name":"a","name":"b","url":"https://x.test"})", alice).body ==
          field_error_body("Message repeats a key: name", "name"));
    CHECK(f.call("POST", "/api/sites", R"({"name":")" + std::string(4097, 'n') + R"(","url":"https://x.test"})", alice).body ==
          field_error_body("A field is too long: name (at most 4096 bytes)", "name"));
    CHECK(f.sites->list(f.alice.id)->empty());

    const site_record site = f.make_site(f.alice, "mine");
    const std::string before = site_body(*f.sites->get(f.alice.id, site.id));
    auto empty_change = f.call("PUT", f.site_path(site), "{}", alice);
    CHECK(empty_change.status == 400);
    CHECK(empty_change.body == error_body("Message lacks a required field (name or url, or both)"));
    CHECK(f.call("PUT", f.site_path(site), R"({"url":"ftp://x"})", alice).body == bad_url);
    auto long_version = f.call("POST", f.site_path(site, "/deploy"), R"({"version":")" + std::string(65, 'v') + "\"}", alice);
    CHECK(long_version.status == 400);
    CHECK(long_version.body == invalid_version);
    CHECK(site_body(*f.sites->get(f.alice.id, site.id)) == before);

    const std::string bad_site_id =
        field_error_body("A field has an invalid value: id (a positive decimal without leading zeros)", "id");
    for (const char* id : {"0", "-1", "01", "abc", "1.5", "9007199254740993", "99999999999999999999", "%31", ""}) {
      CAPTURE(id);
      auto r = f.call("GET", std::string("/api/sites/") + id, {}, alice);
      CHECK(r.status == 400);
      CHECK(r.body == bad_site_id);
      CHECK(f.call("PUT", std::string("/api/site/") + id, R"({"name":"x"})", alice).body == bad_site_id);
      CHECK(f.call("DELETE", std::string("/api/sites/") + id, {}, alice).status == 400);
      CHECK(f.call("POST", std::string("/api/sites/") + id + "/deploy", {}, alice).status == 400);
    }
    // 2^53 is still an id: well formed, just not Alice's.
    CHECK(f.call("GET", "/api/sites/9007199254740992", {}, alice).body == unauthorized_body);
  }

  TEST_CASE("user B on user A's site: 403 on every operation and path, A's site unchanged") {
    rest_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    const std::string before = site_body(*f.sites->get(f.alice.id, a.id));
    const auto routed = f.hub().counters().routed;
    const std::string bob = f.bearer(f.bob);
    const std::string id = std::to_string(a.id.value());

    struct attempt {
      const char* method;
      std::string path;
      std::string body;
    };
    for (const attempt& t : {attempt{"GET", "/api/sites/" + id, ""},
                             attempt{"PUT", "/api/sites/" + id, R"({"name":"pwned"})"},
                             attempt{"PUT", "/api/site/" + id, R"({"name":"pwned","url":"https://evil.test"})"},
                             attempt{"DELETE", "/api/sites/" + id, ""},
                             attempt{"POST", "/api/sites/" + id + "/deploy", R"({"version":"evil"})"},
                             attempt{"POST", "/api/sites/" + id + "/deploy", ""}}) {
      CAPTURE(t.method);
      CAPTURE(t.path);
      auto r = f.call(t.method, t.path, t.body, bob);
      CHECK(r.status == 403);
      CHECK(r.body == unauthorized_body);
    }
    f.run();
    CHECK(site_body(*f.sites->get(f.alice.id, a.id)) == before);
    CHECK(f.sites->list(f.alice.id)->size() == 1);
    CHECK(f.hub().counters().routed == routed);
    CHECK(f.call("GET", "/api/sites", {}, bob).body == R"({"success":true,"sites":[]})");
    auto denied = f.db.audit().query({audit_kind::security_event, 100});
    REQUIRE(denied);
    CHECK(denied->size() == 6);
    for (const auto& e : *denied) CHECK(e.actor == "user:" + f.id_of(f.bob));
  }

  TEST_CASE("walking site ids 1..50 as another user never finds A's sites, and every answer is the same") {
    rest_fixture f;
    std::vector<site_record> owned;
    for (int i = 0; i < 3; ++i) owned.push_back(f.make_site(f.alice, "a" + std::to_string(i)));
    for (const auto& s : owned) REQUIRE(s.id.value() <= 50);
    const std::string bob = f.bearer(f.bob);
    std::set<std::pair<int, std::string>> answers;
    for (int id = 1; id <= 50; ++id) {
      f.clk.advance(2s);  // within every operation's per-user rate: each answer is about the site, none a 429
      const std::string path = "/api/sites/" + std::to_string(id);
      auto get = f.call("GET", path, {}, bob);
      answers.insert({get.status, get.body});
      auto put = f.call("PUT", path, R"({"name":"x"})", bob);
      answers.insert({put.status, put.body});
      auto legacy = f.call("PUT", "/api/site/" + std::to_string(id), R"({"name":"x"})", bob);
      answers.insert({legacy.status, legacy.body});
      auto deploy = f.call("POST", path + "/deploy", {}, bob);
      answers.insert({deploy.status, deploy.body});
      auto del = f.call("DELETE", path, {}, bob);
      answers.insert({del.status, del.body});
    }
    REQUIRE(answers.size() == 1);
    CHECK(answers.begin()->first == 403);
    CHECK(answers.begin()->second == unauthorized_body);
    CHECK(f.sites->list(f.alice.id)->size() == 3);
    for (const auto& s : owned) CHECK(f.sites->get(f.alice.id, s.id)->name == s.name);
  }

  TEST_CASE("past an operation's per-user rate: 429 with Retry-After, for that user and operation only") {
    rest_fixture f;
    const site_record a = f.make_site(f.alice, "a");
    const site_record b = f.make_site(f.bob, "b");
    const std::string alice = f.bearer(f.alice);
    for (int i = 0; i < 10; ++i) REQUIRE(f.call("POST", f.site_path(a, "/deploy"), {}, alice).status == 202);
    auto limited = f.call("POST", f.site_path(a, "/deploy"), {}, alice);
    CHECK(limited.status == 429);
    CHECK(limited.body == error_body("Too many requests, slow down"));
    CHECK(limited.header("Retry-After") == "2");  // site.deploy: 30 per minute, a token every 2 s
    // Probing someone else's site spends the same bucket: the rate comes before the ownership check.
    CHECK(f.call("POST", f.site_path(b, "/deploy"), {}, alice).status == 429);
    CHECK(f.call("POST", f.site_path(b, "/deploy"), {}, f.bearer(f.bob)).status == 202);  // Bob: his own bucket
    CHECK(f.call("GET", f.site_path(a), {}, alice).status == 200);                          // another operation
    CHECK(f.backend->sites().counters().rate_limited == 2);
    CHECK(f.audit_count(audit_kind::security_event, "rate_limited", "denied") == 1);
    f.clk.advance(2s);
    CHECK(f.call("POST", f.site_path(a, "/deploy"), {}, alice).status == 202);
  }

  TEST_CASE("tokens: missing, malformed, forged, alg none, expired, deleted user") {
    rest_fixture f;
    const std::string good = *f.tokens.issue(f.alice, f.clk.wall_now());
    CHECK(f.call("GET", "/api/sites", {}, "Bearer " + good).status == 200);
    CHECK(f.call("GET", "/api/sites", {}, "bearer   " + good + "  ").status == 200);

    jwt::hs256_token_service other{jwt::hs256_config{std::string(48, 'z'), "citrus-backend", "citrus",
                                                      std::chrono::seconds(300), std::chrono::seconds(3600),
                                                      std::chrono::seconds(5)},
                                   f.random};
    const std::string forged = *other.issue(f.alice, f.clk.wall_now());
    const std::size_t dot1 = good.find('.');
    const std::size_t dot2 = good.find('.', dot1 + 1);
    REQUIRE(dot2 != std::string::npos);
    const std::string payload = good.substr(dot1 + 1, dot2 - dot1 - 1);
    const std::string none_header = b64url(R"({"alg":"none","typ":"JWT"})");
    std::string tampered = good;
    tampered.back() = tampered.back() == 'A' ? 'B' : 'A';
    // Bob's claims under Alice's signature.
    const std::string bob_token = *f.tokens.issue(f.bob, f.clk.wall_now());
    const std::string spliced = good.substr(0, dot1 + 1) + bob_token.substr(bob_token.find('.') + 1, bob_token.rfind('.') - bob_token.find('.') - 1) + good.substr(dot2);

    for (const std::string& auth :
         {std::string(), std::string("Bearer"), std::string("Bearer "), "Basic " + good, "Token " + good, good,
          std::string("Bearer garbage"), std::string("Bearer a.b.c"), "Bearer " + good + " " + good,
          "Bearer " + good + ",x", "Bearer " + forged, "Bearer " + tampered, "Bearer " + spliced,
          "Bearer " + none_header + "." + payload + ".", "Bearer " + none_header + "." + payload,
          "Bearer " + none_header + "." + payload + good.substr(dot2), "Bearer " + std::string(5000, 'a')}) {
      CAPTURE(auth);
      auto r = f.call("GET", "/api/sites", {}, auth);
      CHECK(r.status == 401);
      CHECK(r.body == auth_required_body);
      CHECK(r.header("WWW-Authenticate") == "Bearer");
    }

    f.clk.advance(400s);
    auto expired = f.call("GET", "/api/sites", {}, "Bearer " + good);
    CHECK(expired.status == 401);
    CHECK(expired.body == error_body("Session expired"));

    const std::string bob = f.bearer(f.bob);
    CHECK(f.call("GET", "/api/sites", {}, bob).status == 200);
    REQUIRE(f.db.users().delete_user(f.bob.id));
    auto deleted = f.call("GET", "/api/sites", {}, bob);
    CHECK(deleted.status == 401);
    CHECK(deleted.body == auth_required_body);
    // Only this backend can have signed that token: its use after the deletion is an audited
    // authentication event naming the user (the garbage and forged tokens above are not).
    auto events = f.db.audit().query({audit_kind::authentication, 1000});
    REQUIRE(events);
    std::size_t rest_auth = 0;
    for (const auto& e : *events) rest_auth += e.action == "rest_auth";
    CHECK(rest_auth == 1);
    CHECK(std::count_if(events->begin(), events->end(), [&](const audit_event& e) {
            return e.action == "rest_auth" && e.target == "user:" + std::to_string(f.bob.id.value()) &&
                   e.outcome == "denied" && e.actor == "addr:10.0.0.1";
          }) == 1);
    CHECK_FALSE(f.log.mentions(good));
  }

  TEST_CASE("a deploy while the hub is unreachable answers 503 with the public message") {
    rest_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    f.link_end->close(close_code::going_away, "hub restarting");
    f.run();
    auto r = f.call("POST", f.site_path(a, "/deploy"), {}, f.bearer(f.alice));
    CHECK(r.status == 503);
    CHECK(r.body == error_body("Hosting service temporarily unreachable"));
  }

  TEST_CASE("storage failures answer 503 with the public message") {
    rest_fixture f;
    const std::string alice = f.bearer(f.alice);
    const std::string unavailable = error_body("Service temporarily unavailable");
    f.db.fail_next_writes(1);
    auto r = f.call("POST", "/api/sites", R"({"name":"x","url":"https://x.test"})", alice);
    CHECK(r.status == 503);
    CHECK(r.body == unavailable);
    f.db.fail_next_writes(1, errc::storage_full);
    r = f.call("POST", "/api/sites", R"({"name":"x","url":"https://x.test"})", alice);
    CHECK(r.status == 503);
    CHECK(r.body == unavailable);
    CHECK(f.sites->list(f.alice.id)->empty());
    f.db.fail_next_writes(1);
    r = f.call("POST", "/api/admin/hubs", R"({"hubId":"hub-7"})", f.bearer(f.root));
    CHECK(r.status == 503);
    CHECK(r.body == unavailable);
    CHECK(f.log.count("rest_failure") == 3);

    // Users unreadable: the token is fine, but nobody can be authenticated. Not a 401.
    flaky_storage flaky(f.db);
    memory::inline_storage_executor flaky_storage_lanes(flaky);
    login_service flaky_login(login_config{}, flaky_storage_lanes, f.tokens, f.clk);
    rest_api api(no_address_limit(),
                 rest_services{flaky_storage_lanes, f.backend->sites(), flaky_login, f.tokens, f.clk, f.random, f.log, {}});
    CHECK(rest_fixture::call_on(api, "GET", "/api/sites", {}, alice).status == 200);
    flaky.user_view.down = true;
    r = rest_fixture::call_on(api, "GET", "/api/sites", {}, alice);
    CHECK(r.status == 503);
    CHECK(r.body == unavailable);
    // Refreshing a token while users are unreadable is a 503 too, not a 401 that logs the user out.
    r = rest_fixture::call_on(api, "POST", "/api/token/refresh", {}, alice);
    CHECK(r.status == 503);
    CHECK(r.body == unavailable);

    // A login whose audit event cannot be stored hands out no token: no unrecorded access.
    f.db.fail_next_writes(1);
    r = f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})");
    CHECK(r.status == 503);
    CHECK(r.body == unavailable);
    CHECK(r.body.find("token") == std::string::npos);
    r = f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})");
    CHECK(r.status == 200);
    CHECK(r.body.find(R"("token":")") != std::string::npos);
  }

  TEST_CASE("verify-agent: hub credentials required, then one answer for a wrong key and an unknown agent") {
    rest_fixture f;
    const std::string ok_body = f.verify_body("agent-1", f.agent1_key);
    for (const std::string& auth : {std::string(), f.bearer(f.alice), std::string("Bearer hub-1:hk_wrong"),
                                    std::string("Bearer hub-1"), std::string("Bearer :") + f.hub_key,
                                    std::string("Bearer hub-1:"), "Bearer backend-1:" + f.backend_key,
                                    "Bearer agent-1:" + f.agent1_key, "Bearer hub-2:" + f.hub_key,
                                    "Basic hub-1:" + f.hub_key}) {
      CAPTURE(auth);
      auto r = f.call("POST", "/api/verify-agent", ok_body, auth);
      CHECK(r.status == 401);
      CHECK(r.body == auth_required_body);
      CHECK(r.header("WWW-Authenticate") == "Bearer");
    }
    // Denials that named a hub are audited; a missing or malformed header names nobody.
    CHECK(f.audit_count(audit_kind::security_event, "hub_auth", "denied") == 4);

    auto valid = f.call("POST", "/api/verify-agent", ok_body, f.hub_auth());
    CHECK(valid.status == 200);
    // The verdict, then the key's age (and end, once rotated) for the hub's --key-max-age-s.
    CHECK(starts_with(valid.body, R"({"valid":true,"agentId":"agent-1","grants":["backend-1","backend-2"],"keyCreatedAt":)"));

    auto wrong_key = f.call("POST", "/api/verify-agent", f.verify_body("agent-1", f.agent2_key), f.hub_auth());
    auto unknown = f.call("POST", "/api/verify-agent", f.verify_body("ghost", f.agent1_key), f.hub_auth());
    auto commander = f.call("POST", "/api/verify-agent", f.verify_body("backend-1", f.backend_key), f.hub_auth());
    auto malformed_id = f.call("POST", "/api/verify-agent", f.verify_body("bad id", "x"), f.hub_auth());
    for (const auto* r : {&wrong_key, &unknown, &commander, &malformed_id}) {
      CHECK(r->status == 200);
      CHECK(r->body == R"({"valid":false})");
      CHECK(r->content_type == wrong_key.content_type);
      CHECK(r->headers.size() == wrong_key.headers.size());
    }
    auto events = f.db.audit().query({audit_kind::security_event, 100});
    REQUIRE(events);
    std::set<std::string> targets;
    for (const auto& e : *events) {
      if (e.action != "verify_agent") continue;
      CHECK(e.actor == "hub:hub-1");
      CHECK(e.outcome == "denied");
      targets.insert(e.target);
    }
    CHECK(targets == std::set<std::string>{"agent:agent-1", "agent:ghost", "agent:backend-1", "agent:(invalid)"});
    CHECK_FALSE(f.audit_mentions(f.agent1_key));
    CHECK_FALSE(f.audit_mentions(f.hub_key));
    CHECK_FALSE(f.log.mentions(f.agent1_key));
    CHECK_FALSE(f.log.mentions(f.hub_key));

    // The body is checked like any other, once the hub is known.
    CHECK(f.call("POST", "/api/verify-agent", R"({"agentId":"agent-1"})", f.hub_auth()).body ==
          field_error_body("Message lacks a required field: agentKey", "agentKey"));
    CHECK(f.call("POST", "/api/verify-agent", R"({"agentId":"agent-1","agentKey":1})", f.hub_auth()).body ==
          field_error_body("A field has the wrong type: agentKey (expected a string)", "agentKey"));
    // A hub id may contain ':' (keys never do).
    const std::string eu_key = *f.creds.register_principal(principal_kind::hub, "eu:hub-2", {});
    CHECK(f.call("POST", "/api/verify-agent", ok_body, "Bearer eu:hub-2:" + eu_key).status == 200);
  }

  TEST_CASE("verify-commander: the hub's key first, then one answer for a wrong key, an unknown id and an agent") {
    rest_fixture f;
    auto body = [](std::string_view id, std::string_view key) {
      return std::string(R"({"commanderId":")") + std::string(id) + R"(","commanderKey":")" + std::string(key) + R"("})";
    };
    const std::string ok_body = body("backend-1", f.backend_key);
    for (const std::string& auth : {std::string(), f.bearer(f.alice), std::string("Bearer hub-1:hk_wrong"),
                                    "Bearer backend-1:" + f.backend_key}) {
      CAPTURE(auth);
      auto r = f.call("POST", "/api/verify-commander", ok_body, auth);
      CHECK(r.status == 401);
      CHECK(r.body == auth_required_body);
    }
    auto valid = f.call("POST", "/api/verify-commander", ok_body, f.hub_auth());
    CHECK(valid.status == 200);
    CHECK(starts_with(valid.body, R"({"valid":true,"commanderId":"backend-1","grants":["agent-1","agent-2","agent-3"],"keyCreatedAt":)"));
    for (const auto& b : {body("backend-1", f.other_commander_key), body("ghost", f.backend_key),
                          body("agent-1", f.agent1_key)}) {
      auto r = f.call("POST", "/api/verify-commander", b, f.hub_auth());
      CHECK(r.status == 200);
      CHECK(r.body == R"({"valid":false})");
    }
    CHECK(f.audit_count(audit_kind::security_event, "verify_commander", "denied") == 3);
    // The agent route's fields are not the commander route's.
    CHECK(f.call("POST", "/api/verify-commander", f.verify_body("agent-1", f.agent1_key), f.hub_auth()).status == 400);
    CHECK(f.call("GET", "/api/verify-commander", {}, f.hub_auth()).status == 405);
  }

  TEST_CASE("hub-events: a registered hub's events join the trail under its name; anything else is refused whole") {
    rest_config cfg = no_address_limit();
    cfg.verify_agent_rate = rate{1, 4};
    rest_fixture f(cfg);
    const long long now = to_unix_seconds(f.clk.wall_now());
    const std::string batch =
        R"({"events":[{"at":)" + std::to_string(now - 5) +
        R"(,"kind":"authentication","actor":"conn:7","action":"hub_auth","target":"agent:agent-1","outcome":"denied","detail":"bad credentials"},)"
        R"({"at":)" + std::to_string(now + 3600) +
        R"(,"kind":"security_event","actor":"agent:agent-2","action":"forged_commander_id","target":"request:r1","outcome":"dropped","detail":""}]})";
    auto wrong = f.call("POST", "/api/hub-events", batch, "Bearer hub-1:hk_wrong");
    CHECK(wrong.status == 401);
    CHECK(f.call("POST", "/api/hub-events", batch, "Bearer backend-1:" + f.backend_key).status == 401);
    CHECK(f.audit_count(audit_kind::security_event, "hub_auth", "denied") == 2);
    CHECK(f.audit_count(audit_kind::authentication, "hub_auth", "denied") == 0);  // nothing of the batch got in

    auto ok = f.call("POST", "/api/hub-events", batch, f.hub_auth());
    CHECK(ok.status == 200);
    CHECK(ok.body == R"({"success":true,"accepted":2})");
    auto events = f.db.audit().query({std::nullopt, 100});
    REQUIRE(events);
    std::size_t seen = 0;
    for (const auto& e : *events) {
      if (e.actor == "hub:hub-1/conn:7") {
        ++seen;
        CHECK(e.kind == audit_kind::authentication);
        CHECK(e.detail == "bad credentials");
        CHECK(to_unix_seconds(e.at) == now - 5);
      }
      if (e.actor == "hub:hub-1/agent:agent-2") {
        ++seen;
        CHECK(e.kind == audit_kind::security_event);
        CHECK(to_unix_seconds(e.at) == now);  // a clock ahead of ours is not believed
      }
    }
    CHECK(seen == 2);

    const std::string one = R"({"at":1,"kind":"security_event","actor":"a","action":"b","target":"","outcome":"c","detail":""})";
    auto with = [&](const std::string& event) { return std::string(R"({"events":[)") + one + "," + event + "]}"; };
    const std::size_t before = f.db.audit().query({std::nullopt, 1000})->size();
    f.clk.advance(10s);  // a full bucket again
    // Each refusal names the field: the event's index in the batch, then its key.
    struct bad_batch {
      std::string body;
      std::string field;  ///< "" when the body as a whole is wrong
    };
    const bad_batch bad_batches[] = {
        {with(R"({"at":1,"kind":"site_operation","actor":"a","action":"site.create","outcome":"ok"})"), "events[1].action"},
        {with(R"({"at":1,"kind":"administration","actor":"a","action":"b","outcome":"ok"})"), "events[1].kind"},
        {with(R"({"at":1,"kind":"security_event","actor":"a","action":"b","outcome":"c","extra":""})"), "events[1].extra"},
        {with(R"({"at":1,"kind":"security_event","actor":"a","action":"b"})"), "events[1].outcome"},
        {with(R"({"at":-1,"kind":"security_event","actor":"a","action":"b","outcome":"c"})"), "events[1].at"},
        {with(R"({"at":1,"kind":"security_event","actor":"","action":"b","outcome":"c"})"), "events[1].actor"},
        {with(R"({"at":1,"kind":"security_event","actor":")" + std::string(300, 'x') + R"(","action":"b","outcome":"c"})"),
         "events[1].actor"},
        {R"({"events":[1]})", "events[0]"},
        {R"({"events":{}})", "events"},
        {R"({"other":[]})", "other"},
        {R"({"events":[[[[[[]]]]]]})", ""},
        {R"({"events":[],"events":[]})", "events"},
        {R"([])", ""},
    };
    for (const bad_batch& bad : bad_batches) {
      CAPTURE(bad.body);
      f.clk.advance(1s);
      auto r = f.call("POST", "/api/hub-events", bad.body, f.hub_auth());
      CHECK(r.status == 400);
      if (bad.field.empty()) CHECK(r.body.find(R"("field")") == std::string::npos);
      else CHECK(r.body.find(R"(: )" + bad.field) != std::string::npos);
      if (!bad.field.empty()) CHECK(r.body.find(R"("field":")" + bad.field + "\"}") != std::string::npos);
    }
    std::string many = R"({"events":[)";
    for (int i = 0; i < 101; ++i) many += (i ? "," : "") + one;
    many += "]}";
    f.clk.advance(1s);
    CHECK(f.call("POST", "/api/hub-events", many, f.hub_auth()).status == 400);
    CHECK(f.db.audit().query({std::nullopt, 1000})->size() == before);  // no refused batch left a trace

    // One bucket per hub for all its routes.
    f.clk.advance(10s);
    for (int i = 0; i < 4; ++i) CHECK(f.call("POST", "/api/hub-events", R"({"events":[]})", f.hub_auth()).status == 200);
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", f.agent1_key), f.hub_auth()).status == 429);
  }

  TEST_CASE("verify-agent: a rotated-out key stops verifying once the overlap ends") {
    rest_fixture f;
    const std::string root = f.bearer(f.root);
    auto rotated = f.call("POST", "/api/admin/agents/agent-1/rotate", R"({"overlapSeconds":60})", root);
    CHECK(rotated.status == 200);
    const std::string key = between(rotated.body, R"("key":")", "\"");
    CHECK(starts_with(key, "ak_"));
    CHECK(rotated.body == R"({"success":true,"agentId":"agent-1","key":")" + key + R"("})");
    const std::string verdict = R"({"valid":true,"agentId":"agent-1","grants":["backend-1","backend-2"],"keyCreatedAt":)";
    const std::string created = std::to_string(to_unix_seconds(f.clk.wall_now()));
    const std::string expires = std::to_string(to_unix_seconds(f.clk.wall_now()) + 60);
    const std::string valid = verdict + created + "}";

    f.clk.advance(30s);
    // The old key says when it ends.
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", f.agent1_key), f.hub_auth()).body ==
          verdict + created + R"(,"keyExpiresAt":)" + expires + "}");
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", key), f.hub_auth()).body == valid);
    f.clk.advance(31s);
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", f.agent1_key), f.hub_auth()).body ==
          R"({"valid":false})");
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", key), f.hub_auth()).body == valid);

    // Without overlapSeconds the configured default (3600 s) applies.
    const std::string root2 = f.bearer(f.root);
    auto again = f.call("POST", "/api/admin/agents/agent-1/rotate", {}, root2, "");
    CHECK(again.status == 200);
    const std::string newest = between(again.body, R"("key":")", "\"");
    const std::string newest_created = std::to_string(to_unix_seconds(f.clk.wall_now()));
    f.clk.advance(3599s);
    CHECK(starts_with(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", key), f.hub_auth()).body,
                      valid.substr(0, valid.size() - 1) + R"(,"keyExpiresAt":)"));
    f.clk.advance(2s);
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", key), f.hub_auth()).body == R"({"valid":false})");
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", newest), f.hub_auth()).body ==
          verdict + newest_created + "}");
  }

  TEST_CASE("verify-agent is rate limited per hub, then failed hub logins are charged to the address") {
    rest_config cfg = no_address_limit();
    cfg.verify_agent_rate = rate{1, 3};
    rest_fixture f(cfg);
    const std::string body = f.verify_body("agent-1", f.agent1_key);
    for (int i = 0; i < 3; ++i) CHECK(f.call("POST", "/api/verify-agent", body, f.hub_auth()).status == 200);
    auto limited = f.call("POST", "/api/verify-agent", body, f.hub_auth(), "application/json", "10.9.9.9:1");
    CHECK(limited.status == 429);
    CHECK(limited.body == error_body("Too many requests, slow down"));
    CHECK(limited.header("Retry-After") == "1");
    // Another hub has its own bucket.
    const std::string other = *f.creds.register_principal(principal_kind::hub, "hub-2", {});
    CHECK(f.call("POST", "/api/verify-agent", body, "Bearer hub-2:" + other).status == 200);
    f.clk.advance(1s);
    CHECK(f.call("POST", "/api/verify-agent", body, f.hub_auth()).status == 200);
    CHECK(f.call("POST", "/api/verify-agent", body, f.hub_auth()).status == 429);

    rest_config strict;
    strict.per_address = rate{1, 3};
    rest_fixture g(strict);
    // An authenticated hub is not held back by its address...
    for (int i = 0; i < 10; ++i)
      CHECK(g.call("POST", "/api/verify-agent", body, g.hub_auth(), "application/json", "10.1.1.1:9").status == 200);
    // ...but guessing hub keys is.
    for (int i = 0; i < 3; ++i)
      CHECK(g.call("POST", "/api/verify-agent", body, "Bearer hub-1:hk_guess", "application/json", "10.6.6.6:1").status == 401);
    auto blocked = g.call("POST", "/api/verify-agent", body, "Bearer hub-1:hk_guess", "application/json", "10.6.6.6:2");
    CHECK(blocked.status == 429);
    CHECK(blocked.body == error_body("Too many requests, slow down"));
    CHECK(g.call("POST", "/api/verify-agent", body, g.hub_auth(), "application/json", "10.1.1.1:9").status == 200);
  }

  TEST_CASE("administration is for administrators only") {
    rest_fixture f;
    const std::string alice = f.bearer(f.alice);
    const std::string refused = error_body("Operation not allowed");
    struct admin_call {
      const char* path;
      const char* body;
    };
    const admin_call calls[] = {
        {"/api/admin/agents", R"({"agentId":"agent-9","trustedCommanders":["backend-1"]})"},
        {"/api/admin/agents/agent-1/rotate", R"({"overlapSeconds":0})"},
        {"/api/admin/commanders", R"({"commanderId":"backend-9","agents":["*"]})"},
        {"/api/admin/hubs", R"({"hubId":"hub-9"})"},
    };
    for (const auto& c : calls) {
      CAPTURE(c.path);
      auto r = f.call("POST", c.path, c.body, alice);
      CHECK(r.status == 403);
      CHECK(r.body == refused);
      auto anonymous = f.call("POST", c.path, c.body);
      CHECK(anonymous.status == 401);
      CHECK(anonymous.body == auth_required_body);
    }
    CHECK_FALSE(f.db.credentials().find_principal(principal_kind::agent, "agent-9"));
    CHECK_FALSE(f.db.credentials().find_principal(principal_kind::commander, "backend-9"));
    CHECK_FALSE(f.db.credentials().find_principal(principal_kind::hub, "hub-9"));
    // agent-1's key was not rotated.
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-1", f.agent1_key), f.hub_auth()).body !=
          R"({"valid":false})");
    CHECK(f.audit_count(audit_kind::security_event, "agent.register", "denied") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "agent.rotate", "denied") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "commander.register", "denied") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "hub.register", "denied") == 1);

    // The stored role decides, not the token's claim: a validly signed token saying "admin" for a
    // user who is not one is refused.
    user_record claims_admin = f.alice;
    claims_admin.role = user_role::admin;
    const std::string alice_as_admin = "Bearer " + *f.tokens.issue(claims_admin, f.clk.wall_now());
    CHECK(f.call("POST", "/api/admin/hubs", R"({"hubId":"hub-9"})", alice_as_admin).body == refused);
    CHECK_FALSE(f.db.credentials().find_principal(principal_kind::hub, "hub-9"));
    // A deleted administrator's token no longer works at all.
    const std::string gone_admin = f.bearer(f.root);
    REQUIRE(f.db.users().delete_user(f.root.id));
    CHECK(f.call("POST", "/api/admin/hubs", R"({"hubId":"hub-9"})", gone_admin).body == auth_required_body);
  }

  TEST_CASE("administrators register agents, commanders and hubs, then keys are shown once and never recorded") {
    rest_fixture f;
    const std::string root = f.bearer(f.root);
    auto agent = f.call("POST", "/api/admin/agents", R"({"agentId":"agent-9","trustedCommanders":["backend-1"]})", root);
    CHECK(agent.status == 201);
    const std::string agent_key = between(agent.body, R"("key":")", "\"");
    CHECK(starts_with(agent_key, "ak_"));
    CHECK(agent.body == R"({"success":true,"agentId":"agent-9","key":")" + agent_key + R"("})");
    CHECK(starts_with(f.call("POST", "/api/verify-agent", f.verify_body("agent-9", agent_key), f.hub_auth()).body,
                      R"({"valid":true,"agentId":"agent-9","grants":["backend-1"],"keyCreatedAt":)"));

    auto again = f.call("POST", "/api/admin/agents", R"({"agentId":"agent-9","trustedCommanders":[]})", root);
    CHECK(again.status == 409);
    CHECK(again.body == error_body("Already exists"));
    auto bad_id = f.call("POST", "/api/admin/agents", R"({"agentId":"bad id!","trustedCommanders":[]})", root);
    CHECK(bad_id.status == 400);
    CHECK(bad_id.body == field_error_body("A field has an invalid value: agentId (1 to 128 characters of A-Z a-z 0-9 . _ : -)", "agentId"));
    CHECK(f.call("POST", "/api/admin/agents", R"({"agentId":"agent-8","trustedCommanders":["x y"]})", root).body ==
          field_error_body("A field has an invalid value: trustedCommanders (ids as 1 to 128 characters of A-Z a-z 0-9 . _ : -, or *)", "trustedCommanders"));
    CHECK(f.call("POST", "/api/admin/commanders", R"({"commanderId":"c 1","agents":[]})", root).body ==
          field_error_body("A field has an invalid value: commanderId (1 to 128 characters of A-Z a-z 0-9 . _ : -)", "commanderId"));
    CHECK(f.call("POST", "/api/admin/commanders", R"({"commanderId":"c-1","agents":["a","b c"]})", root).body ==
          field_error_body("A field has an invalid value: agents (ids as 1 to 128 characters of A-Z a-z 0-9 . _ : -, or *)", "agents"));
    CHECK(f.call("POST", "/api/admin/hubs", R"({"hubId":""})", root).body ==
          field_error_body("A field has an invalid value: hubId (1 to 128 characters of A-Z a-z 0-9 . _ : -)", "hubId"));
    CHECK(f.call("POST", "/api/admin/agents", R"({"agentId":"agent-8","trustedCommanders":"backend-1"})", root).body ==
          field_error_body("A field has the wrong type: trustedCommanders (expected an array of strings)", "trustedCommanders"));
    CHECK(f.call("POST", "/api/admin/agents", R"({"agentId":"agent-8","trustedCommanders":[1]})", root).body ==
          field_error_body("A field has the wrong type: trustedCommanders (expected an array of strings)", "trustedCommanders"));
    CHECK(f.call("POST", "/api/admin/agents", R"({"agentId":"agent-8"})", root).body ==
          field_error_body("Message lacks a required field: trustedCommanders", "trustedCommanders"));

    auto unknown = f.call("POST", "/api/admin/agents/ghost/rotate", "{}", root);
    CHECK(unknown.status == 404);
    CHECK(unknown.body == error_body("Not found"));
    CHECK(f.call("POST", "/api/admin/agents/bad%20id/rotate", {}, root).body ==
          field_error_body("A field has an invalid value: agentId (1 to 128 characters of A-Z a-z 0-9 . _ : -)", "agentId"));
    const std::string bad_overlap = field_error_body("A field has an invalid value: overlapSeconds (0 to 31536000 seconds)", "overlapSeconds");
    CHECK(f.call("POST", "/api/admin/agents/agent-9/rotate", R"({"overlapSeconds":-5})", root).body == bad_overlap);
    CHECK(f.call("POST", "/api/admin/agents/agent-9/rotate", R"({"overlapSeconds":31536001})", root).body == bad_overlap);
    CHECK(f.call("POST", "/api/admin/agents/agent-9/rotate", R"({"overlapSeconds":1.5})", root).body ==
          field_error_body("A field has the wrong type: overlapSeconds (expected an integer)", "overlapSeconds"));
    CHECK(f.call("POST", "/api/admin/agents/agent-9/rotate", R"({"overlapSeconds":18446744073709551615})", root).body ==
          field_error_body("A field has an invalid value: overlapSeconds (out of range)", "overlapSeconds"));
    CHECK(f.call("POST", "/api/admin/agents/agent-9/rotate", R"({"overlapSeconds":"60"})", root).body ==
          field_error_body("A field has the wrong type: overlapSeconds (expected an integer)", "overlapSeconds"));

    auto commander = f.call("POST", "/api/admin/commanders", R"({"commanderId":"backend-9","agents":["agent-9"]})", root);
    CHECK(commander.status == 201);
    const std::string commander_key = between(commander.body, R"("key":")", "\"");
    CHECK(starts_with(commander_key, "ck_"));
    CHECK(commander.body == R"({"success":true,"commanderId":"backend-9","key":")" + commander_key + R"("})");
    auto verified = f.creds.verify(principal_kind::commander, "backend-9", commander_key);
    REQUIRE(verified);
    CHECK(verified->grants == std::vector<std::string>{"agent-9"});

    auto hub = f.call("POST", "/api/admin/hubs", R"({"hubId":"hub-9"})", root);
    CHECK(hub.status == 201);
    const std::string hub_key = between(hub.body, R"("key":")", "\"");
    CHECK(starts_with(hub_key, "hk_"));
    CHECK(hub.body == R"({"success":true,"hubId":"hub-9","key":")" + hub_key + R"("})");
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-9", agent_key), "Bearer hub-9:" + hub_key).status == 200);
    CHECK(f.call("POST", "/api/admin/hubs", R"({"hubId":"hub-8","agents":[]})", root).body ==
          field_error_body("Message has an unknown field: agents", "agents"));

    auto rotated = f.call("POST", "/api/admin/agents/agent-9/rotate", R"({"overlapSeconds":0})", root);
    CHECK(rotated.status == 200);
    const std::string rotated_key = between(rotated.body, R"("key":")", "\"");
    CHECK(f.call("POST", "/api/verify-agent", f.verify_body("agent-9", agent_key), f.hub_auth()).body ==
          R"({"valid":false})");

    CHECK(f.audit_count(audit_kind::administration, "agent.register", "ok") == 1);
    CHECK(f.audit_count(audit_kind::administration, "agent.register", "failed") == 3);
    CHECK(f.audit_count(audit_kind::administration, "agent.rotate", "failed") == 3);  // ghost, -5 s and 31536001 s
    CHECK(f.audit_count(audit_kind::administration, "agent.rotate", "ok") == 1);
    CHECK(f.audit_count(audit_kind::administration, "commander.register", "ok") == 1);
    CHECK(f.audit_count(audit_kind::administration, "hub.register", "ok") == 1);
    auto admin_events = f.db.audit().query({audit_kind::administration, 100});
    REQUIRE(admin_events);
    for (const auto& e : *admin_events) CHECK(e.actor == "user:" + f.id_of(f.root));
    CHECK(f.audit_mentions("agent:agent-9"));
    CHECK(f.audit_mentions("commander:backend-9"));
    CHECK(f.audit_mentions("hub:hub-9"));
    for (const std::string& secret : {agent_key, commander_key, hub_key, rotated_key, root.substr(7)}) {
      CHECK_FALSE(f.log.mentions(secret));
      CHECK_FALSE(f.audit_mentions(secret));
    }
  }

  TEST_CASE("administrators review the audit trail newest first, filtered by kind, since and limit") {
    rest_fixture f;
    const std::string root = f.bearer(f.root);
    const long long t0 = to_unix_seconds(f.clk.wall_now()) + 100;  // after everything the fixture recorded
    const auto at = [&](long long dt) { return from_unix_seconds(t0 + dt); };
    REQUIRE(f.db.audit().append({at(0), audit_kind::site_operation, "user:2", "site.create", "site:7", "ok", ""}));
    REQUIRE(f.db.audit().append(
        {at(10), audit_kind::security_event, "user:3", "site.get", "site:7", "denied", "say \"hi\"\n\\"}));
    REQUIRE(f.db.audit().append({at(20), audit_kind::authentication, "addr:10.0.0.9", "login", "user:9", "denied", ""}));
    REQUIRE(f.db.audit().append({at(20), audit_kind::security_event, "hub:hub-1", "verify_agent", "agent:x", "denied", ""}));
    const std::string since = "since=" + std::to_string(t0);
    const auto events = [&](const std::string& query) {
      auto r = f.call("GET", "/api/admin/audit?" + query, {}, root);
      CAPTURE(query);
      CHECK(r.status == 200);
      CHECK(r.content_type == "application/json");
      return r.body;
    };
    const std::string created = R"({"at":)" + std::to_string(t0) +
                                R"(,"kind":"site_operation","actor":"user:2","action":"site.create","target":"site:7","outcome":"ok","detail":""})";
    // A control character is written as \u00XX (protocol::append_json_string).
    const std::string refused = R"({"at":)" + std::to_string(t0 + 10) +
                                R"(,"kind":"security_event","actor":"user:3","action":"site.get","target":"site:7","outcome":"denied","detail":"say \"hi\"\u000a\\"})";
    const std::string login = R"({"at":)" + std::to_string(t0 + 20) +
                              R"(,"kind":"authentication","actor":"addr:10.0.0.9","action":"login","target":"user:9","outcome":"denied","detail":""})";
    const std::string verify = R"({"at":)" + std::to_string(t0 + 20) +
                               R"(,"kind":"security_event","actor":"hub:hub-1","action":"verify_agent","target":"agent:x","outcome":"denied","detail":""})";
    const auto answer = [](std::initializer_list<std::string> items) {
      std::string out = R"({"success":true,"events":[)";
      for (const auto& item : items) out += (out.back() == '[' ? "" : ",") + item;
      return out + "]}";
    };
    // Newest first; of two events in the same second, the later-recorded first.
    CHECK(events(since) == answer({verify, login, refused, created}));
    CHECK(events("kind=security_event&" + since) == answer({verify, refused}));
    CHECK(events(since + "&limit=2&kind=security_event") == answer({verify, refused}));
    CHECK(events("limit=1&" + since) == answer({verify}));
    CHECK(events("since=" + std::to_string(t0 + 11)) == answer({verify, login}));
    CHECK(events("since=" + std::to_string(t0 + 21)) == answer({}));
    CHECK(events("kind=administration&" + since) == answer({}));

    // Without a query: the newest 100 of everything; limit up to 10000.
    for (int i = 0; i < 130; ++i)
      REQUIRE(f.db.audit().append({at(30 + i), audit_kind::site_operation, "user:2", "site.update", "site:7", "ok", ""}));
    const auto count = [](const std::string& body) {
      std::size_t n = 0;
      for (std::size_t i = body.find(R"({"at":)"); i != std::string::npos; i = body.find(R"({"at":)", i + 1)) ++n;
      return n;
    };
    CHECK(count(events("")) == 100);
    CHECK(count(f.call("GET", "/api/admin/audit", {}, root).body) == 100);
    CHECK(count(events("limit=10000&" + since)) == 134);
    CHECK(count(events("limit=10000&kind=site_operation&" + since)) == 131);
    CHECK(starts_with(events("limit=1"), R"({"success":true,"events":[{"at":)" + std::to_string(t0 + 159) + ","));

    // Reading the trail does not write to it.
    const auto before = f.db.audit().query({std::nullopt, 10000});
    REQUIRE(before);
    for (int i = 0; i < 5; ++i) (void)events("");
    CHECK(f.db.audit().query({std::nullopt, 10000})->size() == before->size());
  }

  TEST_CASE("the audit trail is for administrators only and a refused read is a security event") {
    rest_fixture f;
    const std::string alice = f.bearer(f.alice);
    for (const char* target : {"/api/admin/audit", "/api/admin/audit?kind=security_event", "/api/admin/audit?bogus=1"}) {
      CAPTURE(target);
      auto r = f.call("GET", target, {}, alice);
      CHECK(r.status == 403);
      CHECK(r.body == error_body("Operation not allowed"));
      auto anonymous = f.call("GET", target);
      CHECK(anonymous.status == 401);
      CHECK(anonymous.body == auth_required_body);
    }
    CHECK(f.audit_count(audit_kind::security_event, "audit.read", "denied") == 3);
    auto denials = f.db.audit().query({audit_kind::security_event, 10});
    REQUIRE(denials);
    REQUIRE_FALSE(denials->empty());
    CHECK(denials->front().actor == "user:" + f.id_of(f.alice));
    CHECK(denials->front().detail == "not an administrator");

    const std::string root = f.bearer(f.root);
    auto post = f.call("POST", "/api/admin/audit", "{}", root);
    CHECK(post.status == 405);
    CHECK(post.header("Allow") == "GET");
    CHECK(f.call("GET", "/api/admin/audit", "{}", root).body == error_body("Invalid request (this route takes no body)"));
    CHECK(f.call("GET", "/api/admin/audit/1", {}, root).status == 404);
  }

  TEST_CASE("audit review queries: bad values, unknown and repeated parameters are 400, bounds are accepted") {
    rest_fixture f;
    const std::string root = f.bearer(f.root);
    // Each answer names the parameter (when it is a plain name) and what it takes.
    struct bad_query {
      const char* query;
      std::string body;
    };
    const std::string kind = field_error_body("A field has an invalid value: kind (an audit kind)", "kind");
    const std::string limit = field_error_body("A field has an invalid value: limit (1 to 10000)", "limit");
    const std::string since = field_error_body("A field has an invalid value: since (Unix seconds)", "since");
    const bad_query bad[] = {
        {"kind=", kind},
        {"kind=Security_event", kind},
        {"kind=security_event%20", kind},
        {"kind=security_event,authentication", kind},
        {"limit=0", limit},
        {"limit=10001", limit},
        {"limit=-1", limit},
        {"limit=+5", limit},
        {"limit=05", limit},
        {"limit=1.5", limit},
        {"limit=", limit},
        {"limit=%31", limit},
        {"limit=99999999999999999999999", limit},
        {"since=-1", since},
        {"since=4102444801", since},
        {"since=1e9", since},
        {"since= 1", since},
        {"since=18446744073709551616", since},
        {"foo=1", field_error_body("Message has an unknown field: foo", "foo")},
        {"Kind=administration", field_error_body("Message has an unknown field: Kind", "Kind")},
        {"=5", error_body("Message has an unknown field")},  // no name to repeat
        {"k%3Cscript%3E=1", error_body("Message has an unknown field")},  // not a plain name: not repeated
        {"limit=5&kind=administration&page=2", field_error_body("Message has an unknown field: page", "page")},
        {"limit=5&limit=6", field_error_body("Message repeats a key: limit", "limit")},
        {"kind=administration&kind=administration", field_error_body("Message repeats a key: kind", "kind")},
        {"limit", field_error_body("Invalid request: limit (name=value pairs joined by &)", "limit")},
        {"limit=5&", error_body("Invalid request (name=value pairs joined by &)")},
        {"&limit=5", error_body("Invalid request (name=value pairs joined by &)")},
        {"limit=5&&kind=administration", error_body("Invalid request (name=value pairs joined by &)")},
    };
    for (const bad_query& c : bad) {
      CAPTURE(c.query);
      auto r = f.call("GET", std::string("/api/admin/audit?") + c.query, {}, root);
      CHECK(r.status == 400);
      CHECK(r.body == c.body);
    }
    // The review route names its parameters the same way.
    CHECK(f.call("GET", "/api/admin/audit/flagged?unacknowledged=2", {}, root).body ==
          field_error_body("A field has an invalid value: unacknowledged (0 or 1)", "unacknowledged"));
    CHECK(f.call("GET", "/api/admin/audit/flagged?until=x", {}, root).body ==
          field_error_body("A field has an invalid value: until (Unix seconds)", "until"));
    CHECK(f.call("GET", "/api/admin/audit/flagged?actor=", {}, root).body ==
          field_error_body("A field has an invalid value: actor (1 to 256 bytes)", "actor"));
    CHECK(f.call("GET", "/api/admin/audit/flagged?since=1&page=2", {}, root).body ==
          field_error_body("Message has an unknown field: page", "page"));
    CHECK(f.call("POST", "/api/admin/audit/01/ack", {}, root).body ==
          field_error_body("A field has an invalid value: id (a positive decimal without leading zeros)", "id"));
    for (const char* query : {"", "limit=1", "limit=10000", "since=0", "since=4102444800", "kind=site_operation",
                              "kind=security_event", "kind=authentication", "kind=administration",
                              "since=0&kind=administration&limit=9"}) {
      CAPTURE(query);
      auto r = f.call("GET", std::string("/api/admin/audit?") + query, {}, root);
      CHECK(r.status == 200);
      CHECK(starts_with(r.body, R"({"success":true,"events":[)"));
    }
    // An administrator's bad query is not a security event.
    CHECK(f.audit_count(audit_kind::security_event, "audit.read", "denied") == 0);
  }

  TEST_CASE("request bodies: JSON objects only, every field known, typed and unique") {
    rest_fixture f;
    const std::string alice = f.bearer(f.alice);
    struct bad_body {
      std::string body;
      std::string answer;
    };
    const std::string truncated_utf8 = std::string(R"({"username":"al)") + "\xc3" + R"(","password":"p"})";
    const std::string not_an_object = error_body("Invalid request (the body must be a JSON object)");
    const std::string username_type = field_error_body("A field has the wrong type: username (expected a string)", "username");
    const bad_body cases[] = {
        {"not json", error_body("Message is not valid JSON")},
        {"", error_body("Message is not valid JSON")},
        {"   ", error_body("Message is not valid JSON")},
        {R"({"username":"alice","password":"alice-pw"} x)", error_body("Message is not valid JSON")},
        {R"({"username":"alice","password":"alice-pw"}{})", error_body("Message is not valid JSON")},
        {R"({"username":"alice","password":"alice-pw",})", error_body("Message is not valid JSON")},
        {R"({"username":'alice',"password":"alice-pw"})", error_body("Message is not valid JSON")},
        {R"({"username":"alice","username":"root","password":"alice-pw"})", field_error_body("Message repeats a key: username", "username")},
        {R"({"username":"alice","password":"alice-pw","admin":true})", field_error_body("Message has an unknown field: admin", "admin")},
        {R"({"Username":"alice","password":"alice-pw"})", field_error_body("Message has an unknown field: Username", "Username")},
        {R"({"user name":"alice","password":"alice-pw"})", error_body("Message has an unknown field")},  // not repeated
        {R"({")" + std::string(65, 'k') + R"(":"alice","password":"alice-pw"})", error_body("Message has an unknown field")},
        {R"({"username":1,"password":"alice-pw"})", username_type},
        {R"({"username":null,"password":"alice-pw"})", username_type},
        {R"({"username":["alice"],"password":"alice-pw"})", username_type},
        {R"({"username":{"a":"b"},"password":"alice-pw"})", username_type},
        {R"({"username":"alice","password":false})", field_error_body("A field has the wrong type: password (expected a string)", "password")},
        {R"({"username":"alice"})", field_error_body("Message lacks a required field: password", "password")},
        {R"({})", field_error_body("Message lacks a required field: username", "username")},
        {R"(["alice","alice-pw"])", not_an_object},
        {R"("alice")", not_an_object},
        {"42", not_an_object},
        {"null", not_an_object},
        {R"({"username":[[[["alice"]]]],"password":"x"})", error_body("Message is nested too deeply")},
        {truncated_utf8, error_body("Message is not valid UTF-8")},
        {R"({"username":")" + std::string(300, 'a') + R"(","password":"x"})",
         field_error_body("A field is too long: username (at most 256 bytes)", "username")},
    };
    for (const auto& c : cases) {
      CAPTURE(c.body);
      auto r = f.call("POST", "/api/login", c.body);
      CHECK(r.status == 400);
      CHECK(r.body == c.answer);
      // Same rules after authentication.
      CHECK(f.call("POST", "/api/sites", c.body, alice).status == 400);
    }
    // A body on a request that takes none.
    CHECK(f.call("GET", "/api/sites", "{}", alice).body == error_body("Invalid request (this route takes no body)"));
    CHECK(f.call("DELETE", "/api/sites/1", "{}", alice).body == error_body("Invalid request (this route takes no body)"));
    CHECK(f.sites->list(f.alice.id)->empty());
    // None of that was a failed login: Alice is not locked out.
    CHECK(f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})").status == 200);
  }

  TEST_CASE("request bodies: size limit and content type") {
    rest_fixture f;
    const std::string login = R"({"username":"alice","password":"alice-pw"})";
    // Exactly the limit (padded with JSON whitespace) is accepted; one byte more is not.
    std::string full = login + std::string(16 * 1024 - login.size(), ' ');
    CHECK(f.call("POST", "/api/login", full).status == 200);
    full.push_back(' ');
    auto big = f.call("POST", "/api/login", full);
    CHECK(big.status == 413);
    CHECK(big.body == error_body("Message is too large"));
    CHECK(f.call("POST", "/api/sites", full, f.bearer(f.alice)).status == 413);
    CHECK(f.call("POST", "/api/verify-agent", full, f.hub_auth()).status == 413);
    CHECK(f.call("POST", "/api/login", std::string(1 << 20, '[')).status == 413);
    // Also where no body is taken at all, and before any authentication.
    CHECK(f.call("GET", "/api/sites", full, f.bearer(f.alice)).body == error_body("Message is too large"));
    CHECK(f.call("POST", "/api/sites/1/deploy", full, "Bearer x").status == 413);

    for (const char* type : {"", "text/plain", "application/x-www-form-urlencoded", "application/jsonp",
                             "application/json-patch+json", "application/json; charset=latin1",
                             "application/json; charset=utf-16", "text/json", "application/json; nonsense",
                             "multipart/form-data; boundary=x"}) {
      CAPTURE(type);
      auto r = f.call("POST", "/api/login", login, {}, type);
      CHECK(r.status == 415);
      CHECK(r.body == error_body("Content-Type must be application/json"));
    }
    for (const char* type : {"application/json", "application/json; charset=utf-8", "Application/JSON;charset=\"UTF-8\"",
                             " application/json ;  charset=UTF-8 ", "application/json;"}) {
      CAPTURE(type);
      CHECK(f.call("POST", "/api/login", login, {}, type).status == 200);
    }
    // No body, no Content-Type needed.
    CHECK(f.call("GET", "/api/sites", {}, f.bearer(f.alice), "").status == 200);
  }

  TEST_CASE("per-address rate limit: one bucket per client address, ports and /64 prefixes grouped") {
    rest_fixture f(rest_config{});  // 10/s, burst 30
    for (int i = 0; i < 30; ++i) CHECK(f.call("GET", "/api/sites", {}, {}, "", "203.0.113.5:" + std::to_string(1000 + i)).status == 401);
    auto limited = f.call("GET", "/api/sites", {}, {}, "", "203.0.113.5:9999");
    CHECK(limited.status == 429);
    CHECK(limited.body == error_body("Too many requests, slow down"));
    CHECK(limited.header("Retry-After") == "1");
    // The limit comes first: the right password does not get through either, nor do unknown paths.
    CHECK(f.call("POST", "/api/login", R"({"username":"alice","password":"alice-pw"})", {}, "application/json",
                 "203.0.113.5:1").status == 429);
    CHECK(f.call("GET", "/nope", {}, {}, "", "203.0.113.5:1").status == 429);
    CHECK(f.call("GET", "/api/sites", {}, {}, "", "[::ffff:203.0.113.5]:80").status == 429);
    // Health checks are never limited; other addresses have their own bucket.
    CHECK(f.call("GET", "/healthz", {}, {}, "", "203.0.113.5:1").status == 200);
    CHECK(f.call("GET", "/api/sites", {}, {}, "", "203.0.113.6:1").status == 401);

    f.clk.advance(1s);  // 10 tokens
    for (int i = 0; i < 10; ++i) CHECK(f.call("GET", "/api/sites", {}, {}, "", "203.0.113.5:1").status == 401);
    CHECK(f.call("GET", "/api/sites", {}, {}, "", "203.0.113.5:1").status == 429);

    for (int i = 0; i < 30; ++i)
      CHECK(f.call("GET", "/api/sites", {}, {}, "", "[2001:db8:1:2::" + std::to_string(i + 1) + "]:443").status == 401);
    CHECK(f.call("GET", "/api/sites", {}, {}, "", "[2001:db8:1:2:ffff::9]:443").status == 429);
    CHECK(f.call("GET", "/api/sites", {}, {}, "", "[2001:db8:1:3::1]:443").status == 401);
  }

  TEST_CASE("the per-address table is bounded and keeps the addresses seen most recently") {
    rest_config cfg;
    cfg.per_address = rate{1, 2};
    cfg.max_addresses = 100;
    rest_fixture f(cfg);
    const std::string abuser = "198.51.100.1:1";
    CHECK(f.call("GET", "/nope", {}, {}, "", abuser).status == 404);
    CHECK(f.call("GET", "/nope", {}, {}, "", abuser).status == 404);
    CHECK(f.call("GET", "/nope", {}, {}, "", abuser).status == 429);
    for (int i = 0; i < 1000; ++i) {
      CHECK(f.call("GET", "/nope", {}, {}, "", "10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256)).status == 404);
      if (i % 50 == 0) CHECK(f.call("GET", "/nope", {}, {}, "", abuser).status == 429);  // still remembered
      CHECK(f.api->tracked_addresses() <= 100);
    }
    CHECK(f.api->tracked_addresses() == 100);
  }

  TEST_CASE("client address keys") {
    CHECK(client_address_key("10.0.0.1:5000") == "10.0.0.1");
    CHECK(client_address_key("10.0.0.1") == "10.0.0.1");
    CHECK(client_address_key("[::ffff:10.0.0.1]:5000") == "10.0.0.1");
    CHECK(client_address_key("::ffff:a00:1") == "10.0.0.1");
    CHECK(client_address_key("[2001:db8:1:2:3:4:5:6]:443") == "2001:db8:1:2::/64");
    CHECK(client_address_key("2001:DB8:1:2::7") == "2001:db8:1:2::/64");
    CHECK(client_address_key("[::1]:80") == "0:0:0:0::/64");
    CHECK(client_address_key("[fe80::1%eth0]:22") == "fe80:0:0:0::/64");
    CHECK(client_address_key("") == "unknown");
    CHECK(client_address_key("[]:80") == "unknown");
    CHECK(client_address_key("backend.internal") == "backend.internal");
    CHECK(client_address_key("1::2::3") == "1::2::3");
    CHECK(client_address_key("1:2:3:4:5:6:7:8:9") == "1:2:3:4:5:6:7:8:9");
    CHECK(client_address_key("256.0.0.1:80") == "256.0.0.1");
    CHECK(client_address_key(std::string(200, 'x')) == std::string(64, 'x'));
  }

  TEST_CASE("administrators list flagged events, filter them and acknowledge them; the ack is audited") {
    rest_fixture f;
    const std::string root = f.bearer(f.root);
    const long long t0 = to_unix_seconds(f.clk.wall_now()) + 100;
    REQUIRE(f.db.audit().append({from_unix_seconds(t0), audit_kind::security_event, "agent:a1", "unknown_request",
                                 "request:b/r1", "dropped", ""}));
    REQUIRE(f.db.audit().append({from_unix_seconds(t0 + 5), audit_kind::site_operation, "user:2", "site.create",
                                 "site:7", "ok", ""}));
    const auto newest = f.db.audit().review(audit_review_query{});
    REQUIRE(newest);
    REQUIRE_FALSE(newest->empty());
    const std::int64_t id = newest->front().id;  // the unknown_request event
    CHECK(newest->front().event.action == "unknown_request");
    const std::uint64_t open_before = *f.db.audit().count_unacknowledged();

    auto listed = f.call("GET", "/api/admin/audit/flagged?actor=agent:a1&unacknowledged=1", {}, root);
    CHECK(listed.status == 200);
    CHECK(listed.body == R"({"success":true,"unacknowledged":)" + std::to_string(open_before) + R"(,"events":[{"id":)" +
                             std::to_string(id) + R"(,"at":)" + std::to_string(t0) +
                             R"(,"kind":"security_event","actor":"agent:a1","action":"unknown_request","target":"request:b/r1","outcome":"dropped","detail":""}]})");
    for (const char* bad : {"?limit=0", "?unacknowledged=yes", "?actor=a&actor=b", "?bogus=1", "?since=x", "?kind=nope"}) {
      CAPTURE(bad);
      CHECK(f.call("GET", std::string("/api/admin/audit/flagged") + bad, {}, root).status == 400);
    }

    auto acked = f.call("POST", "/api/admin/audit/" + std::to_string(id) + "/ack", {}, root);
    CHECK(acked.status == 200);
    CHECK(acked.body == R"({"success":true,"id":)" + std::to_string(id) + "}");
    CHECK(*f.db.audit().count_unacknowledged() == open_before - 1);
    CHECK(f.call("POST", "/api/admin/audit/" + std::to_string(id) + "/ack", {}, root).status == 409);
    CHECK(f.call("POST", "/api/admin/audit/" + std::to_string(id + 1) + "/ack", {}, root).status == 404);  // not flagged
    CHECK(f.call("POST", "/api/admin/audit/x1/ack", {}, root).status == 400);
    auto after = f.call("GET", "/api/admin/audit/flagged?actor=agent:a1", {}, root);
    CHECK(after.body.find(R"("acknowledged_by":"user:)" + std::to_string(f.root.id.value()) + "\"") != std::string::npos);
    // The acknowledgement is in the chain, and the chain is intact.
    CHECK(f.audit_count(audit_kind::administration, "audit.ack", "ok") == 1);
    auto report = verify_audit_trail(f.db.audit());
    REQUIRE(report);
    CHECK(report->intact());
  }

  TEST_CASE("flagged events and acknowledgements are for administrators only") {
    rest_fixture f;
    const std::string alice = f.bearer(f.alice);
    CHECK(f.call("GET", "/api/admin/audit/flagged", {}, alice).status == 403);
    CHECK(f.call("POST", "/api/admin/audit/1/ack", {}, alice).status == 403);
    CHECK(f.call("GET", "/api/admin/audit/flagged").status == 401);
    CHECK(f.audit_count(audit_kind::security_event, "audit.ack", "denied") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "audit.read", "denied") == 1);
  }

  TEST_CASE("rest_route_pattern: the route's pattern for metric labels, never the raw path or query") {
    CHECK(rest_route_pattern("/api/sites/42") == "/api/sites/:id");
    CHECK(rest_route_pattern("/api/sites/42/deploy?x=1") == "/api/sites/:id/deploy");
    CHECK(rest_route_pattern("/api/admin/agents/agent-7/rotate") == "/api/admin/agents/:agentId/rotate");
    CHECK(rest_route_pattern("/api/admin/audit?actor=user:1") == "/api/admin/audit");
    CHECK(rest_route_pattern("/metrics") == "/metrics");
    CHECK(rest_route_pattern("/api/sites/1/deploy/now") == "unmatched");
    CHECK(rest_route_pattern("/etc/passwd") == "unmatched");
  }
}
