#pragma once
// citrus-backend: the pieces main.cpp wires together (internal to the executable).
#include <chrono>
#include <filesystem>
#include <functional>
#include <list>
#include <optional>
#include <string>

#include "citrus/app/options.hpp"
#include "citrus/backend/backend_service.hpp"
#include "citrus/wspp/event_loop.hpp"
#include "citrus/wspp/http.hpp"

namespace citrus::backend {

/// Exit codes of every subcommand.
constexpr int exit_ok = 0;
constexpr int exit_failure = 1;  ///< a runtime error (database, port, name taken, ...)
constexpr int exit_usage = 2;    ///< bad command line
constexpr int exit_trail_broken = 3;  ///< `audit verify`: the hash chain is broken

/// `citrus-backend user|agent|commander|hub ...`; argv[first] is the word after the noun.
int run_user_command(int argc, char** argv, int first);
int run_agent_command(int argc, char** argv, int first);
int run_commander_command(int argc, char** argv, int first);
int run_hub_command(int argc, char** argv, int first);
/// `citrus-backend audit [--kind K] [--limit N] [--since S] [--flagged|--unacknowledged ...]`, `audit verify`
/// and `audit ack ID`; argv[first] is the word after "audit".
int run_audit_command(int argc, char** argv, int first);

/// Parses the options of one subcommand (help, version, the number of positional arguments,
/// --log-level); an exit code when the command must stop here.
std::optional<int> parse_subcommand(app::options& opts, int argc, char** argv, int first, std::size_t positional);

/// `citrus-backend init [--config-dir D] [--data-dir D] ...`: keys, secret and configuration files.
int run_init_command(int argc, char** argv, int first);

/// "citrus-backend: " + text on stderr.
void print_error(const std::string& text);

/// An error_code's message as the tail of a sentence ("address already in use").
std::string lower_message(const std::error_code& error);

/// The dashboard's files under one directory. serve() answers a GET for any path that is not the
/// REST API's: "/" (and any path ending in '/') is index.html; anything that is not a regular file
/// inside the root — "..", "." or hidden segments, encoded variants (decoded once, then checked),
/// backslashes, control characters, symbolic links leading outside — is a 404.
class static_files {
 public:
  /// nullopt (with `error` set) when `root` is not a readable directory.
  static std::optional<static_files> open(const std::string& root, std::string& error);
  wspp::http_response serve(const wspp::http_request& request) const;

 private:
  explicit static_files(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;  ///< canonical
};

/// True for targets the REST API answers: /api, /api/..., /healthz, /metrics.
bool is_api_target(std::string_view target) noexcept;

/// An answer of the HTTP side, and how long to hold it back before sending it (http_response::hold_back).
struct http_answer {
  wspp::http_response response;
  std::chrono::milliseconds hold_back{0};
};

/// The HTTP side of the server's port: the REST API, the static files (when `files` is set), and
/// the security headers on every answer (HSTS as well when `tls`). `done` runs once, on the loop.
void handle_http(const wspp::http_request& request, backend_service& backend, const static_files* files, bool tls,
                 std::function<void(http_answer)> done);

/// Answers held back on the event loop's timers, never blocking it: a held login answer waits
/// here while every other request is served. Loop thread only; destroy it before the loop.
class held_answers {
 public:
  explicit held_answers(wspp::event_loop& loop) : loop_(loop) {}
  held_answers(const held_answers&) = delete;
  held_answers& operator=(const held_answers&) = delete;
  /// Sends `response` through `responder` once `delay` has passed (at once when it is zero).
  void send_after(std::chrono::milliseconds delay, wspp::http_responder responder, wspp::http_response response);
  /// Answers waiting now (each holds its connection, within the server's max_connections).
  std::size_t waiting() const noexcept { return held_.size(); }

 private:
  struct held {
    wspp::http_responder responder;
    wspp::http_response response;
    wspp::timer timer;
  };
  wspp::event_loop& loop_;
  std::list<held> held_;
};

}  // namespace citrus::backend
