#pragma once
/// One authenticated JSON POST from the hub to the backend (verify-agent, verify-commander,
/// hub-events), with libcurl on the calling worker thread: never on the hub's event loop.
#include <chrono>
#include <string>

#include <curl/curl.h>

namespace citrus::hubapp {

struct backend_answer {
  CURLcode curl = CURLE_OK;  ///< not CURLE_OK: the backend was not reached (or did not answer in time)
  long status = 0;           ///< the HTTP status when reached
  std::string body;          ///< at most 64 KiB (the routes answer a few bytes)
};

/// POSTs `body` to `url` as "Authorization: Bearer <hub_id>:<hub_key>" on `curl` (reset first; one
/// handle per thread). http and https only.
backend_answer post_to_backend(CURL* curl, const std::string& url, const std::string& hub_id, const std::string& hub_key,
                               const std::string& body, std::chrono::milliseconds timeout);

/// The route next to the configured verify-agent URL: ".../api/verify-agent" → ".../api/<route>";
/// "" when `verify_url` does not end in /api/verify-agent.
std::string sibling_route(const std::string& verify_url, const std::string& route);

}  // namespace citrus::hubapp
