#include "citrus/memory/loopback_transport.hpp"

namespace citrus::memory {

// The ring's size is always a power of two (8, then doubled): indexes wrap with a mask.
void loopback_connection::inbox::push(std::string_view text) {
  if (count == slots.size()) {  // grow: unroll the ring so head is 0
    std::vector<std::string> bigger(slots.empty() ? 8 : slots.size() * 2);
    for (std::size_t i = 0; i < count; ++i) bigger[i].swap(slots[(head + i) & (slots.size() - 1)]);
    slots.swap(bigger);
    head = 0;
  }
  std::string& slot = slots[(head + count) & (slots.size() - 1)];
  slot.clear();  // keeps the capacity: a plain copy once the slot has grown to the message size
  slot.append(text.data(), text.size());
  ++count;
  bytes += text.size();
}

void loopback_connection::inbox::take_front(std::string& into) {
  bytes -= slots[head].size();
  into.swap(slots[head]);  // trade buffers: both keep their capacity
  head = (head + 1) & (slots.size() - 1);
  --count;
}

send_status loopback_connection::send(std::string_view text) {
  if (state_ != state::open || peer_->state_ != state::open) return send_status::closed;
  peer_->inbox_.push(text);
  return send_status::ok;
}

std::size_t loopback_connection::buffered_amount() const noexcept { return peer_->inbox_.bytes; }

void loopback_connection::close(close_code code, std::string_view) {
  if (state_ != state::open) return;
  state_ = state::closing;
  close_code_ = code;
  inbox_.head = inbox_.count = inbox_.bytes = 0;  // the closing side reads nothing more
  if (peer_->state_ == state::open) {
    peer_->state_ = state::closing;
    peer_->close_code_ = code;
  }
}

loopback_transport::loopback_transport(connection_handler& server) : server_(server) {}
loopback_transport::~loopback_transport() = default;

loopback_connection& loopback_transport::connect(connection_handler& client, std::string remote_address) {
  auto server_end = std::unique_ptr<loopback_connection>(
      new loopback_connection(*this, connection_id{next_id_++}, remote_address, server_));
  auto client_end = std::unique_ptr<loopback_connection>(
      new loopback_connection(*this, connection_id{next_id_++}, "loopback-server", client));
  server_end->peer_ = client_end.get();
  client_end->peer_ = server_end.get();
  auto& result = *client_end;
  ends_.push_back(std::move(server_end));
  ends_.push_back(std::move(client_end));
  return result;
}

// One event for `end`, if it has one: open, then messages, then close.
bool loopback_transport::step(loopback_connection& end) {
  if (end.state_ == loopback_connection::state::closed) return false;
  if (!end.opened_) {
    end.opened_ = true;
    end.handler_.on_open(end);
    return true;
  }
  if (end.reading_ && end.inbox_.count > 0) {
    // Swap the message out of the ring before delivering it: the handler may send, and a send may
    // grow (reallocate) a ring. The swap trades buffers, so both keep their capacity; the buffer is
    // this end's own (handlers are never re-entered), so buffers do not wander between connections.
    end.inbox_.take_front(end.delivering_);
    end.handler_.on_message(end.id_, end.delivering_);
    if (end.inbox_.bytes <= low_water_ && end.peer_->state_ == loopback_connection::state::open)
      end.peer_->handler_.on_drain(end.peer_->id_);
    return true;
  }
  if (end.state_ == loopback_connection::state::closing && (end.inbox_.count == 0 || !end.reading_)) {
    end.state_ = loopback_connection::state::closed;
    end.handler_.on_close(end.id_);
    return true;
  }
  return false;
}

std::size_t loopback_transport::run(std::size_t max_events) {
  std::size_t delivered = 0;
  bool progress = true;
  while (progress && delivered < max_events) {
    progress = false;
    // Index loop: handlers may connect() new ends while we iterate.
    for (std::size_t i = 0; i < ends_.size() && delivered < max_events; ++i) {
      if (step(*ends_[i])) {
        ++delivered;
        progress = true;
      }
    }
  }
  return delivered;
}

}  // namespace citrus::memory
