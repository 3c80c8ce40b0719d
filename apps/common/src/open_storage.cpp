#include "citrus/app/open_storage.hpp"

#include "citrus/sqlite/sqlite_storage.hpp"
#ifdef CITRUS_HAVE_POSTGRES
#include "citrus/postgres/postgres_storage.hpp"
#endif

namespace citrus::app {
namespace {

#ifndef CITRUS_HAVE_POSTGRES
class no_postgres_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "citrus.app.storage"; }
  std::string message(int) const override {
    return "this build has no PostgreSQL support (configure with -DCITRUS_WITH_POSTGRES=ON and libpqxx-dev)";
  }
};

std::error_code no_postgres() {
  static const no_postgres_category category;
  return {1, category};
}
#endif

}  // namespace

bool is_postgres_url(std::string_view db) noexcept {
  return db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0;
}

std::string describe_db(const std::string& db) {
  if (!is_postgres_url(db)) return db;
#ifdef CITRUS_HAVE_POSTGRES
  return postgres::redact_connection(db);
#else
  return db.substr(0, db.find("://") + 3) + "...";  // cannot parse it here: show no part that may be secret
#endif
}

result<std::unique_ptr<citrus::storage>> open_storage(const std::string& db, const storage_options& options) {
  if (is_postgres_url(db)) {
#ifdef CITRUS_HAVE_POSTGRES
    postgres::postgres_options pg;
    pg.statement_timeout = options.busy_timeout;
    pg.operation_timeout = options.busy_timeout + std::chrono::seconds(3);  // above it: the server answers first
    pg.log = options.log;
    auto opened = postgres::postgres_storage::open(db, pg);
    if (!opened) return opened.error();
    return std::unique_ptr<citrus::storage>(std::move(*opened));
#else
    (void)options;
    return no_postgres();
#endif
  }
  sqlite::sqlite_options lite;
  lite.busy_timeout = options.busy_timeout;
  lite.log = options.log;
  auto opened = sqlite::sqlite_storage::open(db, lite);
  if (!opened) return opened.error();
  return std::unique_ptr<citrus::storage>(std::move(*opened));
}

}  // namespace citrus::app
