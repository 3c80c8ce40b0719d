// citrus-backend: HTTP answers sent later, on the event loop's timers (held_answers in backend.hpp).
#include <iterator>
#include <utility>

#include "backend.hpp"

namespace citrus::backend {

void held_answers::send_after(std::chrono::milliseconds delay, wspp::http_responder responder, wspp::http_response response) {
  if (delay <= std::chrono::milliseconds::zero()) {
    responder.send(std::move(response));
    return;
  }
  held_.push_back(held{std::move(responder), std::move(response), {}});
  const auto it = std::prev(held_.end());  // list nodes never move: the timer may keep the iterator
  it->timer = loop_.schedule(delay, [this, it] {
    it->responder.send(std::move(it->response));  // false when the client left or the server stopped
    held_.erase(it);                              // destroys this timer's own handle: allowed
  });
}

}  // namespace citrus::backend
