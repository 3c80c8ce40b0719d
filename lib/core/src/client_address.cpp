#include "citrus/core/client_address.hpp"

#include <array>
#include <cstdint>

#include "citrus/core/text.hpp"

namespace citrus {

namespace {

using text::hex_value;
using text::is_digit;
using text::trim;

bool parse_ipv4(std::string_view s, std::array<std::uint8_t, 4>& out) noexcept {
  std::size_t part = 0;
  while (true) {
    if (part == 4) return false;
    std::size_t n = 0;
    unsigned value = 0;
    while (n < s.size() && is_digit(s[n])) {
      if (n == 3) return false;
      value = value * 10 + static_cast<unsigned>(s[n] - '0');
      ++n;
    }
    if (n == 0 || value > 255) return false;
    out[part++] = static_cast<std::uint8_t>(value);
    s.remove_prefix(n);
    if (s.empty()) return part == 4;
    if (s.front() != '.') return false;
    s.remove_prefix(1);
  }
}

bool parse_hex_group(std::string_view g, std::uint16_t& out) noexcept {
  if (g.empty() || g.size() > 4) return false;
  unsigned value = 0;
  for (char c : g) {
    const int v = hex_value(c);
    if (v < 0) return false;
    value = value * 16 + static_cast<unsigned>(v);
  }
  out = static_cast<std::uint16_t>(value);
  return true;
}

/// Groups of one side of "::" (or of the whole address); the last side may end in dotted IPv4.
bool parse_ipv6_part(std::string_view part, bool last, std::array<std::uint16_t, 8>& groups, std::size_t& n) noexcept {
  if (part.empty()) return true;
  while (true) {
    const std::size_t colon = part.find(':');
    const std::string_view piece = part.substr(0, colon);
    if (colon == std::string_view::npos && last && piece.find('.') != std::string_view::npos) {
      std::array<std::uint8_t, 4> v4{};
      if (n + 2 > groups.size() || !parse_ipv4(piece, v4)) return false;
      groups[n++] = static_cast<std::uint16_t>((v4[0] << 8) | v4[1]);
      groups[n++] = static_cast<std::uint16_t>((v4[2] << 8) | v4[3]);
      return true;
    }
    if (n == groups.size() || !parse_hex_group(piece, groups[n])) return false;
    ++n;
    if (colon == std::string_view::npos) return true;
    part.remove_prefix(colon + 1);
  }
}

bool parse_ipv6(std::string_view s, std::array<std::uint16_t, 8>& out) noexcept {
  if (const std::size_t zone = s.find('%'); zone != std::string_view::npos) s = s.substr(0, zone);
  const std::size_t gap = s.find("::");
  std::array<std::uint16_t, 8> head{}, tail{};
  std::size_t nh = 0, nt = 0;
  if (gap == std::string_view::npos) {
    if (!parse_ipv6_part(s, true, head, nh) || nh != 8) return false;
    out = head;
    return true;
  }
  if (s.find("::", gap + 1) != std::string_view::npos) return false;
  if (!parse_ipv6_part(s.substr(0, gap), false, head, nh) || !parse_ipv6_part(s.substr(gap + 2), true, tail, nt))
    return false;
  if (nh + nt > 7) return false;
  out = {};
  for (std::size_t i = 0; i < nh; ++i) out[i] = head[i];
  for (std::size_t i = 0; i < nt; ++i) out[8 - nt + i] = tail[i];
  return true;
}

std::string ipv4_text(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
  return std::to_string(a) + '.' + std::to_string(b) + '.' + std::to_string(c) + '.' + std::to_string(d);
}

void append_hex(std::string& out, std::uint16_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  bool started = false;
  for (int shift = 12; shift >= 0; shift -= 4) {
    const unsigned nibble = (v >> shift) & 0xfu;
    if (nibble != 0 || started || shift == 0) {
      out.push_back(digits[nibble]);
      started = true;
    }
  }
}

}  // namespace

std::string client_address_key(std::string_view remote) {
  constexpr std::size_t max_key = 64;
  std::string_view host = trim(remote);
  if (!host.empty() && host.front() == '[') {
    const std::size_t close = host.find(']');
    if (close != std::string_view::npos) host = host.substr(1, close - 1);
  } else if (const std::size_t colon = host.find(':');
             colon != std::string_view::npos && host.find(':', colon + 1) == std::string_view::npos) {
    host = host.substr(0, colon);  // "ip:port"
  }
  if (host.empty()) return "unknown";

  std::array<std::uint8_t, 4> v4{};
  if (parse_ipv4(host, v4)) return ipv4_text(v4[0], v4[1], v4[2], v4[3]);
  std::array<std::uint16_t, 8> v6{};
  if (host.find(':') != std::string_view::npos && parse_ipv6(host, v6)) {
    const bool mapped = v6[0] == 0 && v6[1] == 0 && v6[2] == 0 && v6[3] == 0 && v6[4] == 0 && v6[5] == 0xffff;
    if (mapped)
      return ipv4_text(static_cast<std::uint8_t>(v6[6] >> 8), static_cast<std::uint8_t>(v6[6] & 0xff),
                       static_cast<std::uint8_t>(v6[7] >> 8), static_cast<std::uint8_t>(v6[7] & 0xff));
    std::string key;
    for (std::size_t i = 0; i < 4; ++i) {
      if (i) key += ':';
      append_hex(key, v6[i]);
    }
    key += "::/64";
    return key;
  }
  return std::string(host.substr(0, max_key));
}

}  // namespace citrus
