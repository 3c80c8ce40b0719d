// citrus-backend's administration subcommands: users, agents, commanders and hubs in the --db,
// through the same services the server uses (password hashing, credential_service), and the review
// of the audit trail.
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend.hpp"
#include "citrus/app/console.hpp"
#include "citrus/app/json_logger.hpp"
#include "citrus/app/open_storage.hpp"
#include "citrus/app/options.hpp"
#include "citrus/core/audit_verify.hpp"
#include "citrus/core/clock.hpp"
#include "citrus/core/credentials.hpp"
#include "citrus/core/ids.hpp"
#include "citrus/core/password.hpp"
#include "citrus/core/random.hpp"

namespace citrus::backend {
namespace {

using app::option_spec;
using app::split_list;

option_spec db_option() {
  return {"db", "CITRUS_DB", "data/citrus.db", "SQLite database file (created if missing), or a postgresql:// URL", false};
}
option_spec log_level_option() {
  return {"log-level", "CITRUS_LOG_LEVEL", "warn", "debug, info, warn or error (JSON lines on stderr)", false};
}


/// The database and what the subcommands need around it.
struct admin_context {
  explicit admin_context(const app::options& opts)
      : log("backend", *app::json_logger::parse_level(opts.get("log-level"))) {}
  app::json_logger log;
  system_clock clk;
  system_random random;
  std::unique_ptr<storage> db;

  bool open(const std::string& path) {
    auto opened = app::open_storage(path, app::storage_options{std::chrono::milliseconds(5000), &log});
    if (!opened) {
      print_error("cannot open database " + app::describe_db(path) + ": " + opened.error().message());
      return false;
    }
    db = std::move(*opened);
    return true;
  }
};

constexpr const char* wire_id_rule = "1..128 characters of A-Z a-z 0-9 . _ : -";

bool check_wire_id(std::string_view what, const std::string& id) {
  if (is_valid_wire_id(id)) return true;
  print_error("invalid " + std::string(what) + " '" + id + "': " + wire_id_rule);
  return false;
}

/// Why a store or credential operation failed, for an operator.
std::string describe(std::error_code e) {
  if (e == errc::conflict) return "it already exists";
  if (e == errc::not_found) return "it does not exist";
  if (e == errc::storage_unavailable) return "the database is busy or unreachable";
  if (e == errc::storage_full) return "the disk is full (nothing was written)";
  if (e == errc::invalid_value) return "invalid value";
  return e.message();
}

/// Prints a key on its own line on stdout (scripts capture it); false if it could not be written.
bool print_key(const std::string& key) {
  if (!app::print_line(app::stream::out, key)) {
    print_error("could not write the key to stdout; it was stored and cannot be shown again: rotate it");
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------------------------ users

/// User names: 1..64 characters of A-Z a-z 0-9 . _ @ + - (is_valid_user_name, shared with the REST API).
bool valid_user_name(const std::string& name) { return is_valid_user_name(name); }

/// The first line of stdin, without its line ending; echo is off while a terminal types it.
std::optional<std::string> read_password() {
  const bool tty = ::isatty(STDIN_FILENO) == 1;
  termios saved{};
  bool echo_off = false;
  if (tty) {
    app::write_whole(app::stream::err, "Password: ");
    if (::tcgetattr(STDIN_FILENO, &saved) == 0) {
      termios quiet = saved;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      echo_off = ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
    }
  }
  std::string line;
  const bool got = static_cast<bool>(std::getline(std::cin, line));
  if (echo_off) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  if (tty) app::write_whole(app::stream::err, "\n");
  if (!got && line.empty()) return std::nullopt;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

int user_add(int argc, char** argv, int first) {
  app::options opts("citrus-backend user add NAME",
                    "create a user. The password is the first line of stdin (echo is off on a terminal); "
                    "prints the new user's id",
                    {db_option(),
                     {"admin", "", "", "the user is an administrator (may register agents, commanders and hubs)", true, true},
                     {"password-cost", "", "interactive",
                      "argon2id cost: interactive (production) or minimum (tests and demo seed users only)", false, true},
                     log_level_option()});
  if (auto stop = parse_subcommand(opts, argc, argv, first, 1)) return *stop;
  const std::string name = opts.positional()[0];
  if (!valid_user_name(name)) {
    print_error("invalid user name '" + name + "': 1..64 characters of A-Z a-z 0-9 . _ @ + -");
    return exit_usage;
  }
  password_cost cost = password_cost::interactive();
  if (opts.get("password-cost") == "minimum") cost = password_cost::minimum();
  else if (opts.get("password-cost") != "interactive") {
    print_error("invalid --password-cost '" + opts.get("password-cost") + "' (interactive, minimum)");
    return exit_usage;
  }

  admin_context ctx(opts);
  if (!ctx.open(opts.get("db"))) return exit_failure;
  if (ctx.db->users().find_user_by_name(name)) {  // before asking for a password in vain
    print_error("user '" + name + "' already exists");
    return exit_failure;
  }

  const auto password = read_password();
  if (!password || password->empty()) {
    print_error("refusing an empty password (give it as the first line of stdin)");
    return exit_failure;
  }
  auto hash = hash_password(*password, cost);
  if (!hash) {
    print_error(hash.error() == errc::invalid_request ? "the password is longer than 1024 bytes"
                                                      : "cannot hash the password: " + hash.error().message());
    return exit_failure;
  }

  const user_role role = opts.has("admin") ? user_role::admin : user_role::user;
  auto user = ctx.db->users().create_user(name, *hash, role, ctx.clk.wall_now());
  if (!user) {
    if (user.error() == errc::conflict) print_error("user '" + name + "' already exists");
    else print_error("cannot create user '" + name + "': " + describe(user.error()));
    return exit_failure;
  }
  ctx.db->audit().record(audit_event{ctx.clk.wall_now(), audit_kind::administration, "cli", "user.create",
                                     "user:" + std::to_string(user->id.value()), "ok", std::string(to_string(role))});
  return app::print_line(app::stream::out, std::to_string(user->id.value())) ? exit_ok : exit_failure;
}

int user_delete(int argc, char** argv, int first) {
  app::options opts("citrus-backend user delete NAME",
                    "delete a user and their sites. Their tokens stop working at once (REST and open WebSocket "
                    "sessions check that the user still exists); the id is never given to another user",
                    {db_option(), log_level_option()});
  if (auto stop = parse_subcommand(opts, argc, argv, first, 1)) return *stop;
  const std::string name = opts.positional()[0];
  if (!valid_user_name(name)) {
    print_error("invalid user name '" + name + "': 1..64 characters of A-Z a-z 0-9 . _ @ + -");
    return exit_usage;
  }
  admin_context ctx(opts);
  if (!ctx.open(opts.get("db"))) return exit_failure;
  auto user = ctx.db->users().find_user_by_name(name);
  if (!user) {
    if (user.error() == errc::not_found) print_error("user '" + name + "' does not exist");
    else print_error("cannot delete user '" + name + "': " + describe(user.error()));
    return exit_failure;
  }
  if (auto done = ctx.db->users().delete_user(user->id); !done) {
    if (done.error() == errc::not_found) print_error("user '" + name + "' does not exist");
    else print_error("cannot delete user '" + name + "': " + describe(done.error()));
    return exit_failure;
  }
  const std::string target = "user:" + std::to_string(user->id.value());
  if (auto audited = ctx.db->audit().append(audit_event{ctx.clk.wall_now(), audit_kind::administration, "cli",
                                                        "user.delete", target, "ok", name});
      !audited)
    print_error("warning: user '" + name + "' was deleted but the audit event could not be stored: " +
                describe(audited.error()));
  print_error("user '" + name + "' (id " + std::to_string(user->id.value()) + ") deleted with their sites");
  return exit_ok;
}

// ------------------------------------------------------------------------------------ credentials

int register_principal(principal_kind kind, const std::string& id, const std::vector<std::string>& grants,
                       const app::options& opts) {
  const std::string what(to_string(kind));
  if (!check_wire_id(what + " id", id)) return exit_usage;
  for (const auto& grant : grants)
    if (grant != "*" && !check_wire_id(kind == principal_kind::agent ? "commander id" : "agent id", grant))
      return exit_usage;
  admin_context ctx(opts);
  if (!ctx.open(opts.get("db"))) return exit_failure;
  credential_service credentials(ctx.db->credentials(), ctx.clk, ctx.random);
  auto key = credentials.register_principal(kind, id, grants);
  if (!key) {
    if (key.error() == errc::conflict) print_error(what + " '" + id + "' already exists");
    else print_error("cannot register " + what + " '" + id + "': " + describe(key.error()));
    return exit_failure;
  }
  ctx.db->audit().record(audit_event{ctx.clk.wall_now(), audit_kind::administration, "cli", what + ".register",
                                     what + ":" + id, "ok", {}});
  print_error(what + " '" + id + "' registered; its key is shown once, below");
  return print_key(*key) ? exit_ok : exit_failure;
}

int principal_usage(const char* noun, const char* verbs, bool help) {
  app::print_line(help ? app::stream::out : app::stream::err, std::string("usage: citrus-backend ") + noun + " " + verbs +
                                                                   " (--help after a verb for its options)");
  return help ? exit_ok : exit_usage;
}

bool is_help(const char* arg) { return std::string_view(arg) == "--help" || std::string_view(arg) == "-h"; }

}  // namespace

std::optional<int> parse_subcommand(app::options& opts, int argc, char** argv, int first, std::size_t positional) {
  opts.ignore_unknown_file_keys();  // the server's file: this command takes only its db and log-level
  if (!opts.parse(argc, argv, first)) {
    if (opts.help_requested() || opts.version_requested()) {
      app::write_whole(app::stream::out, opts.help_requested() ? opts.usage() : opts.version_line() + "\n");
      return exit_ok;
    }
    for (const auto& e : opts.errors()) print_error(e);
    return exit_usage;
  }
  if (opts.positional().size() != positional) {
    print_error(opts.positional().size() < positional ? "missing argument (see --help)"
                                                      : "unexpected argument '" + opts.positional().back() + "' (see --help)");
    return exit_usage;
  }
  if (!app::json_logger::parse_level(opts.get("log-level"))) {
    print_error("invalid --log-level '" + opts.get("log-level") + "' (debug, info, warn, error)");
    return exit_usage;
  }
  return std::nullopt;
}

int run_user_command(int argc, char** argv, int first) {
  constexpr const char* verbs = "add NAME [--admin] [--db FILE] | delete NAME [--db FILE]";
  if (first >= argc || is_help(argv[first])) return principal_usage("user", verbs, first < argc);
  if (std::string_view(argv[first]) == "add") return user_add(argc, argv, first + 1);
  if (std::string_view(argv[first]) == "delete") return user_delete(argc, argv, first + 1);
  print_error("unknown command 'user " + std::string(argv[first]) + "'");
  return principal_usage("user", verbs, false);
}

int run_agent_command(int argc, char** argv, int first) {
  constexpr const char* verbs = "register ID --trust COMMANDER[,...] | rotate ID [--overlap-s SECONDS]";
  if (first >= argc || is_help(argv[first])) return principal_usage("agent", verbs, first < argc);
  const std::string_view verb = argv[first];
  if (verb == "register") {
    app::options opts("citrus-backend agent register ID",
                      "register an agent; prints its key once, alone on stdout",
                      {{"trust", "", "", "the commanders (backends) the agent accepts commands from, comma-separated", false, true},
                       db_option(), log_level_option()});
    if (auto stop = parse_subcommand(opts, argc, argv, first + 1, 1)) return *stop;
    const auto trusted = split_list(opts.get("trust"));
    if (trusted.empty()) {
      print_error("agent register needs --trust COMMANDER[,...]");
      return exit_usage;
    }
    return register_principal(principal_kind::agent, opts.positional()[0], trusted, opts);
  }
  if (verb == "rotate") {
    app::options opts("citrus-backend agent rotate ID",
                      "issue a new key for an agent (printed once, alone on stdout); the old keys keep "
                      "working for the overlap",
                      {{"overlap-s", "", "3600", "seconds the old keys keep working (0 revokes them now)", false, true},
                       db_option(), log_level_option()});
    if (auto stop = parse_subcommand(opts, argc, argv, first + 1, 1)) return *stop;
    const std::string id = opts.positional()[0];
    const auto overlap = opts.get_int("overlap-s");
    if (!overlap || *overlap < 0 || *overlap > 365LL * 24 * 3600) {
      print_error("invalid --overlap-s '" + opts.get("overlap-s") + "' (0..31536000 seconds)");
      return exit_usage;
    }
    if (!check_wire_id("agent id", id)) return exit_usage;
    admin_context ctx(opts);
    if (!ctx.open(opts.get("db"))) return exit_failure;
    credential_service credentials(ctx.db->credentials(), ctx.clk, ctx.random);
    auto key = credentials.rotate(principal_kind::agent, id, std::chrono::seconds(*overlap));
    if (!key) {
      if (key.error() == errc::not_found) print_error("agent '" + id + "' does not exist");
      else print_error("cannot rotate the key of agent '" + id + "': " + describe(key.error()));
      return exit_failure;
    }
    ctx.db->audit().record(audit_event{ctx.clk.wall_now(), audit_kind::administration, "cli", "agent.rotate",
                                       "agent:" + id, "ok", "overlap " + std::to_string(*overlap) + "s"});
    print_error("agent '" + id + "' has a new key (below, shown once); the old keys expire in " +
                std::to_string(*overlap) + "s");
    return print_key(*key) ? exit_ok : exit_failure;
  }
  print_error("unknown command 'agent " + std::string(verb) + "'");
  return principal_usage("agent", verbs, false);
}

int run_commander_command(int argc, char** argv, int first) {
  constexpr const char* verbs = "register ID --agents AGENT[,...]|*";
  if (first >= argc || is_help(argv[first])) return principal_usage("commander", verbs, first < argc);
  if (std::string_view(argv[first]) != "register") {
    print_error("unknown command 'commander " + std::string(argv[first]) + "'");
    return principal_usage("commander", verbs, false);
  }
  app::options opts("citrus-backend commander register ID",
                    "register a commander (a backend's identity at the hub); prints its key once, alone on stdout",
                    {{"agents", "", "", "the agents it may command, comma-separated, or * for all", false, true},
                     db_option(), log_level_option()});
  if (auto stop = parse_subcommand(opts, argc, argv, first + 1, 1)) return *stop;
  const auto agents = split_list(opts.get("agents"));
  if (agents.empty()) {
    print_error("commander register needs --agents AGENT[,...] (or '*')");
    return exit_usage;
  }
  return register_principal(principal_kind::commander, opts.positional()[0], agents, opts);
}

int run_hub_command(int argc, char** argv, int first) {
  constexpr const char* verbs = "register ID";
  if (first >= argc || is_help(argv[first])) return principal_usage("hub", verbs, first < argc);
  if (std::string_view(argv[first]) != "register") {
    print_error("unknown command 'hub " + std::string(argv[first]) + "'");
    return principal_usage("hub", verbs, false);
  }
  app::options opts("citrus-backend hub register ID",
                    "register a hub (it calls POST /api/verify-agent with \"Bearer ID:KEY\"); prints its key once, "
                    "alone on stdout",
                    {db_option(), log_level_option()});
  if (auto stop = parse_subcommand(opts, argc, argv, first + 1, 1)) return *stop;
  return register_principal(principal_kind::hub, opts.positional()[0], {}, opts);
}

namespace {

/// Opens an existing --db for the audit subcommands (which must never create an empty database).
bool open_existing(admin_context& ctx, const std::string& path) {
  std::error_code missing;
  if (!app::is_postgres_url(path) && !std::filesystem::exists(path, missing)) {
    print_error("cannot open database " + path + ": it does not exist");
    return false;
  }
  return ctx.open(path);
}

option_spec existing_db_option() {
  return {"db", "CITRUS_DB", "data/citrus.db", "SQLite database file (must exist), or a postgresql:// URL", false};
}

/// `citrus-backend audit verify [--from ID] [--to ID]`: 0 intact, 3 broken (one line per break), 1 no database.
int run_audit_verify(int argc, char** argv, int first) {
  app::options opts("citrus-backend audit verify",
                    "check the audit trail's hash chain (whole, or events --from..--to); prints each break "
                    "(event id and what: edited, or a broken link where events were deleted or reordered). "
                    "Exit 0 only when intact, 3 when broken",
                    {{"from", "", "1", "first event id to check (it must chain to the event stored before it)", false, true},
                     {"to", "", "", "last event id to check (default: the newest)", false, true},
                     existing_db_option(), log_level_option()});
  if (auto stop = parse_subcommand(opts, argc, argv, first, 0)) return *stop;
  const auto from = opts.get_int("from");
  if (!from || *from < 1) {
    print_error("invalid --from '" + opts.get("from") + "' (an event id, 1 or more)");
    return exit_usage;
  }
  std::int64_t to = std::numeric_limits<std::int64_t>::max();
  if (opts.has("to")) {
    const auto given = opts.get_int("to");
    if (!given || *given < *from) {
      print_error("invalid --to '" + opts.get("to") + "' (an event id, at least --from)");
      return exit_usage;
    }
    to = *given;
  }
  admin_context ctx(opts);
  if (!open_existing(ctx, opts.get("db"))) return exit_failure;
  auto report = verify_audit_trail(ctx.db->audit(), *from, to);
  if (!report) {
    print_error("cannot read the audit trail: " + describe(report.error()));
    return exit_failure;
  }
  std::string out;
  for (const auto& b : report->breaks) out += describe(b) + "\n";
  if (report->intact())
    out += "intact: " + std::to_string(report->checked) + " events checked" +
           (report->checked ? ", last event " + std::to_string(report->last_id) + ", head hash " + report->head_hash : "") +
           "\n";
  else
    out += "broken: " + std::to_string(report->breaks.size()) + " break(s) in " + std::to_string(report->checked) +
           " events checked\n";
  if (!app::write_whole(app::stream::out, out)) return exit_failure;
  return report->intact() ? exit_ok : exit_trail_broken;
}

/// `citrus-backend audit ack ID`: records that an administrator reviewed flagged event ID.
int run_audit_ack(int argc, char** argv, int first) {
  app::options opts("citrus-backend audit ack ID",
                    "acknowledge flagged event ID (a security event or a failed authentication): who and when are "
                    "recorded, and the acknowledgement is itself audited",
                    {{"by", "", "cli", "who acknowledges (recorded as the actor)", false, true}, existing_db_option(),
                     log_level_option()});
  if (auto stop = parse_subcommand(opts, argc, argv, first, 1)) return *stop;
  const auto& word = opts.positional()[0];
  char* end = nullptr;
  const long long id = std::strtoll(word.c_str(), &end, 10);
  if (word.empty() || *end != '\0' || id < 1) {
    print_error("invalid event id '" + word + "'");
    return exit_usage;
  }
  if (opts.get("by").empty()) {
    print_error("--by must not be empty");
    return exit_usage;
  }
  admin_context ctx(opts);
  if (!open_existing(ctx, opts.get("db"))) return exit_failure;
  auto acked = ctx.db->audit().acknowledge(id, opts.get("by"), ctx.clk.wall_now());
  if (!acked) {
    if (acked.error() == make_error_code(errc::not_found))
      print_error("no flagged event " + word + " (only security events and failed authentications are reviewed)");
    else if (acked.error() == make_error_code(errc::conflict))
      print_error("event " + word + " is already acknowledged");
    else
      print_error("cannot acknowledge event " + word + ": " + describe(acked.error()));
    return exit_failure;
  }
  return app::write_whole(app::stream::out, "acknowledged event " + word + "\n") ? exit_ok : exit_failure;
}

}  // namespace

int run_audit_command(int argc, char** argv, int first) {
  if (first < argc && std::string_view(argv[first]) == "verify") return run_audit_verify(argc, argv, first + 1);
  if (first < argc && std::string_view(argv[first]) == "ack") return run_audit_ack(argc, argv, first + 1);
  app::options opts("citrus-backend audit",
                    "print the audit trail, newest first, one JSON object per line: "
                    "{\"at\",\"kind\",\"actor\",\"action\",\"target\",\"outcome\",\"detail\"}. "
                    "Reads only; works while the backend runs",
                    {{"kind", "", "", "only this kind: site_operation, security_event, authentication or administration", false, true},
                     {"limit", "", "100", "at most this many events (1..10000)", false, true},
                     {"since", "", "", "only events at or after this time (Unix seconds)", false, true},
                     {"flagged", "", "", "only events flagged for review (security events, failed authentications), "
                                         "with \"id\" and their acknowledgement", true, true},
                     {"unacknowledged", "", "", "only flagged events nobody has acknowledged (implies --flagged)", true, true},
                     {"actor", "", "", "with --flagged: only this actor", false, true},
                     {"outcome", "", "", "with --flagged: only this outcome", false, true},
                     {"until", "", "", "with --flagged: only events at or before this time (Unix seconds)", false, true},
                     existing_db_option(), log_level_option()});
  if (auto stop = parse_subcommand(opts, argc, argv, first, 0)) return *stop;
  audit_query query;
  if (opts.has("kind")) {
    query.kind = parse_audit_kind(opts.get("kind"));
    if (!query.kind) {
      print_error("invalid --kind '" + opts.get("kind") +
                  "' (site_operation, security_event, authentication, administration)");
      return exit_usage;
    }
  }
  const auto limit = opts.get_int("limit");
  if (!limit || *limit < 1 || *limit > max_audit_review_limit) {
    print_error("invalid --limit '" + opts.get("limit") + "' (1.." + std::to_string(max_audit_review_limit) + ")");
    return exit_usage;
  }
  query.limit = static_cast<std::size_t>(*limit);
  if (opts.has("since")) {
    const auto since = opts.get_int("since");
    if (!since || *since < 0 || *since > max_audit_since) {
      print_error("invalid --since '" + opts.get("since") + "' (Unix seconds, 0.." + std::to_string(max_audit_since) + ")");
      return exit_usage;
    }
    query.since = from_unix_seconds(*since);
  }

  const bool flagged = opts.has("flagged") || opts.has("unacknowledged");
  if (!flagged && (opts.has("actor") || opts.has("outcome") || opts.has("until"))) {
    print_error("--actor, --outcome and --until need --flagged or --unacknowledged");
    return exit_usage;
  }
  audit_review_query review;
  if (flagged) {
    review.kind = query.kind;
    review.limit = query.limit;
    review.since = query.since;
    review.unacknowledged_only = opts.has("unacknowledged");
    if (opts.has("actor")) review.actor = opts.get("actor");
    if (opts.has("outcome")) review.outcome = opts.get("outcome");
    if (opts.has("until")) {
      const auto until = opts.get_int("until");
      if (!until || *until < 0 || *until > max_audit_since) {
        print_error("invalid --until '" + opts.get("until") + "' (Unix seconds, 0.." + std::to_string(max_audit_since) + ")");
        return exit_usage;
      }
      review.until = from_unix_seconds(*until);
    }
  }

  admin_context ctx(opts);
  if (!open_existing(ctx, opts.get("db"))) return exit_failure;
  std::vector<std::string> lines;
  if (flagged) {
    auto records = ctx.db->audit().review(review);
    if (!records) {
      print_error("cannot read the audit trail: " + describe(records.error()));
      return exit_failure;
    }
    for (const auto& r : *records) {
      lines.emplace_back();
      append_audit_record_json(lines.back(), r);
    }
  } else {
    auto events = ctx.db->audit().query(query);
    if (!events) {
      print_error("cannot read the audit trail: " + describe(events.error()));
      return exit_failure;
    }
    for (const auto& e : *events) {
      lines.emplace_back();
      append_audit_json(lines.back(), e);
    }
  }
  std::string chunk;  // whole lines, written 64 KiB at a time
  bool written = true;
  for (std::size_t i = 0; i < lines.size() && written; ++i) {
    chunk += lines[i];
    chunk += '\n';
    if (chunk.size() >= 64 * 1024 || i + 1 == lines.size()) {
      written = app::write_whole(app::stream::out, chunk);
      chunk.clear();
    }
  }
  if (!written) {
    print_error("could not write the audit events to stdout");
    return exit_failure;
  }
  return exit_ok;
}

}  // namespace citrus::backend
