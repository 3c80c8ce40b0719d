#pragma once
// A throw-away PostgreSQL server for tests: a fresh temporary directory holding a copy of a cluster that
// initdb made once per machine (/tmp/citrus-pg-template), then `postgres` on a free loopback port with
// fsync off, run as the `postgres` user when the tests run as root (initdb and
// the server refuse root). The server is a child of the test process and gets SIGQUIT when the process
// dies (PR_SET_PDEATHSIG), so a crashed or timed-out test leaves no server behind.
//
// When the server binaries are missing (scripts/deps.sh installs them) the test process prints the
// reason and exits with code 77, which ctest reports as skipped — unless CITRUS_REQUIRE_POSTGRES is set
// (scripts/test.sh, CI), where that is a failure.
#include <sys/types.h>

#include <cstdint>
#include <string>

namespace citrus::pgtest {

class server {
 public:
  server();   ///< initdb and start; skips the process when PostgreSQL is not installed
  ~server();  ///< stops the server and removes its directory
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// One server per test process, started on first use (create it on the main thread: the death signal
  /// follows the thread that started the server).
  static server& shared();

  void stop();   ///< fast shutdown; waits until the server has exited
  void start();  ///< again, on the same port and data
  bool running() const { return pid_ > 0; }

  std::uint16_t port() const { return port_; }
  /// postgresql://citrus@127.0.0.1:PORT/DB?sslmode=disable&... (`params` appended as given)
  std::string url(const std::string& db = "postgres", const std::string& params = {}) const;
  /// A new, empty database; returns its name.
  std::string create_database();
  /// Runs `sql` as the superuser in `db`; returns the first column of the first row ("" if none).
  /// Fails the test on an error.
  std::string exec(const std::string& db, const std::string& sql) const;
  const std::string& dir() const { return dir_; }

 private:
  void launch();
  std::string template_cluster() const;
  std::string bindir_;
  std::string dir_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  bool switch_user_ = false;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

/// Exits the process with code 77 (ctest: skipped) after printing `reason`, or fails the test when
/// CITRUS_REQUIRE_POSTGRES is set.
void skip_process(const std::string& reason);

/// A loopback port that was free a moment ago.
std::uint16_t free_port();

}  // namespace citrus::pgtest
