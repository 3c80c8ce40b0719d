#include "citrus/app/options.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace citrus::app {

options::options(std::string program, std::string summary, std::vector<option_spec> specs)
    : program_(std::move(program)), summary_(std::move(summary)), specs_(std::move(specs)) {}

bool options::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      return false;
    }
    if (arg.rfind("--", 0) != 0) {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    const option_spec* spec = nullptr;
    for (const auto& s : specs_)
      if (s.name == name) spec = &s;
    if (!spec) {
      error_ = "unknown option --" + name + " (see --help)";
      return false;
    }
    if (spec->flag) {
      values_[name] = "1";
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) {
        error_ = "option --" + name + " needs a value";
        return false;
      }
      value = argv[++i];
    }
    values_[name] = value;
  }
  for (const auto& s : specs_) {
    if (values_.count(s.name)) continue;
    if (!s.env.empty())
      if (const char* v = std::getenv(s.env.c_str()); v && *v) {
        values_[s.name] = v;
        continue;
      }
    if (!s.default_value.empty()) values_[s.name] = s.default_value;
  }
  return true;
}

std::string options::get(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::string() : it->second;
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
  out << program_ << " — " << summary_ << "\n\nOptions (flag, environment variable, default):\n";
  for (const auto& s : specs_) {
    out << "  --" << s.name << (s.flag ? "" : " VALUE");
    if (!s.env.empty()) out << "  [$" << s.env << "]";
    if (!s.default_value.empty()) out << "  (default: " << s.default_value << ")";
    out << "\n      " << s.help << "\n";
  }
  out << "  --help\n      Show this text.\n";
  return out.str();
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
