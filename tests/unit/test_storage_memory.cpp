// citrus::memory::memory_storage: the storage conformance suite, plus its fault injection.
#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "storage_conformance.hpp"

namespace {

using citrus::errc;
using namespace std::chrono_literals;

std::unique_ptr<citrus::storage> make_memory_storage() { return std::make_unique<citrus::memory::memory_storage>(); }

/// A storage with one of everything, so every write below has something to act on.
struct seeded {
  citrus::memory::manual_clock clock;
  citrus::memory::memory_storage store;
  citrus::user_record alice;
  citrus::site_record site;

  seeded() {
    alice = citrus::conformance::make_user(store, "alice", clock.wall_now());
    site = citrus::conformance::make_site(store, alice.id, "blog", clock.wall_now());
    REQUIRE(store.credentials().create_principal(citrus::conformance::make_principal(
        citrus::principal_kind::agent, "a1", clock.wall_now(), {citrus::conformance::make_key("h1", clock.wall_now())},
        {"c1"})));
    REQUIRE(store.audit().append(
        citrus::conformance::make_event(clock.wall_now(), citrus::audit_kind::site_operation, "site.create")));
    clock.advance(1min);
  }
};

struct write_op {
  const char* name;
  std::function<std::error_code(seeded&)> run;
};

std::vector<write_op> every_write() {
  using namespace citrus;
  return {
      {"create_user",
       [](seeded& s) { return s.store.users().create_user("bob", "h", user_role::user, s.clock.wall_now()).error(); }},
      {"delete_user", [](seeded& s) { return s.store.users().delete_user(s.alice.id).error(); }},
      {"create_site",
       [](seeded& s) {
         return s.store.sites()
             .create_site(new_site{"shop", "https://shop", s.alice.id, agent_id{"a1"}}, s.clock.wall_now())
             .error();
       }},
      {"update_site",
       [](seeded& s) {
         return s.store.sites()
             .update_site(s.alice.id, s.site.id, site_changes{std::string("renamed"), std::nullopt}, s.clock.wall_now())
             .error();
       }},
      {"delete_site", [](seeded& s) { return s.store.sites().delete_site(s.alice.id, s.site.id).error(); }},
      {"record_deploy",
       [](seeded& s) {
         return s.store.sites()
             .record_deploy(s.site.id, deploy_update{"deployed", "a1", s.clock.wall_now()}, s.clock.wall_now())
             .error();
       }},
      {"create_principal",
       [](seeded& s) {
         return s.store.credentials()
             .create_principal(conformance::make_principal(principal_kind::commander, "c1", s.clock.wall_now(), {}))
             .error();
       }},
      {"rotate_key",
       [](seeded& s) {
         return s.store.credentials()
             .rotate_key(principal_kind::agent, "a1", conformance::make_key("h2", s.clock.wall_now()),
                         s.clock.wall_now() + 1h)
             .error();
       }},
      {"set_grants",
       [](seeded& s) { return s.store.credentials().set_grants(principal_kind::agent, "a1", {"c2"}).error(); }},
      {"delete_principal",
       [](seeded& s) { return s.store.credentials().delete_principal(principal_kind::agent, "a1").error(); }},
      {"append",
       [](seeded& s) {
         return s.store.audit()
             .append(conformance::make_event(s.clock.wall_now(), audit_kind::security_event, "x"))
             .error();
       }},
  };
}

}  // namespace

TEST_SUITE("storage_memory") {
  CITRUS_STORAGE_CONFORMANCE("memory", make_memory_storage)

  TEST_CASE("memory: every write fails as injected and changes nothing") {
    for (auto error : {errc::storage_unavailable, errc::storage_full}) {
      for (const auto& op : every_write()) {
        CAPTURE(op.name);
        CAPTURE(citrus::wire_code(error));
        seeded s;
        const auto before = citrus::conformance::snapshot(s.store);
        s.store.fail_next_writes(1, error);
        CHECK(op.run(s) == error);
        CHECK(citrus::conformance::snapshot(s.store) == before);
        // The injection is spent: the same write now succeeds and changes the state.
        CHECK_FALSE(op.run(s));
        CHECK(citrus::conformance::snapshot(s.store) != before);
      }
    }
  }

  TEST_CASE("memory: fail_next_writes counts writes only and defaults to storage_unavailable") {
    seeded s;
    s.store.fail_next_writes(2);
    // Reads neither fail nor use up an injected failure.
    CHECK(s.store.users().find_user(s.alice.id));
    CHECK(s.store.users().list_users());
    CHECK(s.store.sites().find_site(s.alice.id, s.site.id));
    CHECK(s.store.sites().list_sites(s.alice.id));
    CHECK(s.store.credentials().find_principal(citrus::principal_kind::agent, "a1"));
    CHECK(s.store.credentials().list_principals(citrus::principal_kind::agent));
    CHECK(s.store.audit().query(citrus::audit_query{}));

    auto first = s.store.users().create_user("bob", "h", citrus::user_role::user, s.clock.wall_now());
    CHECK(first.error() == errc::storage_unavailable);
    auto second = s.store.sites().delete_site(s.alice.id, s.site.id);
    CHECK(second.error() == errc::storage_unavailable);
    auto third = s.store.users().create_user("bob", "h", citrus::user_role::user, s.clock.wall_now());
    REQUIRE(third);
    CHECK(third->id == citrus::user_id{2});  // the failed create consumed no id
    CHECK(s.store.sites().find_site(s.alice.id, s.site.id));
  }

  TEST_CASE("memory: an injected failure wins over the write's own error") {
    seeded s;
    s.store.fail_next_writes(1, errc::storage_full);
    CHECK(s.store.users().delete_user(citrus::user_id{99}).error() == errc::storage_full);
    CHECK(s.store.users().delete_user(citrus::user_id{99}).error() == errc::not_found);
  }

  TEST_CASE("memory: fail_next_writes(0) cancels pending failures") {
    seeded s;
    s.store.fail_next_writes(5);
    s.store.fail_next_writes(0);
    CHECK(s.store.users().create_user("bob", "h", citrus::user_role::user, s.clock.wall_now()));
  }

  TEST_CASE("memory: record() swallows a failed append") {
    seeded s;
    s.store.fail_next_writes(1, errc::storage_full);
    citrus::audit_sink& sink = s.store.audit();
    sink.record(citrus::conformance::make_event(s.clock.wall_now(), citrus::audit_kind::security_event, "lost"));
    sink.record(citrus::conformance::make_event(s.clock.wall_now(), citrus::audit_kind::security_event, "kept"));
    auto events = s.store.audit().query(citrus::audit_query{});
    REQUIRE(events);
    CHECK(citrus::conformance::actions(*events) == std::vector<std::string>{"kept", "site.create"});
  }

  TEST_CASE("memory: stores are independent instances") {
    citrus::memory::memory_storage a;
    citrus::memory::memory_storage b;
    citrus::memory::manual_clock clock;
    citrus::conformance::make_user(a, "alice", clock.wall_now());
    CHECK(b.users().find_user_by_name("alice").error() == errc::not_found);
    CHECK(citrus::conformance::make_user(b, "bob", clock.wall_now()).id == citrus::user_id{1});
  }
}
