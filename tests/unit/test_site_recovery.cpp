// Backend start-up after a crash: sites a previous run left "creating" or "deploying" end as
// "failed", audited; every other site is left exactly as it was.
#include <doctest/doctest.h>

#include "citrus/backend/site_recovery.hpp"
#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "platform_fixture.hpp"

using namespace citrus;
using namespace std::chrono_literals;

namespace {

struct recovery_fixture {
  memory::memory_storage db;
  memory::manual_clock clk;
  memory::recording_logger log;

  user_record user(const std::string& name) {
    auto u = db.users().create_user(name, "argon2id-hash", user_role::user, clk.wall_now());
    REQUIRE(u);
    return *u;
  }
  /// A site of `owner` on agent-1 whose last recorded status is `status`.
  site_record site(const user_record& owner, const std::string& name, const std::string& status,
                   std::optional<wall_time> last_deploy = std::nullopt) {
    new_site fresh;
    fresh.name = name;
    fresh.url = "https://" + name + ".test";
    fresh.owner = owner.id;
    fresh.agent = agent_id{"agent-1"};
    auto s = db.sites().create_site(fresh, clk.wall_now());
    REQUIRE(s);
    deploy_update u;
    u.deploy_status = status;
    u.deployer_id = "agent-1";
    u.last_deploy_date = last_deploy;
    auto saved = db.sites().record_deploy(s->id, u, clk.wall_now());
    REQUIRE(saved);
    return *saved;
  }
  std::string status(const user_record& owner, const site_record& s) {
    auto found = db.sites().find_site(owner.id, s.id);
    REQUIRE(found);
    return found->deploy_status;
  }
};

}  // namespace

TEST_SUITE("site_recovery") {
  TEST_CASE("sites left creating or deploying by a dead backend end as failed, audited, and nothing else changes") {
    recovery_fixture f;
    const user_record alice = f.user("alice"), bob = f.user("bob");
    const wall_time earlier = f.clk.wall_now();
    const site_record deploying = f.site(alice, "deploying", "deploying", earlier);
    const site_record creating = f.site(bob, "creating", "creating");
    const site_record deployed = f.site(alice, "deployed", "deployed", earlier);
    const site_record failed = f.site(bob, "failed", "failed");
    const site_record created = f.site(bob, "created", "created");
    f.clk.advance(60s);

    auto n = fail_interrupted_operations(f.db, f.clk, f.log, "backend-1");
    REQUIRE(n);
    CHECK(*n == 2);
    CHECK(f.status(alice, deploying) == "failed");
    CHECK(f.status(bob, creating) == "failed");
    CHECK(f.status(alice, deployed) == "deployed");
    CHECK(f.status(bob, failed) == "failed");
    CHECK(f.status(bob, created) == "created");
    // The last deploy that did complete is kept; the interrupted one never completed.
    auto after = f.db.sites().find_site(alice.id, deploying.id);
    REQUIRE(after);
    REQUIRE(after->last_deploy_date);
    CHECK(*after->last_deploy_date == earlier);
    CHECK(after->deployer_id == "agent-1");
    CHECK(after->owner == alice.id);

    auto events = f.db.audit().query({audit_kind::site_operation, 100});
    REQUIRE(events);
    REQUIRE(events->size() == 2);
    for (const auto& e : *events) {
      CHECK(e.actor == "backend:backend-1");
      CHECK(e.outcome == "failed");
      CHECK(e.detail == interrupted_reason);
      CHECK(e.at == f.clk.wall_now());
    }
    const bool deploy_first = (*events)[0].target == "site:" + std::to_string(deploying.id.value());
    const auto& deploy_event = (*events)[deploy_first ? 0 : 1];
    const auto& create_event = (*events)[deploy_first ? 1 : 0];
    CHECK(deploy_event.action == "site.deploy");
    CHECK(deploy_event.target == "site:" + std::to_string(deploying.id.value()));
    CHECK(create_event.action == "site.create");
    CHECK(create_event.target == "site:" + std::to_string(creating.id.value()));
    CHECK(f.log.count("site_operation_interrupted") == 2);

    // A second start finds nothing left to end.
    auto again = fail_interrupted_operations(f.db, f.clk, f.log, "backend-1");
    REQUIRE(again);
    CHECK(*again == 0);
  }

  TEST_CASE("a deploy in flight when the backend's process is lost is failed by the next start") {
    // The real flow: the agent holds the deploy, the backend "dies" (its site_service and link are
    // simply never heard from again), and a new backend starts on the same storage.
    testing::platform_fixture f;
    const site_record a = f.make_site(f.alice, "alice-site");
    const site_record b = f.make_site(f.bob, "bob-site");
    f.hold_deploys = true;
    REQUIRE(f.sites->deploy(f.alice.id, a.id, "v2"));
    f.run();
    REQUIRE(f.held.size() == 1);
    REQUIRE(f.sites->get(f.alice.id, a.id)->deploy_status == "deploying");

    auto n = fail_interrupted_operations(f.db, f.clk, f.log, "backend-1");
    REQUIRE(n);
    CHECK(*n == 1);
    CHECK(f.sites->get(f.alice.id, a.id)->deploy_status == "failed");
    CHECK(f.sites->get(f.bob.id, b.id)->deploy_status == "created");
  }

  TEST_CASE("a storage failure is reported, and a later call finishes the job") {
    recovery_fixture f;
    const user_record alice = f.user("alice");
    const site_record s = f.site(alice, "deploying", "deploying");
    f.db.fail_next_writes(1);
    auto n = fail_interrupted_operations(f.db, f.clk, f.log, "backend-1");
    REQUIRE_FALSE(n);
    CHECK(n.error() == make_error_code(errc::storage_unavailable));
    CHECK(f.status(alice, s) == "deploying");
    auto again = fail_interrupted_operations(f.db, f.clk, f.log, "backend-1");
    REQUIRE(again);
    CHECK(*again == 1);
    CHECK(f.status(alice, s) == "failed");
  }

  TEST_CASE("two backends on one database: a restarting backend fails only the operations it left in flight") {
    recovery_fixture f;
    const user_record alice = f.user("alice");
    const site_record mine = f.site(alice, "mine", "deploying");
    const site_record theirs = f.site(alice, "theirs", "deploying");
    const site_record legacy = f.site(alice, "legacy", "creating");  // written before schema 3: nobody's
    auto claim = [&](const site_record& s, const std::string& by) {
      deploy_update u;
      u.deploy_status = s.deploy_status;
      u.deployer_id = s.deployer_id;
      u.operation_by = by;
      REQUIRE(f.db.sites().record_deploy(s.id, u, f.clk.wall_now()));
    };
    claim(mine, "backend-1");
    claim(theirs, "backend-2");
    auto n = fail_interrupted_operations(f.db, f.clk, f.log, "backend-1");
    REQUIRE(n);
    CHECK(*n == 2);
    CHECK(f.status(alice, mine) == "failed");
    CHECK(f.status(alice, legacy) == "failed");
    CHECK(f.status(alice, theirs) == "deploying");  // backend-2 is alive and still waits for its agent
    auto kept = f.db.sites().find_site(alice.id, theirs.id);
    REQUIRE(kept);
    CHECK(kept->operation_by == "backend-2");
    CHECK(f.db.sites().find_site(alice.id, mine.id)->operation_by.empty());
  }
}
