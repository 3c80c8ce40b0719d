#pragma once
// The schema and its migrations: SQLite's (lib/sqlite), column for column. Private to citrus::postgres.
#include <system_error>

#include "session.hpp"

namespace citrus::postgres::detail {

/// Brings the connected database to postgres_storage::schema_version in one transaction, under a
/// transaction-level advisory lock so that backends starting together migrate once (the others wait,
/// then find the version current). A newer version is refused untouched (open_errc::schema_too_new).
/// Returns an open_errc or errc code; never throws.
std::error_code migrate(session& s) noexcept;

}  // namespace citrus::postgres::detail
