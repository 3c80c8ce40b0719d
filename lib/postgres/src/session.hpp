#pragma once
// One PostgreSQL connection with everything around it that keeps a caller from waiting long or
// crashing: the one place libpqxx exceptions are caught and mapped to citrus errc (guarded()), the
// client-side deadline (watchdog), and the circuit breaker in front of reconnects. Moving to libpqxx 7
// or raw libpq touches this file, session.cpp and the stores' SQL calls. Private to citrus::postgres.
// Known: libpqxx 6.4 leaks one PGresult (about 2 KiB) per connection lost in the middle of a statement
// (jtv/libpqxx#500, fixed in 7.x); the breaker's backoff bounds how often that can happen.
#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "citrus/core/error.hpp"
#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "citrus/postgres/postgres_storage.hpp"
#include "conninfo.hpp"
#include "watchdog.hpp"

namespace citrus::postgres::detail {

/// The errc a SQLSTATE means to a caller.
errc map_sqlstate(std::string_view state) noexcept;
/// Whether a SQLSTATE means this session is gone or useless (reconnect before the next call).
bool drops_connection(std::string_view state) noexcept;

/// Thrown for a value PostgreSQL cannot store as text (a NUL byte): errc::invalid_value, nothing sent.
struct unstorable_text final : std::exception {
  const char* what() const noexcept override { return "text contains a NUL byte"; }
};

/// A prepared statement: registered on every new connection (libpqxx prepares it on first use).
struct statement {
  const char* name;
  const char* sql;
};

class session {
 public:
  session(conninfo info, const postgres_options& options, const statement* statements, std::size_t count);
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// Connects now, bypassing the breaker (open()); throws what libpqxx throws.
  void connect();
  bool connected() const noexcept { return conn_ != nullptr; }
  pqxx::connection& connection() { return *conn_; }
  watchdog& deadline() { return watchdog_; }
  const postgres_options& options() const noexcept { return options_; }
  const std::string& target() const noexcept { return info_.target; }

  /// Runs `body(connection)` under the client-side deadline; a libpqxx failure becomes an errc, a lost
  /// connection opens the breaker. While the breaker is open, answers storage_unavailable at once.
  template <class F>
  auto guarded(std::string_view op, F&& body) noexcept -> decltype(body(std::declval<pqxx::connection&>())) {
    try {
      if (!ensure_connected(op)) return errc::storage_unavailable;
      deadline_scope deadline(watchdog_, conn_->sock(), options_.operation_timeout);
      try {
        auto r = body(*conn_);
        // The deadline fired as the answer came in: the result stands, the socket does not.
        if (deadline.end()) lose_connection(op, "the server answered after the operation timeout");
        return r;
      } catch (...) {
        const bool timed_out = deadline.end();
        return failure(op, std::current_exception(), timed_out);
      }
    } catch (...) {
      return errc::internal_error;  // not reached: failure() and ensure_connected() do not throw
    }
  }

  void report(log_level level, std::string_view event, std::string_view op, std::string_view state,
              std::string_view message) noexcept;

 private:
  bool ensure_connected(std::string_view op) noexcept;
  errc failure(std::string_view op, std::exception_ptr error, bool timed_out) noexcept;
  void lose_connection(std::string_view op, std::string_view why) noexcept;
  void open_breaker() noexcept;
  void drop() noexcept;

  conninfo info_;
  postgres_options options_;
  const statement* statements_;
  std::size_t statement_count_;
  watchdog watchdog_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<pqxx::errorhandler> notices_;  // after conn_: unregistered before it closes
  int failures_ = 0;  // consecutive lost connections and failed reconnects
  bool was_connected_ = false;
  std::chrono::steady_clock::time_point retry_at_{};
  std::minstd_rand jitter_;
};

/// `s` as a statement parameter; throws unstorable_text for a NUL byte (libpq would cut the text there).
std::string text(std::string_view s);

}  // namespace citrus::postgres::detail
