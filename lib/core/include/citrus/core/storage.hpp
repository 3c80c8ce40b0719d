#pragma once
/// Storage interfaces: users, sites, commander/agent credentials and the audit trail.
/// Implementations: citrus::memory (in-memory, for tests and embedders), citrus::sqlite and citrus::postgres.
/// Every implementation passes the same conformance suite (tests/unit/storage_conformance.hpp).
///
/// Threading: an implementation is used from one thread at a time unless it says otherwise. Callers on
/// an event loop never call it there: they go through a storage_executor (storage_executor.hpp), whose
/// promises (two ordered lanes, bounded, never blocking, answers on the loop) hold for every adapter
/// behind it; citrus::worker gives each lane its own instance (its own connection). Adapters keep their
/// calls bounded in time (SQLite: the busy timeout; PostgreSQL: connect, statement and client-side
/// timeouts), so a lane is never stuck for longer.
/// Errors: errc::not_found, errc::conflict, errc::storage_unavailable, errc::storage_full;
/// a failed write has changed nothing.
#include <optional>
#include <string>
#include <vector>

#include "citrus/core/audit.hpp"
#include "citrus/core/audit_chain.hpp"
#include "citrus/core/clock.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/result.hpp"

namespace citrus {

// ---------------------------------------------------------------- users
enum class user_role { user, admin };
std::string_view to_string(user_role role) noexcept;

struct user_record {
  user_id id;
  std::string name;
  std::string password_hash;  ///< argon2id string (citrus/core/password.hpp); never a password
  user_role role = user_role::user;
  wall_time created_at{};
  /// An administrator disabled the account: no login, and its tokens are refused at their next use.
  bool disabled = false;
};

class user_store {
 public:
  virtual ~user_store() = default;
  /// errc::conflict when the name is taken.
  virtual result<user_record> create_user(std::string_view name, std::string_view password_hash, user_role role,
                                          wall_time now) = 0;
  virtual result<user_record> find_user(user_id id) = 0;
  virtual result<user_record> find_user_by_name(std::string_view name) = 0;
  virtual result<std::vector<user_record>> list_users() = 0;
  /// Deletes the user and their sites.
  virtual result<void> delete_user(user_id id) = 0;
  /// errc::not_found when there is no such user.
  virtual result<void> set_disabled(user_id id, bool disabled) = 0;
  /// Replaces the password hash; errc::not_found when there is no such user.
  virtual result<void> set_password_hash(user_id id, std::string_view password_hash) = 0;

  /// Logout: the token whose "jti" is `token_id` is refused from now on, by every backend of the
  /// database. Kept until `expires_at` (the token's own expiry, after which it is refused anyway);
  /// records that expired before `now` are removed on the way. Revoking twice is not an error.
  virtual result<void> revoke_token(std::string_view token_id, wall_time expires_at, wall_time now) = 0;
  virtual result<bool> is_token_revoked(std::string_view token_id) = 0;
};

// ---------------------------------------------------------------- sites
struct site_record {
  site_id id;
  std::string name;
  std::string url;
  user_id owner;                  ///< sites.user_id
  agent_id agent;                 ///< the agent that hosts the site
  wall_time created_at{};
  wall_time updated_at{};
  std::string deployer_id;        ///< the agent that ran the last deploy
  std::string deploy_status;      ///< "", "pending", "deploying", "deployed", "failed", ...
  std::optional<wall_time> last_deploy_date;
  /// 1 when created, one more on every change: a reader that sees two copies of a site (a REST answer
  /// and a pushed update racing each other) keeps the higher one. Seconds in updated_at cannot order
  /// two changes made in the same second.
  std::uint64_t revision = 0;
  /// While deploy_status is "creating" or "deploying": the backend (its commander id) whose request
  /// that is, so that a restarting backend fails only its own (fail_interrupted_operations); "" otherwise.
  std::string operation_by;
};

struct new_site {
  std::string name;
  std::string url;
  user_id owner;
  agent_id agent;
};

struct site_changes {
  std::optional<std::string> name;
  std::optional<std::string> url;
};

struct deploy_update {
  std::string deploy_status;
  std::string deployer_id;
  std::optional<wall_time> last_deploy_date;  ///< set when a deploy completed
  std::string operation_by{};                 ///< site_record::operation_by from now on
};

/// Site queries are scoped to their owner by construction: there is no way to read or change a site
/// without naming the user it must belong to (a site of another user answers errc::not_found, like a
/// missing one). The only unscoped write is record_deploy(), driven by agent status updates for a
/// request the backend itself started.
class site_store {
 public:
  virtual ~site_store() = default;
  virtual result<site_record> create_site(const new_site& site, wall_time now) = 0;
  virtual result<site_record> find_site(user_id owner, site_id id) = 0;
  virtual result<std::vector<site_record>> list_sites(user_id owner) = 0;
  virtual result<site_record> update_site(user_id owner, site_id id, const site_changes& changes, wall_time now) = 0;
  virtual result<void> delete_site(user_id owner, site_id id) = 0;
  virtual result<site_record> record_deploy(site_id id, const deploy_update& update, wall_time now) = 0;
};

// ---------------------------------------------------------------- commander and agent credentials
/// Commanders (backends) and agents connect to the hub; a hub calls the backend's /api/verify-agent.
enum class principal_kind { commander, agent, hub };
std::string_view to_string(principal_kind kind) noexcept;

struct key_record {
  std::string key_hash;                 ///< citrus/core/keys.hpp format; never the key
  wall_time created_at{};
  std::optional<wall_time> expires_at;  ///< set on rotation: the old key works until then
};

struct principal_record {
  principal_kind kind = principal_kind::agent;
  std::string id;                       ///< commander id or agent id (a wire id)
  std::vector<key_record> keys;
  /// Commanders: the agent ids they may command ("*" = all). Agents: the commanders they trust.
  std::vector<std::string> grants;
  wall_time created_at{};
};

class credential_store {
 public:
  virtual ~credential_store() = default;
  /// errc::conflict when (kind, id) exists.
  virtual result<void> create_principal(const principal_record& principal) = 0;
  virtual result<principal_record> find_principal(principal_kind kind, std::string_view id) = 0;
  virtual result<std::vector<principal_record>> list_principals(principal_kind kind) = 0;
  /// Sets expires_at on every key of (kind, id) that has none or a later one, then adds `key`,
  /// in one transaction (rotation with an overlap window).
  virtual result<void> rotate_key(principal_kind kind, std::string_view id, const key_record& key,
                                  wall_time old_keys_expire_at) = 0;
  virtual result<void> set_grants(principal_kind kind, std::string_view id, const std::vector<std::string>& grants) = 0;
  virtual result<void> delete_principal(principal_kind kind, std::string_view id) = 0;
};

// ---------------------------------------------------------------- audit trail
struct audit_query {
  std::optional<audit_kind> kind;
  std::size_t limit = 100;  ///< newest first
  std::optional<wall_time> since{};  ///< only events at or after this second (sub-seconds ignored)
};

/// The flagged events an administrator reviews (flagged_for_review()), newest first (by id: the
/// order they were recorded in); with flagged_only false, every event, filtered alike.
struct audit_review_query {
  std::optional<audit_kind> kind;
  std::optional<std::string> actor;    ///< exact
  std::optional<std::string> outcome;  ///< exact
  std::optional<wall_time> since;      ///< at or after (whole seconds)
  std::optional<wall_time> until;      ///< at or before (whole seconds)
  bool unacknowledged_only = false;
  std::size_t limit = 100;
  bool flagged_only = true;
};

/// The trail is a hash chain (citrus/core/audit_chain.hpp): append() links each event to the last one
/// stored, serialised across every connection and process that shares the database, so two writers
/// never fork the chain.
class audit_store : public audit_sink {
 public:
  /// Like record(), but reports whether the event was stored.
  virtual result<void> append(const audit_event& event) = 0;
  /// Appends `events` in order, all or none; SQLite and PostgreSQL do it in one transaction (one
  /// commit for a whole batch of the async writer).
  virtual result<void> append_all(const std::vector<audit_event>& events) {
    for (const auto& e : events)
      if (auto r = append(e); !r) return r;
    return {};
  }
  virtual result<std::vector<audit_event>> query(const audit_query& query) = 0;
  void record(audit_event event) override { (void)append(event); }
  bool try_record(audit_event event) override { return static_cast<bool>(append(event)); }

  /// Stored events with from_id <= id <= to_id, ascending by id, at most `limit`.
  virtual result<std::vector<audit_record>> chain(std::int64_t from_id, std::int64_t to_id, std::size_t limit) = 0;
  /// The last stored event with an id below `id`, or nullopt: where a range check starts from.
  virtual result<std::optional<audit_record>> chain_before(std::int64_t id) = 0;

  /// Flagged events (or all, audit_review_query::flagged_only) with their acknowledgement, newest first.
  virtual result<std::vector<audit_record>> review(const audit_review_query& query) = 0;
  /// How many flagged events nobody has acknowledged yet.
  virtual result<std::uint64_t> count_unacknowledged() = 0;
  /// Records that `by` acknowledged flagged event `id` at `at` (in a table of its own: the chain is
  /// never rewritten) and appends acknowledgement_event() to the chain, in one transaction.
  /// errc::not_found: no such event, or it is not flagged; errc::conflict: already acknowledged.
  virtual result<void> acknowledge(std::int64_t id, std::string_view by, wall_time at) = 0;
};

// ---------------------------------------------------------------- login failures
/// Wrong passwords, counted where every backend of a database sees them: the login throttles of
/// several backends behind one load balancer add up instead of each counting alone. Keys are the
/// throttle's own (a name, an address, a (name, address) pair); times are wall-clock seconds, the
/// only clock machines share.
class login_failure_store {
 public:
  virtual ~login_failure_store() = default;
  /// One failure of each key at `at`; rows older than `forget_before` (any key) are removed on the way,
  /// so the table holds only the longest window's worth.
  virtual result<void> record_login_failure(const std::vector<std::string>& keys, wall_time at, wall_time forget_before) = 0;
  /// For each key, the failures from the matching `since` to `until` (inclusive; same order). Failures
  /// after `until` — recorded before the wall clock was stepped back — do not count.
  virtual result<std::vector<std::size_t>> count_login_failures(const std::vector<std::string>& keys,
                                                                const std::vector<wall_time>& since, wall_time until) = 0;
  /// Forgets every failure of `key` (a successful login clears its (name, address) pair).
  virtual result<void> clear_login_failures(std::string_view key) = 0;
};

/// One database: the stores together.
class storage {
 public:
  virtual ~storage() = default;
  virtual user_store& users() = 0;
  virtual site_store& sites() = 0;
  virtual credential_store& credentials() = 0;
  virtual audit_store& audit() = 0;
  virtual login_failure_store& login_failures() = 0;
};

}  // namespace citrus
