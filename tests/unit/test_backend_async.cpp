// The backend with storage that answers late (citrus::memory's manual executor): what the event loop
// does while the database has not answered yet. Storage runs off the loop in citrus-backend; these
// tests pin down the promises of storage_executor.hpp from the backend's side: one session's
// messages keep their order, reads do not wait for a held write, other users are served meanwhile,
// a full queue answers at once, and an answer that arrives for a closed session or a destroyed
// backend is dropped without harm.
#include <doctest/doctest.h>

#include "citrus/memory/storage_executors.hpp"
#include "platform_fixture.hpp"

using namespace citrus;
using namespace citrus::testing;

namespace {

std::string status_of(std::string_view id, std::int64_t site) {
  return user_command(id, "site.status", R"({"site_id":)" + std::to_string(site) + "}");
}

std::string create_command(std::string_view id, std::string_view name) {
  return user_command(id, "site.create", R"({"name":")" + std::string(name) + R"(","url":"https://example.test/"})");
}

}  // namespace

TEST_SUITE("backend_async") {
  TEST_CASE("one session's messages wait their turn; reads and other users do not wait for a held write") {
    platform_fixture f({}, true);
    const site_record bobs = f.make_site(f.bob, "bobs");
    auto [alice, alice_end] = f.user_socket(f.alice);
    auto [bob, bob_end] = f.user_socket(f.bob);

    f.hold_storage = true;
    alice->send(create_command("c1", "first"));
    alice->send(status_of("s1", bobs.id.value()));  // waits behind c1, even though it only reads
    f.run();
    CHECK(alice->messages.empty());
    CHECK(f.manual_lanes.pending(storage_lane::read) == 1);  // c1's user lookup
    REQUIRE(f.manual_lanes.run_one(storage_lane::read));
    f.run();
    CHECK(f.manual_lanes.pending(storage_lane::write) == 1);  // c1's insert, now held
    CHECK(alice->messages.empty());

    // Bob is served while alice's write is held: his lookup and his read run on the read lane.
    bob->send(status_of("b1", bobs.id.value()));
    f.run();
    while (f.manual_lanes.run_one(storage_lane::read)) f.run();
    REQUIRE(bob->messages.size() == 1);
    CHECK(contains(bob->messages[0], R"("id":"b1")"));
    CHECK(contains(bob->messages[0], R"("status":"ok")"));
    CHECK(alice->messages.empty());
    CHECK(f.manual_lanes.pending(storage_lane::write) == 1);

    // The write runs: alice gets c1's answer, then s1's, in the order she sent them.
    f.hold_storage = false;
    f.run();
    REQUIRE(alice->messages.size() >= 2);
    CHECK(contains(alice->messages[0], R"("id":"c1")"));
    CHECK(contains(alice->messages[0], R"("type":"accepted")"));
    CHECK(contains(alice->messages[1], R"("id":"s1","code":"unauthorized_access")"));  // bob's site
    CHECK(alice_end->is_open());
    CHECK(bob_end->is_open());
  }

  TEST_CASE("progress that arrives before the command's answer is held until `accepted` has gone out") {
    platform_fixture f({}, true);
    const site_record site = f.make_site(f.alice, "mine");
    auto [alice, end] = f.user_socket(f.alice);
    f.hold_storage = true;
    alice->send(user_command("d1", "site.deploy", R"({"site_id":)" + std::to_string(site.id.value()) + "}"));
    f.run();
    // Lookup, then the owner check: the command goes to the agent, which answers progress at once,
    // while the backend's "deploying" write still waits.
    while (f.manual_lanes.run_one(storage_lane::read)) f.run();
    REQUIRE(f.manual_lanes.run_one(storage_lane::write));  // owned(): the command is sent now
    f.run();
    CHECK(alice->messages.empty());  // two progress updates arrived, and wait
    f.hold_storage = false;
    f.run();
    REQUIRE(alice->messages.size() == 4);
    CHECK(contains(alice->messages[0], R"("type":"accepted")"));
    CHECK(contains(alice->messages[1], R"("type":"progress")"));
    CHECK(contains(alice->messages[2], R"("type":"progress")"));
    CHECK(contains(alice->messages[3], R"("type":"result")"));
    CHECK(contains(alice->messages[3], R"("deploy_status":"deployed")"));
    CHECK(f.backend->sites().in_flight() == 0);
  }

  TEST_CASE("a session that closes while its command waits: before the site call nothing runs; after it the operation stands") {
    platform_fixture f({}, true);
    auto [alice, end] = f.user_socket(f.alice);
    f.hold_storage = true;
    alice->send(create_command("c0", "never"));
    f.run();
    end->close(close_code::going_away, "tab closed");  // still waiting for its user lookup
    f.hold_storage = false;
    f.run();
    CHECK(f.db.sites().list_sites(f.alice.id)->empty());

    auto [tab, tab_end] = f.user_socket(f.alice);
    f.hold_storage = true;
    tab->send(create_command("c1", "orphan"));
    f.run();
    REQUIRE(f.manual_lanes.run_one(storage_lane::read));  // the lookup: the insert is queued now
    f.run();
    tab_end->close(close_code::going_away, "tab closed");
    f.run();
    f.hold_storage = false;
    f.run();
    auto sites = f.db.sites().list_sites(f.alice.id);
    REQUIRE(sites);
    REQUIRE(sites->size() == 1);
    CHECK((*sites)[0].deploy_status == "created");  // the agent ran it; the result had nobody to go to
    // The id stays held for alice: another tab repeating it runs nothing.
    auto [again, again_end] = f.user_socket(f.alice);
    again->send(create_command("c1", "orphan"));
    f.run();
    REQUIRE(again->messages.size() == 1);
    CHECK(contains(again->messages[0], "duplicate_request"));
  }

  TEST_CASE("a full storage queue answers at once: 503 over REST, storage_unavailable on the socket") {
    platform_fixture f;
    memory::manual_storage_executor full(f.db, 0);  // refuses everything, as a full storage_worker does
    login_service login(login_config{}, full, f.tokens, f.clk);
    rest_config cfg;
    cfg.per_address = rate{0, 0};
    rest_api api(cfg, rest_services{full, f.backend->sites(), login, f.tokens, f.clk, f.random, f.log, {}});
    const std::string bearer = "Bearer " + *f.tokens.issue(f.alice, f.clk.wall_now());
    auto r = handle_now(api, http_request{"GET", "/api/sites", {}, "10.0.0.1:1", bearer, {}});
    CHECK(r.status == 503);
    r = handle_now(api, http_request{"POST", "/api/login", R"({"username":"alice","password":"alice-pw"})", "10.0.0.1:1",
                                     {}, "application/json"});
    CHECK(r.status == 503);
    CHECK(handle_now(api, http_request{"GET", "/healthz", {}, "10.0.0.1:1", {}, {}}).status == 200);  // touches nothing

    user_gateway gateway(user_gateway_config{}, f.tokens, full, f.ops, f.clk, f.log, f.db.audit());
    memory::loopback_transport net(gateway);
    memory::recording_client ws;
    auto& end = net.connect(ws);
    net.run();
    ws.send(R"({"v":1,"type":"auth","token":")" + *f.tokens.issue(f.alice, f.clk.wall_now()) + R"("})");
    net.run();
    REQUIRE(ws.messages.size() == 1);
    CHECK(contains(ws.messages[0], "storage_unavailable"));
    CHECK(end.is_open());  // not the user's fault
  }

  TEST_CASE("answers that arrive after the backend is gone are dropped") {
    platform_fixture f({}, true);
    auto [alice, end] = f.user_socket(f.alice);
    f.hold_storage = true;
    alice->send(create_command("c1", "late"));
    bool answered = false;
    f.backend->rest().handle(http_request{"GET", "/api/sites", {}, "10.0.0.1:1",
                                          "Bearer " + *f.tokens.issue(f.alice, f.clk.wall_now()), {}},
                             [&](http_response) { answered = true; });
    f.run();
    CHECK(f.manual_lanes.pending() > 0);
    end->close(close_code::going_away, "bye");
    f.run();
    f.backend.reset();  // the services go; their work stays queued
    CHECK(f.manual_lanes.run_all() > 0);
    CHECK_FALSE(answered);
  }

  TEST_CASE("a session cannot queue without bound while it waits for storage") {
    user_gateway_config cfg;
    cfg.max_waiting_messages = 3;
    cfg.message_rate = rate{0, 0};
    platform_fixture f(cfg, true);
    auto [alice, end] = f.user_socket(f.alice);
    f.hold_storage = true;
    for (int i = 0; i < 6; ++i) alice->send(status_of("s" + std::to_string(i), 1));
    f.run();
    // s0 waits for storage, s1..s3 wait behind it, s4 and s5 are refused at once.
    REQUIRE(alice->messages.size() == 2);
    CHECK(count_with(*alice, "rate_limited") == 2);
    f.hold_storage = false;
    f.run();
    CHECK(count_with(*alice, "unauthorized_access") == 4);
  }
}
