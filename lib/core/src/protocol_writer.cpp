// Wire protocol v1: the writer. Appends into the caller's string: no allocation once `out` has the
// capacity for the message. The head of a message (everything before the payload) is written in place
// into a buffer sized once for its worst case, then the payload is spliced in with one copy.
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <optional>

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

/// Bytes that go out verbatim (printable ASCII but '"' and '\\'); the others need a look.
struct plain_table {
  bool plain[256] = {};
  constexpr plain_table() {
    for (int c = 0x20; c < 0x80; ++c) plain[c] = c != '"' && c != '\\';
  }
};
constexpr plain_table plain_bytes{};

constexpr bool is_plain(char c) noexcept { return plain_bytes.plain[static_cast<unsigned char>(c)]; }

/// The most bytes escape_into() writes for `text`: quotes, and 6 bytes (\u00XX, \ufffd) per input byte.
constexpr std::size_t escaped_bound(std::string_view text) noexcept { return 2 + 6 * text.size(); }

/// True if all 8 bytes of `x` are plain: none >= 0x80, none < 0x20, none '"' or '\\' (the "has a
/// byte less than n" bit trick: exact for whether any byte matches, which is all that is asked).
constexpr bool all_plain(std::uint64_t x) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101ULL;
  constexpr std::uint64_t high = 0x8080808080808080ULL;
  const auto less_than = [](std::uint64_t v, std::uint64_t n) { return (v - ones * n) & ~v; };
  const std::uint64_t bad = x | less_than(x, 0x20) | less_than(x ^ (ones * '"'), 1) | less_than(x ^ (ones * '\\'), 1);
  return (bad & high) == 0;
}

/// Writes `text` as a JSON string literal (quotes included) at `p`; returns the end. `p` has room for
/// escaped_bound(text) bytes. Plain bytes and well-formed UTF-8 are copied as they are, plain ones
/// eight at a time when they can be.
char* escape_into(char* p, std::string_view text) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  *p++ = '"';
  const char* s = text.data();
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    for (std::uint64_t block = 0; i + 8 <= n; i += 8, p += 8) {
      std::memcpy(&block, s + i, 8);
      if (!all_plain(block)) break;
      std::memcpy(p, &block, 8);  // 8 plain bytes out for 8 in: within the bound
    }
    while (i < n && is_plain(s[i])) *p++ = s[i++];
    if (i == n) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      if (const std::size_t len = utf8_length(text, i); len != 0) {
        std::memcpy(p, s + i, len);
        p += len;
        i += len;
        continue;
      }
      std::memcpy(p, "\\ufffd", 6);  // ill-formed UTF-8: never emit invalid text
      p += 6;
    } else if (c == '"' || c == '\\') {
      *p++ = '\\';
      *p++ = static_cast<char>(c);
    } else {
      const char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
      std::memcpy(p, esc, 6);
      p += 6;
    }
    ++i;
  }
  *p++ = '"';
  return p;
}

/// Writes the message head into a buffer sized once: no per-field string calls.
class head_writer {
 public:
  explicit head_writer(char* p) noexcept : p_(p) {}
  char* end() const noexcept { return p_; }

  template <std::size_t N>
  void literal(const char (&text)[N]) noexcept {  // N - 1: without the terminating NUL
    std::memcpy(p_, text, N - 1);
    p_ += N - 1;
  }
  void string(std::string_view text) noexcept { p_ = escape_into(p_, text); }
  /// A string known to need no escaping (the names of types and priorities).
  void plain_string(std::string_view text) noexcept {
    *p_++ = '"';
    std::memcpy(p_, text.data(), text.size());
    p_ += text.size();
    *p_++ = '"';
  }
  void integer(std::int64_t value) noexcept { p_ = std::to_chars(p_, p_ + max_integer_bytes, value).ptr; }

  /// ,"name":"value" when value is not empty. `key` is the literal ,"name":
  template <std::size_t N>
  void string_field(const char (&key)[N], std::string_view value) noexcept {
    if (value.empty()) return;
    literal(key);
    string(value);
  }
  template <std::size_t N>
  void integer_field(const char (&key)[N], const std::optional<std::int64_t>& value) noexcept {
    if (!value) return;
    literal(key);
    integer(*value);
  }

  static constexpr std::size_t max_integer_bytes = 20;  // -9223372036854775808

 private:
  char* p_;
};

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  const std::size_t old = out.size();
  if (std::all_of(text.begin(), text.end(), is_plain)) {  // the common case: one copy, no escaping
    out.reserve(old + text.size() + 2);
    out.push_back('"');
    out.append(text.data(), text.size());
    out.push_back('"');
    return;
  }
  out.resize(old + escaped_bound(text));
  char* end = escape_into(&out[old], text);
  out.resize(static_cast<std::size_t>(end - out.data()));
}

void write(std::string& out, const envelope& e) {
  const std::string_view type = to_string(e.type);
  const std::string_view prio = e.prio ? to_string(*e.prio) : std::string_view();
  // Everything but the payload is written in place into a buffer sized for the worst case: the
  // field names and punctuation (under 256 bytes), four integers, and every string fully escaped.
  const std::size_t bound = 256 + 4 * head_writer::max_integer_bytes + escaped_bound(type) + escaped_bound(e.id) +
                            escaped_bound(e.request) + escaped_bound(e.commander) + escaped_bound(e.agent) +
                            escaped_bound(e.op) + escaped_bound(prio) + escaped_bound(e.role) +
                            escaped_bound(e.status) + escaped_bound(e.step) + escaped_bound(e.code) +
                            escaped_bound(e.field) + escaped_bound(e.message) + escaped_bound(e.state);
  out.clear();
  out.resize(bound);
  head_writer w(out.data());
  w.literal("{\"v\":");
  w.integer(version);
  w.literal(",\"type\":");
  w.plain_string(type);
  w.string_field(",\"id\":", e.id);
  w.string_field(",\"request\":", e.request);
  w.string_field(",\"commanderId\":", e.commander);
  w.string_field(",\"agent\":", e.agent);
  w.string_field(",\"op\":", e.op);
  if (!prio.empty()) {
    w.literal(",\"priority\":");
    w.plain_string(prio);
  }
  w.integer_field(",\"site\":", e.site);
  w.string_field(",\"role\":", e.role);
  w.string_field(",\"status\":", e.status);
  w.integer_field(",\"percent\":", e.percent);
  w.string_field(",\"step\":", e.step);
  w.string_field(",\"code\":", e.code);
  w.string_field(",\"field\":", e.field);
  w.string_field(",\"message\":", e.message);
  w.string_field(",\"state\":", e.state);
  w.integer_field(",\"expires_in\":", e.expires_in);
  w.integer_field(",\"retry_after\":", e.retry_after);
  if (e.payload.empty()) {
    w.literal("}");
    out.resize(static_cast<std::size_t>(w.end() - out.data()));
    return;
  }
  w.literal(",\"payload\":");
  out.resize(static_cast<std::size_t>(w.end() - out.data()));
  out.reserve(out.size() + e.payload.size() + 1);
  out.append(e.payload.data(), e.payload.size());  // verbatim: the parser validated it, a hand-built envelope owns its bytes
  out.push_back('}');
}

namespace {
void write_error_with(std::string& out, std::string_view id, errc code, std::optional<std::int64_t> retry_after,
                      std::string_view field = {}) {
  envelope e;
  e.type = message_type::error;
  e.id = id;
  e.code = wire_code(code);
  e.field = field;
  e.message = public_message(code);
  e.retry_after = retry_after;
  write(out, e);
}
}  // namespace

void write_error(std::string& out, std::string_view id, errc code) { write_error_with(out, id, code, std::nullopt); }

void write_error(std::string& out, std::string_view id, errc code, std::int64_t retry_after) {
  write_error_with(out, id, code, retry_after);
}

void write_field_error(std::string& out, std::string_view id, errc code, std::string_view field) {
  write_error_with(out, id, code, std::nullopt, field);
}

std::string payload_field_path(std::string_view name) {
  std::string path("payload");
  if (!name.empty()) path.append(".").append(name);
  return path;
}

}  // namespace citrus::protocol
