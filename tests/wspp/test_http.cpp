// citrus::wspp::server: plain HTTP requests on the WebSocket port.
#include <doctest/doctest.h>

#include <memory>
#include <stdexcept>
#include <thread>

#include "harness.hpp"

namespace citrus::wspp::test {

namespace {

struct http_reply {
  int status = 0;
  std::string head;
  std::string body;
};

/// Sends `request` on a fresh connection and reads the response until the server closes.
http_reply http_exchange(server_fixture& f, const std::string& request) {
  raw_socket raw(f.port);
  http_reply reply;
  if (!raw.send(request)) return reply;
  run_until(f.loop, [&] {
    raw.pump();
    return raw.eof;
  });
  reply.status = raw.take_http_head(&reply.head);
  reply.body = raw.in;
  return reply;
}

/// A request sent on its own connection, read as it comes (several can wait at once).
struct pending_exchange {
  pending_exchange(server_fixture& f, const std::string& request) : raw(f.port) { REQUIRE(raw.send(request)); }
  /// True once the server closed the connection after its answer.
  bool done() {
    raw.pump();
    return raw.eof;
  }
  int status() {
    head_status = head_status != 0 ? head_status : raw.take_http_head(&head);
    return head_status;
  }
  raw_socket raw;
  std::string head;
  int head_status = 0;
};

const std::string get_request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

}  // namespace

TEST_CASE("http: GET and POST reach the handler, with method, target, headers, body and peer address") {
  server_fixture f;
  std::vector<http_request> seen;
  f.srv.set_http_handler([&](const http_request& request) {
    seen.push_back(request);
    http_response response;
    if (request.method == "GET" && request.target.rfind("/api/hello", 0) == 0) {
      response.headers.push_back({"Content-Type", "text/plain"});
      response.body = "hello " + std::string(request.header("x-name"));
    } else if (request.method == "POST" && request.target == "/api/echo") {
      response.status = 201;
      response.headers.push_back({"X-Length", std::to_string(request.body.size())});
      response.body = request.body;
    } else {
      response.status = 404;
    }
    return response;
  });

  const auto get = http_exchange(f, "GET /api/hello?limit=5 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Name: citrus\r\n\r\n");
  CHECK(get.status == 200);
  CHECK(get.body == "hello citrus");
  CHECK(get.head.find("Content-Type: text/plain") != std::string::npos);
  CHECK(get.head.find("Server:") == std::string::npos);  // the library and its version are not advertised

  const std::string body = R"({"name":"site-1"})";
  const auto post = http_exchange(f, "POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  CHECK(post.status == 201);
  CHECK(post.body == body);
  CHECK(post.head.find("X-Length: " + std::to_string(body.size())) != std::string::npos);

  CHECK(http_exchange(f, "DELETE /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").status == 404);

  REQUIRE(seen.size() == 3);
  CHECK(seen[0].method == "GET");
  CHECK(seen[0].target == "/api/hello?limit=5");
  CHECK(seen[0].header("X-NAME") == "citrus");
  CHECK(seen[0].header("absent").empty());
  CHECK(seen[0].remote_address.substr(0, 10) == "127.0.0.1:");
  CHECK(seen[1].body == body);
  CHECK(seen[1].header("content-type") == "application/json");
  CHECK(f.srv.counters().http_requests == 3);
  CHECK(f.handler.opened.empty());
}

TEST_CASE("http: a body over max_http_body_bytes is refused with 413 before the handler runs") {
  server_options o = quick_server();
  o.max_http_body_bytes = 1024;
  server_fixture f(o);
  int calls = 0;
  f.srv.set_http_handler([&](const http_request&) {
    ++calls;
    return http_response{};
  });
  const auto ok = http_exchange(f, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n" + std::string(1024, 'a'));
  CHECK(ok.status == 200);
  const auto big = http_exchange(f, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, 'a'));
  CHECK(big.status == 413);
  CHECK(calls == 1);
}

TEST_CASE("http: handler failures and bad responses are contained") {
  server_fixture f;
  SUBCASE("an exception becomes 500") {
    f.srv.set_http_handler([](const http_request&) -> http_response { throw std::runtime_error("db down"); });
    const auto reply = http_exchange(f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(reply.status == 500);
    CHECK(reply.body.empty());
    CHECK(f.log.count("handler_threw") == 1);
  }
  SUBCASE("an out-of-range status becomes 500") {
    f.srv.set_http_handler([](const http_request&) { return http_response{42, {}, "x"}; });
    CHECK(http_exchange(f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n").status == 500);
  }
  SUBCASE("a header that would inject lines is dropped") {
    f.srv.set_http_handler([](const http_request&) {
      return http_response{200, {{"X-Ok", "1"}, {"X-Bad", "1\r\nSet-Cookie: stolen=1"}}, "body"};
    });
    const auto reply = http_exchange(f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(reply.status == 200);
    CHECK(reply.head.find("X-Ok: 1") != std::string::npos);
    CHECK(reply.head.find("Set-Cookie") == std::string::npos);
    CHECK(reply.body == "body");
    CHECK(f.log.count("http_header_dropped") == 1);
  }
  SUBCASE("without a handler: 426 Upgrade Required") {
    CHECK(http_exchange(f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n").status == 426);
  }
  // The server still serves WebSocket clients afterwards.
  test_client a(f.loop, f.log);
  REQUIRE(a.c.connect(f.url()));
  CHECK(run_until(f.loop, [&] { return a.is_open(); }));
}

TEST_CASE("http: an async handler answers later, on the loop, while the loop serves other requests") {
  server_fixture f;
  std::vector<http_responder> waiting;
  std::vector<std::string> targets;
  f.srv.set_async_http_handler([&](const http_request& request, http_responder responder) {
    targets.push_back(request.target);
    if (request.target == "/now") {
      CHECK(responder.pending());
      CHECK(responder.send(http_response{200, {{"X-When", "now"}}, "now"}));
      CHECK_FALSE(responder.pending());
      CHECK_FALSE(responder.send(http_response{500, {}, "twice"}));  // one request, one answer
      return;
    }
    waiting.push_back(std::move(responder));
  });
  pending_exchange later(f, "GET /later HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(run_until(f.loop, [&] { return waiting.size() == 1; }));
  const auto asked = std::chrono::steady_clock::now();
  timer answer_later = f.loop.schedule(200ms, [&] {
    CHECK(waiting[0].send(http_response{202, {{"X-When", "later"}}, "later"}));
  });
  pending_exchange now(f, "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(run_until(f.loop, [&] { return now.done(); }));
  CHECK_FALSE(later.done());  // still waiting: the answer that was held back blocked nobody
  CHECK(now.status() == 200);
  CHECK(now.raw.in == "now");
  REQUIRE(run_until(f.loop, [&] { return later.done(); }));
  CHECK(std::chrono::steady_clock::now() - asked >= 200ms);
  CHECK(later.status() == 202);
  CHECK(later.head.find("X-When: later") != std::string::npos);
  CHECK(later.head.find("Connection: close") != std::string::npos);
  CHECK(later.raw.in == "later");
  CHECK(targets == std::vector<std::string>{"/later", "/now"});
  CHECK_FALSE(waiting[0].pending());
  const server_counters c = f.srv.counters();
  CHECK(c.http_requests == 2);
  CHECK(c.http_deferred == 2);
  CHECK(c.http_unanswered == 0);
  CHECK(c.http_response_timeouts == 0);
}

TEST_CASE("http: an answer computed on another thread is posted back to the loop and sent") {
  server_fixture f;
  std::thread worker;
  f.srv.set_async_http_handler([&](const http_request& request, http_responder responder) {
    // event_loop::post takes a copyable task: share the one-shot responder with it.
    auto shared = std::make_shared<http_responder>(std::move(responder));
    worker = std::thread([&f, shared, body = request.body] {
      std::this_thread::sleep_for(20ms);  // the slow work (a database call) runs here, off the loop
      f.loop.post([shared, body] { shared->send(http_response{200, {}, "worked on " + body}); });
    });
  });
  pending_exchange e(f, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody");
  REQUIRE(run_until(f.loop, [&] { return e.done(); }));
  worker.join();
  CHECK(e.status() == 200);
  CHECK(e.raw.in == "worked on body");
}

TEST_CASE("http: a responder dropped unanswered, or an async handler that throws, answers 500") {
  server_fixture f;
  SUBCASE("dropped") {
    f.srv.set_async_http_handler([](const http_request&, http_responder) {});
    const auto reply = http_exchange(f, get_request);
    CHECK(reply.status == 500);
    CHECK(reply.body.empty());
    CHECK(f.srv.counters().http_unanswered == 1);
    CHECK(f.log.count("http_responder_dropped") == 1);
  }
  SUBCASE("dropped later, by assigning another responder over it") {
    http_responder kept;
    f.srv.set_async_http_handler([&](const http_request&, http_responder responder) { kept = std::move(responder); });
    pending_exchange first(f, get_request);
    REQUIRE(run_until(f.loop, [&] { return kept.pending(); }));
    pending_exchange second(f, get_request);
    REQUIRE(run_until(f.loop, [&] { return first.done(); }));
    CHECK(first.status() == 500);
    CHECK(kept.send(http_response{204, {}, {}}));
    REQUIRE(run_until(f.loop, [&] { return second.done(); }));
    CHECK(second.status() == 204);
  }
  SUBCASE("thrown") {
    f.srv.set_async_http_handler([](const http_request&, http_responder) { throw std::runtime_error("db down"); });
    const auto reply = http_exchange(f, get_request);
    CHECK(reply.status == 500);
    CHECK(f.log.count("handler_threw") == 1);
    CHECK(f.srv.counters().handler_exceptions == 1);
  }
  SUBCASE("a bad answer is contained as for a synchronous handler") {
    f.srv.set_async_http_handler([](const http_request&, http_responder responder) {
      responder.send(http_response{42, {{"X-Bad", "1\r\nSet-Cookie: stolen=1"}}, "x"});
    });
    const auto reply = http_exchange(f, get_request);
    CHECK(reply.status == 500);
    CHECK(reply.head.find("Set-Cookie") == std::string::npos);
  }
}

TEST_CASE("http: a deferred request not answered in time gets 503 from the server, and the late answer is not sent") {
  server_options o = quick_server();
  o.http_response_timeout = 100ms;
  server_fixture f(o);
  http_responder kept;
  f.srv.set_async_http_handler([&](const http_request&, http_responder responder) { kept = std::move(responder); });
  const auto asked = std::chrono::steady_clock::now();
  const auto reply = http_exchange(f, get_request);
  CHECK(std::chrono::steady_clock::now() - asked >= 100ms);
  CHECK(reply.status == 503);
  CHECK_FALSE(kept.pending());
  CHECK_FALSE(kept.send(http_response{200, {}, "too late"}));
  CHECK(f.srv.counters().http_response_timeouts == 1);
  CHECK(f.srv.counters().http_unanswered == 0);
  CHECK(f.log.count("http_response_timeout") == 1);
}

TEST_CASE("http: when the server stops or is destroyed, a waiting responder sends nothing and nothing breaks") {
  memory::recording_logger log;
  event_loop loop;
  recorder handler;
  http_responder kept;
  {
    server srv(loop, handler, quick_server(), log);
    const auto port = srv.listen();
    REQUIRE(port);
    srv.set_async_http_handler([&](const http_request&, http_responder responder) { kept = std::move(responder); });
    raw_socket raw(*port);
    REQUIRE(raw.send(get_request));
    REQUIRE(run_until(loop, [&] { return kept.pending(); }));
    SUBCASE("stopped") {
      srv.stop();  // drops the connections still waiting
      run_until(loop, [&] {
        raw.pump();
        return raw.eof;
      });
      CHECK(raw.eof);
      CHECK(raw.in.empty());
      CHECK_FALSE(kept.pending());
      CHECK_FALSE(kept.send(http_response{200, {}, "late"}));
    }
    SUBCASE("destroyed") {}
  }
  CHECK_FALSE(kept.pending());
  CHECK_FALSE(kept.send(http_response{200, {}, "after the server"}));
  http_responder unused = std::move(kept);  // destroying it now sends nothing either
  run_for(loop, 20ms);
}

TEST_CASE("http: set_http_handler and set_async_http_handler replace each other") {
  server_fixture f;
  f.srv.set_async_http_handler([](const http_request&, http_responder responder) {
    responder.send(http_response{201, {}, "async"});
  });
  CHECK(http_exchange(f, get_request).status == 201);
  f.srv.set_http_handler([](const http_request&) { return http_response{200, {}, "sync"}; });
  const auto sync = http_exchange(f, get_request);
  CHECK(sync.status == 200);
  CHECK(sync.body == "sync");
  CHECK(f.srv.counters().http_deferred == 1);
  f.srv.set_async_http_handler([](const http_request&, http_responder responder) {
    responder.send(http_response{202, {}, "async again"});
  });
  CHECK(http_exchange(f, get_request).status == 202);
}

}  // namespace citrus::wspp::test
