// Wire protocol v1: the writer. Appends into the caller's string: no allocation once `out` has the
// capacity for the message.
#include <charconv>
#include <cstdint>

#include "citrus/core/protocol.hpp"

namespace citrus::protocol {
namespace {

/// Length of the well-formed UTF-8 sequence starting at text[i] (Unicode table 3-7), 0 if ill-formed.
std::size_t utf8_length(std::string_view text, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const std::size_t left = text.size() - i;
  const unsigned char c = byte(i);
  const auto cont = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return byte(i + k) >= lo && byte(i + k) <= hi;
  };
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3) return 0;
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80;
    const unsigned char hi = c == 0xED ? 0x9F : 0xBF;  // no UTF-16 surrogates
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4) return 0;
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80;
    const unsigned char hi = c == 0xF4 ? 0x8F : 0xBF;  // nothing above U+10FFFF
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

void append_integer(std::string& out, std::int64_t value) {
  char digits[24];
  const auto res = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, static_cast<std::size_t>(res.ptr - digits));
}

/// ,"name":
void append_key(std::string& out, std::string_view name) {
  out.append(",\"", 2);
  out.append(name);
  out.append("\":", 2);
}

void string_field(std::string& out, std::string_view name, std::string_view value) {
  if (value.empty()) return;
  append_key(out, name);
  append_json_string(out, value);
}

void integer_field(std::string& out, std::string_view name, const std::optional<std::int64_t>& value) {
  if (!value) return;
  append_key(out, name);
  append_integer(out, *value);
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t run = 0;  // start of the bytes not yet copied
  std::size_t i = 0;
  const auto flush = [&] { out.append(text.data() + run, i - run); };
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (const std::size_t n = utf8_length(text, i); n != 0) {
        i += n;
        continue;
      }
      flush();
      out.append("\\ufffd", 6);  // ill-formed UTF-8: never emit invalid text
    } else {
      flush();
      if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else {
        const char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
        out.append(esc, 6);
      }
    }
    ++i;
    run = i;
  }
  flush();
  out.push_back('"');
}

void write(std::string& out, const envelope& e) {
  out.clear();
  out.append("{\"v\":", 5);
  append_integer(out, version);
  append_key(out, "type");
  append_json_string(out, to_string(e.type));
  string_field(out, "id", e.id);
  string_field(out, "commanderId", e.commander);
  string_field(out, "agent", e.agent);
  string_field(out, "op", e.op);
  if (e.prio) {
    append_key(out, "priority");
    append_json_string(out, to_string(*e.prio));
  }
  integer_field(out, "site", e.site);
  string_field(out, "role", e.role);
  string_field(out, "status", e.status);
  integer_field(out, "percent", e.percent);
  string_field(out, "step", e.step);
  string_field(out, "code", e.code);
  string_field(out, "message", e.message);
  string_field(out, "state", e.state);
  integer_field(out, "expires_in", e.expires_in);
  if (!e.payload.empty()) {
    append_key(out, "payload");
    out.append(e.payload);  // verbatim: the parser validated it, a hand-built envelope owns its bytes
  }
  out.push_back('}');
}

void write_error(std::string& out, std::string_view id, errc code) {
  envelope e;
  e.type = message_type::error;
  e.id = id;
  e.code = wire_code(code);
  e.message = public_message(code);
  write(out, e);
}

}  // namespace citrus::protocol
