#include "remote_audit.hpp"

#include <algorithm>
#include <vector>

#include "backend_post.hpp"

namespace citrus::hubapp {

namespace {

/// The longest prefix of `text` of at most `max` bytes that does not cut a UTF-8 sequence.
void truncate_utf8(std::string& text, std::size_t max) {
  if (text.size() <= max) return;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  text.resize(n);
}

}  // namespace

remote_audit::remote_audit(remote_audit_config config, logger& log)
    : cfg_(std::move(config)), log_(log), worker_([this] { run(); }) {}

remote_audit::~remote_audit() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_one();
  worker_.join();
}

void remote_audit::record(audit_event event) {
  if (event.kind == audit_kind::security_event)  // security events also reach the log at once
    log_.log(log_level::warn, "audit_security_event",
             {field("actor", event.actor), field("action", event.action), field("target", event.target),
              field("outcome", event.outcome)});
  // The backend's bounds (hub_events.hpp); the hub's own fields stay far below them but for details.
  truncate_utf8(event.detail, 512);
  truncate_utf8(event.target, 256);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.size() >= cfg_.capacity) {
      dropped_.fetch_add(1);
      return;
    }
    queue_.push_back(std::move(event));
  }
  ready_.notify_one();
}

void remote_audit::run() {
  CURL* curl = curl_easy_init();
  std::vector<audit_event> batch;  // taken from the queue, not yet accepted by the backend
  auto pause = cfg_.retry_min;
  bool failing = false;
  for (;;) {
    bool last = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (batch.empty()) {
        ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        // Let a burst gather into one request.
        ready_.wait_for(lock, cfg_.linger, [&] { return stopping_ || queue_.size() >= cfg_.max_batch; });
      }
      last = stopping_;
      std::size_t bytes = 0;
      while (!queue_.empty() && batch.size() < cfg_.max_batch) {
        std::string one;
        append_audit_json(one, queue_.front());
        if (!batch.empty() && bytes + one.size() + 1 > cfg_.max_batch_bytes) break;
        bytes += one.size() + 1;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (batch.empty()) break;  // stopping, nothing left

    std::string body = R"({"events":[)";
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (i) body += ',';
      append_audit_json(body, batch[i]);
    }
    body += "]}";
    const backend_answer answer = post_to_backend(curl, cfg_.url, cfg_.hub_id, cfg_.hub_key, body, cfg_.timeout);
    const bool accepted = answer.curl == CURLE_OK && answer.status == 200;
    const bool refused_for_good = answer.curl == CURLE_OK && (answer.status == 400 || answer.status == 413 || answer.status == 415);
    if (accepted || refused_for_good) {
      if (accepted) sent_.fetch_add(batch.size());
      else {
        dropped_.fetch_add(batch.size());
        log_.log(log_level::error, "hub_events_refused",
                 {field("status", static_cast<std::int64_t>(answer.status)), field("events", static_cast<std::int64_t>(batch.size()))});
      }
      if (failing) log_.log(log_level::info, "hub_events_delivering", {});
      failing = false;
      pause = cfg_.retry_min;
      batch.clear();
      continue;
    }
    retries_.fetch_add(1);
    if (!failing)  // once per outage, not once per attempt
      log_.log(log_level::warn, "hub_events_undelivered",
               {field("status", static_cast<std::int64_t>(answer.status)),
                field("curl", answer.curl == CURLE_OK ? "" : curl_easy_strerror(answer.curl))});
    failing = true;
    if (last) {
      dropped_.fetch_add(batch.size());
      std::lock_guard<std::mutex> lock(mutex_);
      dropped_.fetch_add(queue_.size());
      log_.log(log_level::error, "hub_events_lost_at_exit",
               {field("events", static_cast<std::int64_t>(batch.size() + queue_.size()))});
      break;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait_for(lock, pause, [&] { return stopping_; });
    pause = std::min(cfg_.retry_max, pause * 2);
  }
  curl_easy_cleanup(curl);
}

}  // namespace citrus::hubapp
