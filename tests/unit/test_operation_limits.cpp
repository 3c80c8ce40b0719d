// The operations table as the one place for ownership and per-user rates (citrus/core/operations.hpp,
// operation_limits.hpp), and the backend's fail-closed audit of site operations: the table's rule and
// rate are what site_service enforces, whatever the transport; an event the trail refuses refuses
// its operation.
#include <doctest/doctest.h>

#include <ostream>  // doctest prints std::error_code through it
#include <string>
#include <vector>

#include "backend_sync.hpp"
#include "citrus/core/operation_limits.hpp"
#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "citrus/memory/storage_executors.hpp"
#include "flaky_storage.hpp"
#include "hub_fixture.hpp"  // audit_count_in

using namespace citrus;
using namespace citrus::testing;
using namespace std::chrono_literals;

namespace {

/// The hub as far as site_service sees it: every command is taken and kept.
struct counting_hub final : command_sink {
  std::vector<command_request> sent;
  result<request_id> send(const command_request& command) override {
    sent.push_back(command);
    return request_id{"r" + std::to_string(sent.size())};
  }
};

struct silent_users final : user_notifier {
  void notify(user_id, std::string_view) override {}
  void operation_ended(user_id, const request_id&) override {}
};

/// One site_service over memory storage (whose audit appends can be made to fail) and a table of
/// the test's choosing.
struct site_rig {
  memory::manual_clock clk;
  memory::recording_logger log;
  memory::memory_storage db;
  flaky_storage store{db};
  memory::inline_storage_executor lanes{store};
  counting_hub hub;
  silent_users users;
  operation_registry ops;
  site_service service;
  sites_now sites{service};
  user_record alice, bob;

  explicit site_rig(operation_registry table = operation_registry::defaults())
      : ops(std::move(table)),
        service(site_service_config{agent_id{"agent-1"}, "backend-1"}, ops, lanes, hub, users, clk, log) {
    alice = *db.users().create_user("alice", "hash", user_role::user, clk.wall_now());
    bob = *db.users().create_user("bob", "hash", user_role::user, clk.wall_now());
  }

  site_record site_of(const user_record& owner, const std::string& name) {
    auto made = sites.create(owner.id, site_input{name, "https://" + name + ".example.test/"});
    REQUIRE(made);
    return made->site;
  }

  std::size_t events(audit_kind kind, std::string_view action, std::string_view outcome) {
    return audit_count_in(db.audit(), kind, action, outcome);
  }
};

/// The default table with one entry changed by `edit`, or left out when `edit` returns false.
template <class Edit>
operation_registry table_with(std::string_view name, Edit edit) {
  operation_registry reg;
  const operation_registry defaults = operation_registry::defaults();
  for (operation op : defaults.all()) {
    if (op.name == name && !edit(op)) continue;
    REQUIRE(reg.add(std::move(op)));
  }
  return reg;
}

const std::error_code rate_limited = make_error_code(errc::rate_limited);
const std::error_code forbidden = make_error_code(errc::forbidden_operation);

}  // namespace

TEST_SUITE("operation limits") {
  TEST_CASE("bucket_table: a run of refusals is reported once, a success ends it, and the table is bounded") {
    memory::manual_clock clk;
    bucket_table table(rate{1, 2}, 2);
    using v = bucket_table::verdict;
    CHECK(table.admit("a", clk.steady_now()) == v::taken);
    CHECK(table.admit("a", clk.steady_now()) == v::taken);
    CHECK(table.admit("a", clk.steady_now()) == v::refused_first);
    CHECK(table.admit("a", clk.steady_now()) == v::refused_again);
    CHECK(table.retry_after("a", clk.steady_now()) == 1);
    clk.advance(1s);
    CHECK(table.admit("a", clk.steady_now()) == v::taken);
    CHECK(table.admit("a", clk.steady_now()) == v::refused_first);  // a new run
    // Two keys at most: a third forgets the least recently used one, which comes back with a full bucket.
    CHECK(table.take("b", clk.steady_now()));
    CHECK(table.take("c", clk.steady_now()));
    CHECK(table.size() == 2);
    CHECK(table.has_token("a", clk.steady_now()));
    CHECK(table.admit("a", clk.steady_now()) == v::taken);
  }

  TEST_CASE("a user cannot start 300 deploys a second; another user is unaffected; each operation has its own rate") {
    const operation_registry table = operation_registry::defaults();
    const operation& deploy = *table.find("site.deploy");
    const operation& status = *table.find("site.status");
    CHECK(deploy.per_user.burst == 10);
    CHECK(status.per_user.burst == 60);
    memory::manual_clock clk;
    operation_limiter limits(table);
    auto runs = [&](const operation& op, std::string_view who, int tries) {
      int taken = 0;
      for (int i = 0; i < tries; ++i) taken += limits.admit(op, who, clk.steady_now()) == bucket_table::verdict::taken;
      return taken;
    };
    CHECK(runs(deploy, "user:1", 300) == 10);  // the burst, at one instant
    CHECK(limits.retry_after("site.deploy", "user:1", clk.steady_now()) == 2s);  // 30/min: a token every 2 s
    CHECK(runs(deploy, "user:2", 300) == 10);                                    // someone else: a full burst
    CHECK(runs(status, "user:1", 300) == 60);  // reads have a rate of their own, and a larger one
    CHECK(limits.retry_after("site.status", "user:1", clk.steady_now()) == 1s);
    // Over one whole second, spread out: still the burst and the half token that refilled.
    clk.advance(1h);
    int spread = 0;
    for (int i = 0; i < 300; ++i) {
      spread += limits.admit(deploy, "user:1", clk.steady_now()) == bucket_table::verdict::taken;
      clk.advance(std::chrono::nanoseconds(1s) / 300);
    }
    CHECK(spread == 10);
    clk.advance(2s);
    CHECK(runs(deploy, "user:1", 5) == 1);
  }

  TEST_CASE("scale_rates multiplies every rate and burst, and a rate of 0 is unlimited") {
    operation_registry table = operation_registry::defaults();
    table.scale_rates(100);
    CHECK(table.find("site.deploy")->per_user.burst == 1000);
    CHECK(table.find("site.deploy")->per_user.per_second == doctest::Approx(50));
    const operation_registry open = table_with("site.deploy", [](operation& op) {
      op.per_user = rate{};
      return true;
    });
    memory::manual_clock clk;
    operation_limiter limits(open);
    for (int i = 0; i < 1000; ++i) REQUIRE(limits.admit(*open.find("site.deploy"), "user:1", clk.steady_now()) == bucket_table::verdict::taken);
  }
}

TEST_SUITE("site_service: the operations table decides") {
  TEST_CASE("past the table's rate a call is refused rate_limited with retry_after, audited once per run, counted") {
    site_rig r;
    const site_record a = r.site_of(r.alice, "a");
    const site_record b = r.site_of(r.bob, "b");
    r.hub.sent.clear();
    int started = 0;
    for (int i = 0; i < 300; ++i) {
      auto d = r.sites.deploy(r.alice.id, a.id, "");
      if (d) ++started;
      else CHECK(d.error() == rate_limited);
    }
    CHECK(started == 10);
    CHECK(r.hub.sent.size() == 10);  // the 290 refused never reached the hub
    CHECK(r.service.retry_after(r.alice.id, "site.deploy") == 2s);
    CHECK(r.service.counters().rate_limited == 290);
    CHECK(r.events(audit_kind::security_event, "rate_limited", "denied") == 1);  // one event for the run, not 290
    auto flagged = r.db.audit().query({audit_kind::security_event, 10});
    REQUIRE(flagged);
    CHECK(flagged->front().actor == "user:" + std::to_string(r.alice.id.value()));
    CHECK(flagged->front().target == "operation:site.deploy");
    CHECK(flagged->front().detail == "30/min, burst 10");
    // Bob, and Alice's other operations, have their own buckets.
    CHECK(r.sites.deploy(r.bob.id, b.id, ""));
    CHECK(r.sites.get(r.alice.id, a.id));
    CHECK(r.sites.update(r.alice.id, a.id, site_changes{std::string("renamed"), std::nullopt}));
    // Two seconds later one more deploy; the next refusal opens a new run: a second event.
    r.clk.advance(2s);
    CHECK(r.sites.deploy(r.alice.id, a.id, ""));
    CHECK(r.sites.deploy(r.alice.id, a.id, "").error() == rate_limited);
    CHECK(r.events(audit_kind::security_event, "rate_limited", "denied") == 2);
  }

  TEST_CASE("the ownership rule the table declares is the rule enforced") {
    SUBCASE("site_owner (the default): another user's site and a missing one are unauthorized_access") {
      site_rig r;
      const site_record a = r.site_of(r.alice, "a");
      const auto unauthorized = make_error_code(errc::unauthorized_access);
      CHECK(r.sites.deploy(r.bob.id, a.id, "").error() == unauthorized);
      CHECK(r.sites.deploy(r.bob.id, site_id{999}, "").error() == unauthorized);
      CHECK(r.sites.deploy(r.alice.id, a.id, ""));
    }
    SUBCASE("a rule that does not fit the operation is refused for everyone, the owner too, and nothing is sent") {
      site_rig r(table_with("site.deploy", [](operation& op) {
        op.owner_check = ownership::none;  // "anyone may deploy any site": the backend will not
        return true;
      }));
      const site_record a = r.site_of(r.alice, "a");
      r.hub.sent.clear();
      CHECK(r.sites.deploy(r.alice.id, a.id, "").error() == forbidden);
      CHECK(r.sites.deploy(r.bob.id, a.id, "").error() == forbidden);
      CHECK(r.hub.sent.empty());
      CHECK(r.sites.get(r.alice.id, a.id));  // the other entries still hold
    }
    SUBCASE("site.create must name no owner: a table that asks for one refuses it") {
      site_rig r(table_with("site.create", [](operation& op) {
        op.owner_check = ownership::site_owner;
        return true;
      }));
      CHECK(r.sites.create(r.alice.id, site_input{"a", "https://a.example.test/"}).error() == forbidden);
      CHECK(r.sites.list(r.alice.id)->empty());
    }
    SUBCASE("an operation the table does not have is not run, on any site") {
      site_rig r(table_with("site.update", [](operation&) { return false; }));
      const site_record a = r.site_of(r.alice, "a");
      CHECK(r.sites.update(r.alice.id, a.id, site_changes{std::string("x"), std::nullopt}).error() == forbidden);
      CHECK(r.sites.get(r.alice.id, a.id)->name == "a");
    }
    SUBCASE("the rate is the table's: a deploy allowed once a minute is refused the second time") {
      site_rig r(table_with("site.deploy", [](operation& op) {
        op.per_user = rate{1.0 / 60, 1};
        return true;
      }));
      const site_record a = r.site_of(r.alice, "a");
      CHECK(r.sites.deploy(r.alice.id, a.id, ""));
      CHECK(r.sites.deploy(r.alice.id, a.id, "").error() == rate_limited);
      CHECK(r.service.retry_after(r.alice.id, "site.deploy") == 60s);
    }
  }

  TEST_CASE("fail closed: when the trail refuses a site operation's event, the operation is refused, changes nothing, and is counted") {
    site_rig r;
    const site_record a = r.site_of(r.alice, "a");
    r.hub.sent.clear();
    r.store.audit_view.down = true;
    const auto unavailable = make_error_code(errc::storage_unavailable);
    CHECK(r.sites.create(r.alice.id, site_input{"b", "https://b.example.test/"}).error() == unavailable);
    CHECK(r.sites.update(r.alice.id, a.id, site_changes{std::string("renamed"), std::nullopt}).error() == unavailable);
    CHECK(r.sites.deploy(r.alice.id, a.id, "").error() == unavailable);
    CHECK(r.sites.remove(r.alice.id, a.id).error() == unavailable);
    CHECK(r.service.counters().audit_refused == 4);
    CHECK(r.hub.sent.empty());  // no agent heard of any of them
    auto left = r.sites.list(r.alice.id);
    REQUIRE(left);
    REQUIRE(left->size() == 1);  // the new row went with its event; the old one is as it was
    CHECK(left->front().name == "a");
    CHECK((left->front().deploy_status == "created" || left->front().deploy_status == "creating"));
    CHECK(public_message(errc::storage_unavailable) == "Service temporarily unavailable");
    // The trail back: the same calls go through, each audited.
    r.store.audit_view.down = false;
    CHECK(r.sites.update(r.alice.id, a.id, site_changes{std::string("renamed"), std::nullopt}));
    CHECK(r.sites.deploy(r.alice.id, a.id, ""));
    CHECK(r.events(audit_kind::site_operation, "site.update", "ok") == 1);
    CHECK(r.events(audit_kind::site_operation, "site.deploy", "requested") == 1);
    CHECK(r.events(audit_kind::site_operation, "site.deploy", "started") == 1);
    CHECK(r.service.counters().audit_refused == 4);
  }
}
