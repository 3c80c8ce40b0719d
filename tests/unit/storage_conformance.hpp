#pragma once
/// The storage conformance suite: every citrus::storage implementation must pass it.
///
/// Instantiate it inside a TEST_SUITE with a factory that returns a fresh, empty storage on each call:
///
///     TEST_SUITE("storage_memory") {
///       CITRUS_STORAGE_CONFORMANCE("memory", [] { return std::make_unique<citrus::memory::memory_storage>(); })
///     }
///
/// The prefix keeps test names unique when one binary runs the suite against several configurations.
/// The checks live in plain functions (below), so a failure points at the line of the contract it broke.
///
/// Contract points beyond storage.hpp that every implementation shares (and that these tests pin):
/// - ids start at 1 in a fresh storage, grow by one per created row and are never reused;
/// - timestamps have whole-second resolution (sub-second parts are truncated);
/// - list_users / list_sites are ordered by id, list_principals by id, a principal's keys in the order
///   they were added, grants in the order given;
/// - create_site for a user that does not exist answers errc::not_found;
/// - a site's revision is 1 when created and one more after every update_site or record_deploy, even
///   several within one second (only it orders two copies of a site; updated_at is in whole seconds);
/// - a write that fails (conflict, not_found) changes nothing and consumes no id;
/// - audit events get ids 1, 2, ... in append order; each links to the one before (the first to the
///   genesis hash); acknowledging appends an administration event and leaves the acknowledged row as it was.
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "citrus/core/storage.hpp"
#include "citrus/memory/manual_clock.hpp"

namespace citrus::conformance {

using storage_factory = std::function<std::unique_ptr<citrus::storage>()>;
using namespace std::chrono_literals;

// ------------------------------------------------------------------ helpers

/// A readable dump of everything a storage holds, to prove that a failed write changed nothing.
inline std::string snapshot(citrus::storage& s) {
  std::ostringstream out;
  auto users = s.users().list_users();
  REQUIRE(users);
  for (const auto& u : *users) {
    out << "user " << u.id.value() << " " << u.name << " " << u.password_hash << " " << to_string(u.role) << " "
        << to_unix_seconds(u.created_at) << "\n";
    auto sites = s.sites().list_sites(u.id);
    REQUIRE(sites);
    for (const auto& r : *sites)
      out << "  site " << r.id.value() << " " << r.name << " " << r.url << " " << r.owner.value() << " "
          << r.agent.value() << " " << to_unix_seconds(r.created_at) << " " << to_unix_seconds(r.updated_at) << " "
          << r.deployer_id << " " << r.deploy_status << " "
          << (r.last_deploy_date ? std::to_string(to_unix_seconds(*r.last_deploy_date)) : "-") << " r"
          << r.revision << "\n";
  }
  for (auto kind : {principal_kind::commander, principal_kind::agent}) {
    auto principals = s.credentials().list_principals(kind);
    REQUIRE(principals);
    for (const auto& p : *principals) {
      out << to_string(p.kind) << " " << p.id << " " << to_unix_seconds(p.created_at) << "\n";
      for (const auto& k : p.keys)
        out << "  key " << k.key_hash << " " << to_unix_seconds(k.created_at) << " "
            << (k.expires_at ? std::to_string(to_unix_seconds(*k.expires_at)) : "-") << "\n";
      for (const auto& g : p.grants) out << "  grant " << g << "\n";
    }
  }
  auto events = s.audit().query(audit_query{std::nullopt, 1000});
  REQUIRE(events);
  for (const auto& e : *events)
    out << "audit " << to_unix_seconds(e.at) << " " << to_string(e.kind) << " " << e.actor << " " << e.action << " "
        << e.target << " " << e.outcome << " " << e.detail << "\n";
  return out.str();
}

inline user_record make_user(citrus::storage& s, const std::string& name, wall_time now) {
  auto u = s.users().create_user(name, "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA", user_role::user, now);
  REQUIRE(u);
  return *u;
}

inline site_record make_site(citrus::storage& s, user_id owner, const std::string& name, wall_time now) {
  auto r = s.sites().create_site(new_site{name, "https://" + name + ".example", owner, agent_id{"agent-1"}}, now);
  REQUIRE(r);
  return *r;
}

inline key_record make_key(const std::string& hash, wall_time created,
                           std::optional<wall_time> expires = std::nullopt) {
  return key_record{hash, created, expires};
}

inline principal_record make_principal(principal_kind kind, const std::string& id, wall_time now,
                                       std::vector<key_record> keys, std::vector<std::string> grants = {}) {
  principal_record p;
  p.kind = kind;
  p.id = id;
  p.keys = std::move(keys);
  p.grants = std::move(grants);
  p.created_at = now;
  return p;
}

inline audit_event make_event(wall_time at, audit_kind kind, const std::string& action,
                              const std::string& actor = "user:1") {
  return audit_event{at, kind, actor, action, "site:1", "ok", "detail"};
}

inline std::vector<std::string> actions(const std::vector<audit_event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.action);
  return out;
}

inline std::vector<std::int64_t> site_ids(const std::vector<site_record>& sites) {
  std::vector<std::int64_t> out;
  for (const auto& r : sites) out.push_back(r.id.value());
  return out;
}

// ------------------------------------------------------------------ users

inline void users_create_and_find(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto a = s->users().create_user("alice", "hash-a", user_role::admin, clock.wall_now());
  REQUIRE(a);
  CHECK(a->id == user_id{1});
  CHECK(a->name == "alice");
  CHECK(a->password_hash == "hash-a");
  CHECK(a->role == user_role::admin);
  CHECK(a->created_at == clock.wall_now());
  clock.advance(5s);
  auto b = s->users().create_user("bob", "hash-b", user_role::user, clock.wall_now());
  REQUIRE(b);
  CHECK(b->id == user_id{2});
  CHECK(b->role == user_role::user);

  auto found = s->users().find_user(user_id{1});
  REQUIRE(found);
  CHECK(found->name == "alice");
  CHECK(found->password_hash == "hash-a");
  CHECK(found->role == user_role::admin);
  CHECK(found->created_at == a->created_at);

  auto by_name = s->users().find_user_by_name("bob");
  REQUIRE(by_name);
  CHECK(by_name->id == user_id{2});
  CHECK(by_name->created_at == clock.wall_now());
}

inline void users_not_found(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  CHECK(s->users().find_user(user_id{1}).error() == errc::not_found);
  CHECK(s->users().find_user_by_name("alice").error() == errc::not_found);
  make_user(*s, "alice", clock.wall_now());
  CHECK(s->users().find_user(user_id{2}).error() == errc::not_found);
  CHECK(s->users().find_user(user_id{0}).error() == errc::not_found);
  CHECK(s->users().find_user(user_id{-1}).error() == errc::not_found);
  CHECK(s->users().find_user_by_name("Alice").error() == errc::not_found);  // names are exact
  CHECK(s->users().find_user_by_name("").error() == errc::not_found);
  CHECK(s->users().delete_user(user_id{7}).error() == errc::not_found);
}

inline void users_conflict(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  make_user(*s, "alice", clock.wall_now());
  const auto before = snapshot(*s);
  auto again = s->users().create_user("alice", "other-hash", user_role::admin, clock.wall_now());
  REQUIRE_FALSE(again);
  CHECK(again.error() == errc::conflict);
  CHECK(snapshot(*s) == before);
  // The failed create consumed no id.
  CHECK(make_user(*s, "bob", clock.wall_now()).id == user_id{2});
}

inline void users_list_ordered(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto empty = s->users().list_users();
  REQUIRE(empty);
  CHECK(empty->empty());
  make_user(*s, "zed", clock.wall_now());
  make_user(*s, "amy", clock.wall_now());
  make_user(*s, "mia", clock.wall_now());
  auto all = s->users().list_users();
  REQUIRE(all);
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].name == "zed");
  CHECK((*all)[1].name == "amy");
  CHECK((*all)[2].name == "mia");
  CHECK((*all)[2].id == user_id{3});
}

inline void users_delete_cascades_to_sites(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto alice = make_user(*s, "alice", clock.wall_now());
  auto bob = make_user(*s, "bob", clock.wall_now());
  auto a1 = make_site(*s, alice.id, "a1", clock.wall_now());
  auto b1 = make_site(*s, bob.id, "b1", clock.wall_now());
  auto a2 = make_site(*s, alice.id, "a2", clock.wall_now());

  REQUIRE(s->users().delete_user(alice.id));
  CHECK(s->users().find_user(alice.id).error() == errc::not_found);
  CHECK(s->users().find_user_by_name("alice").error() == errc::not_found);
  CHECK(s->sites().find_site(alice.id, a1.id).error() == errc::not_found);
  CHECK(s->sites().find_site(alice.id, a2.id).error() == errc::not_found);
  CHECK(s->sites().record_deploy(a1.id, deploy_update{"deployed", "agent-1", std::nullopt}, clock.wall_now())
            .error() == errc::not_found);
  auto left = s->sites().list_sites(alice.id);
  REQUIRE(left);
  CHECK(left->empty());
  // Bob and his site are untouched.
  CHECK(s->users().find_user(bob.id));
  auto bobs = s->sites().find_site(bob.id, b1.id);
  REQUIRE(bobs);
  CHECK(bobs->name == "b1");
  auto users = s->users().list_users();
  REQUIRE(users);
  CHECK(users->size() == 1);
  CHECK(s->users().delete_user(alice.id).error() == errc::not_found);
}

inline void users_ids_never_reused(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  make_user(*s, "alice", clock.wall_now());
  auto bob = make_user(*s, "bob", clock.wall_now());
  REQUIRE(s->users().delete_user(bob.id));
  // A new user never inherits a deleted user's id (old tokens or references must not resolve to them).
  auto carol = make_user(*s, "carol", clock.wall_now());
  CHECK(carol.id == user_id{3});
  // The name of a deleted user is free again.
  CHECK(make_user(*s, "bob", clock.wall_now()).id == user_id{4});
}

// ------------------------------------------------------------------ sites

inline void sites_create_and_find(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto alice = make_user(*s, "alice", clock.wall_now());
  clock.advance(10s);
  auto r = s->sites().create_site(new_site{"blog", "https://blog.example", alice.id, agent_id{"agent-7"}},
                                  clock.wall_now());
  REQUIRE(r);
  CHECK(r->id == site_id{1});
  CHECK(r->name == "blog");
  CHECK(r->url == "https://blog.example");
  CHECK(r->owner == alice.id);
  CHECK(r->agent == agent_id{"agent-7"});
  CHECK(r->created_at == clock.wall_now());
  CHECK(r->updated_at == clock.wall_now());
  CHECK(r->deployer_id.empty());
  CHECK(r->deploy_status.empty());
  CHECK_FALSE(r->last_deploy_date.has_value());
  CHECK(r->revision == 1);

  auto found = s->sites().find_site(alice.id, r->id);
  REQUIRE(found);
  CHECK(found->id == r->id);
  CHECK(found->name == "blog");
  CHECK(found->url == "https://blog.example");
  CHECK(found->owner == alice.id);
  CHECK(found->agent == agent_id{"agent-7"});
  CHECK(found->created_at == r->created_at);
  CHECK(found->updated_at == r->updated_at);
  CHECK(found->deployer_id.empty());
  CHECK(found->deploy_status.empty());
  CHECK_FALSE(found->last_deploy_date.has_value());
  CHECK(found->revision == 1);

  CHECK(make_site(*s, alice.id, "shop", clock.wall_now()).id == site_id{2});
  CHECK(make_site(*s, alice.id, "wiki", clock.wall_now()).id == site_id{3});
}

inline void sites_create_for_unknown_owner(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto r = s->sites().create_site(new_site{"orphan", "https://o.example", user_id{42}, agent_id{"agent-1"}},
                                  clock.wall_now());
  REQUIRE_FALSE(r);
  CHECK(r.error() == errc::not_found);
  CHECK(snapshot(*s).empty());
  // The failed create consumed no id (PostgreSQL's identity columns would, unless the INSERT checks the
  // owner in the same statement).
  auto owner = make_user(*s, "owner", clock.wall_now());
  CHECK(make_site(*s, owner.id, "first", clock.wall_now()).id == site_id{1});
}

inline void sites_owner_scoped_reads(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto alice = make_user(*s, "alice", clock.wall_now());
  auto bob = make_user(*s, "bob", clock.wall_now());
  auto a1 = make_site(*s, alice.id, "a1", clock.wall_now());
  auto b1 = make_site(*s, bob.id, "b1", clock.wall_now());
  auto a2 = make_site(*s, alice.id, "a2", clock.wall_now());

  // Another user's site looks exactly like a missing one.
  CHECK(s->sites().find_site(bob.id, a1.id).error() == errc::not_found);
  CHECK(s->sites().find_site(alice.id, b1.id).error() == errc::not_found);
  CHECK(s->sites().find_site(alice.id, site_id{99}).error() == errc::not_found);
  CHECK(s->sites().find_site(user_id{99}, a1.id).error() == errc::not_found);
  CHECK(s->sites().find_site(alice.id, a1.id));
  CHECK(s->sites().find_site(bob.id, b1.id));

  auto alices = s->sites().list_sites(alice.id);
  REQUIRE(alices);
  CHECK(site_ids(*alices) == std::vector<std::int64_t>{a1.id.value(), a2.id.value()});
  for (const auto& r : *alices) CHECK(r.owner == alice.id);
  auto bobs = s->sites().list_sites(bob.id);
  REQUIRE(bobs);
  CHECK(site_ids(*bobs) == std::vector<std::int64_t>{b1.id.value()});
  auto nobodys = s->sites().list_sites(user_id{99});
  REQUIRE(nobodys);
  CHECK(nobodys->empty());
}

inline void sites_owner_scoped_writes(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto alice = make_user(*s, "alice", clock.wall_now());
  auto bob = make_user(*s, "bob", clock.wall_now());
  auto a1 = make_site(*s, alice.id, "a1", clock.wall_now());
  make_site(*s, bob.id, "b1", clock.wall_now());
  const auto before = snapshot(*s);
  clock.advance(1min);

  auto upd = s->sites().update_site(bob.id, a1.id, site_changes{std::string("pwned"), std::string("https://evil")},
                                    clock.wall_now());
  REQUIRE_FALSE(upd);
  CHECK(upd.error() == errc::not_found);
  auto del = s->sites().delete_site(bob.id, a1.id);
  REQUIRE_FALSE(del);
  CHECK(del.error() == errc::not_found);
  CHECK(s->sites().update_site(alice.id, site_id{99}, site_changes{std::string("x"), std::nullopt}, clock.wall_now())
            .error() == errc::not_found);
  CHECK(s->sites().delete_site(alice.id, site_id{99}).error() == errc::not_found);
  CHECK(snapshot(*s) == before);

  auto still = s->sites().find_site(alice.id, a1.id);
  REQUIRE(still);
  CHECK(still->name == "a1");
  CHECK(still->updated_at == a1.updated_at);
}

inline void sites_update(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto alice = make_user(*s, "alice", clock.wall_now());
  auto site = make_site(*s, alice.id, "blog", clock.wall_now());
  const auto created = site.created_at;

  clock.advance(30s);
  auto r = s->sites().update_site(alice.id, site.id, site_changes{std::string("journal"), std::nullopt},
                                  clock.wall_now());
  REQUIRE(r);
  CHECK(r->name == "journal");
  CHECK(r->url == "https://blog.example");
  CHECK(r->created_at == created);
  CHECK(r->updated_at == clock.wall_now());
  CHECK(r->updated_at > created);
  CHECK(r->revision == 2);

  clock.advance(30s);
  r = s->sites().update_site(alice.id, site.id, site_changes{std::nullopt, std::string("https://j.example")},
                             clock.wall_now());
  REQUIRE(r);
  CHECK(r->name == "journal");
  CHECK(r->url == "https://j.example");
  CHECK(r->updated_at == clock.wall_now());

  clock.advance(30s);
  r = s->sites().update_site(alice.id, site.id, site_changes{std::string("n"), std::string("https://n.example")},
                             clock.wall_now());
  REQUIRE(r);
  CHECK(r->name == "n");
  CHECK(r->url == "https://n.example");

  clock.advance(30s);
  r = s->sites().update_site(alice.id, site.id, site_changes{}, clock.wall_now());  // only touches updated_at
  REQUIRE(r);
  CHECK(r->name == "n");
  CHECK(r->updated_at == clock.wall_now());
  CHECK(r->revision == 5);
  // Two changes within the same second still get two revisions.
  r = s->sites().update_site(alice.id, site.id, site_changes{}, clock.wall_now());
  REQUIRE(r);
  CHECK(r->revision == 6);

  auto found = s->sites().find_site(alice.id, site.id);
  REQUIRE(found);
  CHECK(found->name == "n");
  CHECK(found->url == "https://n.example");
  CHECK(found->created_at == created);
  CHECK(found->updated_at == clock.wall_now());
  CHECK(found->owner == alice.id);
  CHECK(found->agent == site.agent);
  CHECK(found->revision == 6);
}

inline void sites_delete(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto alice = make_user(*s, "alice", clock.wall_now());
  auto a1 = make_site(*s, alice.id, "a1", clock.wall_now());
  auto a2 = make_site(*s, alice.id, "a2", clock.wall_now());
  REQUIRE(s->sites().delete_site(alice.id, a2.id));
  CHECK(s->sites().find_site(alice.id, a2.id).error() == errc::not_found);
  CHECK(s->sites().delete_site(alice.id, a2.id).error() == errc::not_found);
  auto left = s->sites().list_sites(alice.id);
  REQUIRE(left);
  CHECK(site_ids(*left) == std::vector<std::int64_t>{a1.id.value()});
  // Ids are never reused, even after deleting the newest site.
  CHECK(make_site(*s, alice.id, "a3", clock.wall_now()).id == site_id{3});
  CHECK(s->users().find_user(alice.id));  // deleting a site leaves its owner alone
}

inline void sites_record_deploy(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto alice = make_user(*s, "alice", clock.wall_now());
  auto site = make_site(*s, alice.id, "blog", clock.wall_now());

  clock.advance(1min);
  CHECK(site.operation_by.empty());
  auto r = s->sites().record_deploy(site.id, deploy_update{"deploying", "agent-9", std::nullopt, "backend-2"}, clock.wall_now());
  REQUIRE(r);
  CHECK(r->operation_by == "backend-2");
  CHECK(s->sites().find_site(alice.id, site.id)->operation_by == "backend-2");
  CHECK(s->sites().list_sites(alice.id)->front().operation_by == "backend-2");
  CHECK(r->deploy_status == "deploying");
  CHECK(r->deployer_id == "agent-9");
  CHECK_FALSE(r->last_deploy_date.has_value());
  CHECK(r->updated_at == clock.wall_now());
  CHECK(r->created_at == site.created_at);
  CHECK(r->owner == alice.id);
  CHECK(r->name == "blog");
  CHECK(r->revision == site.revision + 1);

  clock.advance(1min);
  const auto done_at = clock.wall_now() - 10s;
  r = s->sites().record_deploy(site.id, deploy_update{"deployed", "agent-9", done_at}, clock.wall_now());
  REQUIRE(r);
  CHECK(r->operation_by.empty());  // a final status belongs to no backend
  CHECK(r->deploy_status == "deployed");
  REQUIRE(r->last_deploy_date.has_value());
  CHECK(*r->last_deploy_date == done_at);
  CHECK(r->updated_at == clock.wall_now());

  // A later update without a completion date keeps the last deploy date.
  clock.advance(1min);
  r = s->sites().record_deploy(site.id, deploy_update{"failed", "agent-2", std::nullopt}, clock.wall_now());
  REQUIRE(r);
  CHECK(r->deploy_status == "failed");
  CHECK(r->deployer_id == "agent-2");
  REQUIRE(r->last_deploy_date.has_value());
  CHECK(*r->last_deploy_date == done_at);

  auto found = s->sites().find_site(alice.id, site.id);
  REQUIRE(found);
  CHECK(found->deploy_status == "failed");
  CHECK(found->deployer_id == "agent-2");
  REQUIRE(found->last_deploy_date.has_value());
  CHECK(*found->last_deploy_date == done_at);
  CHECK(found->updated_at == clock.wall_now());
  CHECK(found->revision == site.revision + 3);

  const auto before = snapshot(*s);
  CHECK(s->sites().record_deploy(site_id{99}, deploy_update{"deployed", "agent-1", done_at}, clock.wall_now())
            .error() == errc::not_found);
  CHECK(snapshot(*s) == before);
}

// ------------------------------------------------------------------ credentials

inline void credentials_create_and_find(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = clock.wall_now();
  auto p = make_principal(principal_kind::commander, "backend-1", t0,
                          {make_key("b2$aa$01", t0), make_key("b2$bb$02", t0 - 1h, t0 + 1h)}, {"agent-1", "agent-2"});
  REQUIRE(s->credentials().create_principal(p));
  auto found = s->credentials().find_principal(principal_kind::commander, "backend-1");
  REQUIRE(found);
  CHECK(found->kind == principal_kind::commander);
  CHECK(found->id == "backend-1");
  CHECK(found->created_at == t0);
  REQUIRE(found->keys.size() == 2);
  CHECK(found->keys[0].key_hash == "b2$aa$01");
  CHECK(found->keys[0].created_at == t0);
  CHECK_FALSE(found->keys[0].expires_at.has_value());
  CHECK(found->keys[1].key_hash == "b2$bb$02");
  CHECK(found->keys[1].created_at == t0 - 1h);
  REQUIRE(found->keys[1].expires_at.has_value());
  CHECK(*found->keys[1].expires_at == t0 + 1h);
  CHECK(found->grants == std::vector<std::string>{"agent-1", "agent-2"});

  // Kinds are separate namespaces: an agent may share a commander's id.
  CHECK(s->credentials().find_principal(principal_kind::agent, "backend-1").error() == errc::not_found);
  REQUIRE(s->credentials().create_principal(make_principal(principal_kind::agent, "backend-1", t0, {})));
  auto agent = s->credentials().find_principal(principal_kind::agent, "backend-1");
  REQUIRE(agent);
  CHECK(agent->kind == principal_kind::agent);
  CHECK(agent->keys.empty());
  CHECK(agent->grants.empty());
  CHECK(s->credentials().find_principal(principal_kind::commander, "backend-1")->keys.size() == 2);
}

inline void credentials_conflict_and_not_found(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = clock.wall_now();
  CHECK(s->credentials().find_principal(principal_kind::agent, "a1").error() == errc::not_found);
  REQUIRE(s->credentials().create_principal(
      make_principal(principal_kind::agent, "a1", t0, {make_key("b2$aa$01", t0)}, {"backend-1"})));
  const auto before = snapshot(*s);
  auto again = s->credentials().create_principal(
      make_principal(principal_kind::agent, "a1", t0 + 1h, {make_key("b2$cc$03", t0)}, {"*"}));
  REQUIRE_FALSE(again);
  CHECK(again.error() == errc::conflict);
  CHECK(snapshot(*s) == before);

  const auto key = make_key("b2$dd$04", t0);
  CHECK(s->credentials().rotate_key(principal_kind::agent, "nope", key, t0).error() == errc::not_found);
  CHECK(s->credentials().rotate_key(principal_kind::commander, "a1", key, t0).error() == errc::not_found);
  CHECK(s->credentials().set_grants(principal_kind::agent, "nope", {"x"}).error() == errc::not_found);
  CHECK(s->credentials().set_grants(principal_kind::commander, "a1", {"x"}).error() == errc::not_found);
  CHECK(s->credentials().delete_principal(principal_kind::agent, "nope").error() == errc::not_found);
  CHECK(s->credentials().delete_principal(principal_kind::commander, "a1").error() == errc::not_found);
  CHECK(snapshot(*s) == before);
}

inline void credentials_list(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = clock.wall_now();
  auto none = s->credentials().list_principals(principal_kind::agent);
  REQUIRE(none);
  CHECK(none->empty());
  REQUIRE(s->credentials().create_principal(make_principal(principal_kind::agent, "a2", t0, {make_key("h2", t0)})));
  REQUIRE(s->credentials().create_principal(make_principal(principal_kind::commander, "c1", t0, {})));
  REQUIRE(s->credentials().create_principal(
      make_principal(principal_kind::agent, "a1", t0, {make_key("h1", t0)}, {"c1"})));
  auto agents = s->credentials().list_principals(principal_kind::agent);
  REQUIRE(agents);
  REQUIRE(agents->size() == 2);
  CHECK((*agents)[0].id == "a1");
  CHECK((*agents)[0].kind == principal_kind::agent);
  REQUIRE((*agents)[0].keys.size() == 1);
  CHECK((*agents)[0].keys[0].key_hash == "h1");
  CHECK((*agents)[0].grants == std::vector<std::string>{"c1"});
  CHECK((*agents)[1].id == "a2");
  auto commanders = s->credentials().list_principals(principal_kind::commander);
  REQUIRE(commanders);
  REQUIRE(commanders->size() == 1);
  CHECK((*commanders)[0].id == "c1");
  CHECK((*commanders)[0].kind == principal_kind::commander);
}

inline void credentials_rotate_key(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = clock.wall_now();
  REQUIRE(s->credentials().create_principal(make_principal(
      principal_kind::commander, "backend-1", t0,
      {make_key("never-expires", t0), make_key("expires-late", t0, t0 + 48h), make_key("expires-soon", t0, t0 + 1h)},
      {"*"})));

  clock.advance(10min);
  const auto overlap_end = clock.wall_now() + 24h;
  REQUIRE(s->credentials().rotate_key(principal_kind::commander, "backend-1", make_key("new", clock.wall_now()),
                                      overlap_end));
  auto p = s->credentials().find_principal(principal_kind::commander, "backend-1");
  REQUIRE(p);
  REQUIRE(p->keys.size() == 4);
  // A key with no expiry, or a later one, now expires at the end of the overlap window...
  CHECK(p->keys[0].key_hash == "never-expires");
  REQUIRE(p->keys[0].expires_at.has_value());
  CHECK(*p->keys[0].expires_at == overlap_end);
  CHECK(p->keys[1].key_hash == "expires-late");
  REQUIRE(p->keys[1].expires_at.has_value());
  CHECK(*p->keys[1].expires_at == overlap_end);
  // ...a key that expires earlier keeps its expiry...
  CHECK(p->keys[2].key_hash == "expires-soon");
  REQUIRE(p->keys[2].expires_at.has_value());
  CHECK(*p->keys[2].expires_at == t0 + 1h);
  // ...and the new key is added as given.
  CHECK(p->keys[3].key_hash == "new");
  CHECK(p->keys[3].created_at == clock.wall_now());
  CHECK_FALSE(p->keys[3].expires_at.has_value());
  CHECK(p->grants == std::vector<std::string>{"*"});  // grants are untouched
  CHECK(p->created_at == t0);

  // Rotating again with an immediate cut-over expires the previous key now.
  clock.advance(1h);
  REQUIRE(s->credentials().rotate_key(principal_kind::commander, "backend-1",
                                      make_key("newer", clock.wall_now(), clock.wall_now() + 90 * 24h),
                                      clock.wall_now()));
  p = s->credentials().find_principal(principal_kind::commander, "backend-1");
  REQUIRE(p);
  REQUIRE(p->keys.size() == 5);
  CHECK(*p->keys[0].expires_at == clock.wall_now());
  CHECK(*p->keys[1].expires_at == clock.wall_now());
  CHECK(*p->keys[2].expires_at == t0 + 1h);  // already earlier than now
  CHECK(*p->keys[3].expires_at == clock.wall_now());
  CHECK(p->keys[4].key_hash == "newer");
  REQUIRE(p->keys[4].expires_at.has_value());
  CHECK(*p->keys[4].expires_at == clock.wall_now() + 90 * 24h);

  // Rotation of one principal leaves others alone.
  REQUIRE(s->credentials().create_principal(
      make_principal(principal_kind::agent, "backend-1", t0, {make_key("agent-key", t0)})));
  REQUIRE(s->credentials().rotate_key(principal_kind::commander, "backend-1", make_key("newest", clock.wall_now()),
                                      clock.wall_now()));
  auto agent = s->credentials().find_principal(principal_kind::agent, "backend-1");
  REQUIRE(agent);
  REQUIRE(agent->keys.size() == 1);
  CHECK_FALSE(agent->keys[0].expires_at.has_value());
}

inline void credentials_set_grants(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = clock.wall_now();
  REQUIRE(s->credentials().create_principal(
      make_principal(principal_kind::commander, "c1", t0, {make_key("h", t0)}, {"agent-1"})));
  REQUIRE(s->credentials().create_principal(make_principal(principal_kind::commander, "c2", t0, {}, {"agent-9"})));
  REQUIRE(s->credentials().set_grants(principal_kind::commander, "c1", {"agent-3", "agent-2", "agent-1"}));
  auto p = s->credentials().find_principal(principal_kind::commander, "c1");
  REQUIRE(p);
  CHECK(p->grants == std::vector<std::string>{"agent-3", "agent-2", "agent-1"});
  REQUIRE(p->keys.size() == 1);  // keys are untouched
  CHECK(p->keys[0].key_hash == "h");

  REQUIRE(s->credentials().set_grants(principal_kind::commander, "c1", {}));
  p = s->credentials().find_principal(principal_kind::commander, "c1");
  REQUIRE(p);
  CHECK(p->grants.empty());
  auto other = s->credentials().find_principal(principal_kind::commander, "c2");
  REQUIRE(other);
  CHECK(other->grants == std::vector<std::string>{"agent-9"});
}

inline void credentials_delete(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = clock.wall_now();
  REQUIRE(s->credentials().create_principal(
      make_principal(principal_kind::agent, "a1", t0, {make_key("old-1", t0), make_key("old-2", t0)}, {"c1"})));
  REQUIRE(s->credentials().create_principal(make_principal(principal_kind::commander, "a1", t0, {make_key("c", t0)})));
  REQUIRE(s->credentials().delete_principal(principal_kind::agent, "a1"));
  CHECK(s->credentials().find_principal(principal_kind::agent, "a1").error() == errc::not_found);
  CHECK(s->credentials().delete_principal(principal_kind::agent, "a1").error() == errc::not_found);
  CHECK(s->credentials().find_principal(principal_kind::commander, "a1"));
  // Re-creating the id starts clean: no key or grant of the deleted principal survives.
  REQUIRE(s->credentials().create_principal(make_principal(principal_kind::agent, "a1", t0, {make_key("fresh", t0)})));
  auto p = s->credentials().find_principal(principal_kind::agent, "a1");
  REQUIRE(p);
  REQUIRE(p->keys.size() == 1);
  CHECK(p->keys[0].key_hash == "fresh");
  CHECK(p->grants.empty());
}

// ------------------------------------------------------------------ audit

inline void audit_round_trip(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto none = s->audit().query(audit_query{});
  REQUIRE(none);
  CHECK(none->empty());
  const audit_event e{clock.wall_now(), audit_kind::authentication, "conn:17", "login", "user:3", "denied",
                      "bad password"};
  REQUIRE(s->audit().append(e));
  auto got = s->audit().query(audit_query{});
  REQUIRE(got);
  REQUIRE(got->size() == 1);
  const auto& g = (*got)[0];
  CHECK(g.at == e.at);
  CHECK(g.kind == e.kind);
  CHECK(g.actor == e.actor);
  CHECK(g.action == e.action);
  CHECK(g.target == e.target);
  CHECK(g.outcome == e.outcome);
  CHECK(g.detail == e.detail);

  // record() (the audit_sink entry point) stores too.
  clock.advance(1s);
  static_cast<audit_sink&>(s->audit()).record(make_event(clock.wall_now(), audit_kind::security_event, "recorded"));
  got = s->audit().query(audit_query{});
  REQUIRE(got);
  CHECK(actions(*got) == std::vector<std::string>{"recorded", "login"});
}

inline void audit_order_filter_limit(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = clock.wall_now();
  // Appended out of time order on purpose: the query orders by time, newest first.
  REQUIRE(s->audit().append(make_event(t0 + 2s, audit_kind::site_operation, "site.update")));
  REQUIRE(s->audit().append(make_event(t0, audit_kind::site_operation, "site.create")));
  REQUIRE(s->audit().append(make_event(t0 + 5s, audit_kind::security_event, "forged_commander_id")));
  REQUIRE(s->audit().append(make_event(t0 + 3s, audit_kind::authentication, "login")));
  REQUIRE(s->audit().append(make_event(t0 + 9s, audit_kind::site_operation, "site.delete")));
  // Same second: the later-appended one counts as newer.
  REQUIRE(s->audit().append(make_event(t0 + 9s, audit_kind::administration, "user.create")));

  auto all = s->audit().query(audit_query{});
  REQUIRE(all);
  CHECK(actions(*all) == std::vector<std::string>{"user.create", "site.delete", "forged_commander_id", "login",
                                                  "site.update", "site.create"});
  auto sites = s->audit().query(audit_query{audit_kind::site_operation, 100});
  REQUIRE(sites);
  CHECK(actions(*sites) == std::vector<std::string>{"site.delete", "site.update", "site.create"});
  auto two = s->audit().query(audit_query{std::nullopt, 2});
  REQUIRE(two);
  CHECK(actions(*two) == std::vector<std::string>{"user.create", "site.delete"});
  auto one_site = s->audit().query(audit_query{audit_kind::site_operation, 1});
  REQUIRE(one_site);
  CHECK(actions(*one_site) == std::vector<std::string>{"site.delete"});
  auto zero = s->audit().query(audit_query{std::nullopt, 0});
  REQUIRE(zero);
  CHECK(zero->empty());
  auto admin = s->audit().query(audit_query{audit_kind::administration, 100});
  REQUIRE(admin);
  CHECK(actions(*admin) == std::vector<std::string>{"user.create"});

  // The default limit is 100.
  for (int i = 0; i < 120; ++i)
    REQUIRE(s->audit().append(make_event(t0 + 1h + std::chrono::seconds{i}, audit_kind::authentication,
                                         "bulk-" + std::to_string(i))));
  auto capped = s->audit().query(audit_query{});
  REQUIRE(capped);
  REQUIRE(capped->size() == 100);
  CHECK(capped->front().action == "bulk-119");
  CHECK(capped->back().action == "bulk-20");
}

inline void audit_since(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = from_unix_seconds(to_unix_seconds(clock.wall_now()));
  REQUIRE(s->audit().append(make_event(t0, audit_kind::security_event, "old-security")));
  REQUIRE(s->audit().append(make_event(t0 + 10s, audit_kind::site_operation, "site.create")));
  REQUIRE(s->audit().append(make_event(t0 + 10s, audit_kind::security_event, "edge-security")));
  REQUIRE(s->audit().append(make_event(t0 + 20s, audit_kind::security_event, "new-security")));

  // Inclusive, newest first, combined with the kind and the limit.
  auto since = s->audit().query(audit_query{std::nullopt, 100, t0 + 10s});
  REQUIRE(since);
  CHECK(actions(*since) == std::vector<std::string>{"new-security", "edge-security", "site.create"});
  auto security = s->audit().query(audit_query{audit_kind::security_event, 100, t0 + 10s});
  REQUIRE(security);
  CHECK(actions(*security) == std::vector<std::string>{"new-security", "edge-security"});
  auto one = s->audit().query(audit_query{audit_kind::security_event, 1, t0 + 10s});
  REQUIRE(one);
  CHECK(actions(*one) == std::vector<std::string>{"new-security"});
  // Sub-seconds are ignored: stored times are whole seconds.
  auto fraction = s->audit().query(audit_query{audit_kind::security_event, 100, t0 + 10s + 500ms});
  REQUIRE(fraction);
  CHECK(actions(*fraction) == std::vector<std::string>{"new-security", "edge-security"});
  auto later = s->audit().query(audit_query{std::nullopt, 100, t0 + 21s});
  REQUIRE(later);
  CHECK(later->empty());
  auto everything = s->audit().query(audit_query{std::nullopt, 100, from_unix_seconds(0)});
  REQUIRE(everything);
  CHECK(everything->size() == 4);
}

// ------------------------------------------------------------------ cross-cutting

inline void timestamps_whole_seconds(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  clock.advance(1500ms);
  const auto truncated = from_unix_seconds(to_unix_seconds(clock.wall_now()));
  REQUIRE(truncated != clock.wall_now());
  auto u = make_user(*s, "alice", clock.wall_now());
  CHECK(u.created_at == truncated);
  CHECK(s->users().find_user(u.id)->created_at == truncated);
  auto r = make_site(*s, u.id, "blog", clock.wall_now());
  CHECK(r.created_at == truncated);
  CHECK(r.updated_at == truncated);
  auto d = s->sites().record_deploy(r.id, deploy_update{"deployed", "a", clock.wall_now()}, clock.wall_now());
  REQUIRE(d);
  CHECK(*d->last_deploy_date == truncated);
  REQUIRE(s->audit().append(make_event(clock.wall_now(), audit_kind::site_operation, "x")));
  CHECK(s->audit().query(audit_query{})->front().at == truncated);
  REQUIRE(s->credentials().create_principal(
      make_principal(principal_kind::agent, "a1", clock.wall_now(), {make_key("h", clock.wall_now(), clock.wall_now())})));
  auto p = s->credentials().find_principal(principal_kind::agent, "a1");
  REQUIRE(p);
  CHECK(p->created_at == truncated);
  CHECK(p->keys[0].created_at == truncated);
  CHECK(*p->keys[0].expires_at == truncated);
}

inline void strings_stored_verbatim(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const std::vector<std::string> nasty = {
      "'; DROP TABLE sites; --",
      "Robert'); DROP TABLE users;--",
      "quote \" double ' single ` back",
      "percent % underscore _ star * question ?",
      "unicode: caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x8d\x8b",
      "line\nbreak\ttab",
      "' OR '1'='1",
  };
  std::int64_t expected_id = 0;
  for (const auto& text : nasty) {
    CAPTURE(text);
    auto u = s->users().create_user(text, text, user_role::user, clock.wall_now());
    REQUIRE(u);
    CHECK(u->id == user_id{++expected_id});
    auto by_name = s->users().find_user_by_name(text);
    REQUIRE(by_name);
    CHECK(by_name->name == text);
    CHECK(by_name->password_hash == text);
    auto site = s->sites().create_site(new_site{text, text, u->id, agent_id{text}}, clock.wall_now());
    REQUIRE(site);
    auto found = s->sites().find_site(u->id, site->id);
    REQUIRE(found);
    CHECK(found->name == text);
    CHECK(found->url == text);
    CHECK(found->agent.value() == text);
    auto dep = s->sites().record_deploy(site->id, deploy_update{text, text, std::nullopt}, clock.wall_now());
    REQUIRE(dep);
    CHECK(dep->deploy_status == text);
    CHECK(dep->deployer_id == text);
    REQUIRE(s->credentials().create_principal(
        make_principal(principal_kind::agent, text, clock.wall_now(), {make_key(text, clock.wall_now())}, {text})));
    auto p = s->credentials().find_principal(principal_kind::agent, text);
    REQUIRE(p);
    CHECK(p->id == text);
    CHECK(p->keys.at(0).key_hash == text);
    CHECK(p->grants == std::vector<std::string>{text});
    REQUIRE(s->audit().append(audit_event{clock.wall_now(), audit_kind::security_event, text, text, text, text, text}));
    auto e = s->audit().query(audit_query{std::nullopt, 1});
    REQUIRE(e);
    REQUIRE(e->size() == 1);
    CHECK(e->front().actor == text);
    CHECK(e->front().detail == text);
    clock.advance(1s);
  }
  // Nothing was dropped or matched by pattern: every user and site is still there, one site each.
  auto users = s->users().list_users();
  REQUIRE(users);
  CHECK(users->size() == nasty.size());
  for (const auto& u : *users) CHECK(s->sites().list_sites(u.id)->size() == 1);
  CHECK(s->users().find_user_by_name("%").error() == errc::not_found);
  CHECK(s->users().find_user_by_name("' OR '1'='1' --").error() == errc::not_found);
}

inline void login_failures_count_and_forget(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  auto& f = s->login_failures();
  const wall_time t0 = clock.wall_now();
  const std::vector<std::string> keys{"10.0.0.1\nalice", "addr:10.0.0.1", "user:alice"};
  REQUIRE(f.record_login_failure(keys, t0, t0 - 900s));
  REQUIRE(f.record_login_failure({keys[0], keys[2]}, t0 + 10s, t0 - 890s));
  auto counted = f.count_login_failures(keys, {t0, t0, t0 + 5s}, t0 + 10s);
  REQUIRE(counted);
  CHECK(*counted == std::vector<std::size_t>{2, 1, 1});
  // Only [since, until]: failures after `until` (a wall clock stepped back) do not count.
  CHECK(*f.count_login_failures(keys, {t0, t0, t0}, t0 + 5s) == std::vector<std::size_t>{1, 1, 1});
  CHECK(*f.count_login_failures({"user:nobody"}, {t0}, t0 + 10s) == std::vector<std::size_t>{0});
  // Clearing one key leaves the others.
  REQUIRE(f.clear_login_failures(keys[0]));
  CHECK(*f.count_login_failures(keys, {t0, t0, t0}, t0 + 10s) == std::vector<std::size_t>{0, 1, 2});
  // Recording forgets every row older than forget_before, whatever its key.
  REQUIRE(f.record_login_failure({"user:bob"}, t0 + 20s, t0 + 5s));
  CHECK(*f.count_login_failures(keys, {t0 - 1h, t0 - 1h, t0 - 1h}, t0 + 1h) == std::vector<std::size_t>{0, 0, 1});
  CHECK(*f.count_login_failures({"user:bob"}, {t0}, t0 + 20s) == std::vector<std::size_t>{1});
  // Keys are stored verbatim (any bytes a name or an address may bring).
  const std::string odd = "addr:' OR 1=1 --\n%_\xc3\xa9";
  REQUIRE(f.record_login_failure({odd}, t0 + 30s, t0));
  CHECK(*f.count_login_failures({odd, "addr:%"}, {t0, t0}, t0 + 30s) == std::vector<std::size_t>{1, 0});
}

// ------------------------------------------------------------------ audit chain and review

inline std::vector<audit_record> whole_chain(citrus::storage& s) {
  auto all = s.audit().chain(1, std::numeric_limits<std::int64_t>::max(), 100000);
  REQUIRE(all);
  return *all;
}

inline void audit_chain_links(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  CHECK(whole_chain(*s).empty());
  for (int i = 0; i < 5; ++i)
    REQUIRE(s->audit().append(make_event(clock.wall_now() + std::chrono::seconds{i}, audit_kind::site_operation,
                                         "op-" + std::to_string(i))));
  const auto all = whole_chain(*s);
  REQUIRE(all.size() == 5);
  std::string prev(audit_genesis_hash());
  for (std::size_t i = 0; i < all.size(); ++i) {
    CHECK(all[i].id == static_cast<std::int64_t>(i + 1));
    CHECK(all[i].event.action == "op-" + std::to_string(i));
    CHECK(all[i].prev_hash == prev);
    CHECK(all[i].hash.size() == 64);
    CHECK(all[i].hash == audit_chain_hash(all[i].event, all[i].prev_hash));
    prev = all[i].hash;
  }
  audit_chain_verifier verifier;
  for (const auto& r : all) verifier.feed(r);
  CHECK(verifier.intact());
  CHECK(verifier.checked() == 5);
  CHECK(verifier.head_hash() == all.back().hash);

  auto range = s->audit().chain(2, 4, 100);
  REQUIRE(range);
  REQUIRE(range->size() == 3);
  CHECK(range->front().id == 2);
  CHECK(range->back().id == 4);
  CHECK(s->audit().chain(2, 4, 2)->size() == 2);
  CHECK(s->audit().chain(6, 9, 100)->empty());
  auto before = s->audit().chain_before(3);
  REQUIRE(before);
  REQUIRE(before->has_value());
  CHECK((*before)->id == 2);
  CHECK((*before)->hash == all[1].hash);
  CHECK_FALSE(s->audit().chain_before(1)->has_value());
  CHECK((*s->audit().chain_before(100))->id == 5);
}

inline void audit_append_all(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  REQUIRE(s->audit().append(make_event(clock.wall_now(), audit_kind::site_operation, "first")));
  REQUIRE(s->audit().append_all({make_event(clock.wall_now(), audit_kind::site_operation, "a"),
                                 make_event(clock.wall_now(), audit_kind::security_event, "b"),
                                 make_event(clock.wall_now(), audit_kind::authentication, "c")}));
  REQUIRE(s->audit().append_all({}));
  const auto all = whole_chain(*s);
  REQUIRE(all.size() == 4);
  CHECK(all[1].event.action == "a");
  CHECK(all[3].event.action == "c");
  audit_chain_verifier verifier;
  for (const auto& r : all) verifier.feed(r);
  CHECK(verifier.intact());
}

inline void audit_review_filters(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  const auto t0 = clock.wall_now();
  auto ev = [&](std::chrono::seconds dt, audit_kind kind, std::string actor, std::string action, std::string outcome) {
    REQUIRE(s->audit().append(audit_event{t0 + dt, kind, std::move(actor), std::move(action), "", std::move(outcome), ""}));
  };
  ev(0s, audit_kind::security_event, "user:2", "site.get", "denied");          // 1 flagged
  ev(1s, audit_kind::authentication, "addr:10.0.0.1", "login", "denied");      // 2 flagged
  ev(2s, audit_kind::authentication, "addr:10.0.0.1", "login", "ok");          // 3
  ev(3s, audit_kind::site_operation, "user:2", "site.create", "ok");           // 4
  ev(4s, audit_kind::security_event, "agent:a1", "unknown_request", "dropped");  // 5 flagged
  auto ids = [](const std::vector<audit_record>& rs) {
    std::vector<std::int64_t> out;
    for (const auto& r : rs) out.push_back(r.id);
    return out;
  };
  auto all = s->audit().review(audit_review_query{});
  REQUIRE(all);
  CHECK(ids(*all) == std::vector<std::int64_t>{5, 2, 1});  // flagged only, newest first
  audit_review_query q;
  q.actor = "user:2";
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{1});
  q = {};
  q.kind = audit_kind::authentication;
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{2});
  q = {};
  q.outcome = "dropped";
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{5});
  q = {};
  q.since = t0 + 1s;
  q.until = t0 + 3s;
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{2});
  q = {};
  q.limit = 1;
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{5});
  // Every event, with the same filters.
  q = {};
  q.flagged_only = false;
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{5, 4, 3, 2, 1});
  q.actor = "addr:10.0.0.1";
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{3, 2});
  q.outcome = "ok";
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{3});
  q = {};
  q.flagged_only = false;
  q.since = t0 + 3s;
  CHECK(ids(*s->audit().review(q)) == std::vector<std::int64_t>{5, 4});
  CHECK(*s->audit().count_unacknowledged() == 3);
}

inline void audit_acknowledge(const storage_factory& make) {
  auto s = make();
  memory::manual_clock clock;
  REQUIRE(s->audit().append(make_event(clock.wall_now(), audit_kind::security_event, "forged_commander_id")));
  REQUIRE(s->audit().append(make_event(clock.wall_now(), audit_kind::site_operation, "site.create")));
  const auto before = whole_chain(*s);
  clock.advance(90s);
  REQUIRE(s->audit().acknowledge(1, "user:7", clock.wall_now()));
  CHECK(s->audit().acknowledge(1, "user:8", clock.wall_now()).error() == errc::conflict);
  CHECK(s->audit().acknowledge(2, "user:7", clock.wall_now()).error() == errc::not_found);  // not flagged
  CHECK(s->audit().acknowledge(99, "user:7", clock.wall_now()).error() == errc::not_found);
  CHECK(*s->audit().count_unacknowledged() == 0);

  auto reviewed = s->audit().review(audit_review_query{});
  REQUIRE(reviewed);
  REQUIRE(reviewed->size() == 1);
  REQUIRE(reviewed->front().ack);
  CHECK(reviewed->front().ack->by == "user:7");
  CHECK(reviewed->front().ack->at == from_unix_seconds(to_unix_seconds(clock.wall_now())));
  audit_review_query open;
  open.unacknowledged_only = true;
  CHECK(s->audit().review(open)->empty());

  // The acknowledgement is itself in the chain, after the rows it leaves untouched.
  const auto after = whole_chain(*s);
  REQUIRE(after.size() == 3);
  CHECK(after[0].hash == before[0].hash);
  CHECK(after[1].hash == before[1].hash);
  CHECK(after[2].event.kind == audit_kind::administration);
  CHECK(after[2].event.action == "audit.ack");
  CHECK(after[2].event.actor == "user:7");
  CHECK(after[2].event.target == "audit:1");
  audit_chain_verifier verifier;
  for (const auto& r : after) verifier.feed(r);
  CHECK(verifier.intact());
}

// ------------------------------------------------------------------ account state and logout

inline void users_disable_and_password(const storage_factory& make) {
  memory::manual_clock clock;
  auto s = make();
  const auto alice = make_user(*s, "alice", clock.wall_now());
  CHECK_FALSE(alice.disabled);
  REQUIRE(s->users().set_disabled(alice.id, true));
  CHECK(s->users().find_user(alice.id)->disabled);
  CHECK(s->users().find_user_by_name("alice")->disabled);
  CHECK(s->users().list_users()->at(0).disabled);
  REQUIRE(s->users().set_disabled(alice.id, false));
  CHECK_FALSE(s->users().find_user(alice.id)->disabled);

  REQUIRE(s->users().set_password_hash(alice.id, "hash-new"));
  CHECK(s->users().find_user(alice.id)->password_hash == "hash-new");
  CHECK(s->users().set_disabled(user_id{99}, true).error() == errc::not_found);
  CHECK(s->users().set_password_hash(user_id{99}, "x").error() == errc::not_found);
}

inline void users_revoked_tokens(const storage_factory& make) {
  memory::manual_clock clock;
  auto s = make();
  const wall_time now = clock.wall_now();
  CHECK_FALSE(*s->users().is_token_revoked("jti-1"));
  REQUIRE(s->users().revoke_token("jti-1", now + 60s, now));
  REQUIRE(s->users().revoke_token("jti-1", now + 60s, now));  // twice is not an error
  REQUIRE(s->users().revoke_token("jti-2", now + 3600s, now));
  CHECK(*s->users().is_token_revoked("jti-1"));
  CHECK(*s->users().is_token_revoked("jti-2"));
  CHECK_FALSE(*s->users().is_token_revoked("jti-3"));
  // A record whose token has expired is forgotten at the next revocation; the others stay.
  REQUIRE(s->users().revoke_token("jti-3", now + 7200s, now + 120s));
  CHECK_FALSE(*s->users().is_token_revoked("jti-1"));
  CHECK(*s->users().is_token_revoked("jti-2"));
  CHECK(*s->users().is_token_revoked("jti-3"));
}

}  // namespace citrus::conformance

// ------------------------------------------------------------------ registration
#define CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, name, fn) \
  TEST_CASE(prefix " conformance: " name) { ::citrus::conformance::fn(factory); }

/// Registers every conformance test; `factory` is an expression convertible to storage_factory.
#define CITRUS_STORAGE_CONFORMANCE(prefix, factory)                                                               \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "users create and find", users_create_and_find)                \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "users not found", users_not_found)                            \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "users conflict on a taken name", users_conflict)              \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "users list ordered by id", users_list_ordered)                \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "delete_user cascades to sites", users_delete_cascades_to_sites) \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "user ids never reused", users_ids_never_reused)               \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "users disabled and password reset", users_disable_and_password) \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "revoked tokens", users_revoked_tokens)                        \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "sites create and find", sites_create_and_find)                \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "create_site for unknown owner", sites_create_for_unknown_owner) \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "sites owner-scoped reads", sites_owner_scoped_reads)          \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "sites owner-scoped writes", sites_owner_scoped_writes)        \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "update_site", sites_update)                                    \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "delete_site", sites_delete)                                    \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "record_deploy", sites_record_deploy)                          \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "principals create and find", credentials_create_and_find)     \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "principals conflict and not found",                           \
                                  credentials_conflict_and_not_found)                                             \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "list_principals", credentials_list)                           \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "rotate_key", credentials_rotate_key)                          \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "set_grants", credentials_set_grants)                          \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "delete_principal", credentials_delete)                        \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "audit round trip", audit_round_trip)                          \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "audit order filter and limit", audit_order_filter_limit)      \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "audit since a time", audit_since)                             \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "audit hash chain links", audit_chain_links)                    \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "audit append_all in order", audit_append_all)                 \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "audit review filters", audit_review_filters)                   \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "audit acknowledge", audit_acknowledge)                         \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "timestamps have whole-second resolution",                     \
                                  timestamps_whole_seconds)                                                       \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "strings stored verbatim", strings_stored_verbatim)           \
  CITRUS_STORAGE_CONFORMANCE_CASE(prefix, factory, "login failures count and forget", login_failures_count_and_forget)
