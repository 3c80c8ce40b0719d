#pragma once
/// citrus::sqlite — every storage interface (citrus/core/storage.hpp) on one SQLite database file.
/// Passes the same conformance suite as citrus::memory (tests/unit/storage_conformance.hpp).
///
/// SQLite and SQLiteCpp stay private to this target: no type of theirs appears here.
///
/// Threading: one sqlite_storage (one connection) is used from one thread at a time. Several
/// processes or connections may share the file: writes wait up to `busy_timeout` for the write lock
/// and then fail with errc::storage_unavailable.
///
/// Errors of the stores: errc::not_found, errc::conflict (unique constraint), errc::storage_unavailable
/// (busy, locked, I/O error), errc::storage_full (disk full or `max_page_count` reached),
/// errc::internal_error (anything else, e.g. a corrupt file). A failed write has changed nothing: every
/// write runs in its own BEGIN IMMEDIATE transaction that is rolled back on any failure.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/storage.hpp"

namespace citrus::sqlite {

/// Why open() could not give a usable database (besides errc::storage_unavailable / storage_full,
/// which it also returns when the file is locked or the disk is full during a migration).
/// `error().message()` is a sentence fit for an operator.
enum class open_errc {
  invalid_options = 1,  ///< e.g. a busy_timeout that is not positive
  cannot_open,          ///< the file cannot be opened or created (missing directory, permissions)
  not_a_database,       ///< the file exists but is not an SQLite database (or is encrypted / corrupt)
  schema_too_new,       ///< written by a newer Citrus: its schema version is above schema_version
  migration_failed,     ///< the schema could not be created or upgraded (e.g. a foreign database)
};

const std::error_category& open_category() noexcept;
std::error_code make_error_code(open_errc e) noexcept;

struct sqlite_options {
  /// How long a write waits for another connection's lock before errc::storage_unavailable.
  /// SQLite's own default is 0 (fail at once, SRombauts/SQLiteCpp#202); keep it at 2 s or more in
  /// production. Must be positive.
  std::chrono::milliseconds busy_timeout{5000};
  /// A cap on the database size in pages (PRAGMA max_page_count; a page is 4 KiB by default).
  /// Writes that would grow past it fail with errc::storage_full. 0 keeps SQLite's (huge) default.
  std::int64_t max_page_count = 0;
  /// Where failures at the SQLite boundary are reported (event "sqlite_error": operation, SQLite code
  /// and message; never bound values). Optional; must outlive the storage.
  citrus::logger* log = nullptr;
};

class sqlite_storage final : public citrus::storage {
 public:
  /// The schema version (PRAGMA user_version) this build creates and understands.
  static constexpr int schema_version = 6;

  /// Opens (creating if needed) the database at `path`; ":memory:" gives a private in-memory database.
  /// Applies the pending migrations in one transaction, so a half-migrated file cannot exist.
  /// Never throws for a bad file: the error is an open_errc (or errc::storage_unavailable /
  /// errc::storage_full).
  static result<std::unique_ptr<sqlite_storage>> open(const std::string& path, const sqlite_options& options = {});

  ~sqlite_storage() override;
  sqlite_storage(const sqlite_storage&) = delete;
  sqlite_storage& operator=(const sqlite_storage&) = delete;

  user_store& users() override;
  site_store& sites() override;
  credential_store& credentials() override;
  audit_store& audit() override;
  login_failure_store& login_failures() override;

 private:
  struct impl;
  explicit sqlite_storage(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

}  // namespace citrus::sqlite

template <>
struct std::is_error_code_enum<citrus::sqlite::open_errc> : std::true_type {};
