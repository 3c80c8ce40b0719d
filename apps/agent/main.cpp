// citrus-agent: connects to the hub as an agent and executes the site operations of the commanders
// it trusts, for real, in a directory it owns (see site_executor.hpp for the layout).
//
// Threads: the event loop (websocket client, agent_runtime, timers) on the main thread; one worker
// thread for the blocking file work (site_worker); the logger's writer; the signal watcher.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "citrus/app/app_metrics.hpp"
#include "citrus/app/config_problems.hpp"
#include "citrus/app/console.hpp"
#include "citrus/app/json_logger.hpp"
#include "citrus/app/key_file.hpp"
#include "citrus/app/options.hpp"
#include "citrus/app/service_notify.hpp"
#include "citrus/app/shutdown.hpp"
#include "citrus/core/agent_runtime.hpp"
#include "citrus/core/commander_link.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/random.hpp"
#include "citrus/wspp/client.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "citrus/wspp/server.hpp"
#include "site_executor.hpp"
#include "site_worker.hpp"
#include "sqlite_journal.hpp"

namespace {

using namespace std::chrono_literals;
using citrus::field;
using citrus::log_level;

constexpr std::chrono::milliseconds backoff_initial = 100ms;
constexpr std::chrono::milliseconds backoff_max = 10s;
/// A session authenticated for this long resets the reconnect backoff when it ends.
constexpr std::chrono::milliseconds stable_session = 10s;
/// On shutdown: how long the running operation may take to reach a safe point and report.
constexpr std::chrono::milliseconds drain_limit = 5s;
/// On shutdown: how long the close handshake may take.
constexpr std::chrono::milliseconds close_limit = 3s;
/// A second SIGINT/SIGTERM later than this after the first stops at once.
constexpr std::chrono::milliseconds repeat_window = 1s;

/// The client's handler: forwards every event to the agent runtime and owns the connection policy
/// (reconnect with full-jitter backoff, the "connected" line, graceful shutdown). Loop thread only.
class hub_session final : public citrus::connection_handler {
 public:
  hub_session(citrus::wspp::event_loop& loop, citrus::agent_runtime& runtime, citrus::agent::site_worker& worker,
              citrus::logger& log, citrus::random_source& random, std::vector<std::string> urls)
      : loop_(loop), runtime_(runtime), worker_(worker), log_(log), backoff_(backoff_initial, backoff_max, random),
        urls_(std::move(urls)) {}

  void attach(citrus::wspp::client& client) { client_ = &client; }

  /// The first attempt. Errors here are configuration errors (bad URL, unreadable CA file).
  citrus::result<void> start() {
    log_.log(log_level::info, "hub_connecting", {field("url", urls_[current_])});
    return client_->connect(urls_[current_]);
  }

  void on_open(citrus::connection& conn) override {
    log_.log(log_level::info, "hub_connection_open", {field("connection", static_cast<std::int64_t>(conn.id().value()))});
    runtime_.on_open(conn);
  }

  void on_message(citrus::connection_id id, std::string_view text) override {
    runtime_.on_message(id, text);
    if (!online_ && runtime_.online()) {
      online_ = true;
      online_since_ = std::chrono::steady_clock::now();
      if (!announced_) {
        announced_ = true;
        citrus::app::print_line(citrus::app::stream::out, "citrus-agent connected");
      }
    }
  }

  void on_drain(citrus::connection_id id) override { runtime_.on_drain(id); }

  /// Authenticated at the hub on the current connection.
  bool online() const noexcept { return online_; }

  void on_close(citrus::connection_id id) override {
    runtime_.on_close(id);
    // The delays start again from the shortest only after a session that lasted: a hub that
    // accepts and then drops us at once is retried ever more slowly.
    if (online_ && std::chrono::steady_clock::now() - online_since_ >= stable_session) backoff_.reset();
    online_ = false;
    // The operations go on: their results are journaled, and a resend (or a cancel) of the backend
    // on the next connection gets them (agent_runtime, docs/protocol.md "Executed once, and cancel").
    if (stopping_) {
      loop_.stop();
      return;
    }
    const auto info = client_->last_close();
    const std::uint16_t remote = info ? info->remote_code : 1006;
    if (remote == static_cast<std::uint16_t>(citrus::close_code::auth_failed) ||
        remote == static_cast<std::uint16_t>(citrus::close_code::revoked)) {
      // Retrying fast cannot fix a wrong, expired or revoked key: wait the longest, and say so every time.
      log_.log(log_level::error, remote == static_cast<std::uint16_t>(citrus::close_code::revoked) ? "hub_key_revoked" : "hub_auth_failed",
               {field("hint", "check --agent-id and the key"), field("retry_ms", static_cast<std::int64_t>(backoff_max.count()))});
      schedule_reconnect(backoff_max);
      return;
    }
    if (remote == static_cast<std::uint16_t>(citrus::close_code::replaced)) {
      // Another connection holds this agent id: do not fight over the session (the hub refuses a
      // second take-over within its window, and this wait is shorter than that window).
      const std::chrono::milliseconds retry = citrus::hub_identity_in_use_retry;
      log_.log(log_level::error, "hub_session_replaced",
               {field("hint", "another process is connected with this --agent-id; this one waits"),
                field("reason", info ? info->remote_reason : std::string()),
                field("retry_ms", static_cast<std::int64_t>(retry.count()))});
      schedule_reconnect(retry);
      return;
    }
    log_.log(log_level::warn, "hub_connection_closed",
             {field("remote_code", static_cast<std::int64_t>(remote)), field("reason", info ? info->remote_reason : std::string())});
    schedule_reconnect(backoff_.next());
  }

  void on_connect_failed(const citrus::wspp::connect_failure& failure) {
    if (stopping_) {
      loop_.stop();
      return;
    }
    log_.log(log_level::warn, "hub_connect_failed",
             {field("reason", failure.reason), field("http_status", static_cast<std::int64_t>(failure.http_status))});
    schedule_reconnect(backoff_.next());
  }

  /// SIGINT/SIGTERM, on the loop thread. The running operation is abandoned at its next safe point
  /// (never between writing and switching `current`) and reports; then the connection is closed and
  /// the loop stops. A second signal, a second or more later, stops the loop at once (the worker is
  /// still joined: at worst the file operation in progress completes).
  void shutdown(int signal) {
    const auto now = std::chrono::steady_clock::now();
    if (stopping_) {
      // One keypress or `timeout` can deliver the signal twice within milliseconds: only a later
      // one means "stop now".
      if (now - stop_requested_ < repeat_window) return;
      log_.log(log_level::warn, "agent_stop_forced", {field("signal", static_cast<std::int64_t>(signal))});
      loop_.stop();
      return;
    }
    stopping_ = true;
    stop_requested_ = now;
    citrus::app::notify_service_manager("STOPPING=1");
    log_.log(log_level::info, "agent_stopping", {field("signal", static_cast<std::int64_t>(signal))});
    reconnect_.cancel();
    worker_.refuse_new();
    const auto deadline = std::chrono::steady_clock::now() + drain_limit;
    // Wait until every task has reported (its result reaches the commander), then close.
    drain_ = loop_.schedule_every(10ms, [this, deadline] {
      if (runtime_.running() > 0 && std::chrono::steady_clock::now() < deadline) return;
      drain_.cancel();
      close_connection();
    });
  }

 private:
  void close_connection() {
    using state = citrus::wspp::client::state;
    switch (client_->current_state()) {
      case state::idle:
        loop_.stop();
        return;
      case state::open:
      case state::connecting:  // connect_failed ("cancelled") follows, and stops the loop
        client_->close(citrus::close_code::going_away, "agent stopping");
        break;
      case state::closing: break;
    }
    close_guard_ = loop_.schedule(close_limit, [this] {
      log_.log(log_level::warn, "hub_close_timeout", {});
      loop_.stop();
    });
  }

  void schedule_reconnect(std::chrono::milliseconds delay) {
    log_.log(log_level::info, "hub_reconnect_scheduled", {field("delay_ms", static_cast<std::int64_t>(delay.count()))});
    reconnect_ = loop_.schedule(delay, [this] {
      if (stopping_) return;
      current_ = (current_ + 1) % urls_.size();  // several hubs (joined through NATS): the next one
      log_.log(log_level::info, "hub_connecting", {field("url", urls_[current_])});
      if (auto started = client_->connect(urls_[current_]); !started) {
        log_.log(log_level::error, "hub_connect_error", {field("error", started.error().message())});
        schedule_reconnect(backoff_.next());
      }
    });
  }

  citrus::wspp::event_loop& loop_;
  citrus::agent_runtime& runtime_;
  citrus::agent::site_worker& worker_;
  citrus::logger& log_;
  citrus::backoff backoff_;
  std::vector<std::string> urls_;  ///< not empty; each reconnection tries the next
  std::size_t current_ = 0;
  citrus::wspp::client* client_ = nullptr;
  citrus::wspp::timer reconnect_, drain_, close_guard_;
  bool online_ = false;
  std::chrono::steady_clock::time_point online_since_{};
  bool announced_ = false;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point stop_requested_{};
};

/// The metrics listener's WebSocket side: it serves HTTP only, so an upgrade is closed at once.
class http_only final : public citrus::connection_handler {
 public:
  void on_open(citrus::connection& conn) override { conn.close(citrus::close_code::policy_violation, "metrics only"); }
  void on_message(citrus::connection_id, std::string_view) override {}
  void on_close(citrus::connection_id) override {}
};

std::string metrics_text(const hub_session& session, const citrus::agent_runtime& runtime,
                         const citrus::app::json_logger& log, const citrus::app::http_metrics& http) {
  citrus::metrics::exposition out;
  citrus::app::append_build_info(out);
  if (auto process = citrus::app::read_process_sample()) citrus::app::append_process_metrics(out, *process);
  out.gauge("citrus_agent_hub_online", "1 while the hub has accepted this agent's credentials.", session.online() ? 1 : 0);
  out.gauge("citrus_agent_operations_running", "Site operations running or waiting for the worker.",
            static_cast<double>(runtime.running()));
  http.append(out);
  out.counter("citrus_agent_log_dropped_total", "Log lines dropped (queue full).", log.dropped());
  return out.take();
}

/// Creates `root` if needed and proves it is a writable directory. Empty on success, else the reason.
std::string prepare_root(const std::filesystem::path& root) {
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) return "cannot create it: " + ec.message();
  if (!std::filesystem::is_directory(root, ec)) return "it is not a directory";
  const std::filesystem::path probe = root / (".citrus-write-check-" + std::to_string(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return "it is not writable: " + std::error_code(errno, std::generic_category()).message();
  const bool wrote = ::write(fd, "ok", 2) == 2;
  const int write_errno = errno;
  ::close(fd);
  ::unlink(probe.c_str());
  if (!wrote) return "it is not writable: " + std::error_code(write_errno, std::generic_category()).message();
  return {};
}

int fail_config(const std::string& message) {
  citrus::app::print_error("citrus-agent", message);
  return 2;
}

int run(int argc, char** argv) {
  citrus::app::options opts(
      "citrus-agent", "executes site operations for trusted commanders, in a directory it owns",
      {
          {"hub-url", "CITRUS_HUB_URL", "ws://127.0.0.1:7000/",
           "The hub's WebSocket URL (ws:// or wss://); several, comma-separated, for hubs joined through NATS: each "
           "reconnection tries the next."},
          {"agent-id", "CITRUS_AGENT_ID", "agent-1", "This agent's id, as registered with the hub."},
          {"key-file", "CITRUS_AGENT_KEY_FILE", "",
           "File holding the agent's key, rewritten when the key is rotated. Without it, $CITRUS_AGENT_KEY is the key "
           "(and it is never rotated)."},
          {"trust", "CITRUS_AGENT_TRUST", "backend-1", "Comma-separated commander ids whose commands run here."},
          {"root", "CITRUS_AGENT_ROOT", "data/sites", "Directory the sites live in (created if missing)."},
          {"step-delay-ms", "CITRUS_AGENT_STEP_DELAY_MS", "250", "Pause between deploy steps, in ms (0..60000)."},
          {"keep-releases", "CITRUS_AGENT_KEEP_RELEASES", "5", "Releases kept per site after a deploy (1..1000)."},
          {"journal", "CITRUS_AGENT_JOURNAL", "",
           "SQLite file of the operations this agent ran, so that each runs once (default: <root>/.journal.sqlite)."},
          {"log-level", "CITRUS_LOG_LEVEL", "info", "debug, info, warn or error (JSON lines on stderr)."},
          {"tls-ca-file", "CITRUS_TLS_CA_FILE", "", "PEM file of the CAs trusted for wss:// (default: the system's)."},
          {"metrics-listen", "", "",
           "HOST:PORT to serve GET /metrics and /healthz on (port 0: any free port; default: no listener)."},
          {"metrics-token-file", "", "",
           "File holding the token GET /metrics requires as \"Authorization: Bearer <token>\" (default: /metrics is open)."},
          {"ready-file", "", "", "Write the metrics listener's bound port to this file once listening (for tests)."},
          {"check-config", "", "", "Check the options and files, print \"configuration OK\" and exit (errors: one line each, exit code 2).",
           true, true},
      });
  // Every check below records its problem and goes on: one run names them all, one line each.
  citrus::app::config_problems problems("citrus-agent");
  if (!opts.parse(argc, argv)) {
    if (opts.help_requested() || opts.version_requested()) {
      citrus::app::write_whole(citrus::app::stream::out, opts.help_requested() ? opts.usage() : opts.version_line() + "\n");
      return 0;
    }
    for (const auto& e : opts.errors()) problems.add(e);
    if (!opts.values_usable()) return problems.report();
  }
  if (!opts.positional().empty()) problems.add("unexpected argument '" + opts.positional().front() + "' (see --help)");

  const auto level = citrus::app::json_logger::parse_level(opts.get("log-level"));
  if (!level) problems.add("--log-level must be debug, info, warn or error");
  const std::string agent_id = opts.get("agent-id");
  if (!citrus::is_valid_wire_id(agent_id)) problems.add("--agent-id must be 1..128 characters of [A-Za-z0-9._:-]");

  std::string key;
  if (opts.has("key-file")) {
    auto text = citrus::app::read_secret_file(opts.get("key-file"));
    if (!text) problems.add("cannot read the key file '" + opts.get("key-file") + "'");
    else if (text->empty()) problems.add("the key file '" + opts.get("key-file") + "' is empty");
    else key = std::move(*text);
  } else if (const char* env = std::getenv("CITRUS_AGENT_KEY"); env && *env) {
    key = env;
  } else {
    problems.add("no agent key: pass --key-file FILE or set CITRUS_AGENT_KEY");
  }
  if (key.size() > 256) problems.add("the agent key is longer than 256 bytes");

  const std::vector<std::string> trusted = citrus::app::split_list(opts.get("trust"));
  if (trusted.empty()) problems.add("--trust needs at least one commander id");
  for (const auto& id : trusted)
    if (!citrus::is_valid_wire_id(id)) problems.add("--trust: '" + id + "' is not a valid commander id");

  const auto delay = opts.get_int("step-delay-ms");
  if (!delay || *delay < 0 || *delay > 60000) problems.add("--step-delay-ms must be an integer in 0..60000");
  const auto keep = opts.get_int("keep-releases");
  if (!keep || *keep < 1 || *keep > 1000) problems.add("--keep-releases must be an integer in 1..1000");

  const std::string hub_url = opts.get("hub-url");
  const std::vector<std::string> hub_urls = citrus::app::split_list(hub_url);
  if (hub_urls.empty()) problems.add("--hub-url must be a ws:// or wss:// URL");
  for (const auto& url : hub_urls)
    if (url.rfind("ws://", 0) != 0 && url.rfind("wss://", 0) != 0)
      problems.add("--hub-url must be a ws:// or wss:// URL ('" + url + "' is not)");

  const std::filesystem::path root = opts.get("root");
  if (root.empty()) problems.add("--root must not be empty");
  if (!opts.get("tls-ca-file").empty() && !citrus::app::read_secret_file(opts.get("tls-ca-file")))
    problems.add("cannot read --tls-ca-file '" + opts.get("tls-ca-file") + "'");
  std::string metrics_host;
  std::uint16_t metrics_port = 0;
  const bool serve_metrics = !opts.get("metrics-listen").empty();
  if (serve_metrics && !citrus::app::split_host_port(opts.get("metrics-listen"), metrics_host, metrics_port))
    problems.add("--metrics-listen must be HOST:PORT");
  std::string metrics_token;  // empty: /metrics is open
  if (!opts.get("metrics-token-file").empty()) {
    std::string error;
    auto token = citrus::app::read_token_file(opts.get("metrics-token-file"), error);
    if (token) metrics_token = std::move(*token);
    else problems.add("--metrics-token-file: " + error);
  }
  if (!problems.empty()) return problems.report();
  if (opts.has("check-config")) {  // before prepare_root: checking creates nothing
    citrus::app::print_line(citrus::app::stream::out, "citrus-agent: configuration OK");
    return 0;
  }
  if (auto problem = prepare_root(root); !problem.empty())
    return fail_config("--root '" + root.string() + "': " + problem);

  citrus::app::json_logger log("agent", *level);
  citrus::wspp::event_loop loop(log);
  citrus::agent::site_executor executor(citrus::agent::site_executor_config{root, static_cast<std::size_t>(*keep)}, log);
  citrus::agent::site_worker worker(
      executor, [&loop](std::function<void()> task) { loop.post(std::move(task)); }, std::chrono::milliseconds(*delay), log);
  const citrus::operation_registry operations = citrus::operation_registry::defaults();
  const citrus::system_clock clk;
  const std::filesystem::path journal_file = opts.get("journal").empty() ? root / ".journal.sqlite" : std::filesystem::path(opts.get("journal"));
  auto journal = citrus::agent::sqlite_journal::open(journal_file, log);
  if (!journal) {
    citrus::app::print_error("citrus-agent", "cannot open the operation journal '" + journal_file.string() + "'");
    return 1;
  }
  citrus::agent_runtime_config runtime_config{agent_id, key, trusted, {}};
  // A key rotated over the session (the agent asked, or the hub found the key past its maximum age)
  // replaces the key file before it is used; with the key in $CITRUS_AGENT_KEY there is nowhere to keep
  // a new one, so the agent does not rotate.
  if (opts.has("key-file"))
    runtime_config.save_key = [path = opts.get("key-file")](const std::string& fresh) {
      return citrus::app::replace_secret_file(path, fresh);
    };
  citrus::agent_runtime runtime(std::move(runtime_config), operations, **journal, log, clk);
  // What the previous process left running is settled before any command: a repeat gets the answer.
  if (auto recovered = runtime.recover(); !recovered) {
    citrus::app::print_error("citrus-agent", "cannot read the operation journal '" + journal_file.string() + "'");
    return 1;
  }
  if (auto bound = worker.bind(runtime); !bound) {
    citrus::app::print_error("citrus-agent", "cannot register the site operations: " + bound.error().message());
    return 1;
  }
  citrus::system_random random;
  hub_session session(loop, runtime, worker, log, random, hub_urls);
  citrus::wspp::client_options client_options;
  client_options.tls_ca_file = opts.get("tls-ca-file");
  citrus::wspp::client client(loop, session, client_options, log);
  client.set_connect_failed_handler([&session](const citrus::wspp::connect_failure& f) { session.on_connect_failed(f); });
  session.attach(client);

  log.log(log_level::info, "agent_starting",
          {field("agent", agent_id), field("root", root.string()), field("trusted", opts.get("trust")),
           field("step_delay_ms", static_cast<std::int64_t>(*delay))});
  if (auto started = session.start(); !started)
    return fail_config("cannot connect to --hub-url '" + hub_url + "': " + started.error().message());

  // GET /metrics and /healthz on their own port (--metrics-listen): the agent accepts no other connection.
  http_only no_websockets;
  citrus::app::http_metrics http_metrics("citrus_agent");
  std::unique_ptr<citrus::wspp::server> metrics_server;
  if (serve_metrics) {
    citrus::wspp::server_options server_options;
    server_options.bind_address = metrics_host;
    server_options.port = metrics_port;
    server_options.max_connections = 64;
    server_options.max_http_body_bytes = 1024;
    metrics_server = std::make_unique<citrus::wspp::server>(loop, no_websockets, server_options, log);
    metrics_server->set_http_handler([&](const citrus::wspp::http_request& request) {
      return citrus::app::serve_health_and_metrics(
          request, metrics_token, [&] { return metrics_text(session, runtime, log, http_metrics); }, http_metrics);
    });
    auto bound = metrics_server->listen();
    if (!bound) {
      citrus::app::print_error("citrus-agent", "cannot listen on --metrics-listen " + opts.get("metrics-listen") + ": " +
                                                   bound.error().message());
      return 1;
    }
    log.log(log_level::info, "metrics_listening", {field("port", static_cast<std::int64_t>(*bound))});
    if (!opts.get("ready-file").empty()) {
      if (std::FILE* f = std::fopen(opts.get("ready-file").c_str(), "w")) {
        std::fprintf(f, "%u\n", static_cast<unsigned>(*bound));
        std::fclose(f);
      }
    }
  }

  citrus::app::signal_watcher signals([&loop, &session](int signal) { loop.post([&session, signal] { session.shutdown(signal); }); });
  // Ready once configured and running: the agent reconnects to the hub by itself, so a hub that is
  // down must not fail the agent's start.
  loop.post([] { citrus::app::notify_service_manager("READY=1\nSTATUS=connecting to the hub"); });
  // Re-authenticates in band before the hub's session lifetime ends (auth_ok's expires_in).
  citrus::wspp::timer reauth_ticker = loop.schedule_every(250ms, [&runtime] { runtime.tick(); });
  loop.run();
  reauth_ticker.cancel();
  worker.stop();  // joins: the running step has finished or been abandoned at a safe point
  log.log(log_level::info, "agent_stopped", {});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  citrus::app::signal_watcher::block_signals();  // before any thread starts
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    citrus::app::print_error("citrus-agent", std::string("fatal: ") + e.what());
    return 1;
  }
}
