#include <doctest/doctest.h>

#include <limits>
#include <stdexcept>
#include <string>

#include "citrus/core/metrics.hpp"

using namespace citrus::metrics;

TEST_CASE("histogram: le is inclusive, the last bucket is +Inf, sum and count follow") {
  histogram h({0.1, 1, 10});
  h.observe(0.1);   // exactly on a bound: that bucket
  h.observe(0.05);
  h.observe(0.5);
  h.observe(11.0);  // above every bound: +Inf
  h.observe(std::chrono::milliseconds(2500));
  REQUIRE(h.bucket_counts().size() == 4);
  CHECK(h.bucket_counts()[0] == 2);
  CHECK(h.bucket_counts()[1] == 1);
  CHECK(h.bucket_counts()[2] == 1);
  CHECK(h.bucket_counts()[3] == 1);
  CHECK(h.count() == 5);
  CHECK(h.sum() == doctest::Approx(0.1 + 0.05 + 0.5 + 11.0 + 2.5));
}

TEST_CASE("histogram: bounds must be finite and strictly increasing") {
  CHECK_THROWS_AS(histogram({1, 1}), std::invalid_argument);
  CHECK_THROWS_AS(histogram({2, 1}), std::invalid_argument);
  CHECK_THROWS_AS(histogram({1, std::numeric_limits<double>::infinity()}), std::invalid_argument);
  CHECK_NOTHROW(histogram{command_latency_buckets()});
  CHECK_NOTHROW(histogram{http_latency_buckets()});
}

TEST_CASE("exposition: HELP and TYPE once per family, labels in the order given") {
  exposition out;
  out.counter("citrus_x_received_total", "Messages received.", 7);
  out.family("citrus_x_auth_total", type::counter, "Authentications by role and outcome.");
  out.sample({{"role", "agent"}, {"outcome", "ok"}}, std::uint64_t{3});
  out.sample({{"role", "agent"}, {"outcome", "failed"}}, std::uint64_t{0});
  out.gauge("citrus_x_ratio", "A ratio.", 0.25);
  CHECK(out.text() ==
        "# HELP citrus_x_received_total Messages received.\n"
        "# TYPE citrus_x_received_total counter\n"
        "citrus_x_received_total 7\n"
        "# HELP citrus_x_auth_total Authentications by role and outcome.\n"
        "# TYPE citrus_x_auth_total counter\n"
        "citrus_x_auth_total{role=\"agent\",outcome=\"ok\"} 3\n"
        "citrus_x_auth_total{role=\"agent\",outcome=\"failed\"} 0\n"
        "# HELP citrus_x_ratio A ratio.\n"
        "# TYPE citrus_x_ratio gauge\n"
        "citrus_x_ratio 0.25\n");
}

TEST_CASE("exposition: label values and help text are escaped") {
  exposition out;
  out.family("citrus_x_agent_online", type::gauge, "Back\\slash and\nnewline.");
  out.sample({{"agent", "a\"b\\c\nd"}}, 1.0);
  CHECK(out.text() ==
        "# HELP citrus_x_agent_online Back\\\\slash and\\nnewline.\n"
        "# TYPE citrus_x_agent_online gauge\n"
        "citrus_x_agent_online{agent=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST_CASE("exposition: a histogram writes cumulative buckets, _sum and _count") {
  histogram h({0.5, 2});
  h.observe(0.25);
  h.observe(1.0);
  h.observe(3.0);
  exposition out;
  out.family("citrus_x_duration_seconds", type::histogram, "Durations.");
  out.histogram({{"outcome", "ok"}}, h);
  CHECK(out.text() ==
        "# HELP citrus_x_duration_seconds Durations.\n"
        "# TYPE citrus_x_duration_seconds histogram\n"
        "citrus_x_duration_seconds_bucket{outcome=\"ok\",le=\"0.5\"} 1\n"
        "citrus_x_duration_seconds_bucket{outcome=\"ok\",le=\"2\"} 2\n"
        "citrus_x_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 3\n"
        "citrus_x_duration_seconds_sum{outcome=\"ok\"} 4.25\n"
        "citrus_x_duration_seconds_count{outcome=\"ok\"} 3\n");
}

TEST_CASE("exposition: misuse is refused") {
  exposition out;
  CHECK_THROWS_AS(out.sample({}, std::uint64_t{1}), std::invalid_argument);          // no family yet
  CHECK_THROWS_AS(out.counter("citrus_x_received", "no _total", 1), std::invalid_argument);
  CHECK_THROWS_AS(out.gauge("9lives", "bad name", 1), std::invalid_argument);
  CHECK_THROWS_AS(out.gauge("citrus-x", "bad name", 1), std::invalid_argument);
  out.gauge("citrus_x_up", "Up.", 1);
  CHECK_THROWS_AS(out.gauge("citrus_x_up", "again", 1), std::invalid_argument);    // families are never split
  CHECK_THROWS_AS(out.sample({{"__name", "x"}}, 1.0), std::invalid_argument);     // reserved label name
  CHECK_THROWS_AS(out.sample({{"a-b", "x"}}, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(out.histogram({}, histogram({1})), std::invalid_argument);       // a gauge family
  out.family("citrus_x_seconds", type::histogram, "H.");
  CHECK_THROWS_AS(out.sample({}, 1.0), std::invalid_argument);                   // a histogram family
  CHECK_THROWS_AS(out.histogram({{"le", "1"}}, histogram({1})), std::invalid_argument);
  out.family("citrus_x_events_total", type::counter, "C.");
  CHECK_THROWS_AS(out.sample({}, -1.0), std::invalid_argument);                  // counters never go down
}

TEST_CASE("format_value: integers plainly, the rest shortest, infinities and NaN by name") {
  CHECK(format_value(42) == "42");
  CHECK(format_value(0.005) == "0.005");
  CHECK(format_value(-3.5) == "-3.5");
  CHECK(format_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(format_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
  CHECK(is_valid_metric_name("process_cpu_seconds_total"));
  CHECK(is_valid_metric_name("ns:rule_name"));
  CHECK_FALSE(is_valid_metric_name(""));
  CHECK(is_valid_label_name("outcome"));
  CHECK_FALSE(is_valid_label_name("1x"));
}
