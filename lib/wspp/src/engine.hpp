#pragma once
// Private to citrus::wspp: the websocketpp machinery shared by server.cpp and client.cpp, the only
// translation units that include websocketpp (it is slow to compile).
//
// Lifetime model. Every websocketpp connection carries a connection_slot (the config's
// connection_base) holding a shared_ptr to the engine that created it. websocketpp's pending
// operations hold their connection, and connections refer to their endpoint (its random generator,
// its handlers, which capture the engine's `this`), so the engine — and the endpoint inside it —
// stays alive until the last connection is gone, even after the public server/client object was
// destroyed. A destroyed server/client "detaches" its engine first: from then on no user callback
// runs and nothing is logged.
//
// Re-entrancy. websocketpp's terminate() can run the close/fail handlers synchronously (plain
// sockets). It is therefore never called from a path the user's handler can reach synchronously
// (connection::send/close): those paths post it to the loop instead.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <websocketpp/close.hpp>
#include <websocketpp/common/connection_hdl.hpp>
#include <websocketpp/concurrency/none.hpp>
#include <websocketpp/config/asio.hpp>
#include <websocketpp/config/asio_client.hpp>
#include <websocketpp/frame.hpp>
#include <websocketpp/http/request.hpp>
#include <websocketpp/logger/levels.hpp>
#include <websocketpp/logger/stub.hpp>
#include <websocketpp/processors/processor.hpp>
#include <websocketpp/utf8_validator.hpp>

#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "citrus/core/logger.hpp"
#include "citrus/core/transport.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "citrus/wspp/options.hpp"
#include "loop_access.hpp"

namespace citrus::wspp::detail {

// ---------------------------------------------------------------------------------------------
// websocketpp configuration

/// websocketpp's error log, forwarded to the injected logger at debug level ("fatal" at error).
/// Our own code logs the events that matter (opens, closes, failures) with stable names.
class elog_sink {
 public:
  elog_sink() = default;
  explicit elog_sink(websocketpp::log::channel_type_hint::value) {}
  elog_sink(websocketpp::log::level, websocketpp::log::channel_type_hint::value) {}

  void set_channels(websocketpp::log::level) {}
  void clear_channels(websocketpp::log::level) {}
  void write(websocketpp::log::level channel, const std::string& message) { write(channel, message.c_str()); }
  void write(websocketpp::log::level channel, const char* message) {
    if (sink_ == nullptr) return;
    const log_level level = channel == websocketpp::log::elevel::fatal ? log_level::error : log_level::debug;
    if (!sink_->enabled(level)) return;
    sink_->log(level, "wspp_internal",
               {field("channel", websocketpp::log::elevel::channel_name(channel)), field("detail", message)});
  }
  constexpr bool static_test(websocketpp::log::level) const { return true; }
  bool dynamic_test(websocketpp::log::level) { return sink_ != nullptr; }

  /// nullptr silences it (a detached engine's logger may be gone).
  void set_sink(logger* sink) noexcept { sink_ = sink; }

 private:
  logger* sink_ = nullptr;
};

/// Implemented by the engines: told when one of their connections is destroyed.
class slot_owner {
 public:
  virtual ~slot_owner() = default;
  virtual void connection_destroyed(std::uint64_t serial) noexcept = 0;
};

/// Citrus state carried inside every websocketpp connection (it is the config's connection_base).
struct connection_slot {
  connection_slot() = default;
  connection_slot(const connection_slot&) = delete;
  connection_slot& operator=(const connection_slot&) = delete;
  ~connection_slot() {
    if (owner && serial != 0) owner->connection_destroyed(serial);
  }

  std::shared_ptr<slot_owner> owner;  ///< keeps the engine (and its endpoint) alive
  std::uint64_t serial = 0;           ///< the engine's key for this connection; 0: not tracked
  std::uint64_t id = 0;               ///< citrus connection id, once on_open was delivered
  /// The link_table's citrus::connection from on_open until on_close (then nullptr): messages find
  /// their link without a lookup by id.
  citrus::connection* open_link = nullptr;
  std::string remote;                 ///< "ip:port"
  bool abandoned = false;             ///< ignore every further event (client: cancelled attempt)
};

template <class C>
connection_slot& slot(const std::shared_ptr<C>& con) noexcept {
  return *con;
}

/// websocketpp's HTTP request parser with one correction once the head is complete. websocketpp
/// picks its protocol processor from Sec-WebSocket-Version before any handler of ours runs: a missing
/// header picked the hixie-76 draft, whose read of 8 more bytes answered 500 when they were not there;
/// an unknown number got 400 listing drafts we refuse anyway. An upgrade that does not ask for exactly
/// "13" is therefore marked and relabelled 13: it reaches on_validate, which answers 426 with
/// Sec-WebSocket-Version: 13 (RFC 6455 §4.4), unless it lacks what every upgrade needs (400).
class upgrade_request : public websocketpp::http::parser::request {
 public:
  /// Hides request::consume: websocketpp calls it through the config's request_type.
  std::size_t consume(const char* buf, std::size_t len) {
    const std::size_t used = request::consume(buf, len);
    if (ready() && !checked_) {
      checked_ = true;
      if (websocketpp::processor::is_websocket_handshake(*this) && get_header("Sec-WebSocket-Version") != "13") {
        offered_version_13_ = false;
        replace_header("Sec-WebSocket-Version", "13");
      }
    }
    return used;
  }
  /// False for an upgrade that asked for another WebSocket version than 13, or for none.
  bool offered_version_13() const noexcept { return offered_version_13_; }

 private:
  bool checked_ = false;
  bool offered_version_13_ = true;
};

/// One of websocketpp's asio configs with our logger, our connection base, no extensions (never
/// permessage-deflate), no strands and no locks: one thread runs the loop and nothing else touches
/// websocketpp (event_loop::post is the only door in), so concurrency::none spares the mutex
/// lock/unlock pairs websocketpp takes several times per message.
template <class Base, class Request = typename Base::request_type>
struct wspp_config : Base {
  using type = wspp_config;
  using base = Base;
  using concurrency_type = websocketpp::concurrency::none;
  using request_type = Request;
  using response_type = typename Base::response_type;
  using message_type = typename Base::message_type;
  using con_msg_manager_type = typename Base::con_msg_manager_type;
  using endpoint_msg_manager_type = typename Base::endpoint_msg_manager_type;
  // No access log (websocketpp's per-frame channel, a cost on every message): the engines log the
  // events that matter through our logger. Its error log goes to elog_sink, i.e. that same logger.
  using alog_type = websocketpp::log::stub;
  using elog_type = elog_sink;
  using rng_type = typename Base::rng_type;

  struct transport_config : Base::transport_config {
    using concurrency_type = typename wspp_config::concurrency_type;
    using alog_type = websocketpp::log::stub;  // as above: no access log
    using elog_type = elog_sink;
    using request_type = typename wspp_config::request_type;
    using response_type = typename wspp_config::response_type;
    using socket_type = typename Base::transport_config::socket_type;
    static const bool enable_multithreading = false;
  };
  using transport_type = websocketpp::transport::asio::endpoint<transport_config>;
  using connection_base = connection_slot;

  // Never permessage-deflate (it ignores max_message_size while inflating). enable_extensions stays
  // on: with it off, websocketpp 0.8.2 clients fail every handshake ("Extensions are disabled").
  static_assert(std::is_same_v<typename Base::permessage_deflate_type,
                               websocketpp::extensions::permessage_deflate::disabled<
                                   typename Base::permessage_deflate_config>>);

  static const bool enable_multithreading = false;
  // Compile-time defaults; the engines set the runtime values from the options.
  static const std::size_t max_message_size = 64 * 1024;
  static const std::size_t max_http_body_size = 64 * 1024;
};

using plain_server_config = wspp_config<websocketpp::config::asio, upgrade_request>;
using tls_server_config = wspp_config<websocketpp::config::asio_tls, upgrade_request>;
using plain_client_config = wspp_config<websocketpp::config::asio_client>;
using tls_client_config = wspp_config<websocketpp::config::asio_tls_client>;

template <class Config>
inline constexpr bool is_tls_v =
    std::is_same_v<typename Config::transport_config::socket_type, websocketpp::transport::asio::tls_socket::endpoint>;

// ---------------------------------------------------------------------------------------------
// helpers

/// "ip:port", "[v6]:port"; IPv4-mapped IPv6 addresses as IPv4.
inline std::string format_endpoint(const asio::ip::tcp::endpoint& endpoint) {
  asio::ip::address address = endpoint.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  std::string text = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return text + ":" + std::to_string(endpoint.port());
}

/// A close reason fits in 123 bytes; cut at a UTF-8 character boundary.
inline std::string close_reason(std::string_view reason) {
  constexpr std::size_t max_reason = 123;
  if (reason.size() > max_reason) {
    std::size_t n = max_reason;
    while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0U) == 0x80U) --n;
    reason = reason.substr(0, n);
  }
  return std::string(reason);
}

/// Header names and values must not be able to inject lines.
inline bool is_safe_header(std::string_view name, std::string_view value) noexcept {
  if (name.empty()) return false;
  for (char c : name)
    if (c == ':' || c == '\r' || c == '\n' || c == ' ' || c == '\t' || c == '\0') return false;
  for (char c : value)
    if (c == '\r' || c == '\n' || c == '\0') return false;
  return true;
}

inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

/// Standalone Asio reports system errors in its own "asio.system" category, which does not compare
/// equal to std::errc values: hand callers the same value in std::system_category.
inline std::error_code portable(std::error_code ec) noexcept {
  if (ec && ec.category() == asio::system_category()) return {ec.value(), std::system_category()};
  return ec;
}

inline std::int64_t as_number(std::uint64_t value) noexcept { return static_cast<std::int64_t>(value); }

/// Well-formed UTF-8 (RFC 3629, as websocketpp checks it). Eight bytes at a time while they are
/// ASCII, which is what nearly every Citrus frame is; websocketpp's byte-wise validator otherwise.
inline bool is_valid_utf8(std::string_view text) noexcept {
  const char* p = text.data();
  const char* end = p + text.size();
  for (; end - p >= 8; p += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, p, sizeof word);
    if ((word & 0x8080808080808080ULL) != 0) break;
  }
  while (p != end && static_cast<unsigned char>(*p) < 0x80U) ++p;
  if (p == end) return true;
  websocketpp::utf8_validator::validator validator;
  return validator.decode(p, end) && validator.complete();
}

/// TLS 1.2+, no compression, no renegotiation. Errors are returned, never thrown.
inline std::error_code harden_tls(asio::ssl::context& context) {
  std::error_code ec;
  context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                          asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                          asio::ssl::context::no_tlsv1_1 | asio::ssl::context::no_compression,
                      ec);
  if (ec) return ec;
  SSL_CTX_set_options(context.native_handle(), SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION) != 1)
    return std::make_error_code(std::errc::protocol_not_supported);
  return {};
}

// ---------------------------------------------------------------------------------------------
// connection table: what the server and the client share

struct link_counters {
  std::uint64_t opened = 0;
  std::uint64_t closed = 0;
  std::uint64_t unsupported_data = 0;
  std::uint64_t pong_timeouts = 0;
  std::uint64_t slow_consumers = 0;
  std::uint64_t control_rate_limited = 0;
  std::uint64_t handler_exceptions = 0;
};

/// `n` bytes from OpenSSL's CSPRNG (ping nonces, client masking keys). RAND_bytes does not fail once
/// seeded, which it is on Linux; should it fail, the clock stands in (a guessable nonce only lets a
/// peer answer a ping it did not read, a guessable masking key is what RFC 6455 §10.3 guards against
/// for browsers, not for Citrus's own clients).
inline void random_bytes(unsigned char* out, std::size_t n) noexcept {
  if (RAND_bytes(out, static_cast<int>(n)) == 1) return;
  auto seed = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  for (std::size_t i = 0; i < n; ++i, seed = seed * 6364136223846793005ULL + 1442695040888963407ULL)
    out[i] = static_cast<unsigned char>(seed >> 56);
}

/// Bytes on the wire of a control frame with `payload_size` (at most 125) bytes of payload: 2 header
/// bytes, plus the 4-byte masking key when a client sends it.
constexpr std::size_t control_frame_size(bool from_server, std::size_t payload_size) noexcept {
  return 2 + (from_server ? 0 : 4) + payload_size;
}

/// The open connections of one engine, as citrus::connection objects, and the delivery of their
/// events to the connection_handler: guarded callbacks, pings, drains, close bookkeeping.
///
/// Control frames. websocketpp would answer every ping with a pong through its unbounded send queue,
/// and counts only payload bytes there (an empty pong counts 0): a peer that pings and never reads
/// grew a server by ~100 MiB in 3 s. So websocketpp answers nothing (the ping handler returns false)
/// and the link writes every ping and pong itself, each as one prepared message whose payload is the
/// whole frame, so that websocketpp's count (buffered_amount(), hence outbound_hard_limit_bytes and
/// the callers' bounds) includes every byte of it. Inbound pings and pongs are rate limited
/// (connection_options::control_frames_per_second). At most one of our pongs waits in the queue: pings
/// that arrive meanwhile are answered once it has left, with the payload of the most recent one
/// (RFC 6455 §5.5.3). Our own pings carry a random nonce and only a pong echoing it counts, so a peer
/// that never reads cannot hold off the pong timeout with unsolicited pongs.
///
/// Writes. websocketpp's send() queues the message and posts a handler that starts the socket write,
/// so every message queued by one handler leaves in one write. A message sent from a posted task or
/// a timer callback (e.g. citrus-hub's routing batch) would then wait behind the I/O completions of
/// the loop's next poll: the write starts as soon as the task returns instead (after_task_run), still
/// one write per connection for all the messages the task queued.
template <class Endpoint>
class link_table final : public after_task {
 public:
  using con_type = typename Endpoint::connection_type;
  using con_ptr = typename Endpoint::connection_ptr;
  using message_ptr = typename Endpoint::message_ptr;

  class link final : public citrus::connection {
   public:
    link(link_table& table, connection_id id, std::string remote, const con_ptr& con)
        : con_(con), table_(table), id_(id), remote_(std::move(remote)) {}

    connection_id id() const noexcept override { return id_; }
    std::string_view remote_address() const noexcept override { return remote_; }

    /// websocketpp's queue: data payloads, our whole ping and pong frames, and (once closing) the
    /// payload of the close frame.
    std::size_t buffered_amount() const noexcept override {
      const con_ptr con = con_.lock();
      return con ? con->get_buffered_amount() : 0;
    }

    send_status send(std::string_view text) override {
      if (closing_) return send_status::closed;
      const con_ptr con = con_.lock();
      if (!con) return send_status::closed;
      const connection_options& options = table_.options_;
      try {
        if (options.outbound_hard_limit_bytes != 0 &&
            con->get_buffered_amount() + text.size() > options.outbound_hard_limit_bytes) {
          close_slow_consumer(*con);
          return send_status::closed;
        }
        const std::error_code ec = con->is_server() ? send_prepared(*con, text)
                                                    : con->send(text.data(), text.size(), websocketpp::frame::opcode::text);
        if (ec) {
          // Closing (the peer started a close handshake, or a read failed): a normal race.
          if (con->get_state() != websocketpp::session::state::open) return send_status::closed;
          table_.log_->log(log_level::error, "send_failed",
                           {field("connection", as_number(id_.value())), field("error", ec.message())});
          close(close_code::internal_error, "send failed");
          return send_status::closed;
        }
        queued_total_ += text.size();  // websocketpp counts the payload: see pong_in_queue()
        if (!drain_armed_ && con->get_buffered_amount() > options.drain_low_water_bytes) table_.arm_drain(*this);
        if (!write_armed_ && loop_access::in_task(table_.loop_)) table_.arm_write(*this);
        return send_status::ok;
      } catch (const std::exception& e) {
        table_.log_->log(log_level::error, "send_failed",
                         {field("connection", as_number(id_.value())), field("error", e.what())});
        close(close_code::internal_error, "send failed");
        return send_status::closed;
      }
    }

    void close(close_code code, std::string_view reason) override {
      if (closing_) return;
      closing_ = true;
      awaiting_pong_ = false;
      pong_pending_ = false;
      const con_ptr con = con_.lock();
      if (!con) return;
      std::error_code ec;
      try {
        con->close(static_cast<websocketpp::close::status::value>(code), close_reason(reason), ec);
      } catch (const std::exception&) {
        ec = std::make_error_code(std::errc::not_enough_memory);
      }
      // Could not even queue a close frame while open: drop the TCP connection instead.
      if (ec && con->get_state() == websocketpp::session::state::open) table_.terminate_later(con, ec);
    }

   private:
    friend class link_table;

    /// A server frame (unmasked) built here and handed to websocketpp as prepared: one message and
    /// one copy of the payload, where con->send(text) makes two of each and validates the UTF-8
    /// byte by byte. The same checks: text must be UTF-8 (else websocketpp's invalid_payload).
    static std::error_code send_prepared(con_type& con, std::string_view text) {
      if (!is_valid_utf8(text))
        return websocketpp::processor::error::make_error_code(websocketpp::processor::error::invalid_payload);
      const message_ptr msg = con.get_message(websocketpp::frame::opcode::text, text.size());
      if (!msg) return websocketpp::error::make_error_code(websocketpp::error::no_outgoing_buffers);
      msg->get_raw_payload().assign(text.data(), text.size());
      const websocketpp::frame::basic_header header(websocketpp::frame::opcode::text, text.size(), true, false);
      msg->set_header(websocketpp::frame::prepare_header(header, websocketpp::frame::extended_header(text.size())));
      msg->set_prepared(true);
      return con.send(msg);
    }

    void close_slow_consumer(con_type& con) {
      ++table_.counters_.slow_consumers;
      table_.log_->log(log_level::warn, "slow_consumer_closed",
                       {field("connection", as_number(id_.value())),
                        field("buffered", static_cast<std::int64_t>(con.get_buffered_amount()))});
      close(close_code::slow_consumer, "outbound buffer full");
    }

    /// Queues one control frame (at most 125 bytes of payload) as a prepared message with an empty
    /// header and the whole frame as its payload: websocketpp counts payloads only, so it counts all
    /// of it. A client masks it (RFC 6455 §5.3). Over outbound_hard_limit_bytes the connection is
    /// closed as a slow consumer instead. Returns whether the frame was queued.
    bool queue_control(con_type& con, websocketpp::frame::opcode::value op, std::string_view payload) {
      const bool from_server = con.is_server();
      const std::size_t size = control_frame_size(from_server, payload.size());
      const std::size_t limit = table_.options_.outbound_hard_limit_bytes;
      if (limit != 0 && con.get_buffered_amount() + size > limit) {
        close_slow_consumer(con);
        return false;
      }
      const message_ptr msg = con.get_message(op, size);
      if (!msg) return false;
      std::string& frame = msg->get_raw_payload();
      frame.push_back(static_cast<char>(0x80U | static_cast<unsigned>(op)));  // FIN, no RSV bits
      frame.push_back(static_cast<char>((from_server ? 0x00U : 0x80U) | payload.size()));
      if (from_server) {
        frame.append(payload.data(), payload.size());
      } else {
        unsigned char key[4];
        random_bytes(key, sizeof key);
        frame.append(reinterpret_cast<const char*>(key), sizeof key);
        for (std::size_t i = 0; i < payload.size(); ++i)
          frame.push_back(static_cast<char>(static_cast<unsigned char>(payload[i]) ^ key[i % 4]));
      }
      msg->set_prepared(true);
      if (con.send(msg)) return false;  // closing: nothing more goes out anyway
      queued_total_ += size;
      return true;
    }

    /// Whether our last pong is still in websocketpp's queue (FIFO): the bytes taken off the queue
    /// since it was queued (everything queued minus what is still there) have not reached its end.
    /// Exact because every message we queue is counted in full by websocketpp, pongs included.
    bool pong_in_queue(const con_type& con) const noexcept {
      const std::size_t buffered = con.get_buffered_amount();
      return buffered <= queued_total_ && queued_total_ - buffered < pong_end_;
    }

    /// Answers a ping now, or once our previous pong has left the queue (with the latest payload).
    void answer_ping(con_type& con, std::string_view payload) {
      if (pong_in_queue(con)) {
        pending_pong_.assign(payload.data(), payload.size());
        pong_pending_ = true;
        table_.watch(*this);
        return;
      }
      if (queue_control(con, websocketpp::frame::opcode::pong, payload)) pong_end_ = queued_total_;
    }

    /// From the poll: the pending answer goes out once the previous pong has left the queue.
    void flush_pending_pong(con_type& con) {
      if (!pong_pending_ || pong_in_queue(con)) return;
      pong_pending_ = false;
      const std::string payload = std::move(pending_pong_);
      pending_pong_.clear();
      if (queue_control(con, websocketpp::frame::opcode::pong, payload)) pong_end_ = queued_total_;
    }

    /// Generic cell rate algorithm: one timestamp per link, no timer. False: over the rate.
    bool admit_control(std::chrono::steady_clock::time_point now, std::chrono::nanoseconds interval,
                       std::chrono::nanoseconds tolerance) noexcept {
      if (control_tat_ < now) control_tat_ = now;
      if (control_tat_ - now > tolerance) return false;
      control_tat_ += interval;
      return true;
    }

    std::weak_ptr<con_type> con_;
    link_table& table_;
    connection_id id_;
    std::string remote_;
    bool closing_ = false;  ///< close() was called: nothing more is sent or delivered
    bool awaiting_pong_ = false;
    bool drain_armed_ = false;
    bool pong_pending_ = false;  ///< a ping waits for our previous pong to leave the queue
    bool watched_ = false;       ///< in watched_: polled for its drain or its pending pong
    bool write_armed_ = false;   ///< in write_ids_: its write starts when the running task returns
    /// Bytes we handed to websocketpp's queue since the connection opened, as it counts them.
    std::uint64_t queued_total_ = 0;
    std::uint64_t pong_end_ = 0;  ///< queued_total_ just after our last pong was queued (0: none)
    std::string pending_pong_;    ///< the payload to answer with once pong_in_queue() is false
    std::string ping_nonce_;      ///< the payload of our outstanding ping
    std::chrono::steady_clock::time_point control_tat_{};  ///< when the control-frame bucket is full again
    std::chrono::steady_clock::time_point ping_sent_{};
    std::chrono::steady_clock::time_point next_ping_{};
  };

  link_table(event_loop& loop, connection_handler& handler, const connection_options& options, logger& log)
      : loop_(loop), handler_(handler), options_(options), log_(&log) {}
  ~link_table() {
    if (after_task_armed_) loop_access::cancel_after_task(loop_, this);
  }
  link_table(const link_table&) = delete;
  link_table& operator=(const link_table&) = delete;

  /// Starts the socket writes of the links that send() armed during the task that just returned.
  void after_task_run() noexcept override {
    after_task_armed_ = false;
    std::swap(write_ids_, writing_ids_);
    for (const std::uint64_t id : writing_ids_) {
      link* l = find(id);
      if (l == nullptr) continue;
      l->write_armed_ = false;
      if (l->closing_ || detached_) continue;
      if (const con_ptr con = l->con_.lock()) {
        try {
          con->write_frame();  // websocketpp's own posted write_frame then finds nothing to do
        } catch (...) {
          // The queued messages stay queued: websocketpp's posted write_frame sends them.
        }
      }
    }
    writing_ids_.clear();
  }

  std::size_t size() const noexcept { return links_.size(); }
  const link_counters& counters() const noexcept { return counters_; }
  /// The only open link (the client has at most one), or nullptr.
  link* first() noexcept { return links_.empty() ? nullptr : links_.begin()->second.get(); }
  const link* first() const noexcept { return links_.empty() ? nullptr : links_.begin()->second.get(); }
  bool is_closing(const link& l) const noexcept { return l.closing_; }

  /// The handshake completed: create the citrus::connection and deliver on_open.
  void open(const con_ptr& con, std::string remote) {
    if (detached_) return;
    const connection_id id(loop_access::next_connection_id(loop_));
    slot(con).id = id.value();
    auto owned = std::make_unique<link>(*this, id, std::move(remote), con);
    link& l = *owned;
    l.next_ping_ = std::chrono::steady_clock::now() + options_.ping_interval;
    links_.emplace(id.value(), std::move(owned));
    slot(con).open_link = &l;
    ++counters_.opened;
    log_->log(log_level::info, "connection_opened",
              {field("connection", as_number(id.value())), field("remote", l.remote_)});
    if (options_.ping_interval.count() > 0 && !ping_timer_.active()) {
      const auto tick = std::max(std::chrono::milliseconds(1),
                                 std::min(options_.ping_interval, options_.pong_timeout) / 4);
      ping_timer_ = loop_.schedule_every(tick, [this] { ping_tick(); });
    }
    if (!guarded("on_open", id.value(), [&] { handler_.on_open(l); })) l.close(close_code::internal_error, "internal error");
  }

  void message(const con_ptr& con, const message_ptr& msg) {
    if (detached_ || !msg) return;
    link* l = static_cast<link*>(slot(con).open_link);
    if (l == nullptr || l->closing_) return;
    if (msg->get_opcode() != websocketpp::frame::opcode::text) {
      ++counters_.unsupported_data;
      log_->log(log_level::info, "binary_message_rejected", {field("connection", as_number(l->id_.value()))});
      l->close(close_code::unsupported_data, "binary messages are not supported");
      return;
    }
    const std::uint64_t id = l->id_.value();
    if (!guarded("on_message", id, [&] { handler_.on_message(l->id_, msg->get_payload()); })) {
      if (link* again = find(id)) again->close(close_code::internal_error, "internal error");
    }
  }

  /// websocketpp's ping handler. Always false: websocketpp answers nothing by itself, the link does
  /// (see the class comment).
  bool ping(const con_ptr& con, std::string_view payload) noexcept {
    link* l = static_cast<link*>(slot(con).open_link);
    if (l == nullptr || l->closing_ || detached_) return false;
    try {
      if (admit_control(*l)) l->answer_ping(*con, payload);
    } catch (const std::exception&) {
      l->close(close_code::internal_error, "internal error");  // out of memory: nothing to answer with
    }
    return false;
  }

  /// websocketpp's pong handler: the answer to our outstanding ping ends the wait for it; any other
  /// pong (unsolicited, or a stale payload) only counts against the control-frame rate.
  void pong(const con_ptr& con, std::string_view payload) noexcept {
    link* l = static_cast<link*>(slot(con).open_link);
    if (l == nullptr || l->closing_ || detached_) return;
    if (l->awaiting_pong_ && payload == l->ping_nonce_) {
      l->awaiting_pong_ = false;
      return;
    }
    admit_control(*l);
  }

  /// websocketpp's close handler: deliver on_close, then forget the link.
  void closed(const con_ptr& con) {
    if (detached_) return;
    const std::uint64_t id = slot(con).id;
    link* l = find(id);
    if (l == nullptr) return;
    l->closing_ = true;
    ++counters_.closed;
    log_->log(log_level::info, "connection_closed",
              {field("connection", as_number(id)),
               field("local_code", static_cast<std::int64_t>(con->get_local_close_code())),
               field("remote_code", static_cast<std::int64_t>(con->get_remote_close_code()))});
    guarded("on_close", id, [&] { handler_.on_close(l->id_); });
    slot(con).open_link = nullptr;
    links_.erase(id);
    if (links_.empty()) {
      ping_timer_.cancel();
      poll_timer_.cancel();
      watched_.clear();
    }
  }

  void close_all(close_code code, std::string_view reason) {
    for (auto& entry : links_) entry.second->close(code, reason);
  }

  /// The owner is going away: drop every connection now and deliver on_close for each (after which
  /// no callback runs again). Do not call from inside one of this table's callbacks.
  void detach() noexcept {
    if (detached_) return;
    detached_ = true;
    ping_timer_.cancel();
    poll_timer_.cancel();
    write_ids_.clear();
    auto links = std::move(links_);
    links_.clear();
    for (auto& entry : links) {
      link& l = *entry.second;
      l.closing_ = true;
      if (const con_ptr con = l.con_.lock()) {
        slot(con).open_link = nullptr;
        try {
          con->terminate(std::error_code());  // its close handler sees detached_ and returns
        } catch (...) {
          // Nothing left to do: the socket goes with the connection.
        }
      }
      ++counters_.closed;
      guarded("on_close", entry.first, [&] { handler_.on_close(l.id_); });
    }
    log_ = &null_log_;
  }

  /// Like detach() for a table with no open link left (a finished client attempt): no callback runs
  /// again and nothing is logged. Safe from inside this table's on_close.
  void retire() noexcept {
    detached_ = true;
    ping_timer_.cancel();
    poll_timer_.cancel();
    log_ = &null_log_;
  }

  /// terminate() may call handlers synchronously: run it from the loop instead.
  void terminate_later(const con_ptr& con, std::error_code ec) {
    loop_.post([con, ec] { con->terminate(ec); });
  }

 private:
  link* find(std::uint64_t id) noexcept {
    if (id == 0) return nullptr;
    auto it = links_.find(id);
    return it == links_.end() ? nullptr : it->second.get();
  }

  /// Runs a handler callback; nothing it throws escapes. Returns false if it threw.
  template <class F>
  bool guarded(const char* callback, std::uint64_t id, F&& f) noexcept {
    try {
      f();
      return true;
    } catch (const std::exception& e) {
      ++counters_.handler_exceptions;
      log_->log(log_level::error, "handler_threw",
                {field("callback", callback), field("connection", as_number(id)), field("error", e.what())});
    } catch (...) {
      ++counters_.handler_exceptions;
      log_->log(log_level::error, "handler_threw",
                {field("callback", callback), field("connection", as_number(id)), field("error", "unknown exception")});
    }
    return false;
  }

  void ping_tick() {
    const auto now = std::chrono::steady_clock::now();
    for (auto& entry : links_) {
      link& l = *entry.second;
      if (l.closing_) continue;
      const con_ptr con = l.con_.lock();
      if (!con) continue;
      if (l.awaiting_pong_) {
        if (now - l.ping_sent_ >= options_.pong_timeout) {
          ++counters_.pong_timeouts;
          log_->log(log_level::warn, "pong_timeout",
                    {field("connection", as_number(entry.first)), field("remote", l.remote_)});
          l.close(close_code::policy_violation, "pong timeout");
        }
        continue;
      }
      if (now >= l.next_ping_) {
        unsigned char nonce[8];
        random_bytes(nonce, sizeof nonce);
        try {
          l.ping_nonce_.assign(reinterpret_cast<const char*>(nonce), sizeof nonce);
          if (l.queue_control(*con, websocketpp::frame::opcode::ping, l.ping_nonce_)) {
            l.awaiting_pong_ = true;
            l.ping_sent_ = now;
          }
        } catch (const std::exception&) {
          // Out of memory: try again at the next interval.
        }
        l.next_ping_ = now + options_.ping_interval;
      }
    }
  }

  void arm_write(link& l) {
    write_ids_.push_back(l.id_.value());
    l.write_armed_ = true;
    if (!after_task_armed_) {
      loop_access::run_after_task(loop_, this);
      after_task_armed_ = true;
    }
  }

  void arm_drain(link& l) {
    l.drain_armed_ = true;
    watch(l);
  }

  /// Polls `l` every drain_poll_interval until its drain is delivered and its pending pong is sent
  /// (websocketpp reports no write completions).
  void watch(link& l) {
    if (l.watched_) return;
    l.watched_ = true;
    watched_.push_back(l.id_.value());
    if (!poll_timer_.active())
      poll_timer_ = loop_.schedule_every(options_.drain_poll_interval, [this] { poll_tick(); });
  }

  void poll_tick() {
    std::vector<std::uint64_t> ids;
    ids.swap(watched_);
    for (const std::uint64_t id : ids) {
      link* l = find(id);
      if (l == nullptr) continue;
      l->watched_ = false;
      const con_ptr con = l->con_.lock();
      if (l->closing_ || !con) {
        l->drain_armed_ = false;
        l->pong_pending_ = false;
        continue;
      }
      try {
        l->flush_pending_pong(*con);
      } catch (const std::exception&) {
        l->close(close_code::internal_error, "internal error");
        continue;
      }
      if (l->drain_armed_ && con->get_buffered_amount() <= options_.drain_low_water_bytes) {
        l->drain_armed_ = false;
        guarded("on_drain", id, [&] { handler_.on_drain(l->id_); });  // may send, and watch it again
        if (detached_) return;
      }
      if (!l->closing_ && (l->drain_armed_ || l->pong_pending_)) watch(*l);
    }
    if (watched_.empty()) poll_timer_.cancel();
  }

  /// Takes one token from `l`'s control-frame bucket; over the rate, closes it (4008) and says no.
  bool admit_control(link& l) {
    if (options_.control_frames_per_second == 0 || options_.control_frame_burst == 0) return true;
    const std::chrono::nanoseconds interval = std::chrono::nanoseconds(std::chrono::seconds(1)) / options_.control_frames_per_second;
    if (l.admit_control(std::chrono::steady_clock::now(), interval, interval * (options_.control_frame_burst - 1)))
      return true;
    ++counters_.control_rate_limited;
    log_->log(log_level::warn, "control_frames_rate_limited",
              {field("connection", as_number(l.id_.value())), field("remote", l.remote_)});
    l.close(close_code::rate_limited, "control frame rate exceeded");
    return false;
  }

  event_loop& loop_;
  connection_handler& handler_;
  const connection_options options_;
  null_logger null_log_;
  logger* log_;
  bool detached_ = false;
  std::map<std::uint64_t, std::unique_ptr<link>> links_;
  std::vector<std::uint64_t> watched_;  ///< links polled by poll_tick (drain or pending pong)
  std::vector<std::uint64_t> write_ids_;    ///< links whose write starts when the running task returns
  std::vector<std::uint64_t> writing_ids_;  ///< the same, being started (kept: no allocation per task)
  bool after_task_armed_ = false;
  timer ping_timer_;
  timer poll_timer_;
  link_counters counters_;
};

}  // namespace citrus::wspp::detail
