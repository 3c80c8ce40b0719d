// Storage faults against the running executables: a user deleted by the administrator while their
// token and WebSocket are live, the database write-locked by another process, and the disk under the
// database full. After each: nothing committed is lost, nothing waits beyond a bound, every affected
// client gets a clear answer that leaks nothing, and the backend keeps serving.
#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <doctest/doctest.h>

#include <future>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "citrus/core/audit.hpp"
#include "citrus/sqlite/sqlite_storage.hpp"
#include "harness.hpp"

using namespace citrus;
using namespace citrus::it;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string auth_required_body = R"({"success":false,"message":"Authentication required"})";
const std::string unavailable_body = R"({"success":false,"message":"Service temporarily unavailable"})";

/// Nothing internal in a text a client receives.
void check_no_leak(const std::string& text) {
  INFO("text: " << text);
  for (const char* bad : {"sqlite", "SQLite", "SQLITE", "database", "locked", "busy", "disk", "exception", "std::",
                          "/tmp", "/work", ".cpp", "what()", "errno"})
    CHECK(text.find(bad) == std::string::npos);
}

std::string login_body(const std::string& user, const std::string& password) {
  return R"({"username":")" + user + R"(","password":")" + password + R"("})";
}

http_result login(platform& p, const std::string& user, const std::string& password) {
  return http("POST", p.backend_url() + "/api/login", login_body(user, password));
}

http_result create_site(platform& p, const std::string& token, const std::string& name) {
  return http("POST", p.backend_url() + "/api/sites", R"({"name":")" + name + R"(","url":"https://)" + name + R"(.test"})",
              {bearer(token)});
}

std::string ws_command(const std::string& id, const std::string& op, const std::string& payload) {
  return R"({"v":1,"type":"command","id":")" + id + R"(","op":")" + op + R"(","payload":)" + payload + "}";
}

/// The names of the sites in the database, read by a fresh connection (what a restart would see).
std::vector<std::string> site_names(const std::string& db_path) {
  SQLite::Database db(db_path, SQLite::OPEN_READONLY);
  SQLite::Statement st(db, "SELECT name FROM sites ORDER BY id");
  std::vector<std::string> names;
  while (st.executeStep()) names.push_back(st.getColumn(0).getString());
  return names;
}

std::string integrity(const std::string& db_path) {
  SQLite::Database db(db_path, SQLite::OPEN_READONLY);
  return db.execAndGet("PRAGMA integrity_check").getString();
}

long long elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since).count();
}

/// The backend still serves: /healthz, and bob logs in and lists his sites.
void check_still_serving(platform& p) {
  CHECK(http("GET", p.backend_url() + "/healthz").status == 200);
  auto bob = login(p, "bob", "bob-pw");
  REQUIRE(bob.status == 200);
  CHECK(http("GET", p.backend_url() + "/api/sites", {}, {bearer(json_string(bob.body, "token"))}).status == 200);
}

/// A tmpfs of `bytes` mounted at `dir` for the life of the object (unmounted on every path, even when
/// a REQUIRE throws). Mounting needs root (CAP_SYS_ADMIN): error() says why it failed otherwise.
class tmpfs_mount {
 public:
  tmpfs_mount(std::string dir, std::size_t bytes) : dir_(std::move(dir)) {
    fs::create_directories(dir_);
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0700";
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options.c_str()) == 0)
      mounted_ = true;
    else
      error_ = std::strerror(errno);
  }
  ~tmpfs_mount() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

/// Writes `path` until the file system refuses (ENOSPC); returns the errno of the refusal.
int fill_until_full(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  const std::string chunk(64 * 1024, 'x');
  int error = 0;
  for (int i = 0; i < 100000; ++i) {  // bounded: 6 GB at most
    const ssize_t n = ::write(fd, chunk.data(), chunk.size());
    if (n < 0) {
      error = errno;
      break;
    }
  }
  ::close(fd);
  return error;
}

}  // namespace

TEST_SUITE("storage_faults") {
  TEST_CASE("an administrator disabling a user closes her open WebSocket at once (4012); a logged-out token stays refused after a restart") {
    platform p;
    const std::string db = p.dir + "/citrus.db";
    REQUIRE(run_command({CITRUS_BACKEND_EXE, "user", "add", "root", "--admin", "--db", db, "--password-cost", "minimum"},
                        "root-pw\n").first == 0);
    p.start_backend();
    auto alice_login = login(p, "alice", "alice-pw");
    REQUIRE(alice_login.status == 200);
    const std::string alice = json_string(alice_login.body, "token");
    const long long alice_id = json_int(alice_login.body, "id");
    const std::string root = json_string(login(p, "root", "root-pw").body, "token");
    REQUIRE_FALSE(root.empty());
    auto ws = user_socket(p, alice);

    // Alice sends nothing: the backend closes her session itself, right after the change.
    const auto asked = std::chrono::steady_clock::now();
    auto disabled = http("POST", p.backend_url() + "/api/admin/users/" + std::to_string(alice_id) + "/disable", {},
                         {bearer(root)});
    REQUIRE(disabled.status == 200);
    REQUIRE(ws->wait_for([&] { return ws->closed; }, 5s));
    CHECK(std::chrono::steady_clock::now() - asked < 1s);
    CHECK(ws->close_code() == 4012);
    for (const auto& m : ws->messages) check_no_leak(m);
    CHECK(http("GET", p.backend_url() + "/api/sites", {}, {bearer(alice)}).status == 401);
    auto refused = login(p, "alice", "alice-pw");
    CHECK(refused.status == 403);
    CHECK(json_string(refused.body, "message") == "This account is disabled");
    CHECK(audit_count(db, audit_kind::administration, [&](const audit_event& e) {
      return e.action == "user.disable" && e.target == "user:" + std::to_string(alice_id) && e.outcome == "ok";
    }, 1) == 1);

    // Logout: bob's token is refused at once, and still after the backend restarts (same JWT secret).
    const std::string bob = json_string(login(p, "bob", "bob-pw").body, "token");
    REQUIRE(http("GET", p.backend_url() + "/api/sites", {}, {bearer(bob)}).status == 200);
    REQUIRE(http("POST", p.backend_url() + "/api/logout", {}, {bearer(bob)}).status == 200);
    CHECK(http("GET", p.backend_url() + "/api/sites", {}, {bearer(bob)}).status == 401);
    p.backend.reset();
    p.start_backend();
    CHECK(http("GET", p.backend_url() + "/api/sites", {}, {bearer(bob)}).status == 401);
    CHECK(http("POST", p.backend_url() + "/api/token/refresh", {}, {bearer(bob)}).status == 401);
    CHECK(login(p, "bob", "bob-pw").status == 200);
  }

  TEST_CASE("a valid token of a deleted user is refused on REST, its open WebSocket closed, audited, the id never reused") {
    platform p;
    const std::string db = p.dir + "/citrus.db";
    p.start_backend();
    auto logged_in = login(p, "alice", "alice-pw");
    REQUIRE(logged_in.status == 200);
    const std::string token = json_string(logged_in.body, "token");
    const long long alice_id = json_int(logged_in.body, "id");
    REQUIRE(alice_id > 0);
    REQUIRE(create_site(p, token, "doomed").status == 201);
    auto ws = user_socket(p, token);
    auto before = http("GET", p.backend_url() + "/api/sites", {}, {bearer(token)});
    REQUIRE(before.status == 200);
    REQUIRE(before.body.find("doomed") != std::string::npos);

    // The administrator deletes alice while the backend runs, on the same database.
    auto deleted = run_command({CITRUS_BACKEND_EXE, "user", "delete", "alice", "--db", db});
    INFO("user delete: " << deleted.second);
    REQUIRE(deleted.first == 0);

    // REST: the generic 401, nothing about the user.
    auto refused = http("GET", p.backend_url() + "/api/sites", {}, {bearer(token)});
    CHECK(refused.status == 401);
    CHECK(refused.body == auth_required_body);
    CHECK(refused.body.find("doomed") == std::string::npos);
    check_no_leak(refused.body);
    CHECK(http("POST", p.backend_url() + "/api/token/refresh", {}, {bearer(token)}).status == 401);

    // The open WebSocket: its next command is refused with auth_failed and the session closed 4002.
    ws->send(ws_command("after-delete", "site.create", R"({"name":"ghost","url":"https://ghost.test"})"));
    REQUIRE(ws->wait_for([&] { return ws->closed; }, 5s));
    CHECK(ws->close_code() == 4002);
    CHECK(ws->count(R"("id":"after-delete")", R"("code":"auth_failed")") == 1);
    CHECK(ws->count(R"("type":"result")") == 0);
    for (const auto& m : ws->messages) check_no_leak(m);
    // A new WebSocket with the same token is refused at authentication.
    ws_client again;
    REQUIRE(again.connect(p.backend_ws()));
    again.send(R"({"v":1,"type":"auth","token":")" + token + R"("})");
    REQUIRE(again.wait_for([&] { return again.closed; }, 5s));
    CHECK(again.close_code() == 4002);
    CHECK(again.count("auth_ok") == 0);

    // Audited: the deletion, the REST use of the token and the WebSocket refusals, each naming the user.
    const std::string target = "user:" + std::to_string(alice_id);
    CHECK(audit_count(db, audit_kind::administration, [&](const audit_event& e) {
      return e.action == "user.delete" && e.actor == "cli" && e.target == target && e.outcome == "ok";
    }, 1) == 1);
    CHECK(audit_count(db, audit_kind::authentication, [&](const audit_event& e) {
      return e.action == "rest_auth" && e.target == target && e.outcome == "denied";
    }, 1) == 1);
    CHECK(audit_count(db, audit_kind::authentication, [&](const audit_event& e) {
      return e.action == "token_refresh" && e.target == target && e.outcome == "denied";
    }, 1) == 1);
    CHECK(audit_count(db, audit_kind::authentication, [&](const audit_event& e) {
      return e.action == "ws_auth" && e.target == target && e.outcome == "denied" && e.detail == "user no longer exists";
    }, 2) == 2);  // the open session's command, the new socket's auth

    // Deleting an unknown user: a clear error and a non-zero exit.
    auto unknown = run_command({CITRUS_BACKEND_EXE, "user", "delete", "alice", "--db", db});
    CHECK(unknown.first == 1);
    CHECK(unknown.second.find("user 'alice' does not exist") != std::string::npos);

    // A new alice gets another id; the old token does not resolve to her, and her list is empty.
    auto recreated = run_command({CITRUS_BACKEND_EXE, "user", "add", "alice", "--db", db, "--password-cost", "minimum"},
                                 "alice-pw2\n");
    REQUIRE(recreated.first == 0);
    const long long new_id = std::stoll(last_line(recreated.second));
    CHECK(new_id != alice_id);
    CHECK(new_id > alice_id);
    CHECK(http("GET", p.backend_url() + "/api/sites", {}, {bearer(token)}).status == 401);
    auto fresh = login(p, "alice", "alice-pw2");
    REQUIRE(fresh.status == 200);
    CHECK(json_int(fresh.body, "id") == new_id);
    auto mine = http("GET", p.backend_url() + "/api/sites", {}, {bearer(json_string(fresh.body, "token"))});
    CHECK(mine.status == 200);
    CHECK(mine.body == R"({"success":true,"sites":[]})");
    check_still_serving(p);
  }

  TEST_CASE("the database write-locked by another process: writes answer 503 within the bound, reads go on, then all works again") {
    platform::options o;
    o.backend_args = {"--db-busy-timeout-ms", "500"};
    platform p(o);
    const std::string db = p.dir + "/citrus.db";
    p.start_backend();
    auto logged_in = login(p, "alice", "alice-pw");
    REQUIRE(logged_in.status == 200);
    const std::string token = json_string(logged_in.body, "token");
    REQUIRE(create_site(p, token, "before").status == 201);
    auto ws = user_socket(p, token);

    {
      SQLite::Database other(db, SQLite::OPEN_READWRITE, 2000);
      other.exec("BEGIN EXCLUSIVE");  // held for the whole block: several times the backend's 500 ms
      other.exec("INSERT INTO audit_events (at, kind, actor, action, target, outcome, detail) "
                 "VALUES (0, 'administration', 'other-process', 'hold', '', 'ok', '')");
      const auto locked_at = std::chrono::steady_clock::now();

      auto started = std::chrono::steady_clock::now();
      auto blocked = create_site(p, token, "during");
      const long long waited = elapsed_ms(started);
      CHECK(blocked.status == 503);
      CHECK(blocked.body == unavailable_body);
      check_no_leak(blocked.body + blocked.headers);
      CHECK(waited >= 400);   // it waited for the lock...
      CHECK(waited < 3000);   // ...and no longer than the bound

      // A login must be audited before its token is handed out: refused, not unrecorded.
      auto blocked_login = login(p, "bob", "bob-pw");
      CHECK(blocked_login.status == 503);
      CHECK(blocked_login.body == unavailable_body);
      CHECK(blocked_login.body.find("token") == std::string::npos);

      // The same over the WebSocket: a clear error for that command, the session stays.
      ws->send(ws_command("w1", "site.create", R"({"name":"during-ws","url":"https://d.test"})"));
      REQUIRE(ws->wait_for([&] { return ws->count(R"("id":"w1")") == 1; }, 5s));
      CHECK(ws->count(R"("id":"w1")", R"("code":"storage_unavailable")") == 1);
      CHECK(ws->count(R"("id":"w1")", R"("message":"Service temporarily unavailable")") == 1);
      for (const auto& m : ws->messages) check_no_leak(m);
      CHECK(ws->open());

      // Reads are not blocked (WAL): the committed site is there, health is fine.
      auto list = http("GET", p.backend_url() + "/api/sites", {}, {bearer(token)});
      CHECK(list.status == 200);
      CHECK(list.body.find("\"name\":\"before\"") != std::string::npos);
      CHECK(list.body.find("during") == std::string::npos);
      CHECK(http("GET", p.backend_url() + "/healthz").status == 200);
      CHECK(p.backend->running());
      CHECK(elapsed_ms(locked_at) > 1000);  // the lock outlived the busy timeout twice over
      other.exec("COMMIT");
    }

    // Released: writes work again, nothing committed was lost (neither ours nor the other process's).
    auto after = create_site(p, token, "after");
    CHECK(after.status == 201);
    auto bob = login(p, "bob", "bob-pw");
    CHECK(bob.status == 200);
    ws->send(ws_command("w2", "site.create", R"({"name":"after-ws","url":"https://a.test"})"));
    REQUIRE(ws->wait_for([&] { return ws->count(R"("id":"w2")") == 1; }, 5s));
    CHECK(ws->count(R"("id":"w2")", R"("type":"result")") == 1);
    auto list = http("GET", p.backend_url() + "/api/sites", {}, {bearer(token)});
    CHECK(list.status == 200);
    CHECK(site_names(db) == std::vector<std::string>{"before", "after", "after-ws"});
    CHECK(audit_count(db, audit_kind::administration, [](const audit_event& e) { return e.actor == "other-process"; }, 1) == 1);
    CHECK(integrity(db) == "ok");
    check_still_serving(p);
  }

  TEST_CASE("a write waiting for the database lock delays nobody else: other users, reads and health are served meanwhile") {
    // The storage runs off the event loop: while one request waits (up to the busy timeout) for a lock
    // another process holds, the loop keeps serving every request that does not need that lock. The
    // test is about order, not speed: everything below is answered while the create is still waiting,
    // and the create succeeds once the lock is released (its timeout is far longer than the test's
    // own steps).
    platform::options o;
    o.backend_args = {"--db-busy-timeout-ms", "30000"};
    platform p(o);
    const std::string db = p.dir + "/citrus.db";
    p.start_backend();
    const std::string alice = json_string(login(p, "alice", "alice-pw").body, "token");
    const std::string bob = json_string(login(p, "bob", "bob-pw").body, "token");
    REQUIRE(create_site(p, bob, "bobs").status == 201);
    auto bob_ws = user_socket(p, bob);
    auto alice_ws = user_socket(p, alice);

    SQLite::Database other(db, SQLite::OPEN_READWRITE, 2000);
    other.exec("BEGIN IMMEDIATE");  // the write lock, held until COMMIT below
    other.exec("INSERT INTO audit_events (at, kind, actor, action, target, outcome, detail) "
               "VALUES (0, 'administration', 'other-process', 'hold', '', 'ok', '')");
    auto waiting = std::async(std::launch::async, [&] { return create_site(p, alice, "waits"); });
    alice_ws->send(ws_command("a1", "site.create", R"({"name":"waits-ws","url":"https://w.test"})"));
    alice_ws->pump(200ms);

    const auto still_waiting = [&] { return waiting.wait_for(0s) != std::future_status::ready; };
    CHECK(still_waiting());
    auto list = http("GET", p.backend_url() + "/api/sites", {}, {bearer(bob)});
    CHECK(list.status == 200);
    CHECK(list.body.find("\"name\":\"bobs\"") != std::string::npos);
    CHECK(http("GET", p.backend_url() + "/healthz").status == 200);
    CHECK(http("GET", p.backend_url() + "/metrics").status == 200);
    const long long bobs_id = json_int(list.body, "id");
    bob_ws->send(ws_command("b1", "site.status", R"({"site_id":)" + std::to_string(bobs_id) + "}"));
    REQUIRE(bob_ws->wait_for([&] { return bob_ws->count(R"("id":"b1")") == 1; }, 5s));
    CHECK(bob_ws->count(R"("id":"b1")", R"("status":"ok")") == 1);
    CHECK(still_waiting());               // all of that while alice's create waited for the lock
    CHECK(alice_ws->count(R"("id":"a1")") == 0);
    other.exec("COMMIT");

    auto created = waiting.get();
    CHECK(created.status == 201);
    REQUIRE(alice_ws->wait_for([&] { return alice_ws->count(R"("id":"a1")") == 1; }, 10s));
    CHECK(alice_ws->count(R"("id":"a1")", "storage_unavailable") == 0);
    auto names = site_names(db);
    std::sort(names.begin(), names.end());  // the two waiting creates may commit in either order
    CHECK(names == std::vector<std::string>{"bobs", "waits", "waits-ws"});
    check_still_serving(p);
  }

  TEST_CASE("the disk under the database full: writes answer 503, reads and the WebSocket go on, then writes succeed again") {
    tmpfs_mount mnt(fs::temp_directory_path().string() + "/citrus-full-" + std::to_string(::getpid()), 16u << 20);
    if (!mnt.mounted()) {
      MESSAGE("skipped: cannot mount a tmpfs for the database (" << mnt.error() << "); this case needs root");
      return;
    }
    const std::string db = mnt.dir() + "/citrus.db";
    platform::options o;
    o.backend_args = {"--db", db, "--db-busy-timeout-ms", "500"};
    platform p(o);  // declared after the mount: the backend stops before the file system goes away
    {
      // The seeded database (users, keys) moves onto the small file system; the CLI left no WAL behind.
      REQUIRE_FALSE(fs::exists(p.dir + "/citrus.db-wal"));
      fs::copy_file(p.dir + "/citrus.db", db);
    }
    p.start_backend();
    auto logged_in = login(p, "alice", "alice-pw");
    REQUIRE(logged_in.status == 200);
    const std::string token = json_string(logged_in.body, "token");
    auto kept = create_site(p, token, "kept");
    REQUIRE(kept.status == 201);
    const long long kept_id = json_int(kept.body, "id");
    auto ws = user_socket(p, token);

    CHECK(fill_until_full(mnt.dir() + "/filler") == ENOSPC);
    struct statvfs st{};
    REQUIRE(::statvfs(mnt.dir().c_str(), &st) == 0);
    CHECK(st.f_bavail == 0);

    auto started = std::chrono::steady_clock::now();
    auto full = create_site(p, token, "during");
    CHECK(full.status == 503);
    CHECK(full.body == unavailable_body);
    check_no_leak(full.body + full.headers);
    CHECK(elapsed_ms(started) < 3000);
    auto full_login = login(p, "bob", "bob-pw");
    CHECK(full_login.status == 503);
    CHECK(full_login.body == unavailable_body);
    ws->send(ws_command("w1", "site.create", R"({"name":"during-ws","url":"https://d.test"})"));
    REQUIRE(ws->wait_for([&] { return ws->count(R"("id":"w1")") == 1; }, 5s));
    CHECK(ws->count(R"("id":"w1")", R"("code":"storage_full")") == 1);
    for (const auto& m : ws->messages) check_no_leak(m);

    // Reads keep working, over REST and the WebSocket, and the process stays up.
    auto list = http("GET", p.backend_url() + "/api/sites", {}, {bearer(token)});
    CHECK(list.status == 200);
    CHECK(list.body.find("\"name\":\"kept\"") != std::string::npos);
    CHECK(list.body.find("during") == std::string::npos);
    ws->send(ws_command("w2", "site.status", R"({"site_id":)" + std::to_string(kept_id) + "}"));
    REQUIRE(ws->wait_for([&] { return ws->count(R"("id":"w2")") == 1; }, 5s));
    CHECK(ws->count(R"("id":"w2")", R"("name":"kept")") == 1);
    CHECK(ws->open());
    CHECK(http("GET", p.backend_url() + "/healthz").status == 200);
    CHECK(p.backend->running());

    // Space freed: writes succeed again without a restart.
    fs::remove(mnt.dir() + "/filler");
    auto after = create_site(p, token, "after");
    CHECK(after.status == 201);
    CHECK(login(p, "bob", "bob-pw").status == 200);
    ws->send(ws_command("w3", "site.create", R"({"name":"after-ws","url":"https://a.test"})"));
    REQUIRE(ws->wait_for([&] { return ws->count(R"("id":"w3")") == 1; }, 5s));
    CHECK(ws->count(R"("id":"w3")", R"("type":"result")") == 1);
    check_still_serving(p);

    // Stopped cleanly, the file holds every committed row and nothing of the refused writes.
    ws.reset();
    p.backend->signal(SIGTERM);
    CHECK(p.backend->wait(10s) == 0);
    CHECK(site_names(db) == std::vector<std::string>{"kept", "after", "after-ws"});
    CHECK(integrity(db) == "ok");
  }
}
