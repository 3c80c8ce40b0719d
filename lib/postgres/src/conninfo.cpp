// Connection strings: libpq parses them (PQconninfoParse), so a URL and a key=value string mean here
// exactly what they mean to psql; we only add defaults and never log the password.
#include "conninfo.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <string_view>

namespace citrus::postgres {
namespace detail {
namespace {

/// A value quoted for a key=value conninfo string.
std::string quoted(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

struct conninfo_free {
  void operator()(PQconninfoOption* options) const noexcept { PQconninfoFree(options); }
};

}  // namespace

std::optional<conninfo> make_conninfo(const std::string& connection, const postgres_options& options,
                                      std::string& error) {
  char* message = nullptr;
  std::unique_ptr<PQconninfoOption, conninfo_free> parsed(PQconninfoParse(connection.c_str(), &message));
  if (!parsed) {
    error = message != nullptr ? message : "out of memory";
    if (message != nullptr) PQfreemem(message);
    while (!error.empty() && (error.back() == '\n' || error.back() == ' ')) error.pop_back();
    return std::nullopt;
  }
  // Our defaults bound every wait on the network; a parameter the caller set wins.
  const std::pair<const char*, std::string> defaults[] = {
      {"connect_timeout", std::to_string(options.connect_timeout.count())},
      {"tcp_user_timeout", std::to_string(options.tcp_user_timeout.count())},
      {"keepalives", "1"},
      {"keepalives_idle", "10"},
      {"keepalives_interval", "3"},
      {"keepalives_count", "3"},
      {"application_name", "citrus"},
  };
  conninfo out;
  auto add = [&out](std::string_view key, std::string_view value) {
    if (!out.text.empty()) out.text += ' ';
    out.text.append(key).append("=").append(quoted(value));
  };
  for (const PQconninfoOption* o = parsed.get(); o->keyword != nullptr; ++o) {
    const std::string_view key = o->keyword;
    if (o->val != nullptr) {
      add(key, o->val);
      if (key == "host" || key == "hostaddr" || key == "port" || key == "dbname" || key == "user") {
        if (!out.target.empty()) out.target += ' ';
        out.target.append(key).append("=").append(o->val);
      }
      continue;
    }
    for (const auto& [name, value] : defaults)
      if (key == name) add(key, value);
  }
  if (out.target.empty()) out.target = "(libpq defaults)";
  return out;
}

}  // namespace detail

std::string redact_connection(const std::string& connection) {
  constexpr std::string_view hidden = "***";
  std::string out = connection;
  const std::size_t scheme = out.find("://");
  const bool url = out.rfind("postgresql://", 0) == 0 || out.rfind("postgres://", 0) == 0;
  if (url) {
    // libpq's reading: user[:password] ends at the first '@' met before any '/'.
    const std::size_t start = scheme + 3;
    const std::size_t end = out.find_first_of("@/", start);
    if (end != std::string::npos && out[end] == '@') {
      const std::size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < end) out.replace(colon + 1, end - colon - 1, hidden);
    }
    // ...and ?password=... among the query parameters.
    for (std::size_t at = out.find('?'); at != std::string::npos; at = out.find('&', at + 1)) {
      const std::size_t key = at + 1;
      if (out.compare(key, 9, "password=") != 0) continue;
      const std::size_t value = key + 9;
      const std::size_t stop = std::min(out.find('&', value), out.size());
      out.replace(value, stop - value, hidden);
    }
    return out;
  }
  // key=value: password = 'quoted \' value' or password=bare
  for (std::size_t at = out.find("password"); at != std::string::npos; at = out.find("password", at + 1)) {
    if (at > 0 && !std::isspace(static_cast<unsigned char>(out[at - 1]))) continue;
    std::size_t p = at + 8;
    while (p < out.size() && std::isspace(static_cast<unsigned char>(out[p]))) ++p;
    if (p >= out.size() || out[p] != '=') continue;
    ++p;
    while (p < out.size() && std::isspace(static_cast<unsigned char>(out[p]))) ++p;
    std::size_t stop = p;
    if (stop < out.size() && out[stop] == '\'') {
      ++stop;
      while (stop < out.size() && out[stop] != '\'') stop += out[stop] == '\\' ? 2 : 1;
      stop = std::min(stop + 1, out.size());
    } else {
      while (stop < out.size() && !std::isspace(static_cast<unsigned char>(out[stop]))) ++stop;
    }
    out.replace(p, stop - p, hidden);
  }
  return out;
}

}  // namespace citrus::postgres
