#pragma once
/// An in-memory, single-threaded transport: a "server" connection_handler (a hub, a backend gateway)
/// and any number of client handlers, joined by pairs of loopback connections. Nothing moves until
/// run() is called, so tests decide exactly when messages are delivered, and can stop a side from
/// reading to simulate a slow consumer. It keeps the promises of citrus/core/transport.hpp.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/transport.hpp"

namespace citrus::memory {

class loopback_transport;

/// One end of a loopback pair.
class loopback_connection final : public citrus::connection {
 public:
  connection_id id() const noexcept override { return id_; }
  send_status send(std::string_view text) override;
  std::size_t buffered_amount() const noexcept override;
  void close(close_code code, std::string_view reason) override;
  std::string_view remote_address() const noexcept override { return remote_; }

  /// Stops (or resumes) delivering messages *to* this end: its peer's sends pile up.
  void set_reading(bool reading) noexcept { reading_ = reading; }
  bool is_open() const noexcept { return state_ == state::open; }
  /// The close code this end saw (sent by either side), once closed.
  close_code closed_with() const noexcept { return close_code_; }
  loopback_connection& peer() noexcept { return *peer_; }

 private:
  friend class loopback_transport;
  enum class state { open, closing, closed };
  loopback_connection(loopback_transport& owner, connection_id id, std::string remote, connection_handler& handler)
      : owner_(owner), id_(id), remote_(std::move(remote)), handler_(handler) {}

  /// A ring of reusable strings: no allocation per message once warm.
  struct inbox {
    std::vector<std::string> slots;
    std::size_t head = 0, count = 0, bytes = 0;
    void push(std::string_view text);
    /// Moves the oldest message into `into`.
    void take_front(std::string& into);
  };

  loopback_transport& owner_;
  connection_id id_;
  std::string remote_;
  connection_handler& handler_;
  loopback_connection* peer_ = nullptr;
  inbox inbox_;  ///< messages sent *to* this end, not yet delivered
  /// The message being delivered to this end. It trades buffers with the ring's slots, so the few
  /// buffers of one end soon all have the capacity of its largest message: no allocation after that.
  std::string delivering_;
  bool reading_ = true;
  bool opened_ = false;       ///< on_open delivered
  state state_ = state::open;
  close_code close_code_ = close_code::normal;
};

class loopback_transport {
 public:
  explicit loopback_transport(connection_handler& server);
  ~loopback_transport();
  loopback_transport(const loopback_transport&) = delete;
  loopback_transport& operator=(const loopback_transport&) = delete;

  /// Opens a connection from `client`. Both on_open events are delivered by the next run().
  /// Returns the client's end (its peer() is the server's end).
  loopback_connection& connect(connection_handler& client, std::string remote_address = "127.0.0.1:40000");

  /// Delivers pending events (opens, messages, drains, closes) until none is left or `max_events`.
  /// Returns how many were delivered.
  std::size_t run(std::size_t max_events = SIZE_MAX);

  /// Bytes below which a reader's drain is reported to the sender (default 0: fully drained).
  void set_low_water_mark(std::size_t bytes) noexcept { low_water_ = bytes; }

 private:
  friend class loopback_connection;
  bool step(loopback_connection& end);
  connection_handler& server_;
  std::vector<std::unique_ptr<loopback_connection>> ends_;
  std::uint64_t next_id_ = 1;
  std::size_t low_water_ = 0;
};

/// A client handler that records what it receives (for tests and examples).
class recording_client final : public citrus::connection_handler {
 public:
  void on_open(connection& conn) override { conn_ = &conn; opened = true; }
  void on_message(connection_id, std::string_view text) override { messages.emplace_back(text); }
  void on_close(connection_id) override { closed = true; conn_ = nullptr; }
  /// Sends through the open connection (false if not open).
  bool send(std::string_view text) { return conn_ && conn_->send(text) == send_status::ok; }
  std::vector<std::string> messages;
  bool opened = false;
  bool closed = false;

 private:
  connection* conn_ = nullptr;
};

}  // namespace citrus::memory
