#include "citrus/wspp/server.hpp"

#include <unordered_map>

#include <websocketpp/server.hpp>

#include "engine.hpp"

namespace citrus::wspp {

std::string_view http_request::header(std::string_view name) const noexcept {
  for (const auto& h : headers)
    if (detail::iequals(h.name, name)) return h.value;
  return {};
}

namespace detail {

/// What an http_responder holds: the engine's record of one deferred request, type-erased over the
/// engine's websocketpp config. Loop thread only.
class http_deferral {
 public:
  virtual ~http_deferral() = default;
  /// Sends `response` if the request still waits for it (once); false otherwise.
  virtual bool answer(http_response&& response) noexcept = 0;
  /// The responder was dropped unused: the request gets 500.
  virtual void abandon() noexcept = 0;
  virtual bool waiting() const noexcept = 0;

  static http_responder responder(std::shared_ptr<http_deferral> state) noexcept { return http_responder(std::move(state)); }
};

}  // namespace detail

http_responder::http_responder() noexcept = default;
http_responder::http_responder(std::shared_ptr<detail::http_deferral> state) noexcept : state_(std::move(state)) {}
http_responder::http_responder(http_responder&& other) noexcept = default;

http_responder& http_responder::operator=(http_responder&& other) noexcept {
  if (this != &other) {
    if (state_) state_->abandon();
    state_ = std::move(other.state_);
  }
  return *this;
}

http_responder::~http_responder() {
  if (state_) state_->abandon();
}

bool http_responder::send(http_response response) noexcept {
  if (!state_) return false;
  const std::shared_ptr<detail::http_deferral> state = std::move(state_);  // one answer, whatever happens
  return state->answer(std::move(response));
}

bool http_responder::pending() const noexcept { return state_ && state_->waiting(); }

namespace detail {

class server_engine : public slot_owner {
 public:
  virtual void set_http_handler(http_handler handler) = 0;
  virtual void set_async_http_handler(async_http_handler handler) = 0;
  virtual result<std::uint16_t> listen() = 0;
  virtual std::uint16_t port() const noexcept = 0;
  virtual void stop() = 0;
  virtual void shutdown_now() noexcept = 0;
  virtual std::size_t connection_count() const noexcept = 0;
  virtual server_counters counters() const noexcept = 0;
};

namespace {

/// The canonical base64 of 16 bytes: 21 characters, a 22nd whose low 4 bits are zero, then "==".
bool is_handshake_key(std::string_view key) noexcept {
  constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (std::size_t i = 0; i < 21; ++i)
    if (alphabet.find(key[i]) == std::string_view::npos) return false;
  return std::string_view("AQgw").find(key[21]) != std::string_view::npos;
}

template <class Config>
class server_engine_impl final : public server_engine,
                                 public std::enable_shared_from_this<server_engine_impl<Config>> {
  using endpoint_type = websocketpp::server<Config>;
  using con_type = typename endpoint_type::connection_type;
  using con_ptr = typename endpoint_type::connection_ptr;
  using message_ptr = typename endpoint_type::message_ptr;
  static constexpr bool tls = is_tls_v<Config>;

 public:
  server_engine_impl(event_loop& loop, connection_handler& handler, server_options options, logger& log)
      : loop_(loop),
        options_(std::move(options)),
        log_(&log),
        acceptor_(loop_access::io(loop)),
        table_(loop, handler, options_.connection, log) {
    std::error_code ec;
    endpoint_.init_asio(&loop_access::io(loop), ec);
    if (ec) throw std::system_error(ec, "websocketpp init_asio");
    endpoint_.get_elog().set_sink(&log);
    endpoint_.set_user_agent("");  // no Server header: do not advertise the library and its version
    endpoint_.set_open_handshake_timeout(static_cast<long>(options_.connection.handshake_timeout.count()));
    endpoint_.set_close_handshake_timeout(static_cast<long>(options_.connection.close_timeout.count()));
    endpoint_.set_max_message_size(options_.connection.max_message_bytes);
    endpoint_.set_max_http_body_size(options_.max_http_body_bytes);

    endpoint_.set_validate_handler([this](websocketpp::connection_hdl hdl) { return on_validate(hdl); });
    endpoint_.set_open_handler([this](websocketpp::connection_hdl hdl) { on_open(hdl); });
    endpoint_.set_close_handler([this](websocketpp::connection_hdl hdl) { on_close(hdl); });
    endpoint_.set_fail_handler([this](websocketpp::connection_hdl hdl) { on_fail(hdl); });
    endpoint_.set_message_handler(
        [this](websocketpp::connection_hdl hdl, message_ptr msg) {
          guard([&] {
            if (const con_ptr con = lock(hdl)) table_.message(con, msg);
          });
        });
    endpoint_.set_ping_handler([this](websocketpp::connection_hdl hdl, std::string payload) {
      const con_ptr con = lock(hdl);
      return con ? table_.ping(con, payload) : false;  // false: websocketpp never answers by itself
    });
    endpoint_.set_pong_handler([this](websocketpp::connection_hdl hdl, std::string payload) {
      if (const con_ptr con = lock(hdl)) table_.pong(con, payload);
    });
    endpoint_.set_http_handler([this](websocketpp::connection_hdl hdl) { on_http(hdl); });
    if constexpr (tls) {
      endpoint_.set_tls_init_handler([this](websocketpp::connection_hdl) { return tls_context_; });
    }
  }

  ~server_engine_impl() override { shutdown_now(); }

  void set_http_handler(http_handler handler) override {
    http_ = std::move(handler);
    async_http_ = nullptr;
  }
  void set_async_http_handler(async_http_handler handler) override {
    async_http_ = std::move(handler);
    http_ = nullptr;
  }

  result<std::uint16_t> listen() override {
    if (detached_) return std::make_error_code(std::errc::operation_not_permitted);
    if (acceptor_.is_open()) return std::make_error_code(std::errc::already_connected);
    std::error_code ec;
    const asio::ip::address address = asio::ip::make_address(options_.bind_address, ec);
    if (ec) return std::make_error_code(std::errc::invalid_argument);
    if constexpr (tls) {
      if (auto tls_ec = load_tls()) return tls_ec;
    }
    const asio::ip::tcp::endpoint endpoint(address, options_.port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    asio::ip::tcp::endpoint bound;
    if (!ec) bound = acceptor_.local_endpoint(ec);
    if (ec) {
      std::error_code ignored;
      acceptor_.close(ignored);
      log_->log(log_level::error, "listen_failed",
                {field("address", options_.bind_address), field("port", static_cast<std::int64_t>(options_.port)),
                 field("error", ec.message())});
      return portable(ec);
    }
    port_ = bound.port();
    log_->log(log_level::info, "server_listening",
              {field("address", options_.bind_address), field("port", static_cast<std::int64_t>(port_)),
               field("tls", tls ? "yes" : "no")});
    start_accept();
    return port_;
  }

  std::uint16_t port() const noexcept override { return port_; }

  void stop() override {
    if (detached_) return;
    const bool was_listening = acceptor_.is_open();
    stop_accepting();
    table_.close_all(close_code::going_away, "server shutting down");
    drop_handshaking();
    deferred_.clear();  // dropped with their connections: their responders now send nothing
    if (was_listening) log_->log(log_level::info, "server_stopped", {field("open", static_cast<std::int64_t>(table_.size()))});
  }

  void shutdown_now() noexcept override {
    if (detached_) return;
    stop_accepting();
    table_.detach();
    detached_ = true;
    drop_handshaking();
    deferred_.clear();  // their timers go while the loop is alive; responders then send nothing
    http_ = nullptr;
    async_http_ = nullptr;
    endpoint_.get_elog().set_sink(nullptr);
    log_ = &null_log_;
  }

  std::size_t connection_count() const noexcept override { return table_.size(); }

  server_counters counters() const noexcept override {
    server_counters c = counters_;
    const link_counters& l = table_.counters();
    c.opened = l.opened;
    c.closed = l.closed;
    c.unsupported_data = l.unsupported_data;
    c.pong_timeouts = l.pong_timeouts;
    c.slow_consumers = l.slow_consumers;
    c.control_rate_limited = l.control_rate_limited;
    c.handler_exceptions = l.handler_exceptions + counters_.handler_exceptions;
    return c;
  }

  void connection_destroyed(std::uint64_t serial) noexcept override {
    live_.erase(serial);
    auto it = address_of_.find(serial);
    if (it == address_of_.end()) return;
    auto held = per_address_.find(it->second);
    if (held != per_address_.end() && --held->second == 0) per_address_.erase(held);
    address_of_.erase(it);
  }

 private:
  static con_ptr lock(const websocketpp::connection_hdl& hdl) noexcept {
    return std::static_pointer_cast<con_type>(hdl.lock());
  }

  /// websocketpp callbacks: nothing may escape into the loop.
  template <class F>
  void guard(F&& f) noexcept {
    try {
      f();
    } catch (const std::exception& e) {
      ++counters_.handler_exceptions;
      log_->log(log_level::error, "transport_callback_threw", {field("error", e.what())});
    } catch (...) {
      ++counters_.handler_exceptions;
      log_->log(log_level::error, "transport_callback_threw", {field("error", "unknown exception")});
    }
  }

  std::error_code load_tls() {
    if (options_.tls_certificate_file.empty() || options_.tls_private_key_file.empty())
      return std::make_error_code(std::errc::invalid_argument);
    try {
      auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
      if (auto ec = harden_tls(*context)) return ec;
      SSL_CTX_set_options(context->native_handle(), SSL_OP_CIPHER_SERVER_PREFERENCE);
      std::error_code ec;
      context->use_certificate_chain_file(options_.tls_certificate_file, ec);
      if (!ec) context->use_private_key_file(options_.tls_private_key_file, asio::ssl::context::pem, ec);
      if (ec) {
        log_->log(log_level::error, "tls_setup_failed", {field("error", ec.message())});
        return portable(ec);
      }
      if (SSL_CTX_check_private_key(context->native_handle()) != 1) {
        log_->log(log_level::error, "tls_setup_failed", {field("error", "private key does not match certificate")});
        return std::make_error_code(std::errc::invalid_argument);
      }
      tls_context_ = std::move(context);
      return {};
    } catch (const std::system_error& e) {
      return portable(e.code());
    }
  }

  void start_accept() {
    if (detached_ || !acceptor_.is_open()) return;
    con_ptr con;
    try {
      con = endpoint_.get_connection();
    } catch (const std::exception&) {
      con = nullptr;
    }
    if (!con) {
      log_->log(log_level::error, "accept_setup_failed", {});
      accept_retry_ = loop_.schedule(std::chrono::milliseconds(100), [this] { start_accept(); });
      return;
    }
    slot(con).owner = this->shared_from_this();
    acceptor_.async_accept(con->get_raw_socket(), [this, con](const std::error_code& ec) { guard([&] { on_accept(con, ec); }); });
  }

  void on_accept(const con_ptr& con, const std::error_code& ec) {
    if (ec || detached_ || !acceptor_.is_open()) {
      std::error_code ignored;
      con->get_raw_socket().close(ignored);
      discard(con);
      if (!ec || ec == asio::error::operation_aborted || detached_ || !acceptor_.is_open()) return;
      // E.g. out of file descriptors: retry later rather than spin.
      log_->log(log_level::warn, "accept_failed", {field("error", ec.message())});
      accept_retry_ = loop_.schedule(std::chrono::milliseconds(100), [this] { start_accept(); });
      return;
    }
    ++counters_.accepted;
    std::error_code remote_ec;
    const auto remote = con->get_raw_socket().remote_endpoint(remote_ec);
    slot(con).remote = remote_ec ? std::string("unknown") : format_endpoint(remote);
    std::string address = remote_ec ? std::string() : remote.address().to_string();
    const char* refusal = nullptr;
    if (live_.size() >= options_.max_connections) {
      ++counters_.refused_connections;
      refusal = "max_connections";
    } else if (options_.max_connections_per_address > 0 && held_by(address) >= options_.max_connections_per_address) {
      ++counters_.refused_per_address;
      refusal = "max_connections_per_address";
    }
    if (refusal != nullptr) {
      log_->log(log_level::warn, "connection_refused", {field("remote", slot(con).remote), field("reason", refusal)});
      std::error_code ignored;
      con->get_raw_socket().close(ignored);
      discard(con);
    } else {
      const std::uint64_t serial = next_serial_++;
      slot(con).serial = serial;
      live_.emplace(serial, con);
      ++per_address_[address];
      address_of_.emplace(serial, std::move(address));
      if (options_.connection.tcp_no_delay) {
        std::error_code refused;  // a socket that refuses the option only costs latency
        con->get_raw_socket().set_option(asio::ip::tcp::no_delay(true), refused);
      }
      con->start();
    }
    start_accept();
  }

  /// Connections held now from `address` (an IP without port).
  std::size_t held_by(const std::string& address) const {
    auto it = per_address_.find(address);
    return it == per_address_.end() ? 0 : it->second;
  }

  /// An accepted-or-not connection that will never be started must be terminated (websocketpp).
  static void discard(const con_ptr& con) noexcept {
    try {
      con->terminate(std::error_code());
    } catch (...) {
      // Its socket closes with it.
    }
  }

  void stop_accepting() noexcept {
    std::error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
    port_ = 0;
  }

  /// Connections still in their handshake (or plain HTTP ones) are dropped.
  void drop_handshaking() noexcept {
    std::vector<con_ptr> pending;
    for (auto& entry : live_)
      if (con_ptr con = entry.second.lock())
        if (con->get_state() == websocketpp::session::state::connecting) pending.push_back(std::move(con));
    for (const auto& con : pending) {
      try {
        con->terminate(websocketpp::error::make_error_code(websocketpp::error::operation_canceled));
      } catch (...) {
        // Its socket closes with it.
      }
    }
  }

  bool origin_allowed(std::string_view origin) const noexcept {
    return std::any_of(options_.allowed_origins.begin(), options_.allowed_origins.end(),
                       [&](const std::string& allowed) { return iequals(allowed, origin); });
  }

  bool on_validate(websocketpp::connection_hdl hdl) noexcept {
    const con_ptr con = lock(hdl);
    if (!con || detached_) return false;
    try {
      // Only RFC 6455: the draft protocols websocketpp also speaks (hixie-76) have no message limit.
      if (!con->get_request().offered_version_13()) {
        con->set_status(websocketpp::http::status_code::upgrade_required);
        con->replace_header("Sec-WebSocket-Version", "13");
        return false;
      }
      // websocketpp only checks that the key is there (RFC 6455 §4.2.1: base64 of 16 bytes).
      if (!is_handshake_key(con->get_request_header("Sec-WebSocket-Key"))) {
        con->set_status(websocketpp::http::status_code::bad_request);
        return false;
      }
      if (!options_.allowed_origins.empty()) {
        const std::string& origin = con->get_request_header("Origin");
        if (!origin.empty() && !origin_allowed(origin)) {
          ++counters_.origin_rejected;
          log_->log(log_level::warn, "origin_rejected",
                    {field("remote", slot(con).remote), field("origin", std::string_view(origin).substr(0, 256))});
          con->set_status(websocketpp::http::status_code::forbidden);
          return false;
        }
      }
      return true;
    } catch (const std::exception& e) {
      log_->log(log_level::error, "transport_callback_threw", {field("error", e.what())});
      return false;
    }
  }

  void on_open(websocketpp::connection_hdl hdl) noexcept {
    guard([&] {
      const con_ptr con = lock(hdl);
      if (!con) return;
      if (detached_ || slot(con).abandoned) {
        table_.terminate_later(con, std::error_code());
        return;
      }
      table_.open(con, slot(con).remote);
    });
  }

  void on_close(websocketpp::connection_hdl hdl) noexcept {
    guard([&] {
      if (const con_ptr con = lock(hdl)) table_.closed(con);
    });
  }

  void on_fail(websocketpp::connection_hdl hdl) noexcept {
    guard([&] {
      const con_ptr con = lock(hdl);
      if (!con || detached_ || slot(con).serial == 0) return;
      slot(con).abandoned = true;  // finished: websocketpp may still report an open after a failure
      ++counters_.handshake_failures;
      log_->log(log_level::info, "handshake_failed",
                {field("remote", slot(con).remote), field("error", con->get_ec().message()),
                 field("status", static_cast<std::int64_t>(con->get_response_code()))});
    });
  }

  void on_http(websocketpp::connection_hdl hdl) noexcept {
    guard([&] {
      const con_ptr con = lock(hdl);
      if (!con || detached_) return;
      ++counters_.http_requests;
      http_response response;
      if (!http_ && !async_http_) {
        response.status = 426;
        response.headers.push_back({"Upgrade", "websocket"});
      } else {
        const auto& request = con->get_request();
        http_request req;
        req.method = request.get_method();
        req.target = request.get_uri();
        for (const auto& header : request.get_headers()) req.headers.push_back({header.first, header.second});
        req.body = request.get_body();
        req.remote_address = slot(con).remote;
        if (async_http_) {
          defer(con, req);
          return;
        }
        try {
          response = http_(req);
        } catch (const std::exception& e) {
          ++counters_.handler_exceptions;
          log_->log(log_level::error, "handler_threw", {field("callback", "http"), field("error", e.what())});
          response = http_response{500, {}, {}};
        } catch (...) {
          ++counters_.handler_exceptions;
          log_->log(log_level::error, "handler_threw", {field("callback", "http"), field("error", "unknown exception")});
          response = http_response{500, {}, {}};
        }
      }
      write_response(con, response);
    });
  }

  /// Puts `response` on the connection (websocketpp sends it when the HTTP handler returns, or on
  /// send_http_response() for a deferred one).
  void write_response(const con_ptr& con, http_response& response) {
    if (response.status < 100 || response.status > 599) response.status = 500;
    con->set_status(static_cast<websocketpp::http::status_code::value>(response.status));
    for (const auto& header : response.headers) {
      if (is_safe_header(header.name, header.value)) {
        con->append_header(header.name, header.value);
      } else {
        log_->log(log_level::warn, "http_header_dropped", {field("name", std::string_view(header.name).substr(0, 64))});
      }
    }
    // websocketpp closes the TCP connection after every plain HTTP answer: say so, or clients
    // (curl, fetch) see the connection die and retry.
    con->replace_header("Connection", "close");
    con->set_body(response.body);
    log_->log(log_level::debug, "http_request",
              {field("remote", slot(con).remote), field("method", con->get_request().get_method()),
               field("status", static_cast<std::int64_t>(response.status))});
  }

  // --------------------------------------------------------------------- deferred HTTP answers

  /// One request waiting for its answer, by the connection's serial, until it is answered (by the
  /// responder, or with 503 at the deadline) or the server stops. It holds the connection: nothing
  /// else does while websocketpp waits for a deferred answer (no read or write is pending).
  struct deferred_request {
    con_ptr con;
    timer deadline;
  };

  class deferral final : public http_deferral {
   public:
    deferral(std::weak_ptr<server_engine_impl> engine, std::uint64_t serial) : engine_(std::move(engine)), serial_(serial) {}
    bool answer(http_response&& response) noexcept override {
      const auto engine = engine_.lock();
      return engine && engine->answer_deferred(serial_, response, false);
    }
    void abandon() noexcept override {
      if (const auto engine = engine_.lock()) {
        http_response failed{500, {}, {}};
        engine->answer_deferred(serial_, failed, true);
      }
    }
    bool waiting() const noexcept override {
      const auto engine = engine_.lock();
      return engine && !engine->detached_ && engine->deferred_.count(serial_) == 1;
    }

   private:
    std::weak_ptr<server_engine_impl> engine_;
    std::uint64_t serial_;
  };

  /// Hands the request to the async handler with a responder; the connection waits for its answer.
  void defer(const con_ptr& con, const http_request& req) {
    const std::uint64_t serial = slot(con).serial;
    if (const std::error_code ec = con->defer_http_response(); ec || serial == 0) {  // cannot wait: answer now
      http_response failed{500, {}, {}};
      write_response(con, failed);
      return;
    }
    ++counters_.http_deferred;
    // defer_http_response() cancelled websocketpp's handshake timer: this deadline replaces it.
    deferred_request& waiting = deferred_[serial];
    waiting.con = con;
    waiting.deadline = loop_.schedule(options_.http_response_timeout, [this, serial] { deferred_timed_out(serial); });
    http_responder responder = http_deferral::responder(std::make_shared<deferral>(this->shared_from_this(), serial));
    try {
      async_http_(req, std::move(responder));
    } catch (const std::exception& e) {  // the responder it took was dropped with it: that answered 500
      ++counters_.handler_exceptions;
      log_->log(log_level::error, "handler_threw", {field("callback", "async_http"), field("error", e.what())});
    } catch (...) {
      ++counters_.handler_exceptions;
      log_->log(log_level::error, "handler_threw", {field("callback", "async_http"), field("error", "unknown exception")});
    }
  }

  /// Sends the answer of a deferred request if it still waits; false otherwise.
  bool answer_deferred(std::uint64_t serial, http_response& response, bool abandoned) noexcept {
    if (detached_) return false;
    const auto it = deferred_.find(serial);
    if (it == deferred_.end()) return false;
    const con_ptr con = std::move(it->second.con);
    deferred_.erase(it);  // cancels the deadline
    if (abandoned) {
      ++counters_.http_unanswered;
      log_->log(log_level::error, "http_responder_dropped", {field("remote", slot(con).remote)});
    }
    bool sent = false;
    guard([&] {
      write_response(con, response);
      std::error_code ec;
      con->send_http_response(ec);  // invalid_state when websocketpp already gave up on it
      sent = !ec;
    });
    return sent;
  }

  void deferred_timed_out(std::uint64_t serial) noexcept {
    if (deferred_.count(serial) == 0) return;
    ++counters_.http_response_timeouts;
    log_->log(log_level::warn, "http_response_timeout",
              {field("timeout_ms", static_cast<std::int64_t>(options_.http_response_timeout.count()))});
    http_response unavailable{503, {}, {}};
    answer_deferred(serial, unavailable, false);  // destroys this timer's handle: allowed (event_loop.hpp)
  }

  event_loop& loop_;
  server_options options_;
  null_logger null_log_;
  logger* log_;
  endpoint_type endpoint_;
  asio::ip::tcp::acceptor acceptor_;
  link_table<endpoint_type> table_;
  http_handler http_;
  async_http_handler async_http_;
  std::unordered_map<std::uint64_t, deferred_request> deferred_;  ///< by connection serial
  std::shared_ptr<asio::ssl::context> tls_context_;
  /// Every accepted connection still alive (handshaking, open, HTTP), by serial.
  std::unordered_map<std::uint64_t, std::weak_ptr<con_type>> live_;
  std::unordered_map<std::uint64_t, std::string> address_of_;     ///< serial -> the peer's IP
  std::unordered_map<std::string, std::size_t> per_address_;      ///< IP -> connections held
  std::uint64_t next_serial_ = 1;
  timer accept_retry_;
  server_counters counters_;
  std::uint16_t port_ = 0;
  bool detached_ = false;
};

}  // namespace
}  // namespace detail

server::server(event_loop& loop, connection_handler& handler, server_options options, logger& log) {
  if (!options.tls_certificate_file.empty() || !options.tls_private_key_file.empty())
    engine_ = std::make_shared<detail::server_engine_impl<detail::tls_server_config>>(loop, handler, std::move(options), log);
  else
    engine_ = std::make_shared<detail::server_engine_impl<detail::plain_server_config>>(loop, handler, std::move(options), log);
}

server::~server() { engine_->shutdown_now(); }

void server::set_http_handler(http_handler handler) { engine_->set_http_handler(std::move(handler)); }
void server::set_async_http_handler(async_http_handler handler) { engine_->set_async_http_handler(std::move(handler)); }
result<std::uint16_t> server::listen() { return engine_->listen(); }
std::uint16_t server::port() const noexcept { return engine_->port(); }
void server::stop() { engine_->stop(); }
std::size_t server::connection_count() const noexcept { return engine_->connection_count(); }
server_counters server::counters() const noexcept { return engine_->counters(); }

}  // namespace citrus::wspp
