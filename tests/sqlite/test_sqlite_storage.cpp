// citrus::sqlite::sqlite_storage: the storage conformance suite on ":memory:" and on a file, then what
// only a database can get wrong: persistence, migrations, foreign files, locks, a full disk.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "citrus/core/audit_verify.hpp"
#include "citrus/sqlite/sqlite_storage.hpp"
#include "storage_conformance.hpp"

namespace {

namespace fs = std::filesystem;
using citrus::errc;
using citrus::sqlite::open_errc;
using citrus::sqlite::sqlite_options;
using citrus::sqlite::sqlite_storage;
using namespace std::chrono_literals;

/// A fresh directory under the system temp dir, removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("citrus-sqlite-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::unique_ptr<sqlite_storage> open_ok(const std::string& path, const sqlite_options& options = {}) {
  auto r = sqlite_storage::open(path, options);
  REQUIRE_MESSAGE(r, r.error().message());
  return std::move(*r);
}

/// A file-backed storage that deletes its file (and -wal, -shm) when destroyed.
class file_storage final : public citrus::storage {
 public:
  file_storage() : store_(open_ok(dir_.file("citrus.db"))) {}
  citrus::user_store& users() override { return store_->users(); }
  citrus::site_store& sites() override { return store_->sites(); }
  citrus::credential_store& credentials() override { return store_->credentials(); }
  citrus::audit_store& audit() override { return store_->audit(); }
  citrus::login_failure_store& login_failures() override { return store_->login_failures(); }

 private:
  temp_dir dir_;  // declared first: outlives the connection
  std::unique_ptr<sqlite_storage> store_;
};

std::unique_ptr<citrus::storage> make_in_memory() { return open_ok(":memory:"); }
std::unique_ptr<citrus::storage> make_file_backed() { return std::make_unique<file_storage>(); }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

/// Takes a database back from schema 6 to schema 5 (no disabled accounts, no revoked tokens).
void undo_schema_6(SQLite::Database& raw) {
  raw.exec("DROP TABLE revoked_tokens; ALTER TABLE users DROP COLUMN disabled; PRAGMA user_version = 5");
}

/// Takes a database back from schema 6 to schema 4 (no hash chain, no acknowledgements).
void undo_schema_5(SQLite::Database& raw) {
  undo_schema_6(raw);
  raw.exec("DROP TABLE audit_acks; ALTER TABLE audit_events DROP COLUMN hash; "
           "ALTER TABLE audit_events DROP COLUMN prev_hash; PRAGMA user_version = 4");
}

int raw_user_version(const std::string& path) {
  SQLite::Database raw(path, SQLite::OPEN_READONLY);
  return raw.execAndGet("PRAGMA user_version").getInt();
}

std::vector<std::string> raw_schema(const std::string& path) {
  SQLite::Database raw(path, SQLite::OPEN_READONLY);
  SQLite::Statement st(raw, "SELECT type || ' ' || name FROM sqlite_master ORDER BY type, name");
  std::vector<std::string> out;
  while (st.executeStep()) out.push_back(st.getColumn(0).getString());
  return out;
}

/// Users with big password hashes fill pages fast.
std::string big(char c, std::size_t n = 3000) { return std::string(n, c); }

}  // namespace

TEST_SUITE("storage_sqlite") {
  CITRUS_STORAGE_CONFORMANCE("sqlite_memory", make_in_memory)
  CITRUS_STORAGE_CONFORMANCE("sqlite_file", make_file_backed)

  TEST_CASE("sqlite: data persists across reopen") {
    temp_dir dir;
    const auto path = dir.file("persist.db");
    citrus::memory::manual_clock clock;
    std::string before;
    {
      auto s = open_ok(path);
      auto alice = citrus::conformance::make_user(*s, "alice", clock.wall_now());
      auto bob = citrus::conformance::make_user(*s, "bob", clock.wall_now());
      citrus::conformance::make_site(*s, alice.id, "a1", clock.wall_now());
      auto b1 = citrus::conformance::make_site(*s, bob.id, "b1", clock.wall_now());
      REQUIRE(s->sites().record_deploy(b1.id, citrus::deploy_update{"deployed", "agent-1", clock.wall_now()},
                                       clock.wall_now()));
      REQUIRE(s->credentials().create_principal(citrus::conformance::make_principal(
          citrus::principal_kind::commander, "backend-1", clock.wall_now(),
          {citrus::conformance::make_key("h1", clock.wall_now())}, {"agent-1", "*"})));
      REQUIRE(s->credentials().rotate_key(citrus::principal_kind::commander, "backend-1",
                                          citrus::conformance::make_key("h2", clock.wall_now()),
                                          clock.wall_now() + 1h));
      REQUIRE(s->audit().append(
          citrus::conformance::make_event(clock.wall_now(), citrus::audit_kind::administration, "user.create")));
      before = citrus::conformance::snapshot(*s);
    }
    auto s = open_ok(path);
    CHECK(citrus::conformance::snapshot(*s) == before);
    // Foreign keys are on in the new connection too: deleting a user still removes their sites.
    REQUIRE(s->users().delete_user(citrus::user_id{2}));
    CHECK(s->sites().find_site(citrus::user_id{2}, citrus::site_id{2}).error() == errc::not_found);
    SQLite::Database raw(path, SQLite::OPEN_READONLY);
    CHECK(raw.execAndGet("SELECT count(*) FROM sites").getInt() == 1);
    // Ids continue after the reopen, and are not reused.
    CHECK(citrus::conformance::make_user(*s, "carol", clock.wall_now()).id == citrus::user_id{3});
  }

  TEST_CASE("sqlite: migrations set user_version once and are idempotent on reopen") {
    temp_dir dir;
    const auto path = dir.file("migrate.db");
    citrus::memory::manual_clock clock;
    {
      auto s = open_ok(path);
      citrus::conformance::make_user(*s, "alice", clock.wall_now());
    }
    CHECK(raw_user_version(path) == sqlite_storage::schema_version);
    const auto schema = raw_schema(path);
    for (const char* table : {"table users", "table sites", "table principals", "table principal_keys",
                              "table principal_grants", "table audit_events", "index sites_by_user",
                              "index audit_events_by_time", "index audit_events_by_kind_time"}) {
      CAPTURE(table);
      CHECK(std::find(schema.begin(), schema.end(), table) != schema.end());
    }
    for (int i = 0; i < 3; ++i) {
      auto s = open_ok(path);
      auto users = s->users().list_users();
      REQUIRE(users);
      CHECK(users->size() == 1);
    }
    CHECK(raw_user_version(path) == sqlite_storage::schema_version);
    CHECK(raw_schema(path) == schema);
    SQLite::Database raw(path, SQLite::OPEN_READONLY);
    CHECK(raw.execAndGet("PRAGMA journal_mode").getString() == "wal");
  }

  TEST_CASE("sqlite: a version 1 database is upgraded in place and its sites start at revision 1") {
    temp_dir dir;
    const auto path = dir.file("v1.db");
    citrus::memory::manual_clock clock;
    {
      auto s = open_ok(path);
      auto alice = citrus::conformance::make_user(*s, "alice", clock.wall_now());
      citrus::conformance::make_site(*s, alice.id, "blog", clock.wall_now());
    }
    {
      // Back to the version 1 schema, as a database written before sites.revision existed.
      SQLite::Database raw(path, SQLite::OPEN_READWRITE);
      undo_schema_5(raw);
      raw.exec("DROP TABLE login_failures; ALTER TABLE sites DROP COLUMN operation_by; ALTER TABLE sites DROP COLUMN revision; "
               "PRAGMA user_version = 1");
    }
    auto s = open_ok(path);
    CHECK(raw_user_version(path) == sqlite_storage::schema_version);
    auto site = s->sites().find_site(citrus::user_id{1}, citrus::site_id{1});
    REQUIRE(site);
    CHECK(site->name == "blog");
    CHECK(site->revision == 1);
    CHECK(site->operation_by.empty());  // version 3: rows in flight before it belong to no backend
    auto changed = s->sites().record_deploy(site->id, citrus::deploy_update{"deployed", "agent-1", std::nullopt},
                                            clock.wall_now());
    REQUIRE(changed);
    CHECK(changed->revision == 2);
  }

  TEST_CASE("sqlite: a version 5 database is upgraded in place: its users are enabled, logout works") {
    temp_dir dir;
    const auto path = dir.file("v5.db");
    citrus::memory::manual_clock clock;
    {
      auto s = open_ok(path);
      citrus::conformance::make_user(*s, "alice", clock.wall_now());
    }
    {
      SQLite::Database raw(path, SQLite::OPEN_READWRITE);
      undo_schema_6(raw);
    }
    CHECK(raw_user_version(path) == 5);
    auto s = open_ok(path);
    CHECK(raw_user_version(path) == sqlite_storage::schema_version);
    auto alice = s->users().find_user(citrus::user_id{1});
    REQUIRE(alice);
    CHECK(alice->name == "alice");
    CHECK_FALSE(alice->disabled);
    REQUIRE(s->users().set_disabled(alice->id, true));
    REQUIRE(s->users().revoke_token("jti", clock.wall_now() + 60s, clock.wall_now()));
    CHECK(*s->users().is_token_revoked("jti"));
    SQLite::Database raw(path, SQLite::OPEN_READONLY);
    CHECK(raw.execAndGet("SELECT disabled FROM users WHERE id = 1").getInt() == 1);
  }

  TEST_CASE("sqlite: a database from a newer version is refused and left untouched") {
    temp_dir dir;
    const auto path = dir.file("newer.db");
    {
      SQLite::Database raw(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      raw.exec("CREATE TABLE future (x INTEGER); PRAGMA user_version = 99");
    }
    const auto bytes = read_bytes(path);
    auto r = sqlite_storage::open(path);
    REQUIRE_FALSE(r);
    CHECK(r.error() == open_errc::schema_too_new);
    CHECK(r.error().message().find("newer") != std::string::npos);
    CHECK(read_bytes(path) == bytes);  // not even switched to WAL
    CHECK(raw_user_version(path) == 99);
  }

  TEST_CASE("sqlite: a file that is not a database is refused and left untouched") {
    temp_dir dir;
    const std::vector<std::string> contents = {
        std::string("this is a text file, not a database\n") + big('x', 5000),
        std::string("SQLite format 3") + std::string(1, '\0') + big('\xff', 4096),  // right magic, garbage header
    };
    for (const auto& content : contents) {
      const auto path = dir.file("not-a-db");
      write_bytes(path, content);
      citrus::memory::recording_logger log;
      sqlite_options options;
      options.log = &log;
      auto r = sqlite_storage::open(path, options);
      REQUIRE_FALSE(r);
      CHECK(r.error() == open_errc::not_a_database);
      CHECK_FALSE(r.error().message().empty());
      CHECK(log.count("sqlite_open_failed") == 1);
      CHECK(read_bytes(path) == content);
    }
  }

  TEST_CASE("sqlite: a database that cannot be created or read is a clear error") {
    temp_dir dir;
    auto r = sqlite_storage::open(dir.file("missing-directory/citrus.db"));
    REQUIRE_FALSE(r);
    CHECK(r.error() == open_errc::cannot_open);
    CHECK(r.error().category().name() == std::string("citrus.sqlite.open"));
    // A path that cannot be read as a file at all (here: a directory).
    fs::create_directories(dir.file("a-directory"));
    auto unreadable = sqlite_storage::open(dir.file("a-directory"));
    REQUIRE_FALSE(unreadable);
    CHECK(unreadable.error() == open_errc::cannot_open);
  }

  TEST_CASE("sqlite: a database of another application is refused without damage") {
    temp_dir dir;
    const auto path = dir.file("foreign.db");
    {
      SQLite::Database raw(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      raw.exec("CREATE TABLE users (login TEXT); INSERT INTO users VALUES ('root')");
    }
    auto r = sqlite_storage::open(path);
    REQUIRE_FALSE(r);
    CHECK(r.error() == open_errc::migration_failed);
    // The failed migration rolled back as a whole: no half-created schema, version still 0.
    CHECK(raw_user_version(path) == 0);
    CHECK(raw_schema(path) == std::vector<std::string>{"table users"});
  }

  TEST_CASE("sqlite: options are validated") {
    sqlite_options zero;
    zero.busy_timeout = 0ms;
    CHECK(sqlite_storage::open(":memory:", zero).error() == open_errc::invalid_options);
    sqlite_options negative;
    negative.max_page_count = -1;
    CHECK(sqlite_storage::open(":memory:", negative).error() == open_errc::invalid_options);
    CHECK(sqlite_options{}.busy_timeout >= 2s);
  }

  TEST_CASE("sqlite: a new database file is private to its owner") {
    temp_dir dir;
    const auto path = dir.file("private.db");
    const auto old_umask = ::umask(022);
    {
      auto s = open_ok(path);
      citrus::memory::manual_clock clock;
      citrus::conformance::make_user(*s, "alice", clock.wall_now());
      struct stat st {};
      REQUIRE(::stat(path.c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0600);
      REQUIRE(::stat((path + "-wal").c_str(), &st) == 0);
      CHECK((st.st_mode & 0077) == 0);
    }
    ::umask(old_umask);
  }

  TEST_CASE("sqlite: two connections to one file see each other's commits") {
    temp_dir dir;
    const auto path = dir.file("shared.db");
    citrus::memory::manual_clock clock;
    auto a = open_ok(path);
    auto b = open_ok(path);
    auto alice = citrus::conformance::make_user(*a, "alice", clock.wall_now());
    auto found = b->users().find_user(alice.id);
    REQUIRE(found);
    CHECK(found->name == "alice");
    CHECK(b->users().create_user("alice", "h", citrus::user_role::user, clock.wall_now()).error() == errc::conflict);
    CHECK(citrus::conformance::make_user(*b, "bob", clock.wall_now()).id == citrus::user_id{2});
    CHECK(a->users().find_user_by_name("bob"));
  }

  TEST_CASE("sqlite: a held write lock makes writes fail with storage_unavailable after the busy timeout") {
    temp_dir dir;
    const auto path = dir.file("busy.db");
    citrus::memory::manual_clock clock;
    citrus::memory::recording_logger log;
    sqlite_options options;
    options.busy_timeout = 200ms;
    options.log = &log;
    auto s = open_ok(path, options);
    auto alice = citrus::conformance::make_user(*s, "alice", clock.wall_now());
    REQUIRE(s->credentials().create_principal(citrus::conformance::make_principal(
        citrus::principal_kind::agent, "a1", clock.wall_now(), {citrus::conformance::make_key("h1", clock.wall_now())})));
    const auto before = citrus::conformance::snapshot(*s);

    SQLite::Database other(path, SQLite::OPEN_READWRITE);
    other.exec("BEGIN EXCLUSIVE");
    other.exec("INSERT INTO users (name, password_hash, role, created_at) VALUES ('from-other', 'h', 'user', 0)");

    const auto started = std::chrono::steady_clock::now();
    auto blocked = s->users().create_user("bob", "h", citrus::user_role::user, clock.wall_now());
    const auto waited = std::chrono::steady_clock::now() - started;
    REQUIRE_FALSE(blocked);
    CHECK(blocked.error() == errc::storage_unavailable);
    CHECK(waited >= 150ms);  // it waited for the lock (busy_timeout), it did not fail at once
    CHECK(waited < 4s);
    CHECK(s->audit().append(citrus::conformance::make_event(clock.wall_now(), citrus::audit_kind::security_event, "x"))
              .error() == errc::storage_unavailable);
    CHECK(s->credentials()
              .rotate_key(citrus::principal_kind::agent, "a1", citrus::conformance::make_key("h2", clock.wall_now()),
                          clock.wall_now())
              .error() == errc::storage_unavailable);
    CHECK(s->sites().create_site(citrus::new_site{"s", "u", alice.id, citrus::agent_id{"a1"}}, clock.wall_now())
              .error() == errc::storage_unavailable);
    // Readers are not blocked in WAL mode, and see only committed data.
    CHECK(citrus::conformance::snapshot(*s) == before);
    CHECK(log.count("sqlite_error") >= 1);
    CHECK(log.records.back().get("mapped") == "storage_unavailable");

    other.exec("COMMIT");
    auto bob = s->users().create_user("bob", "h", citrus::user_role::user, clock.wall_now());
    REQUIRE(bob);
    CHECK(s->users().find_user_by_name("from-other"));
    CHECK(s->credentials().rotate_key(citrus::principal_kind::agent, "a1",
                                      citrus::conformance::make_key("h2", clock.wall_now()), clock.wall_now()));
  }

  TEST_CASE("sqlite: read-then-write operations wait for a busy writer and then succeed") {
    // PITFALL: a DEFERRED transaction that reads first takes its snapshot, then cannot upgrade to a
    // write once another connection has committed (SQLITE_BUSY_SNAPSHOT, whatever the timeout).
    // BEGIN IMMEDIATE waits for the write lock before reading.
    temp_dir dir;
    const auto path = dir.file("upgrade.db");
    citrus::memory::manual_clock clock;
    auto s = open_ok(path);  // default busy timeout (5 s)
    auto alice = citrus::conformance::make_user(*s, "alice", clock.wall_now());
    auto site = citrus::conformance::make_site(*s, alice.id, "a1", clock.wall_now());
    REQUIRE(s->credentials().create_principal(citrus::conformance::make_principal(
        citrus::principal_kind::agent, "a1", clock.wall_now(), {citrus::conformance::make_key("h1", clock.wall_now())})));

    using op = std::function<bool()>;
    const std::vector<std::pair<const char*, op>> read_then_write = {
        {"rotate_key",
         [&] {
           return bool(s->credentials().rotate_key(citrus::principal_kind::agent, "a1",
                                                   citrus::conformance::make_key("h", clock.wall_now()),
                                                   clock.wall_now()));
         }},
        {"set_grants", [&] { return bool(s->credentials().set_grants(citrus::principal_kind::agent, "a1", {"c"})); }},
        {"create_site",
         [&] {
           return bool(s->sites().create_site(citrus::new_site{"s", "u", alice.id, citrus::agent_id{"a1"}},
                                              clock.wall_now()));
         }},
        {"update_site",
         [&] { return bool(s->sites().update_site(alice.id, site.id, citrus::site_changes{}, clock.wall_now())); }},
    };
    int n = 0;
    for (const auto& [name, run] : read_then_write) {
      CAPTURE(name);
      std::promise<void> locked;
      std::thread writer([&] {
        SQLite::Database other(path, SQLite::OPEN_READWRITE, 5000);
        other.exec("BEGIN IMMEDIATE");
        other.exec("INSERT INTO audit_events (at, kind, actor, action, target, outcome, detail) "
                   "VALUES (0, 'administration', 'other', 'poke" + std::to_string(n++) + "', '', 'ok', '')");
        locked.set_value();
        std::this_thread::sleep_for(300ms);
        other.exec("COMMIT");
      });
      locked.get_future().wait();
      const bool ok = run();
      writer.join();
      CHECK(ok);
    }
    auto pokes = s->audit().query(citrus::audit_query{citrus::audit_kind::administration, 100});
    REQUIRE(pokes);
    CHECK(pokes->size() == read_then_write.size());
  }

  TEST_CASE("sqlite: no read is left open to turn a later write into SQLITE_BUSY") {
    // A statement that is stepped once and not reset keeps a read snapshot; once another connection
    // commits, a write from that stale snapshot fails with SQLITE_BUSY whatever the timeout.
    temp_dir dir;
    const auto path = dir.file("snapshot.db");
    citrus::memory::manual_clock clock;
    auto s = open_ok(path);
    auto alice = citrus::conformance::make_user(*s, "alice", clock.wall_now());
    citrus::conformance::make_user(*s, "bob", clock.wall_now());
    auto site = citrus::conformance::make_site(*s, alice.id, "a1", clock.wall_now());
    REQUIRE(s->credentials().create_principal(
        citrus::conformance::make_principal(citrus::principal_kind::agent, "a1", clock.wall_now(), {})));

    SQLite::Database other(path, SQLite::OPEN_READWRITE, 5000);
    int n = 0;
    auto other_writes = [&] {
      other.exec("INSERT INTO audit_events (at, kind, actor, action, target, outcome, detail) "
                 "VALUES (0, 'administration', 'other', 'poke" + std::to_string(n++) + "', '', 'ok', '')");
    };
    // Every read (single and multi-row, with and without a read transaction), then a foreign commit,
    // then a write.
    CHECK(s->users().find_user(alice.id));
    other_writes();
    CHECK(s->users().create_user("u1", "h", citrus::user_role::user, clock.wall_now()));
    CHECK(s->users().find_user_by_name("alice"));
    other_writes();
    CHECK(s->users().create_user("u2", "h", citrus::user_role::user, clock.wall_now()));
    CHECK(s->sites().find_site(alice.id, site.id));
    other_writes();
    CHECK(s->sites().update_site(alice.id, site.id, citrus::site_changes{}, clock.wall_now()));
    CHECK(s->users().list_users());
    other_writes();
    CHECK(s->sites().record_deploy(site.id, citrus::deploy_update{"deployed", "a1", std::nullopt}, clock.wall_now()));
    CHECK(s->credentials().find_principal(citrus::principal_kind::agent, "a1"));
    other_writes();
    CHECK(s->credentials().set_grants(citrus::principal_kind::agent, "a1", {"c1"}));
    CHECK(s->credentials().list_principals(citrus::principal_kind::agent));
    other_writes();
    CHECK(s->audit().query(citrus::audit_query{std::nullopt, 1}));
    other_writes();
    CHECK(s->audit().append(citrus::conformance::make_event(clock.wall_now(), citrus::audit_kind::security_event, "y")));
  }

  TEST_CASE("sqlite: a full disk fails with storage_full and keeps every earlier commit") {
    temp_dir dir;
    const auto path = dir.file("full.db");
    citrus::memory::manual_clock clock;
    std::string committed;
    std::size_t created = 0;
    {
      sqlite_options options;
      options.max_page_count = 40;  // 160 KiB: the schema plus a few dozen big users
      auto s = open_ok(path, options);
      citrus::result<citrus::user_record> last = errc::internal_error;
      std::string before_failure;
      for (int i = 0; i < 1000; ++i) {
        before_failure = citrus::conformance::snapshot(*s);
        last = s->users().create_user("user-" + std::to_string(i), big('h'), citrus::user_role::user,
                                      clock.wall_now());
        if (!last) break;
        ++created;
      }
      REQUIRE_FALSE(last);
      CHECK(last.error() == errc::storage_full);
      CHECK(created > 0);
      // Nothing of the failed write was committed, everything before it was.
      CHECK(citrus::conformance::snapshot(*s) == before_failure);
      CHECK(s->users().find_user_by_name("user-" + std::to_string(created)).error() == errc::not_found);
      auto users = s->users().list_users();
      REQUIRE(users);
      CHECK(users->size() == created);

      // A multi-row write that does not fit leaves no part of itself behind.
      std::vector<citrus::key_record> keys;
      for (int k = 0; k < 50; ++k) keys.push_back(citrus::conformance::make_key(big('k'), clock.wall_now()));
      auto principal = s->credentials().create_principal(
          citrus::conformance::make_principal(citrus::principal_kind::agent, "a1", clock.wall_now(), keys));
      CHECK(principal.error() == errc::storage_full);
      CHECK(s->credentials().find_principal(citrus::principal_kind::agent, "a1").error() == errc::not_found);
      CHECK(s->audit().append(citrus::audit_event{clock.wall_now(), citrus::audit_kind::security_event, "a", "b",
                                                  "c", "d", big('d', 20000)})
                .error() == errc::storage_full);
      CHECK(citrus::conformance::snapshot(*s) == before_failure);

      // The connection stays usable: freeing space makes room for a new write.
      REQUIRE(s->users().delete_user(citrus::user_id{1}));
      --created;
      REQUIRE(s->users().create_user("after-full", big('h'), citrus::user_role::user, clock.wall_now()));
      ++created;
      committed = citrus::conformance::snapshot(*s);
    }
    auto reopened = open_ok(path);  // no cap this time
    CHECK(citrus::conformance::snapshot(*reopened) == committed);
    auto users = reopened->users().list_users();
    REQUIRE(users);
    CHECK(users->size() == created);
  }

  TEST_CASE("sqlite: injection-looking text is stored as text and runs nothing") {
    temp_dir dir;
    const auto path = dir.file("inject.db");
    citrus::memory::manual_clock clock;
    const std::string evil = "'; DROP TABLE sites; --";
    const std::string quoted = "O'Brien \"the\" `admin`";
    auto s = open_ok(path);
    const auto schema = raw_schema(path);
    auto u = s->users().create_user(quoted, evil, citrus::user_role::user, clock.wall_now());
    REQUIRE(u);
    auto site = s->sites().create_site(citrus::new_site{evil, evil, u->id, citrus::agent_id{"a1"}}, clock.wall_now());
    REQUIRE(site);
    REQUIRE(s->sites().update_site(u->id, site->id, citrus::site_changes{evil + "2", std::nullopt}, clock.wall_now()));
    REQUIRE(s->credentials().create_principal(citrus::conformance::make_principal(
        citrus::principal_kind::commander, evil, clock.wall_now(), {citrus::conformance::make_key(evil, clock.wall_now())},
        {evil})));
    CHECK(s->users().find_user_by_name("' OR 1=1 --").error() == errc::not_found);
    CHECK(s->credentials().find_principal(citrus::principal_kind::commander, "' OR '1'='1").error() ==
          errc::not_found);

    CHECK(raw_schema(path) == schema);
    SQLite::Database raw(path, SQLite::OPEN_READONLY);
    SQLite::Statement st(raw, "SELECT name, typeof(name), url FROM sites");
    REQUIRE(st.executeStep());
    CHECK(st.getColumn(0).getString() == evil + "2");
    CHECK(st.getColumn(1).getString() == "text");
    CHECK(st.getColumn(2).getString() == evil);
    SQLite::Statement users(raw, "SELECT name, typeof(name), password_hash FROM users");
    REQUIRE(users.executeStep());
    CHECK(users.getColumn(0).getString() == quoted);
    CHECK(users.getColumn(1).getString() == "text");
    CHECK(users.getColumn(2).getString() == evil);
  }

  TEST_CASE("sqlite: failures are logged without bound values") {
    citrus::memory::recording_logger log;
    sqlite_options options;
    options.log = &log;
    auto s = open_ok(":memory:", options);
    citrus::memory::manual_clock clock;
    const std::string secret_hash = "$argon2id$v=19$secret-hash-value";
    REQUIRE(s->users().create_user("alice", secret_hash, citrus::user_role::user, clock.wall_now()));
    auto dup = s->users().create_user("alice", secret_hash, citrus::user_role::user, clock.wall_now());
    CHECK(dup.error() == errc::conflict);
    REQUIRE(log.count("sqlite_error") == 1);
    CHECK(log.records.back().get("op") == "create_user");
    CHECK(log.records.back().get("mapped") == "conflict");
    CHECK_FALSE(log.mentions(secret_hash));
  }

  TEST_CASE("sqlite: open errors have distinct operator-readable messages") {
    std::vector<std::string> messages;
    for (auto e : {open_errc::invalid_options, open_errc::cannot_open, open_errc::not_a_database,
                   open_errc::schema_too_new, open_errc::migration_failed}) {
      const std::error_code code = e;
      CHECK(code.category() == citrus::sqlite::open_category());
      CHECK_FALSE(code.message().empty());
      CHECK(std::find(messages.begin(), messages.end(), code.message()) == messages.end());
      messages.push_back(code.message());
    }
  }

// ------------------------------------------------------------------ the audit hash chain on a file

/// A file with `n` chained audit events (ids 1..n), closed again.
void write_trail(const std::string& path, int n) {
  citrus::memory::manual_clock clock;
  auto s = open_ok(path);
  for (int i = 1; i <= n; ++i)
    REQUIRE(s->audit().append(citrus::audit_event{clock.wall_now() + std::chrono::seconds{i}, citrus::audit_kind::site_operation,
                                                  "user:1", "site.update", "site:" + std::to_string(i), "ok", ""}));
}

citrus::audit_verify_report verify_file(const std::string& path) {
  auto s = open_ok(path);
  auto report = citrus::verify_audit_trail(s->audit());
  REQUIRE(report);
  return *report;
}

TEST_CASE("sqlite: a version 4 trail is chained by the migration") {
  temp_dir dir;
  const auto path = dir.file("v2.db");
  write_trail(path, 4);
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    undo_schema_5(raw);
  }
  CHECK(raw_user_version(path) == 4);
  const auto report = verify_file(path);
  CHECK(raw_user_version(path) == sqlite_storage::schema_version);
  CHECK(report.intact());
  CHECK(report.checked == 4);
  auto s = open_ok(path);  // and new events chain on after them
  REQUIRE(s->audit().append(citrus::conformance::make_event(citrus::from_unix_seconds(1767225600),
                                                            citrus::audit_kind::security_event, "after")));
  auto after = citrus::verify_audit_trail(s->audit());
  REQUIRE(after);
  CHECK(after->intact());
  CHECK(after->checked == 5);
}

TEST_CASE("sqlite: an event edited in the file is found at that event") {
  temp_dir dir;
  const auto path = dir.file("edited.db");
  write_trail(path, 6);
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec("UPDATE audit_events SET outcome = 'denied' WHERE id = 3");
  }
  const auto report = verify_file(path);
  REQUIRE(report.breaks.size() == 1);
  CHECK(report.breaks[0].id == 3);
  CHECK(report.breaks[0].what == citrus::audit_break_kind::edited);
  CHECK(report.checked == 6);
}

TEST_CASE("sqlite: an event deleted from the file breaks the link at its successor") {
  temp_dir dir;
  const auto path = dir.file("deleted.db");
  write_trail(path, 6);
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec("DELETE FROM audit_events WHERE id = 4");
  }
  const auto report = verify_file(path);
  REQUIRE(report.breaks.size() == 1);
  CHECK(report.breaks[0].id == 5);
  CHECK(report.breaks[0].what == citrus::audit_break_kind::broken_link);
  CHECK(report.breaks[0].previous_id == 3);
  // A range that starts after the hole still sees it: it chains from the event stored before it.
  auto s = open_ok(path);
  auto range = citrus::verify_audit_trail(s->audit(), 5, 6);
  REQUIRE(range);
  REQUIRE(range->breaks.size() == 1);
  CHECK(range->breaks[0].id == 5);
  auto clean = citrus::verify_audit_trail(s->audit(), 1, 3);
  REQUIRE(clean);
  CHECK(clean->intact());
}

TEST_CASE("sqlite: two events reordered in the file are found") {
  temp_dir dir;
  const auto path = dir.file("reordered.db");
  write_trail(path, 6);
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec("UPDATE audit_events SET id = -2 WHERE id = 2; UPDATE audit_events SET id = 2 WHERE id = 3; "
             "UPDATE audit_events SET id = 3 WHERE id = -2");
  }
  const auto report = verify_file(path);
  REQUIRE_FALSE(report.intact());
  CHECK(report.breaks[0].id == 2);
  CHECK(report.breaks[0].what == citrus::audit_break_kind::broken_link);
}

TEST_CASE("sqlite: two connections appending at once keep one chain") {
  temp_dir dir;
  const auto path = dir.file("shared.db");
  { open_ok(path); }
  constexpr int per_writer = 150;
  auto writer = [&](const std::string& who) {
    auto s = open_ok(path);
    citrus::memory::manual_clock clock;
    int stored = 0;
    for (int i = 0; i < per_writer; ++i)
      if (s->audit().append(citrus::conformance::make_event(clock.wall_now(), citrus::audit_kind::site_operation,
                                                            "op-" + std::to_string(i), who)))
        ++stored;
    return stored;
  };
  auto a = std::async(std::launch::async, writer, "hub:1");
  auto b = std::async(std::launch::async, writer, "backend:1");
  CHECK(a.get() == per_writer);
  CHECK(b.get() == per_writer);
  const auto report = verify_file(path);
  CHECK(report.intact());
  CHECK(report.checked == 2 * per_writer);
}

}  // TEST_SUITE
