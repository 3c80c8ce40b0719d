#pragma once
/// The executables' --db: a path opens citrus::sqlite (the default, embedded), a postgresql:// or
/// postgres:// URL opens citrus::postgres (when this build has it).
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"

namespace citrus::app {

struct storage_options {
  /// SQLite: how long a write waits for another connection's lock (busy_timeout). PostgreSQL: the
  /// statement_timeout, how long one statement may run or wait for a lock. Either way, past it the
  /// call fails with errc::storage_unavailable (REST 503).
  std::chrono::milliseconds busy_timeout{5000};
  citrus::logger* log = nullptr;  ///< optional; must outlive the storage
};

/// Whether `db` names a PostgreSQL database rather than an SQLite file.
bool is_postgres_url(std::string_view db) noexcept;

/// `db` fit for a message or a log line: a PostgreSQL URL's password replaced by "***".
std::string describe_db(const std::string& db);

/// Opens (and migrates) the database `db` names. The error is the adapter's open error
/// (citrus.sqlite.open / citrus.postgres.open) or an errc; its message() is fit for an operator.
result<std::unique_ptr<citrus::storage>> open_storage(const std::string& db, const storage_options& options);

}  // namespace citrus::app
