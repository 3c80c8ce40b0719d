#include "citrus/app/options.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "citrus/app/console.hpp"
#include "citrus/version.hpp"

namespace citrus::app {
namespace {

/// The executables whose sections a shared configuration file may hold.
constexpr const char* executables[] = {"backend", "hub", "agent"};

std::string upper_snake(const std::string& text) {
  std::string out = text;
  for (char& c : out) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::optional<std::string> environment(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (!value || !*value) return std::nullopt;
  return std::string(value);
}

}  // namespace

options::options(std::string program, std::string summary, std::vector<option_spec> specs)
    : program_(std::move(program)), summary_(std::move(summary)), specs_(std::move(specs)) {
  executable_ = program_.substr(0, program_.find(' '));
}

std::string options::env_name(const std::string& option) const {
  std::string exe = executable_;
  if (exe.rfind("citrus-", 0) == 0) exe.erase(0, 7);
  return "CITRUS_" + upper_snake(exe) + "_" + upper_snake(option);
}

std::string options::version_line() const { return executable_ + " " + citrus::version(); }

const option_spec* options::find(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

bool options::parse(int argc, char** argv, int first) {
  CLI::App cli{summary_, executable_};
  cli.set_help_flag("-h,--help");
  cli.set_version_flag("--version", version_line());
  std::vector<std::pair<const option_spec*, CLI::Option*>> declared;
  for (const auto& s : specs_) {
    CLI::Option* o = s.flag ? cli.add_flag("--" + s.name) : cli.add_option("--" + s.name);
    if (!s.flag)
      o->multi_option_policy(s.repeatable ? CLI::MultiOptionPolicy::TakeAll : CLI::MultiOptionPolicy::TakeLast);
    declared.emplace_back(&s, o);
  }
  std::string config_path;
  cli.add_option("--config", config_path);
  cli.add_option("arguments", positional_);

  std::vector<std::string> args;
  for (int i = argc - 1; i >= std::max(first, 1); --i) args.emplace_back(argv[i]);  // CLI11 takes them reversed
  try {
    cli.parse(args);
  } catch (const CLI::CallForHelp&) {
    help_ = true;
    return false;
  } catch (const CLI::CallForVersion&) {
    version_ = true;
    return false;
  } catch (const CLI::ParseError& e) {
    errors_.push_back(std::string(e.what()) + " (see --help)");
    return false;
  }
  for (const auto& [spec, option] : declared) {
    if (option->count() == 0) continue;
    if (spec->flag) values_[spec->name] = {"1"};
    else values_[spec->name] = option->results();
  }
  if (!apply_environment()) return false;
  if (config_path.empty()) config_path = environment(env_name("config")).value_or("");
  if (!config_path.empty() && !apply_config_file(config_path)) return false;
  for (const auto& s : specs_)
    if (!values_.count(s.name) && !s.default_value.empty()) values_[s.name] = {s.default_value};
  values_usable_ = true;  // errors_ holds refused keys of the file at most
  return errors_.empty();
}

const std::string& options::error() const noexcept {
  static const std::string none;
  return errors_.empty() ? none : errors_.front();
}

bool options::apply_environment() {
  for (const auto& s : specs_) {
    if (s.command_line_only || values_.count(s.name)) continue;
    const std::string name = env_name(s.name);
    if (auto value = environment(name)) {
      values_[s.name] = {*value};
    } else if (!s.legacy_env.empty() && s.legacy_env != name) {
      if (auto old = environment(s.legacy_env)) {
        values_[s.name] = {*old};
        print_error(executable_, "warning: $" + s.legacy_env + " is deprecated, set $" + name + " instead");
      }
    }
  }
  return true;
}

/// False when the file cannot be read at all; a refused key is recorded in errors_ and the other
/// keys still apply (parse() then fails, naming every refused key).
bool options::apply_config_file(const std::string& path) {
  if (!std::ifstream(path)) {
    errors_.push_back("cannot read the configuration file " + path);
    return false;
  }
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::Error& e) {
    errors_.push_back(path + ": " + e.what());
    return false;
  }
  std::string own = executable_;
  if (own.rfind("citrus-", 0) == 0) own.erase(0, 7);
  const auto refuse = [&](std::string problem) { errors_.push_back(path + ": " + std::move(problem)); };
  std::vector<std::string> unknown_sections;  // each named once, however many keys it holds
  for (const auto& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // CLI11's section markers
    if (!item.parents.empty()) {
      const bool known = std::find(std::begin(executables), std::end(executables), item.parents.front()) !=
                         std::end(executables);
      if (!known || item.parents.size() > 1) {
        const std::string section = item.fullname().substr(0, item.fullname().rfind('.'));
        if (std::find(unknown_sections.begin(), unknown_sections.end(), section) == unknown_sections.end()) {
          unknown_sections.push_back(section);
          refuse("unknown section [" + section + "] (only [backend], [hub], [agent])");
        }
        continue;
      }
      if (item.parents.front() != own) continue;  // another executable's settings
    }
    std::string key = item.name;
    std::replace(key.begin(), key.end(), '_', '-');
    const option_spec* spec = find(key);
    if (!spec || spec->command_line_only) {
      if (strict_file_keys_) refuse("unknown key '" + item.name + "' (see " + executable_ + " --help)");
      continue;
    }
    if (values_.count(key)) continue;  // the command line or the environment set it
    if (spec->flag) {
      const std::string v = item.inputs.empty() ? "true" : item.inputs.front();
      if (v == "true" || v == "1") values_[key] = {"1"};
      else if (v != "false" && v != "0") refuse("key '" + item.name + "' must be true or false");
      continue;
    }
    if (item.inputs.empty() || (item.inputs.size() > 1 && !spec->repeatable)) {
      refuse("key '" + item.name + "' needs one value");
      continue;
    }
    values_[key] = item.inputs;
  }
  config_file_ = path;
  return true;
}

std::string options::get(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() || it->second.empty() ? std::string() : it->second.back();
}

std::vector<std::string> options::get_all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

bool options::has(const std::string& name) const { return values_.count(name) > 0; }

std::optional<long long> options::get_int(const std::string& name) const {
  const std::string v = get(name);
  if (v.empty()) return std::nullopt;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (!end || *end != '\0') return std::nullopt;
  return n;
}

std::string options::usage() const {
  std::ostringstream out;
  out << program_ << " — " << summary_ << "\n\nOptions";
  bool shared = std::any_of(specs_.begin(), specs_.end(), [](const option_spec& s) { return !s.command_line_only; });
  if (shared)
    out << " (each one also $" << env_name("<option>") << " and the key <option> of the --config file;\n"
        << "the command line wins over the environment, which wins over the file)";
  out << ":\n";
  for (const auto& s : specs_) {
    out << "  --" << s.name << (s.flag ? "" : " VALUE");
    if (!s.command_line_only) out << "  [$" << env_name(s.name) << "]";
    if (!s.default_value.empty()) out << "  (default: " << s.default_value << ")";
    out << "\n      " << s.help << (s.repeatable ? " (repeatable)" : "") << "\n";
  }
  out << "  --config FILE  [$" << env_name("config") << "]\n      Read options from this file (TOML: key = value).\n"
      << "  --version\n      Print the version and exit.\n  --help\n      Show this text.\n";
  return out.str();
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    std::string item = text.substr(start, comma - start);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.erase(item.begin());
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.pop_back();
    if (!item.empty()) items.push_back(std::move(item));
    start = comma + 1;
  }
  return items;
}

bool split_host_port(const std::string& text, std::string& host, std::uint16_t& port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  char* end = nullptr;
  const long n = std::strtol(text.c_str() + colon + 1, &end, 10);
  if (!end || *end != '\0' || n < 0 || n > 65535) return false;
  port = static_cast<std::uint16_t>(n);
  return true;
}

std::optional<std::string> read_secret_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

std::optional<std::string> read_token_file(const std::string& path, std::string& error) {
  auto token = read_secret_file(path);
  if (!token) {
    error = "cannot read " + path;
    return std::nullopt;
  }
  const bool printable = std::all_of(token->begin(), token->end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u != 0x7f;
  });
  if (token->size() < 16 || token->size() > 256 || !printable) {
    error = "the token in " + path + " must be 16..256 bytes without spaces or control characters";
    return std::nullopt;
  }
  return token;
}

}  // namespace citrus::app
