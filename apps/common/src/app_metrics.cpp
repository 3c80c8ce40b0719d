#include "citrus/app/app_metrics.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "citrus/core/http_auth.hpp"
#include "citrus/version.hpp"

#ifndef CITRUS_REVISION
#define CITRUS_REVISION "unknown"
#endif

namespace citrus::app {

std::string_view build_revision() noexcept { return CITRUS_REVISION; }

void append_build_info(metrics::exposition& out) {
  out.family("citrus_build_info", metrics::type::gauge, "Always 1: the version and source revision of this build.");
  out.sample({{"version", citrus::version()}, {"revision", build_revision()}}, 1.0);
}

std::optional<process_sample> parse_proc_stat(std::string_view stat, long ticks_per_second, long page_size,
                                              double boot_time) {
  // "pid (comm) state ppid ...": the name may hold ") ", so the fields start after the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string_view::npos || ticks_per_second <= 0 || page_size <= 0) return std::nullopt;
  std::istringstream in(std::string(stat.substr(close + 1)));
  std::vector<std::string> fields{std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
  // fields[0] is field 3 of proc(5) (state): utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
  if (fields.size() < 22) return std::nullopt;
  auto number = [&](std::size_t field, std::uint64_t& value) {
    const std::string& text = fields[field - 3];
    char* end = nullptr;
    value = std::strtoull(text.c_str(), &end, 10);
    return !text.empty() && end && *end == '\0';
  };
  std::uint64_t utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
  if (!number(14, utime) || !number(15, stime) || !number(22, start) || !number(23, vsize) || !number(24, rss))
    return std::nullopt;
  process_sample p;
  const auto ticks = static_cast<double>(ticks_per_second);
  p.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  p.start_time_seconds = boot_time + static_cast<double>(start) / ticks;
  p.virtual_bytes = vsize;
  p.resident_bytes = rss * static_cast<std::uint64_t>(page_size);
  return p;
}

namespace {

std::optional<double> boot_time() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime" && in >> value) return value;
    in.ignore(1 << 20, '\n');
  }
  return std::nullopt;
}

std::uint64_t count_open_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return 0;
  std::uint64_t n = 0;
  while (const dirent* entry = ::readdir(dir))
    if (entry->d_name[0] != '.') ++n;
  ::closedir(dir);
  return n > 0 ? n - 1 : 0;  // not counting the directory's own descriptor
}

}  // namespace

std::optional<process_sample> read_process_sample() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  const auto btime = boot_time();
  if (!std::getline(in, line) || !btime) return std::nullopt;
  auto p = parse_proc_stat(line, ::sysconf(_SC_CLK_TCK), ::sysconf(_SC_PAGESIZE), *btime);
  if (!p) return std::nullopt;
  p->open_fds = count_open_fds();
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) p->max_fds = static_cast<std::uint64_t>(limit.rlim_cur);
  return p;
}

void append_process_metrics(metrics::exposition& out, const process_sample& p) {
  out.family("process_cpu_seconds_total", metrics::type::counter, "Total user and system CPU time spent in seconds.");
  out.sample({}, p.cpu_seconds);
  out.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", static_cast<double>(p.resident_bytes));
  out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", static_cast<double>(p.virtual_bytes));
  out.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", p.start_time_seconds);
  out.gauge("process_open_fds", "Number of open file descriptors.", static_cast<double>(p.open_fds));
  out.gauge("process_max_fds", "Maximum number of open file descriptors.", static_cast<double>(p.max_fds));
}

void append_server_metrics(metrics::exposition& out, std::string_view prefix, std::size_t open_connections,
                           const wspp::server_counters& c) {
  const std::string p(prefix);
  out.gauge(p + "_connections", "Open WebSocket connections.", static_cast<double>(open_connections));
  out.counter(p + "_tcp_accepted_total", "TCP connections accepted.", c.accepted);
  out.family(p + "_tcp_refused_total", metrics::type::counter,
             "TCP connections closed at accept, by the cap that refused them (max_connections, per_address).");
  out.sample({{"reason", "max_connections"}}, c.refused_connections);
  out.sample({{"reason", "per_address"}}, c.refused_per_address);
  out.counter(p + "_ws_opened_total", "WebSocket handshakes completed.", c.opened);
  out.counter(p + "_ws_closed_total", "WebSocket connections closed.", c.closed);
  out.counter(p + "_ws_handshake_failures_total", "Failed, refused or timed-out WebSocket handshakes.", c.handshake_failures);
  out.counter(p + "_ws_origin_rejected_total", "Handshakes refused for their Origin.", c.origin_rejected);
  out.family(p + "_ws_closed_by_server_total", metrics::type::counter, "WebSocket connections the server closed, by reason.");
  out.sample({{"reason", "unsupported_data"}}, c.unsupported_data);
  out.sample({{"reason", "pong_timeout"}}, c.pong_timeouts);
  out.sample({{"reason", "slow_consumer"}}, c.slow_consumers);
  out.sample({{"reason", "control_frames_rate_limited"}}, c.control_rate_limited);
  out.counter(p + "_handler_exceptions_total", "Exceptions caught from handlers.", c.handler_exceptions);
}

std::string_view method_label(std::string_view method) noexcept {
  for (std::string_view known : {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
    if (method == known) return known;
  return "other";
}

http_metrics::http_metrics(std::string prefix) : prefix_(std::move(prefix)) {}

void http_metrics::record(std::string_view route, std::string_view method, int status, std::chrono::nanoseconds elapsed) {
  const std::string m(method_label(method));
  ++requests_[std::make_tuple(std::string(route), m, status)];
  auto key = std::make_pair(std::string(route), m);
  auto it = durations_.find(key);
  if (it == durations_.end()) it = durations_.emplace(std::move(key), metrics::histogram(metrics::http_latency_buckets())).first;
  it->second.observe(elapsed);
}

void http_metrics::append(metrics::exposition& out) const {
  out.family(prefix_ + "_http_requests_total", metrics::type::counter,
             "HTTP requests answered, by route pattern, method and status code.");
  for (const auto& [key, n] : requests_) {
    const std::string code = std::to_string(std::get<2>(key));
    out.sample({{"route", std::get<0>(key)}, {"method", std::get<1>(key)}, {"code", code}}, n);
  }
  out.family(prefix_ + "_http_request_duration_seconds", metrics::type::histogram,
             "HTTP request durations, from the request read to the answer handed to the socket, by route pattern and method.");
  for (const auto& [key, h] : durations_) out.histogram({{"route", key.first}, {"method", key.second}}, h);
}

wspp::http_response serve_health_and_metrics(const wspp::http_request& request, const std::string& metrics_token,
                                             const std::function<std::string()>& render, http_metrics& http) {
  const auto began = std::chrono::steady_clock::now();
  wspp::http_response response;
  response.headers.push_back({"Cache-Control", "no-store"});
  std::string_view route = "unmatched";  // the route's pattern, never the raw target: bounded labels
  std::string_view type = "application/json";
  if (request.method == "GET" && request.target == "/healthz") {
    route = "/healthz";
    response.body = R"({"status":"ok"})";
  } else if (request.method == "GET" && request.target == "/metrics") {
    route = "/metrics";
    if (!metrics_token.empty() && !bearer_matches(request.header("Authorization"), metrics_token)) {
      response.status = 401;
      response.headers.push_back({"WWW-Authenticate", "Bearer"});
      response.body = R"({"success":false,"message":"Authentication required"})";
    } else {
      type = "text/plain; version=0.0.4";
      response.body = render();
    }
  } else {
    response.status = 404;
    response.body = R"({"success":false,"message":"Not found"})";
  }
  response.headers.push_back({"Content-Type", std::string(type)});
  http.record(route, request.method, response.status, std::chrono::steady_clock::now() - began);
  return response;
}

}  // namespace citrus::app
