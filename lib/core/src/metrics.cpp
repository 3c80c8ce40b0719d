#include "citrus/core/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace citrus::metrics {

std::vector<double> command_latency_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
}

std::vector<double> http_latency_buckets() { return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}; }

histogram::histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i])) throw std::invalid_argument("histogram bounds must be finite");
    if (i > 0 && !(bounds_[i - 1] < bounds_[i])) throw std::invalid_argument("histogram bounds must increase strictly");
  }
}

void histogram::observe(double value) noexcept {
  // Buckets are few (about 15): a linear scan beats a binary search at this size. le is inclusive.
  std::size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  ++count_;
  sum_ += value;
}

bool is_valid_metric_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool is_valid_label_name(std::string_view name) noexcept {
  if (name.empty() || name.substr(0, 2) == "__") return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // Shortest text that reads back as the same double ("0.005", "42", "1e+20").
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, r.ptr);
}

namespace {

void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (const char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quote && c == '"') out += "\\\"";
    else out.push_back(c);
  }
}

const char* type_name(type t) noexcept {
  switch (t) {
    case type::counter: return "counter";
    case type::gauge: return "gauge";
    case type::histogram: return "histogram";
  }
  return "untyped";
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

}  // namespace

void exposition::family(std::string_view name, type t, std::string_view help) {
  if (!is_valid_metric_name(name)) throw std::invalid_argument("invalid metric name: " + std::string(name));
  if (t == type::counter && !ends_with(name, "_total"))
    throw std::invalid_argument("a counter's name ends in _total: " + std::string(name));
  if (std::find(declared_.begin(), declared_.end(), name) != declared_.end())
    throw std::invalid_argument("metric family declared twice: " + std::string(name));
  declared_.emplace_back(name);
  current_.assign(name.data(), name.size());
  current_type_ = t;
  out_.append("# HELP ").append(name).push_back(' ');
  append_escaped(out_, help, false);
  out_.append("\n# TYPE ").append(name).push_back(' ');
  out_.append(type_name(t)).push_back('\n');
}

/// `t`: type::histogram for histogram samples, any other for counter and gauge samples.
void exposition::expect(type t) const {
  if (current_.empty()) throw std::invalid_argument("a sample needs a family first");
  const bool histogram_family = current_type_ == type::histogram;
  if (histogram_family != (t == type::histogram))
    throw std::invalid_argument("sample of the wrong kind for family " + current_);
}

void exposition::write_sample(std::string_view suffix, const label* labels, std::size_t n, const label* extra,
                              std::string_view value) {
  out_.append(current_).append(suffix);
  if (n > 0 || extra) {
    out_.push_back('{');
    bool first = true;
    auto one = [&](const label& l) {
      if (!is_valid_label_name(l.name) || (extra && l.name == "le"))
        throw std::invalid_argument("invalid label name: " + std::string(l.name));
      if (!first) out_.push_back(',');
      first = false;
      out_.append(l.name).append("=\"");
      append_escaped(out_, l.value, true);
      out_.push_back('"');
    };
    for (std::size_t i = 0; i < n; ++i) one(labels[i]);
    if (extra) {
      if (!first) out_.push_back(',');
      out_.append("le=\"").append(extra->value).push_back('"');
    }
    out_.push_back('}');
  }
  out_.push_back(' ');
  out_.append(value).push_back('\n');
}

void exposition::sample(std::initializer_list<label> labels, double value) {
  expect(type::gauge);
  if (current_type_ == type::counter && !(value >= 0)) throw std::invalid_argument("a counter is never negative: " + current_);
  write_sample({}, labels.begin(), labels.size(), nullptr, format_value(value));
}

void exposition::sample(std::initializer_list<label> labels, std::uint64_t value) {
  expect(type::gauge);
  write_sample({}, labels.begin(), labels.size(), nullptr, std::to_string(value));
}

void exposition::sample(const std::vector<label>& labels, std::uint64_t value) {
  expect(type::gauge);
  write_sample({}, labels.data(), labels.size(), nullptr, std::to_string(value));
}

void exposition::histogram(std::initializer_list<label> labels, const metrics::histogram& h) {
  histogram(std::vector<label>(labels), h);
}

void exposition::histogram(const std::vector<label>& labels, const metrics::histogram& h) {
  expect(type::histogram);
  std::uint64_t cumulative = 0;
  const auto& bounds = h.upper_bounds();
  const auto& counts = h.bucket_counts();
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += counts[i];
    const std::string le = i < bounds.size() ? format_value(bounds[i]) : std::string("+Inf");
    const label bucket{"le", le};
    write_sample("_bucket", labels.data(), labels.size(), &bucket, std::to_string(cumulative));
  }
  write_sample("_sum", labels.data(), labels.size(), nullptr, format_value(h.sum()));
  write_sample("_count", labels.data(), labels.size(), nullptr, std::to_string(h.count()));
}

void exposition::counter(std::string_view name, std::string_view help, std::uint64_t value) {
  family(name, type::counter, help);
  sample({}, value);
}

void exposition::gauge(std::string_view name, std::string_view help, double value) {
  family(name, type::gauge, help);
  sample({}, value);
}

}  // namespace citrus::metrics
