#include "pg_server.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <thread>
#include <vector>

namespace citrus::pgtest {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool executable(const fs::path& p) { return ::access(p.c_str(), X_OK) == 0; }

/// The directory holding initdb and postgres: $CITRUS_PG_BINDIR, the newest /usr/lib/postgresql/*/bin,
/// or the one initdb on PATH resolves to. Empty when there is none.
std::string find_bindir() {
  if (const char* env = std::getenv("CITRUS_PG_BINDIR"); env != nullptr && *env != '\0') return env;
  std::vector<fs::path> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec))
    if (executable(entry.path() / "bin" / "initdb") && executable(entry.path() / "bin" / "postgres"))
      found.push_back(entry.path() / "bin");
  if (!found.empty()) {
    // Newest major version first: compare the version folder numerically ("9.6" < "15").
    std::sort(found.begin(), found.end(), [](const fs::path& a, const fs::path& b) {
      return std::atof(a.parent_path().filename().c_str()) > std::atof(b.parent_path().filename().c_str());
    });
    return found.front().string();
  }
  if (const char* path = std::getenv("PATH")) {
    std::string all = path;
    for (std::size_t start = 0; start <= all.size();) {
      const std::size_t end = std::min(all.find(':', start), all.size());
      const fs::path initdb = fs::path(all.substr(start, end - start)) / "initdb";
      if (executable(initdb)) {
        const fs::path real = fs::canonical(initdb, ec).parent_path();
        if (!ec && executable(real / "postgres")) return real.string();
      }
      start = end + 1;
    }
  }
  return {};
}

std::string tail_of(const std::string& file, std::size_t bytes = 2000) {
  std::ifstream in(file, std::ios::binary);
  std::string all{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

/// fork + exec `argv` with stdout/stderr appended to `log`, as (uid, gid) when `switch_user`. With
/// `die_with_parent`, the child gets SIGQUIT (PostgreSQL's immediate shutdown) when this thread ends.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log, bool switch_user, uid_t uid, gid_t gid,
            bool die_with_parent) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  // Child: only async-signal-safe calls until exec.
  if (switch_user && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) ::_exit(126);
  // After setuid: a change of credentials clears the death signal.
  if (die_with_parent && (::prctl(PR_SET_PDEATHSIG, SIGQUIT) != 0 || ::getppid() != parent)) ::_exit(125);
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
  }
  const int null = ::open("/dev/null", O_RDONLY);
  if (null >= 0) ::dup2(null, 0);
  ::execv(args[0], args.data());
  ::_exit(127);
}

int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (true) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(10ms);
  }
}

/// Directories of servers whose test process died without cleaning up (the server itself died with it).
void remove_stale_dirs() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::temp_directory_path(), ec)) {
    if (entry.path().filename().string().rfind("citrus-pg-", 0) != 0) continue;
    std::ifstream owner(entry.path() / "owner.pid");
    long pid = 0;
    if (!(owner >> pid) || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) continue;  // still alive
    fs::remove_all(entry.path(), ec);
  }
}

std::string quoted_ident(const std::string& name) { return "\"" + name + "\""; }

}  // namespace

void skip_process(const std::string& reason) {
  if (std::getenv("CITRUS_REQUIRE_POSTGRES") != nullptr) FAIL("PostgreSQL is required (CITRUS_REQUIRE_POSTGRES): " << reason);
  std::fprintf(stderr, "SKIPPED: PostgreSQL tests need a PostgreSQL server: %s (scripts/deps.sh installs it)\n",
               reason.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  std::_Exit(77);
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

server::server() {
  bindir_ = find_bindir();
  if (bindir_.empty()) skip_process("initdb and postgres were not found (/usr/lib/postgresql/*/bin, PATH)");
  if (::geteuid() == 0) {
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) skip_process("running as root, and there is no 'postgres' user to run the server as");
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    switch_user_ = true;
  }
  remove_stale_dirs();
  std::string templ = (fs::temp_directory_path() / "citrus-pg-XXXXXX").string();
  REQUIRE(::mkdtemp(templ.data()) != nullptr);
  dir_ = templ;
  { std::ofstream(dir_ + "/owner.pid") << ::getpid() << "\n"; }
  if (switch_user_) REQUIRE(::chown(dir_.c_str(), uid_, gid_) == 0);
  REQUIRE(::chmod(dir_.c_str(), 0700) == 0);

  // A copy of a cluster made once per machine: initdb takes seconds on a busy machine, a copy a fraction.
  const std::string templ_data = template_cluster();
  const pid_t copy = spawn({"/bin/cp", "-a", templ_data, dir_ + "/data"}, dir_ + "/copy.log", switch_user_, uid_, gid_,
                           false);
  REQUIRE(copy > 0);
  INFO("cp: " << tail_of(dir_ + "/copy.log"));
  REQUIRE(wait_exit(copy, 120s) == 0);
  start();
}

std::string server::template_cluster() const {
  // /tmp/citrus-pg-template/<bindir with '/' as '_'>/data, made under an flock so that test processes
  // started together run initdb once; "complete" marks a finished one (an interrupted initdb is redone).
  const fs::path root = fs::temp_directory_path() / "citrus-pg-template";
  std::error_code ec;
  fs::create_directories(root, ec);
  std::string key = bindir_;
  std::replace(key.begin(), key.end(), '/', '_');
  const fs::path cluster = root / key;
  const int lock = ::open((root / (key + ".lock")).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(lock >= 0);
  REQUIRE(::flock(lock, LOCK_EX) == 0);
  struct unlock {
    int fd;
    ~unlock() { ::close(fd); }  // releases the flock
  } release{lock};
  if (fs::exists(cluster / "complete")) return (cluster / "data").string();
  fs::remove_all(cluster, ec);
  REQUIRE(fs::create_directories(cluster));
  if (switch_user_) REQUIRE(::chown(cluster.c_str(), uid_, gid_) == 0);
  REQUIRE(::chmod(cluster.c_str(), 0700) == 0);
  const pid_t initdb = spawn({bindir_ + "/initdb", "-D", (cluster / "data").string(), "-U", "citrus", "--auth=trust",
                              "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"},
                             (cluster / "initdb.log").string(), switch_user_, uid_, gid_, false);
  REQUIRE(initdb > 0);
  const int status = wait_exit(initdb, 120s);
  INFO("initdb: " << tail_of((cluster / "initdb.log").string()));
  REQUIRE(status == 0);
  { std::ofstream(cluster / "complete") << "ok\n"; }
  return (cluster / "data").string();
}

server::~server() {
  stop();
  std::error_code ec;
  if (!dir_.empty() && std::getenv("CITRUS_KEEP_TEST_DATA") == nullptr) fs::remove_all(dir_, ec);
}

server& server::shared() {
  static server instance;
  return instance;
}

void server::start() {
  REQUIRE(pid_ <= 0);
  for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) {
    if (port_ == 0 || attempt > 0) port_ = free_port();  // a restart keeps its port when it can
    launch();
  }
  INFO("server log: " << tail_of(dir_ + "/server.log"));
  REQUIRE(pid_ > 0);
}

void server::launch() {
  const pid_t pid = spawn({bindir_ + "/postgres", "-D", dir_ + "/data", "-p", std::to_string(port_), "-c",
                           "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + dir_, "-c", "fsync=off",
                           "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "shared_buffers=16MB",
                           "-c", "max_connections=60"},
                          dir_ + "/server.log", switch_user_, uid_, gid_, true);
  REQUIRE(pid > 0);
  const std::string ping =
      "host=127.0.0.1 port=" + std::to_string(port_) + " user=citrus dbname=postgres connect_timeout=2";
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (wait_exit(pid, 0ms) >= 0) return;  // exited: e.g. the port was taken meanwhile; the caller retries
    if (PQping(ping.c_str()) == PQPING_OK) {
      pid_ = pid;
      return;
    }
    std::this_thread::sleep_for(20ms);
  }
  ::kill(pid, SIGKILL);
  wait_exit(pid, 10s);
}

void server::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGINT);  // fast shutdown: ends the sessions, checkpoints, exits
  if (wait_exit(pid_, 30s) < 0) {
    ::kill(pid_, SIGKILL);
    wait_exit(pid_, 10s);
  }
  pid_ = -1;
}

std::string server::url(const std::string& db, const std::string& params) const {
  return "postgresql://citrus@127.0.0.1:" + std::to_string(port_) + "/" + db + "?sslmode=disable" +
         (params.empty() ? "" : "&" + params);
}

std::string server::create_database() {
  static std::atomic<int> counter{0};
  const std::string name = "t" + std::to_string(++counter);
  exec("postgres", "CREATE DATABASE " + quoted_ident(name));
  return name;
}

std::string server::exec(const std::string& db, const std::string& sql) const {
  const std::string conninfo =
      "host=127.0.0.1 port=" + std::to_string(port_) + " user=citrus connect_timeout=5 dbname=" + db;
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn(PQconnectdb(conninfo.c_str()), PQfinish);
  INFO("connect: " << PQerrorMessage(conn.get()));
  REQUIRE(PQstatus(conn.get()) == CONNECTION_OK);
  std::unique_ptr<PGresult, void (*)(PGresult*)> res(PQexec(conn.get(), sql.c_str()), PQclear);
  const auto status = PQresultStatus(res.get());
  INFO(sql << ": " << PQresultErrorMessage(res.get()));
  REQUIRE((status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK));
  if (status != PGRES_TUPLES_OK || PQntuples(res.get()) == 0 || PQgetisnull(res.get(), 0, 0)) return {};
  return PQgetvalue(res.get(), 0, 0);
}

}  // namespace citrus::pgtest
