#pragma once
/// citrus::wspp::server — a WebSocket (ws:// or wss://) listener on websocketpp, delivering each
/// accepted connection to one citrus::connection_handler as a citrus::connection.
///
/// Promises (on top of citrus/core/transport.hpp):
/// - Every callback runs on the event_loop's thread and is wrapped: an exception thrown by the handler
///   is logged ("handler_threw"); if it came from on_open or on_message the connection is closed with
///   close_code::internal_error. No exception ever reaches the loop.
/// - Only text messages are delivered. A binary message closes the connection with
///   close_code::unsupported_data (1003) without being delivered. Invalid UTF-8 closes with 1007.
/// - permessage-deflate is never negotiated; only WebSocket version 13 (RFC 6455) is accepted: an
///   upgrade asking for another version (or none) gets 426 with Sec-WebSocket-Version: 13, one whose
///   Sec-WebSocket-Key is not the base64 of 16 bytes gets 400.
/// - Pings and pongs are rate limited per connection and counted in buffered_amount() (see
///   connection_options).
/// - The citrus::connection objects belong to the server: each is valid from on_open until on_close
///   for its id has returned (destroying the server delivers the remaining on_close events first).
/// - Connection ids come from a counter shared by every server and client of the same event_loop.
/// - connection::remote_address() is "ip:port" ("[v6]:port" for IPv6).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "citrus/core/logger.hpp"
#include "citrus/core/result.hpp"
#include "citrus/core/transport.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "citrus/wspp/http.hpp"
#include "citrus/wspp/options.hpp"

namespace citrus::wspp {

namespace detail {
class server_engine;
}

struct server_options {
  /// Numeric IPv4 or IPv6 address to bind ("0.0.0.0" or "::" for every interface).
  std::string bind_address = "127.0.0.1";
  /// 0 picks a free port; server::listen() returns the port actually bound.
  std::uint16_t port = 0;
  connection_options connection{};

  /// Empty: every Origin is accepted (non-browser clients usually send none). Otherwise a WebSocket
  /// handshake that carries an Origin header not in this list (exact, ASCII case-insensitive, e.g.
  /// "https://app.example.com") is refused with HTTP 403. A handshake without Origin is accepted.
  /// Plain HTTP requests are not filtered: CORS is the http_handler's business.
  std::vector<std::string> allowed_origins;

  /// TCP connections held at once: handshaking, open WebSocket and plain HTTP ones together. A
  /// connection accepted beyond it is closed at once, before anything is read (connection flood).
  /// Keep it below the process's file descriptor limit (ulimit -n); if accept() runs out of
  /// descriptors anyway, accepting pauses for 100 ms instead of spinning.
  std::size_t max_connections = 10000;
  /// TCP connections held at once from one IP address (0: no limit beyond max_connections). Without
  /// it one address can hold every slot until the handshake timeout frees them. Leave it 0 behind a
  /// reverse proxy, where every client has the proxy's address.
  std::size_t max_connections_per_address = 0;
  /// Largest plain HTTP request body; a longer Content-Length is answered with 413 before the body
  /// is read. (Request headers are limited to 16000 bytes by websocketpp.)
  std::size_t max_http_body_bytes = 1024 * 1024;
  /// How long a request given to an async_http_handler may wait for its answer: then the server
  /// answers 503 itself (counted in http_response_timeouts) and the responder's send() does nothing.
  std::chrono::milliseconds http_response_timeout{30000};

  /// Both set: serve wss:// (TLS 1.2 or later, OpenSSL). PEM files: the certificate chain (leaf
  /// first) and its private key. Both empty: plain ws://. Read by listen().
  std::string tls_certificate_file;
  std::string tls_private_key_file;
};

/// Plain counters, read on the loop thread (for /metrics and tests).
struct server_counters {
  std::uint64_t accepted = 0;              ///< TCP connections accepted
  std::uint64_t refused_connections = 0;   ///< closed at accept: max_connections reached
  std::uint64_t refused_per_address = 0;   ///< closed at accept: max_connections_per_address reached
  std::uint64_t opened = 0;                ///< WebSocket handshakes completed (on_open delivered)
  std::uint64_t handshake_failures = 0;    ///< timed out, malformed or refused handshakes
  std::uint64_t origin_rejected = 0;       ///< refused with 403 by allowed_origins
  std::uint64_t http_requests = 0;         ///< delivered to the http_handler (or answered 426)
  std::uint64_t http_deferred = 0;         ///< of which given to the async_http_handler
  std::uint64_t http_response_timeouts = 0;  ///< deferred ones answered 503: no answer in time
  std::uint64_t http_unanswered = 0;       ///< deferred ones answered 500: responder dropped unused
  std::uint64_t closed = 0;                ///< on_close delivered
  std::uint64_t unsupported_data = 0;      ///< closed with 1003 for a binary message
  std::uint64_t pong_timeouts = 0;         ///< closed for not answering a ping
  std::uint64_t slow_consumers = 0;        ///< closed by outbound_hard_limit_bytes
  std::uint64_t control_rate_limited = 0;  ///< closed with 4008: pings or pongs over control_frames_per_second
  std::uint64_t handler_exceptions = 0;    ///< exceptions caught from the handlers
};

/// Use every member on the loop's thread (or while no thread runs the loop).
class server {
 public:
  /// `loop`, `handler` and `log` must outlive the server. Nothing happens until listen().
  server(event_loop& loop, connection_handler& handler, server_options options, logger& log);
  /// Abrupt: stops listening, delivers on_close for every open connection (before returning) and
  /// drops every socket without a close handshake. Call stop() and let the loop run first for a
  /// graceful shutdown. Call on the loop thread or while the loop is not running, never from inside
  /// one of this server's callbacks.
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Serves plain HTTP requests on the same port. Without one, such requests get 426 Upgrade
  /// Required. May be called at any time (on the loop thread); applies to the next request.
  /// Replaces an async_http_handler set before.
  void set_http_handler(http_handler handler);
  /// The same for a handler that answers later through its http_responder (see http.hpp). The
  /// request's connection is held open meanwhile (it counts towards max_connections) until the
  /// answer, or server_options::http_response_timeout. Replaces an http_handler set before.
  void set_async_http_handler(async_http_handler handler);

  /// Binds and starts accepting. Returns the bound port. Errors (never exceptions):
  /// std::errc::address_in_use (port taken), std::errc::invalid_argument (bind_address is not a
  /// numeric address, or only one of the TLS files is set), std::errc::already_connected (already
  /// listening), or the system / TLS error that made binding or loading the certificate fail.
  result<std::uint16_t> listen();
  /// The bound port while listening, else 0.
  std::uint16_t port() const noexcept;

  /// Stops accepting, closes every open connection with close_code::going_away (1001) — their
  /// on_close events follow from the loop — and drops connections still handshaking or waiting for a deferred HTTP answer. listen() may
  /// be called again afterwards.
  void stop();

  /// Open WebSocket connections (on_open delivered, on_close not yet).
  std::size_t connection_count() const noexcept;
  server_counters counters() const noexcept;


 private:
  std::shared_ptr<detail::server_engine> engine_;  ///< websocketpp lives behind it
};

}  // namespace citrus::wspp
