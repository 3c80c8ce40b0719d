#pragma once
/// Client addresses as the per-address limits count them (REST rate limits, lockouts at the hub).
#include <string>
#include <string_view>

namespace citrus {

/// The key the per-address limits use for `remote_address`: the address without its port,
/// "a.b.c.d" for IPv4 and IPv4-mapped IPv6, "xxxx:xxxx:xxxx:xxxx::/64" for other IPv6 addresses,
/// "unknown" when empty. Text that is not an address is kept (at most 64 bytes of it).
std::string client_address_key(std::string_view remote_address);

}  // namespace citrus
