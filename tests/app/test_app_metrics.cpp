// What every executable's /metrics carries: build, process_*, server and HTTP request metrics.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <chrono>
#include <ctime>
#include <string>

#include "citrus/app/app_metrics.hpp"
#include "citrus/version.hpp"

using namespace citrus;

namespace {
bool has_line(const std::string& text, const std::string& line) { return text.find("\n" + line + "\n") != std::string::npos; }
}  // namespace

TEST_CASE("parse_proc_stat: fields after the last parenthesis, in ticks and pages") {
  // A command name with spaces and a ')' in it; utime 250 and stime 150 ticks, start 1000 ticks
  // after boot, vsize 8192000, rss 300 pages.
  const std::string stat =
      "4242 (citrus hub) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 1000 8192000 300 "
      "18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
  auto p = app::parse_proc_stat(stat, 100, 4096, 1'700'000'000);
  REQUIRE(p);
  CHECK(p->cpu_seconds == doctest::Approx(4.0));
  CHECK(p->start_time_seconds == doctest::Approx(1'700'000'010.0));
  CHECK(p->virtual_bytes == 8192000);
  CHECK(p->resident_bytes == 300 * 4096);
  CHECK_FALSE(app::parse_proc_stat("4242 citrus S 1", 100, 4096, 0));
  CHECK_FALSE(app::parse_proc_stat("4242 (citrus) S 1 2 3", 100, 4096, 0));
  CHECK_FALSE(app::parse_proc_stat(stat, 0, 4096, 0));
}

TEST_CASE("read_process_sample: this very process, as the kernel sees it") {
  auto p = app::read_process_sample();
  REQUIRE(p);
  const double now = static_cast<double>(std::time(nullptr));
  CHECK(p->start_time_seconds <= now + 1);
  CHECK(p->start_time_seconds > now - 24 * 3600);  // a test binary started within the day
  CHECK(p->resident_bytes > 1024 * 1024);
  CHECK(p->virtual_bytes >= p->resident_bytes);
  CHECK(p->open_fds >= 3);  // stdin, stdout, stderr
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  CHECK(p->max_fds == static_cast<std::uint64_t>(limit.rlim_cur));
  CHECK(p->open_fds <= p->max_fds);

  metrics::exposition out;
  app::append_process_metrics(out, *p);
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                           "process_start_time_seconds", "process_open_fds", "process_max_fds"})
    CHECK(out.text().find(std::string("\n# TYPE ") + name + " ") != std::string::npos);
  CHECK(has_line(out.text(), "# TYPE process_cpu_seconds_total counter"));
}

TEST_CASE("build info: the version and a revision") {
  metrics::exposition out;
  app::append_build_info(out);
  CHECK(!app::build_revision().empty());
  CHECK(out.text().find("citrus_build_info{version=\"" + std::string(citrus::version()) + "\",revision=\"" +
                        std::string(app::build_revision()) + "\"} 1\n") != std::string::npos);
}

TEST_CASE("server metrics: refusals and server-side closes by reason") {
  wspp::server_counters c;
  c.refused_connections = 3;
  c.refused_per_address = 4;
  c.control_rate_limited = 2;
  c.slow_consumers = 1;
  metrics::exposition out;
  app::append_server_metrics(out, "citrus_x", 5, c);
  CHECK(has_line(out.text(), "citrus_x_connections 5"));
  CHECK(has_line(out.text(), "citrus_x_tcp_refused_total{reason=\"max_connections\"} 3"));
  CHECK(has_line(out.text(), "citrus_x_tcp_refused_total{reason=\"per_address\"} 4"));
  CHECK(has_line(out.text(), "citrus_x_ws_closed_by_server_total{reason=\"control_frames_rate_limited\"} 2"));
  CHECK(has_line(out.text(), "citrus_x_ws_closed_by_server_total{reason=\"slow_consumer\"} 1"));
}

TEST_CASE("http_metrics: requests by route, method and code; durations by route and method; odd methods bounded") {
  app::http_metrics m("citrus_x");
  using std::chrono::milliseconds;
  m.record("/api/sites/:id", "GET", 200, milliseconds(3));
  m.record("/api/sites/:id", "GET", 200, milliseconds(30));
  m.record("/api/sites/:id", "GET", 403, milliseconds(1));
  m.record("/api/sites/:id", "BREW", 405, milliseconds(1));
  m.record("/api/sites/:id", "BREWING", 405, milliseconds(1));
  metrics::exposition out;
  m.append(out);
  const std::string& t = out.text();
  CHECK(has_line(t, R"(citrus_x_http_requests_total{route="/api/sites/:id",method="GET",code="200"} 2)"));
  CHECK(has_line(t, R"(citrus_x_http_requests_total{route="/api/sites/:id",method="GET",code="403"} 1)"));
  CHECK(has_line(t, R"(citrus_x_http_requests_total{route="/api/sites/:id",method="other",code="405"} 2)"));
  CHECK(t.find("BREW") == std::string::npos);
  CHECK(has_line(t, R"(citrus_x_http_request_duration_seconds_count{route="/api/sites/:id",method="GET"} 3)"));
  CHECK(has_line(t, R"(citrus_x_http_request_duration_seconds_bucket{route="/api/sites/:id",method="GET",le="0.005"} 2)"));
  CHECK(t.find("\ncitrus_x_http_request_duration_seconds_sum{route=\"/api/sites/:id\",method=\"GET\"} 0.034") !=
        std::string::npos);
  CHECK(app::method_label("DELETE") == "DELETE");
  CHECK(app::method_label("get") == "other");
}

TEST_CASE("serve_health_and_metrics: /healthz, /metrics behind its token, 404 otherwise, every answer recorded") {
  app::http_metrics http("citrus_x");
  int renders = 0;
  auto render = [&] {
    ++renders;
    return std::string("citrus_x_up 1\n");
  };
  auto call = [&](const std::string& method, const std::string& target, const std::string& token,
                  const std::string& authorization = {}) {
    wspp::http_request r;
    r.method = method;
    r.target = target;
    if (!authorization.empty()) r.headers.push_back({"Authorization", authorization});
    return app::serve_health_and_metrics(r, token, render, http);
  };
  auto type_of = [](const wspp::http_response& r) {
    for (const auto& h : r.headers)
      if (h.name == "Content-Type") return h.value;
    return std::string();
  };
  const auto health = call("GET", "/healthz", "secret-token-0123456789");
  CHECK(health.status == 200);
  CHECK(health.body == R"({"status":"ok"})");
  const auto open = call("GET", "/metrics", "");
  CHECK(open.status == 200);
  CHECK(open.body == "citrus_x_up 1\n");
  CHECK(type_of(open) == "text/plain; version=0.0.4");
  const auto refused = call("GET", "/metrics", "secret-token-0123456789", "Bearer wrong");
  CHECK(refused.status == 401);
  CHECK(type_of(refused) == "application/json");
  CHECK(call("GET", "/metrics", "secret-token-0123456789", "Bearer secret-token-0123456789").status == 200);
  CHECK(renders == 2);  // never rendered for a refused scrape
  CHECK(call("POST", "/metrics", "").status == 404);
  CHECK(call("GET", "/metrics/../etc", "").status == 404);

  metrics::exposition out;
  http.append(out);
  CHECK(has_line(out.text(), R"(citrus_x_http_requests_total{route="/metrics",method="GET",code="200"} 2)"));
  CHECK(has_line(out.text(), R"(citrus_x_http_requests_total{route="/metrics",method="GET",code="401"} 1)"));
  CHECK(has_line(out.text(), R"(citrus_x_http_requests_total{route="unmatched",method="GET",code="404"} 1)"));
  CHECK(has_line(out.text(), R"(citrus_x_http_requests_total{route="unmatched",method="POST",code="404"} 1)"));
  CHECK(out.text().find("etc") == std::string::npos);
}
