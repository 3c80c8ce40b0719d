#pragma once
// Private to citrus::wspp: what the server and client engines need from an event_loop.
#include <cstdint>

#include <asio/io_context.hpp>

#include "citrus/core/logger.hpp"
#include "citrus/wspp/event_loop.hpp"

namespace citrus::wspp::detail {

struct loop_access {
  static asio::io_context& io(event_loop& loop) noexcept;
  static logger& log(event_loop& loop) noexcept;
  /// Connection ids are unique per loop: one handler may serve several servers and clients.
  static std::uint64_t next_connection_id(event_loop& loop) noexcept;
};

}  // namespace citrus::wspp::detail
