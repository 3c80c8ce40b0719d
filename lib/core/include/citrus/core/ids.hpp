#pragma once
/// Strong identifier types: a commander id can never be passed where an agent id is expected.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace citrus {

template <class Tag, class Rep>
class strong_id {
 public:
  using rep_type = Rep;
  strong_id() = default;
  explicit strong_id(Rep value) : value_(std::move(value)) {}
  const Rep& value() const noexcept { return value_; }
  friend bool operator==(const strong_id& a, const strong_id& b) { return a.value_ == b.value_; }
  friend bool operator!=(const strong_id& a, const strong_id& b) { return !(a == b); }
  friend bool operator<(const strong_id& a, const strong_id& b) { return a.value_ < b.value_; }

 private:
  Rep value_{};
};

using user_id = strong_id<struct user_tag, std::int64_t>;
using site_id = strong_id<struct site_tag, std::int64_t>;
using connection_id = strong_id<struct connection_tag, std::uint64_t>;
using commander_id = strong_id<struct commander_tag, std::string>;
using agent_id = strong_id<struct agent_tag, std::string>;
/// Chosen by the commander; unique among that commander's requests in flight.
using request_id = strong_id<struct request_tag, std::string>;

/// Identifiers that cross the wire (commander, agent, request ids) are 1..128 bytes of
/// [A-Za-z0-9._:-]: they never need JSON escaping and cannot smuggle structure.
bool is_valid_wire_id(std::string_view text) noexcept;

/// User names are 1..64 characters of [A-Za-z0-9._@+-] (they appear in tokens and logs).
bool is_valid_user_name(std::string_view text) noexcept;

}  // namespace citrus

template <class Tag, class Rep>
struct std::hash<citrus::strong_id<Tag, Rep>> {
  std::size_t operator()(const citrus::strong_id<Tag, Rep>& id) const noexcept { return std::hash<Rep>{}(id.value()); }
};
