// The audit hash chain on plain records: the encoding, and what the verifier reports for each kind of
// tampering (the stores' own chains are checked by the conformance suite and tests/sqlite, tests/postgres).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "citrus/core/audit_chain.hpp"
#include "citrus/core/audit_verify.hpp"
#include "citrus/memory/memory_storage.hpp"

namespace {

using namespace citrus;

audit_event event(long long at, std::string action, std::string detail = "") {
  return audit_event{from_unix_seconds(at), audit_kind::site_operation, "user:1", std::move(action), "site:1", "ok",
                     std::move(detail)};
}

/// A well-formed chain of `n` events, ids 1..n.
std::vector<audit_record> chain_of(int n) {
  std::vector<audit_record> out;
  std::string prev(audit_genesis_hash());
  for (int i = 1; i <= n; ++i) {
    audit_record r;
    r.id = i;
    r.event = event(1767225600 + i, "op-" + std::to_string(i));
    r.prev_hash = prev;
    r.hash = audit_chain_hash(r.event, prev);
    prev = r.hash;
    out.push_back(r);
  }
  return out;
}

std::vector<audit_break> verify(const std::vector<audit_record>& records) {
  audit_chain_verifier v;
  for (const auto& r : records) v.feed(r);
  return v.breaks();
}

TEST_CASE("audit chain: the hash covers every field and the previous hash") {
  const audit_event base = event(1767225600, "site.create", "d");
  const std::string prev(audit_genesis_hash());
  const std::string h = audit_chain_hash(base, prev);
  CHECK(h.size() == 64);
  CHECK(h.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(audit_chain_hash(base, prev) == h);  // deterministic
  auto changed = [&](auto mutate) {
    audit_event e = base;
    mutate(e);
    return audit_chain_hash(e, prev) != h;
  };
  CHECK(changed([](audit_event& e) { e.at += std::chrono::seconds{1}; }));
  CHECK(changed([](audit_event& e) { e.kind = audit_kind::security_event; }));
  CHECK(changed([](audit_event& e) { e.actor = "user:2"; }));
  CHECK(changed([](audit_event& e) { e.action = "site.delete"; }));
  CHECK(changed([](audit_event& e) { e.target = "site:2"; }));
  CHECK(changed([](audit_event& e) { e.outcome = "failed"; }));
  CHECK(changed([](audit_event& e) { e.detail = "e"; }));
  CHECK(audit_chain_hash(base, h) != h);
  // Length prefixes: moving a character from one field to the next changes the hash.
  audit_event a = base, b = base;
  a.actor = "user:1";
  a.action = "xsite.create";
  b.actor = "user:1x";
  b.action = "site.create";
  CHECK(audit_chain_hash(a, prev) != audit_chain_hash(b, prev));
}

TEST_CASE("audit chain: an intact chain has no breaks") { CHECK(verify(chain_of(6)).empty()); }

TEST_CASE("audit chain: an edited event is reported at that event only") {
  auto records = chain_of(6);
  records[2].event.detail = "rewritten";
  const auto breaks = verify(records);
  REQUIRE(breaks.size() == 1);
  CHECK(breaks[0].id == 3);
  CHECK(breaks[0].what == audit_break_kind::edited);
}

TEST_CASE("audit chain: an edited and re-hashed event breaks the link after it") {
  auto records = chain_of(6);
  records[2].event.detail = "rewritten";
  records[2].hash = audit_chain_hash(records[2].event, records[2].prev_hash);
  const auto breaks = verify(records);
  REQUIRE(breaks.size() == 1);
  CHECK(breaks[0].id == 4);
  CHECK(breaks[0].what == audit_break_kind::broken_link);
  CHECK(breaks[0].previous_id == 3);
}

TEST_CASE("audit chain: a deleted event breaks the link of its successor") {
  auto records = chain_of(6);
  records.erase(records.begin() + 3);  // id 4
  const auto breaks = verify(records);
  REQUIRE(breaks.size() == 1);
  CHECK(breaks[0].id == 5);
  CHECK(breaks[0].what == audit_break_kind::broken_link);
  CHECK(breaks[0].previous_id == 3);
  CHECK(describe(breaks[0]) ==
        "event 5: broken link (events deleted or reordered between event 3 and it, or an edited event re-hashed)");
}

TEST_CASE("audit chain: deleting the first event is caught at the start") {
  auto records = chain_of(3);
  records.erase(records.begin());
  const auto breaks = verify(records);
  REQUIRE(breaks.size() == 1);
  CHECK(breaks[0].id == 2);
  CHECK(breaks[0].previous_id == 0);
}

TEST_CASE("audit chain: two events swapped are reported") {
  auto records = chain_of(5);
  std::swap(records[1].event, records[2].event);
  std::swap(records[1].prev_hash, records[2].prev_hash);
  std::swap(records[1].hash, records[2].hash);  // whole rows moved: ids 2 and 3 exchanged contents
  const auto breaks = verify(records);
  REQUIRE_FALSE(breaks.empty());
  CHECK(breaks[0].id == 2);
  CHECK(breaks[0].what == audit_break_kind::broken_link);
  for (const auto& b : breaks) CHECK(b.what == audit_break_kind::broken_link);
}

TEST_CASE("audit verify: a range starts from the event stored before it") {
  memory::memory_storage store;
  for (int i = 1; i <= 30; ++i) REQUIRE(store.audit().append(event(1767225600 + i, "op")));
  auto whole = verify_audit_trail(store.audit(), 1, std::numeric_limits<std::int64_t>::max(), 7);  // several pages
  REQUIRE(whole);
  CHECK(whole->intact());
  CHECK(whole->checked == 30);
  CHECK(whole->last_id == 30);
  CHECK(whole->head_hash == (*store.audit().chain(30, 30, 1))[0].hash);
  auto range = verify_audit_trail(store.audit(), 11, 20);
  REQUIRE(range);
  CHECK(range->intact());
  CHECK(range->checked == 10);
  CHECK(range->last_id == 20);
  auto empty = verify_audit_trail(store.audit(), 31, 40);
  REQUIRE(empty);
  CHECK(empty->checked == 0);
  CHECK(empty->intact());
}

TEST_CASE("audit review: which events are flagged") {
  auto e = event(0, "x");
  CHECK_FALSE(flagged_for_review(e));
  e.kind = audit_kind::security_event;
  CHECK(flagged_for_review(e));
  e.kind = audit_kind::authentication;
  CHECK_FALSE(flagged_for_review(e));  // outcome ok
  e.outcome = "denied";
  CHECK(flagged_for_review(e));
  e.kind = audit_kind::administration;
  CHECK_FALSE(flagged_for_review(e));
}

}  // namespace
