// citrus-hub: the EngineHub. Commanders (backends) and agents connect over WebSockets with their ids
// and keys; commands are forwarded tagged with the sender's commanderId and updates routed back to it.
// Thin wiring: every rule lives in citrus::core (hub.hpp).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <chrono>
#include <utility>
#include <functional>
#include <vector>
#include <string>

#include "citrus/app/app_metrics.hpp"
#include "citrus/app/async_audit.hpp"
#include "citrus/app/config_problems.hpp"
#include "citrus/app/console.hpp"
#include "citrus/app/json_logger.hpp"
#include "citrus/app/listen_error.hpp"
#include "citrus/app/open_storage.hpp"
#include "citrus/app/options.hpp"
#include "citrus/app/service_notify.hpp"
#include "citrus/app/shutdown.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/hub.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "citrus/wspp/server.hpp"
#include "citrus/worker/storage_worker.hpp"
#ifdef CITRUS_HAVE_NATS
#include "citrus/nats/nats_peer_link.hpp"
#endif

#include "backend_post.hpp"
#include "http_verifier.hpp"
#include "backend_audit.hpp"

namespace {

using citrus::app::option_spec;

std::vector<option_spec> hub_options() {
  return {
      {"listen", "CITRUS_HUB_LISTEN", "127.0.0.1:7000", "Address and port to accept commanders and agents on."},
      {"db", "CITRUS_DB", "",
       "SQLite database file, or a postgresql:// URL, holding commander (and, without --verify-url, agent) keys and "
       "receiving the hub's audit events (default data/citrus.db). Not given with --verify-url: the hub uses no "
       "database at all."},
      {"verify-url", "CITRUS_VERIFY_URL", "",
       "Backend endpoint that verifies agent keys (http(s)://HOST:PORT/api/verify-agent). Without --db, commander keys "
       "are verified at /api/verify-commander and audit events sent to /api/hub-events next to it."},
      {"hub-id", "CITRUS_HUB_ID", "hub-1", "This hub's id at the backend (for --verify-url) and among its peers (--nats-url)."},
      {"nats-url", "CITRUS_NATS_URL", "",
       "NATS servers (nats://HOST:PORT, comma-separated) joining this hub to its peers: commands reach agents on any "
       "hub (docs/scaling.md). Default: a single hub, no NATS."},
      {"nats-user", "CITRUS_NATS_USER", "", "This hub's NATS user (its permissions: docs/scaling.md)."},
      {"nats-password-file", "CITRUS_NATS_PASSWORD_FILE", "", "File holding the NATS user's password (or set CITRUS_NATS_PASSWORD)."},
      {"hub-key-file", "CITRUS_HUB_KEY_FILE", "", "File holding this hub's key (or set CITRUS_HUB_KEY)."},
      {"metrics-token-file", "CITRUS_METRICS_TOKEN_FILE", "", "File holding the token GET /metrics requires as \"Authorization: Bearer <token>\" (default: /metrics is open)."},
      {"tls-cert", "CITRUS_TLS_CERT", "", "PEM certificate chain: serve wss:// (with --tls-key)."},
      {"tls-key", "CITRUS_TLS_KEY", "", "PEM private key for --tls-cert."},
      {"max-message-bytes", "", "65536", "Largest message accepted."},
      {"request-timeout-s", "", "300", "A request with no update for this long fails with request_timeout."},
      {"auth-timeout-ms", "", "5000", "Connections must authenticate within this time."},
      {"session-lifetime-s", "", "3600",
       "A commander or agent session ends this long after its last authentication unless the peer re-authenticates "
       "in band (citrus-backend and citrus-agent do so by themselves); then it is closed with 4003."},
      {"revokers", "", "",
       "Commander ids (the trusted backends), comma-separated, whose revoke messages close a revoked identity's "
       "live session at once. Default: none (a revoked key then ends its session at the next re-authentication)."},
      {"key-overlap-s", "", "300",
       "A commander or agent that rotates its key over its session (rotate_key) may use the old one this much longer "
       "(0..86400)."},
      {"key-max-age-s", "", "0",
       "Keys older than this when they authenticate are overdue: the hub asks the peer to rotate (citrus-agent with "
       "--key-file and citrus-backend with --commander-key-file do), logs key_overdue and flags a security event. "
       "0: keys never age."},
      {"ping-interval-ms", "", "20000", "Keepalive ping period (a peer that does not answer is closed)."},
      {"max-connections", "", "10000", "TCP connections held at once; keep it below the descriptor limit (ulimit -n)."},
      {"max-connections-per-address", "", "0",
       "TCP connections held at once from one IP address; 0: no limit (e.g. many agents behind one NAT)."},
      {"connection-rate", "", "20000",
       "Messages per second one connection may send, in bursts of twice as many; 0: no limit."},
      {"identity-rate", "", "50000",
       "Messages per second one commander or agent id may send over all its connections, in bursts of twice as "
       "many; 0: no limit."},
      {"metrics-max-agents", "", "1000",
       "Agents listed one by one on /metrics (citrus_hub_agent_online{agent}); beyond it only their count."},
      {"log-level", "CITRUS_LOG_LEVEL", "info", "debug logs every message's metadata; info, warn, error."},
      {"ready-file", "", "", "Write the bound port to this file once listening (for tests and scripts)."},
      {"check-config", "", "", "Check the options and files, print \"configuration OK\" and exit (errors: one line each, exit code 2).", true,
       true},
  };
}

/// What /metrics reads, on the loop thread.
struct metrics_sources {
  const citrus::hub& hub;
  const citrus::wspp::server& server;
  const citrus::app::json_logger& log;
  const citrus::app::async_audit& audit;
  const citrus::app::http_metrics& http;
  std::size_t max_agent_series;  ///< per-agent presence lines beyond it are left out (the count stays)
  std::function<std::size_t()> peers_online;  ///< peer hubs heard (scale-out); empty without NATS
  std::function<bool()> nats_connected;
};

std::string metrics_text(const metrics_sources& m) {
  namespace metrics = citrus::metrics;
  const auto& c = m.hub.counters();
  metrics::exposition out;
  citrus::app::append_build_info(out);
  if (auto process = citrus::app::read_process_sample()) citrus::app::append_process_metrics(out, *process);
  out.counter("citrus_hub_messages_received_total", "Messages received.", c.received);
  out.family("citrus_hub_messages_handled_total", metrics::type::counter,
             "Messages by outcome: routed (commands forwarded, updates delivered), rejected (answered with an error), "
             "dropped (forged, unknown request, commander gone).");
  out.sample({{"outcome", "routed"}}, c.routed);
  out.sample({{"outcome", "rejected"}}, c.rejected);
  out.sample({{"outcome", "dropped"}}, c.dropped);
  out.counter("citrus_hub_rate_limited_total", "Messages refused by a rate limit.", c.rate_limited);
  out.family("citrus_hub_auth_total", metrics::type::counter,
             "Authentications by the role claimed (commander, agent, none) and outcome (ok, failed).");
  for (const auto& [role, counts] : {std::pair<const char*, const citrus::auth_counts&>{"commander", c.auth_commander},
                                     {"agent", c.auth_agent}, {"none", c.auth_no_role}}) {
    out.sample({{"role", role}, {"outcome", "ok"}}, counts.ok);
    out.sample({{"role", role}, {"outcome", "failed"}}, counts.failed);
  }
  out.counter("citrus_hub_security_events_total", "Security events recorded.", c.security_events);
  if (m.peers_online) {
    out.gauge("citrus_hub_nats_connected", "1 while this hub is connected to NATS (scale-out).", m.nats_connected() ? 1 : 0);
    out.gauge("citrus_hub_peers_online", "Peer hubs heard within the peer timeout.", static_cast<double>(m.peers_online()));
    out.counter("citrus_hub_remote_routed_total", "Commands forwarded to, or accepted from, a peer hub.", c.remote_routed);
    out.counter("citrus_hub_remote_takeovers_total", "Sessions closed because a peer hub holds the identity now.",
                c.remote_takeovers);
    out.counter("citrus_hub_peers_lost_total", "Peer hubs lost (died, froze or restarted).", c.peers_lost);
  }
  out.family("citrus_hub_takeovers_total", metrics::type::counter,
             "Take-overs of an identity by a newer connection: replaced (the older session closed), refused (the "
             "identity was taken over too recently).");
  out.sample({{"outcome", "replaced"}}, c.takeovers);
  out.sample({{"outcome", "refused"}}, c.takeovers_refused);
  out.family("citrus_hub_reauth_total", metrics::type::counter,
             "In-band re-authentications: ok (the session extended), failed (the session closed).");
  out.sample({{"outcome", "ok"}}, c.reauth_ok);
  out.sample({{"outcome", "failed"}}, c.reauth_failed);
  out.family("citrus_hub_sessions_closed_total", metrics::type::counter,
             "Sessions the hub ended: expired (no re-authentication within their lifetime), revoked (their key revoked).");
  out.sample({{"reason", "expired"}}, c.sessions_expired);
  out.sample({{"reason", "revoked"}}, c.sessions_revoked);
  out.family("citrus_hub_key_rotations_total", metrics::type::counter,
             "Keys rotated over a session (rotate_key): issued (a new key sent), failed (refused or not done), "
             "asked (the hub asked a peer whose key is past --key-max-age-s).");
  out.sample({{"outcome", "issued"}}, c.key_rotations);
  out.sample({{"outcome", "failed"}}, c.key_rotations_failed);
  out.sample({{"outcome", "asked"}}, c.key_rotations_asked);
  out.gauge("citrus_hub_keys_overdue",
            "Sessions whose key was past --key-max-age-s at their last authentication (alert when it stays above 0).",
            static_cast<double>(m.hub.keys_overdue()));
  out.counter("citrus_hub_request_timeouts_total", "Requests failed by timeout.", c.timeouts);
  out.counter("citrus_hub_progress_coalesced_total", "Progress updates coalesced under backpressure.", c.coalesced);
  out.counter("citrus_hub_slow_consumers_total", "Connections closed as slow consumers.", c.slow_consumers);
  out.gauge("citrus_hub_requests_in_flight", "Requests routed and not finished.", static_cast<double>(m.hub.requests_in_flight()));
  out.family("citrus_hub_command_duration_seconds", metrics::type::histogram,
             "Routed commands from routing to their final update, by outcome (ok results; failed: everything else).");
  out.histogram({{"outcome", "ok"}}, c.command_ok_seconds);
  out.histogram({{"outcome", "failed"}}, c.command_failed_seconds);
  const std::vector<std::string> agents = m.hub.online_agents();
  out.gauge("citrus_hub_agents_online", "Agents authenticated on this hub.", static_cast<double>(agents.size()));
  out.family("citrus_hub_agent_online", citrus::metrics::type::gauge,
             "1 for each agent authenticated on this hub (at most --metrics-max-agents series; an agent that leaves "
             "disappears).");
  for (std::size_t i = 0; i < agents.size() && i < m.max_agent_series; ++i) out.sample({{"agent", agents[i]}}, 1.0);
  citrus::app::append_server_metrics(out, "citrus_hub", m.server.connection_count(), m.server.counters());
  m.http.append(out);
  out.counter("citrus_hub_log_dropped_total", "Log lines dropped (queue full).", m.log.dropped());
  out.family("citrus_hub_audit_lost_total", metrics::type::counter,
             "Audit events not stored: queue_full (dropped at once), not_stored (a failed database write, refused by "
             "the backend, or undelivered at exit).");
  out.sample({{"reason", "queue_full"}}, m.audit.dropped());
  out.sample({{"reason", "not_stored"}}, m.audit.failed());
  out.counter("citrus_hub_audit_refused_total", "Commands refused because the audit queue was full (fail closed).",
              c.audit_refused);
  return out.take();
}

}  // namespace

int main(int argc, char** argv) {
  citrus::app::signal_watcher::block_signals();
  citrus::app::options opts("citrus-hub", "the Citrus EngineHub", hub_options());
  // Every check below records its problem and goes on: one run names them all, one line each.
  citrus::app::config_problems problems("citrus-hub");
  if (!opts.parse(argc, argv)) {
    if (opts.help_requested() || opts.version_requested()) {
      citrus::app::write_whole(citrus::app::stream::out, opts.help_requested() ? opts.usage() : opts.version_line() + "\n");
      return 0;
    }
    for (const auto& e : opts.errors()) problems.add(e);
    if (!opts.values_usable()) return problems.report();
  }
  if (!opts.positional().empty())
    problems.add("unexpected argument '" + opts.positional().front() + "' (see --help)");
  auto level = citrus::app::json_logger::parse_level(opts.get("log-level"));
  if (!level) problems.add("--log-level must be debug, info, warn or error");
  std::string host;
  std::uint16_t port = 0;
  if (!citrus::app::split_host_port(opts.get("listen"), host, port)) problems.add("--listen must be HOST:PORT");
  const auto max_connections = opts.get_int("max-connections");
  const auto connection_rate = opts.get_int("connection-rate");
  const auto identity_rate = opts.get_int("identity-rate");
  const auto session_lifetime = opts.get_int("session-lifetime-s");
  if (!session_lifetime || *session_lifetime < 1 || *session_lifetime > 365LL * 24 * 3600)
    problems.add("--session-lifetime-s must be a number of seconds, 1..31536000");
  const auto key_overlap = opts.get_int("key-overlap-s");
  if (!key_overlap || *key_overlap < 0 || *key_overlap > 86400)
    problems.add("--key-overlap-s must be a number of seconds, 0..86400");
  const auto key_max_age = opts.get_int("key-max-age-s");
  if (!key_max_age || *key_max_age < 0 || *key_max_age > 10LL * 365 * 24 * 3600)
    problems.add("--key-max-age-s must be a number of seconds, 0..315360000");
  std::vector<std::string> revokers = citrus::app::split_list(opts.get("revokers"));
  for (const auto& id : revokers)
    if (!citrus::is_valid_wire_id(id)) problems.add("--revokers: '" + id + "' is not a valid commander id");
  if (!max_connections || *max_connections < 1) problems.add("--max-connections must be a positive number");
  const auto max_agent_series = opts.get_int("metrics-max-agents");
  if (!max_agent_series || *max_agent_series < 0) problems.add("--metrics-max-agents must be a number >= 0");
  std::string metrics_token;  // empty: /metrics is open
  if (!opts.get("metrics-token-file").empty()) {
    std::string error;
    auto token = citrus::app::read_token_file(opts.get("metrics-token-file"), error);
    if (token) metrics_token = std::move(*token);
    else problems.add("--metrics-token-file: " + error);
  }
  const auto per_address = opts.get_int("max-connections-per-address");
  if (!per_address || *per_address < 0) problems.add("--max-connections-per-address must be a number >= 0");
  if (!connection_rate || *connection_rate < 0 || !identity_rate || *identity_rate < 0)
    problems.add("--connection-rate and --identity-rate must be numbers >= 0");
  std::string key;  // this hub's key at the backend, for --verify-url
  if (!opts.get("verify-url").empty()) {
    key = opts.get("hub-key-file").empty() ? std::string() : citrus::app::read_secret_file(opts.get("hub-key-file")).value_or("");
    if (key.empty())
      if (const char* k = std::getenv("CITRUS_HUB_KEY")) key = k;
    if (key.empty()) problems.add("--verify-url needs this hub's key (--hub-key-file or CITRUS_HUB_KEY)");
  }
  if (opts.get("tls-cert").empty() != opts.get("tls-key").empty()) problems.add("--tls-cert and --tls-key go together");
  for (const char* option : {"tls-cert", "tls-key"})
    if (!opts.get(option).empty() && !citrus::app::read_secret_file(opts.get(option)))
      problems.add(std::string("cannot read --") + option + " " + opts.get(option));
  // Scale-out: the NATS servers joining this hub to its peers (checked here, connected after the loop exists).
  const std::vector<std::string> nats_servers = citrus::app::split_list(opts.get("nats-url"));
  std::string nats_password;
#ifndef CITRUS_HAVE_NATS
  if (!nats_servers.empty()) problems.add("--nats-url: this citrus-hub was built without NATS (citrus::nats)");
#endif
  for (const auto& url : nats_servers)
    if (url.rfind("nats://", 0) != 0 && url.rfind("tls://", 0) != 0)
      problems.add("--nats-url: '" + url + "' is not a nats:// or tls:// URL");
  if (!nats_servers.empty() && !citrus::is_valid_wire_id(opts.get("hub-id")))
    problems.add("--hub-id: '" + opts.get("hub-id") + "' is not a valid id");
  if (const char* from_env = std::getenv("CITRUS_NATS_PASSWORD"); from_env && opts.get("nats-password-file").empty())
    nats_password = from_env;
  if (!opts.get("nats-password-file").empty()) {
    auto secret = citrus::app::read_secret_file(opts.get("nats-password-file"));
    if (secret) nats_password = *secret;
    else problems.add("cannot read --nats-password-file " + opts.get("nats-password-file"), 1);
  }
  // Where keys are checked and audit events go: the database (--db, the default without --verify-url),
  // or the backend (--verify-url without --db: no database at all).
  const std::string verify_url = opts.get("verify-url");
  const bool uses_db = verify_url.empty() || !opts.get("db").empty();
  const std::string db_path = opts.get("db").empty() ? std::string("data/citrus.db") : opts.get("db");
  const std::string& hub_key = key;  // read above, before anything is opened
  const std::string commander_url = uses_db ? std::string() : citrus::hubapp::sibling_route(verify_url, "verify-commander");
  const std::string events_url = uses_db ? std::string() : citrus::hubapp::sibling_route(verify_url, "hub-events");
  if (!uses_db && commander_url.empty())
    problems.add("--verify-url must end in /api/verify-agent when there is no --db (commander keys and audit events go "
                 "to the routes next to it)");
  if (!problems.empty()) return problems.report();
  if (opts.has("check-config")) {
    citrus::app::print_line(citrus::app::stream::out, "citrus-hub: configuration OK");
    return 0;
  }

  citrus::app::json_logger log("hub", *level);

  citrus::wspp::event_loop loop(log);
  citrus::system_clock clock;
  citrus::system_random random;  // new keys of peers that rotate theirs, drawn on the storage write thread
  // Key checks against the database run on the storage worker's read lane, never on the loop; a full
  // lane refuses the connection at once as retryable (storage_unavailable, close 1013).
  std::unique_ptr<citrus::worker::storage_worker> storage;
  std::unique_ptr<citrus::executor_verifier> local_verifier;
  std::unique_ptr<citrus::app::async_audit> audit;
  auto open_db = [db_path, &log]() {
    return citrus::app::open_storage(db_path, citrus::app::storage_options{std::chrono::milliseconds(5000), &log});
  };
  if (uses_db) {
    citrus::worker::storage_worker_config worker_config;
    worker_config.queue_capacity = 256;
    auto started = citrus::worker::storage_worker::start(
        open_db, [&loop](std::function<void()> task) { loop.post(std::move(task)); }, log, worker_config);
    if (!started) {
      citrus::app::print_error("citrus-hub", "cannot use database " + citrus::app::describe_db(db_path) + ": " + started.error().message());
      return 1;
    }
    storage = std::move(*started);
    local_verifier = std::make_unique<citrus::executor_verifier>(*storage, clock, &random);
    audit = std::make_unique<citrus::app::async_audit>(
        [open_db]() -> std::unique_ptr<citrus::storage> {
          auto store = open_db();
          if (!store) return nullptr;
          return std::move(*store);
        },
        log);
  } else {
    citrus::hubapp::backend_audit_config audit_config;
    audit_config.url = events_url;
    audit_config.hub_id = opts.get("hub-id");
    audit_config.hub_key = hub_key;
    audit = std::make_unique<citrus::app::async_audit>(
        [audit_config, &log] { return citrus::hubapp::backend_audit_writer(audit_config, log); }, log,
        citrus::hubapp::backend_audit_options());
  }

  std::unique_ptr<citrus::hubapp::http_verifier> remote_verifier;
  if (!verify_url.empty()) {
    citrus::hubapp::http_verifier_config verifier_config;
    verifier_config.url = verify_url;
    verifier_config.hub_id = opts.get("hub-id");
    verifier_config.hub_key = hub_key;
    verifier_config.commander_url = commander_url;
    verifier_config.rotate_url = citrus::hubapp::sibling_route(verify_url, "rotate-key");
    remote_verifier = std::make_unique<citrus::hubapp::http_verifier>(std::move(verifier_config), loop, local_verifier.get(), log);
  }
  citrus::principal_verifier& verifier = remote_verifier ? static_cast<citrus::principal_verifier&>(*remote_verifier)
                                                         : static_cast<citrus::principal_verifier&>(*local_verifier);

  const auto operations = citrus::operation_registry::defaults();
  citrus::hub_config config;
  config.limits.max_message_bytes = static_cast<std::size_t>(opts.get_int("max-message-bytes").value_or(65536));
  config.request_timeout = std::chrono::seconds(opts.get_int("request-timeout-s").value_or(300));
  config.auth_timeout = std::chrono::milliseconds(opts.get_int("auth-timeout-ms").value_or(5000));
  const auto per_second = [](long long n) { return citrus::rate{static_cast<double>(n), 2.0 * static_cast<double>(n)}; };
  config.connection_rate = per_second(*connection_rate);
  config.identity_rate = per_second(*identity_rate);
  config.audit_commands = true;  // every routed command and its outcome, in the shared trail
  config.session_lifetime = std::chrono::seconds(*session_lifetime);
  config.revokers = std::move(revokers);
  config.key_rotation_overlap = std::chrono::seconds(*key_overlap);
  config.key_max_age = std::chrono::seconds(*key_max_age);
#ifdef CITRUS_HAVE_NATS
  std::unique_ptr<citrus::nats::nats_peer_link> peers;
  if (!nats_servers.empty()) {
    citrus::nats::nats_link_config nats_config;
    nats_config.hub_id = opts.get("hub-id");
    nats_config.servers = nats_servers;
    nats_config.user = opts.get("nats-user");
    nats_config.password = nats_password;
    peers = std::make_unique<citrus::nats::nats_peer_link>(
        nats_config, [&loop](std::function<void()> task) { loop.post(std::move(task)); }, log, clock);
  }
  citrus::hub_peer_link* peer_link = peers.get();
#else
  citrus::hub_peer_link* peer_link = nullptr;
#endif
  citrus::hub hub(config, citrus::hub_services{clock, log, *audit, verifier, operations, peer_link});
#ifdef CITRUS_HAVE_NATS
  if (peers) {
    peers->attach(hub);
    if (auto started = peers->start(); !started) {
      citrus::app::print_error("citrus-hub", "cannot start the NATS link: " + started.error().message());
      return 1;
    }
  }
#endif

  citrus::wspp::server_options server_options;
  server_options.bind_address = host;
  server_options.port = port;
  server_options.connection.max_message_bytes = config.limits.max_message_bytes;
  server_options.connection.ping_interval = std::chrono::milliseconds(opts.get_int("ping-interval-ms").value_or(20000));
  server_options.connection.handshake_timeout = config.auth_timeout;
  server_options.max_connections = static_cast<std::size_t>(*max_connections);
  server_options.max_connections_per_address = static_cast<std::size_t>(*per_address);
  server_options.tls_certificate_file = opts.get("tls-cert");
  server_options.tls_private_key_file = opts.get("tls-key");
  citrus::wspp::server server(loop, hub, server_options, log);
  citrus::app::http_metrics http_metrics("citrus_hub");
  metrics_sources sources{hub, server, log, *audit, http_metrics, static_cast<std::size_t>(*max_agent_series), {}, {}};
#ifdef CITRUS_HAVE_NATS
  if (peers) {
    sources.peers_online = [&peers] { return peers->peers().size(); };
    sources.nats_connected = [&peers] { return peers->connected(); };
  }
#endif
  server.set_http_handler([&](const citrus::wspp::http_request& request) {
    return citrus::app::serve_health_and_metrics(request, metrics_token, [&] { return metrics_text(sources); }, http_metrics);
  });

  // Routing runs in batches: messages of one I/O burst are queued, then routed by priority.
  bool process_posted = false;
  std::function<void()> route_batch = [&] {
    process_posted = false;
    hub.process(1024);
    if (hub.queued() > 0 && !process_posted) {
      process_posted = true;
      loop.post(route_batch);
    }
  };
  hub.set_wakeup([&] {
    if (!process_posted) {
      process_posted = true;
      loop.post(route_batch);
    }
  });
  auto ticker = loop.schedule_every(std::chrono::milliseconds(100), [&] {
    hub.tick();
#ifdef CITRUS_HAVE_NATS
    if (peers) peers->tick();
#endif
  });

  auto bound = server.listen();
  if (!bound) {
    const bool tls = !opts.get("tls-cert").empty() || !opts.get("tls-key").empty();
    citrus::app::print_error("citrus-hub", "cannot listen on " + opts.get("listen") + ": " +
                                               citrus::app::describe_listen_error(bound.error(), tls));
    return 1;
  }
  if (!opts.get("ready-file").empty()) {
    if (std::FILE* f = std::fopen(opts.get("ready-file").c_str(), "w")) {
      std::fprintf(f, "%u\n", static_cast<unsigned>(*bound));
      std::fclose(f);
    }
  }
  citrus::app::print_line(citrus::app::stream::out, std::string("citrus-hub listening on ") +
                                                       (server_options.tls_certificate_file.empty() ? "ws" : "wss") + "://" +
                                                       host + ":" + std::to_string(*bound));
  log.log(citrus::log_level::info, "hub_started", {citrus::field("port", static_cast<std::int64_t>(*bound))});
  citrus::app::notify_service_manager("READY=1\nSTATUS=listening on port " + std::to_string(*bound));

  citrus::wspp::timer stop_timer;
  citrus::app::signal_watcher signals([&](int sig) {
    loop.post([&, sig] {
      log.log(citrus::log_level::info, "shutdown", {citrus::field("signal", static_cast<std::int64_t>(sig))});
      citrus::app::notify_service_manager("STOPPING=1");
      server.stop();  // close frames (1001) go out while the loop runs a little longer
      stop_timer = loop.schedule(std::chrono::milliseconds(300), [&] { loop.stop(); });
    });
  });
  loop.run();
  ticker.cancel();
#ifdef CITRUS_HAVE_NATS
  if (peers) peers->stop();  // before the hub it calls back goes
#endif
  return 0;
}
