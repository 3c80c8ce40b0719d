#pragma once
// Starts the real executables in a fresh data folder and talks to them as users, commanders and
// agents would: REST through libcurl, WebSockets through citrus::wspp. Every wait is bounded.
#include <chrono>
#include <functional>
#include <memory>
#include <ostream>  // doctest prints std::error_code
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "citrus/core/audit.hpp"
#include "citrus/core/transport.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "citrus/wspp/client.hpp"
#include "citrus/wspp/event_loop.hpp"

namespace citrus::it {

using namespace std::chrono_literals;

/// A child process with its stdout/stderr in a log file; killed (SIGKILL) if still running at the end.
class process {
 public:
  process(std::vector<std::string> argv, std::string log_file, std::vector<std::string> env = {},
          std::string stdin_text = {});
  ~process();
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  void signal(int sig);
  /// Exit status (or 128+signal) once it has ended; -1 on timeout.
  int wait(std::chrono::milliseconds timeout = 10s);
  bool running();
  pid_t pid() const { return pid_; }
  const std::string& log_file() const { return log_file_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_file_;
};

/// Runs a command to completion and returns (exit code, stdout).
std::pair<int, std::string> run_command(const std::vector<std::string>& argv, const std::string& stdin_text = {});
/// The output of a run_command() that must have exited 0 (else the test fails, showing `what` and the output).
std::string checked(const std::pair<int, std::string>& r, const char* what);
/// The last line of a text, without its newline (a key the CLI printed after its notes).
std::string last_line(std::string text);

/// A loopback TCP port free a moment ago (for executables that must know each other's ports).
std::uint16_t free_port();

/// Waits for `path` to hold a port number written by --ready-file.
std::uint16_t wait_for_port(const std::string& path, std::chrono::milliseconds timeout = 15s);

struct http_result {
  long status = 0;
  std::string body;
  std::string headers;
};
http_result http(const std::string& method, const std::string& url, const std::string& body = {},
                 const std::vector<std::string>& headers = {});
/// http() from another local source address (any 127.x.y.z on Linux's loopback): another client, as
/// the per-address limits see it.
http_result http_from(const std::string& source, const std::string& method, const std::string& url,
                      const std::string& body = {}, const std::vector<std::string>& headers = {});
/// The value of "key":"..." in a flat JSON text (test convenience), or "".
std::string json_string(const std::string& json, const std::string& key);
long long json_int(const std::string& json, const std::string& key);

/// A WebSocket client with its own event loop, driven from the test thread.
class ws_client final : public connection_handler {
 public:
  ws_client();
  ~ws_client() override;
  bool connect(const std::string& url, std::chrono::milliseconds timeout = 5s);
  void send(std::string_view text);
  /// Pumps the loop until `pred()` or the timeout; returns pred().
  bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s);
  void pump(std::chrono::milliseconds duration);
  /// Messages that contain `needle`.
  std::size_t count(std::string_view needle) const;
  /// Messages that contain both needles.
  std::size_t count(std::string_view a, std::string_view b) const;
  bool open() const { return conn_ != nullptr; }
  std::uint16_t close_code() const;

  void on_open(connection& conn) override { conn_ = &conn; }
  void on_message(connection_id, std::string_view text) override { messages.emplace_back(text); }
  void on_close(connection_id) override {
    conn_ = nullptr;
    closed = true;
  }
  std::vector<std::string> messages;
  bool closed = false;

 private:
  memory::recording_logger log_;
  wspp::event_loop loop_;
  std::unique_ptr<wspp::client> client_;
  connection* conn_ = nullptr;
  bool failed_ = false;
};

/// The whole platform in a temporary folder: database, seeded users, agent credentials, and the three
/// executables started on free loopback ports.
class platform {
 public:
  struct options {
    int token_lifetime_s = 900;
    int step_delay_ms = 50;
    std::vector<std::string> allowed_origins;  ///< --allowed-origin values for the backend (empty: none)
    std::vector<std::string> backend_args;     ///< more backend flags, after the others (the last --db wins)
    std::vector<std::string> hub_args;         ///< more hub flags, after the others
    bool hub_db = true;  ///< false: the hub gets no --db and verifies everything through the backend
    std::vector<std::string> server_env;       ///< more NAME=value environment for the backend and the hub
    bool agent_metrics = false;  ///< the agent serves /metrics (--metrics-listen on a free port): agent_metrics_url()
    /// The agent reads its key from agent_key_file() (--key-file), where a rotation writes the new one;
    /// start_agent() without a key keeps what the file holds.
    bool agent_key_file = false;
    /// Likewise for the backend's commander key: commander_key_file() (--commander-key-file).
    bool commander_key_file = false;
  };
  explicit platform(options opts);
  platform() : platform(options{}) {}
  ~platform();

  void start_backend();
  void start_hub();
  void start_agent(const std::string& key = {});
  /// Backend, hub and agent, then waits until the backend sees the agent online.
  void start_all();
  void stop_hub();
  void kill_agent();

  std::string backend_url() const;  ///< http://127.0.0.1:PORT
  std::string backend_ws() const;   ///< ws://127.0.0.1:PORT/ws
  std::string hub_url() const;      ///< ws://127.0.0.1:PORT/
  /// http://127.0.0.1:PORT of the agent's metrics listener (options::agent_metrics), once it listens.
  std::string agent_metrics_url() const;
  std::string agent_key_file() const { return dir + "/agent.key"; }
  std::string commander_key_file() const { return dir + "/commander.key"; }
  std::string login(const std::string& user, const std::string& password);
  /// Waits until the backend reports the agent online (its deploys then reach it).
  bool wait_agent_online(std::chrono::milliseconds timeout = 15s);
  std::string dir;             ///< the data folder
  std::string sites_root;      ///< the agent's root
  std::string agent_key, hub_key, commander_key;
  std::unique_ptr<process> backend, hub, agent;
  std::uint16_t backend_port = 0, hub_port = 0;

 private:
  /// `env` plus options::server_env.
  std::vector<std::string> server_env(std::vector<std::string> env) const;
  options opts_;
  int agent_starts_ = 0;
};

std::string bearer(const std::string& token);

/// An authenticated user's WebSocket (the token in the first message, never the URL).
std::unique_ptr<ws_client> user_socket(platform& p, const std::string& token);

/// The first message of a commander or agent at the hub.
std::string auth_frame(const std::string& role, const std::string& id, const std::string& key);
/// Connects `client` to the hub as (role, id, key); true once its auth_ok arrived.
bool hub_login(ws_client& client, const platform& p, const std::string& role, const std::string& id,
               const std::string& key);

/// Audit events of `kind` whose action is `action` (and outcome, when given), polled until at least
/// `at_least` are there (the gateway's audit is asynchronous) or 5 s passed.
std::size_t audit_count(platform& p, audit_kind kind, const std::string& action, std::size_t at_least,
                        const std::string& outcome = {});
/// Audit events of `kind` in the database at `db_path` that satisfy `match`, polled until at least
/// `at_least` are there (the backend writes its events asynchronously) or 5 s passed.
std::size_t audit_count(const std::string& db_path, audit_kind kind, const std::function<bool(const audit_event&)>& match,
                        std::size_t at_least);

/// A bare TCP connection speaking just enough WebSocket to send what a well-behaved client never
/// would (binary frames, endless fragments, hostile handshake headers) and to stop reading.
/// Every read and write is bounded in time.
class raw_socket {
 public:
  /// `receive_buffer` > 0: SO_RCVBUF set before connecting (a tiny window for a reader that stalls).
  /// `source`: the IPv4 address to connect from (any 127.x.y.z on Linux's loopback): another client.
  explicit raw_socket(std::uint16_t port, int receive_buffer = 0, const char* source = nullptr);
  ~raw_socket();
  raw_socket(const raw_socket&) = delete;
  raw_socket& operator=(const raw_socket&) = delete;

  /// False once a write failed (the peer closed or reset the connection) or timed out.
  bool write_all(std::string_view data);
  /// Reads until `done(buffer)` or EOF or the timeout; returns whether done.
  bool read_until(const std::function<bool(const std::string&)>& done, std::chrono::milliseconds timeout = 8s);
  /// Sends an upgrade request for `path` with `extra` header lines; returns the response head.
  std::string handshake(const std::string& path, const std::string& extra = {});
  /// A masked client frame; `fin` false leaves the message open for continuation frames (opcode 0).
  static std::string frame(unsigned opcode, std::string_view payload, bool fin = true);
  void send_frame(unsigned opcode, std::string_view payload, bool fin = true) { write_all(frame(opcode, payload, fin)); }
  /// The code of the server's close frame, once it arrived (0 if none came before EOF/timeout).
  /// `texts` receives the text frames seen before it.
  int wait_close(std::vector<std::string>* texts = nullptr, std::chrono::milliseconds timeout = 8s);
  /// Reads and discards frames (any amount: parsed as they come) until the server's close frame,
  /// EOF or the timeout; returns the close code, 0 without one. `bytes` receives what was read.
  int drain_to_close(std::chrono::milliseconds timeout, std::size_t* bytes = nullptr);
  /// Whether the server has sent something not yet read.
  bool readable();
  /// Writes what the socket takes now, without waiting; returns how many bytes (0 when full or gone).
  std::size_t write_some(std::string_view data);
  /// Whether the server has closed or reset the connection, seen without reading what it sent.
  bool peer_gone();
  std::string buffer;
  bool eof = false;

 private:
  int fd_ = -1;
};

}  // namespace citrus::it
