#pragma once
// Private to citrus::wspp: what the server and client engines need from an event_loop.
#include <cstdint>
#include <memory>

#include <asio/io_context.hpp>

#include "citrus/core/logger.hpp"
#include "citrus/wspp/event_loop.hpp"

namespace citrus::wspp::detail {

/// Something to finish as soon as the posted task (or timer callback) that is running returns,
/// before the loop polls for I/O again. The engines use it to start, at the end of a task, the socket
/// writes of the messages send() queued during it (link_table::after_task_run): websocketpp would
/// start them from a handler of its own, queued behind the I/O that the next poll completes, so
/// a message routed by a task (citrus-hub routes in batches from a posted task) would wait for the
/// next messages to be read and handled before leaving.
class after_task {
 public:
  virtual void after_task_run() noexcept = 0;

 protected:
  ~after_task() = default;
};

struct loop_access {
  static asio::io_context& io(event_loop& loop) noexcept;
  /// An event_loop on the embedder's io_context (asio_interop.hpp).
  static std::unique_ptr<event_loop> adopt(asio::io_context& io, logger& log);
  static logger& log(event_loop& loop) noexcept;
  /// Connection ids are unique per loop: one handler may serve several servers and clients.
  static std::uint64_t next_connection_id(event_loop& loop) noexcept;

  /// True while a task posted to `loop`, or one of its timer callbacks, runs on this thread.
  static bool in_task(event_loop& loop) noexcept;
  /// Calls who->after_task_run() once the running task returns. Call only while in_task(loop), at
  /// most once per task for a given `who`.
  static void run_after_task(event_loop& loop, after_task* who);
  /// Forgets a pending call for `who` (it is being destroyed).
  static void cancel_after_task(event_loop& loop, after_task* who) noexcept;
};

}  // namespace citrus::wspp::detail
