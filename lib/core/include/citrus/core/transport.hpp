#pragma once
/// The transport seam. A transport (in-memory loopback, websocketpp, ...) owns connections and
/// delivers their events to one connection_handler, always on the handler's single thread.
///
/// Promises, in the manner of nng's transport.h:
/// - A `connection&` passed to on_open() stays valid until on_close() for its id has returned.
/// - connection::send() and connection::close() never call back into the handler re-entrantly;
///   the resulting events (on_close, on_drain) arrive later, from the transport's loop.
/// - send() copies the bytes: the caller may reuse its buffer as soon as send() returns.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "citrus/core/ids.hpp"

namespace citrus {

/// WebSocket close codes Citrus uses (4000-4999 is the application range). docs/protocol.md lists them.
enum class close_code : std::uint16_t {
  normal = 1000,
  going_away = 1001,            ///< server shutting down
  protocol_error = 1002,
  unsupported_data = 1003,      ///< binary frame where text is expected
  invalid_payload = 1007,       ///< invalid UTF-8
  policy_violation = 1008,
  message_too_big = 1009,
  internal_error = 1011,
  try_again_later = 1013,       ///< a dependency (the credential store or the backend) cannot answer now
  auth_timeout = 4001,          ///< no successful auth message within the auth timeout
  auth_failed = 4002,           ///< bad credentials or token
  token_expired = 4003,         ///< the token (user) or session lifetime (commander, agent) ended and no re-auth arrived
  rate_limited = 4008,          ///< kept sending after being rate limited
  slow_consumer = 4009,         ///< outbound buffer over the hard limit
  replaced = 4010,              ///< another connection holds the identity (took it over, or this take-over was refused)
  too_many_errors = 4011,       ///< kept sending invalid messages
  revoked = 4012,               ///< the identity's key was revoked (hub), its account disabled or deleted, or its token logged out (backend)
};

enum class send_status : std::uint8_t {
  ok,      ///< queued or written
  closed,  ///< the connection is closing or closed; nothing was sent
};

class connection {
 public:
  virtual ~connection() = default;
  virtual connection_id id() const noexcept = 0;
  /// Sends one text message. Copies `text`; never blocks.
  virtual send_status send(std::string_view text) = 0;
  /// Bytes accepted by send() but not yet written to the peer (backpressure signal).
  virtual std::size_t buffered_amount() const noexcept = 0;
  /// Starts a close handshake. Idempotent. on_close() follows later.
  virtual void close(close_code code, std::string_view reason) = 0;
  /// "ip:port" of the peer, for logs and per-address limits.
  virtual std::string_view remote_address() const noexcept = 0;
};

/// Implemented by the hub, the backend's user gateway and the agent runtime; called by transports.
class connection_handler {
 public:
  virtual ~connection_handler() = default;
  virtual void on_open(connection& conn) = 0;
  /// One complete text message. The view is valid only during the call.
  virtual void on_message(connection_id id, std::string_view text) = 0;
  /// The buffered amount dropped below the transport's low-water mark.
  virtual void on_drain(connection_id id) { (void)id; }
  virtual void on_close(connection_id id) = 0;
};

}  // namespace citrus
