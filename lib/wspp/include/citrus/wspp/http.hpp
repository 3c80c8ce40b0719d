#pragma once
/// Plain HTTP requests served on a citrus::wspp::server's port (the backend's REST API shares the
/// WebSocket port). One request per TCP connection: the connection is closed after the response.
/// Answered at once (http_handler) or later (async_http_handler with an http_responder).
#include <functional>
#include <memory>
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

namespace detail {
class http_deferral;
}

/// The one answer to one plain HTTP request, given when the handler is ready: after a timer, or when
/// work done elsewhere (another thread) has finished. Move-only; one request, one answer.
///
/// - send() answers the request. Call it on the server's loop thread (from another thread, post()
///   a task that calls it): it may be called from inside the handler or any time later.
/// - A responder destroyed (or assigned over) without having sent anything answers 500 with an empty
///   body: a request is never left hanging because a handler lost its responder — destroy it on the
///   loop thread too. So does an exception thrown by the handler that owns it.
/// - Nothing is sent, and send() returns false, when the request no longer waits for it: the server
///   answered it itself (server_options::http_response_timeout passed), the server stopped or was
///   destroyed, or the connection is gone. It never throws and never touches a dead connection.
/// - It may outlive its server, never its event_loop.
class http_responder {
 public:
  http_responder() noexcept;  ///< answers nothing: pending() is false
  ~http_responder();
  http_responder(http_responder&& other) noexcept;
  http_responder& operator=(http_responder&& other) noexcept;
  http_responder(const http_responder&) = delete;
  http_responder& operator=(const http_responder&) = delete;

  /// Answers with `response` (the same rules as an http_handler's answer: status 100..599, headers
  /// that could inject lines dropped, Content-Length from the body, Connection: close). True when it
  /// was handed to the connection; false when nothing was sent (see above). Later calls: false.
  bool send(http_response response) noexcept;
  /// True until send() was called, the responder was moved from, or nothing is waiting any more.
  bool pending() const noexcept;

 private:
  friend class detail::http_deferral;
  explicit http_responder(std::shared_ptr<detail::http_deferral> state) noexcept;
  std::shared_ptr<detail::http_deferral> state_;
};

/// Like http_handler, for answers given later: the handler gets the request and its responder, and
/// returns at once; the request waits (without blocking the loop) until responder.send(). The request
/// is only valid during the call: copy what the answer needs.
using async_http_handler = std::function<void(const http_request&, http_responder)>;

}  // namespace citrus::wspp
