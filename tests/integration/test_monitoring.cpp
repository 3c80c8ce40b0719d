// The monitoring samples (docs/monitoring/) against the real executables: every metric the alert
// rules and the Grafana dashboard use must be one that citrus-backend, citrus-hub or citrus-agent
// exports, and what they export must be well-formed Prometheus text with bounded labels.
#include <doctest/doctest.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "harness.hpp"
#include "hostile.hpp"

using namespace citrus::it;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// `promtool` on $PATH (Debian's prometheus package, which scripts/deps.sh installs), or "".
std::string find_promtool() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/promtool";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

/// The expressions of a Prometheus rule file: `expr: ...` on one line, or `expr: |` and the lines
/// indented below it.
std::vector<std::string> rule_expressions(const std::string& yaml) {
  std::vector<std::string> out;
  std::istringstream in(yaml);
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto at = lines[i].find("expr:");
    if (at == std::string::npos || lines[i].find_first_not_of(' ') != at) continue;
    std::string rest = lines[i].substr(at + 5);
    rest.erase(0, rest.find_first_not_of(' '));
    if (rest == "|" || rest == ">") {
      rest.clear();
      while (i + 1 < lines.size() && lines[i + 1].find_first_not_of(' ') > at) rest += lines[++i] + "\n";
    }
    out.push_back(rest);
  }
  return out;
}

/// The "expr" strings of a Grafana dashboard (JSON escapes undone).
std::vector<std::string> dashboard_expressions(const std::string& json) {
  std::vector<std::string> out;
  const std::string key = "\"expr\":";
  for (auto at = json.find(key); at != std::string::npos; at = json.find(key, at + 1)) {
    auto open = json.find('"', at + key.size());
    REQUIRE(open != std::string::npos);
    std::string value;
    for (std::size_t i = open + 1; i < json.size() && json[i] != '"'; ++i) {
      if (json[i] == '\\' && i + 1 < json.size()) ++i;
      value.push_back(json[i]);
    }
    out.push_back(value);
  }
  return out;
}

/// Metric names in a PromQL expression: identifiers starting citrus_ or process_, outside quoted
/// label values (functions, keywords and label names never start so).
std::set<std::string> metric_names(const std::string& expr) {
  std::set<std::string> out;
  auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':'; };
  for (std::size_t i = 0; i < expr.size();) {
    if (expr[i] == '"') {
      i = expr.find('"', i + 1);
      if (i == std::string::npos) break;
      ++i;
      continue;
    }
    if (!ident(expr[i]) || (i > 0 && ident(expr[i - 1]))) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < expr.size() && ident(expr[end])) ++end;
    const std::string word = expr.substr(i, end - i);
    if (word.rfind("citrus_", 0) == 0 || word.rfind("process_", 0) == 0) out.insert(word);
    i = end;
  }
  return out;
}

/// Families (name -> type) of an exposition, after checking every line: HELP then TYPE per family,
/// each sample of a declared family (histograms: _bucket/_sum/_count), `name{labels} value`.
std::map<std::string, std::string> exported_families(const std::string& text, const char* who) {
  INFO(who);
  std::map<std::string, std::string> families;
  std::istringstream in(text);
  std::string line, last_help;
  while (std::getline(in, line)) {
    CAPTURE(line);
    if (line.rfind("# HELP ", 0) == 0) {
      last_help = line.substr(7, line.find(' ', 7) - 7);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      CHECK(name == last_help);
      CHECK((type == "counter" || type == "gauge" || type == "histogram"));
      CHECK(families.count(name) == 0);  // a family is never split
      families[name] = type;
      continue;
    }
    REQUIRE(!line.empty());
    const auto name_end = line.find_first_of("{ ");
    REQUIRE(name_end != std::string::npos);
    std::string name = line.substr(0, name_end);
    if (!families.count(name))
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string s = suffix;
        if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
            families.count(name.substr(0, name.size() - s.size())) &&
            families[name.substr(0, name.size() - s.size())] == "histogram")
          name = name.substr(0, name.size() - s.size());
      }
    CHECK(families.count(name) == 1);
    std::size_t value_at = name_end;
    if (line[name_end] == '{') {
      value_at = line.find("} ", name_end);
      REQUIRE(value_at != std::string::npos);
      ++value_at;
    }
    const std::string value = line.substr(value_at + 1);
    char* end = nullptr;
    std::strtod(value.c_str(), &end);
    CHECK((value == "+Inf" || (end && *end == '\0' && !value.empty())));
  }
  return families;
}

/// The names an expression may use for an exported family: itself, and a histogram's series.
std::set<std::string> usable_names(const std::map<std::string, std::string>& families) {
  std::set<std::string> out;
  for (const auto& [name, type] : families) {
    out.insert(name);
    if (type == "histogram")
      for (const char* suffix : {"_bucket", "_sum", "_count"}) out.insert(name + suffix);
  }
  return out;
}

/// Names used by `exprs` that are not in `usable`.
std::set<std::string> unknown_names(const std::vector<std::string>& exprs, const std::set<std::string>& usable) {
  std::set<std::string> out;
  for (const auto& e : exprs)
    for (const auto& name : metric_names(e))
      if (!usable.count(name)) out.insert(name);
  return out;
}

std::string scrape(const std::string& url) {
  auto r = http("GET", url + "/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.headers.find("text/plain; version=0.0.4") != std::string::npos);
  return r.body;
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("monitoring: every metric the alert rules and the dashboard use is exported") {
    platform::options options;
    options.agent_metrics = true;
    platform p(options);
    p.start_all();
    const std::string agent_url = p.agent_metrics_url();
    const std::string hub_url = "http://127.0.0.1:" + std::to_string(p.hub_port);

    // A real command (a site's creation runs on the agent) fills the latency histograms, and a few
    // requests the HTTP ones.
    const std::string alice = p.login("alice", "alice-pw");
    auto created = http("POST", p.backend_url() + "/api/sites", R"({"name":"mon","url":"https://mon.test"})", {bearer(alice)});
    REQUIRE(created.status == 201);
    CHECK(http("GET", p.backend_url() + "/api/sites/" + std::to_string(json_int(created.body, "id")), {}, {bearer(alice)}).status == 200);
    CHECK(http("GET", p.backend_url() + "/api/sites/999999", {}, {bearer(alice)}).status == 403);
    CHECK(http("GET", p.backend_url() + "/no/such/path/12345").status == 404);
    const std::string ok_count = R"(citrus_backend_command_duration_seconds_count{outcome="ok"})";
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (metric(scrape(p.backend_url()), ok_count) < 1 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(100ms);

    const std::string backend_text = scrape(p.backend_url());
    const std::string hub_text = scrape(hub_url);
    const std::string agent_text = scrape(agent_url);
    std::map<std::string, std::string> all;
    for (const auto& [text, who] : {std::pair<const std::string&, const char*>{backend_text, "backend"},
                                    {hub_text, "hub"}, {agent_text, "agent"}}) {
      auto families = exported_families(text, who);
      INFO(who);
      // On all three: the build and the standard process metrics.
      for (const char* name : {"citrus_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes",
                               "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                               "process_start_time_seconds"})
        CHECK(families.count(name) == 1);
      CHECK(text.find("citrus_build_info{version=\"") != std::string::npos);
      CHECK(metric(text, "process_resident_memory_bytes") > 0);
      all.insert(families.begin(), families.end());
    }

    // Latency at both ends of the command, HTTP by route pattern (never a raw path or id), presence per agent.
    CHECK(metric(backend_text, ok_count) >= 1);
    CHECK(metric(hub_text, R"(citrus_hub_command_duration_seconds_count{outcome="ok"})") >= 1);
    CHECK(metric(backend_text, R"(citrus_backend_http_requests_total{route="/api/sites",method="POST",code="201"})") == 1);
    CHECK(metric(backend_text, R"(citrus_backend_http_requests_total{route="/api/sites/:id",method="GET",code="200"})") == 1);
    CHECK(metric(backend_text, R"(citrus_backend_http_requests_total{route="/api/sites/:id",method="GET",code="403"})") == 1);
    CHECK(metric(backend_text, R"(citrus_backend_http_requests_total{route="unmatched",method="GET",code="404"})") >= 1);
    // A raw path or id in a label would read as one; a bare number could be any sample's value.
    CHECK(backend_text.find("/999999") == std::string::npos);
    CHECK(backend_text.find("/no/such") == std::string::npos);
    CHECK(metric(hub_text, R"(citrus_hub_agent_online{agent="agent-1"})") == 1);
    CHECK(metric(hub_text, "citrus_hub_agents_online") == 1);
    CHECK(metric(hub_text, R"(citrus_hub_auth_total{role="agent",outcome="ok"})") >= 1);
    CHECK(metric(hub_text, R"(citrus_hub_auth_total{role="commander",outcome="ok"})") >= 1);
    CHECK(metric(agent_text, "citrus_agent_hub_online") == 1);

    const std::set<std::string> usable = usable_names(all);
    const auto rules = rule_expressions(read_text(CITRUS_SOURCE_DIR "/docs/monitoring/citrus-alerts.yml"));
    const auto panels = dashboard_expressions(read_text(CITRUS_SOURCE_DIR "/docs/monitoring/citrus-dashboard.json"));
    CHECK(rules.size() >= 15);
    CHECK(panels.size() >= 20);
    CHECK(unknown_names(rules, usable) == std::set<std::string>{});
    CHECK(unknown_names(panels, usable) == std::set<std::string>{});
    // What the rules must watch: the hub link, the database, audit refusals, flagged events, errors, latency.
    std::set<std::string> watched;
    for (const auto& e : rules) for (const auto& name : metric_names(e)) watched.insert(name);
    for (const char* name : {"citrus_backend_hub_link_online", "citrus_backend_audit_unacknowledged",
                             "citrus_hub_audit_refused_total", "citrus_backend_audit_refused_total",
                             "citrus_backend_http_requests_total", "citrus_hub_command_duration_seconds_count",
                             "citrus_backend_command_duration_seconds_bucket",
                             "citrus_backend_http_request_duration_seconds_bucket"})
      CHECK(watched.count(name) == 1);
    // The check itself catches a name nobody exports (the old, pre-label ones among them).
    CHECK(unknown_names({R"(rate(citrus_hub_auth_failed_total[5m]) > 0 and citrus_hub_auth_total{outcome="failed"})"}, usable) ==
          std::set<std::string>{"citrus_hub_auth_failed_total"});
  }

  TEST_CASE("monitoring: the alert rules pass promtool check rules, which refuses a broken expression") {
    // Prometheus' own parser: the PromQL of every rule, its duration, labels and annotations (the test
    // above checks only that the metric names exist).
    const std::string promtool = find_promtool();
    REQUIRE_MESSAGE(!promtool.empty(), "promtool is not on $PATH: scripts/deps.sh installs it (Debian package prometheus)");
    const auto [code, out] = run_command({promtool, "check", "rules", CITRUS_SOURCE_DIR "/docs/monitoring/citrus-alerts.yml"});
    INFO(out);
    CHECK(code == 0);
    CHECK(out.find("SUCCESS") != std::string::npos);

    char name[] = "/tmp/citrus-rules-XXXXXX";
    const int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::close(fd);
    std::ofstream(name) << "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n"
                           "        expr: rate(citrus_hub_messages_received_total[5m] > 1\n";
    const auto [broken_code, broken_out] = run_command({promtool, "check", "rules", name});
    ::unlink(name);
    INFO(broken_out);
    CHECK(broken_code != 0);
    CHECK(broken_out.find("unclosed left parenthesis") != std::string::npos);
  }

  TEST_CASE("monitoring: --metrics-max-agents bounds the per-agent series, the count stays; bad values are refused") {
    platform::options options;
    options.hub_args = {"--metrics-max-agents", "0"};
    platform p(options);
    p.start_all();
    const std::string hub_text = scrape("http://127.0.0.1:" + std::to_string(p.hub_port));
    CHECK(metric(hub_text, "citrus_hub_agents_online") == 1);
    CHECK(hub_text.find("citrus_hub_agent_online{") == std::string::npos);
    CHECK(hub_text.find("# TYPE citrus_hub_agent_online gauge") != std::string::npos);

    CHECK(run_command({CITRUS_HUB_EXE, "--metrics-max-agents", "-1", "--check-config"}).first == 2);
    const std::string key_file = p.dir + "/agent.key";
    std::ofstream(key_file) << p.agent_key;
    CHECK(run_command({CITRUS_AGENT_EXE, "--key-file", key_file, "--metrics-listen", "nowhere", "--check-config"}).first == 2);
    CHECK(run_command({CITRUS_AGENT_EXE, "--key-file", key_file, "--metrics-listen", "127.0.0.1:0", "--check-config"}).first == 0);
  }
}
