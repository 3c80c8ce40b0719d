// `citrus-backend init`: a new installation in one step. Registers the commander, the hub and the
// agent in the database, then writes their keys and a JWT secret (0600, in a 0700 directory) and one
// configuration file per executable that names them. Never overwrites: if any file it would write
// exists, it stops before touching anything.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "backend.hpp"
#include "citrus/app/console.hpp"
#include "citrus/app/json_logger.hpp"
#include "citrus/app/open_storage.hpp"
#include "citrus/app/options.hpp"
#include "citrus/core/clock.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/random.hpp"

#ifndef CITRUS_DEFAULT_CONFIG_DIR
#define CITRUS_DEFAULT_CONFIG_DIR "/etc/citrus"
#endif
#ifndef CITRUS_DEFAULT_DATA_DIR
#define CITRUS_DEFAULT_DATA_DIR "/var/lib/citrus"
#endif
#ifndef CITRUS_DEFAULT_WEB_ROOT
#define CITRUS_DEFAULT_WEB_ROOT "/usr/share/citrus/web"
#endif

namespace citrus::backend {
namespace {

namespace fs = std::filesystem;

/// A TOML basic string. Paths and ids with quotes, backslashes or control characters are refused
/// earlier, so quoting is enough.
std::string quoted(const std::string& text) { return "\"" + text + "\""; }

bool plain_text(const std::string& text) {
  for (char c : text)
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  return true;
}

/// Creates `path` with `mode`, failing if it exists (O_EXCL: no race with another writer).
bool write_new_file(const fs::path& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    print_error("cannot create " + path.string() + ": " + lower_message(std::error_code(errno, std::generic_category())));
    return false;
  }
  const bool ok = app::write_whole(fd, text) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) print_error("cannot write " + path.string());
  return ok;
}

bool make_directory(const fs::path& path, mode_t mode) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return true;
  fs::create_directories(path.parent_path(), ec);
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    print_error("cannot create " + path.string() + ": " + lower_message(std::error_code(errno, std::generic_category())));
    return false;
  }
  return true;
}

struct init_plan {
  fs::path config_dir, keys_dir, data_dir, web_root;
  std::string db;
  std::string backend_listen, hub_listen, agent_metrics_listen;
};

std::string backend_file(const init_plan& p) {
  std::string host;
  std::uint16_t port = 0;
  app::split_host_port(p.backend_listen, host, port);
  std::string origins = quoted("http://" + p.backend_listen);
  if (host == "127.0.0.1") origins += ", " + quoted("http://localhost:" + std::to_string(port));
  return "# citrus-backend configuration, written by `citrus-backend init`. Each key is an option of\n"
         "# `citrus-backend serve --help` (docs/configuration.md); the command line and $CITRUS_BACKEND_<KEY>\n"
         "# override it. Check it with: citrus-backend serve --config THIS_FILE --check-config\n"
         "listen = " + quoted(p.backend_listen) + "\n"
         "db = " + quoted(p.db) + "\n"
         "hub-url = " + quoted("ws://" + p.hub_listen + "/") + "\n"
         "commander-id = \"backend-1\"\n"
         "commander-key-file = " + quoted((p.keys_dir / "commander.key").string()) + "\n"
         "jwt-secret-file = " + quoted((p.keys_dir / "jwt.secret").string()) + "\n"
         "default-agent = \"agent-1\"\n"
         "web-root = " + quoted(p.web_root.string()) + "\n"
         "# The addresses users open the dashboard at (behind a proxy: its public https:// origin).\n"
         "allowed-origin = [" + origins + "]\n"
         "log-level = \"info\"\n";
}

std::string hub_file(const init_plan& p) {
  return "# citrus-hub configuration, written by `citrus-backend init` (citrus-hub --help;\n"
         "# $CITRUS_HUB_<KEY> and the command line override it).\n"
         "listen = " + quoted(p.hub_listen) + "\n"
         "# Commander keys; agent keys are verified by the backend (verify-url).\n"
         "db = " + quoted(p.db) + "\n"
         "verify-url = " + quoted("http://" + p.backend_listen + "/api/verify-agent") + "\n"
         "hub-id = \"hub-1\"\n"
         "hub-key-file = " + quoted((p.keys_dir / "hub.key").string()) + "\n"
         "# The backend whose revocations close a revoked key's live session at once.\n"
         "revokers = \"backend-1\"\n"
         "log-level = \"info\"\n";
}

std::string agent_file(const init_plan& p) {
  return "# citrus-agent configuration, written by `citrus-backend init` (citrus-agent --help;\n"
         "# $CITRUS_AGENT_<KEY> and the command line override it). On another machine: copy this file\n"
         "# and keys/agent.key, and point hub-url at the hub.\n"
         "hub-url = " + quoted("ws://" + p.hub_listen + "/") + "\n"
         "agent-id = \"agent-1\"\n"
         "key-file = " + quoted((p.keys_dir / "agent.key").string()) + "\n"
         "trust = \"backend-1\"\n"
         "root = " + quoted((p.data_dir / "sites").string()) + "\n"
         "# GET /metrics and /healthz for Prometheus (docs/operations.md, \"Monitoring\"), on loopback; to be\n"
         "# scraped from another machine, listen on its address and set metrics-token-file.\n"
         "metrics-listen = " + quoted(p.agent_metrics_listen) + "\n"
         "log-level = \"info\"\n";
}

}  // namespace

int run_init_command(int argc, char** argv, int first) {
  app::options opts(
      "citrus-backend init",
      "write a starter installation: register the commander backend-1, the hub hub-1 and the agent agent-1, "
      "write their keys and a JWT secret (0600) under CONFIG_DIR/keys (0700), and backend.toml, hub.toml and "
      "agent.toml in CONFIG_DIR. Refuses to overwrite anything",
      {
          {"config-dir", "", CITRUS_DEFAULT_CONFIG_DIR, "where the configuration files and keys/ go", false, true},
          {"data-dir", "", CITRUS_DEFAULT_DATA_DIR, "the database (unless --db) and the agent's sites/", false, true},
          {"db", "", "", "SQLite file or postgresql:// URL (default: DATA_DIR/citrus.db)", false, true},
          {"web-root", "", CITRUS_DEFAULT_WEB_ROOT, "the dashboard's files, for the backend's web-root", false, true},
          {"backend-listen", "", "127.0.0.1:8080", "the backend's HOST:PORT", false, true},
          {"hub-listen", "", "127.0.0.1:7000", "the hub's HOST:PORT", false, true},
          {"agent-metrics-listen", "", "127.0.0.1:9470", "the agent's HOST:PORT for /metrics and /healthz", false, true},
          {"log-level", "", "warn", "debug, info, warn or error (JSON lines on stderr)", false, true},
      });
  if (auto stop = parse_subcommand(opts, argc, argv, first, 0)) return *stop;
  const auto level = app::json_logger::parse_level(opts.get("log-level"));
  init_plan plan;
  std::error_code ec;
  plan.config_dir = fs::absolute(opts.get("config-dir"), ec).lexically_normal();
  plan.data_dir = fs::absolute(opts.get("data-dir"), ec).lexically_normal();
  plan.web_root = fs::absolute(opts.get("web-root"), ec).lexically_normal();
  plan.keys_dir = plan.config_dir / "keys";
  plan.db = opts.get("db").empty() ? (plan.data_dir / "citrus.db").string() : opts.get("db");
  if (plan.db.rfind("postgres", 0) != 0 && plan.db != ":memory:") plan.db = fs::absolute(plan.db, ec).lexically_normal().string();
  plan.backend_listen = opts.get("backend-listen");
  plan.hub_listen = opts.get("hub-listen");
  plan.agent_metrics_listen = opts.get("agent-metrics-listen");
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"backend-listen", plan.backend_listen},
           {"hub-listen", plan.hub_listen},
           {"agent-metrics-listen", plan.agent_metrics_listen}}) {
    std::string host;
    std::uint16_t port = 0;
    if (!app::split_host_port(value, host, port) || host.empty() || port == 0) {
      print_error("invalid --" + option + " '" + value + "' (HOST:PORT with a port, e.g. 127.0.0.1:8080)");
      return exit_usage;
    }
  }
  for (const auto& text : {plan.config_dir.string(), plan.data_dir.string(), plan.web_root.string(), plan.db,
                           plan.backend_listen, plan.hub_listen, plan.agent_metrics_listen})
    if (!plain_text(text)) {
      print_error("'" + text + "': paths and addresses must not contain quotes, backslashes or control characters");
      return exit_usage;
    }

  const std::vector<std::pair<fs::path, std::string>> configs{
      {plan.config_dir / "backend.toml", backend_file(plan)},
      {plan.config_dir / "hub.toml", hub_file(plan)},
      {plan.config_dir / "agent.toml", agent_file(plan)}};
  const std::vector<std::string> key_names{"commander.key", "hub.key", "agent.key", "jwt.secret"};
  for (const auto& [path, text] : configs)
    if (fs::exists(fs::symlink_status(path, ec))) {
      print_error(path.string() + " exists: init never overwrites (move it away to start afresh)");
      return exit_failure;
    }
  for (const auto& name : key_names)
    if (fs::exists(fs::symlink_status(plan.keys_dir / name, ec))) {
      print_error((plan.keys_dir / name).string() + " exists: init never overwrites (move it away to start afresh)");
      return exit_failure;
    }

  ::umask(0077);  // the database, its WAL and every file below: the service user's only
  if (!make_directory(plan.config_dir, 0700) || !make_directory(plan.keys_dir, 0700) ||
      !make_directory(plan.data_dir, 0700))
    return exit_failure;
  ::chmod(plan.keys_dir.c_str(), 0700);  // an existing, empty keys/ too

  app::json_logger log("backend", *level);
  auto opened = app::open_storage(plan.db, app::storage_options{std::chrono::milliseconds(5000), &log});
  if (!opened) {
    print_error("cannot open database " + app::describe_db(plan.db) + ": " + opened.error().message());
    return exit_failure;
  }
  std::unique_ptr<storage> db = std::move(*opened);
  system_clock clk;
  system_random random;
  credential_service credentials(db->credentials(), clk, random);
  struct principal {
    principal_kind kind;
    std::string id;
    std::vector<std::string> grants;
  };
  std::vector<std::string> keys;
  for (const principal& p : {principal{principal_kind::commander, "backend-1", {"agent-1"}},
                             principal{principal_kind::hub, "hub-1", {}},
                             principal{principal_kind::agent, "agent-1", {"backend-1"}}}) {
    const std::string what(to_string(p.kind));
    auto key = credentials.register_principal(p.kind, p.id, p.grants);
    if (!key) {
      print_error(key.error() == errc::conflict
                      ? "the database " + app::describe_db(plan.db) + " already has " + what + " '" + p.id +
                            "': init starts a new installation (give a new --db)"
                      : "cannot register " + what + " '" + p.id + "': " + lower_message(key.error()));
      return exit_failure;
    }
    db->audit().record(audit_event{clk.wall_now(), audit_kind::administration, "cli", what + ".register",
                                   what + ":" + p.id, "ok", {}});
    keys.push_back(std::move(*key));
  }
  keys.push_back(random_hex(random, 32));  // the JWT secret: 64 characters, 256 bits

  for (std::size_t i = 0; i < key_names.size(); ++i)
    if (!write_new_file(plan.keys_dir / key_names[i], keys[i] + "\n", 0600)) return exit_failure;
  for (const auto& [path, text] : configs)
    if (!write_new_file(path, text, 0600)) return exit_failure;

  app::write_whole(app::stream::out,
                   "Wrote " + plan.config_dir.string() + "/{backend,hub,agent}.toml and " + plan.keys_dir.string() +
                       "/{commander.key,hub.key,agent.key,jwt.secret}; database " + app::describe_db(plan.db) +
                       ".\nStart, in this order:\n"
                       "  citrus-backend serve --config " + (plan.config_dir / "backend.toml").string() + "\n"
                       "  citrus-hub --config " + (plan.config_dir / "hub.toml").string() + "\n"
                       "  citrus-agent --config " + (plan.config_dir / "agent.toml").string() + "\n"
                       "Add users with: citrus-backend user add NAME [--admin] --config " +
                       (plan.config_dir / "backend.toml").string() + "\n");
  return exit_ok;
}

}  // namespace citrus::backend
