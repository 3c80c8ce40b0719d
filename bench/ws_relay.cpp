// ws_relay: the baseline of the WebSocket benchmark (docs/performance.md, bench/run_ws.sh).
//
// A minimal single-threaded websocketpp 0.8.2 server on standalone Asio: the stock
// websocketpp::config::asio, logging off, nothing else. It forwards frames between fixed pairs of
// connections without looking inside them: no JSON, no authentication, no rate limit, no queue.
// What ws_loadgen measures through it is the physical limit of this transport stack on this
// machine, the figure citrus-hub is compared with.
//
// Pairing is by the request path, decided once per connection:
//   /c/<k>  commander k: each of its frames is sent as is to agent k
//   /a/<k>  agent k: each of its frames is sent as is to commander k
//   /i/<n>  idle: connected, never forwarded (the scale test's idle connections)
// A frame whose peer is not connected is dropped.
//
// Usage: ws_relay [--listen HOST:PORT] [--ready-file FILE] [--nodelay 0|1]
// Port 0 picks a free port; --ready-file receives the bound port once listening. SIGINT/SIGTERM
// stop it.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>
#include <vector>

#include <websocketpp/config/asio_no_tls.hpp>
#include <websocketpp/server.hpp>

namespace {

using server_t = websocketpp::server<websocketpp::config::asio>;
using con_ptr = server_t::connection_ptr;
using message_ptr = server_t::message_ptr;

constexpr std::size_t max_pairs = 4096;

struct relay {
  server_t endpoint;
  std::vector<con_ptr> commanders = std::vector<con_ptr>(max_pairs);
  std::vector<con_ptr> agents = std::vector<con_ptr>(max_pairs);
  bool nodelay = true;
  std::size_t idle = 0;
};

/// "/c/12" -> ('c', 12); false for anything else.
bool parse_resource(const std::string& resource, char& kind, std::size_t& index) {
  if (resource.size() < 4 || resource[0] != '/' || resource[2] != '/') return false;
  kind = resource[1];
  if (kind != 'c' && kind != 'a' && kind != 'i') return false;
  char* end = nullptr;
  const unsigned long value = std::strtoul(resource.c_str() + 3, &end, 10);
  if (end == resource.c_str() + 3 || *end != '\0') return false;
  index = value;
  return kind == 'i' || index < max_pairs;
}

void usage() {
  std::fputs("usage: ws_relay [--listen HOST:PORT] [--ready-file FILE] [--nodelay 0|1]\n", stderr);
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  std::string port_text = "0";
  std::string ready_file;
  bool nodelay = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      const std::string prefix = std::string(name) + "=";
      if (arg.rfind(prefix, 0) == 0) return argv[i] + prefix.size();
      if (arg == name && i + 1 < argc) return argv[++i];
      return nullptr;
    };
    if (const char* v = value("--listen")) {
      const std::string text = v;
      const auto colon = text.rfind(':');
      if (colon == std::string::npos) {
        usage();
        return 2;
      }
      host = text.substr(0, colon);
      port_text = text.substr(colon + 1);
    } else if (const char* r = value("--ready-file")) {
      ready_file = r;
    } else if (const char* n = value("--nodelay")) {
      nodelay = std::strcmp(n, "0") != 0;
    } else if (arg == "--help" || arg == "-h") {
      usage();
      return 0;
    } else {
      usage();
      return 2;
    }
  }

  relay r;
  r.nodelay = nodelay;
  server_t& s = r.endpoint;
  try {
    s.clear_access_channels(websocketpp::log::alevel::all);
    s.clear_error_channels(websocketpp::log::elevel::all);
    s.init_asio();
    s.set_reuse_addr(true);
    s.set_listen_backlog(4096);

    s.set_open_handler([&r](websocketpp::connection_hdl hdl) {
      std::error_code ec;
      con_ptr con = r.endpoint.get_con_from_hdl(hdl, ec);
      if (ec || !con) return;
      char kind = 0;
      std::size_t index = 0;
      if (!parse_resource(con->get_resource(), kind, index)) {
        con->close(websocketpp::close::status::policy_violation, "unknown path", ec);
        return;
      }
      if (r.nodelay) con->get_raw_socket().set_option(asio::ip::tcp::no_delay(true), ec);
      if (kind == 'i') {
        ++r.idle;
        return;
      }
      std::vector<con_ptr>& mine = kind == 'c' ? r.commanders : r.agents;
      std::vector<con_ptr>& peers = kind == 'c' ? r.agents : r.commanders;
      mine[index] = con;
      // The whole relay: forward the payload, unparsed, to the paired connection.
      con->set_message_handler([&peers, index](websocketpp::connection_hdl, message_ptr msg) {
        if (const con_ptr& peer = peers[index]) peer->send(msg->get_payload(), msg->get_opcode());
      });
      con->set_close_handler([&mine, index](websocketpp::connection_hdl closed) {
        if (mine[index] && mine[index]->get_handle().lock() == closed.lock()) mine[index].reset();
      });
    });

    asio::ip::tcp::endpoint where(asio::ip::make_address(host), static_cast<unsigned short>(std::stoi(port_text)));
    s.listen(where);
    s.start_accept();
    std::error_code local_ec;
    const unsigned bound = s.get_local_endpoint(local_ec).port();
    if (local_ec) throw std::system_error(local_ec, "local endpoint");
    if (!ready_file.empty()) {
      if (std::FILE* f = std::fopen(ready_file.c_str(), "w")) {
        std::fprintf(f, "%u\n", bound);
        std::fclose(f);
      }
    }
    std::printf("ws_relay listening on ws://%s:%u\n", host.c_str(), bound);
    std::fflush(stdout);

    asio::signal_set signals(s.get_io_service(), SIGINT, SIGTERM);
    signals.async_wait([&s](const std::error_code&, int) { s.stop(); });
    s.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ws_relay: %s\n", e.what());
    return 1;
  }
  return 0;
}
