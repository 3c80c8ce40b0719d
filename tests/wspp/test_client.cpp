// citrus::wspp::client: failures, cancellation, reconnection, and TLS.
#include <doctest/doctest.h>

#include "harness.hpp"

namespace citrus::wspp::test {

TEST_CASE("client: connect() rejects bad URLs and a second attempt while busy") {
  memory::recording_logger log;
  event_loop loop;
  test_client a(loop, log);
  CHECK(a.c.connect("http://127.0.0.1:1/").error() == errc::invalid_value);
  CHECK(a.c.connect("not a url").error() == errc::invalid_value);
  CHECK(a.c.current_state() == client::state::idle);

  client_options bad_header = quick_client();
  bad_header.headers.push_back({"X-Token", "a\r\nInjected: 1"});
  test_client b(loop, log, bad_header);
  CHECK(b.c.connect("ws://127.0.0.1:1/").error() == errc::invalid_value);

  silent_listener silent;
  REQUIRE(a.c.connect("ws://127.0.0.1:" + std::to_string(silent.port()) + "/"));
  const auto again = a.c.connect("ws://127.0.0.1:" + std::to_string(silent.port()) + "/");
  REQUIRE_FALSE(again);
  CHECK(again.error() == std::errc::already_connected);
}

TEST_CASE("client: a refused connection reports connect_failed, then the client is idle and can retry") {
  memory::recording_logger log;
  event_loop loop;
  std::uint16_t free_port = 0;
  {
    recorder unused;
    server probe(loop, unused, quick_server(), log);
    free_port = *probe.listen();
  }  // closed again: nothing listens there now
  test_client a(loop, log);
  REQUIRE(a.c.connect("ws://127.0.0.1:" + std::to_string(free_port) + "/"));
  REQUIRE(run_until(loop, [&] { return !a.failures.empty(); }));
  CHECK_FALSE(a.failures[0].reason.empty());
  CHECK(a.failures[0].http_status == 0);
  CHECK(a.c.current_state() == client::state::idle);
  CHECK(a.rec.opened.empty());
  CHECK(a.rec.closed.empty());
  CHECK_FALSE(a.c.last_close());

  recorder handler;
  server_options o = quick_server();
  o.port = free_port;
  server srv(loop, handler, o, log);
  REQUIRE(srv.listen());
  REQUIRE(a.c.connect("ws://127.0.0.1:" + std::to_string(free_port) + "/"));
  CHECK(run_until(loop, [&] { return a.is_open(); }));
}

TEST_CASE("client: a server that never answers the upgrade fails the attempt after handshake_timeout") {
  memory::recording_logger log;
  event_loop loop;
  silent_listener silent;
  client_options o = quick_client();
  o.connection.handshake_timeout = 100ms;
  test_client a(loop, log, o);
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(a.c.connect("ws://127.0.0.1:" + std::to_string(silent.port()) + "/"));
  REQUIRE(run_until(loop, [&] { return !a.failures.empty(); }, 3000ms));
  CHECK(std::chrono::steady_clock::now() - start >= 90ms);
  CHECK(a.c.current_state() == client::state::idle);
}

TEST_CASE("client: close() while connecting abandons the attempt - connect_failed says cancelled") {
  memory::recording_logger log;
  event_loop loop;
  silent_listener silent;
  test_client a(loop, log);
  REQUIRE(a.c.connect("ws://127.0.0.1:" + std::to_string(silent.port()) + "/"));
  run_for(loop, 20ms);
  CHECK(a.c.current_state() == client::state::connecting);
  a.c.close(close_code::going_away, "shutting down");
  CHECK(a.failures.empty());  // not from inside close()
  REQUIRE(run_until(loop, [&] { return !a.failures.empty(); }));
  CHECK(a.failures[0].reason == "cancelled");
  CHECK(a.c.current_state() == client::state::idle);
  run_for(loop, 50ms);
  CHECK(a.failures.size() == 1);
  CHECK(a.rec.opened.empty());
}

namespace {

/// A client connected to a hand-written server that answered its upgrade with `extra_headers`.
struct hostile_server_fixture {
  explicit hostile_server_fixture(std::string_view extra_headers = {}) {
    REQUIRE(a.c.connect("ws://127.0.0.1:" + std::to_string(hostile.port()) + "/"));
    REQUIRE(run_until(loop, [&] { return hostile.answer_upgrade(extra_headers); }));
    REQUIRE(run_until(loop, [&] { return a.is_open(); }));
  }
  memory::recording_logger log;
  event_loop loop;
  raw_server hostile;
  test_client a{loop, log};
};

}  // namespace

TEST_CASE("client: a server that claims permessage-deflate gets no inflation - a compressed frame is a protocol error") {
  hostile_server_fixture f("Sec-WebSocket-Extensions: permessage-deflate\r\n");
  // FIN + RSV1 (the "compressed" bit) + text, unmasked, with a deflate-looking payload.
  REQUIRE(f.hostile.send(std::string("\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00", 9)));
  REQUIRE(run_until(f.loop, [&] { return !f.a.rec.closed.empty(); }));
  CHECK(f.a.rec.messages.empty());
  REQUIRE(f.a.c.last_close());
  CHECK(f.a.c.last_close()->local_code == 1002);
}

TEST_CASE("client: pings are answered with their payload, masked - a server that floods pings is closed with 4008") {
  hostile_server_fixture f;
  REQUIRE(f.hostile.send(std::string("\x89\x03" "abc", 5)));  // a ping, unmasked as a server's are
  std::optional<frame> pong;
  REQUIRE(run_until(f.loop, [&] {
    f.hostile.receive();
    pong = take_client_frame(f.hostile.in);  // only a masked frame is taken
    return pong.has_value();
  }));
  CHECK(pong->opcode == 0xA);
  CHECK(pong->payload == "abc");

  std::string flood;
  for (int i = 0; i < 40; ++i) flood += std::string("\x89\x00", 2);  // empty pings, 15 tokens left
  REQUIRE(f.hostile.send(flood));
  std::optional<frame> close;
  std::size_t pongs = 0;
  REQUIRE(run_until(f.loop, [&] {
    f.hostile.receive();
    while (auto fr = take_client_frame(f.hostile.in)) {
      if (fr->opcode == 0x8) close = fr;
      pongs += fr->opcode == 0xA;
    }
    return close.has_value();
  }));
  CHECK(close->close_code() == 4008);
  CHECK(pongs <= 15);
  REQUIRE(f.hostile.send(std::string("\x88\x02\x0f\xa8", 4)));  // the server agrees: close 4008
  f.hostile.disconnect();
  REQUIRE(run_until(f.loop, [&] { return !f.a.rec.closed.empty(); }));
  REQUIRE(f.a.c.last_close());
  CHECK(f.a.c.last_close()->local_code == 4008);
  CHECK(f.log.count("control_frames_rate_limited") == 1);
}

TEST_CASE("client: on_close may reconnect at once (backoff is the caller's policy)") {
  server_fixture f;
  f.handler.on_message_hook = [](connection& conn, std::string_view) { conn.close(close_code::normal, "bye"); };
  test_client a(f.loop, f.log);
  int reconnects = 0;
  a.rec.on_close_hook = [&](connection_id) {
    CHECK(a.c.current_state() == client::state::idle);
    if (reconnects++ == 0) CHECK(a.c.connect(f.url()));
  };
  REQUIRE(a.c.connect(f.url()));
  REQUIRE(run_until(f.loop, [&] { return a.is_open(); }));
  CHECK(a.c.connection()->send("close me") == send_status::ok);
  REQUIRE(run_until(f.loop, [&] { return a.rec.opened.size() == 2 && a.is_open(); }));
  CHECK(a.rec.closed.size() == 1);
  CHECK(a.rec.opened[0] != a.rec.opened[1]);
  CHECK(a.c.last_close()->remote_code == 1000);
}

TEST_CASE("client: a closing connection reports state closing, then idle") {
  server_fixture f;
  test_client a(f.loop, f.log);
  REQUIRE(a.c.connect(f.url()));
  REQUIRE(run_until(f.loop, [&] { return a.is_open(); }));
  a.c.close(close_code::normal, "done");
  CHECK(a.c.current_state() == client::state::closing);
  REQUIRE(run_until(f.loop, [&] { return a.c.current_state() == client::state::idle; }));
  CHECK(a.rec.closed.size() == 1);
  CHECK(a.c.last_close()->local_code == 1000);
  REQUIRE(run_until(f.loop, [&] { return f.handler.closed.size() == 1; }));
}

TEST_CASE("client: destroying it delivers on_close for the open connection before returning") {
  server_fixture f;
  recorder handler;
  auto c = std::make_unique<client>(f.loop, handler, quick_client(), f.log);
  REQUIRE(c->connect(f.url()));
  REQUIRE(run_until(f.loop, [&] { return handler.opened.size() == 1 && f.handler.opened.size() == 1; }));
  c.reset();
  CHECK(handler.closed.size() == 1);
  REQUIRE(run_until(f.loop, [&] { return f.handler.closed.size() == 1; }));
}

TEST_CASE("tls: wss:// round-trip with a verified certificate (by IP address and by host name)") {
  const auto& files = test_tls_files();
  server_options o = quick_server();
  o.tls_certificate_file = files.certificate;
  o.tls_private_key_file = files.private_key;
  server_fixture f(o);
  f.handler.echo = true;
  client_options co = quick_client();
  co.tls_ca_file = files.certificate;
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    CAPTURE(host);
    test_client a(f.loop, f.log, co);
    REQUIRE(a.c.connect("wss://" + host + ":" + std::to_string(f.port) + "/"));
    REQUIRE(run_until(f.loop, [&] { return a.is_open() || !a.failures.empty(); }));
    REQUIRE(a.is_open());
    CHECK(a.c.connection()->send("over tls") == send_status::ok);
    REQUIRE(run_until(f.loop, [&] { return a.rec.messages.size() == 1; }));
    CHECK(a.rec.messages[0] == "over tls");
  }
}

TEST_CASE("tls: the client refuses an untrusted certificate - plain ws:// to a TLS port fails") {
  const auto& files = test_tls_files();
  server_options o = quick_server();
  o.tls_certificate_file = files.certificate;
  o.tls_private_key_file = files.private_key;
  server_fixture f(o);
  const std::string port = std::to_string(f.port);

  client_options wrong_ca = quick_client();
  wrong_ca.tls_ca_file = files.other_certificate;  // same names, different key
  test_client a(f.loop, f.log, wrong_ca);
  REQUIRE(a.c.connect("wss://127.0.0.1:" + port + "/"));

  test_client system_store(f.loop, f.log);  // the system's CAs do not know our test certificate
  REQUIRE(system_store.c.connect("wss://localhost:" + port + "/"));

  client_options wrong_name = quick_client();
  wrong_name.tls_ca_file = files.certificate;
  test_client b(f.loop, f.log, wrong_name);
  REQUIRE(b.c.connect("wss://127.0.0.2:" + port + "/"));  // routable on loopback, not in the SAN

  test_client plain(f.loop, f.log);
  REQUIRE(plain.c.connect("ws://127.0.0.1:" + port + "/"));

  REQUIRE(run_until(f.loop, [&] {
    return !a.failures.empty() && !system_store.failures.empty() && !b.failures.empty() && !plain.failures.empty();
  }));
  CHECK(f.handler.opened.empty());
  CHECK(a.rec.opened.empty());
  CHECK(b.rec.opened.empty());
}

TEST_CASE("tls: a missing CA file is reported by connect()") {
  memory::recording_logger log;
  event_loop loop;
  client_options o = quick_client();
  o.tls_ca_file = "/nonexistent/ca.pem";
  test_client a(loop, log, o);
  CHECK_FALSE(a.c.connect("wss://127.0.0.1:1/"));
  CHECK(a.c.current_state() == client::state::idle);
}

}  // namespace citrus::wspp::test
