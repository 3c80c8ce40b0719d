// citrus::wspp::server: plain HTTP requests on the WebSocket port.
#include <doctest/doctest.h>

#include <stdexcept>

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

}  // namespace citrus::wspp::test
