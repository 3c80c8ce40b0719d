// The executables' options: command line > environment > configuration file > default, one
// uniform variable name per option, and a readable error for every bad file.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "citrus/app/options.hpp"
#include "citrus/version.hpp"

namespace {

using citrus::app::option_spec;
using citrus::app::options;

std::vector<option_spec> specs() {
  return {
      {"listen", "", "127.0.0.1:7000", "address"},
      {"db", "CITRUS_DB", "data/citrus.db", "database"},
      {"max-connections", "", "10000", "cap"},
      {"allowed-origin", "", "", "origins", false, false, true},
      {"admin", "", "", "flag", true, true},
  };
}

/// A temporary configuration file, removed at the end of the test.
struct config_file {
  explicit config_file(const std::string& text) {
    char name[] = "/tmp/citrus-options-XXXXXX";
    const int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::close(fd);
    path = name;
    std::ofstream(path) << text;
  }
  ~config_file() { ::unlink(path.c_str()); }
  std::string path;
};

/// Sets an environment variable for one test.
struct scoped_env {
  scoped_env(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~scoped_env() { ::unsetenv(name_); }
  const char* name_;
};

bool parse(options& opts, std::vector<std::string> args) {
  args.insert(args.begin(), "citrus-hub");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return opts.parse(static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST_CASE("the command line wins over the environment, which wins over the file, which wins over the default") {
  config_file file("listen = \"10.0.0.1:1\"\ndb = \"/file.db\"\nmax-connections = 3\n");
  scoped_env env("CITRUS_HUB_DB", "/env.db");
  options opts("citrus-hub", "test", specs());
  REQUIRE(parse(opts, {"--config", file.path, "--listen=10.0.0.9:9"}));
  CHECK(opts.get("listen") == "10.0.0.9:9");
  CHECK(opts.get("db") == "/env.db");
  CHECK(opts.get_int("max-connections") == 3);
  CHECK(opts.config_file() == file.path);

  options defaults("citrus-hub", "test", specs());
  REQUIRE(parse(defaults, {}));
  CHECK(defaults.get("listen") == "127.0.0.1:7000");
  CHECK(defaults.get("db") == "/env.db");
  CHECK_FALSE(defaults.has("admin"));
}

TEST_CASE("every option has the variable CITRUS_<EXE>_<OPTION>; the configuration file too") {
  options opts("citrus-backend user add NAME", "test", specs());
  CHECK(opts.env_name("max-connections") == "CITRUS_BACKEND_MAX_CONNECTIONS");
  config_file file("max_connections = 7\n");
  scoped_env env("CITRUS_BACKEND_CONFIG", file.path.c_str());
  scoped_env admin("CITRUS_BACKEND_ADMIN", "1");  // a per-invocation flag is never taken from the environment
  REQUIRE(parse(opts, {"alice"}));
  CHECK(opts.get_int("max-connections") == 7);  // underscores name the same key
  CHECK_FALSE(opts.has("admin"));
  REQUIRE(opts.positional().size() == 1);
  CHECK(opts.positional()[0] == "alice");
}

TEST_CASE("an old variable name still works when the new one is unset") {
  scoped_env legacy("CITRUS_DB", "/legacy.db");
  options opts("citrus-hub", "test", specs());
  REQUIRE(parse(opts, {}));
  CHECK(opts.get("db") == "/legacy.db");
  scoped_env current("CITRUS_HUB_DB", "/current.db");
  options again("citrus-hub", "test", specs());
  REQUIRE(parse(again, {}));
  CHECK(again.get("db") == "/current.db");
}

TEST_CASE("a shared file: this executable's section and the top level apply, the others' sections do not") {
  config_file file("db = \"/shared.db\"\n[backend]\nlisten = \"0.0.0.0:8080\"\n[hub]\nlisten = \"0.0.0.0:7000\"\n");
  options opts("citrus-hub", "test", specs());
  REQUIRE(parse(opts, {"--config", file.path}));
  CHECK(opts.get("listen") == "0.0.0.0:7000");
  CHECK(opts.get("db") == "/shared.db");
}

TEST_CASE("a repeatable option: every command-line value, or a file's array") {
  config_file file("allowed-origin = [\"http://a\", \"http://b\"]\n");
  options from_file("citrus-hub", "test", specs());
  REQUIRE(parse(from_file, {"--config", file.path}));
  CHECK(from_file.get_all("allowed-origin") == std::vector<std::string>{"http://a", "http://b"});
  options from_argv("citrus-hub", "test", specs());
  REQUIRE(parse(from_argv, {"--config", file.path, "--allowed-origin", "http://c", "--allowed-origin=http://d"}));
  CHECK(from_argv.get_all("allowed-origin") == std::vector<std::string>{"http://c", "http://d"});
}

TEST_CASE("bad input is one readable line naming what is wrong") {
  struct bad {
    std::string text, expected;
  };
  for (const bad& b : {bad{"lisen = \"x\"\n", "unknown key 'lisen'"}, bad{"[web]\nroot = \"x\"\n", "unknown section [web]"},
                       bad{"admin = true\n", "unknown key 'admin'"}, bad{"listen = [\"a\", \"b\"]\n", "needs one value"}}) {
    CAPTURE(b.text);
    config_file file(b.text);
    options opts("citrus-hub", "test", specs());
    CHECK_FALSE(parse(opts, {"--config", file.path}));
    CHECK(opts.error().find(b.expected) != std::string::npos);
    CHECK(opts.error().find(file.path) == 0);
    CHECK(opts.error().find('\n') == std::string::npos);
  }
  options missing("citrus-hub", "test", specs());
  CHECK_FALSE(parse(missing, {"--config", "/nonexistent/hub.toml"}));
  CHECK(missing.error() == "cannot read the configuration file /nonexistent/hub.toml");
  options unknown("citrus-hub", "test", specs());
  CHECK_FALSE(parse(unknown, {"--lisen", "x"}));
  CHECK(unknown.error().find("--lisen") != std::string::npos);

  config_file server_keys("listen = \"x\"\ntrust = \"backend-1\"\n");
  options subcommand("citrus-backend audit", "test", specs());
  subcommand.ignore_unknown_file_keys();  // a subcommand reads the server's file for db and log-level
  CHECK(parse(subcommand, {"--config", server_keys.path}));
}

TEST_CASE("every bad key of a file is named, one line each, and the good ones still apply") {
  config_file file(
      "lisen = \"x\"\ndb = \"/file.db\"\nlisten = [\"a\", \"b\"]\n[web]\nroot = \"x\"\nport = 1\n[hub]\nmax_conections = 5\n");
  options opts("citrus-hub", "test", specs());
  CHECK_FALSE(parse(opts, {"--config", file.path}));
  const std::vector<std::string> expected{
      file.path + ": unknown key 'lisen' (see citrus-hub --help)",
      file.path + ": key 'listen' needs one value",
      file.path + ": unknown section [web] (only [backend], [hub], [agent])",  // once for its two keys
      file.path + ": unknown key 'max_conections' (see citrus-hub --help)",
  };
  CHECK(opts.errors() == expected);
  CHECK(opts.error() == expected.front());
  CHECK(opts.values_usable());  // what could be read is there, for the caller's own checks
  CHECK(opts.get("db") == "/file.db");
  CHECK(opts.get("listen") == "127.0.0.1:7000");  // the refused key: the default

  options unreadable("citrus-hub", "test", specs());
  CHECK_FALSE(parse(unreadable, {"--config", "/nonexistent/hub.toml"}));
  CHECK(unreadable.errors().size() == 1);
  CHECK_FALSE(unreadable.values_usable());
  options bad_argv("citrus-hub", "test", specs());
  CHECK_FALSE(parse(bad_argv, {"--lisen", "x", "--config", file.path}));
  CHECK(bad_argv.errors().size() == 1);  // the command line stops at its first problem
  CHECK_FALSE(bad_argv.values_usable());
  options good("citrus-hub", "test", specs());
  CHECK(parse(good, {}));
  CHECK(good.errors().empty());
  CHECK(good.error().empty());
  CHECK(good.values_usable());
}

TEST_CASE("--version and --help answer without an error") {
  options version("citrus-agent", "test", specs());
  CHECK_FALSE(parse(version, {"--version"}));
  CHECK(version.version_requested());
  CHECK(version.version_line() == std::string("citrus-agent ") + CITRUS_VERSION_STRING);
  options help("citrus-agent", "test", specs());
  CHECK_FALSE(parse(help, {"--help"}));
  CHECK(help.help_requested());
  CHECK(help.usage().find("[$CITRUS_AGENT_MAX_CONNECTIONS]") != std::string::npos);
  CHECK(help.error().empty());
}
