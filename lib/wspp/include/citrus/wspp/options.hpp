#pragma once
/// Per-connection settings shared by citrus::wspp::server and citrus::wspp::client.
#include <chrono>
#include <cstddef>

namespace citrus::wspp {

struct connection_options {
  /// Largest inbound message, after reassembly of fragments. A peer that sends more is closed with
  /// close_code::message_too_big (1009) and the message is never delivered. websocketpp has no
  /// separate per-frame limit: a frame can never exceed this either.
  std::size_t max_message_bytes = 64 * 1024;

  /// From TCP accept (server) or TCP connect (client) until the HTTP upgrade (or a plain HTTP
  /// request) is complete. A peer that is slower is dropped (slowloris). The TLS handshake has its
  /// own fixed limit of 5 s before this one starts; DNS resolution and TCP connect (client) have
  /// fixed limits of 5 s each.
  std::chrono::milliseconds handshake_timeout{5000};
  /// How long a close handshake may take before the TCP connection is dropped anyway (a peer that
  /// does not answer, or does not read, cannot keep a closing connection alive).
  std::chrono::milliseconds close_timeout{2000};

  /// A ping is sent this often on every open connection; 0 disables pings (and pong timeouts).
  /// websocketpp sends no pings by itself: without them a half-open peer stays connected forever.
  std::chrono::milliseconds ping_interval{20000};
  /// A connection whose peer has not answered a ping after this long is closed with
  /// close_code::policy_violation (1008, reason "pong timeout"), then dropped after close_timeout.
  std::chrono::milliseconds pong_timeout{10000};

  /// connection::buffered_amount() is websocketpp's send queue: bytes accepted by send() and not yet
  /// handed to the socket. The one write in progress is not counted (websocketpp hands the whole queue
  /// to it at once), so a stalled peer holds at most that write plus the queue: bound the queue (the
  /// caller's policy, or outbound_hard_limit_bytes) and memory per connection stays below about
  /// twice the bound.
  ///
  /// connection_handler::on_drain is delivered once each time a connection's buffered_amount()
  /// falls to or below this mark after a send() left it above. Polled every drain_poll_interval while
  /// some connection is above the mark (websocketpp reports no write completions).
  std::size_t drain_low_water_bytes = 64 * 1024;
  std::chrono::milliseconds drain_poll_interval{10};

  /// TCP_NODELAY on the connection's socket: each write leaves at once instead of waiting (Nagle's
  /// algorithm) for the peer to acknowledge the previous one. Citrus messages are small and
  /// latency-bound, and websocketpp already hands every queued message to one write call, so
  /// holding them back gains nothing (bench/run_ws.sh: lower latency and higher throughput).
  bool tcp_no_delay = true;

  /// 0 (the default): the transport never drops a slow consumer by itself — buffered_amount()
  /// reports the backlog and the policy belongs to the caller (the hub closes with slow_consumer).
  /// Otherwise a send() that would take buffered_amount() above this many bytes is refused: the
  /// connection is closed with close_code::slow_consumer (4009) and send() returns
  /// send_status::closed.
  std::size_t outbound_hard_limit_bytes = 0;
};

}  // namespace citrus::wspp
