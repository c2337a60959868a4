// Private: websocketpp TLS configs with a fixed socket policy. Include only
// after <websocketpp/config/asio.hpp> or <websocketpp/config/asio_client.hpp>.
//
// Why: Asio 1.22's ssl::stream can finish a *clean* async_shutdown with
// operation_aborted when the shutdown had to wait behind a pending read (the
// wake-up timer's error leaks into the result). That is the normal case for a
// server acknowledging a client's close: websocketpp still has a read posted.
// websocketpp takes operation_aborted as "cancelled" and reports the close
// only when its shutdown timer (5 s by default) fires. The policy below
// reports such a shutdown as the success it was, when OpenSSL confirms that
// close_notify went both ways.
#pragma once

#include <memory>
#include <system_error>

#include <openssl/ssl.h>

namespace bridge::ws::internal {

namespace wspp_asio = websocketpp::transport::asio;

class TlsSocketConnection : public wspp_asio::tls_socket::connection {
 public:
  using type = TlsSocketConnection;
  using ptr = std::shared_ptr<type>;

  // Shadows the base: websocketpp's transport calls socket_con_type::async_shutdown.
  void async_shutdown(wspp_asio::socket::shutdown_handler callback) {
    // `callback` holds a reference to the whole connection, so `this`
    // outlives the lambda.
    wspp_asio::tls_socket::connection::async_shutdown(
        [this, callback](const std::error_code& ec) {
          const int both = SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN;
          if (ec == asio::error::operation_aborted &&
              (SSL_get_shutdown(get_socket().native_handle()) & both) == both) {
            callback(std::error_code());
            return;
          }
          callback(ec);
        });
  }
};

class TlsSocketEndpoint : public wspp_asio::tls_socket::endpoint {
 public:
  using type = TlsSocketEndpoint;
  using socket_con_type = TlsSocketConnection;
  using socket_con_ptr = socket_con_type::ptr;

 protected:
  std::error_code init(socket_con_ptr scon) { return wspp_asio::tls_socket::endpoint::init(scon); }
};

// The TLS close_notify exchange comes after the WebSocket closing handshake,
// so waiting long for it only delays OnClose.
inline constexpr long kTlsShutdownTimeoutMs = 1000;

// websocketpp's asio_tls / asio_tls_client config with the policy above.
template <typename Base>
struct FixedTlsConfig : public Base {
  typedef FixedTlsConfig type;
  typedef Base base;
  typedef typename base::concurrency_type concurrency_type;
  typedef typename base::request_type request_type;
  typedef typename base::response_type response_type;
  typedef typename base::message_type message_type;
  typedef typename base::con_msg_manager_type con_msg_manager_type;
  typedef typename base::endpoint_msg_manager_type endpoint_msg_manager_type;
  typedef typename base::alog_type alog_type;
  typedef typename base::elog_type elog_type;
  typedef typename base::rng_type rng_type;
  struct transport_config : public base::transport_config {
    typedef TlsSocketEndpoint socket_type;
    static const long timeout_socket_shutdown = kTlsShutdownTimeoutMs;
  };
  typedef websocketpp::transport::asio::endpoint<transport_config> transport_type;
};

}  // namespace bridge::ws::internal
