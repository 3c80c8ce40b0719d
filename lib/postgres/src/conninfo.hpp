#pragma once
// The connection string handed to libpq: the caller's URL or key=value string, parsed by libpq itself,
// plus Citrus's timeouts for the parameters it leaves unset. Private to citrus::postgres.
#include <optional>
#include <string>

#include "citrus/postgres/postgres_storage.hpp"

namespace citrus::postgres::detail {

struct conninfo {
  std::string text;    ///< key='value' pairs for PQconnectdb (holds the password: never log it)
  std::string target;  ///< "host=... port=... dbname=... user=..." for log lines (no password)
};

/// nullopt with `error` set when libpq cannot parse `connection`.
std::optional<conninfo> make_conninfo(const std::string& connection, const postgres_options& options,
                                      std::string& error);

}  // namespace citrus::postgres::detail
