#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "citrus/core/credentials.hpp"
#include "citrus/core/keys.hpp"
#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/seeded_random.hpp"

using namespace citrus;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

namespace {

/// memory_storage injects write faults only; this forwards to it and, on demand, fails reads or answers
/// a lookup with the record of the other kind (a store bug that must never authenticate anyone).
class faulty_store final : public credential_store {
 public:
  explicit faulty_store(credential_store& inner) : inner_(inner) {}
  errc read_error = errc::ok;
  bool swap_kind = false;

  result<void> create_principal(const principal_record& p) override { return inner_.create_principal(p); }
  result<principal_record> find_principal(principal_kind kind, std::string_view id) override {
    if (read_error != errc::ok) return read_error;
    if (swap_kind) kind = kind == principal_kind::agent ? principal_kind::commander : principal_kind::agent;
    return inner_.find_principal(kind, id);
  }
  result<std::vector<principal_record>> list_principals(principal_kind kind) override {
    if (read_error != errc::ok) return read_error;
    return inner_.list_principals(kind);
  }
  result<void> rotate_key(principal_kind kind, std::string_view id, const key_record& key, wall_time at) override {
    return inner_.rotate_key(kind, id, key, at);
  }
  result<void> set_grants(principal_kind kind, std::string_view id, const std::vector<std::string>& g) override {
    return inner_.set_grants(kind, id, g);
  }
  result<void> delete_principal(principal_kind kind, std::string_view id) override {
    return inner_.delete_principal(kind, id);
  }

 private:
  credential_store& inner_;
};

errc code(const std::error_code& e) {
  REQUIRE(e.category() == citrus_category());
  return static_cast<errc>(e.value());
}

struct fixture {
  memory::memory_storage storage;
  memory::manual_clock clock;
  memory::seeded_random random{2024};
  credential_service service{storage.credentials(), clock, random};

  std::string must_register(principal_kind kind, const std::string& id, std::vector<std::string> grants = {}) {
    auto key = service.register_principal(kind, id, grants);
    REQUIRE(key);
    return *key;
  }
  std::string must_rotate(principal_kind kind, const std::string& id, seconds overlap) {
    auto key = service.rotate(kind, id, overlap);
    REQUIRE(key);
    return *key;
  }
  errc verify_error(principal_kind kind, std::string_view id, std::string_view key) {
    auto r = service.verify(kind, id, key);
    return r ? errc::ok : code(r.error());
  }
  bool works(principal_kind kind, std::string_view id, std::string_view key) {
    return verify_error(kind, id, key) == errc::ok;
  }
};

}  // namespace

TEST_SUITE("credentials") {
  TEST_CASE_FIXTURE(fixture, "register then verify a commander and an agent") {
    const std::string commander = must_register(principal_kind::commander, "cmd-1", {"agent-1", "agent-2"});
    const std::string agent = must_register(principal_kind::agent, "agent-1", {"cmd-1"});
    CHECK(commander.rfind("ck_", 0) == 0);
    CHECK(agent.rfind("ak_", 0) == 0);

    auto c = service.verify(principal_kind::commander, "cmd-1", commander);
    REQUIRE(c);
    CHECK(c->kind == principal_kind::commander);
    CHECK(c->id == "cmd-1");
    CHECK(c->grants == std::vector<std::string>{"agent-1", "agent-2"});

    auto a = service.verify(principal_kind::agent, "agent-1", agent);
    REQUIRE(a);
    CHECK(a->kind == principal_kind::agent);
    CHECK(a->id == "agent-1");
    CHECK(a->grants == std::vector<std::string>{"cmd-1"});
  }

  TEST_CASE_FIXTURE(fixture, "the store holds a salted hash, never the key") {
    const std::string key = must_register(principal_kind::agent, "agent-1", {"*"});
    auto stored = storage.credentials().find_principal(principal_kind::agent, "agent-1");
    REQUIRE(stored);
    REQUIRE(stored->keys.size() == 1);
    const key_record& k = stored->keys[0];
    CHECK(k.key_hash.rfind("b2$", 0) == 0);
    CHECK(k.key_hash.find(key.substr(3)) == std::string::npos);
    CHECK(verify_key(key, k.key_hash));
    CHECK(k.created_at == clock.wall_now());
    CHECK_FALSE(k.expires_at.has_value());
    CHECK(stored->created_at == clock.wall_now());
    CHECK(stored->grants == std::vector<std::string>{"*"});
  }

  TEST_CASE_FIXTURE(fixture, "wrong keys are auth_failed") {
    const std::string key = must_register(principal_kind::commander, "cmd-1");
    const std::string other = must_register(principal_kind::commander, "cmd-2");
    std::string near = key;
    near.back() = near.back() == 'A' ? 'B' : 'A';
    for (const std::string& wrong :
         {other, near, std::string(), key.substr(0, key.size() - 1), key + "A", key.substr(3), std::string("*")}) {
      CAPTURE(wrong);
      CHECK(verify_error(principal_kind::commander, "cmd-1", wrong) == errc::auth_failed);
    }
    CHECK(works(principal_kind::commander, "cmd-1", key));
  }

  TEST_CASE_FIXTURE(fixture, "an unknown or malformed id is auth_failed, like a wrong key") {
    const std::string key = must_register(principal_kind::agent, "agent-1");
    CHECK(verify_error(principal_kind::agent, "agent-2", key) == errc::auth_failed);
    CHECK(verify_error(principal_kind::agent, "AGENT-1", key) == errc::auth_failed);
    CHECK(verify_error(principal_kind::agent, "", key) == errc::auth_failed);
    CHECK(verify_error(principal_kind::agent, "agent-1 ", key) == errc::auth_failed);
    CHECK(verify_error(principal_kind::agent, std::string("agent-1\0", 8), key) == errc::auth_failed);
    CHECK(verify_error(principal_kind::agent, std::string(129, 'a'), key) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "kind mismatch: an agent key never authenticates a commander of the same id") {
    const std::string agent_key = must_register(principal_kind::agent, "shared-id");
    CHECK(verify_error(principal_kind::commander, "shared-id", agent_key) == errc::auth_failed);
    const std::string commander_key = must_register(principal_kind::commander, "shared-id");
    CHECK(verify_error(principal_kind::commander, "shared-id", agent_key) == errc::auth_failed);
    CHECK(verify_error(principal_kind::agent, "shared-id", commander_key) == errc::auth_failed);
    CHECK(works(principal_kind::agent, "shared-id", agent_key));
    CHECK(works(principal_kind::commander, "shared-id", commander_key));
  }

  TEST_CASE_FIXTURE(fixture, "register validates the id and the grants") {
    for (const std::string& id : {std::string(), std::string("has space"), std::string("a/b"), std::string("a\"b"),
                                  std::string(129, 'a'), std::string("caf\xc3\xa9"), std::string("a\0b", 3)}) {
      CAPTURE(id);
      auto r = service.register_principal(principal_kind::agent, id, {});
      REQUIRE_FALSE(r);
      CHECK(code(r.error()) == errc::invalid_value);
    }
    auto bad_grant = service.register_principal(principal_kind::commander, "cmd-1", {"agent-1", "bad grant"});
    REQUIRE_FALSE(bad_grant);
    CHECK(code(bad_grant.error()) == errc::invalid_value);
    CHECK(code(storage.credentials().find_principal(principal_kind::commander, "cmd-1").error()) == errc::not_found);

    const std::string longest(128, 'z');
    CHECK(works(principal_kind::agent, longest, must_register(principal_kind::agent, longest)));
    CHECK(works(principal_kind::agent, "a.b_c:d-E9", must_register(principal_kind::agent, "a.b_c:d-E9")));
  }

  TEST_CASE_FIXTURE(fixture, "registering an existing principal is a conflict and leaves its key alone") {
    const std::string key = must_register(principal_kind::agent, "agent-1", {"cmd-1"});
    auto again = service.register_principal(principal_kind::agent, "agent-1", {"cmd-evil"});
    REQUIRE_FALSE(again);
    CHECK(code(again.error()) == errc::conflict);
    auto v = service.verify(principal_kind::agent, "agent-1", key);
    REQUIRE(v);
    CHECK(v->grants == std::vector<std::string>{"cmd-1"});
  }

  TEST_CASE_FIXTURE(fixture, "rotation: the old key works within the overlap, then fails, then the new key works") {
    const std::string old_key = must_register(principal_kind::agent, "agent-1");
    clock.advance(minutes(5));
    const std::string new_key = must_rotate(principal_kind::agent, "agent-1", hours(1));
    CHECK(new_key != old_key);
    CHECK(new_key.rfind("ak_", 0) == 0);
    CHECK(works(principal_kind::agent, "agent-1", old_key));
    CHECK(works(principal_kind::agent, "agent-1", new_key));

    clock.advance(hours(1) - seconds(1));
    CHECK(works(principal_kind::agent, "agent-1", old_key));
    clock.advance(seconds(1));  // exactly at the end of the overlap
    CHECK(verify_error(principal_kind::agent, "agent-1", old_key) == errc::auth_failed);
    CHECK(works(principal_kind::agent, "agent-1", new_key));
    clock.advance(hours(24 * 30));
    CHECK(verify_error(principal_kind::agent, "agent-1", old_key) == errc::auth_failed);
    CHECK(works(principal_kind::agent, "agent-1", new_key));
  }

  TEST_CASE_FIXTURE(fixture, "double rotation never extends the first key's overlap") {
    const wall_time start = clock.wall_now();
    const std::string k0 = must_register(principal_kind::commander, "cmd-1");
    const std::string k1 = must_rotate(principal_kind::commander, "cmd-1", hours(1));  // k0 until start+60m
    clock.advance(minutes(10));
    const std::string k2 = must_rotate(principal_kind::commander, "cmd-1", hours(1));  // k1 until start+70m
    CHECK(std::set<std::string>{k0, k1, k2}.size() == 3);

    auto stored = storage.credentials().find_principal(principal_kind::commander, "cmd-1");
    REQUIRE(stored);
    REQUIRE(stored->keys.size() == 3);
    CHECK(stored->keys[0].expires_at == start + hours(1));
    CHECK(stored->keys[1].expires_at == start + minutes(70));
    CHECK_FALSE(stored->keys[2].expires_at.has_value());

    clock.advance(minutes(20));  // start + 30m
    CHECK(works(principal_kind::commander, "cmd-1", k0));
    CHECK(works(principal_kind::commander, "cmd-1", k1));
    CHECK(works(principal_kind::commander, "cmd-1", k2));
    clock.advance(minutes(30));  // start + 60m
    CHECK(verify_error(principal_kind::commander, "cmd-1", k0) == errc::auth_failed);
    CHECK(works(principal_kind::commander, "cmd-1", k1));
    CHECK(works(principal_kind::commander, "cmd-1", k2));
    clock.advance(minutes(10));  // start + 70m
    CHECK(verify_error(principal_kind::commander, "cmd-1", k0) == errc::auth_failed);
    CHECK(verify_error(principal_kind::commander, "cmd-1", k1) == errc::auth_failed);
    CHECK(works(principal_kind::commander, "cmd-1", k2));
  }

  TEST_CASE_FIXTURE(fixture, "rotation with no overlap revokes the old key at once") {
    const std::string old_key = must_register(principal_kind::agent, "agent-1");
    const std::string new_key = must_rotate(principal_kind::agent, "agent-1", seconds(0));
    CHECK(verify_error(principal_kind::agent, "agent-1", old_key) == errc::auth_failed);
    CHECK(works(principal_kind::agent, "agent-1", new_key));
  }

  TEST_CASE_FIXTURE(fixture, "rotate: unknown principal, bad id, bad overlap") {
    must_register(principal_kind::agent, "agent-1");
    auto unknown = service.rotate(principal_kind::agent, "agent-2", hours(1));
    REQUIRE_FALSE(unknown);
    CHECK(code(unknown.error()) == errc::not_found);
    auto wrong_kind = service.rotate(principal_kind::commander, "agent-1", hours(1));
    REQUIRE_FALSE(wrong_kind);
    CHECK(code(wrong_kind.error()) == errc::not_found);
    auto bad_id = service.rotate(principal_kind::agent, "agent 1", hours(1));
    REQUIRE_FALSE(bad_id);
    CHECK(code(bad_id.error()) == errc::invalid_value);
    auto negative = service.rotate(principal_kind::agent, "agent-1", seconds(-1));
    REQUIRE_FALSE(negative);
    CHECK(code(negative.error()) == errc::invalid_value);
    auto forever = service.rotate(principal_kind::agent, "agent-1", hours(24 * 366));
    REQUIRE_FALSE(forever);
    CHECK(code(forever.error()) == errc::invalid_value);
    auto stored = storage.credentials().find_principal(principal_kind::agent, "agent-1");
    REQUIRE(stored);
    CHECK(stored->keys.size() == 1);
  }

  TEST_CASE_FIXTURE(fixture, "a storage fault on register returns the error and leaves no usable principal") {
    storage.fail_next_writes(1);
    auto failed = service.register_principal(principal_kind::agent, "agent-1", {});
    REQUIRE_FALSE(failed);
    CHECK(code(failed.error()) == errc::storage_unavailable);
    CHECK(code(storage.credentials().find_principal(principal_kind::agent, "agent-1").error()) == errc::not_found);
    CHECK(verify_error(principal_kind::agent, "agent-1", "") == errc::auth_failed);

    storage.fail_next_writes(1, errc::storage_full);
    auto full = service.register_principal(principal_kind::agent, "agent-1", {});
    REQUIRE_FALSE(full);
    CHECK(code(full.error()) == errc::storage_full);

    // The fault is spent: registering again succeeds, with a key unlike any handed out before.
    const std::string key = must_register(principal_kind::agent, "agent-1");
    CHECK(works(principal_kind::agent, "agent-1", key));
  }

  TEST_CASE_FIXTURE(fixture, "a storage fault on rotate changes nothing: the old key keeps working") {
    const std::string old_key = must_register(principal_kind::agent, "agent-1");
    storage.fail_next_writes(1);
    auto failed = service.rotate(principal_kind::agent, "agent-1", seconds(0));
    REQUIRE_FALSE(failed);
    CHECK(code(failed.error()) == errc::storage_unavailable);
    clock.advance(hours(2));
    CHECK(works(principal_kind::agent, "agent-1", old_key));
    auto stored = storage.credentials().find_principal(principal_kind::agent, "agent-1");
    REQUIRE(stored);
    CHECK(stored->keys.size() == 1);
    CHECK_FALSE(stored->keys[0].expires_at.has_value());
  }

  TEST_CASE("a storage fault on verify is storage_unavailable, never a success") {
    memory::memory_storage storage;
    memory::manual_clock clock;
    memory::seeded_random random(5);
    faulty_store store(storage.credentials());
    credential_service service(store, clock, random);
    auto key = service.register_principal(principal_kind::commander, "cmd-1", {"*"});
    REQUIRE(key);
    REQUIRE(service.verify(principal_kind::commander, "cmd-1", *key));

    for (errc failure : {errc::storage_unavailable, errc::storage_full, errc::internal_error, errc::conflict}) {
      CAPTURE(static_cast<int>(failure));
      store.read_error = failure;
      auto right = service.verify(principal_kind::commander, "cmd-1", *key);
      REQUIRE_FALSE(right);
      CHECK(code(right.error()) == errc::storage_unavailable);
      auto wrong = service.verify(principal_kind::commander, "cmd-1", "ck_wrong");
      REQUIRE_FALSE(wrong);
      CHECK(code(wrong.error()) == errc::storage_unavailable);
    }
    store.read_error = errc::not_found;  // the store says "no such principal": a plain authentication failure
    auto missing = service.verify(principal_kind::commander, "cmd-1", *key);
    REQUIRE_FALSE(missing);
    CHECK(code(missing.error()) == errc::auth_failed);
  }

  TEST_CASE("a store answering with the wrong principal authenticates nobody") {
    memory::memory_storage storage;
    memory::manual_clock clock;
    memory::seeded_random random(6);
    faulty_store store(storage.credentials());
    credential_service service(store, clock, random);
    auto agent_key = service.register_principal(principal_kind::agent, "x", {});
    REQUIRE(agent_key);
    store.swap_kind = true;  // verify(commander, "x") now receives agent "x" and its key hash
    auto r = service.verify(principal_kind::commander, "x", *agent_key);
    REQUIRE_FALSE(r);
    CHECK(code(r.error()) == errc::auth_failed);
    store.swap_kind = false;
    CHECK(service.verify(principal_kind::agent, "x", *agent_key));
  }

  TEST_CASE_FIXTURE(fixture, "keys are never equal across registrations") {
    std::set<std::string> keys;
    for (int i = 0; i < 50; ++i) {
      keys.insert(must_register(principal_kind::agent, "agent-" + std::to_string(i)));
      keys.insert(must_register(principal_kind::commander, "agent-" + std::to_string(i)));
    }
    CHECK(keys.size() == 100);
    // And every key opens only its own principal.
    const std::string a = must_register(principal_kind::agent, "x");
    const std::string b = must_register(principal_kind::agent, "y");
    CHECK(a != b);
    CHECK(verify_error(principal_kind::agent, "x", b) == errc::auth_failed);
    CHECK(verify_error(principal_kind::agent, "y", a) == errc::auth_failed);
  }

  TEST_CASE_FIXTURE(fixture, "records written by other means: no keys, or only expired keys, authenticate nobody") {
    principal_record empty;
    empty.kind = principal_kind::agent;
    empty.id = "empty";
    REQUIRE(storage.credentials().create_principal(empty));
    CHECK(verify_error(principal_kind::agent, "empty", "") == errc::auth_failed);

    memory::seeded_random other(77);
    const std::string key = generate_key(other, principal_kind::agent);
    principal_record expired;
    expired.kind = principal_kind::agent;
    expired.id = "expired";
    expired.keys.push_back(key_record{hash_key(key, other), clock.wall_now() - hours(2), clock.wall_now()});
    REQUIRE(storage.credentials().create_principal(expired));
    CHECK(verify_error(principal_kind::agent, "expired", key) == errc::auth_failed);

    principal_record live = expired;
    live.id = "live";
    live.keys[0].expires_at = clock.wall_now() + seconds(1);
    REQUIRE(storage.credentials().create_principal(live));
    CHECK(works(principal_kind::agent, "live", key));
  }
}
