#pragma once
/// citrus::postgres — every storage interface (citrus/core/storage.hpp) on a PostgreSQL database.
/// Passes the same conformance suite as citrus::memory and citrus::sqlite
/// (tests/unit/storage_conformance.hpp); the schema is SQLite's, column for column.
///
/// libpqxx and libpq stay private to this target: no type of theirs appears here.
///
/// Threading: one postgres_storage (one connection) is used from one thread at a time. Any number of
/// connections and processes may share the database; open() migrates it once even when several start
/// together (the migrations run under a transaction-level advisory lock).
///
/// Errors of the stores: errc::not_found, errc::conflict (unique violation), errc::storage_unavailable
/// (the server is unreachable, stopped, restarting, overloaded, or a statement ran past its timeout),
/// errc::storage_full (the server's disk is full), errc::invalid_value (text PostgreSQL cannot hold: a NUL
/// byte, bytes invalid in the database's encoding; nothing is sent), errc::internal_error (anything
/// else). A failed write
/// has changed nothing — except when the connection is lost during COMMIT: then the outcome cannot be
/// known, the call answers errc::storage_unavailable and logs "commit outcome unknown".
///
/// Bounded time: no call waits for the server longer than about connect_timeout (to reconnect) plus
/// operation_timeout. After a lost connection, calls answer errc::storage_unavailable at once, without
/// touching the network, for a random 0.1..5 s backoff (growing with each failed reconnect); then the
/// next call reconnects. Recovery needs nothing from the caller.
#include <chrono>
#include <memory>
#include <string>
#include <system_error>

#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"

namespace citrus::postgres {

/// Why open() could not give a usable database (besides errc::storage_unavailable / storage_full,
/// which it also returns when the server fails or fills up during a migration).
/// `error().message()` is a sentence fit for an operator; the server's own words go to the log.
enum class open_errc {
  invalid_options = 1,  ///< a timeout out of range, or a connection string libpq cannot parse
  cannot_connect,       ///< no server answered in time, it refused the login, or the database does not exist
  schema_too_new,       ///< written by a newer Citrus: citrus_schema.version is above schema_version
  migration_failed,     ///< the schema could not be created or upgraded (e.g. another application's tables)
};

const std::error_category& open_category() noexcept;
std::error_code make_error_code(open_errc e) noexcept;

struct postgres_options {
  /// libpq connect_timeout, per host address tried (libpq's minimum is 2 s). Must be 2..600 s.
  std::chrono::seconds connect_timeout{2};
  /// The server cancels a statement that runs longer (waiting for a lock included):
  /// errc::storage_unavailable. Must be 1 ms..10 min.
  std::chrono::milliseconds statement_timeout{5000};
  /// How long sent data may stay unacknowledged before the kernel drops the connection (a vanished
  /// server or network). Must be 1 ms..10 min.
  std::chrono::milliseconds tcp_user_timeout{5000};
  /// Client-side cap on one call once connected: past it the connection is shut down and the call
  /// answers errc::storage_unavailable. It catches what the server-side timeout cannot (a frozen
  /// server whose kernel still acknowledges). Must be 1 ms..10 min; keep it above statement_timeout.
  std::chrono::milliseconds operation_timeout{8000};
  /// The circuit breaker's backoff after a lost connection or a failed reconnect: a random wait in
  /// [reconnect_backoff_min, window], the window doubling from reconnect_backoff_min up to
  /// reconnect_backoff_max. Both positive, min <= max.
  std::chrono::milliseconds reconnect_backoff_min{100};
  std::chrono::milliseconds reconnect_backoff_max{5000};
  /// Where the PostgreSQL boundary reports (fields: op, sqlstate, the first line of the message, target
  /// host/port/dbname/user; never bound values nor the password). Events: "postgres_error" (a failed
  /// call), "postgres_timeout" (cut by operation_timeout), "postgres_disconnected" (connection dropped,
  /// breaker open), "postgres_connect_failed", "postgres_reconnected", "postgres_commit_outcome_unknown"
  /// (error level: the connection broke during COMMIT), "postgres_open_failed", "postgres_migrated",
  /// "postgres_notice" (debug). Optional; must outlive the storage; called only from the thread using
  /// the storage.
  citrus::logger* log = nullptr;
};

class postgres_storage final : public citrus::storage {
 public:
  /// The schema version (citrus_schema.version) this build creates and understands; the same
  /// migrations as citrus::sqlite's.
  static constexpr int schema_version = 6;

  /// Connects to `connection` — a libpq URL (`postgresql://user@host:port/db?param=value`) or key=value
  /// string — and applies the pending migrations in one transaction. Connection parameters given in it
  /// win over the options' connect_timeout and tcp_user_timeout; statement_timeout is always the
  /// options'. Never throws: the error is an open_errc (or errc::storage_unavailable / storage_full).
  static result<std::unique_ptr<postgres_storage>> open(const std::string& connection,
                                                       const postgres_options& options = {});

  ~postgres_storage() override;
  postgres_storage(const postgres_storage&) = delete;
  postgres_storage& operator=(const postgres_storage&) = delete;

  user_store& users() override;
  site_store& sites() override;
  credential_store& credentials() override;
  audit_store& audit() override;
  login_failure_store& login_failures() override;

 private:
  struct impl;
  explicit postgres_storage(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

/// `connection` fit for a log line or an error message: the password of a URL or key=value string
/// replaced by "***". Any other text is returned unchanged.
std::string redact_connection(const std::string& connection);

}  // namespace citrus::postgres

template <>
struct std::is_error_code_enum<citrus::postgres::open_errc> : std::true_type {};
