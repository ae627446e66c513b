#pragma once

#include <rstream/transport/tls_stream.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace rstream::transport {

namespace {
std::string openssl_error_text(unsigned long e) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}
} // namespace

tls_stream::tls_stream(asio::ip::tcp::socket socket, SSL_CTX* ctx, tls_role role)
    : state_(std::make_unique<state>(std::move(socket))) {
    // Reads wait for readiness and then read without blocking (impl/tls_stream.hpp).
    boost::system::error_code ignored;
    state_->socket.non_blocking(true, ignored);
    state_->ssl = SSL_new(ctx);
    if (!state_->ssl)
        throw_error(error::internal, "cannot create a TLS session: " + openssl_error_text(ERR_get_error()));
    state_->rbio = BIO_new(BIO_s_mem());
    state_->wbio = BIO_new(BIO_s_mem());
    // An empty memory BIO reports "retry" instead of EOF, which SSL_read maps to WANT_READ.
    BIO_set_mem_eof_return(state_->rbio, -1);
    SSL_set_bio(state_->ssl, state_->rbio, state_->wbio);
    if (role == tls_role::client)
        SSL_set_connect_state(state_->ssl);
    else
        SSL_set_accept_state(state_->ssl);
}

tls_stream::~tls_stream() {
    if (state_ && state_->ssl)
        SSL_free(state_->ssl);  // frees both BIOs
}

tls_stream::tls_stream(tls_stream&&) noexcept = default;
tls_stream& tls_stream::operator=(tls_stream&& other) noexcept {
    if (this != &other) {
        if (state_ && state_->ssl)
            SSL_free(state_->ssl);
        state_ = std::move(other.state_);
    }
    return *this;
}

void tls_stream::set_server_name(const std::string& name, bool verify_name) {
    boost::system::error_code ec;
    asio::ip::make_address(name, ec);
    bool is_ip = !ec;
    if (!is_ip)
        SSL_set_tlsext_host_name(state_->ssl, name.c_str());
    if (verify_name) {
        X509_VERIFY_PARAM* param = SSL_get0_param(state_->ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
        else
            X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
    }
}

void tls_stream::set_alpn(const std::vector<std::string>& protocols) {
    std::string wire;
    for (const auto& p : protocols) {
        wire.push_back(static_cast<char>(p.size()));
        wire += p;
    }
    SSL_set_alpn_protos(state_->ssl, reinterpret_cast<const unsigned char*>(wire.data()),
                        static_cast<unsigned>(wire.size()));
}

void tls_stream::prefeed(std::span<const std::uint8_t> bytes) {
    if (!bytes.empty())
        BIO_write(state_->rbio, bytes.data(), static_cast<int>(bytes.size()));
}

std::string tls_stream::selected_alpn() const {
    const unsigned char* data = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(state_->ssl, &data, &len);
    return data ? std::string(reinterpret_cast<const char*>(data), len) : std::string();
}

void tls_stream::state::drain_output() {
    std::size_t pending = BIO_ctrl_pending(wbio);
    if (pending == 0)
        return;
    std::size_t old = out.size();
    out.resize(old + pending);
    int n = BIO_read(wbio, out.data() + old, static_cast<int>(pending));
    out.resize(old + (n > 0 ? static_cast<std::size_t>(n) : 0));
}

void tls_stream::state::release_handshake_buffers() {
    if (out.empty())
        decltype(out)().swap(out);
    // A memory BIO keeps its largest size; a fresh one starts empty. The read side may
    // already hold the peer's first records, which stay where they are.
    if (BIO_ctrl_pending(wbio) == 0) {
        if (BIO* fresh = BIO_new(BIO_s_mem())) {
            SSL_set0_wbio(ssl, fresh);  // frees the old one
            wbio = fresh;
        }
    }
    if (BIO_ctrl_pending(rbio) == 0) {
        if (BIO* fresh = BIO_new(BIO_s_mem())) {
            BIO_set_mem_eof_return(fresh, -1);
            SSL_set0_rbio(ssl, fresh);
            rbio = fresh;
        }
    }
}

boost::system::error_code tls_stream::state::ssl_failure(int ret) {
    int err = SSL_get_error(ssl, ret);
    if (err == SSL_ERROR_SSL) {
        unsigned long e = ERR_peek_last_error();
        ERR_clear_error();
        return {static_cast<int>(e), asio::error::get_ssl_category()};
    }
    if (err == SSL_ERROR_ZERO_RETURN)
        return asio::error::eof;
    return asio::ssl::error::stream_truncated;
}

asio::awaitable<void> tls_stream::async_handshake() {
    auto& s = *state_;
    for (;;) {
        ERR_clear_error();
        int r = SSL_do_handshake(s.ssl);
        int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, r);
        unsigned long detail = err == SSL_ERROR_SSL ? ERR_peek_last_error() : 0;
        // Send what OpenSSL produced: handshake messages, or an alert explaining a failure.
        s.drain_output();
        if (!s.out.empty()) {
            boost::system::error_code wec;
            co_await asio::async_write(s.socket, asio::buffer(s.out),
                                       asio::redirect_error(asio::use_awaitable, wec));
            s.out.clear();
            if (wec && err == SSL_ERROR_NONE)
                throw_error(wec, "TLS handshake: " + wec.message());
        }
        if (err == SSL_ERROR_NONE) {
            s.release_handshake_buffers();
            co_return;
        }
        if (err == SSL_ERROR_WANT_READ) {
            if (s.read_eof)
                throw_error(asio::error::eof, "TLS handshake: the peer closed the connection");
            co_await s.socket.async_wait(asio::socket_base::wait_read, asio::use_awaitable);
            auto fed = detail::feed_from_socket(s);
            if (fed && fed != asio::error::would_block && fed != asio::error::try_again)
                throw boost::system::system_error(fed);
            continue;
        }
        long verify = SSL_get_verify_result(s.ssl);
        if (verify != X509_V_OK)
            throw_error(error::certificate_verify_failed,
                        std::string("TLS certificate verification failed: ") +
                            X509_verify_cert_error_string(verify));
        if (detail != 0) {
            ERR_clear_error();
            if (ERR_GET_REASON(detail) == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL ||
                ERR_GET_REASON(detail) == SSL_R_NO_APPLICATION_PROTOCOL)
                throw_error(error::alpn_mismatch, "TLS handshake: no common application protocol (ALPN)");
            throw_error(boost::system::error_code(static_cast<int>(detail), asio::error::get_ssl_category()),
                        "TLS handshake failed: " + openssl_error_text(detail));
        }
        throw_error(asio::ssl::error::stream_truncated, "TLS handshake: connection closed during the handshake");
    }
}

asio::awaitable<void> tls_stream::async_shutdown_send() {
    auto& s = *state_;
    ERR_clear_error();
    SSL_shutdown(s.ssl);  // queues close_notify; we do not wait for the peer's
    s.drain_output();
    if (!s.out.empty()) {
        boost::system::error_code ec;
        co_await asio::async_write(s.socket, asio::buffer(s.out), asio::redirect_error(asio::use_awaitable, ec));
        s.out.clear();
    }
    boost::system::error_code ignored;
    s.socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

asio::awaitable<boost::system::error_code> tls_stream::async_wait_readable() {
    auto& s = *state_;
    if (has_buffered_input())
        co_return boost::system::error_code{};
    boost::system::error_code ec;
    co_await s.socket.async_wait(asio::socket_base::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
}

std::size_t tls_stream::try_read_some(asio::mutable_buffer buffer, boost::system::error_code& ec) {
    if (buffer.size() == 0) {
        ec = {};
        return 0;
    }
    return detail::read_available(*state_, buffer, true, ec);
}

void tls_stream::close() noexcept {
    boost::system::error_code ignored;
    state_->socket.close(ignored);
}

void tls_stream::close_gracefully() noexcept {
    auto& s = *state_;
    // A write in flight owns `out`: its record may be half sent, so nothing can follow it.
    if (s.socket.is_open() && s.out.empty() && SSL_is_init_finished(s.ssl)) {
        ERR_clear_error();
        SSL_shutdown(s.ssl);  // queues close_notify (nothing new if one was sent already)
        s.drain_output();
        if (!s.out.empty()) {
            // Never blocks: a full send buffer means the peer reads a truncation instead.
            boost::system::error_code ec;
            s.socket.non_blocking(true, ec);
            if (!ec)
                s.socket.write_some(asio::buffer(s.out), ec);
            s.out.clear();
        }
        ERR_clear_error();
    }
    close();
}

} // namespace rstream::transport
