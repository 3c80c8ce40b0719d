#pragma once
/// What every executable's /metrics carries besides its own counters, written with
/// citrus::metrics::exposition: the build, the standard process_* metrics (from /proc, as the
/// Prometheus client libraries export them), the WebSocket server's counters, and HTTP requests by
/// route, method and code with their durations. Loop thread only, like the servers they describe.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "citrus/core/metrics.hpp"
#include "citrus/wspp/server.hpp"

namespace citrus::app {

/// citrus_build_info{version, revision} 1. The revision is the source's git commit at configure time
/// ("unknown" outside a git checkout; -DCITRUS_REVISION=... overrides it).
void append_build_info(metrics::exposition& out);
/// The revision append_build_info() reports.
std::string_view build_revision() noexcept;

/// One reading of /proc/self/stat and friends.
struct process_sample {
  double cpu_seconds = 0;           ///< user + system
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  double start_time_seconds = 0;    ///< unix time
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;        ///< the soft RLIMIT_NOFILE
};

/// Parses a /proc/<pid>/stat line (the command name may hold spaces and parentheses). `boot_time`:
/// /proc/stat's btime. Empty when the line is malformed.
std::optional<process_sample> parse_proc_stat(std::string_view stat, long ticks_per_second, long page_size,
                                              double boot_time);
/// This process now; empty when /proc cannot be read (then no process_* metric is written).
std::optional<process_sample> read_process_sample();
/// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
/// process_start_time_seconds, process_open_fds, process_max_fds.
void append_process_metrics(metrics::exposition& out, const process_sample& p);

/// The server's connection counters as PREFIX_connections, PREFIX_tcp_accepted_total,
/// PREFIX_tcp_refused_total{reason}, PREFIX_ws_opened_total, PREFIX_ws_closed_total,
/// PREFIX_ws_handshake_failures_total, PREFIX_ws_origin_rejected_total,
/// PREFIX_ws_closed_by_server_total{reason}, PREFIX_handler_exceptions_total.
void append_server_metrics(metrics::exposition& out, std::string_view prefix, std::size_t open_connections,
                           const wspp::server_counters& c);

/// HTTP requests by route, method and code, and their durations by route and method:
/// PREFIX_http_requests_total{route,method,code} and PREFIX_http_request_duration_seconds{route,method}.
/// Cardinality stays bounded when `route` is a pattern from a fixed set (never the raw path);
/// methods outside GET, HEAD, POST, PUT, DELETE, PATCH and OPTIONS count as "other".
class http_metrics {
 public:
  explicit http_metrics(std::string prefix);
  void record(std::string_view route, std::string_view method, int status, std::chrono::nanoseconds elapsed);
  void append(metrics::exposition& out) const;

 private:
  std::string prefix_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
  std::map<std::pair<std::string, std::string>, metrics::histogram> durations_;
};

/// A bounded method label: the standard ones as they are, anything else "other".
std::string_view method_label(std::string_view method) noexcept;

/// The plain HTTP side of the hub and the agent: GET /healthz, GET /metrics (`render()`; with a
/// `metrics_token`, only for "Authorization: Bearer <token>", else 401), 404 for anything else; each
/// request recorded in `http` under its route pattern.
wspp::http_response serve_health_and_metrics(const wspp::http_request& request, const std::string& metrics_token,
                                             const std::function<std::string()>& render, http_metrics& http);

}  // namespace citrus::app
