#include "sqlite_journal.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <chrono>
#include <string>
#include <utility>

#include "citrus/core/error.hpp"

namespace citrus::agent {

namespace {

constexpr int schema_version = 1;

std::int64_t to_ms(wall_time t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
wall_time from_ms(std::int64_t ms) {
  return wall_time{std::chrono::duration_cast<wall_time::duration>(std::chrono::milliseconds(ms))};
}

errc to_errc(const SQLite::Exception& e) {
  return (e.getErrorCode() & 0xff) == SQLITE_FULL ? errc::storage_full : errc::storage_unavailable;
}

}  // namespace

struct sqlite_journal::impl {
  impl(const std::filesystem::path& file, logger& l)
      : db(file.string(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE), log(l) {}
  SQLite::Database db;
  logger& log;

  errc failed(std::string_view what, const SQLite::Exception& e) {
    log.log(log_level::error, "journal_error",
            {field("op", what), field("code", std::int64_t{e.getErrorCode()}), field("error", e.what())});
    return to_errc(e);
  }

  static journal_entry read(SQLite::Statement& q) {
    journal_entry e;
    e.commander = q.getColumn(0).getString();
    e.request = q.getColumn(1).getString();
    e.op = q.getColumn(2).getString();
    e.state = journal_state_from(q.getColumn(3).getString()).value_or(journal_state::running);
    e.outcome = q.getColumn(4).getString();
    e.updated = from_ms(q.getColumn(5).getInt64());
    return e;
  }
};

sqlite_journal::sqlite_journal(std::unique_ptr<impl> m) : impl_(std::move(m)) {}
sqlite_journal::~sqlite_journal() = default;

result<std::unique_ptr<sqlite_journal>> sqlite_journal::open(const std::filesystem::path& file, logger& log) {
  try {
    auto m = std::make_unique<impl>(file, log);
    (void)::chmod(file.c_str(), 0600);  // it names the commanders and their requests: the agent's own
    m->db.setBusyTimeout(5000);
    m->db.execAndGet("PRAGMA journal_mode = WAL");
    // FULL: in WAL mode NORMAL may lose the last commits on power loss, and a lost "running" would let
    // a resent deploy run twice.
    m->db.exec("PRAGMA synchronous = FULL");
    const int version = m->db.execAndGet("PRAGMA user_version").getInt();
    if (version > schema_version) {
      log.log(log_level::error, "journal_error", {field("op", "open"), field("error", "schema version newer than supported")});
      return errc::storage_unavailable;
    }
    m->db.exec(
        "CREATE TABLE IF NOT EXISTS operations ("
        " commander TEXT NOT NULL, request TEXT NOT NULL, op TEXT NOT NULL, state TEXT NOT NULL,"
        " outcome TEXT NOT NULL, updated_ms INTEGER NOT NULL, PRIMARY KEY (commander, request)) WITHOUT ROWID;"
        "CREATE INDEX IF NOT EXISTS operations_by_state ON operations (state, updated_ms);");
    m->db.exec("PRAGMA user_version = " + std::to_string(schema_version));
    return std::unique_ptr<sqlite_journal>(new sqlite_journal(std::move(m)));
  } catch (const SQLite::Exception& e) {
    log.log(log_level::error, "journal_error", {field("op", "open"), field("path", file.string()), field("error", e.what())});
    return to_errc(e);
  }
}

result<std::optional<journal_entry>> sqlite_journal::find(std::string_view commander, std::string_view request) {
  try {
    SQLite::Statement q(impl_->db,
                        "SELECT commander, request, op, state, outcome, updated_ms FROM operations"
                        " WHERE commander = ? AND request = ?");
    q.bind(1, std::string(commander));
    q.bind(2, std::string(request));
    if (!q.executeStep()) return std::optional<journal_entry>{};
    return std::optional<journal_entry>{impl::read(q)};
  } catch (const SQLite::Exception& e) {
    return impl_->failed("find", e);
  }
}

result<void> sqlite_journal::put(const journal_entry& entry) {
  try {
    SQLite::Statement q(impl_->db,
                        "INSERT OR REPLACE INTO operations (commander, request, op, state, outcome, updated_ms)"
                        " VALUES (?, ?, ?, ?, ?, ?)");
    q.bind(1, entry.commander);
    q.bind(2, entry.request);
    q.bind(3, entry.op);
    q.bind(4, std::string(to_string(entry.state)));
    q.bind(5, entry.outcome);
    q.bind(6, static_cast<std::int64_t>(to_ms(entry.updated)));
    q.exec();  // autocommit: durable (synchronous=FULL) when it returns
    return {};
  } catch (const SQLite::Exception& e) {
    return impl_->failed("put", e);
  }
}

result<void> sqlite_journal::erase(std::string_view commander, std::string_view request) {
  try {
    SQLite::Statement q(impl_->db, "DELETE FROM operations WHERE commander = ? AND request = ?");
    q.bind(1, std::string(commander));
    q.bind(2, std::string(request));
    q.exec();
    return {};
  } catch (const SQLite::Exception& e) {
    return impl_->failed("erase", e);
  }
}

result<std::vector<journal_entry>> sqlite_journal::unfinished() {
  try {
    SQLite::Statement q(impl_->db,
                        "SELECT commander, request, op, state, outcome, updated_ms FROM operations"
                        " WHERE state != 'done' ORDER BY updated_ms");
    std::vector<journal_entry> out;
    while (q.executeStep()) out.push_back(impl::read(q));
    return out;
  } catch (const SQLite::Exception& e) {
    return impl_->failed("unfinished", e);
  }
}

result<std::size_t> sqlite_journal::prune(wall_time before, std::size_t max_done) {
  try {
    SQLite::Transaction tx(impl_->db);
    SQLite::Statement old(impl_->db, "DELETE FROM operations WHERE state = 'done' AND updated_ms < ?");
    old.bind(1, static_cast<std::int64_t>(to_ms(before)));
    std::size_t removed = static_cast<std::size_t>(old.exec());
    SQLite::Statement excess(impl_->db,
                             "DELETE FROM operations WHERE state = 'done' AND (commander, request) IN"
                             " (SELECT commander, request FROM operations WHERE state = 'done'"
                             "  ORDER BY updated_ms DESC LIMIT -1 OFFSET ?)");
    excess.bind(1, static_cast<std::int64_t>(max_done));
    removed += static_cast<std::size_t>(excess.exec());
    tx.commit();
    return removed;
  } catch (const SQLite::Exception& e) {
    return impl_->failed("prune", e);
  }
}

}  // namespace citrus::agent
