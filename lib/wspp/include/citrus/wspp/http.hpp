#pragma once
/// Plain HTTP requests served on a citrus::wspp::server's port (the backend's REST API shares the
/// WebSocket port). One request per TCP connection: the connection is closed after the response.
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace citrus::wspp {

struct http_header {
  std::string name;
  std::string value;
};

struct http_request {
  std::string method;          ///< "GET", "POST", ... as sent
  std::string target;          ///< request target as sent: path and query, e.g. "/api/sites?limit=5"
  std::vector<http_header> headers;
  std::string body;            ///< at most server_options::max_http_body_bytes
  std::string remote_address;  ///< "ip:port" of the peer ("[v6]:port" for IPv6)

  /// The value of the first header named `name` (ASCII case-insensitive), or "" when absent.
  std::string_view header(std::string_view name) const noexcept;
};

struct http_response {
  int status = 200;            ///< 100..599; anything else is sent as 500
  std::vector<http_header> headers;  ///< Content-Length is set from body
  std::string body;
};

/// Called on the loop thread for every request that is not a WebSocket upgrade. It must answer
/// synchronously. An exception becomes a 500 with an empty body (and a log record).
using http_handler = std::function<http_response(const http_request&)>;

}  // namespace citrus::wspp
