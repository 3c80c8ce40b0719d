#include "backend_post.hpp"

namespace citrus::hubapp {

namespace {

std::size_t collect(char* data, std::size_t size, std::size_t count, void* out) {
  auto* body = static_cast<std::string*>(out);
  const std::size_t n = size * count;
  if (body->size() + n > 64 * 1024) return 0;  // the answers are tiny: refuse a flood
  body->append(data, n);
  return n;
}

}  // namespace

backend_answer post_to_backend(CURL* curl, const std::string& url, const std::string& hub_id, const std::string& hub_key,
                               const std::string& body, std::chrono::milliseconds timeout) {
  backend_answer answer;
  const std::string auth = "Authorization: Bearer " + hub_id + ":" + hub_key;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, auth.c_str());
  curl_easy_reset(curl);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  answer.curl = curl_easy_perform(curl);
  if (answer.curl == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer.status);
  curl_slist_free_all(headers);
  return answer;
}

std::string sibling_route(const std::string& verify_url, const std::string& route) {
  static const std::string suffix = "/api/verify-agent";
  if (verify_url.size() < suffix.size() || verify_url.compare(verify_url.size() - suffix.size(), suffix.size(), suffix) != 0)
    return {};
  return verify_url.substr(0, verify_url.size() - suffix.size()) + "/api/" + route;
}

}  // namespace citrus::hubapp
