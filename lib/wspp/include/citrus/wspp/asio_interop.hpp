#pragma once
/// citrus::wspp on an io_context the embedder owns — opt in by including this header, the only one
/// of citrus::wspp that includes Asio. It needs the standalone Asio citrus::wspp was built with
/// (Debian's libasio-dev) and ASIO_STANDALONE defined, as for any standalone-Asio program.
///
///     asio::io_context io;                                   // the embedder's
///     auto loop = citrus::wspp::adopt_io_context(io, log);
///     citrus::wspp::server server(*loop, handler, options, log);
///     server.listen();
///     io.run();                                              // or run_for / poll, on one thread
///
/// The threading rules of event_loop.hpp hold unchanged: everything of this loop runs on the one
/// thread that runs `io`, and post() is the door from other threads. event_loop::run(), poll() and
/// stop() act on `io` itself (stop() stops the embedder's context too), and the loop keeps `io` from
/// running out of work while it exists.
///
/// Shutting down: the loop does not own `io`, so what it has pending there must finish before it is
/// destroyed. Stop the servers (server::stop()) and clients, destroy them, cancel timers, then run
/// `io` until it is idle (e.g. poll() until it returns 0) and only then destroy the loop; `io` must
/// outlive the loop.
#ifndef ASIO_STANDALONE
#error "citrus/wspp/asio_interop.hpp works with standalone Asio only: define ASIO_STANDALONE"
#endif
#include <memory>

#include <asio/io_context.hpp>

#include "citrus/core/logger.hpp"
#include "citrus/wspp/event_loop.hpp"

namespace citrus::wspp {

/// An event_loop whose servers, clients, timers and posted tasks run on `io`. `log` as for
/// event_loop(logger&). Both must outlive the loop.
std::unique_ptr<event_loop> adopt_io_context(asio::io_context& io, logger& log);

}  // namespace citrus::wspp
