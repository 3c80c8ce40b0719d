#pragma once
// citrus-backend: the pieces main.cpp wires together (internal to the executable).
#include <filesystem>
#include <optional>
#include <string>

#include "citrus/core/rest_api.hpp"
#include "citrus/wspp/http.hpp"

namespace citrus::backend {

/// Exit codes of every subcommand.
constexpr int exit_ok = 0;
constexpr int exit_failure = 1;  ///< a runtime error (database, port, name taken, ...)
constexpr int exit_usage = 2;    ///< bad command line

/// `citrus-backend user|agent|commander|hub ...`; argv[first] is the word after the noun.
int run_user_command(int argc, char** argv, int first);
int run_agent_command(int argc, char** argv, int first);
int run_commander_command(int argc, char** argv, int first);
int run_hub_command(int argc, char** argv, int first);
/// `citrus-backend audit [--kind K] [--limit N] [--since S]`; argv[first] is the word after "audit".
int run_audit_command(int argc, char** argv, int first);

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

/// The HTTP side of the server's port: the REST API, the static files (when `files` is set), and
/// the security headers on every answer (HSTS as well when `tls`).
wspp::http_response handle_http(const wspp::http_request& request, rest_api& api, const static_files* files, bool tls);

}  // namespace citrus::backend
