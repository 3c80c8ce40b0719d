#include "citrus/nats/nats_peer_link.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>

#include "citrus/core/hub.hpp"
#include "citrus/core/ids.hpp"
#include "connection.hpp"

namespace citrus::nats {

std::string encode_token(std::string_view id) {
  std::string out;
  out.reserve(id.size());
  for (char c : id) {
    if (c == '.') out += "=2E";
    else if (c == ':') out += "=3A";
    else out += c;
  }
  return out;
}

std::string decode_token(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (std::size_t i = 0; i < token.size(); ++i) {
    if (token.compare(i, 3, "=2E") == 0) {
      out += '.';
      i += 2;
    } else if (token.compare(i, 3, "=3A") == 0) {
      out += ':';
      i += 2;
    } else {
      out += token[i];
    }
  }
  return out;
}

namespace {

constexpr const char* route_header = "Citrus-Route";
constexpr const char* kind_header = "Citrus-Kind";
constexpr const char* priority_header = "Citrus-Priority";
constexpr int js_wait_ms = 2000;

/// What a libnats callback copies out of a message before it is destroyed.
struct inbound {
  std::string subject;
  std::string data;
  std::string route;
  std::string kind;
  std::string prio;
  bool no_responders = false;
};

std::vector<std::string_view> split_subject(std::string_view subject) {
  std::vector<std::string_view> tokens;
  std::size_t start = 0;
  while (start <= subject.size()) {
    const std::size_t dot = subject.find('.', start);
    const std::size_t end = dot == std::string_view::npos ? subject.size() : dot;
    tokens.push_back(subject.substr(start, end - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return tokens;
}

bool parse_number(std::string_view text, std::uint64_t& out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::string key_of(principal_kind kind, std::string_view id) {
  return std::string(kind == principal_kind::agent ? "a." : "c.") + encode_token(id);
}

std::string header(natsMsg* msg, const char* name) {
  const char* value = nullptr;
  return natsMsgHeader_Get(msg, name, &value) == NATS_OK && value ? std::string(value) : std::string();
}

}  // namespace

struct nats_peer_link::impl : std::enable_shared_from_this<nats_peer_link::impl> {
  impl(nats_link_config c, poster p, logger& l, const clock& k) : cfg(std::move(c)), post(std::move(p)), log(l), clk(k) {}

  using callback_target = detail::callback_target<impl>;

  const nats_link_config cfg;
  const poster post;
  logger& log;
  const clock& clk;
  callback_target* target = nullptr;

  // Set in start(), cleared in stop(); read by every thread in between.
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  std::atomic<bool> stopping{false};

  // The worker (claims, in order) and the watcher (claims heard).
  std::mutex kv_mutex;
  std::condition_variable kv_cv;
  kvStore* kv = nullptr;  ///< guarded by kv_mutex; set by the worker once the bucket is there
  std::deque<std::function<void()>> jobs;
  std::map<std::string, std::uint64_t> own_revision;  ///< worker only: this hub's last claim per key
  std::thread worker, watcher;
  std::atomic<bool> rewatch{false};

  // The hub's thread only.
  citrus::hub* hub = nullptr;
  struct claim_state {
    std::string holder;
    std::uint64_t revision = 0;
    bool released = false;
  };
  std::map<std::string, claim_state> claims;         ///< newest entry heard per key
  std::map<std::string, std::uint64_t> own_heard;    ///< this hub's claims heard back
  struct peer_state {
    std::uint64_t epoch = 0;
    steady_time last_seen{};
  };
  std::map<std::string, peer_state, std::less<>> alive;
  std::unordered_map<std::string, natsSubscription*> agent_subscriptions;
  std::vector<natsSubscription*> fixed_subscriptions;
  std::uint64_t epoch = 0;
  steady_time last_heartbeat{};

  // ---------------------------------------------------------------- libnats threads
  static void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* t = static_cast<callback_target*>(closure);
    inbound m;
    m.subject = natsMsg_GetSubject(msg);
    if (const char* data = natsMsg_GetData(msg)) m.data.assign(data, static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    m.route = header(msg, route_header);
    m.kind = header(msg, kind_header);
    m.prio = header(msg, priority_header);
    m.no_responders = natsMsg_IsNoResponders(msg);
    natsMsg_Destroy(msg);
    std::shared_ptr<impl> self = t->owner.lock();
    if (!self || self->stopping) return;
    self->post([w = t->owner, m = std::move(m)] {
      if (auto s = w.lock(); s && !s->stopping) s->dispatch(m);
    });
  }

  static void on_disconnected(natsConnection*, void* closure) { note(closure, "nats_disconnected", false); }
  static void on_reconnected(natsConnection*, void* closure) { note(closure, "nats_reconnected", true); }

  static void note(void* closure, const char* event, bool reconnected) {
    auto* t = static_cast<callback_target*>(closure);
    std::shared_ptr<impl> self = t->owner.lock();
    if (!self || self->stopping) return;
    if (reconnected) self->rewatch = true;  // a watch may not survive the server's restart: start it again
    self->post([w = t->owner, event] {
      if (auto s = w.lock(); s && !s->stopping) s->log.log(log_level::warn, event, {field("hub", s->cfg.hub_id)});
    });
  }

  // ---------------------------------------------------------------- the hub's thread
  void dispatch(const inbound& m) {
    if (!hub) return;
    const auto t = split_subject(m.subject);
    if (t.size() < 3 || t[0] != "citrus") return;
    std::uint64_t route = 0;
    if (t[1] == "a" && t.size() == 4) {  // citrus.a.<src>.<agent>
      std::uint64_t prio = 1;
      if (!parse_number(m.route, route) || !parse_number(m.prio, prio) || prio > 2) return;
      hub->accept_remote_command(decode_token(t[2]), route, decode_token(t[3]), static_cast<protocol::priority>(prio), m.data);
    } else if (t[1] == "h" && t.size() == 5 && t[3] == "u") {  // citrus.h.<self>.u.<src>
      if (!parse_number(m.route, route)) return;
      peer_update_kind kind;
      if (m.kind == "accepted") kind = peer_update_kind::accepted;
      else if (m.kind == "progress") kind = peer_update_kind::progress;
      else if (m.kind == "final") kind = peer_update_kind::final;
      else return;
      hub->deliver_remote_update(decode_token(t[4]), route, kind, m.data);
    } else if (t[1] == "h" && t.size() == 5 && t[3] == "nr") {  // the server: no hub holds that agent
      if (m.no_responders && parse_number(t[4], route)) hub->remote_command_undeliverable(route);
    } else if (t[1] == "hb" && t.size() == 3) {
      std::uint64_t peer_epoch = 0;
      if (parse_number(m.data, peer_epoch)) heartbeat(decode_token(t[2]), peer_epoch);
    } else if (t[1] == "rv" && t.size() == 3) {
      const std::string src = decode_token(t[2]);
      const std::size_t space = m.data.find(' ');
      if (src == cfg.hub_id || space == std::string::npos) return;
      const std::string_view kind = std::string_view(m.data).substr(0, space);
      const std::string id = m.data.substr(space + 1);
      if (!is_valid_wire_id(id) || (kind != "agent" && kind != "commander")) return;
      hub->revoke_from_peer(src, kind == "agent" ? principal_kind::agent : principal_kind::commander, id);
    }
  }

  void heartbeat(const std::string& peer, std::uint64_t peer_epoch) {
    if (peer == cfg.hub_id) return;
    auto it = alive.find(peer);
    if (it != alive.end() && it->second.epoch != peer_epoch) {  // it restarted: what it held is gone
      alive.erase(it);
      hub->peer_lost(peer);
      it = alive.end();
    }
    if (it == alive.end()) {
      alive[peer] = peer_state{peer_epoch, clk.steady_now()};
      log.log(log_level::info, "peer_hub_up", {field("peer", peer)});
      // Its claims count from now on, oldest first.
      std::vector<std::pair<std::uint64_t, std::string>> held;
      for (const auto& [key, c] : claims)
        if (c.holder == peer && !c.released) held.emplace_back(c.revision, key);
      std::sort(held.begin(), held.end());
      for (const auto& [revision, key] : held) deliver_claim(key, claims[key]);
      return;
    }
    it->second.last_seen = clk.steady_now();
  }

  /// A KV entry heard by the watcher.
  void claim_heard(const std::string& key, const std::string& value, std::uint64_t revision, bool deleted) {
    if (!hub || key.size() < 3 || key[1] != '.' || (key[0] != 'a' && key[0] != 'c')) return;
    claim_state& c = claims[key];
    if (c.revision >= revision) return;  // heard already (a watch started again replays current values)
    c.revision = revision;
    if (deleted || value.size() < 2 || (value[0] != '+' && value[0] != '-')) {
      c.released = true;
    } else {
      c.holder = value.substr(1);
      c.released = value[0] == '-';
    }
    deliver_claim(key, c);
  }

  void deliver_claim(const std::string& key, const claim_state& c) {
    const principal_kind kind = key[0] == 'a' ? principal_kind::agent : principal_kind::commander;
    const std::string id = decode_token(std::string_view(key).substr(2));
    if (c.released) {
      if (!c.holder.empty()) hub->identity_released(kind, id, c.holder);
      return;
    }
    if (c.holder == cfg.hub_id) {
      own_heard[key] = c.revision;
    } else {
      // A newer claim elsewhere of an agent this hub subscribed for: its commands go there now.
      auto own = own_heard.find(key);
      if (kind == principal_kind::agent && own != own_heard.end() && own->second < c.revision) {
        unsubscribe_agent(id);
        own_heard.erase(own);
      }
      if (!alive.count(c.holder)) return;  // a dead hub's claim reads as offline (its heartbeat decides)
    }
    hub->identity_claimed(kind, id, c.holder, c.revision);
  }

  void unsubscribe_agent(const std::string& id) {
    auto it = agent_subscriptions.find(id);
    if (it == agent_subscriptions.end()) return;
    natsSubscription_Unsubscribe(it->second);
    natsSubscription_Destroy(it->second);
    agent_subscriptions.erase(it);
  }

  void tick() {
    if (!nc) return;
    const steady_time now = clk.steady_now();
    if (natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED && now - last_heartbeat >= cfg.heartbeat_interval) {
      last_heartbeat = now;
      const std::string beat = std::to_string(epoch);
      natsConnection_Publish(nc, ("citrus.hb." + encode_token(cfg.hub_id)).c_str(), beat.data(), static_cast<int>(beat.size()));
    }
    for (auto it = alive.begin(); it != alive.end();) {
      if (now - it->second.last_seen > cfg.peer_timeout) {
        const std::string peer = it->first;
        it = alive.erase(it);
        log.log(log_level::warn, "peer_hub_silent", {field("peer", peer)});
        if (hub) hub->peer_lost(peer);
      } else {
        ++it;
      }
    }
  }

  bool publish(const std::string& subject, const char* reply, std::string_view data,
               std::initializer_list<std::pair<const char*, std::string>> headers) {
    natsMsg* msg = nullptr;
    if (natsMsg_Create(&msg, subject.c_str(), reply, data.data(), static_cast<int>(data.size())) != NATS_OK) return false;
    bool ok = true;
    for (const auto& [name, value] : headers) ok = ok && natsMsgHeader_Set(msg, name, value.c_str()) == NATS_OK;
    ok = ok && natsConnection_PublishMsg(nc, msg) == NATS_OK;
    natsMsg_Destroy(msg);
    return ok;
  }

  // ---------------------------------------------------------------- worker and watcher threads
  void enqueue_job(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(kv_mutex);
      jobs.push_back(std::move(job));
    }
    kv_cv.notify_all();
  }

  /// The bucket, created by the first hub that finds none. Retried until it is there.
  kvStore* open_bucket() {
    // JetStream requests wait js_wait_ms for an answer: asked only while connected, so that stop()
    // never waits on them for a server that is not there.
    if (natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED) return nullptr;
    kvStore* store = nullptr;
    if (js_KeyValue(&store, js, cfg.bucket.c_str()) == NATS_OK) return store;
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = cfg.bucket.c_str();
    kc.History = 1;
    kc.StorageType = js_FileStorage;  // claims outlive a restart of nats-server (a dead hub's read offline)
    if (js_CreateKeyValue(&store, js, &kc) == NATS_OK) return store;
    if (js_KeyValue(&store, js, cfg.bucket.c_str()) == NATS_OK) return store;  // another hub was quicker
    return nullptr;
  }

  void run_worker() {
    kvStore* store = nullptr;
    while (!stopping && !(store = open_bucket())) std::this_thread::sleep_for(std::chrono::milliseconds(250));
    if (store) {
      std::lock_guard<std::mutex> lock(kv_mutex);
      kv = store;
    }
    kv_cv.notify_all();
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(kv_mutex);
        kv_cv.wait(lock, [&] { return stopping || !jobs.empty(); });
        if (stopping) return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      job();
    }
  }

  void put_claim(const std::string& key) {
    std::uint64_t revision = 0;
    const std::string value = "+" + cfg.hub_id;
    if (kvStore_PutString(&revision, kv, key.c_str(), value.c_str()) == NATS_OK) own_revision[key] = revision;
  }

  void put_release(const std::string& key) {
    auto it = own_revision.find(key);
    if (it == own_revision.end()) return;
    std::uint64_t revision = 0;
    const std::string value = "-" + cfg.hub_id;
    // Only over this hub's own claim: a late release never erases a newer claim of another hub.
    (void)kvStore_UpdateString(&revision, kv, key.c_str(), value.c_str(), it->second);
    own_revision.erase(it);
  }

  void run_watcher() {
    {
      std::unique_lock<std::mutex> lock(kv_mutex);
      kv_cv.wait(lock, [&] { return stopping || kv != nullptr; });
      if (stopping) return;
    }
    kvWatcher* w = nullptr;
    while (!stopping) {
      if (!w || rewatch.exchange(false)) {
        if (w) kvWatcher_Destroy(w);
        w = nullptr;
        kvWatchOptions opts;
        kvWatchOptions_Init(&opts);
        if (kvStore_WatchAll(&w, kv, &opts) != NATS_OK) {
          w = nullptr;
          std::this_thread::sleep_for(std::chrono::milliseconds(250));
          continue;
        }
      }
      kvEntry* e = nullptr;
      const natsStatus s = kvWatcher_Next(&e, w, 250);
      if (s == NATS_TIMEOUT) continue;
      if (s != NATS_OK) {
        kvWatcher_Destroy(w);
        w = nullptr;
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        continue;
      }
      if (!e) continue;  // the end of the current values: live updates follow
      std::string key = kvEntry_Key(e);
      std::string value = kvEntry_ValueString(e) ? kvEntry_ValueString(e) : "";
      const std::uint64_t revision = kvEntry_Revision(e);
      const bool deleted = kvEntry_Operation(e) != kvOp_Put;
      kvEntry_Destroy(e);
      post([wk = weak_from_this(), key = std::move(key), value = std::move(value), revision, deleted] {
        if (auto s2 = wk.lock(); s2 && !s2->stopping) s2->claim_heard(key, value, revision, deleted);
      });
    }
    if (w) kvWatcher_Destroy(w);
  }

  // ---------------------------------------------------------------- start and stop
  result<void> start() {
    if (!is_valid_wire_id(cfg.hub_id) || cfg.servers.empty()) return make_error_code(errc::invalid_value);
    target = detail::make_target(shared_from_this());
    std::random_device rd;
    epoch = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    const natsStatus s = detail::connect(
        &nc, detail::connection_config{cfg.hub_id, cfg.servers, cfg.user, cfg.password, false, on_disconnected, on_reconnected, target});
    if (s != NATS_OK) {
      log.log(log_level::error, "nats_start_failed", {field("error", natsStatus_GetText(s))});
      if (nc) natsConnection_Destroy(nc);
      nc = nullptr;
      return make_error_code(errc::storage_unavailable);
    }
    const std::string me = encode_token(cfg.hub_id);
    for (const std::string& subject : {"citrus.h." + me + ".>", std::string("citrus.hb.*"), std::string("citrus.rv.*")}) {
      natsSubscription* sub = nullptr;
      if (natsConnection_Subscribe(&sub, nc, subject.c_str(), on_message, target) == NATS_OK) fixed_subscriptions.push_back(sub);
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = js_wait_ms;
    if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) js = nullptr;
    if (js) {
      worker = std::thread([this] { run_worker(); });
      watcher = std::thread([this] { run_watcher(); });
    }
    return {};
  }

  void stop() {
    if (stopping.exchange(true)) return;
    kv_cv.notify_all();
    if (worker.joinable()) worker.join();
    if (watcher.joinable()) watcher.join();
    for (auto& [id, sub] : agent_subscriptions) {
      natsSubscription_Unsubscribe(sub);
      natsSubscription_Destroy(sub);
    }
    agent_subscriptions.clear();
    for (natsSubscription* sub : fixed_subscriptions) {
      natsSubscription_Unsubscribe(sub);
      natsSubscription_Destroy(sub);
    }
    fixed_subscriptions.clear();
    if (kv) kvStore_Destroy(kv);
    kv = nullptr;
    if (js) jsCtx_Destroy(js);
    js = nullptr;
    if (nc) {
      natsConnection_Close(nc);
      natsConnection_Destroy(nc);
    }
    nc = nullptr;
  }
};

nats_peer_link::nats_peer_link(nats_link_config config, poster post, logger& log, const clock& clk)
    : impl_(std::make_shared<impl>(std::move(config), std::move(post), log, clk)) {}

nats_peer_link::~nats_peer_link() { impl_->stop(); }

void nats_peer_link::attach(citrus::hub& h) { impl_->hub = &h; }
result<void> nats_peer_link::start() { return impl_->start(); }
void nats_peer_link::stop() { impl_->stop(); }
void nats_peer_link::tick() { impl_->tick(); }

bool nats_peer_link::connected() const {
  return impl_->nc && natsConnection_Status(impl_->nc) == NATS_CONN_STATUS_CONNECTED;
}

std::vector<std::string> nats_peer_link::peers() const {
  std::vector<std::string> out;
  for (const auto& [name, p] : impl_->alive) out.push_back(name);
  return out;
}

std::string_view nats_peer_link::self() const { return impl_->cfg.hub_id; }

bool nats_peer_link::forward_command(std::string_view agent, std::uint64_t route, protocol::priority prio,
                                     std::string_view frame) {
  if (!connected()) return false;  // never buffered for later: the commander hears agent_offline now
  const std::string me = encode_token(impl_->cfg.hub_id);
  const std::string route_text = std::to_string(route);
  const std::string reply = "citrus.h." + me + ".nr." + route_text;
  return impl_->publish("citrus.a." + me + "." + encode_token(agent), reply.c_str(), frame,
                        {{route_header, route_text}, {priority_header, std::to_string(static_cast<int>(prio))}});
}

void nats_peer_link::forward_update(std::string_view origin, std::uint64_t route, peer_update_kind kind,
                                    std::string_view frame) {
  if (!connected()) return;
  const char* kind_text = kind == peer_update_kind::accepted ? "accepted" : kind == peer_update_kind::progress ? "progress" : "final";
  impl_->publish("citrus.h." + encode_token(origin) + ".u." + encode_token(impl_->cfg.hub_id), nullptr, frame,
                 {{route_header, std::to_string(route)}, {kind_header, kind_text}});
}

void nats_peer_link::claim(principal_kind kind, std::string_view id) {
  if (!impl_->nc || kind == principal_kind::hub) return;
  const std::string key = key_of(kind, id);
  if (kind == principal_kind::agent && !impl_->agent_subscriptions.count(std::string(id))) {
    natsSubscription* sub = nullptr;
    const std::string subject = "citrus.a.*." + encode_token(id);
    if (natsConnection_QueueSubscribe(&sub, impl_->nc, subject.c_str(), "citrus", impl::on_message, impl_->target) == NATS_OK)
      impl_->agent_subscriptions.emplace(std::string(id), sub);
  }
  impl_->own_heard.erase(key);  // this session's claim is not heard back yet
  impl_->enqueue_job([w = std::weak_ptr<impl>(impl_), key] {
    if (auto s = w.lock()) s->put_claim(key);
  });
}

void nats_peer_link::release(principal_kind kind, std::string_view id) {
  if (!impl_->nc || kind == principal_kind::hub) return;
  if (kind == principal_kind::agent) impl_->unsubscribe_agent(std::string(id));
  const std::string key = key_of(kind, id);
  impl_->own_heard.erase(key);
  impl_->enqueue_job([w = std::weak_ptr<impl>(impl_), key] {
    if (auto s = w.lock()) s->put_release(key);
  });
}

void nats_peer_link::revoke(principal_kind kind, std::string_view id) {
  if (!connected() || kind == principal_kind::hub) return;
  const std::string data = std::string(to_string(kind)) + " " + std::string(id);
  natsConnection_Publish(impl_->nc, ("citrus.rv." + encode_token(impl_->cfg.hub_id)).c_str(), data.data(),
                         static_cast<int>(data.size()));
}

}  // namespace citrus::nats
