#pragma once
/// Command-line and environment options for the executables: `--name value` or `--name=value`,
/// falling back to an environment variable, then to a default. `--help` prints the table.
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace citrus::app {

struct option_spec {
  std::string name;         ///< without dashes: "listen"
  std::string env;          ///< "CITRUS_HUB_LISTEN"; may be empty
  std::string default_value;
  std::string help;
  bool flag = false;        ///< takes no value ("--admin")
};

class options {
 public:
  options(std::string program, std::string summary, std::vector<option_spec> specs);
  /// Parses argv (after any subcommand words the caller consumed). On --help prints usage and
  /// returns false with help_requested(); on an unknown option or missing value returns false with
  /// error() set.
  bool parse(int argc, char** argv, int first = 1);
  std::string get(const std::string& name) const;
  bool has(const std::string& name) const;  ///< a flag given, or a value set by argv or env
  std::optional<long long> get_int(const std::string& name) const;
  const std::vector<std::string>& positional() const noexcept { return positional_; }
  const std::string& error() const noexcept { return error_; }
  bool help_requested() const noexcept { return help_; }
  std::string usage() const;

 private:
  std::string program_, summary_;
  std::vector<option_spec> specs_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  std::string error_;
  bool help_ = false;
};

/// "host:port" → (host, port); false on a malformed value.
bool split_host_port(const std::string& text, std::string& host, std::uint16_t& port);

/// Reads a whole file (for key and secret files); nullopt if unreadable. Trailing newlines trimmed.
std::optional<std::string> read_secret_file(const std::string& path);

/// A bearer token from a file (e.g. --metrics-token-file): 16..256 bytes without spaces or control
/// characters, as an "Authorization: Bearer" header carries it. nullopt with `error` set otherwise.
std::optional<std::string> read_token_file(const std::string& path, std::string& error);

}  // namespace citrus::app
