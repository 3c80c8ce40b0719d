#include "http_verifier.hpp"

#include <curl/curl.h>
#include <simdjson.h>

#include <algorithm>
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
  std::uint64_t seq = 0;  ///< which request this is (a forgotten one's answer is never cached)
  std::string cache_key;
  principal_kind kind = principal_kind::agent;
  std::string id;
  std::string key;
  bool rotate = false;  ///< a rotation (POST rotate_url), not a verification
  std::chrono::seconds overlap{0};
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
  verified_principal p;
  p.kind = kind;
  p.id = claimed;
  simdjson::dom::array grants;
  if (!doc["grants"].get(grants)) {
    for (auto g : grants) {
      std::string_view text;
      if (!g.get(text)) p.grants.emplace_back(text);
    }
  }
  // The key's age and end (unix seconds), for the hub's --key-max-age-s; a backend that does not say leaves them unknown.
  std::int64_t seconds = 0;
  if (!doc["keyCreatedAt"].get(seconds) && seconds > 0) p.key_created_at = from_unix_seconds(seconds);
  if (!doc["keyExpiresAt"].get(seconds) && seconds > 0) p.key_expires_at = from_unix_seconds(seconds);
  return p;
}

/// The backend's answer to a rotation: 200 {"key":...} is the new key; 200 {"valid":false} (the key
/// it was asked with no longer verifies, or the identity is gone) a clean refusal; anything else
/// unavailable.
result<std::string> interpret_rotation(long status, const std::string& body) {
  if (status != 200) return errc::storage_unavailable;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view key;
  if (parser.parse(body).get(doc)) return errc::storage_unavailable;
  bool valid = true;
  if (!doc["valid"].get(valid) && !valid) return errc::auth_failed;
  if (doc["key"].get(key) || key.empty()) return errc::storage_unavailable;
  return std::string(key);
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
  struct waiters {
    std::uint64_t seq = 0;  ///< the request they wait for
    std::vector<principal_verifier::callback> callbacks;
  };
  std::unordered_map<std::string, cached> cache;
  std::unordered_map<std::string, waiters> waiting;  ///< by cache key
  std::unordered_map<std::uint64_t, std::vector<principal_verifier::callback>> detached;  ///< forgotten, by seq
  std::unordered_map<std::uint64_t, principal_verifier::key_callback> rotations;  ///< by seq
  std::uint64_t next_seq = 0;
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
      if (j.rotate) {
        rotate_now(curl, self, j);
        continue;
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
      loop.post([self, seq = j.seq, cache_key = std::move(j.cache_key), answer = std::move(answer)]() mutable {
        if (auto s = self.lock()) s->complete(cache_key, seq, std::move(answer));
      });
    }
    curl_easy_cleanup(curl);
  }

  /// Worker thread: one rotation, answered on the loop.
  void rotate_now(CURL* curl, const std::weak_ptr<state>& self, const job& j) {
    std::string request = R"({"role":")";
    request += to_string(j.kind);
    request += R"(","id":)";
    protocol::append_json_string(request, j.id);
    request += R"(,"key":)";
    protocol::append_json_string(request, j.key);
    request += R"(,"overlapSeconds":)" + std::to_string(j.overlap.count()) + "}";
    const backend_answer reply = post_to_backend(curl, cfg.rotate_url, cfg.hub_id, cfg.hub_key, request, cfg.timeout);
    auto answer = reply.curl == CURLE_OK ? interpret_rotation(reply.status, reply.body)
                                         : result<std::string>(errc::storage_unavailable);
    if (reply.curl != CURLE_OK)
      log.log(log_level::warn, "rotate_unreachable",
              {field("kind", to_string(j.kind)), field("id", j.id), field("curl", curl_easy_strerror(reply.curl))});
    loop.post([self, seq = j.seq, answer = std::move(answer)]() mutable {
      auto s = self.lock();
      if (!s) return;
      auto node = s->rotations.extract(seq);
      if (!answer) ++s->counters.failures;
      if (!node.empty()) node.mapped()(std::move(answer));
    });
  }

  void complete(const std::string& cache_key, std::uint64_t seq, result<verified_principal> answer) {
    const bool definite = answer || answer.error() == make_error_code(errc::auth_failed);
    if (!answer && !definite) ++counters.failures;
    if (auto gone = detached.extract(seq); !gone.empty()) {  // forgotten on its way: answered, not remembered
      for (auto& done : gone.mapped()) done(answer);
      return;
    }
    auto it = waiting.find(cache_key);
    if (it == waiting.end() || it->second.seq != seq) return;
    if (definite)  // an unreachable backend is not remembered: the next attempt asks again
      cache.insert_or_assign(cache_key, cached{answer, cached_until(answer)});
    auto callbacks = std::move(it->second.callbacks);
    waiting.erase(it);
    for (auto& done : callbacks) done(answer);
  }

  /// A positive answer is reused for accept_ttl, but never past the end of the key it matched (a
  /// rotated-out key is refused once its overlap ends, not up to accept_ttl later).
  std::chrono::steady_clock::time_point cached_until(const result<verified_principal>& answer) const {
    const auto now = std::chrono::steady_clock::now();
    if (!answer) return now + cfg.reject_ttl;
    auto ttl = std::chrono::duration_cast<std::chrono::steady_clock::duration>(cfg.accept_ttl);
    if (answer->key_expires_at) {
      const auto left = *answer->key_expires_at - std::chrono::system_clock::now();
      ttl = std::min(ttl, std::max(std::chrono::duration_cast<std::chrono::steady_clock::duration>(left),
                                   std::chrono::steady_clock::duration::zero()));
    }
    return now + ttl;
  }

  bool full() const { return waiting.size() + detached.size() + rotations.size() >= cfg.max_pending; }

  void queue(job j) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      jobs.push_back(std::move(j));
    }
    ready.notify_one();
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
    it->second.callbacks.push_back(std::move(done));
    return;
  }
  if (s.full()) {
    ++s.counters.failures;
    done(errc::storage_unavailable);
    return;
  }
  if (s.cache.size() > 10000) s.cache.clear();  // bounded; entries are short-lived anyway
  ++s.counters.requests;
  const std::uint64_t seq = ++s.next_seq;
  auto& w = s.waiting[cache_key];
  w.seq = seq;
  w.callbacks.push_back(std::move(done));
  job j;
  j.seq = seq;
  j.cache_key = std::move(cache_key);
  j.kind = kind;
  j.id = std::string(id);
  j.key = std::string(key);
  s.queue(std::move(j));
}

void http_verifier::rotate(principal_kind kind, std::string_view id, std::string_view key, std::chrono::seconds overlap,
                           key_callback done) {
  state& s = *state_;
  const bool remote = kind == principal_kind::agent || (kind == principal_kind::commander && !s.cfg.commander_url.empty());
  if (!remote) {
    if (local_) local_->rotate(kind, id, key, overlap, std::move(done));
    else done(errc::forbidden_operation);
    return;
  }
  if (s.cfg.rotate_url.empty()) return done(errc::forbidden_operation);
  if (s.full()) {
    ++s.counters.failures;
    return done(errc::storage_unavailable);
  }
  ++s.counters.requests;
  const std::uint64_t seq = ++s.next_seq;
  s.rotations.emplace(seq, std::move(done));
  job j;
  j.seq = seq;
  j.kind = kind;
  j.id = std::string(id);
  j.key = std::string(key);
  j.rotate = true;
  j.overlap = overlap;
  s.queue(std::move(j));
}

void http_verifier::forget(principal_kind kind, std::string_view id) {
  if (local_) local_->forget(kind, id);
  const std::string prefix = std::string(to_string(kind)) + '\n' + std::string(id) + '\n';
  auto& cache = state_->cache;
  for (auto it = cache.begin(); it != cache.end();) {
    if (it->first.compare(0, prefix.size(), prefix) == 0) it = cache.erase(it);
    else ++it;
  }
  // A request sent before the revocation may come back with the old answer: not to be cached, nor
  // handed to a check made after it.
  auto& waiting = state_->waiting;
  for (auto it = waiting.begin(); it != waiting.end();) {
    if (it->first.compare(0, prefix.size(), prefix) == 0) {
      auto& list = state_->detached[it->second.seq];
      for (auto& done : it->second.callbacks) list.push_back(std::move(done));
      it = waiting.erase(it);
    } else {
      ++it;
    }
  }
}

http_verifier::stats http_verifier::counters() const { return state_->counters; }

}  // namespace citrus::hubapp
