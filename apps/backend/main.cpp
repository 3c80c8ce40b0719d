// citrus-backend: the users' REST API and WebSocket, and the commander link to the hub, on one
// event loop. Wiring only: the logic lives in citrus::core (site_service, user_gateway,
// commander_link, login_service, credential_service, rest_api), citrus::jwt, citrus::sqlite or
// citrus::postgres (--db), and citrus::wspp.
//
//   citrus-backend [serve] [options]          run the server (the default)
//   citrus-backend init [--config-dir D] ...  a starter configuration, keys and JWT secret
//   citrus-backend user add NAME [--admin]    password from stdin; prints the user id
//   citrus-backend user delete NAME           the user and their sites; their tokens stop working
//   citrus-backend agent register ID --trust C[,..] | agent rotate ID [--overlap-s N]
//   citrus-backend commander register ID --agents A[,..]|*
//   citrus-backend hub register ID
//   citrus-backend audit [--kind K] [--limit N] [--since S]   the audit trail, newest first, JSON lines
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backend.hpp"
#include "citrus/app/app_metrics.hpp"
#include "citrus/app/async_audit.hpp"
#include "citrus/app/config_problems.hpp"
#include "citrus/app/console.hpp"
#include "citrus/app/json_logger.hpp"
#include "citrus/app/key_file.hpp"
#include "citrus/app/listen_error.hpp"
#include "citrus/app/open_storage.hpp"
#include "citrus/app/options.hpp"
#include "citrus/app/service_notify.hpp"
#include "citrus/app/shutdown.hpp"
#include "citrus/core/clock.hpp"
#include "citrus/core/commander_link.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/random.hpp"
#include "citrus/backend/backend_service.hpp"
#ifdef CITRUS_HAVE_NATS
#include "citrus/nats/nats_user_fanout.hpp"
#endif
#include "citrus/backend/rest_api.hpp"
#include "citrus/backend/site_recovery.hpp"
#include "citrus/core/storage_executor.hpp"
#include "citrus/jwt/jwt_token_service.hpp"
#include "citrus/wspp/client.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "citrus/wspp/server.hpp"
#include "citrus/worker/storage_worker.hpp"

namespace citrus::backend {
namespace {

using namespace std::chrono_literals;

constexpr const char* commands_usage =
    "usage: citrus-backend [serve] [options]        run the backend (the default)\n"
    "       citrus-backend init [--config-dir DIR] [--data-dir DIR]   keys, JWT secret and configuration files\n"
    "       citrus-backend user add NAME [--admin]   create a user (password: first line of stdin)\n"
    "       citrus-backend user delete NAME          delete a user and their sites (their tokens stop working)\n"
    "       citrus-backend agent register ID --trust COMMANDER[,...]\n"
    "       citrus-backend agent rotate ID [--overlap-s SECONDS]\n"
    "       citrus-backend commander register ID --agents AGENT[,...]|*\n"
    "       citrus-backend hub register ID\n"
    "       citrus-backend audit [--kind KIND] [--limit N] [--since UNIX_SECONDS]   review the audit trail\n"
    "       citrus-backend audit --unacknowledged | --flagged   flagged events (with ids) for review\n"
    "       citrus-backend audit verify [--from ID] [--to ID]   check the hash chain (exit 0 only when intact)\n"
    "       citrus-backend audit ack ID                  acknowledge a flagged event\n"
    "Every command takes --help.\n";

// ------------------------------------------------------------------------------------------ options

std::vector<app::option_spec> serve_specs() {
  return {
      {"listen", "CITRUS_BACKEND_LISTEN", "127.0.0.1:8080", "HOST:PORT for HTTP and the users' WebSocket (port 0: any free port)", false},
      {"db", "CITRUS_DB", "data/citrus.db", "SQLite database file (created if missing), or a postgresql:// URL", false},
      {"db-busy-timeout-ms", "CITRUS_DB_BUSY_TIMEOUT_MS", "5000", "how long a database write waits for another process's lock (PostgreSQL: how long a statement may run) before the request fails with 503 storage_unavailable (100..60000)", false},
      {"hub-url", "CITRUS_HUB_URL", "ws://127.0.0.1:7000/", "the hub's WebSocket URL (ws:// or wss://)", false},
      {"hub-ca-file", "CITRUS_HUB_CA_FILE", "", "PEM CA bundle to verify a wss:// hub (default: the system's)", false},
      {"nats-url", "CITRUS_NATS_URL", "", "NATS servers (nats://HOST:PORT, comma-separated) shared with the other backends: a user's updates reach her sessions on every backend (docs/scaling.md). Default: none", false},
      {"nats-user", "CITRUS_NATS_USER", "", "this backend's NATS user", false},
      {"nats-password-file", "CITRUS_NATS_PASSWORD_FILE", "", "file holding the NATS user's password (else $CITRUS_NATS_PASSWORD)", false},
      {"commander-id", "CITRUS_COMMANDER_ID", "backend-1", "this backend's commander id at the hub", false},
      {"commander-key-file", "CITRUS_COMMANDER_KEY_FILE", "", "file holding the commander key (else $CITRUS_COMMANDER_KEY; without a key the hub is not contacted)", false},
      {"jwt-secret-file", "CITRUS_JWT_SECRET_FILE", "", "file holding the HS256 secret, at least 32 bytes (else $CITRUS_JWT_SECRET; else a random one: tokens do not survive a restart)", false},
      {"metrics-token-file", "CITRUS_METRICS_TOKEN_FILE", "", "file holding the token GET /metrics requires as \"Authorization: Bearer <token>\" (16..256 bytes; default: /metrics is open)", false},
      {"token-lifetime-s", "CITRUS_TOKEN_LIFETIME_S", "900", "lifetime of user tokens in seconds (1..3600)", false},
      {"token-leeway-s", "CITRUS_TOKEN_LEEWAY_S", "30", "clock skew tolerated on token times, seconds (0..600)", false},
      {"session-max-s", "CITRUS_SESSION_MAX_S", "43200", "absolute session lifetime in seconds: token refreshes never extend a session past this long after its login (60..2592000)", false},
      {"rest-rate", "CITRUS_REST_RATE", "10", "REST requests per second per client address (burst: 3x)", false},
      {"operation-rate-scale", "", "1", "multiplies every per-user operation rate and burst of the operations table, e.g. site.deploy's 30 per minute, burst 10 (1..100000; load tests and benchmarks raise it)", false},
      {"max-connections", "CITRUS_MAX_CONNECTIONS", "0", "TCP connections held at once, HTTP and WebSocket together; beyond it a connection is closed at accept (0: the descriptor budget, ulimit -n minus 64, at most 10000; never more than that budget)", false},
      {"max-connections-per-address", "CITRUS_MAX_CONNECTIONS_PER_ADDRESS", "0", "TCP connections held at once from one IP address (0: no limit; keep 0 behind a reverse proxy, where every client has its address)", false},
      {"default-agent", "CITRUS_DEFAULT_AGENT", "agent-1", "the agent new sites are placed on", false},
      {"web-root", "CITRUS_WEB_ROOT", "", "directory of the dashboard's static files served at / (empty: none)", false},
      {"allowed-origin", "CITRUS_ALLOWED_ORIGINS", "", "Origin accepted on the users' WebSocket handshake; comma-separated (empty: any)", false, false, true},
      {"tls-cert", "CITRUS_TLS_CERT", "", "PEM certificate chain: serve https:// and wss:// (with --tls-key)", false},
      {"tls-key", "CITRUS_TLS_KEY", "", "PEM private key of --tls-cert", false},
      {"log-level", "CITRUS_LOG_LEVEL", "info", "debug, info, warn or error (JSON lines on stderr)", false},
      {"ready-file", "", "", "write the bound port to this file once listening (for tests)", false},
      {"check-config", "", "", "check the options and the files they name, print \"configuration OK\" and exit (errors: one line each, non-zero exit code)", true, true},
  };
}

std::vector<std::string> split_commas(const std::vector<std::string>& values) {
  std::vector<std::string> items;
  for (const auto& value : values) {
    std::size_t start = 0;
    while (start <= value.size()) {
      const std::size_t comma = std::min(value.find(',', start), value.size());
      std::string item = value.substr(start, comma - start);
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      if (!item.empty()) items.push_back(std::move(item));
      start = comma + 1;
    }
  }
  return items;
}

bool has_control_chars(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

struct serve_settings {
  std::string host;
  std::uint16_t port = 0;
  std::string listen_text;
  std::string db_path;
  std::chrono::milliseconds db_busy_timeout{5000};
  std::string hub_url;                ///< as given: one URL, or several comma-separated
  std::vector<std::string> hub_urls;  ///< each hub, tried in turn
  std::string hub_ca_file;
  std::vector<std::string> nats_servers;  ///< empty: no other backends to tell
  std::string nats_user, nats_password;
  std::string commander_id;
  std::string commander_key;  ///< empty: the hub is not contacted
  std::string commander_key_file;  ///< where a rotated commander key is saved; empty: it is never rotated
  std::string jwt_secret;     ///< empty: generate one
  std::string metrics_token;  ///< empty: /metrics is open
  std::chrono::seconds token_lifetime{900};
  std::chrono::seconds session_max{43200};  ///< login_config::max_session
  std::chrono::seconds token_leeway{30};
  std::string default_agent;
  long long rest_rate = 10;
  long long operation_rate_scale = 1;
  long long max_connections = 0;  ///< 0: connection_cap()
  long long max_connections_per_address = 0;  ///< 0: no limit
  std::string web_root;
  std::vector<std::string> allowed_origins;
  std::string tls_cert, tls_key;
  log_level level = log_level::info;
  std::string ready_file;
};

/// Reads and checks the options; an exit code when serving must not start.
std::optional<int> read_settings(int argc, char** argv, int first, serve_settings& s) {
  const auto specs = serve_specs();
  app::options opts("citrus-backend serve", "the Citrus backend: REST API, users' WebSocket, commander of the hub", specs);
  // Every check below records its problem and goes on: one run names them all, one line each.
  app::config_problems problems("citrus-backend");
  if (!opts.parse(argc, argv, first)) {
    if (opts.help_requested()) {
      app::write_whole(app::stream::out, std::string(commands_usage) + "\n" + opts.usage());
      return exit_ok;
    }
    if (opts.version_requested()) {
      app::write_whole(app::stream::out, opts.version_line() + "\n");
      return exit_ok;
    }
    for (const auto& e : opts.errors()) problems.add(e, exit_usage);
    if (!opts.values_usable()) return problems.report();
  }
  if (!opts.positional().empty()) {
    print_error("unknown command '" + opts.positional().front() + "'");
    app::write_whole(app::stream::err, commands_usage);
    return exit_usage;
  }
  auto usage_error = [&problems](std::string text) { problems.add(std::move(text), exit_usage); };
  auto unreadable = [&problems](std::string text) { problems.add(std::move(text), exit_failure); };

  s.listen_text = opts.get("listen");
  if (!app::split_host_port(s.listen_text, s.host, s.port) || s.host.empty())
    usage_error("invalid --listen '" + s.listen_text + "' (HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)");
  s.db_path = opts.get("db");
  if (s.db_path.empty()) usage_error("--db must not be empty");
  // Each storage thread opens its own connection: an in-memory database would be one per thread.
  if (s.db_path == ":memory:") usage_error("--db :memory: is not served (each storage thread would see its own database)");
  const auto busy = opts.get_int("db-busy-timeout-ms");
  if (!busy || *busy < 100 || *busy > 60000)
    usage_error("invalid --db-busy-timeout-ms '" + opts.get("db-busy-timeout-ms") + "' (100..60000)");
  else s.db_busy_timeout = std::chrono::milliseconds(*busy);
  s.hub_url = opts.get("hub-url");
  s.hub_urls = app::split_list(s.hub_url);
  if (s.hub_urls.empty()) usage_error("--hub-url must not be empty");
  for (const auto& url : s.hub_urls)
    if (url.rfind("ws://", 0) != 0 && url.rfind("wss://", 0) != 0)
      usage_error("invalid --hub-url '" + url + "' (ws://HOST:PORT/ or wss://HOST:PORT/)");
  s.hub_ca_file = opts.get("hub-ca-file");
  s.nats_servers = app::split_list(opts.get("nats-url"));
#ifndef CITRUS_HAVE_NATS
  if (!s.nats_servers.empty()) usage_error("--nats-url: this citrus-backend was built without NATS (citrus::nats)");
#endif
  for (const auto& url : s.nats_servers)
    if (url.rfind("nats://", 0) != 0 && url.rfind("tls://", 0) != 0)
      usage_error("invalid --nats-url '" + url + "' (nats://HOST:PORT or tls://HOST:PORT)");
  s.nats_user = opts.get("nats-user");
  if (!opts.get("nats-password-file").empty()) {
    auto secret = app::read_secret_file(opts.get("nats-password-file"));
    if (secret) s.nats_password = *secret;
    else unreadable("cannot read --nats-password-file " + opts.get("nats-password-file"));
  } else if (const char* from_env = std::getenv("CITRUS_NATS_PASSWORD")) {
    s.nats_password = from_env;
  }
  s.commander_id = opts.get("commander-id");
  if (!is_valid_wire_id(s.commander_id))
    usage_error("invalid --commander-id '" + s.commander_id + "': 1..128 characters of A-Z a-z 0-9 . _ : -");
  const long long leeway = opts.get_int("token-leeway-s").value_or(-1);
  if (leeway < 0 || leeway > 600) usage_error("--token-leeway-s must be 0..600");
  else s.token_leeway = std::chrono::seconds(leeway);
  s.rest_rate = opts.get_int("rest-rate").value_or(0);
  if (s.rest_rate < 1 || s.rest_rate > 100000) usage_error("--rest-rate must be 1..100000");
  s.operation_rate_scale = opts.get_int("operation-rate-scale").value_or(0);
  if (s.operation_rate_scale < 1 || s.operation_rate_scale > 100000) usage_error("--operation-rate-scale must be 1..100000");
  s.max_connections = opts.get_int("max-connections").value_or(-1);
  if (s.max_connections < 0 || s.max_connections > 1000000) usage_error("--max-connections must be 0..1000000");
  s.max_connections_per_address = opts.get_int("max-connections-per-address").value_or(-1);
  if (s.max_connections_per_address < 0 || s.max_connections_per_address > 1000000)
    usage_error("--max-connections-per-address must be 0..1000000");
  s.default_agent = opts.get("default-agent");
  if (!is_valid_wire_id(s.default_agent))
    usage_error("invalid --default-agent '" + s.default_agent + "': 1..128 characters of A-Z a-z 0-9 . _ : -");

  if (opts.has("commander-key-file")) {
    if (auto key = app::read_secret_file(opts.get("commander-key-file")); !key)
      unreadable("cannot read --commander-key-file " + opts.get("commander-key-file"));
    else if (key->empty())
      usage_error("--commander-key-file " + opts.get("commander-key-file") + " is empty");
    else
      s.commander_key = std::move(*key);
    s.commander_key_file = opts.get("commander-key-file");  // rotated keys are saved there
  } else if (const char* key = std::getenv("CITRUS_COMMANDER_KEY"); key && *key) {
    s.commander_key = key;
  }
  if (s.commander_key.size() > 256 || has_control_chars(s.commander_key))  // the protocol's limit on "key"
    usage_error("the commander key is malformed (at most 256 bytes, no control characters)");

  if (opts.has("jwt-secret-file")) {
    if (auto secret = app::read_secret_file(opts.get("jwt-secret-file")); !secret) {
      unreadable("cannot read --jwt-secret-file " + opts.get("jwt-secret-file"));
    } else {
      s.jwt_secret = std::move(*secret);
      if (s.jwt_secret.size() < jwt::hs256_token_service::min_secret_bytes)
        usage_error("the JWT secret in " + opts.get("jwt-secret-file") + " is shorter than 32 bytes");
    }
  } else if (const char* secret = std::getenv("CITRUS_JWT_SECRET"); secret && *secret) {
    s.jwt_secret = secret;
    if (s.jwt_secret.size() < jwt::hs256_token_service::min_secret_bytes) usage_error("$CITRUS_JWT_SECRET is shorter than 32 bytes");
  }
  if (!opts.get("metrics-token-file").empty()) {
    std::string error;
    auto token = app::read_token_file(opts.get("metrics-token-file"), error);
    if (token) s.metrics_token = std::move(*token);
    else usage_error("--metrics-token-file: " + error);
  }
  if (s.jwt_secret.size() > jwt::hs256_token_service::max_secret_bytes) usage_error("the JWT secret is longer than 4096 bytes");

  const auto lifetime = opts.get_int("token-lifetime-s");
  if (!lifetime || *lifetime < 1 || *lifetime > 3600)
    usage_error("invalid --token-lifetime-s '" + opts.get("token-lifetime-s") + "' (1..3600)");
  else s.token_lifetime = std::chrono::seconds(*lifetime);
  const auto session_max = opts.get_int("session-max-s");
  if (!session_max || *session_max < 60 || *session_max > 2592000)
    usage_error("invalid --session-max-s '" + opts.get("session-max-s") + "' (60..2592000)");
  else s.session_max = std::chrono::seconds(*session_max);

  s.web_root = opts.get("web-root");
  s.allowed_origins = split_commas(opts.get_all("allowed-origin"));

  s.tls_cert = opts.get("tls-cert");
  s.tls_key = opts.get("tls-key");
  if (s.tls_cert.empty() != s.tls_key.empty()) usage_error("--tls-cert and --tls-key go together");
  for (const auto& [option, path] : {std::pair<std::string, std::string>{"--tls-cert", s.tls_cert}, {"--tls-key", s.tls_key}})
    if (!path.empty() && !std::ifstream(path)) unreadable("cannot read " + option + " " + path);

  const auto level = app::json_logger::parse_level(opts.get("log-level"));
  if (!level) usage_error("invalid --log-level '" + opts.get("log-level") + "' (debug, info, warn, error)");
  else s.level = *level;
  s.ready_file = opts.get("ready-file");
  if (opts.has("check-config")) {
    std::string error;
    if (!s.web_root.empty() && !static_files::open(s.web_root, error)) unreadable(error);
  }
  if (!problems.empty()) return problems.report();
  if (opts.has("check-config")) {
    app::print_line(app::stream::out, "citrus-backend: configuration OK");
    return exit_ok;
  }
  return std::nullopt;
}

// ------------------------------------------------------------------------------------ the hub link

/// The commander link's transport: a wspp::client to the hub, reconnected with backoff (full jitter)
/// after a failed attempt and after every close, until shutdown(). With several hub URLs (hubs joined
/// through NATS), each reconnection tries the next one.
class hub_connector final : public connection_handler {
 public:
  hub_connector(wspp::event_loop& loop, commander_link& link, std::vector<std::string> urls, wspp::client_options options,
                logger& log, random_source& random)
      : loop_(loop),
        link_(link),
        urls_(std::move(urls)),
        log_(log),
        backoff_(100ms, 10s, random),
        client_(loop, *this, std::move(options), log) {
    client_.set_connect_failed_handler([this](const wspp::connect_failure& failure) {
      log_.log(log_level::warn, "hub_connect_failed",
               {field("url", urls_[current_]), field("reason", failure.reason),
                field("http_status", static_cast<std::int64_t>(failure.http_status))});
      schedule_reconnect();
    });
  }
  ~hub_connector() override { stopping_ = true; }
  hub_connector(const hub_connector&) = delete;
  hub_connector& operator=(const hub_connector&) = delete;

  /// The first attempt; errc::invalid_value for a URL that is not ws:// or wss://.
  result<void> start() { return client_.connect(urls_[current_]); }

  void shutdown() {
    stopping_ = true;
    retry_.cancel();
    client_.close(close_code::going_away, "backend shutting down");
  }
  bool idle() const noexcept { return client_.current_state() == wspp::client::state::idle; }
  std::uint64_t attempts() const noexcept { return attempts_; }

  void on_open(connection& conn) override {
    log_.log(log_level::info, "hub_connected", {field("url", urls_[current_])});
    link_.on_open(conn);
  }
  void on_message(connection_id id, std::string_view text) override {
    const bool was_online = link_.online();
    link_.on_message(id, text);
    if (!was_online && link_.online()) backoff_.reset();  // authenticated: the next drop starts small again
  }
  void on_drain(connection_id id) override { link_.on_drain(id); }
  void on_close(connection_id id) override {
    link_.on_close(id);
    const auto info = client_.last_close();
    if (info && !stopping_ && info->remote_code == static_cast<std::uint16_t>(close_code::replaced)) {
      // Another connection holds this commander id: do not fight over the session (the hub refuses a
      // second take-over within its window, and this wait is shorter than that window).
      const std::chrono::milliseconds retry = hub_identity_in_use_retry;
      log_.log(log_level::error, "hub_session_replaced",
               {field("hint", "another process is connected with this --commander-id; this one waits"),
                field("reason", info->remote_reason), field("retry_ms", static_cast<std::int64_t>(retry.count()))});
      schedule_reconnect(retry);
      return;
    }
    if (info && !stopping_) {
      const bool rejected = info->remote_code == static_cast<std::uint16_t>(close_code::auth_failed);
      log_.log(rejected ? log_level::error : log_level::warn, rejected ? "hub_rejected_credentials" : "hub_disconnected",
               {field("code", static_cast<std::int64_t>(info->remote_code)), field("reason", info->remote_reason)});
    }
    schedule_reconnect();
  }

 private:
  void schedule_reconnect() { schedule_reconnect(backoff_.next()); }
  void schedule_reconnect(std::chrono::milliseconds delay) {
    if (stopping_) return;
    retry_ = loop_.schedule(delay, [this] {
      if (stopping_) return;
      ++attempts_;
      current_ = (current_ + 1) % urls_.size();  // the next hub: this one failed or dropped us
      if (auto started = client_.connect(urls_[current_]); !started) {
        log_.log(log_level::error, "hub_connect_failed", {field("url", urls_[current_]), field("reason", started.error().message())});
        schedule_reconnect();
      }
    });
  }

  wspp::event_loop& loop_;
  commander_link& link_;
  std::vector<std::string> urls_;  ///< not empty
  std::size_t current_ = 0;
  logger& log_;
  backoff backoff_;
  bool stopping_ = false;
  std::uint64_t attempts_ = 0;
  wspp::timer retry_;
  wspp::client client_;  ///< last: destroyed first, while everything its on_close touches is alive
};

// ----------------------------------------------------------------------------------------- metrics

struct metric_sources {
  const user_gateway& gateway;
  const commander_link& link;
  const site_service& sites;
  const worker::storage_worker& storage;
  const hub_connector* hub = nullptr;
  const wspp::server* server = nullptr;
  const app::async_audit* audit = nullptr;
  const app::json_logger& log;
  const app::http_metrics& http;
  std::string default_agent;
  /// Flagged events nobody has acknowledged, as last counted on the read lane (never on the loop);
  /// empty when the database could not answer.
  const std::optional<std::uint64_t>* unacknowledged = nullptr;
};

std::string prometheus_text(const metric_sources& m) {
  metrics::exposition out;
  app::append_build_info(out);
  if (auto process = app::read_process_sample()) app::append_process_metrics(out, *process);
  out.gauge("citrus_up", "The backend is serving.", 1);
  out.gauge("citrus_backend_user_sessions", "Users' WebSocket sessions (authenticated or authenticating).",
            static_cast<double>(m.gateway.sessions()));
  out.gauge("citrus_backend_hub_link_online", "1 when the hub accepted this backend's commander credentials.",
            m.link.online() ? 1 : 0);
  out.family("citrus_backend_agent_online", metrics::type::gauge,
             "1 when the hub reports the default agent connected (every agent: citrus_hub_agent_online at the hub).");
  out.sample({{"agent", m.default_agent}}, m.link.agent_online(m.default_agent) ? 1.0 : 0.0);
  out.gauge("citrus_backend_hub_requests_in_flight", "Commands sent to the hub without a final status yet.",
            static_cast<double>(m.link.in_flight()));
  out.family("citrus_backend_command_duration_seconds", metrics::type::histogram,
             "Commands from being sent to the hub to their final status, by outcome (ok; failed: an error, a timeout "
             "or the hub link lost).");
  out.histogram({{"outcome", "ok"}}, m.link.command_seconds(true));
  out.histogram({{"outcome", "failed"}}, m.link.command_seconds(false));
  if (m.hub) out.counter("citrus_backend_hub_reconnect_attempts_total", "Reconnection attempts to the hub.", m.hub->attempts());
  if (m.server) app::append_server_metrics(out, "citrus_backend", m.server->connection_count(), m.server->counters());
  m.http.append(out);
  const site_service_counters site_ops = m.sites.counters();
  if (m.audit) {
    out.family("citrus_backend_audit_lost_total", metrics::type::counter,
               "Gateway audit events not stored: queue_full (dropped at once), not_stored (a failed write).");
    out.sample({{"reason", "queue_full"}}, m.audit->dropped());
    out.sample({{"reason", "not_stored"}}, m.audit->failed());
  }
  out.counter("citrus_backend_audit_refused_total",
              "Operations refused because the audit trail did not take their event (fail closed): site operations, "
              "and gateway events refused by a full queue.",
              site_ops.audit_refused + (m.audit ? m.audit->refused() : 0));
  out.counter("citrus_backend_operations_rate_limited_total",
              "Site operations refused for their per-user rate (the operations table).", site_ops.rate_limited);
  if (m.unacknowledged && *m.unacknowledged) {
    // Absent when the database cannot answer: an alert on the gauge then fires on its absence.
    out.gauge("citrus_backend_audit_unacknowledged",
              "Flagged audit events (security events, failed authentications) nobody has acknowledged.",
              static_cast<double>(**m.unacknowledged));
  }
  out.counter("citrus_backend_log_dropped_total", "Log lines dropped (queue full).", m.log.dropped());
  out.family("citrus_backend_storage_queued", metrics::type::gauge, "Storage calls waiting for their lane's thread.");
  out.sample({{"lane", "read"}}, static_cast<double>(m.storage.queued(storage_lane::read)));
  out.sample({{"lane", "write"}}, static_cast<double>(m.storage.queued(storage_lane::write)));
  out.counter("citrus_backend_storage_refused_total",
              "Storage calls refused because their lane's queue was full (answered storage_unavailable).", m.storage.refused());
  return out.take();
}

// ------------------------------------------------------------------------------------------- serve

/// The file descriptor budget: connections beyond it would fail in accept() anyway.
std::size_t connection_cap() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 10000;
  const auto fds = static_cast<std::size_t>(limit.rlim_cur);
  return std::clamp<std::size_t>(fds > 64 ? fds - 64 : 16, 16, 10000);
}

bool write_ready_file(const std::string& path, std::uint16_t port) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << port << '\n';
    if (!out.flush()) return false;
  }
  return std::rename(temp.c_str(), path.c_str()) == 0;
}


std::string url_host(const std::string& host) { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }

int serve(const serve_settings& s) {
  // Before any thread starts: SIGINT/SIGTERM are taken by the watcher only; files we create (the
  // database, its WAL) are private to the service's user.
  app::signal_watcher::block_signals();
  ::umask(0077);

  app::json_logger log("backend", s.level);
  system_clock clk;
  system_random random;

  std::optional<static_files> files;
  if (!s.web_root.empty()) {
    std::string error;
    files = static_files::open(s.web_root, error);
    if (!files) {
      print_error(error);
      return exit_failure;
    }
  }

  const app::storage_options db_options{s.db_busy_timeout, &log};
  {
    auto opened = app::open_storage(s.db_path, db_options);
    if (!opened) {
      print_error("cannot open database " + app::describe_db(s.db_path) + ": " + opened.error().message());
      return exit_failure;
    }
    // Before the hub link exists: creates and deploys a previous run left in flight can never be
    // answered now, so they end as "failed" (audited) instead of showing "deploying" forever.
    if (auto recovered = fail_interrupted_operations(**opened, clk, log, s.commander_id); !recovered)
      log.log(log_level::error, "interrupted_operations_not_failed", {field("error", recovered.error().message())});
    else if (*recovered > 0)
      log.log(log_level::warn, "interrupted_operations_failed", {field("sites", static_cast<std::int64_t>(*recovered))});
  }

  jwt::hs256_config token_config;
  token_config.secret = s.jwt_secret;
  if (token_config.secret.empty()) {
    std::string bytes(48, '\0');
    random.fill(reinterpret_cast<std::uint8_t*>(bytes.data()), bytes.size());
    token_config.secret = std::move(bytes);
    log.log(log_level::warn, "jwt_secret_generated",
            {field("detail", "no --jwt-secret-file or CITRUS_JWT_SECRET: using a random secret; user tokens will not "
                             "survive a restart")});
  }
  token_config.lifetime = s.token_lifetime;
  token_config.leeway = s.token_leeway;
  jwt::hs256_token_service tokens(std::move(token_config), random);

  wspp::event_loop loop(log);
  // Storage off the loop: a read and a write thread, each with its own connection; answers come back
  // through the loop's post(). A full lane answers storage_unavailable at once.
  auto open_lane = [path = s.db_path, db_options]() -> result<std::unique_ptr<storage>> {
    return app::open_storage(path, db_options);
  };
  auto lanes = worker::storage_worker::start(open_lane, [&loop](std::function<void()> task) { loop.post(std::move(task)); }, log);
  if (!lanes) {
    print_error("cannot open database " + app::describe_db(s.db_path) + ": " + lanes.error().message());
    return exit_failure;
  }
  std::unique_ptr<worker::storage_worker> storage = std::move(*lanes);

  // The gateway's audit events (failed authentications, refused messages: client-paced) go through a
  // queue to their own connection, off the lanes the requests use.
  app::async_audit gateway_audit(
      [path = s.db_path, db_options]() -> std::unique_ptr<citrus::storage> {
        auto store = app::open_storage(path, db_options);
        if (!store) return nullptr;
        return std::move(*store);
      },
      log);

  operation_registry operations = operation_registry::defaults();
  operations.scale_rates(static_cast<double>(s.operation_rate_scale));
  backend_config config{commander_link_config{s.commander_id, s.commander_key},
                        site_service_config{agent_id{s.default_agent}, s.commander_id}};
  config.link.instance = random_hex(random, 6);  // this run's request ids differ from every earlier run's
  config.link.hub_name = s.hub_url;              // presence says which hub reported an agent
  // A key rotated over the session (the hub found it past its maximum age) replaces the key file
  // before it is used; a key from $CITRUS_COMMANDER_KEY has nowhere to go, so it is never rotated.
  if (!s.commander_key_file.empty())
    config.link.save_key = [path = s.commander_key_file](const std::string& fresh) {
      return app::replace_secret_file(path, fresh);
    };
  config.rest.per_address = rate{static_cast<double>(s.rest_rate), static_cast<double>(s.rest_rate) * 3};
  config.rest.metrics_token = s.metrics_token;
  config.login.max_session = s.session_max;
  backend_service backend(std::move(config), backend_services{*storage, tokens, clk, random, log, gateway_audit, operations});
  app::http_metrics http_metrics("citrus_backend");
  metric_sources sources{backend.gateway(), backend.link(), backend.sites(), *storage, nullptr, nullptr, &gateway_audit, log,
                         http_metrics,
                         s.default_agent};
  std::optional<std::uint64_t> unacknowledged;
  sources.unacknowledged = &unacknowledged;
  backend.set_metrics([&sources] { return prometheus_text(sources); });
#ifdef CITRUS_HAVE_NATS
  // Several backends: a user's updates reach her sessions on the others too.
  std::unique_ptr<nats::nats_user_fanout> fanout;
  if (!s.nats_servers.empty()) {
    fanout = std::make_unique<nats::nats_user_fanout>(
        nats::nats_fanout_config{s.commander_id, s.nats_servers, s.nats_user, s.nats_password},
        [&loop](std::function<void()> task) { loop.post(std::move(task)); },
        [&backend](user_id user, std::string_view frame) { backend.deliver_to_user(user, frame); }, log);
    if (auto started = fanout->start(); !started) {
      print_error("cannot start the NATS link: " + lower_message(started.error()));
      return exit_failure;
    }
    backend.set_user_fanout(fanout.get());
  }
#endif

  held_answers held(loop);  // before the server: destroyed after it, when there is nobody left to answer
  std::unique_ptr<hub_connector> hub;
  if (!s.commander_key.empty()) {
    wspp::client_options client_options;
    client_options.tls_ca_file = s.hub_ca_file;
    hub = std::make_unique<hub_connector>(loop, backend.link(), s.hub_urls, std::move(client_options), log, random);
    sources.hub = hub.get();
  }

  wspp::server_options server_options;
  server_options.bind_address = s.host;
  server_options.port = s.port;
  server_options.allowed_origins = s.allowed_origins;
  server_options.max_connections = s.max_connections > 0
                                       ? std::min(static_cast<std::size_t>(s.max_connections), connection_cap())
                                       : connection_cap();
  server_options.max_connections_per_address = static_cast<std::size_t>(s.max_connections_per_address);
  server_options.max_http_body_bytes = 64 * 1024;  // the REST API answers 413 above 16 KiB itself
  server_options.tls_certificate_file = s.tls_cert;
  server_options.tls_private_key_file = s.tls_key;
  const bool tls = !s.tls_cert.empty();
  wspp::server server(loop, backend.users(), std::move(server_options), log);
  sources.server = &server;
  const static_files* pages = files ? &*files : nullptr;
  // Answers the REST API holds back (a login under brute force) wait on the loop's timers.
  server.set_async_http_handler([&backend, &held, &http_metrics, pages, tls](const wspp::http_request& request,
                                                                             wspp::http_responder responder) {
    // std::function needs a copyable target; the responder is move-only.
    auto waiting = std::make_shared<wspp::http_responder>(std::move(responder));
    // Labels: the route's pattern (static files: "static"), never the raw path. The duration ends when
    // the answer is ready; a login answer held back under brute force is not the service's latency.
    const std::string_view route = pages && !is_api_target(request.target) ? std::string_view("static")
                                                                           : rest_route_pattern(request.target);
    handle_http(request, backend, pages, tls,
                [&held, &http_metrics, waiting, route, method = std::string(app::method_label(request.method)),
                 began = std::chrono::steady_clock::now()](http_answer answer) {
                  http_metrics.record(route, method, answer.response.status, std::chrono::steady_clock::now() - began);
                  held.send_after(answer.hold_back, std::move(*waiting), std::move(answer.response));
                });
  });

  auto port = server.listen();
  if (!port) {
    print_error("cannot listen on " + s.listen_text + ": " + app::describe_listen_error(port.error(), tls));
    return exit_failure;
  }

  if (hub) {
    if (auto started = hub->start(); !started) {
      print_error("cannot connect to --hub-url " + s.hub_url + ": " +
                  (started.error() == errc::invalid_value ? std::string("not a valid ws:// or wss:// URL")
                                                           : lower_message(started.error())));
      return exit_failure;
    }
  } else {
    log.log(log_level::warn, "hub_not_configured",
            {field("detail", "no --commander-key-file or CITRUS_COMMANDER_KEY: the hub is not contacted; site "
                             "commands fail with hub_unavailable")});
  }

  wspp::timer ticker = loop.schedule_every(250ms, [&] { backend.tick(); });
  // The unacknowledged count for /metrics: one indexed count on the read lane every few seconds.
  // It doubles as the database probe of /readyz: ready while the last count answered.
  bool database_answers = true;
  auto count_unacknowledged = [&] {
    run_storage<std::uint64_t>(
        *storage, storage_lane::read, [](citrus::storage& db) { return db.audit().count_unacknowledged(); },
        [&unacknowledged, &database_answers](result<std::uint64_t> n) {
          unacknowledged = n ? std::optional<std::uint64_t>(*n) : std::nullopt;
          database_answers = static_cast<bool>(n);
        });
  };
  // /readyz: 503 while the hub link (when one is configured) or the database is down.
  backend.set_readiness([&backend, &database_answers, hub_configured = hub != nullptr] {
    std::vector<std::string> down;
    if (hub_configured && !backend.link().online()) down.emplace_back("hub_link");
    if (!database_answers) down.emplace_back("database");
    return down;
  });
  count_unacknowledged();
  wspp::timer audit_counter = loop.schedule_every(5s, count_unacknowledged);

  // Shutdown: stop accepting and close the users' sockets (1001), close the hub link, give the close
  // handshakes up to 200 ms, then leave the loop. Every committed write is already on disk.
  bool stopping = false;
  wspp::timer shutdown_poll;
  steady_time shutdown_deadline{};
  auto begin_shutdown = [&](int sig) {
    if (stopping) {  // a second signal: leave at once
      loop.stop();
      return;
    }
    stopping = true;
    log.log(log_level::info, "shutting_down", {field("signal", static_cast<std::int64_t>(sig))});
    app::notify_service_manager("STOPPING=1");
    server.stop();
    if (hub) hub->shutdown();
    shutdown_deadline = clk.steady_now() + 200ms;
    shutdown_poll = loop.schedule_every(10ms, [&] {
      const bool quiet = server.connection_count() == 0 && (!hub || hub->idle());
      if (quiet || clk.steady_now() >= shutdown_deadline) loop.stop();
    });
  };
  app::signal_watcher watcher([&loop, &begin_shutdown](int sig) { loop.post([&begin_shutdown, sig] { begin_shutdown(sig); }); });

  if (!s.ready_file.empty() && !write_ready_file(s.ready_file, *port))
    log.log(log_level::error, "ready_file_failed", {field("path", s.ready_file)});
  log.log(log_level::info, "backend_ready",
          {field("port", static_cast<std::int64_t>(*port)), field("commander", s.commander_id),
           field("hub", hub ? std::string_view(s.hub_url) : std::string_view("(none)")),
           field("web_root", files ? std::string_view(s.web_root) : std::string_view("(none)"))});
  app::print_line(app::stream::out, std::string("citrus-backend listening on ") + (tls ? "https" : "http") + "://" +
                                        url_host(s.host) + ":" + std::to_string(*port));
  app::notify_service_manager("READY=1\nSTATUS=listening on port " + std::to_string(*port));

  loop.run();

#ifdef CITRUS_HAVE_NATS
  if (fanout) {
    backend.set_user_fanout(nullptr);
    fanout->stop();
  }
#endif
  ticker.cancel();
  audit_counter.cancel();
  shutdown_poll.cancel();
  // The storage threads finish the call they run and stop; answers still queued for the loop are
  // dropped with it (every write already committed stays committed).
  storage.reset();
  log.log(log_level::info, "backend_stopped", {});
  return exit_ok;
}

}  // namespace
}  // namespace citrus::backend

int main(int argc, char** argv) {
  using namespace citrus::backend;
  try {
    const std::string_view command = argc > 1 ? std::string_view(argv[1]) : std::string_view();
    if (command == "user") return run_user_command(argc, argv, 2);
    if (command == "agent") return run_agent_command(argc, argv, 2);
    if (command == "commander") return run_commander_command(argc, argv, 2);
    if (command == "hub") return run_hub_command(argc, argv, 2);
    if (command == "audit") return run_audit_command(argc, argv, 2);
    if (command == "init") return run_init_command(argc, argv, 2);
    if (command == "help") {
      citrus::app::write_whole(citrus::app::stream::out, commands_usage);
      return exit_ok;
    }
    serve_settings settings;
    const int first = command == "serve" ? 2 : 1;
    if (auto stop = read_settings(argc, argv, first, settings)) return *stop;
    return serve(settings);
  } catch (const std::exception& e) {
    print_error(e.what());
    return exit_failure;
  }
}
