#include "citrus/wspp/client.hpp"

#include <websocketpp/client.hpp>
#include <websocketpp/uri.hpp>

#include "engine.hpp"

namespace citrus::wspp {
namespace detail {

/// What outlives a single connection attempt. Shared with the engines, which may outlive the client
/// (they are detached first).
struct client_state {
  client_state(event_loop& l, connection_handler& h, client_options o, logger& lg)
      : loop(l), handler(h), options(std::move(o)), log(lg) {}
  event_loop& loop;
  connection_handler& handler;
  const client_options options;
  logger& log;
  client::connect_failed_handler connect_failed;
  std::optional<close_info> last_close;
};

class client_engine : public slot_owner {
 public:
  virtual client::state current_state() const noexcept = 0;
  virtual citrus::connection* connection() noexcept = 0;
  virtual void close(close_code code, std::string_view reason) = 0;
  /// An idle engine being replaced: no callback and no logging from it again.
  virtual void retire() noexcept = 0;
  /// The client is being destroyed: see ~client().
  virtual void shutdown_now() noexcept = 0;
};

namespace {

template <class Config>
class client_engine_impl final : public client_engine,
                                 public std::enable_shared_from_this<client_engine_impl<Config>> {
  using endpoint_type = websocketpp::client<Config>;
  using con_type = typename endpoint_type::connection_type;
  using con_ptr = typename endpoint_type::connection_ptr;
  using message_ptr = typename endpoint_type::message_ptr;
  static constexpr bool tls = is_tls_v<Config>;
  enum class phase : std::uint8_t { idle, connecting, open };

 public:
  explicit client_engine_impl(std::shared_ptr<client_state> state)
      : state_(std::move(state)),
        log_(&state_->log),
        table_(state_->loop, state_->handler, state_->options.connection, state_->log) {
    const connection_options& options = state_->options.connection;
    std::error_code ec;
    endpoint_.init_asio(&loop_access::io(state_->loop), ec);
    if (ec) throw std::system_error(ec, "websocketpp init_asio");
    endpoint_.get_elog().set_sink(&state_->log);
    endpoint_.set_user_agent("citrus");
    endpoint_.set_open_handshake_timeout(static_cast<long>(options.handshake_timeout.count()));
    endpoint_.set_close_handshake_timeout(static_cast<long>(options.close_timeout.count()));
    endpoint_.set_max_message_size(options.max_message_bytes);

    endpoint_.set_open_handler([this](websocketpp::connection_hdl hdl) { guard([&] { on_open(hdl); }); });
    endpoint_.set_close_handler([this](websocketpp::connection_hdl hdl) { guard([&] { on_close(hdl); }); });
    endpoint_.set_fail_handler([this](websocketpp::connection_hdl hdl) { guard([&] { on_fail(hdl); }); });
    endpoint_.set_message_handler([this](websocketpp::connection_hdl hdl, message_ptr msg) {
      guard([&] {
        const con_ptr con = lock(hdl);
        if (con && !slot(con).abandoned) table_.message(con, msg);
      });
    });
    endpoint_.set_ping_handler([this](websocketpp::connection_hdl hdl, std::string payload) {
      const con_ptr con = lock(hdl);
      return con ? table_.ping(con, payload) : false;  // false: websocketpp never answers by itself
    });
    endpoint_.set_pong_handler([this](websocketpp::connection_hdl hdl, std::string payload) {
      if (const con_ptr con = lock(hdl)) table_.pong(con, payload);
    });
    if constexpr (tls) {
      endpoint_.set_tls_init_handler([this](websocketpp::connection_hdl) { return tls_context_; });
    }
  }

  /// Starts the attempt. `host` is the URL's host, for TLS name verification.
  result<void> start(const std::string& url, const std::string& host) {
    if constexpr (tls) {
      if (auto ec = load_tls(host)) return ec;
    }
    std::error_code ec;
    con_ptr con = endpoint_.get_connection(url, ec);
    if (ec || !con) return ec ? portable(ec) : std::make_error_code(std::errc::invalid_argument);
    slot(con).owner = this->shared_from_this();
    slot(con).serial = 1;
    const client_options& options = state_->options;
    if (!options.origin.empty()) con->replace_header("Origin", options.origin);
    for (const auto& header : options.headers) con->append_header(header.name, header.value);
    endpoint_.connect(con);
    con_ = con;
    phase_ = phase::connecting;
    log_->log(log_level::info, "client_connecting", {field("host", host), field("tls", tls ? "yes" : "no")});
    return {};
  }

  client::state current_state() const noexcept override {
    switch (phase_) {
      case phase::connecting:
        return client::state::connecting;
      case phase::open: {
        const auto* l = table_.first();
        return (l != nullptr && table_.is_closing(*l)) ? client::state::closing : client::state::open;
      }
      case phase::idle:
        break;
    }
    return client::state::idle;
  }

  citrus::connection* connection() noexcept override { return phase_ == phase::open ? table_.first() : nullptr; }

  void close(close_code code, std::string_view reason) override {
    if (detached_) return;
    if (phase_ == phase::open) {
      if (auto* l = table_.first()) l->close(code, reason);
      return;
    }
    if (phase_ != phase::connecting || cancel_pending_) return;
    cancel_pending_ = true;
    const con_ptr con = con_.lock();
    if (con) slot(con).abandoned = true;  // every later event of this attempt is ignored
    // Finish from the loop: never call back into the handler from inside close().
    auto self = this->shared_from_this();
    state_->loop.post([self, con] { self->finish_cancel(con); });
  }

  void retire() noexcept override {
    detached_ = true;
    table_.retire();
    endpoint_.get_elog().set_sink(nullptr);
    log_ = &null_log_;
  }

  void shutdown_now() noexcept override {
    if (detached_) return;
    table_.detach();
    detached_ = true;
    if (phase_ == phase::connecting) {
      if (const con_ptr con = con_.lock()) abandon(con);
    }
    phase_ = phase::idle;
    endpoint_.get_elog().set_sink(nullptr);
    log_ = &null_log_;
  }

  void connection_destroyed(std::uint64_t) noexcept override {}

 private:
  static con_ptr lock(const websocketpp::connection_hdl& hdl) noexcept {
    return std::static_pointer_cast<con_type>(hdl.lock());
  }

  template <class F>
  void guard(F&& f) noexcept {
    try {
      f();
    } catch (const std::exception& e) {
      log_->log(log_level::error, "transport_callback_threw", {field("error", e.what())});
    } catch (...) {
      log_->log(log_level::error, "transport_callback_threw", {field("error", "unknown exception")});
    }
  }

  std::error_code load_tls(const std::string& host) {
    try {
      auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
      if (auto ec = harden_tls(*context)) return ec;
      std::error_code ec;
      context->set_verify_mode(asio::ssl::verify_peer, ec);
      if (!ec) {
        if (state_->options.tls_ca_file.empty())
          context->set_default_verify_paths(ec);
        else
          context->load_verify_file(state_->options.tls_ca_file, ec);
      }
      if (!ec) context->set_verify_callback(asio::ssl::host_name_verification(host), ec);
      if (ec) {
        log_->log(log_level::error, "tls_setup_failed", {field("error", ec.message())});
        return portable(ec);
      }
      tls_context_ = std::move(context);
      return {};
    } catch (const std::system_error& e) {
      return portable(e.code());
    }
  }

  /// Drops an attempt whose events are no longer wanted.
  static void abandon(const con_ptr& con) noexcept {
    slot(con).abandoned = true;
    try {
      std::error_code ignored;
      con->get_raw_socket().close(ignored);
      con->terminate(websocketpp::error::make_error_code(websocketpp::error::operation_canceled));
    } catch (...) {
      // The socket closes with the connection.
    }
  }

  void finish_cancel(const con_ptr& con) {
    if (con) abandon(con);
    if (detached_ || phase_ != phase::connecting) return;
    phase_ = phase::idle;
    log_->log(log_level::info, "connect_failed", {field("reason", "cancelled"), field("status", std::int64_t{0})});
    notify_failed(connect_failure{"cancelled", 0});
  }

  void notify_failed(const connect_failure& failure) {
    // A copy: the callback may replace the handler, or start the next attempt.
    const client::connect_failed_handler handler = state_->connect_failed;
    if (!handler) return;
    try {
      handler(failure);
    } catch (const std::exception& e) {
      log_->log(log_level::error, "handler_threw", {field("callback", "connect_failed"), field("error", e.what())});
    } catch (...) {
      log_->log(log_level::error, "handler_threw", {field("callback", "connect_failed"), field("error", "unknown exception")});
    }
  }

  void on_open(websocketpp::connection_hdl hdl) {
    const con_ptr con = lock(hdl);
    if (!con) return;
    if (detached_ || slot(con).abandoned) {
      table_.terminate_later(con, websocketpp::error::make_error_code(websocketpp::error::operation_canceled));
      return;
    }
    phase_ = phase::open;
    std::error_code ec;
    const auto remote = con->get_raw_socket().remote_endpoint(ec);
    slot(con).remote = ec ? std::string("unknown") : format_endpoint(remote);
    if (state_->options.connection.tcp_no_delay) {
      std::error_code refused;  // a socket that refuses the option only costs latency
      con->get_raw_socket().set_option(asio::ip::tcp::no_delay(true), refused);
    }
    table_.open(con, slot(con).remote);
  }

  void on_close(websocketpp::connection_hdl hdl) {
    const con_ptr con = lock(hdl);
    if (!con || detached_ || slot(con).abandoned) return;
    state_->last_close = close_info{con->get_remote_close_code(), con->get_remote_close_reason(),
                                    con->get_local_close_code()};
    phase_ = phase::idle;  // before on_close: the handler may connect() again at once
    table_.closed(con);
  }

  void on_fail(websocketpp::connection_hdl hdl) {
    const con_ptr con = lock(hdl);
    if (!con || detached_ || slot(con).abandoned) return;
    // Finished. websocketpp 0.8.2 can still report an open after a failed extension negotiation.
    slot(con).abandoned = true;
    phase_ = phase::idle;
    connect_failure failure{con->get_ec().message(), static_cast<int>(con->get_response_code())};
    log_->log(log_level::info, "connect_failed",
              {field("reason", failure.reason), field("status", static_cast<std::int64_t>(failure.http_status))});
    notify_failed(failure);
  }

  std::shared_ptr<client_state> state_;
  null_logger null_log_;
  logger* log_;
  endpoint_type endpoint_;
  link_table<endpoint_type> table_;
  std::shared_ptr<asio::ssl::context> tls_context_;
  std::weak_ptr<con_type> con_;
  phase phase_ = phase::idle;
  bool cancel_pending_ = false;
  bool detached_ = false;
};

}  // namespace
}  // namespace detail

client::client(event_loop& loop, connection_handler& handler, client_options options, logger& log)
    : state_(std::make_shared<detail::client_state>(loop, handler, std::move(options), log)) {}

client::~client() {
  if (engine_) engine_->shutdown_now();
}

void client::set_connect_failed_handler(connect_failed_handler handler) { state_->connect_failed = std::move(handler); }

result<void> client::connect(std::string_view url) {
  if (engine_ && engine_->current_state() != state::idle) return std::make_error_code(std::errc::already_connected);
  const std::string text(url);
  bool secure = false;
  std::string host;
  try {
    const websocketpp::uri uri(text);
    if (!uri.get_valid()) return errc::invalid_value;
    if (uri.get_scheme() == "wss")
      secure = true;
    else if (uri.get_scheme() != "ws")
      return errc::invalid_value;
    host = uri.get_host();
  } catch (const std::exception&) {
    return errc::invalid_value;
  }
  for (const auto& header : state_->options.headers)
    if (!detail::is_safe_header(header.name, header.value)) return errc::invalid_value;

  try {
    std::shared_ptr<detail::client_engine> next;
    result<void> started;
    if (secure) {
      auto engine = std::make_shared<detail::client_engine_impl<detail::tls_client_config>>(state_);
      started = engine->start(text, host);
      next = std::move(engine);
    } else {
      auto engine = std::make_shared<detail::client_engine_impl<detail::plain_client_config>>(state_);
      started = engine->start(text, host);
      next = std::move(engine);
    }
    if (!started) return started;
    if (engine_) engine_->retire();
    engine_ = std::move(next);
    return {};
  } catch (const std::system_error& e) {
    return detail::portable(e.code());
  } catch (const std::exception&) {
    return errc::internal_error;
  }
}

void client::close(close_code code, std::string_view reason) {
  if (engine_) engine_->close(code, reason);
}

client::state client::current_state() const noexcept { return engine_ ? engine_->current_state() : state::idle; }

citrus::connection* client::connection() noexcept { return engine_ ? engine_->connection() : nullptr; }

std::optional<close_info> client::last_close() const { return state_->last_close; }

}  // namespace citrus::wspp
