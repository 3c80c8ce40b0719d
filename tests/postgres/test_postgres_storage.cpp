// citrus::postgres::postgres_storage on a real, throw-away PostgreSQL server (pg_server.hpp): the storage
// conformance suite, then what only a server across a connection can get wrong: migrations racing,
// foreign and newer databases, a stopped, frozen or unreachable server, locks, ids, text it cannot hold.
#include <doctest/doctest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <filesystem>
#include <random>
#include <atomic>
#include <mutex>
#include <chrono>
#include <memory>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "citrus/postgres/postgres_storage.hpp"
#include "citrus/core/audit_verify.hpp"
#include "pg_server.hpp"
#include "storage_conformance.hpp"

namespace {

using citrus::errc;
using citrus::pgtest::server;
using citrus::postgres::open_errc;
using citrus::postgres::postgres_options;
using citrus::postgres::postgres_storage;
using namespace std::chrono_literals;
namespace conformance = citrus::conformance;

std::unique_ptr<postgres_storage> open_ok(const std::string& url, const postgres_options& options = {}) {
  auto r = postgres_storage::open(url, options);
  REQUIRE_MESSAGE(r, r.error().message());
  return std::move(*r);
}

/// Default options that report to `log`.
postgres_options logged(citrus::memory::recording_logger& log) {
  postgres_options options;
  options.log = &log;
  return options;
}

/// Takes a database back from schema 6 to schema 5 (no disabled accounts, no revoked tokens).
constexpr const char* undo_schema_6 =
    "DROP TABLE revoked_tokens; ALTER TABLE users DROP COLUMN disabled; UPDATE citrus_schema SET version = 5; ";

/// Takes a database back from schema 6 to schema 4 (no hash chain, no acknowledgements).
constexpr const char* undo_schema_5 =
    "DROP TABLE revoked_tokens; ALTER TABLE users DROP COLUMN disabled; "
    "DROP TABLE audit_acks; ALTER TABLE audit_events DROP COLUMN hash; ALTER TABLE audit_events DROP COLUMN prev_hash; "
    "UPDATE citrus_schema SET version = 4; ";

/// A fresh database on the process's server, opened (and so migrated).
std::unique_ptr<citrus::storage> make_fresh() {
  auto& pg = server::shared();
  return open_ok(pg.url(pg.create_database()));
}

std::chrono::milliseconds since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
}

/// Calls `call` until it succeeds or 30 s passed (a storage recovering by itself); its last result.
template <class F>
auto until_ok(F&& call) -> decltype(call()) {
  const auto start = std::chrono::steady_clock::now();
  auto r = call();
  while (!r && since(start) < 30s) {
    std::this_thread::sleep_for(20ms);
    r = call();
  }
  return r;
}

/// Tables and indexes of the public schema, as "table users", "index sites_by_user".
std::vector<std::string> schema_objects(const server& pg, const std::string& db) {
  const std::string list = pg.exec(
      db,
      "SELECT string_agg(o, ',' ORDER BY o) FROM ("
      "  SELECT 'table ' || tablename AS o FROM pg_tables WHERE schemaname = 'public'"
      "  UNION ALL SELECT 'index ' || indexname FROM pg_indexes WHERE schemaname = 'public') x");
  std::vector<std::string> out;
  for (std::size_t start = 0; start < list.size();) {
    const std::size_t end = std::min(list.find(',', start), list.size());
    out.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

/// A raw libpq session of the test's own (to hold a lock, find a backend).
class raw_session {
 public:
  raw_session(const server& pg, const std::string& db)
      : conn_(PQconnectdb(("host=127.0.0.1 user=citrus port=" + std::to_string(pg.port()) + " dbname=" + db).c_str()),
              PQfinish) {
    REQUIRE(PQstatus(conn_.get()) == CONNECTION_OK);
  }
  void exec(const std::string& sql) {
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(conn_.get(), sql.c_str()), PQclear);
    INFO(sql << ": " << PQresultErrorMessage(r.get()));
    REQUIRE((PQresultStatus(r.get()) == PGRES_COMMAND_OK || PQresultStatus(r.get()) == PGRES_TUPLES_OK));
  }

 private:
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn_;
};

/// Accepts TCP connections and never says a word: a server that is "there" but never answers.
class silent_listener {
 public:
  silent_listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 16) == 0);  // the kernel completes handshakes; nobody reads
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
  }
  ~silent_listener() { ::close(fd_); }
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

/// A TCP relay to the server that, once armed, forwards the client's next COMMIT and then cuts both sides
/// before the server's answer can come back: the one moment a client cannot know whether its
/// transaction committed.
class commit_cutter {
 public:
  explicit commit_cutter(std::uint16_t server_port) : server_port_(server_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listener_ >= 0);
    sockaddr_in addr = loopback(0);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_, 8) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~commit_cutter() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    acceptor_.join();
    for (auto& t : relays_) t.join();
    ::close(listener_);
  }
  std::uint16_t port() const { return port_; }
  void arm() { armed_ = true; }
  bool cut() const { return cut_; }

 private:
  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    return addr;
  }
  void accept_loop() {
    while (!stopping_) {
      const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) return;
      const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr = loopback(server_port_);
      if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(client);
        if (server >= 0) ::close(server);
        continue;
      }
      relays_.emplace_back([this, client, server] { relay(client, server); });
    }
  }
  void relay(int client, int server) {
    char buf[65536];
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    while (!stopping_) {
      if (::poll(fds, 2, 100) < 0) break;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
        if (n <= 0 || ::write(fds[1 - i].fd, buf, static_cast<std::size_t>(n)) != n) {
          done = true;
          break;
        }
        // A simple-query message ('Q') carrying COMMIT went to the server: cut before its answer.
        if (i == 0 && armed_ && std::string_view(buf, static_cast<std::size_t>(n)).find("COMMIT") != std::string_view::npos) {
          armed_ = false;
          cut_ = true;
          done = true;
        }
      }
      if (done) break;
    }
    ::close(client);
    ::close(server);
  }

  std::uint16_t server_port_;
  std::uint16_t port_ = 0;
  int listener_ = -1;
  std::atomic<bool> stopping_{false}, armed_{false}, cut_{false};
  std::vector<std::thread> relays_;  // touched by the acceptor only, joined after it
  std::thread acceptor_;
};

}  // namespace

TEST_SUITE("storage_postgres") {
  CITRUS_STORAGE_CONFORMANCE("postgres", make_fresh)

  TEST_CASE("postgres: several backends opening a fresh database together migrate it once") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    constexpr int openers = 8;
    std::vector<citrus::memory::recording_logger> logs(openers);
    std::vector<std::unique_ptr<postgres_storage>> opened(openers);
    std::vector<std::string> errors(openers);
    std::atomic<int> waiting{openers};
    std::vector<std::thread> threads;
    for (int i = 0; i < openers; ++i)
      threads.emplace_back([&, i] {
        const auto options = logged(logs[i]);
        --waiting;
        while (waiting.load() > 0) std::this_thread::yield();  // all start at once
        auto r = postgres_storage::open(pg.url(db), options);
        if (r)
          opened[i] = std::move(*r);
        else
          errors[i] = r.error().message();
      });
    for (auto& t : threads) t.join();
    std::size_t migrations = 0;
    for (int i = 0; i < openers; ++i) {
      CAPTURE(i);
      CHECK(errors[i].empty());
      CHECK(opened[i] != nullptr);
      migrations += logs[i].count("postgres_migrated");
    }
    CHECK(migrations == 1);
    CHECK(pg.exec(db, "SELECT count(*) || ':' || max(version) FROM citrus_schema") == "1:" + std::to_string(postgres_storage::schema_version));
    // Every connection works on the one schema.
    citrus::memory::manual_clock clock;
    for (int i = 0; i < openers; ++i)
      if (opened[i]) conformance::make_user(*opened[i], "user-" + std::to_string(i), clock.wall_now());
    CHECK(pg.exec(db, "SELECT count(*) FROM users") == std::to_string(openers));
  }

  TEST_CASE("postgres: the schema is SQLite's, and reopening changes nothing") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    { open_ok(pg.url(db)); }
    const auto objects = schema_objects(pg, db);
    for (const char* object : {"table citrus_schema", "table users", "table sites", "table principals",
                               "table principal_keys", "table principal_grants", "table audit_events",
                               "index sites_by_user", "index principal_keys_by_principal", "index audit_events_by_time",
                               "index audit_events_by_kind_time"}) {
      CAPTURE(object);
      CHECK(std::find(objects.begin(), objects.end(), object) != objects.end());
    }
    // Column for column, in SQLite's order (times and ids are bigint, text is text).
    CHECK(pg.exec(db, "SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable, ', ' "
                      "ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'sites'") ==
          "id bigint NO, name text NO, url text NO, user_id bigint NO, agent_id text NO, created_at bigint NO, "
          "updated_at bigint NO, deployer_id text NO, deploy_status text NO, last_deploy_date bigint YES, "
          "revision bigint NO, operation_by text NO");
    CHECK(pg.exec(db, "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
                      "FROM information_schema.columns WHERE table_name = 'audit_events'") ==
          "id bigint, at bigint, kind text, actor text, action text, target text, outcome text, detail text, "
          "prev_hash text, hash text");
    for (int i = 0; i < 3; ++i) open_ok(pg.url(db));
    CHECK(schema_objects(pg, db) == objects);
    CHECK(pg.exec(db, "SELECT version FROM citrus_schema") == std::to_string(postgres_storage::schema_version));
  }

  TEST_CASE("postgres: a version 1 database is upgraded in place and its sites start at revision 1") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    citrus::memory::manual_clock clock;
    {
      auto s = open_ok(pg.url(db));
      auto alice = conformance::make_user(*s, "alice", clock.wall_now());
      conformance::make_site(*s, alice.id, "blog", clock.wall_now());
    }
    pg.exec(db, std::string(undo_schema_5) + "DROP TABLE login_failures; ALTER TABLE sites DROP COLUMN operation_by; "
                "ALTER TABLE sites DROP COLUMN revision; UPDATE citrus_schema SET version = 1");
    auto s = open_ok(pg.url(db));
    CHECK(pg.exec(db, "SELECT version FROM citrus_schema") == std::to_string(postgres_storage::schema_version));
    auto site = s->sites().find_site(citrus::user_id{1}, citrus::site_id{1});
    REQUIRE(site);
    CHECK(site->name == "blog");
    CHECK(site->revision == 1);
    auto changed = s->sites().record_deploy(site->id, citrus::deploy_update{"deployed", "a1", std::nullopt},
                                            clock.wall_now());
    REQUIRE(changed);
    CHECK(changed->revision == 2);
  }

  TEST_CASE("postgres: a version 5 database is upgraded in place: its users are enabled, logout works") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    citrus::memory::manual_clock clock;
    {
      auto s = open_ok(pg.url(db));
      conformance::make_user(*s, "alice", clock.wall_now());
    }
    pg.exec(db, undo_schema_6);
    auto s = open_ok(pg.url(db));
    CHECK(pg.exec(db, "SELECT version FROM citrus_schema") == std::to_string(postgres_storage::schema_version));
    auto alice = s->users().find_user(citrus::user_id{1});
    REQUIRE(alice);
    CHECK_FALSE(alice->disabled);
    REQUIRE(s->users().set_disabled(alice->id, true));
    REQUIRE(s->users().revoke_token("jti", clock.wall_now() + 60s, clock.wall_now()));
    CHECK(*s->users().is_token_revoked("jti"));
    CHECK(pg.exec(db, "SELECT disabled FROM users WHERE id = 1") == "t");
  }

  TEST_CASE("postgres: a database from a newer version is refused and left untouched") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    { open_ok(pg.url(db)); }
    pg.exec(db, "UPDATE citrus_schema SET version = 99; CREATE TABLE future (x bigint)");
    const auto objects = schema_objects(pg, db);
    citrus::memory::recording_logger log;
    auto options = logged(log);
    auto r = postgres_storage::open(pg.url(db), options);
    REQUIRE_FALSE(r);
    CHECK(r.error() == open_errc::schema_too_new);
    CHECK(r.error().message().find("newer") != std::string::npos);
    CHECK(log.count("postgres_open_failed") == 1);
    CHECK(pg.exec(db, "SELECT version FROM citrus_schema") == "99");
    CHECK(schema_objects(pg, db) == objects);
  }

  TEST_CASE("postgres: a database of another application is refused without damage") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    pg.exec(db, "CREATE TABLE users (login text); INSERT INTO users VALUES ('root')");
    auto r = postgres_storage::open(pg.url(db));
    REQUIRE_FALSE(r);
    CHECK(r.error() == open_errc::migration_failed);
    // The failed migration rolled back as a whole: no citrus_schema, no half-created tables.
    CHECK(schema_objects(pg, db) == std::vector<std::string>{"table users"});
    CHECK(pg.exec(db, "SELECT login FROM users") == "root");
  }

  TEST_CASE("postgres: a server that cannot be reached or used is a clear open error") {
    auto& pg = server::shared();
    citrus::memory::recording_logger log;
    auto options = logged(log);
    // Nothing listens there.
    const std::string refused = "postgresql://citrus@127.0.0.1:" + std::to_string(citrus::pgtest::free_port()) + "/x";
    auto nothing = postgres_storage::open(refused, options);
    REQUIRE_FALSE(nothing);
    CHECK(nothing.error() == open_errc::cannot_connect);
    CHECK(nothing.error().category().name() == std::string("citrus.postgres.open"));
    CHECK(log.count("postgres_open_failed") == 1);
    // A database or a role that does not exist.
    CHECK(postgres_storage::open(pg.url("no_such_database")).error() == open_errc::cannot_connect);
    CHECK(postgres_storage::open("postgresql://nobody@127.0.0.1:" + std::to_string(pg.port()) + "/postgres")
              .error() == open_errc::cannot_connect);
    // Not a connection string libpq understands.
    for (const char* bad : {"postgresql://[::1/db", "host=127.0.0.1 nonsense",
                            "postgresql://h/db?no_such_parameter=1", "mysql://root@localhost/db"}) {
      CAPTURE(bad);
      CHECK(postgres_storage::open(bad).error() == open_errc::invalid_options);
    }
  }

  TEST_CASE("postgres: a server that accepts but never answers fails open within the connect timeout") {
    silent_listener silent;
    postgres_options options;
    options.connect_timeout = 2s;
    const auto start = std::chrono::steady_clock::now();
    auto r = postgres_storage::open("postgresql://citrus@127.0.0.1:" + std::to_string(silent.port()) + "/x?sslmode=disable",
                                    options);
    REQUIRE_FALSE(r);
    CHECK(r.error() == open_errc::cannot_connect);
    CHECK(since(start) < 10s);  // the point: bounded by the 2 s connect timeout, not forever
  }

  TEST_CASE("postgres: options are validated") {
    auto& pg = server::shared();
    std::vector<postgres_options> bad(6);
    bad[0].connect_timeout = 1s;  // below libpq's minimum
    bad[1].statement_timeout = 0ms;
    bad[2].tcp_user_timeout = -1ms;
    bad[3].operation_timeout = 0ms;
    bad[4].reconnect_backoff_min = 0ms;
    bad[5].reconnect_backoff_max = bad[5].reconnect_backoff_min - 1ms;
    for (const auto& o : bad) CHECK(postgres_storage::open(pg.url(), o).error() == open_errc::invalid_options);
    const postgres_options defaults;
    CHECK(defaults.operation_timeout > defaults.statement_timeout);
    CHECK(defaults.reconnect_backoff_min == 100ms);
    CHECK(defaults.reconnect_backoff_max == 5s);
  }

  TEST_CASE("postgres: open errors have distinct operator-readable messages") {
    std::vector<std::string> messages;
    for (auto e : {open_errc::invalid_options, open_errc::cannot_connect, open_errc::schema_too_new,
                   open_errc::migration_failed}) {
      const std::error_code code = e;
      CHECK(code.category() == citrus::postgres::open_category());
      CHECK_FALSE(code.message().empty());
      CHECK(std::find(messages.begin(), messages.end(), code.message()) == messages.end());
      messages.push_back(code.message());
    }
  }

  TEST_CASE("postgres: a stopped server answers storage_unavailable quickly, and the storage recovers by itself") {
    server pg;  // its own server: this test stops it
    const std::string db = pg.create_database();
    citrus::memory::recording_logger log;
    auto options = logged(log);
    options.reconnect_backoff_min = 200ms;
    options.reconnect_backoff_max = 200ms;  // a fixed backoff, to count reconnect attempts below
    auto s = open_ok(pg.url(db), options);
    citrus::memory::manual_clock clock;
    auto alice = conformance::make_user(*s, "alice", clock.wall_now());
    auto site = conformance::make_site(*s, alice.id, "blog", clock.wall_now());
    const auto before = conformance::snapshot(*s);

    pg.stop();
    const auto stopped = std::chrono::steady_clock::now();
    CHECK(s->users().find_user(alice.id).error() == errc::storage_unavailable);
    CHECK(since(stopped) < 10s);  // the point: an answer, not a hang
    CHECK(log.count("postgres_disconnected") == 1);

    // While the server is away every call answers storage_unavailable, reads and writes alike, and the
    // breaker keeps reconnect attempts to at most one per backoff.
    const std::size_t attempts_before = log.count("postgres_connect_failed");
    const auto burst = std::chrono::steady_clock::now();
    for (int i = 0; i < 200; ++i) {
      CHECK(s->users().create_user("bob", "h", citrus::user_role::user, clock.wall_now()).error() ==
            errc::storage_unavailable);
      CHECK(s->sites().list_sites(alice.id).error() == errc::storage_unavailable);
    }
    const auto elapsed = since(burst);
    const std::size_t attempts = log.count("postgres_connect_failed") - attempts_before;
    CAPTURE(elapsed.count());
    CHECK(attempts <= static_cast<std::size_t>(elapsed / 200ms) + 1);

    pg.start();  // same port, same data
    auto back = until_ok([&] { return s->sites().find_site(alice.id, site.id); });
    REQUIRE(back);  // without reopening the storage
    CHECK(log.count("postgres_reconnected") == 1);
    CHECK(conformance::snapshot(*s) == before);  // nothing acknowledged was lost, nothing failed was written
    CHECK(conformance::make_user(*s, "bob", clock.wall_now()).id == citrus::user_id{2});
  }

  TEST_CASE("postgres: a frozen server is cut off after the operation timeout") {
    // A stopped (SIGSTOP) backend process: its kernel still acknowledges, so neither statement_timeout
    // (a server-side timer) nor tcp_user_timeout fires. Only the client-side deadline can answer.
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    citrus::memory::recording_logger log;
    auto options = logged(log);
    options.statement_timeout = 500ms;
    options.operation_timeout = 1500ms;
    auto s = open_ok(pg.url(db, "application_name=citrus-frozen-test"), options);
    citrus::memory::manual_clock clock;
    auto alice = conformance::make_user(*s, "alice", clock.wall_now());
    REQUIRE(s->users().find_user(alice.id));
    const std::string backend =
        pg.exec(db, "SELECT pid FROM pg_stat_activity WHERE application_name = 'citrus-frozen-test'");
    REQUIRE_FALSE(backend.empty());
    const pid_t pid = static_cast<pid_t>(std::stol(backend));
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    const auto frozen = std::chrono::steady_clock::now();
    auto r = s->users().find_user(alice.id);
    const auto waited = since(frozen);
    ::kill(pid, SIGCONT);  // it finds its socket closed and exits
    CHECK(r.error() == errc::storage_unavailable);
    CHECK(waited >= 1000ms);  // it waited for the deadline, it did not give up at once
    CHECK(waited < 10s);
    CHECK(log.count("postgres_timeout") == 1);
    // The next calls reconnect (after the breaker's backoff) and find everything there.
    auto back = until_ok([&] { return s->users().find_user(alice.id); });
    REQUIRE(back);
    CHECK(back->name == "alice");
  }

  TEST_CASE("postgres: a write blocked by another session's lock fails after statement_timeout, changing nothing") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    citrus::memory::recording_logger log;
    auto options = logged(log);
    options.statement_timeout = 300ms;
    auto s = open_ok(pg.url(db), options);
    citrus::memory::manual_clock clock;
    auto alice = conformance::make_user(*s, "alice", clock.wall_now());
    const auto before = conformance::snapshot(*s);

    raw_session other(pg, db);
    other.exec("BEGIN");
    other.exec("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    const auto start = std::chrono::steady_clock::now();
    auto blocked = s->users().create_user("bob", "h", citrus::user_role::user, clock.wall_now());
    const auto waited = since(start);
    CHECK(blocked.error() == errc::storage_unavailable);
    CHECK(waited >= 250ms);  // it waited for the lock, it did not fail at once
    CHECK(waited < 10s);
    REQUIRE(log.count("postgres_error") >= 1);
    CHECK(log.records.back().get("sqlstate") == "57014");  // query_canceled: the statement timeout
    other.exec("COMMIT");
    // The session survived the cancelled statement: no reconnect needed, nothing was written.
    CHECK(conformance::snapshot(*s) == before);
    CHECK(log.count("postgres_disconnected") == 0);
    CHECK(conformance::make_user(*s, "bob", clock.wall_now()).id == citrus::user_id{2});
    CHECK(s->users().find_user(alice.id));
  }

  TEST_CASE("postgres: a connection lost during COMMIT is storage_unavailable, logged as outcome unknown") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    commit_cutter cutter(pg.port());
    citrus::memory::recording_logger log;
    auto options = logged(log);
    options.reconnect_backoff_min = 100ms;
    options.reconnect_backoff_max = 100ms;
    auto s = open_ok("postgresql://citrus@127.0.0.1:" + std::to_string(cutter.port()) + "/" + db + "?sslmode=disable",
                     options);
    citrus::memory::manual_clock clock;
    conformance::make_user(*s, "alice", clock.wall_now());
    cutter.arm();
    auto bob = s->users().create_user("bob", "h", citrus::user_role::user, clock.wall_now());
    REQUIRE(cutter.cut());
    CHECK(bob.error() == errc::storage_unavailable);
    REQUIRE(log.count("postgres_commit_outcome_unknown") == 1);
    CHECK(log.count("postgres_disconnected") == 1);
    // Unknown to the client, not undone: the server had the COMMIT before the cut and committed it. A
    // later read (on a new connection) is the only way to know.
    auto found = until_ok([&] { return s->users().find_user_by_name("bob"); });
    REQUIRE(found);
    CHECK(found->id == citrus::user_id{2});
  }

  TEST_CASE("postgres: a full disk fails writes with storage_full and keeps every earlier commit") {
    // The users table (and its TOAST and indexes) on a 4 MiB tmpfs tablespace: an insert that needs a
    // new page finds no space (SQLSTATE 53100). Needs a mount, so root (CI runs as root).
    server pg;  // its own server: the tablespace goes away with it
    const std::filesystem::path space = pg.dir() + "-space";
    std::filesystem::create_directories(space);
    if (::mount("tmpfs", space.c_str(), "tmpfs", 0, "size=4m") != 0) {
      MESSAGE("skipped: cannot mount a small tmpfs here (needs root): " << std::strerror(errno));
      std::filesystem::remove(space);
      return;
    }
    struct unmount {
      std::filesystem::path path;
      server& pg;
      ~unmount() {
        pg.stop();
        ::umount2(path.c_str(), MNT_DETACH);
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
      }
    } cleanup{space, pg};
    struct stat owner {};
    REQUIRE(::stat(pg.dir().c_str(), &owner) == 0);  // the server's user: it writes there
    REQUIRE(::chown(space.c_str(), owner.st_uid, owner.st_gid) == 0);
    const std::string db = pg.create_database();
    auto s = open_ok(pg.url(db));
    pg.exec(db, "CREATE TABLESPACE small LOCATION '" + space.string() + "'");
    pg.exec(db, "ALTER TABLE users SET TABLESPACE small; ALTER INDEX users_pkey SET TABLESPACE small; "
                "ALTER INDEX users_name_key SET TABLESPACE small");
    citrus::memory::manual_clock clock;
    std::mt19937_64 random(7);
    auto incompressible = [&random] {
      std::string out(256 * 1024, '\0');
      for (auto& c : out) c = static_cast<char>('!' + random() % 90);
      return out;
    };
    std::string before_failure;
    citrus::result<citrus::user_record> last = errc::internal_error;
    std::size_t created = 0;
    for (int i = 0; i < 200; ++i) {
      before_failure = conformance::snapshot(*s);
      last = s->users().create_user("user-" + std::to_string(i), incompressible(), citrus::user_role::user,
                                    clock.wall_now());
      if (!last) break;
      ++created;
    }
    REQUIRE_FALSE(last);
    CHECK(last.error() == errc::storage_full);
    CHECK(created > 0);
    CHECK(conformance::snapshot(*s) == before_failure);  // nothing of the failed write, all before it
    auto users = s->users().list_users();
    REQUIRE(users);
    CHECK(users->size() == created);
    // Other tables have room: the connection stays usable.
    REQUIRE(s->audit().append(conformance::make_event(clock.wall_now(), citrus::audit_kind::security_event, "x")));
  }

  TEST_CASE("postgres: constraint failures consume no id") {
    auto s = make_fresh();
    citrus::memory::manual_clock clock;
    const auto t0 = clock.wall_now();
    auto alice = conformance::make_user(*s, "alice", t0);
    for (int i = 0; i < 3; ++i) {
      CHECK(s->users().create_user("alice", "h", citrus::user_role::user, t0).error() == errc::conflict);
      CHECK(s->sites().create_site(citrus::new_site{"x", "u", citrus::user_id{99}, citrus::agent_id{"a"}}, t0).error() ==
            errc::not_found);
    }
    CHECK(conformance::make_user(*s, "bob", t0).id == citrus::user_id{2});
    CHECK(conformance::make_site(*s, alice.id, "blog", t0).id == citrus::site_id{1});
    REQUIRE(s->credentials().create_principal(conformance::make_principal(citrus::principal_kind::agent, "a1", t0, {})));
    CHECK(s->credentials()
              .create_principal(conformance::make_principal(citrus::principal_kind::agent, "a1", t0, {}))
              .error() == errc::conflict);
    REQUIRE(s->credentials().create_principal(conformance::make_principal(citrus::principal_kind::agent, "a2", t0, {})));
  }

  TEST_CASE("postgres: principal ids are not consumed by a conflict either") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    auto s = open_ok(pg.url(db));
    citrus::memory::manual_clock clock;
    const auto t0 = clock.wall_now();
    REQUIRE(s->credentials().create_principal(conformance::make_principal(citrus::principal_kind::agent, "a1", t0, {})));
    for (int i = 0; i < 3; ++i)
      CHECK(s->credentials()
                .create_principal(conformance::make_principal(citrus::principal_kind::agent, "a1", t0, {}))
                .error() == errc::conflict);
    REQUIRE(s->credentials().create_principal(conformance::make_principal(citrus::principal_kind::agent, "a2", t0, {})));
    CHECK(pg.exec(db, "SELECT id FROM principals WHERE name = 'a2'") == "2");
  }

  TEST_CASE("postgres: text PostgreSQL cannot hold is refused with invalid_value, nothing stored") {
    auto s = make_fresh();
    citrus::memory::manual_clock clock;
    const std::string nul("al\0ice", 6);
    const std::string not_utf8 = "caf\xe9";  // Latin-1, not UTF-8
    for (const auto& bad : {nul, not_utf8}) {
      CHECK(s->users().create_user(bad, "h", citrus::user_role::user, clock.wall_now()).error() == errc::invalid_value);
      CHECK(s->users().find_user_by_name(bad).error() == errc::invalid_value);
    }
    CHECK(conformance::snapshot(*s).empty());
    CHECK(conformance::make_user(*s, "alice", clock.wall_now()).id == citrus::user_id{1});  // still usable
  }

  TEST_CASE("postgres: failures are logged without bound values or the password") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    citrus::memory::recording_logger log;
    auto options = logged(log);
    options.statement_timeout = 200ms;
    const std::string secret = "pw-s3cret-value";
    auto s = open_ok("postgresql://citrus:" + secret + "@127.0.0.1:" + std::to_string(pg.port()) + "/" + db +
                         "?sslmode=disable",
                     options);
    citrus::memory::manual_clock clock;
    const std::string secret_hash = "$argon2id$v=19$secret-hash-value";
    raw_session other(pg, db);
    other.exec("BEGIN");
    other.exec("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    CHECK(s->users().create_user("alice", secret_hash, citrus::user_role::user, clock.wall_now()).error() ==
          errc::storage_unavailable);
    other.exec("COMMIT");
    REQUIRE(log.count("postgres_error") >= 1);
    CHECK(log.records.back().get("op") == "create_user");
    CHECK(log.records.back().get("target").find("127.0.0.1") != std::string::npos);
    CHECK_FALSE(log.mentions(secret_hash));
    CHECK_FALSE(log.mentions(secret));
    auto refused = postgres_storage::open("postgresql://citrus:" + secret + "@127.0.0.1:" +
                                              std::to_string(citrus::pgtest::free_port()) + "/x",
                                          options);
    CHECK(refused.error() == open_errc::cannot_connect);
    CHECK_FALSE(log.mentions(secret));
  }

  TEST_CASE("postgres: redact_connection hides the password of every form") {
    using citrus::postgres::redact_connection;
    CHECK(redact_connection("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db");
    CHECK(redact_connection("postgres://u:s%40cret@h/db?sslmode=require") == "postgres://u:***@h/db?sslmode=require");
    CHECK(redact_connection("postgresql://u@h/db?password=secret&sslmode=disable") ==
          "postgresql://u@h/db?password=***&sslmode=disable");
    CHECK(redact_connection("postgresql://h/db") == "postgresql://h/db");
    CHECK(redact_connection("host=h password=secret dbname=d") == "host=h password=*** dbname=d");
    CHECK(redact_connection("host=h password = 'se cr\\'et' dbname=d") == "host=h password = *** dbname=d");
    CHECK(redact_connection("data/citrus.db") == "data/citrus.db");
  }

  // ---------------------------------------------------------------- the audit hash chain

  /// `n` chained events in database `db`, ids 1..n.
  void write_trail(const std::string& url, int n) {
    citrus::memory::manual_clock clock;
    auto s = open_ok(url);
    for (int i = 1; i <= n; ++i)
      REQUIRE(s->audit().append(citrus::audit_event{clock.wall_now() + std::chrono::seconds{i},
                                                    citrus::audit_kind::site_operation, "user:1", "site.update",
                                                    "site:" + std::to_string(i), "ok", ""}));
  }

  citrus::audit_verify_report verify_url(const std::string& url) {
    auto s = open_ok(url);
    auto report = citrus::verify_audit_trail(s->audit());
    REQUIRE(report);
    return *report;
  }

  TEST_CASE("postgres: a version 4 trail is chained by the migration") {
    auto& pg = server::shared();
    const std::string db = pg.create_database();
    write_trail(pg.url(db), 4);
    pg.exec(db, undo_schema_5);
    const auto report = verify_url(pg.url(db));
    CHECK(pg.exec(db, "SELECT version FROM citrus_schema") == std::to_string(postgres_storage::schema_version));
    CHECK(report.intact());
    CHECK(report.checked == 4);
  }

  TEST_CASE("postgres: edited, deleted and reordered events are found where they are") {
    auto& pg = server::shared();
    {
      const std::string db = pg.create_database();
      write_trail(pg.url(db), 6);
      pg.exec(db, "UPDATE audit_events SET detail = 'x' WHERE id = 3");
      const auto report = verify_url(pg.url(db));
      REQUIRE(report.breaks.size() == 1);
      CHECK(report.breaks[0].id == 3);
      CHECK(report.breaks[0].what == citrus::audit_break_kind::edited);
    }
    {
      const std::string db = pg.create_database();
      write_trail(pg.url(db), 6);
      pg.exec(db, "DELETE FROM audit_events WHERE id = 4");
      const auto report = verify_url(pg.url(db));
      REQUIRE(report.breaks.size() == 1);
      CHECK(report.breaks[0].id == 5);
      CHECK(report.breaks[0].what == citrus::audit_break_kind::broken_link);
      CHECK(report.breaks[0].previous_id == 3);
    }
    {
      const std::string db = pg.create_database();
      write_trail(pg.url(db), 6);
      // ids are GENERATED ALWAYS: swap the rows' contents (what moving two rows amounts to).
      pg.exec(db, "UPDATE audit_events a SET at = b.at, kind = b.kind, actor = b.actor, action = b.action, "
                  "target = b.target, outcome = b.outcome, detail = b.detail, prev_hash = b.prev_hash, hash = b.hash "
                  "FROM audit_events b WHERE (a.id, b.id) IN ((2, 3), (3, 2))");
      const auto report = verify_url(pg.url(db));
      REQUIRE_FALSE(report.intact());
      CHECK(report.breaks[0].id == 2);
      CHECK(report.breaks[0].what == citrus::audit_break_kind::broken_link);
    }
  }

  TEST_CASE("postgres: several connections appending at once keep one chain") {
    auto& pg = server::shared();
    const std::string url = pg.url(pg.create_database());
    { open_ok(url); }
    constexpr int writers = 3, per_writer = 60;
    std::vector<std::future<int>> done;
    for (int w = 0; w < writers; ++w)
      done.push_back(std::async(std::launch::async, [&url, w] {
        auto s = postgres_storage::open(url);
        if (!s) return -1;
        citrus::memory::manual_clock clock;
        int stored = 0;
        for (int i = 0; i < per_writer; ++i)
          if ((*s)->audit().append(conformance::make_event(clock.wall_now(), citrus::audit_kind::site_operation,
                                                          "op-" + std::to_string(i), "backend:" + std::to_string(w))))
            ++stored;
        return stored;
      }));
    for (auto& d : done) CHECK(d.get() == per_writer);
    const auto report = verify_url(url);
    CHECK(report.intact());
    CHECK(report.checked == writers * per_writer);
  }
}
