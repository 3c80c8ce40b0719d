#pragma once
/// Per-connection settings shared by citrus::wspp::server and citrus::wspp::client.
#include <chrono>
#include <cstddef>
#include <cstdint>

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
  /// Each ping carries 8 random bytes and only a pong that echoes them is an answer (RFC 6455 §5.5.3):
  /// a peer that never reads cannot keep its connection alive with unsolicited pongs.
  std::chrono::milliseconds pong_timeout{10000};

  /// Pings, and pongs other than the answer to our own ping, that a peer may send: bursts of
  /// control_frame_burst, refilled at control_frames_per_second. The next one beyond closes the
  /// connection with close_code::rate_limited (4008, reason "control frame rate exceeded"), unanswered;
  /// it is dropped after close_timeout if it does not read the close frame. Applies from the
  /// handshake on, before any authentication, at servers and clients alike. Either 0: no limit.
  ///
  /// The transport answers pings itself (not websocketpp): at most one pong waits in the send queue;
  /// pings that arrive meanwhile are answered once it has left, with the payload of the most recent
  /// one (RFC 6455 §5.5.3). So a peer that pings and never reads holds at most one pong of ours.
  std::uint32_t control_frames_per_second = 4;
  std::uint32_t control_frame_burst = 16;

  /// connection::buffered_amount() is websocketpp's send queue: bytes accepted by send() and not yet
  /// handed to the socket, plus every byte (header included) of the pings and pongs the transport
  /// queued, plus the payload of a close frame once closing (its 2-6 header bytes are the only ones
  /// not counted). The one write in progress is not counted (websocketpp hands the whole queue
  /// to it at once), so a stalled peer holds at most that write plus the queue: bound the queue (the
  /// caller's policy, or outbound_hard_limit_bytes) and memory per connection stays below about
  /// twice the bound.
  ///
  /// connection_handler::on_drain is delivered once each time a connection's buffered_amount()
  /// falls to or below this mark after a send() left it above. Polled every drain_poll_interval while
  /// some connection is above the mark or has a pong waiting for the previous one to leave
  /// (websocketpp reports no write completions).
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
  /// send_status::closed. A ping or pong that would take it above the limit closes it the same way
  /// instead of being queued.
  std::size_t outbound_hard_limit_bytes = 0;
};

}  // namespace citrus::wspp
