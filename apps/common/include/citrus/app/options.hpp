#pragma once
/// Options of the executables, parsed by CLI11: `--name value` or `--name=value` on the command
/// line, else the environment variable CITRUS_<EXE>_<NAME> (e.g. CITRUS_HUB_MAX_CONNECTIONS), else
/// the key `name` of the configuration file given by `--config FILE` (or $CITRUS_<EXE>_CONFIG), else
/// the default. Every executable also answers `--help` and `--version`. docs/configuration.md lists
/// every option.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace citrus::app {

struct option_spec {
  std::string name;           ///< without dashes: "listen"; also the configuration file's key
  std::string legacy_env;     ///< an older variable name still read, with a warning (may be empty)
  std::string default_value;
  std::string help;
  bool flag = false;          ///< takes no value ("--admin")
  bool command_line_only = false;  ///< a per-invocation choice: never from the environment or a file
  bool repeatable = false;    ///< may be given several times (a file: an array); get_all() has them all
};

class options {
 public:
  /// `program` starts with the executable's name ("citrus-backend user add NAME"), which names the
  /// environment variables: CITRUS_BACKEND_*.
  options(std::string program, std::string summary, std::vector<option_spec> specs);
  /// Parses argv from `first` on (after any subcommand words the caller consumed), then the
  /// environment, then the configuration file. On --help or --version returns false with
  /// help_requested() or version_requested(); on a bad option, value or file returns false with
  /// error() set (one line) and errors() listing every problem found (each key of the file is checked).
  bool parse(int argc, char** argv, int first = 1);
  std::string get(const std::string& name) const;  ///< the last value; "" when unset
  std::vector<std::string> get_all(const std::string& name) const;
  bool has(const std::string& name) const;  ///< a flag given, or a value set by argv, env, file or default
  std::optional<long long> get_int(const std::string& name) const;
  const std::vector<std::string>& positional() const noexcept { return positional_; }
  /// The first problem parse() found ("" when none).
  const std::string& error() const noexcept;
  /// Every problem parse() found, one line each, in the order found.
  const std::vector<std::string>& errors() const noexcept { return errors_; }
  /// The values are set: parse() succeeded, or refused only keys of the file (the other keys and the
  /// defaults are set, so a caller reporting every problem can still check them).
  bool values_usable() const noexcept { return values_usable_; }
  bool help_requested() const noexcept { return help_; }
  bool version_requested() const noexcept { return version_; }
  /// The configuration file read, or "" when none.
  const std::string& config_file() const noexcept { return config_file_; }
  std::string usage() const;
  /// "citrus-hub 0.1.0": the answer to --version.
  std::string version_line() const;
  /// The environment variable of an option: CITRUS_<EXE>_<NAME>.
  std::string env_name(const std::string& option) const;
  /// A subcommand reading the executable's configuration file skips the keys it has no use for
  /// (`--check-config` of the server still rejects unknown keys).
  void ignore_unknown_file_keys() noexcept { strict_file_keys_ = false; }

 private:
  bool apply_environment();
  bool apply_config_file(const std::string& path);
  const option_spec* find(const std::string& name) const;

  std::string program_, summary_, executable_;
  std::vector<option_spec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
  std::vector<std::string> errors_;
  std::string config_file_;
  bool help_ = false, version_ = false, strict_file_keys_ = true, values_usable_ = false;
};

/// A comma-separated option value (--trust, --revokers): its items, blanks trimmed, empty items dropped.
std::vector<std::string> split_list(const std::string& text);

/// "host:port" → (host, port); false on a malformed value.
bool split_host_port(const std::string& text, std::string& host, std::uint16_t& port);

/// Reads a whole file (for key and secret files); nullopt if unreadable. Trailing newlines trimmed.
std::optional<std::string> read_secret_file(const std::string& path);

/// A bearer token from a file (e.g. --metrics-token-file): 16..256 bytes without spaces or control
/// characters, as an "Authorization: Bearer" header carries it. nullopt with `error` set otherwise.
std::optional<std::string> read_token_file(const std::string& path, std::string& error);

}  // namespace citrus::app
