#pragma once
/// citrus::wspp::client — one outgoing WebSocket connection (ws:// or wss://) at a time, delivered to
/// a citrus::connection_handler as a citrus::connection. The same promises as the server apply (see
/// citrus/wspp/server.hpp): callbacks on the loop thread, wrapped; text only; no deflate; pings.
///
/// Life of an attempt: connect() → exactly one of
///   - handler.on_open(conn), later handler.on_close(id) (last_close() tells why), or
///   - the connect_failed handler (DNS, TCP, TLS or HTTP upgrade failure, handshake timeout, close()
///     while connecting).
/// The client is idle again when either on_close or connect_failed runs, so both may call connect()
/// at once. Reconnection and its backoff are the caller's policy: e.g. from connect_failed / on_close,
/// keep a timer from event_loop::schedule(delay, [&] { (void)client.connect(url); }) and grow the
/// delay (with jitter) on each failure; stop retrying on close codes that mean "do not come back"
/// (e.g. close_code::auth_failed).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/transport.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "citrus/wspp/http.hpp"
#include "citrus/wspp/options.hpp"

namespace citrus::wspp {

namespace detail {
struct client_state;
class client_engine;
}  // namespace detail

struct client_options {
  connection_options connection{};
  /// Sent as the Origin header when not empty (browser-like clients; servers may filter on it).
  std::string origin;
  /// Extra request headers for the upgrade request.
  std::vector<http_header> headers;
  /// For wss:// only: PEM file of the certificate authorities to trust. Empty: the system's default
  /// trust store. The server certificate is always verified, including its host name (or IP
  /// address) against the URL's host; TLS 1.2 or later.
  std::string tls_ca_file;
};

/// Why an attempt ended without on_open.
struct connect_failure {
  std::string reason;    ///< human-readable, for logs
  int http_status = 0;   ///< the server's HTTP status when it answered the upgrade with one (e.g. 403)
};

/// How the last open connection ended.
struct close_info {
  std::uint16_t remote_code = 1006;  ///< the code in the peer's close frame; 1006 when none arrived
  std::string remote_reason;
  std::uint16_t local_code = 1006;   ///< the code this side sent; 1006 when none was sent
};

/// Use every member on the loop's thread (or while no thread runs the loop).
class client {
 public:
  enum class state : std::uint8_t {
    idle,        ///< nothing in progress: connect() may be called
    connecting,  ///< connect() called, neither on_open nor connect_failed yet
    open,        ///< on_open delivered
    closing,     ///< close() called, on_close not yet delivered
  };
  using connect_failed_handler = std::function<void(const connect_failure&)>;

  /// `loop`, `handler` and `log` must outlive the client.
  client(event_loop& loop, connection_handler& handler, client_options options, logger& log);
  /// Abrupt: a pending attempt is abandoned (connect_failed is not called); an open connection gets
  /// on_close (before returning) and its socket is dropped. Call on the loop thread or while the loop
  /// is not running, never from inside one of this client's callbacks.
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Called on the loop thread when an attempt fails (see the file comment).
  void set_connect_failed_handler(connect_failed_handler handler);

  /// Starts connecting to `url`: ws://host[:port][/path] or wss://… Returns at once; the outcome
  /// arrives from the loop. Errors: errc::invalid_value (not a ws/wss URL), std::errc::already_connected
  /// (not idle), or the TLS error that made loading tls_ca_file fail.
  result<void> connect(std::string_view url);

  /// Open: starts the close handshake (on_close follows). Connecting: abandons the attempt
  /// (connect_failed follows with reason "cancelled"). Otherwise nothing.
  void close(close_code code, std::string_view reason);

  state current_state() const noexcept;
  /// The open connection, or nullptr. Valid until on_close for it has returned.
  citrus::connection* connection() noexcept;
  /// How the last connection that reached on_open ended; empty before the first on_close.
  std::optional<close_info> last_close() const;


 private:
  std::shared_ptr<detail::client_state> state_;    ///< settings and results that outlive an attempt
  std::shared_ptr<detail::client_engine> engine_;  ///< the current or last attempt (websocketpp)
};

}  // namespace citrus::wspp
