#include "session.hpp"

#include <algorithm>
#include <utility>

namespace citrus::postgres::detail {
namespace {

/// Server notices (e.g. "relation already exists, skipping") go to the log at debug level instead of
/// libpqxx's default, stderr.
class notice_sink final : public pqxx::errorhandler {
 public:
  notice_sink(pqxx::connection_base& conn, citrus::logger* log) : pqxx::errorhandler(conn), log_(log) {}
  bool operator()(const char message[]) noexcept override {
    if (log_ != nullptr && log_->enabled(log_level::debug)) {
      std::string_view text(message);
      while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
      log_->log(log_level::debug, "postgres_notice", {field("message", text)});
    }
    return false;
  }

 private:
  citrus::logger* log_;
};

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

errc map_sqlstate(std::string_view state) noexcept {
  if (state == "23505") return errc::conflict;             // unique_violation
  if (state == "23503") return errc::not_found;            // foreign_key_violation: the row it names is gone
  if (state == "53100") return errc::storage_full;         // disk_full
  if (starts_with(state, "08")) return errc::storage_unavailable;  // connection exception
  if (starts_with(state, "53")) return errc::storage_unavailable;  // out of memory, too many connections
  if (starts_with(state, "57")) return errc::storage_unavailable;  // statement timeout, shutdown, starting up
  if (starts_with(state, "40")) return errc::storage_unavailable;  // serialization failure, deadlock
  if (state == "55P03") return errc::storage_unavailable;  // lock_not_available
  if (state == "25006") return errc::storage_unavailable;  // read-only transaction: a standby, after a failover
  if (starts_with(state, "22")) return errc::invalid_value;  // data exception: bytes invalid in the encoding
  return errc::internal_error;
}

bool drops_connection(std::string_view state) noexcept {
  return starts_with(state, "08") || starts_with(state, "57P") || state == "25006";
}

std::string text(std::string_view s) {
  if (s.find('\0') != std::string_view::npos) throw unstorable_text();
  return std::string(s);
}

session::session(conninfo info, const postgres_options& options, const statement* statements, std::size_t count)
    : info_(std::move(info)),
      options_(options),
      statements_(statements),
      statement_count_(count),
      jitter_(std::random_device{}()) {}

session::~session() { drop(); }

void session::drop() noexcept {
  notices_.reset();
  conn_.reset();  // PQfinish: never blocks (the socket is non-blocking, the Terminate message tiny)
}

void session::connect() {
  drop();
  auto fresh = std::make_unique<pqxx::connection>(info_.text);  // libpq connect, bounded by connect_timeout
  auto notices = std::make_unique<notice_sink>(*fresh, options_.log);
  {
    deadline_scope deadline(watchdog_, fresh->sock(), options_.operation_timeout);
    // set_variable, not a raw SET: libpqxx would restore it if it ever reconnected this object itself.
    fresh->set_variable("statement_timeout", std::to_string(options_.statement_timeout.count()));
    if (deadline.end()) throw pqxx::broken_connection("the server did not answer in time");
  }
  for (std::size_t i = 0; i < statement_count_; ++i) fresh->prepare(statements_[i].name, statements_[i].sql);
  conn_ = std::move(fresh);
  notices_ = std::move(notices);
  if (was_connected_) report(log_level::info, "postgres_reconnected", "connect", "", info_.target);
  was_connected_ = true;
  failures_ = 0;
}

bool session::ensure_connected(std::string_view op) noexcept {
  if (conn_) return true;
  if (std::chrono::steady_clock::now() < retry_at_) return false;  // breaker open: no network I/O
  try {
    connect();
    return true;
  } catch (const pqxx::sql_error& e) {
    report(log_level::warn, "postgres_connect_failed", op, e.sqlstate(), e.what());
  } catch (const std::exception& e) {
    report(log_level::warn, "postgres_connect_failed", op, "", e.what());
  } catch (...) {
  }
  drop();
  open_breaker();
  return false;
}

errc session::failure(std::string_view op, std::exception_ptr error, bool timed_out) noexcept {
  try {
    std::rethrow_exception(std::move(error));
  } catch (const unstorable_text& e) {
    report(log_level::debug, "postgres_error", op, "", e.what());
    return errc::invalid_value;
  } catch (const pqxx::in_doubt_error& e) {
    // The connection broke during COMMIT: the one case where "a failed write changed nothing" cannot be
    // promised.
    report(log_level::error, "postgres_commit_outcome_unknown", op, "", e.what());
    lose_connection(op, "commit outcome unknown");
    return errc::storage_unavailable;
  } catch (const pqxx::statement_completion_unknown& e) {
    report(log_level::error, "postgres_commit_outcome_unknown", op, "", e.what());
    lose_connection(op, "statement outcome unknown");
    return errc::storage_unavailable;
  } catch (const pqxx::broken_connection& e) {
    report(log_level::warn, timed_out ? "postgres_timeout" : "postgres_error", op, "", e.what());
    lose_connection(op, timed_out ? "operation timeout" : "connection lost");
    return errc::storage_unavailable;
  } catch (const pqxx::transaction_rollback& e) {  // serialization failure, deadlock: worth a retry later
    report(log_level::warn, "postgres_error", op, "", e.what());
    return errc::storage_unavailable;
  } catch (const pqxx::sql_error& e) {
    const std::string& state = e.sqlstate();
    const errc mapped = timed_out ? errc::storage_unavailable : map_sqlstate(state);
    const log_level level = mapped == errc::conflict || mapped == errc::not_found || mapped == errc::invalid_value
                                ? log_level::debug
                            : mapped == errc::internal_error ? log_level::error
                                                             : log_level::warn;
    report(level, timed_out ? "postgres_timeout" : "postgres_error", op, state, e.what());
    if (timed_out || drops_connection(state) || !conn_ || !conn_->is_open())
      lose_connection(op, "the server ended the session");
    return mapped;
  } catch (const std::exception& e) {
    if (timed_out || !conn_ || !conn_->is_open()) {
      report(log_level::warn, timed_out ? "postgres_timeout" : "postgres_error", op, "", e.what());
      lose_connection(op, "connection lost");
      return errc::storage_unavailable;
    }
    report(log_level::error, "postgres_error", op, "", e.what());
    return errc::internal_error;
  } catch (...) {
    return errc::internal_error;
  }
}

void session::lose_connection(std::string_view op, std::string_view why) noexcept {
  if (conn_) report(log_level::warn, "postgres_disconnected", op, "", why);
  drop();
  open_breaker();
}

void session::open_breaker() noexcept {
  // Full jitter over a window that doubles per consecutive failure: [min, min * 2^(failures-1)], capped.
  ++failures_;
  const long long lo = options_.reconnect_backoff_min.count();
  const long long hi = options_.reconnect_backoff_max.count();
  long long window = lo;
  for (int i = 1; i < failures_ && window < hi; ++i) window *= 2;
  window = std::min(window, hi);
  std::uniform_int_distribution<long long> pick(lo, std::max(lo, window));
  retry_at_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(pick(jitter_));
}

void session::report(log_level level, std::string_view event, std::string_view op, std::string_view state,
                     std::string_view message) noexcept {
  citrus::logger* log = options_.log;
  if (log == nullptr || !log->enabled(level)) return;
  // The first line only: the server's DETAIL line may quote row values ("Key (name)=(alice)").
  std::string_view text = message.substr(0, message.find('\n'));
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  log->log(level, event, {field("op", op), field("sqlstate", state), field("message", text), field("target", target())});
}

}  // namespace citrus::postgres::detail
