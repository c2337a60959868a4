// Private: ConnectionImpl bound to a websocketpp connection. Include only
// after websocketpp's endpoint headers (server.cc, client.cc).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

#include <websocketpp/logger/levels.hpp>

#include "connection_impl.h"

namespace bridge::ws::internal {

inline constexpr size_t kMaxMessageBytes = 16 << 20;
// Short: Server::Stop() waits about 2 s for peers to answer our close.
inline constexpr long kCloseHandshakeMs = 2000;

// What both sides of a websocketpp endpoint share. Our own logging lives
// elsewhere; failures surface through statuses and OnFail/OnClose, not
// websocketpp's stdout channels.
template <typename Endpoint>
void ConfigureEndpoint(Endpoint& endpoint) {
  endpoint.clear_access_channels(websocketpp::log::alevel::all);
  endpoint.clear_error_channels(websocketpp::log::elevel::all);
  endpoint.set_max_message_size(kMaxMessageBytes);
  endpoint.set_close_handshake_timeout(kCloseHandshakeMs);
}

template <typename Endpoint>
class WireConnection final : public ConnectionImpl {
 public:
  using Con = typename Endpoint::connection_type;
  using ConPtr = typename Endpoint::connection_ptr;
  using ConnectionImpl::ConnectionImpl;

  // Binds to `con` and routes its events here. `describe_fail` turns a
  // connection that failed before opening into the OnFail text.
  void Attach(const ConPtr& con, std::function<std::string(Con&)> describe_fail) {
    con_ = con;
    auto self = std::static_pointer_cast<WireConnection>(shared_from_this());
    // The handlers keep `self` alive as long as websocketpp keeps the
    // connection; `self` holds it only weakly, so there is no cycle.
    con->set_open_handler([self](websocketpp::connection_hdl) { self->HandleOpen(); });
    con->set_message_handler(
        [self](websocketpp::connection_hdl, typename Endpoint::message_ptr msg) {
          self->HandleMessage(msg->get_opcode() == websocketpp::frame::opcode::binary,
                              msg->get_payload());
        });
    con->set_close_handler([self](websocketpp::connection_hdl hdl) {
      ConPtr c = std::static_pointer_cast<Con>(hdl.lock());
      if (!c) return self->HandleClose(kCloseAbnormal, "connection lost");
      int code = c->get_remote_close_code();
      std::string reason = c->get_remote_close_reason();
      if (code == websocketpp::close::status::abnormal_close) {
        reason = c->get_ec() ? c->get_ec().message() : "connection lost";
      }
      self->HandleClose(code, reason);
    });
    // Runs once TCP is up (client side; a server attaches later and sets
    // no_delay itself). FailNow() closes the socket, but during DNS
    // resolution there is none yet and websocketpp would go on to connect.
    con->set_tcp_pre_init_handler([weak = std::weak_ptr<WireConnection>(self)](
                                      websocketpp::connection_hdl hdl) {
      std::shared_ptr<WireConnection> conn = weak.lock();
      if (conn && conn->finished()) return conn->WireAbort();
      if (ConPtr c = std::static_pointer_cast<Con>(hdl.lock())) {
        std::error_code ec;  // small frames must not wait for Nagle's algorithm
        c->get_raw_socket().set_option(asio::ip::tcp::no_delay(true), ec);
      }
    });
    con->set_fail_handler(
        [self, describe = std::move(describe_fail)](websocketpp::connection_hdl hdl) {
          ConPtr c = std::static_pointer_cast<Con>(hdl.lock());
          if (!c) return self->HandleFail("connection lost", 0);
          const int status = c->get_response_code();  // 0, or 101 if it failed after
          self->HandleFail(describe(*c), status == 101 ? 0 : status);
        });
  }

 protected:
  void WireSend(const std::string& text) override {
    if (ConPtr c = con_.lock()) {
      // An error means closing already; the close handler follows.
      (void)c->send(text, websocketpp::frame::opcode::text);
    }
  }

  void WireClose(int code, const std::string& reason) override {
    if (ConPtr c = con_.lock()) {
      std::error_code ec;  // not open (the peer's close crossed ours): ignore
      c->close(static_cast<websocketpp::close::status::value>(code), reason, ec);
    }
  }

  size_t WireBuffered() const override {
    ConPtr c = con_.lock();
    return c ? c->get_buffered_amount() : 0;
  }

  void WireAbort() override {
    if (ConPtr c = con_.lock()) {
      std::error_code ec;
      c->get_raw_socket().close(ec);
    }
  }

 private:
  std::weak_ptr<Con> con_;  // io thread only
};

}  // namespace bridge::ws::internal
