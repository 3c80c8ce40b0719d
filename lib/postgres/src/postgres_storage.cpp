// citrus::postgres::postgres_storage on libpqxx 6.
//
// Rules of this file:
// - every query is a prepared statement with bound parameters; values never reach SQL text;
// - every write runs in a transaction (pqxx::work): a connection lost before COMMIT changed nothing,
//   one lost during COMMIT is the only "outcome unknown" (in_doubt_error), logged as such;
// - a constraint failure must not consume an identity value (PostgreSQL takes one even for a failed
//   INSERT): inserts check their precondition in the same statement (INSERT ... SELECT ... WHERE [NOT]
//   EXISTS), so only a concurrent race can skip an id;
// - every libpqxx exception is caught at the store boundary (session::guarded) and mapped to an errc;
// - site queries carry the owner in SQL (WHERE id = $1 AND user_id = $2);
// - text is ordered COLLATE "C", byte for byte like SQLite, whatever the database's collation.
#include "citrus/postgres/postgres_storage.hpp"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "conninfo.hpp"
#include "schema.hpp"
#include "session.hpp"

namespace citrus::postgres {
namespace {

using detail::statement;
using detail::text;

// ------------------------------------------------------------------ open errors

class open_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "citrus.postgres.open"; }
  std::string message(int ev) const override {
    switch (static_cast<open_errc>(ev)) {
      case open_errc::invalid_options:
        return "invalid postgres_options or connection string (timeouts out of range, or libpq cannot parse it)";
      case open_errc::cannot_connect:
        return "cannot connect to the PostgreSQL server (unreachable, refused the login, or no such database)";
      case open_errc::schema_too_new:
        return "the database was written by a newer version of Citrus (its schema version is above the supported "
               "one)";
      case open_errc::migration_failed: return "the database schema could not be created or upgraded";
    }
    return "unknown postgres open error";
  }
};

// ------------------------------------------------------------------ statements

#define CITRUS_SITE_COLUMNS \
  "id, name, url, user_id, agent_id, created_at, updated_at, deployer_id, deploy_status, last_deploy_date, revision, " \
  "operation_by"

constexpr statement insert_user{
    "insert_user",
    "INSERT INTO users (name, password_hash, role, created_at) SELECT $1::text, $2::text, $3::text, $4::bigint "
    "WHERE NOT EXISTS (SELECT 1 FROM users WHERE name = $1::text) RETURNING id"};
constexpr statement user_by_id{"user_by_id",
                               "SELECT id, name, password_hash, role, created_at, disabled FROM users WHERE id = $1"};
constexpr statement user_by_name{"user_by_name",
                                 "SELECT id, name, password_hash, role, created_at, disabled FROM users WHERE name = $1"};
constexpr statement all_users{"all_users", "SELECT id, name, password_hash, role, created_at, disabled FROM users ORDER BY id"};
constexpr statement delete_user_row{"delete_user", "DELETE FROM users WHERE id = $1"};  // sites: ON DELETE CASCADE
constexpr statement set_user_disabled{"set_user_disabled", "UPDATE users SET disabled = $2 WHERE id = $1"};
constexpr statement set_user_password{"set_user_password", "UPDATE users SET password_hash = $2 WHERE id = $1"};
constexpr statement forget_revoked_tokens{"forget_revoked_tokens", "DELETE FROM revoked_tokens WHERE expires_at < $1"};
constexpr statement insert_revoked_token{
    "insert_revoked_token",
    "INSERT INTO revoked_tokens (token_id, expires_at) VALUES ($1, $2) "
    "ON CONFLICT (token_id) DO UPDATE SET expires_at = excluded.expires_at"};
constexpr statement revoked_token{"revoked_token", "SELECT 1 FROM revoked_tokens WHERE token_id = $1"};

constexpr statement insert_site{
    "insert_site",
    "INSERT INTO sites (name, url, user_id, agent_id, created_at, updated_at) "
    "SELECT $1::text, $2::text, $3::bigint, $4::text, $5::bigint, $5::bigint "
    "WHERE EXISTS (SELECT 1 FROM users WHERE id = $3::bigint) RETURNING id, revision"};
constexpr statement owned_site{"owned_site",
                               "SELECT " CITRUS_SITE_COLUMNS " FROM sites WHERE id = $1 AND user_id = $2"};
constexpr statement sites_of{"sites_of", "SELECT " CITRUS_SITE_COLUMNS " FROM sites WHERE user_id = $1 ORDER BY id"};
constexpr statement update_site_row{
    "update_site",
    "UPDATE sites SET name = COALESCE($1::text, name), url = COALESCE($2::text, url), updated_at = $3, "
    "revision = revision + 1 WHERE id = $4 AND user_id = $5 RETURNING " CITRUS_SITE_COLUMNS};
constexpr statement delete_site_row{"delete_site", "DELETE FROM sites WHERE id = $1 AND user_id = $2"};
constexpr statement record_deploy_row{
    "record_deploy",
    "UPDATE sites SET deploy_status = $1, deployer_id = $2, last_deploy_date = COALESCE($3::bigint, last_deploy_date), "
    "updated_at = $4, revision = revision + 1, operation_by = $6 WHERE id = $5 RETURNING " CITRUS_SITE_COLUMNS};

constexpr statement insert_principal{
    "insert_principal",
    "INSERT INTO principals (kind, name, created_at) SELECT $1::text, $2::text, $3::bigint "
    "WHERE NOT EXISTS (SELECT 1 FROM principals WHERE kind = $1::text AND name = $2::text) RETURNING id"};
constexpr statement principal_by_name{"principal_by_name",
                                      "SELECT id, created_at FROM principals WHERE kind = $1 AND name = $2"};
constexpr statement lock_principal{"lock_principal",  // rotations and grant changes of one principal take turns
                                   "SELECT id FROM principals WHERE kind = $1 AND name = $2 FOR UPDATE"};
constexpr statement keys_of{
    "keys_of", "SELECT key_hash, created_at, expires_at FROM principal_keys WHERE principal_id = $1 ORDER BY id"};
constexpr statement grants_of{"grants_of",
                              "SELECT grant_id FROM principal_grants WHERE principal_id = $1 ORDER BY position"};
constexpr statement principals_of_kind{
    "principals_of_kind", "SELECT id, name, created_at FROM principals WHERE kind = $1 ORDER BY name COLLATE \"C\""};
constexpr statement keys_of_kind{
    "keys_of_kind",
    "SELECT k.principal_id, k.key_hash, k.created_at, k.expires_at FROM principal_keys k "
    "JOIN principals p ON p.id = k.principal_id WHERE p.kind = $1 ORDER BY k.principal_id, k.id"};
constexpr statement grants_of_kind{
    "grants_of_kind",
    "SELECT g.principal_id, g.grant_id FROM principal_grants g "
    "JOIN principals p ON p.id = g.principal_id WHERE p.kind = $1 ORDER BY g.principal_id, g.position"};
constexpr statement insert_key{
    "insert_key", "INSERT INTO principal_keys (principal_id, key_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)"};
constexpr statement insert_grant{"insert_grant",
                                 "INSERT INTO principal_grants (principal_id, position, grant_id) VALUES ($1, $2, $3)"};
constexpr statement expire_keys{
    "expire_keys",
    "UPDATE principal_keys SET expires_at = $1 WHERE principal_id = $2 AND (expires_at IS NULL OR expires_at > $1)"};
constexpr statement delete_grants{"delete_grants", "DELETE FROM principal_grants WHERE principal_id = $1"};
constexpr statement delete_principal_row{"delete_principal",  // keys and grants: ON DELETE CASCADE
                                         "DELETE FROM principals WHERE kind = $1 AND name = $2"};

#define CITRUS_AUDIT_COLUMNS "id, at, kind, actor, action, target, outcome, detail, prev_hash, hash"
#define CITRUS_FLAGGED "(e.kind = 'security_event' OR (e.kind = 'authentication' AND e.outcome <> 'ok'))"

/// pg_advisory_xact_lock key that serialises appends to the chain across connections and processes.
constexpr std::int64_t audit_chain_lock_key = 0x6369747275730002;  // "citrus", 2
constexpr statement lock_audit_chain{"lock_audit_chain", "SELECT pg_advisory_xact_lock(7163384717255049218)"};
static_assert(audit_chain_lock_key == 7163384717255049218, "the lock statement names the key");
constexpr statement audit_head{"audit_head", "SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1"};
constexpr statement insert_audit{
    "insert_audit",
    "INSERT INTO audit_events (at, kind, actor, action, target, outcome, detail, prev_hash, hash) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"};
constexpr statement audit_chain_range{"audit_chain_range", "SELECT " CITRUS_AUDIT_COLUMNS
                                                           " FROM audit_events WHERE id >= $1 AND id <= $2 "
                                                           "ORDER BY id LIMIT $3"};
constexpr statement audit_chain_before{
    "audit_chain_before", "SELECT " CITRUS_AUDIT_COLUMNS " FROM audit_events WHERE id < $1 ORDER BY id DESC LIMIT 1"};
constexpr statement audit_review{
    "audit_review",
    "SELECT e.id, e.at, e.kind, e.actor, e.action, e.target, e.outcome, e.detail, e.prev_hash, e.hash, "
    "a.acked_by, a.acked_at FROM audit_events e LEFT JOIN audit_acks a ON a.event_id = e.id WHERE (NOT $8::boolean OR "
    CITRUS_FLAGGED ") AND ($1::text IS NULL OR e.kind = $1::text) AND ($2::text IS NULL OR e.actor = $2::text) "
    "AND ($3::text IS NULL OR e.outcome = $3::text) AND ($4::bigint IS NULL OR e.at >= $4::bigint) "
    "AND ($5::bigint IS NULL OR e.at <= $5::bigint) AND (NOT $6::boolean OR a.event_id IS NULL) "
    "ORDER BY e.id DESC LIMIT $7"};
constexpr statement audit_unacknowledged{
    "audit_unacknowledged", "SELECT count(*) FROM audit_events e WHERE " CITRUS_FLAGGED
                            " AND NOT EXISTS (SELECT 1 FROM audit_acks a WHERE a.event_id = e.id)"};
constexpr statement audit_flagged{"audit_flagged",
                                  "SELECT 1 FROM audit_events e WHERE e.id = $1 AND " CITRUS_FLAGGED};
constexpr statement insert_audit_ack{
    "insert_audit_ack",
    "INSERT INTO audit_acks (event_id, acked_by, acked_at) SELECT $1::bigint, $2::text, $3::bigint "
    "WHERE NOT EXISTS (SELECT 1 FROM audit_acks WHERE event_id = $1::bigint) RETURNING event_id"};
#undef CITRUS_AUDIT_COLUMNS
#undef CITRUS_FLAGGED
// Newest first; among events of the same second, the later-appended first. One statement per filter
// combination, each served by an index: audit_events_by_kind_time or audit_events_by_time.
constexpr statement audit_queries[2][2] = {
    {{"audit_all", "SELECT at, kind, actor, action, target, outcome, detail FROM audit_events "
                   "ORDER BY at DESC, id DESC LIMIT $1"},
     {"audit_since", "SELECT at, kind, actor, action, target, outcome, detail FROM audit_events WHERE at >= $1 "
                     "ORDER BY at DESC, id DESC LIMIT $2"}},
    {{"audit_kind", "SELECT at, kind, actor, action, target, outcome, detail FROM audit_events WHERE kind = $1 "
                    "ORDER BY at DESC, id DESC LIMIT $2"},
     {"audit_kind_since", "SELECT at, kind, actor, action, target, outcome, detail FROM audit_events "
                          "WHERE kind = $1 AND at >= $2 ORDER BY at DESC, id DESC LIMIT $3"}},
};

constexpr statement forget_login_failures{"forget_login_failures", "DELETE FROM login_failures WHERE at < $1"};
constexpr statement insert_login_failure{"insert_login_failure", "INSERT INTO login_failures (key, at) VALUES ($1, $2)"};
constexpr statement count_login_failures_of{"count_login_failures",
                                            "SELECT count(*) FROM login_failures WHERE key = $1 AND at >= $2 AND at <= $3"};
constexpr statement clear_login_failures_of{"clear_login_failures", "DELETE FROM login_failures WHERE key = $1"};

#undef CITRUS_SITE_COLUMNS

constexpr statement all_statements[] = {
    insert_user,     user_by_id,         user_by_name,      all_users,         delete_user_row,    insert_site,
    set_user_disabled, set_user_password, forget_revoked_tokens, insert_revoked_token, revoked_token,
    owned_site,      sites_of,           update_site_row,   delete_site_row,   record_deploy_row,  insert_principal,
    principal_by_name, lock_principal,   keys_of,           grants_of,         principals_of_kind, keys_of_kind,
    grants_of_kind,  insert_key,         insert_grant,      expire_keys,       delete_grants,      delete_principal_row,
    insert_audit,    audit_queries[0][0], audit_queries[0][1], audit_queries[1][0], audit_queries[1][1],
    forget_login_failures, insert_login_failure, count_login_failures_of, clear_login_failures_of,
    lock_audit_chain, audit_head,        audit_chain_range, audit_chain_before, audit_review, audit_unacknowledged,
    audit_flagged,   insert_audit_ack,
};

/// A consistent snapshot across several reads (a read-only REPEATABLE READ transaction cannot fail to
/// serialise).
using snapshot = pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>;

// ------------------------------------------------------------------ conversions

std::int64_t seconds(wall_time t) { return static_cast<std::int64_t>(to_unix_seconds(t)); }
std::optional<std::int64_t> seconds(const std::optional<wall_time>& t) {
  if (!t) return std::nullopt;
  return seconds(*t);
}
std::optional<std::string> optional_text(const std::optional<std::string>& s) {
  if (!s) return std::nullopt;
  return text(*s);
}

std::int64_t integer(const pqxx::field& f) { return f.as<std::int64_t>(); }
std::string string(const pqxx::field& f) { return f.as<std::string>(); }
wall_time time(const pqxx::field& f) { return from_unix_seconds(f.as<std::int64_t>()); }
std::optional<wall_time> optional_time(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return time(f);
}

user_role role_from(std::string_view s) { return s == "admin" ? user_role::admin : user_role::user; }

audit_kind audit_kind_from(std::string_view s) { return parse_audit_kind(s).value_or(audit_kind::security_event); }

std::string kind_text(principal_kind k) { return std::string(to_string(k)); }

site_record read_site(const pqxx::row& row) {
  site_record r;
  r.id = site_id{integer(row[0])};
  r.name = string(row[1]);
  r.url = string(row[2]);
  r.owner = user_id{integer(row[3])};
  r.agent = agent_id{string(row[4])};
  r.created_at = time(row[5]);
  r.updated_at = time(row[6]);
  r.deployer_id = string(row[7]);
  r.deploy_status = string(row[8]);
  r.last_deploy_date = optional_time(row[9]);
  r.revision = static_cast<std::uint64_t>(integer(row[10]));
  r.operation_by = string(row[11]);
  return r;
}

user_record read_user(const pqxx::row& row) {
  user_record u;
  u.id = user_id{integer(row[0])};
  u.name = string(row[1]);
  u.password_hash = string(row[2]);
  u.role = role_from(string(row[3]));
  u.created_at = time(row[4]);
  u.disabled = row[5].as<bool>();
  return u;
}

}  // namespace

const std::error_category& open_category() noexcept {
  static const open_category_impl category;
  return category;
}

std::error_code make_error_code(open_errc e) noexcept { return {static_cast<int>(e), open_category()}; }

// ------------------------------------------------------------------ the connection and its stores

struct postgres_storage::impl {
  detail::session db;

  impl(detail::conninfo info, const postgres_options& options)
      : db(std::move(info), options, all_statements, sizeof(all_statements) / sizeof(all_statements[0])) {}

  template <class F>
  auto guarded(std::string_view op, F&& body) noexcept {
    return db.guarded(op, std::forward<F>(body));
  }

  // ---------------------------------------------------------------- shared steps

  static void insert_keys(pqxx::work& tx, std::int64_t row, const std::vector<key_record>& keys) {
    for (const auto& k : keys)
      tx.exec_prepared(insert_key.name, row, text(k.key_hash), seconds(k.created_at), seconds(k.expires_at));
  }

  static void insert_grants(pqxx::work& tx, std::int64_t row, const std::vector<std::string>& grants) {
    std::int64_t position = 0;
    for (const auto& g : grants) tx.exec_prepared(insert_grant.name, row, position++, text(g));
  }

  /// The row id of principal (kind, name), locked until the transaction ends.
  static std::optional<std::int64_t> locked_principal(pqxx::work& tx, principal_kind kind, std::string_view name) {
    const pqxx::result r = tx.exec_prepared(lock_principal.name, kind_text(kind), text(name));
    if (r.empty()) return std::nullopt;
    return integer(r[0][0]);
  }

  // ---------------------------------------------------------------- users
  class users_impl final : public user_store {
   public:
    explicit users_impl(impl& s) : s_(s) {}

    result<user_record> create_user(std::string_view name, std::string_view password_hash, user_role role,
                                    wall_time now) override {
      return s_.guarded("create_user", [&](pqxx::connection& c) -> result<user_record> {
        pqxx::work tx(c);
        const pqxx::result r = tx.exec_prepared(insert_user.name, text(name), text(password_hash),
                                                std::string(to_string(role)), seconds(now));
        if (r.empty()) return errc::conflict;  // the name is taken (checked first: no id consumed)
        tx.commit();
        user_record u;
        u.id = user_id{integer(r[0][0])};
        u.name = std::string(name);
        u.password_hash = std::string(password_hash);
        u.role = role;
        u.created_at = from_unix_seconds(seconds(now));
        return u;
      });
    }

    result<user_record> find_user(user_id id) override {
      return s_.guarded("find_user", [&](pqxx::connection& c) -> result<user_record> {
        pqxx::nontransaction tx(c);
        const pqxx::result r = tx.exec_prepared(user_by_id.name, static_cast<std::int64_t>(id.value()));
        if (r.empty()) return errc::not_found;
        return read_user(r[0]);
      });
    }

    result<user_record> find_user_by_name(std::string_view name) override {
      return s_.guarded("find_user_by_name", [&](pqxx::connection& c) -> result<user_record> {
        pqxx::nontransaction tx(c);
        const pqxx::result r = tx.exec_prepared(user_by_name.name, text(name));
        if (r.empty()) return errc::not_found;
        return read_user(r[0]);
      });
    }

    result<std::vector<user_record>> list_users() override {
      return s_.guarded("list_users", [&](pqxx::connection& c) -> result<std::vector<user_record>> {
        pqxx::nontransaction tx(c);
        const pqxx::result r = tx.exec_prepared(all_users.name);
        std::vector<user_record> out;
        out.reserve(r.size());
        for (const auto& row : r) out.push_back(read_user(row));
        return out;
      });
    }

    result<void> delete_user(user_id id) override {
      return s_.guarded("delete_user", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        const pqxx::result r = tx.exec_prepared(delete_user_row.name, static_cast<std::int64_t>(id.value()));
        if (r.affected_rows() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

    result<void> set_disabled(user_id id, bool disabled) override {
      return s_.guarded("set_disabled", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        const pqxx::result r = tx.exec_prepared(set_user_disabled.name, static_cast<std::int64_t>(id.value()), disabled);
        if (r.affected_rows() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

    result<void> set_password_hash(user_id id, std::string_view password_hash) override {
      return s_.guarded("set_password_hash", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        const pqxx::result r =
            tx.exec_prepared(set_user_password.name, static_cast<std::int64_t>(id.value()), text(password_hash));
        if (r.affected_rows() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

    result<void> revoke_token(std::string_view token_id, wall_time expires_at, wall_time now) override {
      return s_.guarded("revoke_token", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        tx.exec_prepared(forget_revoked_tokens.name, seconds(now));
        tx.exec_prepared(insert_revoked_token.name, text(token_id), seconds(expires_at));
        tx.commit();
        return {};
      });
    }

    result<bool> is_token_revoked(std::string_view token_id) override {
      return s_.guarded("is_token_revoked", [&](pqxx::connection& c) -> result<bool> {
        pqxx::nontransaction tx(c);
        return !tx.exec_prepared(revoked_token.name, text(token_id)).empty();
      });
    }

   private:
    impl& s_;
  };

  // ---------------------------------------------------------------- sites
  class sites_impl final : public site_store {
   public:
    explicit sites_impl(impl& s) : s_(s) {}

    result<site_record> create_site(const new_site& site, wall_time now) override {
      return s_.guarded("create_site", [&](pqxx::connection& c) -> result<site_record> {
        pqxx::work tx(c);
        const pqxx::result r =
            tx.exec_prepared(insert_site.name, text(site.name), text(site.url),
                             static_cast<std::int64_t>(site.owner.value()), text(site.agent.value()), seconds(now));
        if (r.empty()) return errc::not_found;  // no such owner (checked first: no id consumed)
        tx.commit();
        site_record out;
        out.id = site_id{integer(r[0][0])};
        out.name = site.name;
        out.url = site.url;
        out.owner = site.owner;
        out.agent = site.agent;
        out.created_at = from_unix_seconds(seconds(now));
        out.updated_at = out.created_at;
        out.revision = static_cast<std::uint64_t>(integer(r[0][1]));
        return out;
      });
    }

    result<site_record> find_site(user_id owner, site_id id) override {
      return s_.guarded("find_site", [&](pqxx::connection& c) -> result<site_record> {
        pqxx::nontransaction tx(c);
        const pqxx::result r = tx.exec_prepared(owned_site.name, static_cast<std::int64_t>(id.value()),
                                                static_cast<std::int64_t>(owner.value()));
        if (r.empty()) return errc::not_found;
        return read_site(r[0]);
      });
    }

    result<std::vector<site_record>> list_sites(user_id owner) override {
      return s_.guarded("list_sites", [&](pqxx::connection& c) -> result<std::vector<site_record>> {
        pqxx::nontransaction tx(c);
        const pqxx::result r = tx.exec_prepared(sites_of.name, static_cast<std::int64_t>(owner.value()));
        std::vector<site_record> out;
        out.reserve(r.size());
        for (const auto& row : r) out.push_back(read_site(row));
        return out;
      });
    }

    result<site_record> update_site(user_id owner, site_id id, const site_changes& changes, wall_time now) override {
      return s_.guarded("update_site", [&](pqxx::connection& c) -> result<site_record> {
        pqxx::work tx(c);
        const pqxx::result r = tx.exec_prepared(update_site_row.name, optional_text(changes.name),
                                                optional_text(changes.url), seconds(now),
                                                static_cast<std::int64_t>(id.value()),
                                                static_cast<std::int64_t>(owner.value()));
        if (r.empty()) return errc::not_found;
        tx.commit();
        return read_site(r[0]);
      });
    }

    result<void> delete_site(user_id owner, site_id id) override {
      return s_.guarded("delete_site", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        const pqxx::result r = tx.exec_prepared(delete_site_row.name, static_cast<std::int64_t>(id.value()),
                                                static_cast<std::int64_t>(owner.value()));
        if (r.affected_rows() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

    result<site_record> record_deploy(site_id id, const deploy_update& update, wall_time now) override {
      return s_.guarded("record_deploy", [&](pqxx::connection& c) -> result<site_record> {
        pqxx::work tx(c);
        const pqxx::result r = tx.exec_prepared(record_deploy_row.name, text(update.deploy_status),
                                                text(update.deployer_id), seconds(update.last_deploy_date),
                                                seconds(now), static_cast<std::int64_t>(id.value()),
                                                text(update.operation_by));
        if (r.empty()) return errc::not_found;
        tx.commit();
        return read_site(r[0]);
      });
    }

   private:
    impl& s_;
  };

  // ---------------------------------------------------------------- credentials
  class credentials_impl final : public credential_store {
   public:
    explicit credentials_impl(impl& s) : s_(s) {}

    result<void> create_principal(const principal_record& principal) override {
      return s_.guarded("create_principal", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        const pqxx::result r = tx.exec_prepared(insert_principal.name, kind_text(principal.kind), text(principal.id),
                                                seconds(principal.created_at));
        if (r.empty()) return errc::conflict;  // (kind, id) exists
        const std::int64_t row = integer(r[0][0]);
        insert_keys(tx, row, principal.keys);
        insert_grants(tx, row, principal.grants);
        tx.commit();
        return {};
      });
    }

    result<principal_record> find_principal(principal_kind kind, std::string_view id) override {
      return s_.guarded("find_principal", [&](pqxx::connection& c) -> result<principal_record> {
        snapshot tx(c);  // one consistent snapshot across the three reads
        const pqxx::result head = tx.exec_prepared(principal_by_name.name, kind_text(kind), text(id));
        if (head.empty()) return errc::not_found;
        const std::int64_t row = integer(head[0][0]);
        principal_record p;
        p.kind = kind;
        p.id = std::string(id);
        p.created_at = time(head[0][1]);
        for (const auto& k : tx.exec_prepared(keys_of.name, row))
          p.keys.push_back(key_record{string(k[0]), time(k[1]), optional_time(k[2])});
        for (const auto& g : tx.exec_prepared(grants_of.name, row)) p.grants.push_back(string(g[0]));
        tx.commit();
        return p;
      });
    }

    result<std::vector<principal_record>> list_principals(principal_kind kind) override {
      return s_.guarded("list_principals", [&](pqxx::connection& c) -> result<std::vector<principal_record>> {
        snapshot tx(c);
        // Three queries whatever the count, stitched by principal row id.
        std::vector<principal_record> out;
        std::unordered_map<std::int64_t, std::size_t> index;
        for (const auto& row : tx.exec_prepared(principals_of_kind.name, kind_text(kind))) {
          principal_record p;
          p.kind = kind;
          p.id = string(row[1]);
          p.created_at = time(row[2]);
          index.emplace(integer(row[0]), out.size());
          out.push_back(std::move(p));
        }
        for (const auto& k : tx.exec_prepared(keys_of_kind.name, kind_text(kind))) {
          const auto at = index.find(integer(k[0]));
          if (at != index.end())
            out[at->second].keys.push_back(key_record{string(k[1]), time(k[2]), optional_time(k[3])});
        }
        for (const auto& g : tx.exec_prepared(grants_of_kind.name, kind_text(kind))) {
          const auto at = index.find(integer(g[0]));
          if (at != index.end()) out[at->second].grants.push_back(string(g[1]));
        }
        tx.commit();
        return out;
      });
    }

    result<void> rotate_key(principal_kind kind, std::string_view id, const key_record& key,
                            wall_time old_keys_expire_at) override {
      return s_.guarded("rotate_key", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        const auto row = locked_principal(tx, kind, id);
        if (!row) return errc::not_found;
        tx.exec_prepared(expire_keys.name, seconds(old_keys_expire_at), *row);
        insert_keys(tx, *row, {key});
        tx.commit();
        return {};
      });
    }

    result<void> set_grants(principal_kind kind, std::string_view id, const std::vector<std::string>& grants) override {
      return s_.guarded("set_grants", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        const auto row = locked_principal(tx, kind, id);
        if (!row) return errc::not_found;
        tx.exec_prepared(delete_grants.name, *row);
        insert_grants(tx, *row, grants);
        tx.commit();
        return {};
      });
    }

    result<void> delete_principal(principal_kind kind, std::string_view id) override {
      return s_.guarded("delete_principal", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        const pqxx::result r = tx.exec_prepared(delete_principal_row.name, kind_text(kind), text(id));
        if (r.affected_rows() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

   private:
    impl& s_;
  };

  // ---------------------------------------------------------------- audit
  class audit_impl final : public audit_store {
   public:
    explicit audit_impl(impl& s) : s_(s) {}

    result<void> append(const audit_event& event) override {
      return s_.guarded("audit_append", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        link(tx, event);
        tx.commit();
        return {};
      });
    }

    result<void> append_all(const std::vector<audit_event>& events) override {
      return s_.guarded("audit_append", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        for (const auto& e : events) link(tx, e);
        tx.commit();
        return {};
      });
    }

    result<std::vector<audit_record>> chain(std::int64_t from_id, std::int64_t to_id, std::size_t limit) override {
      return s_.guarded("audit_chain", [&](pqxx::connection& c) -> result<std::vector<audit_record>> {
        pqxx::nontransaction tx(c);
        const pqxx::result r = tx.exec_prepared(audit_chain_range.name, from_id, to_id, clamp_limit(limit));
        std::vector<audit_record> out;
        out.reserve(r.size());
        for (const auto& row : r) out.push_back(read_record(row));
        return out;
      });
    }

    result<std::optional<audit_record>> chain_before(std::int64_t id) override {
      return s_.guarded("audit_chain_before", [&](pqxx::connection& c) -> result<std::optional<audit_record>> {
        pqxx::nontransaction tx(c);
        const pqxx::result r = tx.exec_prepared(audit_chain_before.name, id);
        if (r.empty()) return std::optional<audit_record>{};
        return std::optional<audit_record>{read_record(r[0])};
      });
    }

    result<std::vector<audit_record>> review(const audit_review_query& q) override {
      return s_.guarded("audit_review", [&](pqxx::connection& c) -> result<std::vector<audit_record>> {
        pqxx::nontransaction tx(c);
        const std::optional<std::string> kind =
            q.kind ? std::optional<std::string>(std::string(to_string(*q.kind))) : std::nullopt;
        const pqxx::result r = tx.exec_prepared(audit_review.name, kind, optional_text(q.actor), optional_text(q.outcome),
                                                seconds(q.since), seconds(q.until), q.unacknowledged_only,
                                                clamp_limit(q.limit), q.flagged_only);
        std::vector<audit_record> out;
        out.reserve(r.size());
        for (const auto& row : r) {
          out.push_back(read_record(row));
          if (!row[10].is_null()) out.back().ack = audit_ack{string(row[10]), time(row[11])};
        }
        return out;
      });
    }

    result<std::uint64_t> count_unacknowledged() override {
      return s_.guarded("audit_unacknowledged", [&](pqxx::connection& c) -> result<std::uint64_t> {
        pqxx::nontransaction tx(c);
        return static_cast<std::uint64_t>(integer(tx.exec_prepared(audit_unacknowledged.name)[0][0]));
      });
    }

    result<void> acknowledge(std::int64_t id, std::string_view by, wall_time at) override {
      return s_.guarded("audit_acknowledge", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        if (tx.exec_prepared(audit_flagged.name, id).empty()) return errc::not_found;
        // Taken before the ack insert, so two acknowledgements of one event queue up and the second sees the first.
        tx.exec_prepared(lock_audit_chain.name);
        if (tx.exec_prepared(insert_audit_ack.name, id, text(by), seconds(at)).empty()) return errc::conflict;
        link(tx, acknowledgement_event(id, by, at));
        tx.commit();
        return {};
      });
    }

    result<std::vector<audit_event>> query(const audit_query& q) override {
      return s_.guarded("audit_query", [&](pqxx::connection& c) -> result<std::vector<audit_event>> {
        constexpr auto max_limit = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
        const auto limit = static_cast<std::int64_t>(q.limit < max_limit ? q.limit : max_limit);
        const statement& st = audit_queries[q.kind ? 1 : 0][q.since ? 1 : 0];
        pqxx::nontransaction tx(c);
        pqxx::result r;
        if (q.kind && q.since)
          r = tx.exec_prepared(st.name, std::string(to_string(*q.kind)), seconds(*q.since), limit);
        else if (q.kind)
          r = tx.exec_prepared(st.name, std::string(to_string(*q.kind)), limit);
        else if (q.since)
          r = tx.exec_prepared(st.name, seconds(*q.since), limit);
        else
          r = tx.exec_prepared(st.name, limit);
        std::vector<audit_event> out;
        out.reserve(r.size());
        for (const auto& row : r) {
          audit_event e;
          e.at = time(row[0]);
          e.kind = audit_kind_from(string(row[1]));
          e.actor = string(row[2]);
          e.action = string(row[3]);
          e.target = string(row[4]);
          e.outcome = string(row[5]);
          e.detail = string(row[6]);
          out.push_back(std::move(e));
        }
        return out;
      });
    }

   private:
    static std::int64_t clamp_limit(std::size_t limit) {
      constexpr auto max_limit = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
      return static_cast<std::int64_t>(limit < max_limit ? limit : max_limit);
    }

    /// Columns 0..9 of an audit row. A kind no version of Citrus writes cannot be hashed as stored, so
    /// the record gets no hash and the verifier reports the row as edited.
    static audit_record read_record(const pqxx::row& row) {
      audit_record r;
      r.id = integer(row[0]);
      r.event.at = time(row[1]);
      const auto kind = parse_audit_kind(string(row[2]));
      r.event.kind = kind.value_or(audit_kind::security_event);
      r.event.actor = string(row[3]);
      r.event.action = string(row[4]);
      r.event.target = string(row[5]);
      r.event.outcome = string(row[6]);
      r.event.detail = string(row[7]);
      r.prev_hash = string(row[8]);
      r.hash = kind ? string(row[9]) : std::string();
      return r;
    }

    /// Inserts `event` chained to the current head, under the chain's advisory lock (held to COMMIT):
    /// appends from every connection and process take turns, so none reads a head another is replacing.
    void link(pqxx::work& tx, const audit_event& event) {
      tx.exec_prepared(lock_audit_chain.name);
      const pqxx::result head = tx.exec_prepared(audit_head.name);
      const std::string prev = head.empty() ? std::string(audit_genesis_hash()) : string(head[0][0]);
      audit_event stored = event;
      stored.at = from_unix_seconds(seconds(event.at));
      const std::string hash = audit_chain_hash(stored, prev);
      tx.exec_prepared(insert_audit.name, seconds(stored.at), std::string(to_string(stored.kind)), text(stored.actor),
                       text(stored.action), text(stored.target), text(stored.outcome), text(stored.detail), prev, hash);
    }

    impl& s_;
  };

  // ---------------------------------------------------------------- login failures
  class login_failures_impl final : public login_failure_store {
   public:
    explicit login_failures_impl(impl& s) : s_(s) {}

    result<void> record_login_failure(const std::vector<std::string>& keys, wall_time at, wall_time forget_before) override {
      return s_.guarded("login_failure_record", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        tx.exec_prepared(forget_login_failures.name, seconds(forget_before));
        for (const auto& key : keys) tx.exec_prepared(insert_login_failure.name, text(key), seconds(at));
        tx.commit();
        return {};
      });
    }

    result<std::vector<std::size_t>> count_login_failures(const std::vector<std::string>& keys,
                                                          const std::vector<wall_time>& since, wall_time until) override {
      return s_.guarded("login_failure_count", [&](pqxx::connection& c) -> result<std::vector<std::size_t>> {
        pqxx::nontransaction tx(c);
        std::vector<std::size_t> out;
        for (std::size_t i = 0; i < keys.size(); ++i) {
          const pqxx::result r =
              tx.exec_prepared(count_login_failures_of.name, text(keys[i]), seconds(i < since.size() ? since[i] : wall_time{}),
                               seconds(until));
          out.push_back(static_cast<std::size_t>(integer(r[0][0])));
        }
        return out;
      });
    }

    result<void> clear_login_failures(std::string_view key) override {
      return s_.guarded("login_failure_clear", [&](pqxx::connection& c) -> result<void> {
        pqxx::work tx(c);
        tx.exec_prepared(clear_login_failures_of.name, text(std::string(key)));
        tx.commit();
        return {};
      });
    }

   private:
    impl& s_;
  };

  users_impl users{*this};
  sites_impl sites{*this};
  credentials_impl credentials{*this};
  audit_impl audit{*this};
  login_failures_impl login_failures{*this};
};

// ------------------------------------------------------------------ open

namespace {

bool valid(const postgres_options& o) {
  using namespace std::chrono_literals;
  auto in = [](auto value, auto lo, auto hi) { return value >= lo && value <= hi; };
  return in(o.connect_timeout, 2s, 600s) && in(o.statement_timeout, 1ms, 10min) &&
         in(o.tcp_user_timeout, 1ms, 10min) && in(o.operation_timeout, 1ms, 10min) &&
         in(o.reconnect_backoff_min, 1ms, 10min) && in(o.reconnect_backoff_max, o.reconnect_backoff_min, 10min);
}

}  // namespace

postgres_storage::postgres_storage(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
postgres_storage::~postgres_storage() = default;

result<std::unique_ptr<postgres_storage>> postgres_storage::open(const std::string& connection,
                                                                 const postgres_options& options) {
  auto report = [&options](std::string_view step, std::string_view target, std::string_view what) {
    if (options.log == nullptr || !options.log->enabled(log_level::error)) return;
    options.log->log(log_level::error, "postgres_open_failed",
                     {field("step", step), field("target", target), field("message", what.substr(0, what.find('\n')))});
  };
  if (!valid(options)) return make_error_code(open_errc::invalid_options);
  std::string parse_error;
  auto info = detail::make_conninfo(connection, options, parse_error);
  if (!info) {
    report("parse", "", parse_error);
    return make_error_code(open_errc::invalid_options);
  }
  std::unique_ptr<impl> state;
  try {
    state = std::make_unique<impl>(*info, options);
    state->db.connect();
  } catch (const pqxx::broken_connection& e) {
    report("connect", info->target, e.what());
    return make_error_code(open_errc::cannot_connect);
  } catch (const pqxx::sql_error& e) {  // e.g. a server that refuses SET statement_timeout
    report("connect", info->target, e.what());
    return make_error_code(open_errc::cannot_connect);
  } catch (const std::exception& e) {
    report("connect", info->target, e.what());
    return make_error_code(open_errc::cannot_connect);
  }
  if (auto err = detail::migrate(state->db)) return err;
  return std::unique_ptr<postgres_storage>(new postgres_storage(std::move(state)));
}

user_store& postgres_storage::users() { return impl_->users; }
site_store& postgres_storage::sites() { return impl_->sites; }
credential_store& postgres_storage::credentials() { return impl_->credentials; }
audit_store& postgres_storage::audit() { return impl_->audit; }
login_failure_store& postgres_storage::login_failures() { return impl_->login_failures; }

}  // namespace citrus::postgres
