// citrus::wspp on an io_context the embedder owns (citrus/wspp/asio_interop.hpp): the only test
// translation unit that includes Asio. The test thread plays the embedder: it runs `io` itself.
#include <doctest/doctest.h>

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "citrus/wspp/asio_interop.hpp"
#include "harness.hpp"

namespace citrus::wspp::test {
namespace {

/// Runs the embedder's context until `done()` or the timeout; returns done().
template <class Pred>
bool run_io_until(asio::io_context& io, Pred done, std::chrono::milliseconds timeout = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done() && std::chrono::steady_clock::now() < deadline) io.run_for(2ms);
  return done();
}

}  // namespace

TEST_CASE("asio interop: a server, a client, timers and posted tasks all run on the embedder's io_context") {
  asio::io_context io;
  memory::recording_logger log;
  auto loop = adopt_io_context(io, log);
  {
    recorder server_side;
    server_side.echo = true;
    server srv(*loop, server_side, quick_server(), log);
    auto port = srv.listen();
    REQUIRE(port);
    test_client client_side(*loop, log);
    REQUIRE(client_side.c.connect("ws://127.0.0.1:" + std::to_string(*port) + "/"));

    // Only the embedder's io runs: the loop's own run() is never called.
    REQUIRE(run_io_until(io, [&] { return client_side.is_open(); }));
    REQUIRE(client_side.c.connection()->send("over your io_context") == send_status::ok);
    REQUIRE(run_io_until(io, [&] { return client_side.rec.messages.size() == 1; }));
    CHECK(client_side.rec.messages[0] == "over your io_context");

    // Citrus timers and tasks interleave with the embedder's own handlers on the same context.
    std::string order;
    timer t = loop->schedule(1ms, [&] { order += "timer,"; });
    loop->post([&] { order += "citrus-task,"; });
    asio::post(io, [&] { order += "embedder-task,"; });
    REQUIRE(run_io_until(io, [&] { return order.size() == std::string("timer,citrus-task,embedder-task,").size(); }));
    CHECK(order.find("citrus-task,") < order.find("embedder-task,"));  // FIFO on one context
    CHECK(loop->running_in_this_thread() == false);  // not inside a handler now

    // Shutting down as asio_interop.hpp says: stop, destroy, then run io until idle.
    srv.stop();
    REQUIRE(run_io_until(io, [&] { return client_side.c.current_state() == client::state::idle; }));
  }
  while (io.poll() > 0) {
  }
  loop.reset();
  // The embedder's context is still usable after the loop is gone.
  bool ran = false;
  asio::post(io, [&] { ran = true; });
  io.restart();
  io.run();
  CHECK(ran);
  CHECK(log.count("loop_handler_threw") == 0);
}

}  // namespace citrus::wspp::test
