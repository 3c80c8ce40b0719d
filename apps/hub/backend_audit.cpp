#include "backend_audit.hpp"

#include <algorithm>
#include <memory>
#include <vector>

#include "backend_post.hpp"

namespace citrus::hubapp {

namespace {

/// The longest prefix of `text` of at most `max` bytes that does not cut a UTF-8 sequence.
std::string truncated_utf8(const std::string& text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n);
}

/// One event as /api/hub-events takes it: the hub's fields stay far below the backend's bounds
/// (hub_events.cpp), but for free-text details, which are shortened to fit.
std::string event_json(const audit_event& event) {
  audit_event fitted = event;
  fitted.detail = truncated_utf8(event.detail, 512);
  fitted.target = truncated_utf8(event.target, 256);
  std::string out;
  append_audit_json(out, fitted);
  return out;
}

}  // namespace

app::async_audit_options backend_audit_options() {
  app::async_audit_options options;
  options.max_batch = 50;
  options.linger = std::chrono::milliseconds(200);
  return options;
}

app::audit_writer backend_audit_writer(backend_audit_config config, logger& log) {
  std::shared_ptr<CURL> curl(curl_easy_init(), curl_easy_cleanup);
  auto abandoned = std::make_shared<bool>(false);  // the sink stopped while the backend was away
  return [cfg = std::move(config), curl, abandoned, &log](const std::vector<audit_event>& batch, const app::audit_pause& pause) {
    app::audit_delivery done;
    if (*abandoned) {  // at exit, the batches after one that could not go are not tried one by one
      done.lost = batch.size();
      return done;
    }
    std::size_t next = 0;
    while (next < batch.size()) {
      // One request: as many events as fit (at least one).
      std::string body = R"({"events":[)";
      std::size_t end = next;
      for (; end < batch.size(); ++end) {
        const std::string one = event_json(batch[end]);
        if (end > next && body.size() + one.size() + 3 > cfg.max_request_bytes) break;
        if (end > next) body += ',';
        body += one;
      }
      body += "]}";
      const std::size_t count = end - next;

      auto wait = cfg.retry_min;
      bool failing = false;
      for (;;) {
        const backend_answer answer = post_to_backend(curl.get(), cfg.url, cfg.hub_id, cfg.hub_key, body, cfg.timeout);
        const bool reached = answer.curl == CURLE_OK;
        if (reached && answer.status == 200) {
          done.stored += count;
          if (failing) log.log(log_level::info, "hub_events_delivering", {});
          break;
        }
        if (reached && (answer.status == 400 || answer.status == 413 || answer.status == 415)) {
          done.lost += count;
          log.log(log_level::error, "hub_events_refused",
                  {field("status", static_cast<std::int64_t>(answer.status)), field("events", static_cast<std::int64_t>(count))});
          break;
        }
        if (!failing)  // once per outage, not once per attempt
          log.log(log_level::warn, "hub_events_undelivered",
                  {field("status", static_cast<std::int64_t>(answer.status)),
                   field("curl", reached ? "" : curl_easy_strerror(answer.curl))});
        failing = true;
        if (!pause(wait)) {  // stopping: one more attempt was made above, the rest is lost
          *abandoned = true;
          done.lost += batch.size() - next;
          log.log(log_level::error, "hub_events_lost_at_exit", {field("events", static_cast<std::int64_t>(batch.size() - next))});
          return done;
        }
        wait = std::min(cfg.retry_max, wait * 2);
      }
      next = end;
    }
    return done;
  };
}

}  // namespace citrus::hubapp
