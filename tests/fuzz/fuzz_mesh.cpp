// fuzz_mesh: three real hubs joined by memory::peer_mesh (the scale-out seam without NATS), driven by a
// program of events: commanders and agents log in on any hub, send commands and updates (honest, forged,
// malformed), hubs freeze, die or lose their link, peer hubs inject forged answers and commands, time
// passes. What must hold across hubs, checked on every frame a client receives:
//  - every frame parses; commanders never see a commanderId, agents never see another agent's name;
//  - a commander hears about a request only if it sent it, and an update (progress, result) only from
//    the agent it sent that request to: no hub, peer or agent can reach another commander's requests;
//  - an agent receives a command only if that commander sent that request to that agent, tagged with
//    that commander's id, never more often than it was sent;
// and at the end, once every hub is reachable again and time has passed every deadline, nothing stays
// pending: every hub's requests_in_flight() is 0. With all links up and no hub frozen, at most one hub
// holds a live session of each identity. ASan/UBSan/LSan catch crashes and leaks.
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "citrus/core/credentials.hpp"
#include "citrus/core/hub.hpp"
#include "citrus/core/operations.hpp"
#include "citrus/core/protocol.hpp"
#include "citrus/memory/loopback_transport.hpp"
#include "citrus/memory/manual_clock.hpp"
#include "citrus/memory/memory_storage.hpp"
#include "citrus/memory/peer_mesh.hpp"
#include "citrus/memory/recording_logger.hpp"
#include "citrus/memory/seeded_random.hpp"
#include "fuzz_check.hpp"
#include "fuzz_program.hpp"

namespace {

using namespace citrus;
using namespace std::chrono_literals;
using citrus::fuzz::program;

constexpr std::size_t hub_count = 3;
constexpr std::size_t slot_count = 6;
constexpr std::size_t max_steps = 200;

struct principal_def {
  principal_kind kind;
  std::string_view id;
  std::vector<std::string> grants;
};

const std::vector<principal_def>& principals() {
  static const std::vector<principal_def> defs = {
      {principal_kind::commander, "c1", {"*"}},
      {principal_kind::commander, "c2", {"a1"}},
      {principal_kind::agent, "a1", {"c1", "c2"}},
      {principal_kind::agent, "a2", {"c1"}},
  };
  return defs;
}

constexpr std::string_view request_ids[] = {"r1", "r2", "r3"};
constexpr std::string_view agent_names[] = {"a1", "a2", "a9"};
constexpr std::string_view commander_names[] = {"c1", "c2", "c9"};

template <class T, std::size_t N>
const T& pick(const T (&items)[N], std::uint8_t b) {
  return items[b % N];
}

/// A client connection: who it logged in as, and what it sent.
struct slot_state {
  std::unique_ptr<memory::recording_client> client;
  memory::loopback_connection* end = nullptr;
  std::size_t hub = 0;
  const principal_def* who = nullptr;
  std::size_t checked = 0;  ///< messages already checked
};

struct world {
  memory::manual_clock clk;
  memory::recording_logger log;
  memory::memory_storage db;
  memory::seeded_random random{5};
  credential_service creds{db.credentials(), clk, random};
  store_verifier verifier{creds};
  operation_registry ops = operation_registry::defaults();
  memory::peer_mesh mesh;
  std::array<std::unique_ptr<citrus::hub>, hub_count> hubs;
  std::array<std::unique_ptr<memory::loopback_transport>, hub_count> nets;
  std::array<bool, hub_count> frozen{}, dead{}, disconnected{};
  bool ever_split = false;  ///< a link went down or a hub froze: sessions may have been accepted unclaimed
  std::map<std::string, std::string> keys;
  std::array<slot_state, slot_count> slots;
  std::vector<std::unique_ptr<memory::recording_client>> graveyard;  ///< clients of replaced slots
  protocol::parser parser;
  // What was sent: (commander, request) -> agents it was sent to; (commander, request, agent) -> times.
  std::map<std::pair<std::string, std::string>, std::set<std::string>> sent_to;
  std::map<std::tuple<std::string, std::string, std::string>, std::size_t> sent_count, received_count;
  /// Updates agents sent: (agent, commanderId, request, type). Only these may reach a commander.
  std::set<std::tuple<std::string, std::string, std::string, std::string>> agent_sent;
  /// The hubs that held each agent at some point: within the trust model, such a hub may speak for the
  /// agent's routes it accepted (a compromised hub lies about the agents it holds; docs/scaling.md).
  std::map<std::string, std::set<std::string>> ever_held;

  world() {
    for (const auto& p : principals()) keys[std::string(p.id)] = *creds.register_principal(p.kind, p.id, p.grants);
    hub_config cfg;
    cfg.request_timeout = 30s;
    cfg.peer_ack_timeout = 2s;
    for (std::size_t h = 0; h < hub_count; ++h) {
      const std::string name = "hub-" + std::to_string(h + 1);
      hub_peer_link& link = mesh.join(name);
      hubs[h] = std::make_unique<citrus::hub>(cfg, hub_services{clk, log, db.audit(), verifier, ops, &link});
      mesh.attach(name, *hubs[h]);
      nets[h] = std::make_unique<memory::loopback_transport>(*hubs[h]);
    }
  }

  void settle() {
    for (int round = 0; round < 200; ++round) {
      std::size_t moved = 0;
      for (std::size_t h = 0; h < hub_count; ++h)
        if (!frozen[h]) moved += nets[h]->run();
      moved += mesh.run();
      if (moved == 0) break;
    }
    for (std::string_view a : agent_names) {
      const std::string holder = mesh.holder(principal_kind::agent, a);
      if (!holder.empty()) ever_held[std::string(a)].insert(holder);
    }
    check_clients();
  }

  void tick(std::chrono::milliseconds by) {
    clk.advance(by);
    for (std::size_t h = 0; h < hub_count; ++h)
      if (!frozen[h] && !dead[h]) hubs[h]->tick();
    settle();
  }

  // ------------------------------------------------------------------ invariants
  void check_clients() {
    for (auto& s : slots) {
      if (!s.client) continue;
      for (; s.checked < s.client->messages.size(); ++s.checked) check_frame(s, s.client->messages[s.checked]);
    }
  }

  void check_frame(const slot_state& s, const std::string& text) {
    auto parsed = parser.parse(text);
    CITRUS_FUZZ_CHECK(parsed.has_value(), "every frame a hub sends parses", text);
    const protocol::envelope& e = **parsed;
    if (!s.who) return;  // never authenticated: auth errors only
    const std::string me(s.who->id);
    if (s.who->kind == principal_kind::commander) {
      CITRUS_FUZZ_CHECK(e.commander.empty(), "a commander never sees a commanderId", text);
      if (e.type == protocol::message_type::progress || e.type == protocol::message_type::result) {
        auto it = sent_to.find({me, std::string(e.id)});
        CITRUS_FUZZ_CHECK(it != sent_to.end(), "an update reaches only the commander that sent the request", text);
        const bool from_its_agent = it->second.count(std::string(e.agent)) == 1;
        CITRUS_FUZZ_CHECK(from_its_agent, "an update comes only from the agent the request was sent to", text);
        const bool agent_said_it = agent_sent.count({std::string(e.agent), me, std::string(e.id),
                                                     std::string(protocol::to_string(e.type))}) == 1;
        CITRUS_FUZZ_CHECK(agent_said_it, "an update is one its agent sent for this commander (no hub or peer makes one up)",
                          text);
      } else if (e.type == protocol::message_type::error && !e.id.empty()) {
        auto it = sent_to.find({me, std::string(e.id)});
        CITRUS_FUZZ_CHECK(it != sent_to.end(), "an error names only a request this commander sent", text);
        const bool agent_ok = e.agent.empty() || it->second.count(std::string(e.agent)) == 1;
        CITRUS_FUZZ_CHECK(agent_ok, "an error names the agent the request was sent to", text);
      }
      CITRUS_FUZZ_CHECK(e.type != protocol::message_type::command, "commanders receive no commands", text);
    } else {
      CITRUS_FUZZ_CHECK(e.type != protocol::message_type::progress && e.type != protocol::message_type::result &&
                            e.type != protocol::message_type::presence,
                        "agents receive only auth answers, errors and commands", text);
      if (e.type == protocol::message_type::command) {
        CITRUS_FUZZ_CHECK(e.agent.empty(), "a command reaches its agent without an agent field", text);
        const auto key = std::make_tuple(std::string(e.commander), std::string(e.id), me);
        const std::size_t received = ++received_count[key];
        CITRUS_FUZZ_CHECK(received <= sent_count[key],
                          "an agent receives a command only as often as that commander sent it to that agent", text);
      }
    }
  }

  void check_one_session_per_identity() {
    if (ever_split) return;
    for (const auto& p : principals()) {
      std::size_t holders = 0;
      for (std::size_t h = 0; h < hub_count; ++h)
        if (!dead[h]) holders += p.kind == principal_kind::agent ? hubs[h]->agent_online(p.id) : hubs[h]->commander_online(p.id);
      CITRUS_FUZZ_CHECK(holders <= 1, "one live session per identity across hubs", p.id);
    }
  }

  // ------------------------------------------------------------------ steps
  void open(program& in) {
    slot_state& s = slots[in.byte() % slot_count];
    std::size_t h = in.byte() % hub_count;
    if (dead[h]) return;
    if (s.end && s.end->is_open()) s.end->close(close_code::normal, "client leaves");
    // Its connection may still deliver its close (a frozen hub's later): the client stays alive.
    if (s.client) graveyard.push_back(std::move(s.client));
    s = slot_state{};
    s.client = std::make_unique<memory::recording_client>();
    s.hub = h;
    s.end = &nets[h]->connect(*s.client);
    const std::uint8_t b = in.byte();
    const principal_def& p = principals()[b % principals().size()];
    const bool right_key = (b & 0x80) == 0;
    const std::string role = p.kind == principal_kind::agent ? "agent" : "commander";
    settle();
    s.client->send(std::string(R"({"v":1,"type":"auth","role":")") + role + R"(","id":")" + std::string(p.id) +
                   R"(","key":")" + (right_key ? keys[std::string(p.id)] : std::string("ak_wrong")) + R"("})");
    if (right_key) s.who = &p;
  }

  slot_state* usable(program& in) {
    slot_state& s = slots[in.byte() % slot_count];
    if (!s.client || !s.end || !s.end->is_open() || dead[s.hub]) return nullptr;
    return &s;
  }

  void command(program& in) {
    slot_state* s = usable(in);
    const std::string id(pick(request_ids, in.byte()));
    const std::string agent(pick(agent_names, in.byte()));
    const std::uint8_t shape = in.byte();
    if (!s) return;
    std::string frame = R"({"v":1,"type":"command","id":")" + id + R"(","agent":")" + agent + R"(","op":"site.deploy")";
    if (shape % 5 == 1) frame += R"(,"priority":"high")";
    if (shape % 5 == 2) frame += R"(,"commanderId":"c1")";  // never the client's to write
    frame += R"(,"payload":{"site_id":7}})";
    if (shape % 5 == 3) frame = R"({"v":1,"type":"command","id":")" + id + R"(","agent":")" + agent + R"(","op":"site.deploy"})";
    if (s->who && s->who->kind == principal_kind::commander) {
      sent_to[{std::string(s->who->id), id}].insert(agent);
      ++sent_count[{std::string(s->who->id), id, agent}];
    }
    s->client->send(frame);
  }

  void update(program& in) {
    slot_state* s = usable(in);
    const std::uint8_t kind = in.byte();
    const std::string id(pick(request_ids, in.byte()));
    const std::string commander(pick(commander_names, in.byte()));
    const std::uint8_t forge = in.byte();
    if (!s) return;
    std::string frame = R"({"v":1,"type":")";
    frame += kind % 3 == 0 ? "progress" : kind % 3 == 1 ? "result" : "error";
    frame += R"(","id":")" + id + R"(","commanderId":")" + commander + "\"";
    if (forge % 4 == 1) frame += R"(,"agent":"a2")";
    if (kind % 3 == 0) frame += R"(,"percent":40,"step":"copying")";
    if (kind % 3 == 1) frame += R"(,"status":"ok")";
    if (kind % 3 == 2) frame += R"(,"code":"internal","message":"x")";
    frame += "}";
    // A commander that sends an update is refused, naming its id: that id is then one it used.
    if (s->who && s->who->kind == principal_kind::commander) sent_to[{std::string(s->who->id), id}];
    if (s->who && s->who->kind == principal_kind::agent)
      agent_sent.insert({std::string(s->who->id), commander, id, kind % 3 == 0 ? "progress" : kind % 3 == 1 ? "result" : "error"});
    s->client->send(frame);
  }

  void raw(program& in) {
    slot_state* s = usable(in);
    const std::string_view bytes = in.bytes(in.byte() % 48);
    if (s) s->client->send(bytes);
  }

  void close_slot(program& in) {
    slot_state* s = usable(in);
    if (s) s->end->close(close_code::normal, "client leaves");
  }

  void freeze(program& in) {
    const std::size_t h = in.byte() % hub_count;
    if (dead[h]) return;
    frozen[h] = true;
    ever_split = true;
    mesh.freeze("hub-" + std::to_string(h + 1));
  }

  /// A hub dies: its connections drop (the clients see them close), the others hear peer_lost.
  void kill(program& in) {
    const std::size_t h = in.byte() % hub_count;
    if (dead[h] || hub_count - count_dead() <= 1) return;  // one hub always lives
    for (auto& s : slots)
      if (s.client && s.hub == h && s.end && s.end->is_open()) s.end->close(close_code::going_away, "hub died");
    if (!frozen[h]) nets[h]->run();  // its sessions end (a dead process would simply be gone)
    dead[h] = true;
    frozen[h] = false;
    mesh.kill("hub-" + std::to_string(h + 1));
  }

  std::size_t count_dead() const {
    std::size_t n = 0;
    for (bool d : dead) n += d;
    return n;
  }

  void toggle_link(program& in) {
    const std::size_t h = in.byte() % hub_count;
    if (dead[h]) return;
    disconnected[h] = !disconnected[h];
    ever_split = true;
    mesh.set_connected("hub-" + std::to_string(h + 1), !disconnected[h]);
  }

  /// A compromised peer hub speaks on its own: answers for routes it does not hold, commands untagged.
  void forged_peer(program& in) {
    const std::size_t h = in.byte() % hub_count;
    const std::string peer = "hub-" + std::to_string(in.byte() % (hub_count + 1) + 1);
    const std::uint64_t route = in.byte() % 4 + 1;
    const std::uint8_t what = in.byte();
    const std::string id(pick(request_ids, in.byte()));
    const std::string agent(pick(agent_names, in.byte()));
    if (dead[h] || frozen[h]) return;
    const std::string update = std::string(R"({"v":1,"type":")") + (what % 2 ? "result" : "progress") + R"(","id":")" + id +
                               R"(","agent":")" + agent + "\"" + (what % 2 ? R"(,"status":"ok"})" : R"(,"percent":5,"step":"x"})");
    if (ever_held[agent].count(peer))  // a hub that held the agent: its word for the agent is within its power
      for (std::string_view c : commander_names)
        agent_sent.insert({agent, std::string(c), id, what % 2 ? "result" : "progress"});
    switch (what % 4) {
      case 0:
        hubs[h]->deliver_remote_update(peer, route, what % 2 ? peer_update_kind::final : peer_update_kind::progress, update);
        break;
      case 1: hubs[h]->deliver_remote_update(peer, route, peer_update_kind::accepted, ""); break;
      case 2:
        // A tagged command a peer says a commander sent: the commander is then a sender of it.
        sent_to[{"c1", id}].insert(agent);
        ++sent_count[{"c1", id, agent}];
        hubs[h]->accept_remote_command(peer, route, agent, protocol::priority::normal,
                                       R"({"v":1,"type":"command","id":")" + id +
                                           R"(","commanderId":"c1","op":"site.deploy","payload":{"site_id":7}})");
        break;
      default: hubs[h]->accept_remote_command(peer, route, agent, protocol::priority::low, in.bytes(24)); break;
    }
  }

  void run(program& in) {
    for (std::size_t step = 0; step < max_steps && !in.done(); ++step) {
      switch (in.byte() % 11) {
        case 0: open(in); break;
        case 1:
        case 2: command(in); break;
        case 3:
        case 4: update(in); break;
        case 5: raw(in); break;
        case 6: close_slot(in); break;
        case 7: tick(std::chrono::milliseconds(50 * (in.byte() % 64))); break;
        case 8: freeze(in); break;
        case 9: in.byte() % 2 ? kill(in) : toggle_link(in); break;
        default: forged_peer(in); break;
      }
      settle();
      check_one_session_per_identity();
    }
    // The end: frozen hubs are declared lost (their heartbeats stopped), every link comes back, every
    // deadline passes. Nothing may stay pending.
    for (std::size_t h = 0; h < hub_count; ++h) {
      if (frozen[h]) {
        for (auto& s : slots)
          if (s.client && s.hub == h && s.end && s.end->is_open()) s.end->close(close_code::going_away, "hub died");
        frozen[h] = false;
        nets[h]->run();
        dead[h] = true;
        mesh.kill("hub-" + std::to_string(h + 1));
      }
      if (disconnected[h]) mesh.set_connected("hub-" + std::to_string(h + 1), true);
    }
    settle();
    for (int i = 0; i < 4; ++i) tick(40s);
    for (std::size_t h = 0; h < hub_count; ++h)
      if (!dead[h]) CITRUS_FUZZ_CHECK(hubs[h]->requests_in_flight() == 0, "nothing stays pending on a live hub", "");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  program in{data, size};
  world w;
  w.run(in);
  return 0;
}
