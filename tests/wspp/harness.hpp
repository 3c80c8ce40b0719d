#pragma once
// Helpers for the citrus::wspp integration tests: everything runs over real loopback sockets. Most
// tests drive the event_loop on the test thread (run_until), so handlers need no locking; the raw
// POSIX socket below is non-blocking and is read from inside the run_until predicates.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <ostream>  // doctest prints std::error_code
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/transport.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "citrus/wspp/client.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "citrus/wspp/server.hpp"

namespace citrus::wspp::test {

using namespace std::chrono_literals;

/// Runs the loop until `done()` or `timeout`; returns done().
template <class Pred>
bool run_until(event_loop& loop, Pred done, std::chrono::milliseconds timeout = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    loop.run_for(2ms);
  }
  return true;
}

/// Runs the loop for `duration`, whatever happens.
inline void run_for(event_loop& loop, std::chrono::milliseconds duration) { loop.run_for(duration); }

/// A connection_handler that records everything; optionally echoes.
class recorder final : public citrus::connection_handler {
 public:
  void on_open(connection& conn) override {
    conns[conn.id().value()] = &conn;
    opened.push_back(conn.id().value());
    if (on_open_hook) on_open_hook(conn);
  }
  void on_message(connection_id id, std::string_view text) override {
    messages.emplace_back(text);
    if (on_message_hook) on_message_hook(*conns.at(id.value()), text);
    if (echo) (void)conns.at(id.value())->send(text);
  }
  void on_drain(connection_id id) override { drained.push_back(id.value()); }
  void on_close(connection_id id) override {
    closed.push_back(id.value());
    conns.erase(id.value());
    if (on_close_hook) on_close_hook(id);
  }

  /// The only open connection (test helper).
  connection& only() { return *conns.begin()->second; }

  bool echo = false;
  std::function<void(connection&)> on_open_hook;
  std::function<void(connection&, std::string_view)> on_message_hook;
  std::function<void(connection_id)> on_close_hook;
  std::map<std::uint64_t, connection*> conns;
  std::vector<std::uint64_t> opened;
  std::vector<std::uint64_t> closed;
  std::vector<std::uint64_t> drained;
  std::vector<std::string> messages;
};

/// One server→client WebSocket frame (unmasked).
struct frame {
  std::uint8_t opcode = 0;
  std::string payload;
  /// For close frames: the status code (0 if the payload has none).
  std::uint16_t close_code() const;
};

/// Pops one complete client frame from `in`, unmasked; nullopt while incomplete, and for an
/// unmasked frame (a client must mask: the test then fails waiting).
std::optional<frame> take_client_frame(std::string& in);

/// A client frame, masked as RFC 6455 requires. `fin` false: more fragments follow.
std::string client_frame(std::uint8_t opcode, std::string_view payload, bool fin = true);
/// A close frame payload with `code` (client side, masked).
std::string client_close_frame(std::uint16_t code);

/// A non-blocking TCP client on 127.0.0.1 that speaks raw bytes.
class raw_socket {
 public:
  /// `receive_buffer` > 0 sets SO_RCVBUF before connecting (a small window for slow-reader tests).
  /// `source`: the local IPv4 address to connect from (any 127.x.y.z works on Linux's loopback), so
  /// that one test can be several client addresses.
  explicit raw_socket(std::uint16_t port, int receive_buffer = 0, const char* source = nullptr);
  ~raw_socket();
  raw_socket(const raw_socket&) = delete;
  raw_socket& operator=(const raw_socket&) = delete;

  /// Writes everything (waits for the socket to be writable if needed). False if the peer is gone.
  bool send(std::string_view bytes);
  /// Reads what is available now into `in` (or discards it when `keep` is false); sets `eof` when
  /// the peer closed or reset. Returns the number of bytes read.
  std::size_t pump(bool keep = true);
  /// Pops one complete frame from `in` (after the HTTP response was consumed).
  std::optional<frame> take_frame();
  /// Consumes an HTTP response head from `in` once complete; returns its status (0 if incomplete).
  int take_http_head(std::string* head = nullptr);
  /// Sends the RFC 6455 upgrade request for "/" plus `extra_headers` ("Name: value\r\n" lines).
  bool send_upgrade(std::uint16_t port, std::string_view extra_headers = {}, std::string_view version = "13");
  void close();

  std::string in;
  bool eof = false;
  std::size_t discarded = 0;

 private:
  int fd_ = -1;
};

/// A listening TCP socket that never accepts: the kernel completes connections into its backlog,
/// and nobody ever answers (a server that hangs).
class silent_listener {
 public:
  silent_listener();
  ~silent_listener();
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;
  std::uint16_t port() const noexcept { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

/// A hand-written WebSocket server for one connection: it answers the upgrade with whatever head
/// the test wants (a correct Sec-WebSocket-Accept plus `extra_headers`), to play a hostile server.
class raw_server {
 public:
  raw_server();
  ~raw_server();
  raw_server(const raw_server&) = delete;
  raw_server& operator=(const raw_server&) = delete;
  std::uint16_t port() const noexcept { return port_; }
  /// Non-blocking: accepts, reads the request and answers once it is complete. True once answered.
  bool answer_upgrade(std::string_view extra_headers);
  /// Writes raw bytes (e.g. a frame) on the accepted connection.
  bool send(std::string_view bytes);
  /// Non-blocking read on the accepted connection; true once the peer closed it.
  bool peer_closed();
  /// Non-blocking read on the accepted connection into `in`.
  void receive();
  /// Closes the accepted connection (what a server does after the close handshake).
  void disconnect();

  std::string in;  ///< what the client sent after its upgrade request

 private:
  int listen_fd_ = -1;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::string request_;
  bool answered_ = false;
};

/// Short timeouts so that tests take milliseconds. Pings off unless a test turns them on.
inline connection_options quick_connection() {
  connection_options o;
  o.handshake_timeout = 2000ms;
  o.close_timeout = 300ms;
  o.ping_interval = 0ms;
  return o;
}
inline server_options quick_server() {
  server_options o;
  o.connection = quick_connection();
  return o;
}
inline client_options quick_client() {
  client_options o;
  o.connection = quick_connection();
  return o;
}

/// A listening server with a recording handler on a fresh loop.
struct server_fixture {
  explicit server_fixture(server_options options = quick_server())
      : srv(loop, handler, std::move(options), log) {
    auto bound = srv.listen();
    if (!bound) throw std::runtime_error("listen failed: " + bound.error().message());
    port = *bound;
  }
  std::string url(std::string_view path = "/") const {
    return "ws://127.0.0.1:" + std::to_string(port) + std::string(path);
  }
  memory::recording_logger log;
  event_loop loop;
  recorder handler;
  server srv;
  std::uint16_t port = 0;
};

/// A client with its own recording handler.
struct test_client {
  test_client(event_loop& loop, logger& log, client_options options = quick_client())
      : c(loop, rec, std::move(options), log) {
    c.set_connect_failed_handler([this](const connect_failure& f) { failures.push_back(f); });
  }
  bool is_open() const { return c.current_state() == client::state::open; }
  recorder rec;
  client c;
  std::vector<connect_failure> failures;
};

/// Files for a self-signed certificate (CN=localhost, SAN DNS:localhost and IP:127.0.0.1) and its
/// key, created once per process in a temporary directory.
struct tls_files {
  std::string certificate;
  std::string private_key;
  std::string other_certificate;  ///< an unrelated self-signed certificate (an untrusted CA)
};
const tls_files& test_tls_files();

}  // namespace citrus::wspp::test
