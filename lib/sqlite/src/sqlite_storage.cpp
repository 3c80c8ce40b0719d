// citrus::sqlite::sqlite_storage on SQLiteCpp.
//
// Rules of this file (see /work/shared/PITFALLS.md, SQLite section):
// - every query is a cached prepared statement with bound parameters; values never reach SQL text;
// - every write runs in BEGIN IMMEDIATE (a deferred read-then-write transaction gets SQLITE_BUSY in WAL
//   mode whatever the busy timeout) and is rolled back on any failure;
// - every SQLite::Exception is caught at the store boundary (guarded()) and mapped to an errc;
// - site queries carry the owner in SQL (WHERE id = ? AND user_id = ?).
#include "citrus/sqlite/sqlite_storage.hpp"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <climits>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace citrus::sqlite {
namespace {

// ------------------------------------------------------------------ open errors

class open_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "citrus.sqlite.open"; }
  std::string message(int ev) const override {
    switch (static_cast<open_errc>(ev)) {
      case open_errc::invalid_options:
        return "invalid sqlite_options (busy_timeout must be positive, max_page_count not negative)";
      case open_errc::cannot_open: return "the database file cannot be opened or created";
      case open_errc::not_a_database: return "the file is not an SQLite database (or it is corrupt or encrypted)";
      case open_errc::schema_too_new:
        return "the database was written by a newer version of Citrus (its schema version is above the supported "
               "one)";
      case open_errc::migration_failed: return "the database schema could not be created or upgraded";
    }
    return "unknown sqlite open error";
  }
};

// ------------------------------------------------------------------ schema
// migrations[i] takes the schema from version i to i + 1. Never edit a released migration: add one.
// Timestamps are unix seconds (INTEGER). users and sites use AUTOINCREMENT so that an id is never
// reused: a stale token or reference to a deleted user or site must not resolve to a new one.
constexpr const char* migrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE users (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  name          TEXT    NOT NULL UNIQUE,
  password_hash TEXT    NOT NULL,
  role          TEXT    NOT NULL CHECK (role IN ('user', 'admin')),
  created_at    INTEGER NOT NULL
);
CREATE TABLE sites (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  name             TEXT    NOT NULL,
  url              TEXT    NOT NULL,
  user_id          INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  agent_id         TEXT    NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  deployer_id      TEXT    NOT NULL DEFAULT '',
  deploy_status    TEXT    NOT NULL DEFAULT '',
  last_deploy_date INTEGER
);
CREATE INDEX sites_by_user ON sites(user_id, id);
CREATE TABLE principals (
  id         INTEGER PRIMARY KEY,
  kind       TEXT    NOT NULL CHECK (kind IN ('commander', 'agent', 'hub')),
  name       TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (kind, name)
);
CREATE TABLE principal_keys (
  id           INTEGER PRIMARY KEY,
  principal_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
  key_hash     TEXT    NOT NULL,
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER
);
CREATE INDEX principal_keys_by_principal ON principal_keys(principal_id, id);
CREATE TABLE principal_grants (
  principal_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
  position     INTEGER NOT NULL,
  grant_id     TEXT    NOT NULL,
  PRIMARY KEY (principal_id, position)
) WITHOUT ROWID;
CREATE TABLE audit_events (
  id      INTEGER PRIMARY KEY,
  at      INTEGER NOT NULL,
  kind    TEXT    NOT NULL,
  actor   TEXT    NOT NULL,
  action  TEXT    NOT NULL,
  target  TEXT    NOT NULL,
  outcome TEXT    NOT NULL,
  detail  TEXT    NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events(at, id);
CREATE INDEX audit_events_by_kind_time ON audit_events(kind, at, id);
)sql",
    // 1 -> 2: sites.revision orders the copies of a site a client sees (existing rows start at 1).
    R"sql(
ALTER TABLE sites ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
)sql",
    // 2 -> 3: sites.operation_by names the backend whose request is in flight (several backends share
    // one database; a restarting one fails only its own). Rows in flight before it belong to nobody.
    R"sql(
ALTER TABLE sites ADD COLUMN operation_by TEXT NOT NULL DEFAULT '';
)sql",
    // 3 -> 4: login failures where every backend of the database counts them (login throttles).
    R"sql(
CREATE TABLE login_failures (
  key TEXT    NOT NULL,
  at  INTEGER NOT NULL
);
CREATE INDEX login_failures_by_key ON login_failures(key, at);
CREATE INDEX login_failures_by_time ON login_failures(at);
)sql",
    // 4 -> 5: the audit hash chain (citrus/core/audit_chain.hpp; existing rows are chained by
    // chain_existing_audit() in the same transaction) and acknowledgements of flagged events, kept apart
    // so that acknowledging never rewrites a chained row.
    R"sql(
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE TABLE audit_acks (
  event_id INTEGER PRIMARY KEY,
  acked_by TEXT    NOT NULL,
  acked_at INTEGER NOT NULL
);
)sql",
    // 5 -> 6: accounts an administrator disabled, and the tokens their users logged out (by "jti", kept
    // until the token's own expiry) so that every backend of the database refuses them.
    R"sql(
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1));
CREATE TABLE revoked_tokens (
  token_id   TEXT    PRIMARY KEY,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires_at);
)sql",
};
static_assert(sizeof(migrations) / sizeof(migrations[0]) == sqlite_storage::schema_version,
              "one migration per schema version");

// ------------------------------------------------------------------ conversions

long long seconds(wall_time t) { return to_unix_seconds(t); }

std::optional<wall_time> optional_time(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return from_unix_seconds(c.getInt64());
}

user_role role_from(std::string_view s) { return s == "admin" ? user_role::admin : user_role::user; }

audit_kind audit_kind_from(std::string_view s) {
  for (auto k : {audit_kind::site_operation, audit_kind::security_event, audit_kind::authentication,
                 audit_kind::administration})
    if (to_string(k) == s) return k;
  return audit_kind::security_event;
}

std::string text(std::string_view s) { return std::string(s); }
std::string text(principal_kind k) { return std::string(to_string(k)); }

void bind_optional_time(SQLite::Statement& st, int index, const std::optional<wall_time>& t) {
  if (t)
    st.bind(index, static_cast<std::int64_t>(seconds(*t)));
  else
    st.bind(index);
}

void bind_optional_text(SQLite::Statement& st, int index, const std::optional<std::string>& s) {
  if (s)
    st.bind(index, *s);
  else
    st.bind(index);
}

/// The errc a failed SQLite call means to a caller.
errc map_error(const SQLite::Exception& e) {
  const int primary = e.getErrorCode() & 0xff;
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL: return errc::storage_unavailable;
    case SQLITE_FULL: return errc::storage_full;
    case SQLITE_CONSTRAINT:
      switch (e.getExtendedErrorCode()) {
        case SQLITE_CONSTRAINT_UNIQUE:
        case SQLITE_CONSTRAINT_PRIMARYKEY: return errc::conflict;
        case SQLITE_CONSTRAINT_FOREIGNKEY: return errc::not_found;
        default: return errc::internal_error;
      }
    default: return errc::internal_error;
  }
}

/// A cached statement in use: reset and unbound when the scope ends, so it never holds a read lock
/// or a stale value past its call.
class statement_use {
 public:
  explicit statement_use(SQLite::Statement& st) : st_(st) {}
  ~statement_use() {
    (void)st_.tryReset();
    try {
      st_.clearBindings();
    } catch (...) {  // sqlite3_clear_bindings cannot fail; never let a destructor throw anyway
    }
  }
  statement_use(const statement_use&) = delete;
  statement_use& operator=(const statement_use&) = delete;
  SQLite::Statement* operator->() { return &st_; }
  SQLite::Statement& operator*() { return st_; }

 private:
  SQLite::Statement& st_;
};

/// Creates the file with mode 0600 when it does not exist yet, so the password and key hashes are not
/// world-readable whatever the umask (SQLite gives the -wal and -shm files the database file's mode).
void create_private_file(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) return;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) ::close(fd);  // EEXIST: an existing file keeps its mode; other errors surface in sqlite3_open
}

}  // namespace

const std::error_category& open_category() noexcept {
  static const open_category_impl category;
  return category;
}

std::error_code make_error_code(open_errc e) noexcept { return {static_cast<int>(e), open_category()}; }

// ------------------------------------------------------------------ the connection and its stores

struct sqlite_storage::impl {
  SQLite::Database db;
  citrus::logger* log;
  std::unordered_map<std::string_view, std::unique_ptr<SQLite::Statement>> cache;

  impl(const std::string& path, int busy_timeout_ms, citrus::logger* logger)
      : db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE, busy_timeout_ms), log(logger) {}

  /// The cached prepared statement for `sql` (a string literal: the cache keys on its text).
  SQLite::Statement& prepare(const char* sql) {
    auto& slot = cache[std::string_view(sql)];
    if (!slot) slot = std::make_unique<SQLite::Statement>(db, sql);
    return *slot;
  }

  void run(const char* sql) {
    statement_use st(prepare(sql));
    st->exec();
  }

  bool in_transaction() { return sqlite3_get_autocommit(db.getHandle()) == 0; }

  void report(std::string_view op, const SQLite::Exception& e, errc mapped) noexcept {
    if (log == nullptr) return;
    const log_level level = mapped == errc::conflict || mapped == errc::not_found ? log_level::debug
                            : mapped == errc::internal_error                      ? log_level::error
                                                                                  : log_level::warn;
    if (!log->enabled(level)) return;
    log->log(level, "sqlite_error",
             {field("op", op), field("code", std::int64_t{e.getErrorCode()}),
              field("extended_code", std::int64_t{e.getExtendedErrorCode()}), field("message", e.what()),
              field("mapped", wire_code(mapped))});
  }

  void report(std::string_view op, const std::exception& e) noexcept {
    if (log == nullptr || !log->enabled(log_level::error)) return;
    log->log(log_level::error, "sqlite_error", {field("op", op), field("message", e.what())});
  }

  /// Runs `body` with every exception mapped to an error: the one place SQLite failures are caught.
  template <class F>
  auto guarded(std::string_view op, F&& body) noexcept -> decltype(body()) {
    try {
      return body();
    } catch (const SQLite::Exception& e) {
      const errc mapped = map_error(e);
      report(op, e, mapped);
      return mapped;
    } catch (const std::exception& e) {
      report(op, e);
      return errc::internal_error;
    } catch (...) {
      return errc::internal_error;
    }
  }

  /// BEGIN IMMEDIATE (write) or BEGIN (read) ... COMMIT; rolled back unless committed.
  class transaction {
   public:
    enum mode { read, write };
    transaction(impl& s, mode m) : s_(s) { s_.run(m == write ? "BEGIN IMMEDIATE" : "BEGIN"); }
    transaction(const transaction&) = delete;
    transaction& operator=(const transaction&) = delete;
    void commit() {
      s_.run("COMMIT");
      committed_ = true;
    }
    ~transaction() {
      // SQLITE_FULL (and some I/O errors) may already have rolled the transaction back.
      if (committed_ || !s_.in_transaction()) return;
      try {
        s_.run("ROLLBACK");
      } catch (...) {  // nothing more to do: the connection stays usable once the statement is reset
      }
    }

   private:
    impl& s_;
    bool committed_ = false;
  };

  // ---------------------------------------------------------------- shared reads

  static site_record read_site(SQLite::Statement& st) {
    site_record r;
    r.id = site_id{st.getColumn(0).getInt64()};
    r.name = st.getColumn(1).getString();
    r.url = st.getColumn(2).getString();
    r.owner = user_id{st.getColumn(3).getInt64()};
    r.agent = agent_id{st.getColumn(4).getString()};
    r.created_at = from_unix_seconds(st.getColumn(5).getInt64());
    r.updated_at = from_unix_seconds(st.getColumn(6).getInt64());
    r.deployer_id = st.getColumn(7).getString();
    r.deploy_status = st.getColumn(8).getString();
    r.last_deploy_date = optional_time(st.getColumn(9));
    r.revision = static_cast<std::uint64_t>(st.getColumn(10).getInt64());
    r.operation_by = st.getColumn(11).getString();
    return r;
  }

  static user_record read_user(SQLite::Statement& st) {
    user_record u;
    u.id = user_id{st.getColumn(0).getInt64()};
    u.name = st.getColumn(1).getString();
    u.password_hash = st.getColumn(2).getString();
    u.role = role_from(st.getColumn(3).getString());
    u.created_at = from_unix_seconds(st.getColumn(4).getInt64());
    u.disabled = st.getColumn(5).getInt() != 0;
    return u;
  }

  result<site_record> site_by_id(site_id id) {
    statement_use st(prepare(
        "SELECT id, name, url, user_id, agent_id, created_at, updated_at, deployer_id, deploy_status, "
        "last_deploy_date, revision, operation_by FROM sites WHERE id = ?"));
    st->bind(1, static_cast<std::int64_t>(id.value()));
    if (!st->executeStep()) return errc::not_found;
    return read_site(*st);
  }

  result<site_record> owned_site(user_id owner, site_id id) {
    statement_use st(prepare(
        "SELECT id, name, url, user_id, agent_id, created_at, updated_at, deployer_id, deploy_status, "
        "last_deploy_date, revision, operation_by FROM sites WHERE id = ? AND user_id = ?"));
    st->bind(1, static_cast<std::int64_t>(id.value()));
    st->bind(2, static_cast<std::int64_t>(owner.value()));
    if (!st->executeStep()) return errc::not_found;
    return read_site(*st);
  }

  /// The row id of principal (kind, name), if any.
  std::optional<std::int64_t> principal_row(principal_kind kind, std::string_view name) {
    statement_use st(prepare("SELECT id FROM principals WHERE kind = ? AND name = ?"));
    st->bind(1, text(kind));
    st->bind(2, text(name));
    if (!st->executeStep()) return std::nullopt;
    return st->getColumn(0).getInt64();
  }

  /// Fills keys (in the order added) and grants (in the order given) of a principal row.
  void load_principal_details(std::int64_t row, principal_record& p) {
    {
      statement_use st(prepare(
          "SELECT key_hash, created_at, expires_at FROM principal_keys WHERE principal_id = ? ORDER BY id"));
      st->bind(1, row);
      while (st->executeStep())
        p.keys.push_back(key_record{st->getColumn(0).getString(), from_unix_seconds(st->getColumn(1).getInt64()),
                                    optional_time(st->getColumn(2))});
    }
    statement_use st(prepare("SELECT grant_id FROM principal_grants WHERE principal_id = ? ORDER BY position"));
    st->bind(1, row);
    while (st->executeStep()) p.grants.push_back(st->getColumn(0).getString());
  }

  void insert_key(std::int64_t row, const key_record& key) {
    statement_use st(
        prepare("INSERT INTO principal_keys (principal_id, key_hash, created_at, expires_at) VALUES (?, ?, ?, ?)"));
    st->bind(1, row);
    st->bind(2, key.key_hash);
    st->bind(3, static_cast<std::int64_t>(seconds(key.created_at)));
    bind_optional_time(*st, 4, key.expires_at);
    st->exec();
  }

  void insert_grants(std::int64_t row, const std::vector<std::string>& grants) {
    std::int64_t position = 0;
    for (const auto& g : grants) {
      statement_use st(prepare("INSERT INTO principal_grants (principal_id, position, grant_id) VALUES (?, ?, ?)"));
      st->bind(1, row);
      st->bind(2, position++);
      st->bind(3, g);
      st->exec();
    }
  }

  // ---------------------------------------------------------------- users
  class users_impl final : public user_store {
   public:
    explicit users_impl(impl& s) : s_(s) {}

    result<user_record> create_user(std::string_view name, std::string_view password_hash, user_role role,
                                    wall_time now) override {
      return s_.guarded("create_user", [&]() -> result<user_record> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(
              s_.prepare("INSERT INTO users (name, password_hash, role, created_at) VALUES (?, ?, ?, ?)"));
          st->bind(1, text(name));
          st->bind(2, text(password_hash));
          st->bind(3, text(to_string(role)));
          st->bind(4, static_cast<std::int64_t>(seconds(now)));
          st->exec();  // a taken name: SQLITE_CONSTRAINT_UNIQUE -> errc::conflict
        }
        user_record u;
        u.id = user_id{s_.db.getLastInsertRowid()};
        u.name = text(name);
        u.password_hash = text(password_hash);
        u.role = role;
        u.created_at = from_unix_seconds(seconds(now));
        tx.commit();
        return u;
      });
    }

    result<user_record> find_user(user_id id) override {
      return s_.guarded("find_user", [&]() -> result<user_record> {
        statement_use st(s_.prepare("SELECT id, name, password_hash, role, created_at, disabled FROM users WHERE id = ?"));
        st->bind(1, static_cast<std::int64_t>(id.value()));
        if (!st->executeStep()) return errc::not_found;
        return read_user(*st);
      });
    }

    result<user_record> find_user_by_name(std::string_view name) override {
      return s_.guarded("find_user_by_name", [&]() -> result<user_record> {
        statement_use st(s_.prepare("SELECT id, name, password_hash, role, created_at, disabled FROM users WHERE name = ?"));
        st->bind(1, text(name));
        if (!st->executeStep()) return errc::not_found;
        return read_user(*st);
      });
    }

    result<std::vector<user_record>> list_users() override {
      return s_.guarded("list_users", [&]() -> result<std::vector<user_record>> {
        statement_use st(s_.prepare("SELECT id, name, password_hash, role, created_at, disabled FROM users ORDER BY id"));
        std::vector<user_record> out;
        while (st->executeStep()) out.push_back(read_user(*st));
        return out;
      });
    }

    result<void> delete_user(user_id id) override {
      return s_.guarded("delete_user", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare("DELETE FROM users WHERE id = ?"));  // sites: ON DELETE CASCADE
          st->bind(1, static_cast<std::int64_t>(id.value()));
          st->exec();
        }
        if (s_.db.getChanges() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

    result<void> set_disabled(user_id id, bool disabled) override {
      return s_.guarded("set_disabled", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare("UPDATE users SET disabled = ? WHERE id = ?"));
          st->bind(1, disabled ? 1 : 0);
          st->bind(2, static_cast<std::int64_t>(id.value()));
          st->exec();
        }
        if (s_.db.getChanges() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

    result<void> set_password_hash(user_id id, std::string_view password_hash) override {
      return s_.guarded("set_password_hash", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare("UPDATE users SET password_hash = ? WHERE id = ?"));
          st->bind(1, text(password_hash));
          st->bind(2, static_cast<std::int64_t>(id.value()));
          st->exec();
        }
        if (s_.db.getChanges() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

    result<void> revoke_token(std::string_view token_id, wall_time expires_at, wall_time now) override {
      return s_.guarded("revoke_token", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use prune(s_.prepare("DELETE FROM revoked_tokens WHERE expires_at < ?"));
          prune->bind(1, static_cast<std::int64_t>(seconds(now)));
          prune->exec();
        }
        {
          statement_use st(s_.prepare("INSERT INTO revoked_tokens (token_id, expires_at) VALUES (?, ?) "
                                      "ON CONFLICT (token_id) DO UPDATE SET expires_at = excluded.expires_at"));
          st->bind(1, text(token_id));
          st->bind(2, static_cast<std::int64_t>(seconds(expires_at)));
          st->exec();
        }
        tx.commit();
        return {};
      });
    }

    result<bool> is_token_revoked(std::string_view token_id) override {
      return s_.guarded("is_token_revoked", [&]() -> result<bool> {
        statement_use st(s_.prepare("SELECT 1 FROM revoked_tokens WHERE token_id = ?"));
        st->bind(1, text(token_id));
        return st->executeStep();
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
      return s_.guarded("create_site", [&]() -> result<site_record> {
        transaction tx(s_, transaction::write);
        {
          statement_use owner(s_.prepare("SELECT 1 FROM users WHERE id = ?"));
          owner->bind(1, static_cast<std::int64_t>(site.owner.value()));
          if (!owner->executeStep()) return errc::not_found;
        }
        {
          statement_use st(s_.prepare(
              "INSERT INTO sites (name, url, user_id, agent_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)"));
          st->bind(1, site.name);
          st->bind(2, site.url);
          st->bind(3, static_cast<std::int64_t>(site.owner.value()));
          st->bind(4, site.agent.value());
          st->bind(5, static_cast<std::int64_t>(seconds(now)));
          st->bind(6, static_cast<std::int64_t>(seconds(now)));
          st->exec();
        }
        site_record r;
        r.id = site_id{s_.db.getLastInsertRowid()};
        r.name = site.name;
        r.url = site.url;
        r.owner = site.owner;
        r.agent = site.agent;
        r.created_at = from_unix_seconds(seconds(now));
        r.updated_at = r.created_at;
        r.revision = 1;  // the column's default
        tx.commit();
        return r;
      });
    }

    result<site_record> find_site(user_id owner, site_id id) override {
      return s_.guarded("find_site", [&] { return s_.owned_site(owner, id); });
    }

    result<std::vector<site_record>> list_sites(user_id owner) override {
      return s_.guarded("list_sites", [&]() -> result<std::vector<site_record>> {
        statement_use st(s_.prepare(
            "SELECT id, name, url, user_id, agent_id, created_at, updated_at, deployer_id, deploy_status, "
            "last_deploy_date, revision, operation_by FROM sites WHERE user_id = ? ORDER BY id"));
        st->bind(1, static_cast<std::int64_t>(owner.value()));
        std::vector<site_record> out;
        while (st->executeStep()) out.push_back(read_site(*st));
        return out;
      });
    }

    result<site_record> update_site(user_id owner, site_id id, const site_changes& changes, wall_time now) override {
      return s_.guarded("update_site", [&]() -> result<site_record> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare(
              "UPDATE sites SET name = COALESCE(?, name), url = COALESCE(?, url), updated_at = ?, "
              "revision = revision + 1 WHERE id = ? AND user_id = ?"));
          bind_optional_text(*st, 1, changes.name);
          bind_optional_text(*st, 2, changes.url);
          st->bind(3, static_cast<std::int64_t>(seconds(now)));
          st->bind(4, static_cast<std::int64_t>(id.value()));
          st->bind(5, static_cast<std::int64_t>(owner.value()));
          st->exec();
        }
        if (s_.db.getChanges() == 0) return errc::not_found;
        auto r = s_.owned_site(owner, id);
        if (!r) return r;
        tx.commit();
        return r;
      });
    }

    result<void> delete_site(user_id owner, site_id id) override {
      return s_.guarded("delete_site", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare("DELETE FROM sites WHERE id = ? AND user_id = ?"));
          st->bind(1, static_cast<std::int64_t>(id.value()));
          st->bind(2, static_cast<std::int64_t>(owner.value()));
          st->exec();
        }
        if (s_.db.getChanges() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

    result<site_record> record_deploy(site_id id, const deploy_update& update, wall_time now) override {
      return s_.guarded("record_deploy", [&]() -> result<site_record> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare(
              "UPDATE sites SET deploy_status = ?, deployer_id = ?, "
              "last_deploy_date = COALESCE(?, last_deploy_date), updated_at = ?, "
              "revision = revision + 1, operation_by = ? WHERE id = ?"));
          st->bind(1, update.deploy_status);
          st->bind(2, update.deployer_id);
          bind_optional_time(*st, 3, update.last_deploy_date);
          st->bind(4, static_cast<std::int64_t>(seconds(now)));
          st->bind(5, update.operation_by);
          st->bind(6, static_cast<std::int64_t>(id.value()));
          st->exec();
        }
        if (s_.db.getChanges() == 0) return errc::not_found;
        auto r = s_.site_by_id(id);
        if (!r) return r;
        tx.commit();
        return r;
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
      return s_.guarded("create_principal", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare("INSERT INTO principals (kind, name, created_at) VALUES (?, ?, ?)"));
          st->bind(1, text(principal.kind));
          st->bind(2, principal.id);
          st->bind(3, static_cast<std::int64_t>(seconds(principal.created_at)));
          st->exec();  // (kind, name) exists: SQLITE_CONSTRAINT_UNIQUE -> errc::conflict
        }
        const std::int64_t row = s_.db.getLastInsertRowid();
        for (const auto& k : principal.keys) s_.insert_key(row, k);
        s_.insert_grants(row, principal.grants);
        tx.commit();
        return {};
      });
    }

    result<principal_record> find_principal(principal_kind kind, std::string_view id) override {
      return s_.guarded("find_principal", [&]() -> result<principal_record> {
        transaction tx(s_, transaction::read);  // one consistent snapshot across the three reads
        principal_record p;
        std::int64_t row = 0;
        {
          statement_use st(s_.prepare("SELECT id, created_at FROM principals WHERE kind = ? AND name = ?"));
          st->bind(1, text(kind));
          st->bind(2, text(id));
          if (!st->executeStep()) return errc::not_found;
          row = st->getColumn(0).getInt64();
          p.created_at = from_unix_seconds(st->getColumn(1).getInt64());
        }
        p.kind = kind;
        p.id = text(id);
        s_.load_principal_details(row, p);
        tx.commit();
        return p;
      });
    }

    result<std::vector<principal_record>> list_principals(principal_kind kind) override {
      return s_.guarded("list_principals", [&]() -> result<std::vector<principal_record>> {
        transaction tx(s_, transaction::read);
        std::vector<std::pair<std::int64_t, principal_record>> rows;
        {
          statement_use st(s_.prepare("SELECT id, name, created_at FROM principals WHERE kind = ? ORDER BY name"));
          st->bind(1, text(kind));
          while (st->executeStep()) {
            principal_record p;
            p.kind = kind;
            p.id = st->getColumn(1).getString();
            p.created_at = from_unix_seconds(st->getColumn(2).getInt64());
            rows.emplace_back(st->getColumn(0).getInt64(), std::move(p));
          }
        }
        std::vector<principal_record> out;
        out.reserve(rows.size());
        for (auto& [row, p] : rows) {
          s_.load_principal_details(row, p);
          out.push_back(std::move(p));
        }
        tx.commit();
        return out;
      });
    }

    result<void> rotate_key(principal_kind kind, std::string_view id, const key_record& key,
                            wall_time old_keys_expire_at) override {
      return s_.guarded("rotate_key", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        const auto row = s_.principal_row(kind, id);
        if (!row) return errc::not_found;
        {
          statement_use st(s_.prepare(
              "UPDATE principal_keys SET expires_at = ? "
              "WHERE principal_id = ? AND (expires_at IS NULL OR expires_at > ?)"));
          st->bind(1, static_cast<std::int64_t>(seconds(old_keys_expire_at)));
          st->bind(2, *row);
          st->bind(3, static_cast<std::int64_t>(seconds(old_keys_expire_at)));
          st->exec();
        }
        s_.insert_key(*row, key);
        tx.commit();
        return {};
      });
    }

    result<void> set_grants(principal_kind kind, std::string_view id, const std::vector<std::string>& grants) override {
      return s_.guarded("set_grants", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        const auto row = s_.principal_row(kind, id);
        if (!row) return errc::not_found;
        {
          statement_use st(s_.prepare("DELETE FROM principal_grants WHERE principal_id = ?"));
          st->bind(1, *row);
          st->exec();
        }
        s_.insert_grants(*row, grants);
        tx.commit();
        return {};
      });
    }

    result<void> delete_principal(principal_kind kind, std::string_view id) override {
      return s_.guarded("delete_principal", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          // keys and grants: ON DELETE CASCADE
          statement_use st(s_.prepare("DELETE FROM principals WHERE kind = ? AND name = ?"));
          st->bind(1, text(kind));
          st->bind(2, text(id));
          st->exec();
        }
        if (s_.db.getChanges() == 0) return errc::not_found;
        tx.commit();
        return {};
      });
    }

   private:
    impl& s_;
  };

  // ---------------------------------------------------------------- audit
#define CITRUS_AUDIT_COLUMNS "id, at, kind, actor, action, target, outcome, detail, prev_hash, hash"
#define CITRUS_AUDIT_COLUMNS_E \
  "e.id, e.at, e.kind, e.actor, e.action, e.target, e.outcome, e.detail, e.prev_hash, e.hash"
#define CITRUS_FLAGGED "(e.kind = 'security_event' OR (e.kind = 'authentication' AND e.outcome <> 'ok'))"
  class audit_impl final : public audit_store {
   public:
    explicit audit_impl(impl& s) : s_(s) {}

    result<void> append(const audit_event& event) override {
      return s_.guarded("audit_append", [&]() -> result<void> {
        transaction tx(s_, transaction::write);  // BEGIN IMMEDIATE: the head cannot move under us
        link(event);
        tx.commit();
        return {};
      });
    }

    result<void> append_all(const std::vector<audit_event>& events) override {
      return s_.guarded("audit_append", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        for (const auto& e : events) link(e);
        tx.commit();
        return {};
      });
    }

    result<std::vector<audit_record>> chain(std::int64_t from_id, std::int64_t to_id, std::size_t limit) override {
      return s_.guarded("audit_chain", [&]() -> result<std::vector<audit_record>> {
        statement_use st(s_.prepare("SELECT " CITRUS_AUDIT_COLUMNS " FROM audit_events WHERE id >= ? AND id <= ? "
                                    "ORDER BY id LIMIT ?"));
        st->bind(1, from_id);
        st->bind(2, to_id);
        st->bind(3, clamp_limit(limit));
        std::vector<audit_record> out;
        while (st->executeStep()) out.push_back(read_record(*st));
        return out;
      });
    }

    result<std::optional<audit_record>> chain_before(std::int64_t id) override {
      return s_.guarded("audit_chain_before", [&]() -> result<std::optional<audit_record>> {
        statement_use st(s_.prepare("SELECT " CITRUS_AUDIT_COLUMNS " FROM audit_events WHERE id < ? "
                                    "ORDER BY id DESC LIMIT 1"));
        st->bind(1, id);
        if (!st->executeStep()) return std::optional<audit_record>{};
        return std::optional<audit_record>{read_record(*st)};
      });
    }

    result<std::vector<audit_record>> review(const audit_review_query& q) override {
      return s_.guarded("audit_review", [&]() -> result<std::vector<audit_record>> {
        // One statement for every filter combination: a NULL parameter means "any".
        statement_use st(s_.prepare(
            "SELECT " CITRUS_AUDIT_COLUMNS_E ", a.acked_by, a.acked_at FROM audit_events e "
            "LEFT JOIN audit_acks a ON a.event_id = e.id WHERE (?8 = 0 OR " CITRUS_FLAGGED ")"
            " AND (?1 IS NULL OR e.kind = ?1) AND (?2 IS NULL OR e.actor = ?2) AND (?3 IS NULL OR e.outcome = ?3) "
            "AND (?4 IS NULL OR e.at >= ?4) AND (?5 IS NULL OR e.at <= ?5) AND (?6 = 0 OR a.event_id IS NULL) "
            "ORDER BY e.id DESC LIMIT ?7"));
        bind_optional_text(*st, 1, q.kind ? std::optional<std::string>(text(to_string(*q.kind))) : std::nullopt);
        bind_optional_text(*st, 2, q.actor);
        bind_optional_text(*st, 3, q.outcome);
        bind_optional_time(*st, 4, q.since);
        bind_optional_time(*st, 5, q.until);
        st->bind(6, q.unacknowledged_only ? 1 : 0);
        st->bind(7, clamp_limit(q.limit));
        st->bind(8, q.flagged_only ? 1 : 0);
        std::vector<audit_record> out;
        while (st->executeStep()) {
          out.push_back(read_record(*st));
          if (!st->getColumn(10).isNull())
            out.back().ack = audit_ack{st->getColumn(10).getString(), from_unix_seconds(st->getColumn(11).getInt64())};
        }
        return out;
      });
    }

    result<std::uint64_t> count_unacknowledged() override {
      return s_.guarded("audit_unacknowledged", [&]() -> result<std::uint64_t> {
        statement_use st(s_.prepare("SELECT count(*) FROM audit_events e WHERE " CITRUS_FLAGGED
                                    " AND NOT EXISTS (SELECT 1 FROM audit_acks a WHERE a.event_id = e.id)"));
        st->executeStep();
        return static_cast<std::uint64_t>(st->getColumn(0).getInt64());
      });
    }

    result<void> acknowledge(std::int64_t id, std::string_view by, wall_time at) override {
      return s_.guarded("audit_acknowledge", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare("SELECT 1 FROM audit_events e WHERE e.id = ? AND " CITRUS_FLAGGED));
          st->bind(1, id);
          if (!st->executeStep()) return errc::not_found;
        }
        {
          statement_use st(s_.prepare("INSERT INTO audit_acks (event_id, acked_by, acked_at) VALUES (?, ?, ?)"));
          st->bind(1, id);
          st->bind(2, text(by));
          st->bind(3, static_cast<std::int64_t>(seconds(at)));
          st->exec();  // a second acknowledgement: PRIMARY KEY -> errc::conflict
        }
        link(acknowledgement_event(id, by, at));
        tx.commit();
        return {};
      });
    }

    result<std::vector<audit_event>> query(const audit_query& q) override {
      return s_.guarded("audit_query", [&]() -> result<std::vector<audit_event>> {
        constexpr auto max_limit = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
        const auto limit = static_cast<std::int64_t>(q.limit < max_limit ? q.limit : max_limit);
        // Newest first; among events of the same second, the later-appended first. One statement per
        // filter combination, each served by an index: audit_events_by_kind_time or audit_events_by_time.
        static constexpr const char* sql[2][2] = {
            {"SELECT at, kind, actor, action, target, outcome, detail FROM audit_events "
             "ORDER BY at DESC, id DESC LIMIT ?",
             "SELECT at, kind, actor, action, target, outcome, detail FROM audit_events WHERE at >= ? "
             "ORDER BY at DESC, id DESC LIMIT ?"},
            {"SELECT at, kind, actor, action, target, outcome, detail FROM audit_events WHERE kind = ? "
             "ORDER BY at DESC, id DESC LIMIT ?",
             "SELECT at, kind, actor, action, target, outcome, detail FROM audit_events WHERE kind = ? AND at >= ? "
             "ORDER BY at DESC, id DESC LIMIT ?"},
        };
        statement_use st(s_.prepare(sql[q.kind ? 1 : 0][q.since ? 1 : 0]));
        int index = 1;
        if (q.kind) st->bind(index++, text(to_string(*q.kind)));
        if (q.since) st->bind(index++, static_cast<std::int64_t>(seconds(*q.since)));
        st->bind(index, limit);
        std::vector<audit_event> out;
        while (st->executeStep()) {
          audit_event e;
          e.at = from_unix_seconds(st->getColumn(0).getInt64());
          e.kind = audit_kind_from(st->getColumn(1).getString());
          e.actor = st->getColumn(2).getString();
          e.action = st->getColumn(3).getString();
          e.target = st->getColumn(4).getString();
          e.outcome = st->getColumn(5).getString();
          e.detail = st->getColumn(6).getString();
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

    /// Columns 0..9 of CITRUS_AUDIT_COLUMNS. A kind no version of Citrus writes cannot be hashed as
    /// stored, so the record gets no hash and the verifier reports the row as edited.
    static audit_record read_record(SQLite::Statement& st) {
      audit_record r;
      r.id = st.getColumn(0).getInt64();
      r.event.at = from_unix_seconds(st.getColumn(1).getInt64());
      const auto kind = parse_audit_kind(st.getColumn(2).getString());
      r.event.kind = kind.value_or(audit_kind::security_event);
      r.event.actor = st.getColumn(3).getString();
      r.event.action = st.getColumn(4).getString();
      r.event.target = st.getColumn(5).getString();
      r.event.outcome = st.getColumn(6).getString();
      r.event.detail = st.getColumn(7).getString();
      r.prev_hash = st.getColumn(8).getString();
      r.hash = kind ? st.getColumn(9).getString() : std::string();
      return r;
    }

    /// Inserts `event` chained to the current head. Runs inside the caller's write transaction.
    void link(const audit_event& event) {
      std::string prev(audit_genesis_hash());
      {
        statement_use head(s_.prepare("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1"));
        if (head->executeStep()) prev = head->getColumn(0).getString();
      }
      audit_event stored = event;
      stored.at = from_unix_seconds(seconds(event.at));
      const std::string hash = audit_chain_hash(stored, prev);
      statement_use st(s_.prepare(
          "INSERT INTO audit_events (at, kind, actor, action, target, outcome, detail, prev_hash, hash) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
      st->bind(1, static_cast<std::int64_t>(seconds(stored.at)));
      st->bind(2, text(to_string(stored.kind)));
      st->bind(3, stored.actor);
      st->bind(4, stored.action);
      st->bind(5, stored.target);
      st->bind(6, stored.outcome);
      st->bind(7, stored.detail);
      st->bind(8, prev);
      st->bind(9, hash);
      st->exec();
    }

    impl& s_;
  };

  class login_failures_impl final : public login_failure_store {
   public:
    explicit login_failures_impl(impl& s) : s_(s) {}

    result<void> record_login_failure(const std::vector<std::string>& keys, wall_time at, wall_time forget_before) override {
      return s_.guarded("login_failure_record", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare("DELETE FROM login_failures WHERE at < ?"));
          st->bind(1, static_cast<std::int64_t>(seconds(forget_before)));
          st->exec();
        }
        for (const auto& key : keys) {
          statement_use st(s_.prepare("INSERT INTO login_failures (key, at) VALUES (?, ?)"));
          st->bind(1, key);
          st->bind(2, static_cast<std::int64_t>(seconds(at)));
          st->exec();
        }
        tx.commit();
        return {};
      });
    }

    result<std::vector<std::size_t>> count_login_failures(const std::vector<std::string>& keys,
                                                          const std::vector<wall_time>& since, wall_time until) override {
      return s_.guarded("login_failure_count", [&]() -> result<std::vector<std::size_t>> {
        std::vector<std::size_t> out;
        for (std::size_t i = 0; i < keys.size(); ++i) {
          statement_use st(s_.prepare("SELECT count(*) FROM login_failures WHERE key = ? AND at >= ? AND at <= ?"));
          st->bind(1, keys[i]);
          st->bind(2, static_cast<std::int64_t>(seconds(i < since.size() ? since[i] : wall_time{})));
          st->bind(3, static_cast<std::int64_t>(seconds(until)));
          out.push_back(st->executeStep() ? static_cast<std::size_t>(st->getColumn(0).getInt64()) : 0);
        }
        return out;
      });
    }

    result<void> clear_login_failures(std::string_view key) override {
      return s_.guarded("login_failure_clear", [&]() -> result<void> {
        transaction tx(s_, transaction::write);
        {
          statement_use st(s_.prepare("DELETE FROM login_failures WHERE key = ?"));
          st->bind(1, std::string(key));
          st->exec();
        }
        tx.commit();
        return {};
      });
    }

   private:
    impl& s_;
  };
#undef CITRUS_AUDIT_COLUMNS
#undef CITRUS_AUDIT_COLUMNS_E
#undef CITRUS_FLAGGED

  users_impl users{*this};
  sites_impl sites{*this};
  credentials_impl credentials{*this};
  audit_impl audit{*this};
  login_failures_impl login_failures{*this};
};

// ------------------------------------------------------------------ open

namespace {

enum class open_phase { inspect, migrate };

std::error_code open_failure(open_phase phase, const SQLite::Exception& e) {
  switch (e.getErrorCode() & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return make_error_code(errc::storage_unavailable);
    case SQLITE_FULL: return make_error_code(errc::storage_full);
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT: return make_error_code(open_errc::not_a_database);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH: return make_error_code(open_errc::cannot_open);
    default:
      return make_error_code(phase == open_phase::inspect ? open_errc::cannot_open : open_errc::migration_failed);
  }
}

void report_open_failure(citrus::logger* log, std::string_view step, const std::string& path, const char* what) {
  if (log == nullptr || !log->enabled(log_level::error)) return;
  log->log(log_level::error, "sqlite_open_failed", {field("step", step), field("path", path), field("message", what)});
}

int user_version(SQLite::Database& db) { return db.execAndGet("PRAGMA user_version").getInt(); }

/// Migration 5's second half: links the events a version-4 database already holds, in id order.
void chain_existing_audit(SQLite::Database& db) {
  SQLite::Statement rows(db, "SELECT id, at, kind, actor, action, target, outcome, detail FROM audit_events ORDER BY id");
  SQLite::Statement update(db, "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?");
  std::string prev(audit_genesis_hash());
  while (rows.executeStep()) {
    audit_event e{from_unix_seconds(rows.getColumn(1).getInt64()), audit_kind_from(rows.getColumn(2).getString()),
                  rows.getColumn(3).getString(), rows.getColumn(4).getString(), rows.getColumn(5).getString(),
                  rows.getColumn(6).getString(), rows.getColumn(7).getString()};
    std::string hash = audit_chain_hash(e, prev);
    update.bind(1, prev);
    update.bind(2, hash);
    update.bind(3, rows.getColumn(0).getInt64());
    update.exec();
    update.reset();
    prev = std::move(hash);
  }
}

/// What a migration needs besides its SQL, run right after it in the same transaction.
void after_migration(SQLite::Database& db, int to_version) {
  if (to_version == 5) chain_existing_audit(db);
}

/// Brings the schema from its current version to sqlite_storage::schema_version in one IMMEDIATE
/// transaction (a concurrent opener waits, then sees the migrated version and does nothing).
std::error_code migrate(SQLite::Database& db) {
  db.exec("BEGIN IMMEDIATE");
  try {
    const int from = user_version(db);
    if (from > sqlite_storage::schema_version) {
      db.exec("ROLLBACK");
      return make_error_code(open_errc::schema_too_new);
    }
    for (int v = from; v < sqlite_storage::schema_version; ++v) {
      db.exec(migrations[v]);
      after_migration(db, v + 1);
    }
    if (from != sqlite_storage::schema_version)
      db.exec("PRAGMA user_version = " + std::to_string(sqlite_storage::schema_version));
    db.exec("COMMIT");
  } catch (...) {
    if (sqlite3_get_autocommit(db.getHandle()) == 0) db.tryExec("ROLLBACK");
    throw;
  }
  return {};
}

}  // namespace

sqlite_storage::sqlite_storage(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
sqlite_storage::~sqlite_storage() = default;

result<std::unique_ptr<sqlite_storage>> sqlite_storage::open(const std::string& path, const sqlite_options& options) {
  if (options.busy_timeout.count() <= 0 || options.busy_timeout.count() > INT_MAX || options.max_page_count < 0)
    return make_error_code(open_errc::invalid_options);
  const int busy_ms = static_cast<int>(options.busy_timeout.count());

  create_private_file(path);
  std::unique_ptr<impl> state;
  try {
    state = std::make_unique<impl>(path, busy_ms, options.log);
  } catch (const SQLite::Exception& e) {
    report_open_failure(options.log, "open", path, e.what());
    return make_error_code(open_errc::cannot_open);
  } catch (const std::exception& e) {
    report_open_failure(options.log, "open", path, e.what());
    return make_error_code(open_errc::cannot_open);
  }
  SQLite::Database& db = state->db;

  // Inspect before changing anything: a foreign or newer file is left exactly as it was.
  try {
    db.setBusyTimeout(busy_ms);
    if (user_version(db) > schema_version) {
      report_open_failure(options.log, "inspect", path, "schema version newer than supported");
      return make_error_code(open_errc::schema_too_new);
    }
  } catch (const SQLite::Exception& e) {
    report_open_failure(options.log, "inspect", path, e.what());
    return open_failure(open_phase::inspect, e);
  }

  try {
    db.exec("PRAGMA foreign_keys = ON");   // per connection; sites and keys cascade on delete
    db.exec("PRAGMA trusted_schema = OFF");  // no SQL functions with side effects from schema objects
    // WAL: readers never block the writer nor the writer the readers. ":memory:" stays "memory".
    db.execAndGet("PRAGMA journal_mode = WAL");
    // FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss. Our writes are few
    // (users, sites, key rotations, audit batches) and a lost key rotation or security audit event is
    // worse than one fsync per commit.
    db.exec("PRAGMA synchronous = FULL");
    if (auto err = migrate(db)) {
      report_open_failure(options.log, "migrate", path, err.message().c_str());
      return err;
    }
    if (options.max_page_count > 0)
      db.execAndGet("PRAGMA max_page_count = " + std::to_string(options.max_page_count));
  } catch (const SQLite::Exception& e) {
    report_open_failure(options.log, "migrate", path, e.what());
    return open_failure(open_phase::migrate, e);
  } catch (const std::exception& e) {
    report_open_failure(options.log, "migrate", path, e.what());
    return make_error_code(open_errc::migration_failed);
  }
  return std::unique_ptr<sqlite_storage>(new sqlite_storage(std::move(state)));
}

user_store& sqlite_storage::users() { return impl_->users; }
site_store& sqlite_storage::sites() { return impl_->sites; }
credential_store& sqlite_storage::credentials() { return impl_->credentials; }
audit_store& sqlite_storage::audit() { return impl_->audit; }
login_failure_store& sqlite_storage::login_failures() { return impl_->login_failures; }

}  // namespace citrus::sqlite
