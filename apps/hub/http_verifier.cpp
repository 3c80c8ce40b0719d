#include "http_verifier.hpp"

#include <curl/curl.h>
#include <simdjson.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backend_post.hpp"
#include "citrus/core/keys.hpp"
#include "citrus/core/protocol.hpp"

namespace citrus::hubapp {

namespace {

struct job {
  std::string cache_key;
  principal_kind kind = principal_kind::agent;
  std::string id;
  std::string key;
};

/// The JSON field names of one kind's route: {"agentId","agentKey"} or {"commanderId","commanderKey"}.
std::string_view id_field(principal_kind kind) { return kind == principal_kind::agent ? "agentId" : "commanderId"; }
std::string_view key_field(principal_kind kind) { return kind == principal_kind::agent ? "agentKey" : "commanderKey"; }

/// Turns the backend's answer into a verification result. Only a 200 with {"valid":true,...} for
/// this very principal authenticates; {"valid":false} is a clean refusal; anything else is unavailable.
result<verified_principal> interpret(long status, const std::string& body, principal_kind kind, const std::string& claimed) {
  if (status != 200) return errc::storage_unavailable;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc)) return errc::storage_unavailable;
  bool valid = false;
  if (doc["valid"].get(valid)) return errc::storage_unavailable;
  if (!valid) return errc::auth_failed;
  std::string_view id;
  if (doc[id_field(kind)].get(id) || id != claimed) return errc::storage_unavailable;
  verified_principal p{kind, claimed, {}};
  simdjson::dom::array grants;
  if (!doc["grants"].get(grants)) {
    for (auto g : grants) {
      std::string_view text;
      if (!g.get(text)) p.grants.emplace_back(text);
    }
  }
  return p;
}

}  // namespace

struct http_verifier::state {
  http_verifier_config cfg;
  wspp::event_loop& loop;
  logger& log;

  // Loop-thread only:
  struct cached {
    result<verified_principal> answer;
    std::chrono::steady_clock::time_point until;
  };
  std::unordered_map<std::string, cached> cache;
  std::unordered_map<std::string, std::vector<principal_verifier::callback>> waiting;
  stats counters;

  // Shared with the worker:
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<job> jobs;
  bool stopping = false;
  std::thread worker;

  state(http_verifier_config c, wspp::event_loop& l, logger& lg) : cfg(std::move(c)), loop(l), log(lg) {}

  void run(std::weak_ptr<state> self) {
    CURL* curl = curl_easy_init();
    for (;;) {
      job j;
      {
        std::unique_lock<std::mutex> lock(mutex);
        ready.wait(lock, [&] { return stopping || !jobs.empty(); });
        if (stopping) break;
        j = std::move(jobs.front());
        jobs.pop_front();
      }
      std::string request = "{\"";
      request += id_field(j.kind);
      request += "\":";
      protocol::append_json_string(request, j.id);
      request += ",\"";
      request += key_field(j.kind);
      request += "\":";
      protocol::append_json_string(request, j.key);
      request += '}';
      const std::string& url = j.kind == principal_kind::agent ? cfg.url : cfg.commander_url;
      const backend_answer reply = post_to_backend(curl, url, cfg.hub_id, cfg.hub_key, request, cfg.timeout);
      auto answer = reply.curl == CURLE_OK ? interpret(reply.status, reply.body, j.kind, j.id)
                                           : result<verified_principal>(errc::storage_unavailable);
      if (reply.curl != CURLE_OK)
        log.log(log_level::warn, "verify_unreachable",
                {field("kind", to_string(j.kind)), field("id", j.id), field("curl", curl_easy_strerror(reply.curl))});
      loop.post([self, cache_key = std::move(j.cache_key), answer = std::move(answer)]() mutable {
        if (auto s = self.lock()) s->complete(cache_key, std::move(answer));
      });
    }
    curl_easy_cleanup(curl);
  }

  void complete(const std::string& cache_key, result<verified_principal> answer) {
    const bool definite = answer || answer.error() == make_error_code(errc::auth_failed);
    if (!answer && !definite) ++counters.failures;
    if (definite)  // an unreachable backend is not remembered: the next attempt asks again
      cache.insert_or_assign(cache_key, cached{answer, std::chrono::steady_clock::now() + (answer ? cfg.accept_ttl : cfg.reject_ttl)});
    auto node = waiting.extract(cache_key);
    if (node.empty()) return;
    for (auto& done : node.mapped()) done(answer);
  }
};

http_verifier::http_verifier(http_verifier_config config, wspp::event_loop& loop, principal_verifier* local, logger& log)
    : state_(std::make_shared<state>(std::move(config), loop, log)), local_(local) {
  std::weak_ptr<state> weak = state_;
  state_->worker = std::thread([s = state_.get(), weak] { s->run(weak); });
}

http_verifier::~http_verifier() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
  }
  state_->ready.notify_one();
  state_->worker.join();
}

void http_verifier::verify(principal_kind kind, std::string_view id, std::string_view key, callback done) {
  state& s = *state_;
  const bool remote = kind == principal_kind::agent || (kind == principal_kind::commander && !s.cfg.commander_url.empty());
  if (!remote) {
    if (local_) local_->verify(kind, id, key, std::move(done));
    else done(errc::auth_failed);  // no store to ask: nobody of this kind can authenticate here
    return;
  }
  std::string cache_key = std::string(to_string(kind)) + '\n' + std::string(id) + '\n' + key_fingerprint(key);
  const auto now = std::chrono::steady_clock::now();
  if (auto it = s.cache.find(cache_key); it != s.cache.end()) {
    if (now < it->second.until) {
      ++s.counters.cache_hits;
      done(it->second.answer);
      return;
    }
    s.cache.erase(it);
  }
  if (auto it = s.waiting.find(cache_key); it != s.waiting.end()) {
    it->second.push_back(std::move(done));
    return;
  }
  if (s.waiting.size() >= s.cfg.max_pending) {
    ++s.counters.failures;
    done(errc::storage_unavailable);
    return;
  }
  if (s.cache.size() > 10000) s.cache.clear();  // bounded; entries are short-lived anyway
  ++s.counters.requests;
  s.waiting[cache_key].push_back(std::move(done));
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.jobs.push_back(job{std::move(cache_key), kind, std::string(id), std::string(key)});
  }
  s.ready.notify_one();
}

void http_verifier::forget(principal_kind kind, std::string_view id) {
  if (local_) local_->forget(kind, id);
  const std::string prefix = std::string(to_string(kind)) + '\n' + std::string(id) + '\n';
  auto& cache = state_->cache;
  for (auto it = cache.begin(); it != cache.end();) {
    if (it->first.compare(0, prefix.size(), prefix) == 0) it = cache.erase(it);
    else ++it;
  }
}

http_verifier::stats http_verifier::counters() const { return state_->counters; }

}  // namespace citrus::hubapp
