#pragma once
/// Prometheus metrics as plain data: a fixed-bucket histogram cheap enough for the routing path, and
/// a writer of the text exposition format (version 0.0.4) that the executables serve on /metrics.
/// No I/O, no threads, no global registry: each owner keeps its counters where it counts them and
/// renders them when scraped (on its own thread).
///
///   metrics::exposition out;
///   out.counter("citrus_hub_messages_received_total", "Messages received.", n);
///   out.family("citrus_hub_auth_total", metrics::type::counter, "Authentications by role and outcome.");
///   out.sample({{"role", "agent"}, {"outcome", "ok"}}, ok);
///   out.family("citrus_hub_command_duration_seconds", metrics::type::histogram, "...");
///   out.histogram({{"outcome", "ok"}}, latency);
///   serve(out.text());
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace citrus::metrics {

/// Upper bounds (seconds) for the latency of a command (command to its final result): 5 ms to 5 min,
/// the request timeout's default.
std::vector<double> command_latency_buckets();
/// Upper bounds (seconds) for HTTP request durations: 1 ms to 10 s.
std::vector<double> http_latency_buckets();

/// A histogram with fixed buckets. observe() is a short scan and two increments: no allocation, no
/// lock (single-threaded like its owner).
class histogram {
 public:
  /// `upper_bounds`: strictly increasing finite values; the +Inf bucket is implicit. Throws
  /// std::invalid_argument otherwise (a programming error, found at construction).
  explicit histogram(std::vector<double> upper_bounds);

  void observe(double value) noexcept;
  void observe(std::chrono::nanoseconds elapsed) noexcept { observe(static_cast<double>(elapsed.count()) / 1e9); }

  const std::vector<double>& upper_bounds() const noexcept { return bounds_; }
  /// Observations per bucket, not cumulative; one more than upper_bounds() (the last is +Inf).
  const std::vector<std::uint64_t>& bucket_counts() const noexcept { return counts_; }
  std::uint64_t count() const noexcept { return count_; }
  double sum() const noexcept { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

enum class type { counter, gauge, histogram };

struct label {
  std::string_view name;
  std::string_view value;  ///< any bytes; escaped when written
};

/// Builds one exposition text. Families are written in the order they are declared; each family's
/// samples follow its HELP and TYPE lines. Misuse is a programming error and throws
/// std::invalid_argument: an invalid metric or label name, a family declared twice, a counter not
/// named *_total, a sample before any family or of the wrong kind (histogram() on a counter).
class exposition {
 public:
  /// Starts a family. `help` may hold any text (backslashes and newlines are escaped).
  void family(std::string_view name, type t, std::string_view help);
  /// A counter or gauge sample of the current family.
  void sample(std::initializer_list<label> labels, double value);
  void sample(std::initializer_list<label> labels, std::uint64_t value);
  void sample(const std::vector<label>& labels, std::uint64_t value);
  /// The _bucket (cumulative, with le), _sum and _count samples of the current histogram family.
  void histogram(std::initializer_list<label> labels, const metrics::histogram& h);
  void histogram(const std::vector<label>& labels, const metrics::histogram& h);

  /// One-sample families without labels.
  void counter(std::string_view name, std::string_view help, std::uint64_t value);
  void gauge(std::string_view name, std::string_view help, double value);

  const std::string& text() const noexcept { return out_; }
  std::string take() noexcept { return std::move(out_); }

 private:
  void write_sample(std::string_view suffix, const label* labels, std::size_t n, const label* extra, std::string_view value);
  void expect(type t) const;

  std::string out_;
  std::string current_;
  type current_type_ = type::gauge;
  std::vector<std::string> declared_;
};

/// True for a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*).
bool is_valid_metric_name(std::string_view name) noexcept;
/// True for a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", which Prometheus reserves).
bool is_valid_label_name(std::string_view name) noexcept;
/// A sample value as the text format writes it: integers without a decimal point, "+Inf", "-Inf", "NaN".
std::string format_value(double value);

}  // namespace citrus::metrics
