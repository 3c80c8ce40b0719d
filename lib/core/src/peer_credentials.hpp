#pragma once
// What commander_link and agent_runtime send to authenticate at the hub, and when they re-authenticate.
// Private to citrus::core.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "citrus/core/clock.hpp"
#include "citrus/core/protocol.hpp"

namespace citrus::peer_credentials {

/// {"v":1,"type":"auth"|"reauth","role":..,"id":..,"key":..}: written by hand, since protocol::write()
/// never writes keys.
inline void write(std::string& out, std::string_view type, std::string_view role, std::string_view id,
                  std::string_view key) {
  out.assign(R"({"v":1,"type":")");
  out.append(type.data(), type.size());
  out.append(R"(","role":")");
  out.append(role.data(), role.size());
  out.append(R"(","id":)");
  protocol::append_json_string(out, id);
  out.append(R"(,"key":)");
  protocol::append_json_string(out, key);
  out.push_back('}');
}

/// When to re-authenticate: after three quarters of the lifetime the hub stated (auth_ok's expires_in),
/// so that a slow verification still answers before the session ends.
inline steady_time reauth_time(steady_time now, std::int64_t expires_in_s) {
  return now + std::chrono::milliseconds(expires_in_s * 750);
}

/// {"v":1,"type":"rotate_key"}: ask the hub for a new key.
inline void write_rotate_key(std::string& out) { out.assign(R"({"v":1,"type":"rotate_key"})"); }

}  // namespace citrus::peer_credentials
