#include "schema.hpp"

#include <cstdint>
#include <string>

#include "citrus/core/audit_chain.hpp"

namespace citrus::postgres::detail {
namespace {

// migrations[i] takes the schema from version i to i + 1. Never edit a released migration: add one.
// SQLite's INTEGER PRIMARY KEY AUTOINCREMENT is an identity column here (never reused: a stale token or
// reference to a deleted user or site must not resolve to a new one). Times are unix seconds (bigint).
constexpr const char* migrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE users (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name          text   NOT NULL UNIQUE,
  password_hash text   NOT NULL,
  role          text   NOT NULL CHECK (role IN ('user', 'admin')),
  created_at    bigint NOT NULL
);
CREATE TABLE sites (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name             text   NOT NULL,
  url              text   NOT NULL,
  user_id          bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  agent_id         text   NOT NULL,
  created_at       bigint NOT NULL,
  updated_at       bigint NOT NULL,
  deployer_id      text   NOT NULL DEFAULT '',
  deploy_status    text   NOT NULL DEFAULT '',
  last_deploy_date bigint
);
CREATE INDEX sites_by_user ON sites(user_id, id);
CREATE TABLE principals (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind       text   NOT NULL CHECK (kind IN ('commander', 'agent', 'hub')),
  name       text   NOT NULL,
  created_at bigint NOT NULL,
  UNIQUE (kind, name)
);
CREATE TABLE principal_keys (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  principal_id bigint NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
  key_hash     text   NOT NULL,
  created_at   bigint NOT NULL,
  expires_at   bigint
);
CREATE INDEX principal_keys_by_principal ON principal_keys(principal_id, id);
CREATE TABLE principal_grants (
  principal_id bigint NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
  position     bigint NOT NULL,
  grant_id     text   NOT NULL,
  PRIMARY KEY (principal_id, position)
);
CREATE TABLE audit_events (
  id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at      bigint NOT NULL,
  kind    text   NOT NULL,
  actor   text   NOT NULL,
  action  text   NOT NULL,
  target  text   NOT NULL,
  outcome text   NOT NULL,
  detail  text   NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events(at, id);
CREATE INDEX audit_events_by_kind_time ON audit_events(kind, at, id);
)sql",
    // 1 -> 2: sites.revision orders the copies of a site a client sees (existing rows start at 1).
    R"sql(
ALTER TABLE sites ADD COLUMN revision bigint NOT NULL DEFAULT 1;
)sql",
    // 2 -> 3: sites.operation_by names the backend whose request is in flight (several backends share
    // one database; a restarting one fails only its own). Rows in flight before it belong to nobody.
    R"sql(
ALTER TABLE sites ADD COLUMN operation_by text NOT NULL DEFAULT '';
)sql",
    // 3 -> 4: login failures where every backend of the database counts them (login throttles).
    R"sql(
CREATE TABLE login_failures (
  key text   NOT NULL,
  at  bigint NOT NULL
);
CREATE INDEX login_failures_by_key ON login_failures(key, at);
CREATE INDEX login_failures_by_time ON login_failures(at);
)sql",
    // 4 -> 5: the audit hash chain (existing rows chained by chain_existing_audit() in the same
    // transaction) and acknowledgements of flagged events, kept apart so the chain is never rewritten.
    R"sql(
ALTER TABLE audit_events ADD COLUMN prev_hash text NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN hash text NOT NULL DEFAULT '';
CREATE TABLE audit_acks (
  event_id bigint PRIMARY KEY,
  acked_by text   NOT NULL,
  acked_at bigint NOT NULL
);
)sql",
    // 5 -> 6: accounts an administrator disabled, and the tokens their users logged out (by "jti", kept
    // until the token's own expiry) so that every backend of the database refuses them.
    R"sql(
ALTER TABLE users ADD COLUMN disabled boolean NOT NULL DEFAULT false;
CREATE TABLE revoked_tokens (
  token_id   text   PRIMARY KEY,
  expires_at bigint NOT NULL
);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires_at);
)sql",
};
static_assert(sizeof(migrations) / sizeof(migrations[0]) == postgres_storage::schema_version,
              "one migration per schema version");

/// pg_advisory_xact_lock key of the migrations: any constant the database's other users do not take.
constexpr std::int64_t migration_lock_key = 0x6369747275730001;  // "citrus", 1

/// Migration 5's second half: links the events a version-4 database already holds, in id order.
void chain_existing_audit(pqxx::work& tx) {
  const pqxx::result rows =
      tx.exec("SELECT id, at, kind, actor, action, target, outcome, detail FROM audit_events ORDER BY id");
  std::string prev(audit_genesis_hash());
  for (const auto& row : rows) {
    const audit_event e{from_unix_seconds(row[1].as<std::int64_t>()),
                        parse_audit_kind(row[2].as<std::string>()).value_or(audit_kind::security_event),
                        row[3].as<std::string>(), row[4].as<std::string>(), row[5].as<std::string>(),
                        row[6].as<std::string>(), row[7].as<std::string>()};
    std::string hash = audit_chain_hash(e, prev);
    tx.exec("UPDATE audit_events SET prev_hash = " + tx.quote(prev) + ", hash = " + tx.quote(hash) +
            " WHERE id = " + std::to_string(row[0].as<std::int64_t>()));
    prev = std::move(hash);
  }
}

/// What a migration needs besides its SQL, run right after it in the same transaction.
void after_migration(pqxx::work& tx, int to_version) {
  if (to_version == 5) chain_existing_audit(tx);
}

std::error_code from_sql_error(const pqxx::sql_error& e) {
  const errc mapped = map_sqlstate(e.sqlstate());
  if (mapped == errc::storage_full || mapped == errc::storage_unavailable) return make_error_code(mapped);
  return make_error_code(open_errc::migration_failed);  // e.g. 42P07: another application's tables
}

}  // namespace

std::error_code migrate(session& s) noexcept {
  auto fail = [&s](std::string_view state, const char* what, std::error_code code) {
    s.report(log_level::error, "postgres_open_failed", "migrate", state, what);
    return code;
  };
  try {
    deadline_scope deadline(s.deadline(), s.connection().sock(), s.options().operation_timeout);
    try {
      pqxx::work tx(s.connection());
      tx.exec("SELECT pg_advisory_xact_lock(" + std::to_string(migration_lock_key) + ")");
      const bool has_table = !tx.exec("SELECT to_regclass('citrus_schema')")[0][0].is_null();
      int from = 0;
      if (has_table) {
        const pqxx::result r = tx.exec("SELECT version FROM citrus_schema");
        if (r.size() != 1)
          return fail("", "citrus_schema must hold exactly one row", make_error_code(open_errc::migration_failed));
        from = r[0][0].as<int>();
      }
      if (from > postgres_storage::schema_version)
        return fail("", "schema version newer than supported", make_error_code(open_errc::schema_too_new));
      if (from == postgres_storage::schema_version) return {};  // the transaction ends unchanged
      if (!has_table) tx.exec("CREATE TABLE citrus_schema (version integer NOT NULL); INSERT INTO citrus_schema VALUES (0)");
      for (int v = from; v < postgres_storage::schema_version; ++v) {
        tx.exec(migrations[v]);
        after_migration(tx, v + 1);
      }
      tx.exec("UPDATE citrus_schema SET version = " + std::to_string(postgres_storage::schema_version));
      tx.commit();
      s.report(log_level::info, "postgres_migrated", "migrate", "",
               "schema version " + std::to_string(from) + " -> " + std::to_string(postgres_storage::schema_version));
      if (deadline.end()) return fail("", "the server answered after the operation timeout", make_error_code(errc::storage_unavailable));
      return {};
    } catch (const pqxx::sql_error& e) {
      deadline.end();
      return fail(e.sqlstate(), e.what(), from_sql_error(e));
    } catch (const pqxx::broken_connection& e) {
      return fail("", e.what(), make_error_code(errc::storage_unavailable));
    } catch (const pqxx::in_doubt_error& e) {
      return fail("", e.what(), make_error_code(errc::storage_unavailable));
    } catch (const std::exception& e) {
      const bool timed_out = deadline.end();
      return fail("", e.what(), timed_out ? make_error_code(errc::storage_unavailable)
                                          : make_error_code(open_errc::migration_failed));
    }
  } catch (...) {
    return make_error_code(open_errc::migration_failed);
  }
}

}  // namespace citrus::postgres::detail
