#include <doctest/doctest.h>
#include <simdjson.h>

#include "platform_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

TEST_SUITE("site_service") {
  TEST_CASE("every query is scoped to the caller, then another user's site and a missing one get the same answer") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    f.make_site(f.bob, "bob-site");

    auto mine = f.sites->list(f.alice.id);
    REQUIRE(mine);
    REQUIRE(mine->size() == 1);
    CHECK((*mine)[0].name == "alice-site");

    const auto unauthorized = make_error_code(errc::unauthorized_access);
    CHECK(f.sites->get(f.bob.id, a.id).error() == unauthorized);
    CHECK(f.sites->get(f.bob.id, site_id{999}).error() == unauthorized);
    CHECK(f.sites->update(f.bob.id, a.id, site_changes{std::string("pwned"), std::nullopt}).error() == unauthorized);
    CHECK(f.sites->remove(f.bob.id, a.id).error() == unauthorized);
    CHECK(f.sites->deploy(f.bob.id, a.id, "v2").error() == unauthorized);
    CHECK(public_message(errc::unauthorized_access) == "Unauthorized access");

    auto still = f.sites->get(f.alice.id, a.id);
    REQUIRE(still);
    CHECK(still->name == "alice-site");
    CHECK(still->deploy_status == "created");
    auto denied = f.db.audit().query({audit_kind::security_event, 100});
    REQUIRE(denied);
    CHECK(denied->size() == 5);
    CHECK((*denied)[0].actor == "user:" + std::to_string(f.bob.id.value()));
  }

  TEST_CASE("a deploy persists deploy_status, deployer_id and last_deploy_date from the agent's updates") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    f.clk.advance(90s);
    auto request = f.sites->deploy(f.alice.id, a.id, "v7");
    REQUIRE(request);
    f.run();
    auto site = f.sites->get(f.alice.id, a.id);
    REQUIRE(site);
    CHECK(site->deploy_status == "deployed");
    CHECK(site->deployer_id == "agent-1");
    REQUIRE(site->last_deploy_date);
    CHECK(*site->last_deploy_date == f.clk.wall_now());
    auto ops = f.db.audit().query({audit_kind::site_operation, 100});
    REQUIRE(ops);
    CHECK((*ops)[0].action == "site.deploy");
    CHECK((*ops)[0].outcome == "ok");
  }

  TEST_CASE("input is validated before anything is stored or sent, and the error names the field") {
    platform_fixture f;
    const auto bad_name = make_error_code(errc::invalid_site_name);
    const auto bad_url = make_error_code(errc::invalid_site_url);
    CHECK(f.sites->create(f.alice.id, site_input{"", "https://x.test"}).error() == bad_name);
    CHECK(f.sites->create(f.alice.id, site_input{std::string(101, 'n'), "https://x.test"}).error() == bad_name);
    CHECK(f.sites->create(f.alice.id, site_input{"tab\there", "https://x.test"}).error() == bad_name);
    CHECK(f.sites->create(f.alice.id, site_input{"ok", "javascript:alert(1)"}).error() == bad_url);
    CHECK(f.sites->list(f.alice.id)->empty());
    CHECK(f.agent->running() == 0);
    const site_record kept = f.make_site(f.alice, "kept");
    CHECK(f.sites->update(f.alice.id, kept.id, site_changes{std::nullopt, std::string("https://")}).error() == bad_url);
    CHECK(f.sites->get(f.alice.id, kept.id)->url == kept.url);  // nothing stored
    // Over the WebSocket the same codes, with the same messages.
    auto [ws, end] = f.user_socket(f.alice);
    ws->send(user_command("u1", "site.create", R"({"name":"x","url":"http://a b"})"));
    ws->send(user_command("u2", "site.create", R"({"name":"tab\there","url":"https://x.test"})"));
    f.run();
    REQUIRE(ws->messages.size() == 2);
    CHECK(contains(ws->messages[0], R"("id":"u1","code":"invalid_site_url")"));
    CHECK(contains(ws->messages[1], R"("id":"u2","code":"invalid_site_name")"));
  }

  TEST_CASE("site addresses: an http(s) URL with a host, nothing a link could be misread from") {
    // One list for the server and the dashboard's own check (tests/e2e/dashboard.test.mjs).
    const std::string path = std::string(CITRUS_SOURCE_DIR) + "/tests/site_urls.json";
    simdjson::padded_string text;
    REQUIRE_MESSAGE(simdjson::padded_string::load(path).get(text) == simdjson::SUCCESS, path);
    simdjson::dom::parser parser;
    simdjson::dom::element cases;
    REQUIRE(parser.parse(text).get(cases) == simdjson::SUCCESS);
    std::size_t checked = 0;
    for (const bool valid : {true, false}) {
      simdjson::dom::array list;
      REQUIRE(cases[valid ? "valid" : "invalid"].get(list) == simdjson::SUCCESS);
      for (auto item : list) {
        std::string_view url;
        REQUIRE(item.get(url) == simdjson::SUCCESS);
        CAPTURE(url);
        const auto verdict = validate_site_input("n", url);
        if (valid) CHECK(verdict);
        else CHECK(verdict.error() == make_error_code(errc::invalid_site_url));
        ++checked;
      }
    }
    CHECK(checked >= 40);
  }

  TEST_CASE("the agent disconnecting mid-deploy fails the deploy for the owner and marks the site failed") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    auto [ws, end] = f.user_socket(f.alice);
    f.hold_deploys = true;
    REQUIRE(f.sites->deploy(f.alice.id, a.id, ""));
    f.run();
    CHECK(count_with(*ws, R"("type":"progress")") == 2);
    CHECK(f.sites->get(f.alice.id, a.id)->deploy_status == "deploying");
    f.agent_end->close(close_code::going_away, "agent killed");
    f.run();
    CHECK(count_with(*ws, R"("status":"failed")") == 1);
    CHECK(count_with(*ws, R"("code":"agent_disconnected")") == 1);
    CHECK(f.sites->get(f.alice.id, a.id)->deploy_status == "failed");
    CHECK(f.link->in_flight() == 0);
  }

  TEST_CASE("losing the hub fails every request in flight, and new deploys say the hub is unavailable") {
    platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    f.hold_deploys = true;
    REQUIRE(f.sites->deploy(f.alice.id, a.id, ""));
    f.run();
    CHECK(f.link->in_flight() == 1);
    f.link_end->close(close_code::going_away, "hub restarting");
    f.run();
    CHECK_FALSE(f.link->online());
    CHECK(f.link->in_flight() == 0);
    CHECK(f.sites->get(f.alice.id, a.id)->deploy_status == "failed");
    CHECK(f.sites->deploy(f.alice.id, a.id, "").error() == make_error_code(errc::hub_unavailable));
    // The backend reconnects: commands work again.
    f.link_end = &f.net->connect(*f.link);
    f.run();
    REQUIRE(f.link->online());
    f.hold_deploys = false;
    REQUIRE(f.sites->deploy(f.alice.id, a.id, ""));
    f.run();
    CHECK(f.sites->get(f.alice.id, a.id)->deploy_status == "deployed");
  }

  TEST_CASE("each change names the agent's request, or why the agent was not told; what was stored stays stored") {
    platform_fixture f;
    auto created = f.sites->create(f.alice.id, site_input{"a", "https://a.test"});
    REQUIRE(created);
    REQUIRE(created->request);
    CHECK(created->not_sent == errc::ok);
    CHECK(created->site.deploy_status == "creating");
    auto updated = f.sites->update(f.alice.id, created->site.id, site_changes{std::string("b"), std::nullopt});
    REQUIRE(updated);
    REQUIRE(updated->request);
    CHECK(*updated->request != *created->request);
    auto deployed = f.sites->deploy(f.alice.id, created->site.id, "v1");
    REQUIRE(deployed);
    REQUIRE(deployed->request);
    CHECK(deployed->site.deploy_status == "deploying");
    f.run();

    f.link_end->close(close_code::going_away, "hub restarting");
    f.run();
    const site_record kept = f.make_site(f.alice, "kept");
    CHECK(kept.deploy_status == "failed");  // the agent never made it
    auto offline_update = f.sites->update(f.alice.id, kept.id, site_changes{std::string("renamed"), std::nullopt});
    REQUIRE(offline_update);
    CHECK_FALSE(offline_update->request);
    CHECK(offline_update->not_sent == errc::hub_unavailable);
    CHECK(f.sites->get(f.alice.id, kept.id)->name == "renamed");
    auto offline_delete = f.sites->remove(f.alice.id, kept.id);
    REQUIRE(offline_delete);
    CHECK_FALSE(offline_delete->request);
    CHECK(offline_delete->not_sent == errc::hub_unavailable);
    CHECK(offline_delete->site.id == kept.id);
    CHECK_FALSE(f.sites->get(f.alice.id, kept.id));
  }

  TEST_CASE("a storage failure is reported and nothing is sent") {
    platform_fixture f;
    f.db.fail_next_writes(1);
    auto site = f.sites->create(f.alice.id, site_input{"x", "https://x.test"});
    CHECK(site.error() == make_error_code(errc::storage_unavailable));
    f.run();
    CHECK(f.hub().counters().routed == 0);
  }

  TEST_CASE("site JSON escapes what users typed") {
    site_record s;
    s.id = site_id{3};
    s.name = "a\"b</script>";
    s.url = "https://x.test/\\";
    s.owner = user_id{9};
    s.agent = agent_id{"agent-1"};
    std::string out;
    append_site_json(out, s);
    CHECK(contains(out, R"("name":"a\"b</script>")"));
    CHECK(contains(out, R"("url":"https://x.test/\\")"));
    CHECK(contains(out, R"("last_deploy_date":null)"));
  }

  TEST_CASE("commander link: backoff grows with full jitter and is capped") {
    memory::seeded_random random(3);
    backoff b(100ms, 2s, random);
    for (int i = 0; i < 30; ++i) {
      auto d = b.next();
      CHECK(d >= 0ms);
      CHECK(d <= 2s);
    }
    b.reset();
    CHECK(b.next() <= 100ms);
  }
}

TEST_SUITE("login") {
  TEST_CASE("login issues a token, then wrong passwords and unknown names get the same answer") {
    platform_fixture f;
    login_service service({}, f.storage, f.tokens, f.clk);
    logins_now login{service};
    auto ok = login.login("alice", "alice-pw", "10.0.0.1");
    REQUIRE(ok.outcome);
    CHECK(ok.outcome->claims.user == f.alice.id);
    CHECK(ok.hold_back == 0ms);
    CHECK(login.login("alice", "nope", "10.0.0.2").outcome.error() == make_error_code(errc::auth_failed));
    CHECK(login.login("nobody", "nope", "10.0.0.2").outcome.error() == make_error_code(errc::auth_failed));
    CHECK(f.audit_count(audit_kind::authentication, "login", "denied") == 2);
  }

  TEST_CASE("two backends on one database: their login throttles add up, and the owner still logs in elsewhere") {
    platform_fixture f;
    login_service first({}, f.storage, f.tokens, f.clk), second({}, f.storage, f.tokens, f.clk);  // one database
    logins_now one{first}, two{second};
    // A guesser alternating between the two backends: 5 wrong passwords in all lock the pair on both,
    // though neither backend saw 5 itself.
    for (int i = 0; i < 5; ++i) {
      auto& backend = i % 2 == 0 ? one : two;
      CHECK(backend.login("alice", "guess-" + std::to_string(i), "10.0.0.66").outcome.error() == make_error_code(errc::auth_failed));
    }
    for (auto* backend : {&one, &two}) {
      const login_attempt locked = backend->login("alice", "alice-pw", "10.0.0.66");
      CHECK(locked.outcome.error() == make_error_code(errc::account_locked));
    }
    CHECK(two.login("alice", "alice-pw", "10.0.0.66").retry_after >= 1s);  // Retry-After, though locked by the other
    // The name's hold-back counts both backends' failures too (5 >= 3: 1 s, doubled twice).
    auto owner = two.login("alice", "alice-pw", "192.0.2.10");
    REQUIRE(owner.outcome);
    CHECK(owner.hold_back == 4s);
    // The pair's lock ends once its failures are older than the window, on every backend.
    f.clk.advance(301s);
    CHECK(one.login("alice", "alice-pw", "10.0.0.66").outcome);
  }

  TEST_CASE("wrong passwords from one address lock that name from that address only: the owner logs in from another at once") {
    platform_fixture f;
    login_service service({}, f.storage, f.tokens, f.clk);
    logins_now login{service};
    for (int i = 0; i < 5; ++i)
      CHECK(login.login("alice", "guess-" + std::to_string(i), "10.0.0.66").outcome.error() == make_error_code(errc::auth_failed));
    // The stranger locked himself out: even the right password from his address is refused, unverified.
    const login_attempt stranger = login.login("alice", "alice-pw", "10.0.0.66");
    CHECK(stranger.outcome.error() == make_error_code(errc::account_locked));
    CHECK(stranger.hold_back == 0ms);
    CHECK(login.locked_for("alice", "10.0.0.66") == 300s);
    // Alice, from her own address, right away: in, with her answer held back by the name's recent failures.
    const login_attempt owner = login.login("alice", "alice-pw", "10.0.0.1");
    REQUIRE(owner.outcome);
    CHECK(owner.outcome->claims.user == f.alice.id);
    CHECK(owner.hold_back == 4s);  // 5 failures: 1 s at the 3rd, doubled twice
    CHECK(login.locked_for("alice", "10.0.0.1") == 0s);
    // Bob, from the stranger's address: that address has failed 5 times, below its own limit of 20.
    CHECK(login.login("bob", "bob-pw", "10.0.0.66").outcome);
    CHECK(f.audit_count(audit_kind::authentication, "login", "denied") == 6);  // every failure, and the refusal
    CHECK(f.audit_count(audit_kind::security_event, "login_lockout", "locked") == 1);
    CHECK(f.audit_count(audit_kind::security_event, "login_throttled", "flagged") == 1);
    f.clk.advance(301s);
    CHECK(login.login("alice", "alice-pw", "10.0.0.66").outcome);
  }

  TEST_CASE("guessing one name from many addresses: every answer is held back, more with each failure, capped, never a lock") {
    platform_fixture f;
    login_service service({}, f.storage, f.tokens, f.clk);
    logins_now login{service};
    const std::chrono::milliseconds expected[] = {0ms, 0ms, 0ms, 1s, 2s, 4s, 8s, 8s, 8s, 8s};
    for (std::size_t i = 0; i < std::size(expected); ++i) {
      CAPTURE(i);
      const login_attempt guess = login.login("alice", "guess", "10.1.0." + std::to_string(i));
      CHECK(guess.outcome.error() == make_error_code(errc::auth_failed));
      CHECK(guess.hold_back == expected[i]);
    }
    // The right password, from a fresh address, is held back exactly as long as a wrong one: no oracle.
    CHECK(login.hold_back("alice") == 8s);
    const login_attempt owner = login.login("alice", "alice-pw", "10.2.0.1");
    REQUIRE(owner.outcome);
    CHECK(owner.hold_back == 8s);
    CHECK(login.hold_back("bob") == 0ms);  // other names are not slowed
    // An unknown name is counted like a real one, so holding back tells nothing about which names exist.
    for (int i = 0; i < 4; ++i) (void)login.login("nobody", "guess", "10.3.0." + std::to_string(i));
    CHECK(login.hold_back("nobody") == 2s);
    CHECK(f.audit_count(audit_kind::security_event, "login_throttled", "flagged") == 2);  // once per name and window
    CHECK(f.audit_count(audit_kind::security_event, "login_lockout", "locked") == 0);
    // The count lives 15 minutes from the first failure.
    f.clk.advance(901s);
    CHECK(login.hold_back("alice") == 0ms);
    CHECK(login.login("alice", "alice-pw", "10.2.0.1").hold_back == 0ms);
  }

  TEST_CASE("an address guessing many names locks itself out for every name, and no other address") {
    platform_fixture f;
    login_service service({}, f.storage, f.tokens, f.clk);
    logins_now login{service};
    for (int i = 0; i < 20; ++i) (void)login.login("user-" + std::to_string(i), "guess", "10.0.0.66");
    CHECK(login.login("bob", "bob-pw", "10.0.0.66").outcome.error() == make_error_code(errc::account_locked));
    CHECK(login.locked_for("bob", "10.0.0.66") == 300s);
    CHECK(login.login("bob", "bob-pw", "10.0.0.2").outcome);
    CHECK(f.audit_count(audit_kind::security_event, "login_lockout", "locked") == 1);
  }

  TEST_CASE("refresh gives a new token to a live session and refuses a deleted user") {
    platform_fixture f;
    login_service service({}, f.storage, f.tokens, f.clk);
    logins_now login{service};
    auto ok = login.login("bob", "bob-pw", "x").outcome;
    REQUIRE(ok);
    f.clk.advance(60s);
    auto fresh = login.refresh(ok->token);
    REQUIRE(fresh);
    CHECK(fresh->claims.expires_at > ok->claims.expires_at);
    REQUIRE(f.db.users().delete_user(f.bob.id));
    CHECK(login.refresh(fresh->token).error() == make_error_code(errc::auth_failed));
  }
}
