// The engine's TLS client toward upstreams (edge/upstream_tls.hpp): OpenSSL over memory
// BIOs, the ciphertext carried by an upstream_stream (the tunnel stream).
#pragma once

#include <rstream/core/error.hpp>
#include <rstream/core/transfer.hpp>
#include <rstream/edge/upstream_tls.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <utility>

namespace rstream::edge {

namespace detail::upstream_tls {

inline std::string upstream_ssl_error(unsigned long e) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

/// Plaintext taken by one write, so the ciphertext buffer stays bounded.
inline constexpr std::size_t upstream_tls_write_batch = 64 * 1024;

class upstream_tls_impl final : public upstream_stream::impl {
public:
    struct state {
        upstream_stream inner;
        SSL* ssl = nullptr;
        BIO* rbio = nullptr;  // ciphertext from the upstream -> OpenSSL
        BIO* wbio = nullptr;  // OpenSSL -> ciphertext for the upstream
        std::vector<std::uint8_t> in = std::vector<std::uint8_t>(16 * 1024);
        std::string out;
        bool read_eof = false;

        explicit state(upstream_stream s) : inner(std::move(s)) {}
        ~state() {
            if (ssl)
                SSL_free(ssl);
        }
        void drain() {
            std::size_t pending = BIO_ctrl_pending(wbio);
            if (pending == 0)
                return;
            std::size_t old = out.size();
            out.resize(old + pending);
            int n = BIO_read(wbio, out.data() + old, static_cast<int>(pending));
            out.resize(old + (n > 0 ? static_cast<std::size_t>(n) : 0));
        }
        boost::system::error_code failure(int ret) {
            int err = SSL_get_error(ssl, ret);
            if (err == SSL_ERROR_ZERO_RETURN)
                return asio::error::eof;
            if (err == SSL_ERROR_SSL) {
                unsigned long e = ERR_peek_last_error();
                ERR_clear_error();
                return {static_cast<int>(e), asio::error::get_ssl_category()};
            }
            return asio::ssl::error::stream_truncated;
        }
        /// Reads more ciphertext into OpenSSL; an error when there is none.
        asio::awaitable<boost::system::error_code> fill() {
            if (read_eof)
                co_return asio::ssl::error::stream_truncated;
            boost::system::error_code ec;
            std::size_t n = co_await inner.async_read_some(asio::buffer(in), asio::redirect_error(asio::use_awaitable, ec));
            if (n > 0)
                BIO_write(rbio, in.data(), static_cast<int>(n));
            if (ec == asio::error::eof) {
                read_eof = true;
                co_return boost::system::error_code{};
            }
            co_return ec;
        }
        /// Writes the pending ciphertext.
        asio::awaitable<boost::system::error_code> flush() {
            drain();
            if (out.empty())
                co_return boost::system::error_code{};
            boost::system::error_code ec;
            co_await asio::async_write(inner, asio::buffer(out), transfer_whole, asio::redirect_error(asio::use_awaitable, ec));
            out.clear();
            co_return ec;
        }
    };

    explicit upstream_tls_impl(std::shared_ptr<state> s) : s_(std::move(s)) {}
    ~upstream_tls_impl() override { s_->inner.close(); }

    upstream_stream::executor_type get_executor() noexcept override { return s_->inner.get_executor(); }

    void read_some(asio::mutable_buffer buffer, upstream_stream::io_handler handler) override {
        auto ex = get_executor();
        asio::co_spawn(ex, read(s_, buffer), [h = std::move(handler)](std::exception_ptr e, io_result r) mutable {
            if (e)
                r = {make_error_code(error::internal), 0};
            std::move(h)(r.first, r.second);
        });
    }
    void write_some(const_buffers buffers, upstream_stream::io_handler handler) override {
        auto ex = get_executor();
        asio::co_spawn(ex, write(s_, buffers), [h = std::move(handler)](std::exception_ptr e, io_result r) mutable {
            if (e)
                r = {make_error_code(error::internal), 0};
            std::move(h)(r.first, r.second);
        });
    }
    void shutdown_send(upstream_stream::done_handler handler) override {
        auto ex = get_executor();
        asio::co_spawn(ex, shutdown(s_), [h = std::move(handler)](std::exception_ptr) mutable { std::move(h)(boost::system::error_code{}); });
    }
    void close() noexcept override { s_->inner.close(); }
    void abort() noexcept override { s_->inner.abort(); }

private:
    using io_result = std::pair<boost::system::error_code, std::size_t>;

    static asio::awaitable<io_result> read(std::shared_ptr<state> s, asio::mutable_buffer b) {
        if (b.size() == 0)
            co_return io_result{};
        for (;;) {
            std::size_t got = 0;
            ERR_clear_error();
            int r = SSL_read_ex(s->ssl, b.data(), b.size(), &got);
            if (r == 1)
                co_return io_result{{}, got};
            if (SSL_get_error(s->ssl, r) != SSL_ERROR_WANT_READ)
                co_return io_result{s->failure(r), 0};
            if (auto ec = co_await s->fill())
                co_return io_result{ec, 0};
        }
    }

    static asio::awaitable<io_result> write(std::shared_ptr<state> s, const_buffers buffers) {
        std::size_t consumed = 0;
        for (const auto& b : buffers) {
            std::size_t take = std::min(b.size(), upstream_tls_write_batch - consumed);
            if (take == 0)
                break;
            std::size_t written = 0;
            ERR_clear_error();
            int r = SSL_write_ex(s->ssl, b.data(), take, &written);
            if (r != 1)
                co_return io_result{s->failure(r), 0};
            consumed += written;
        }
        if (auto ec = co_await s->flush())
            co_return io_result{ec, 0};
        co_return io_result{{}, consumed};
    }

    static asio::awaitable<void> shutdown(std::shared_ptr<state> s) {
        ERR_clear_error();
        SSL_shutdown(s->ssl);  // queues close_notify; the upstream's is not awaited
        co_await s->flush();
        co_await s->inner.async_shutdown_send();
    }

    std::shared_ptr<state> s_;
};

} // namespace detail::upstream_tls

using detail::upstream_tls::upstream_ssl_error;
using detail::upstream_tls::upstream_tls_impl;

std::shared_ptr<SSL_CTX> make_upstream_tls_context(const upstream_tls_settings& settings) {
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
    if (!ctx)
        throw_error(error::internal, "cannot create a TLS context: " + upstream_ssl_error(ERR_get_error()));
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    if (!settings.verify) {
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
        return ctx;
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (settings.ca_pem.empty()) {
        SSL_CTX_set_default_verify_paths(ctx.get());
        return ctx;
    }
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(settings.ca_pem.data(), static_cast<int>(settings.ca_pem.size())),
                                                  BIO_free);
    X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
    int added = 0;
    while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
        if (X509_STORE_add_cert(store, cert) == 1)
            ++added;
        X509_free(cert);
    }
    ERR_clear_error();
    if (added == 0)
        throw_error(error::invalid_configuration, "the upstream CA certificates hold no PEM certificate");
    return ctx;
}

asio::awaitable<upstream_stream> upstream_tls_handshake(upstream_stream inner, SSL_CTX* ctx,
                                                        const upstream_tls_settings& settings,
                                                        const std::vector<std::string>& alpn,
                                                        std::string* selected_alpn) {
    auto s = std::make_shared<upstream_tls_impl::state>(std::move(inner));
    s->ssl = SSL_new(ctx);
    if (!s->ssl)
        throw_error(error::internal, "cannot create a TLS session: " + upstream_ssl_error(ERR_get_error()));
    s->rbio = BIO_new(BIO_s_mem());
    s->wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(s->rbio, -1);
    SSL_set_bio(s->ssl, s->rbio, s->wbio);
    SSL_set_connect_state(s->ssl);
    if (!settings.server_name.empty()) {
        boost::system::error_code ec;
        asio::ip::make_address(settings.server_name, ec);
        bool is_ip = !ec;
        if (!is_ip)
            SSL_set_tlsext_host_name(s->ssl, settings.server_name.c_str());
        if (settings.verify) {
            X509_VERIFY_PARAM* param = SSL_get0_param(s->ssl);
            X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (is_ip)
                X509_VERIFY_PARAM_set1_ip_asc(param, settings.server_name.c_str());
            else
                X509_VERIFY_PARAM_set1_host(param, settings.server_name.c_str(), 0);
        }
    }
    if (!alpn.empty()) {
        std::string wire;
        for (const auto& p : alpn) {
            wire.push_back(static_cast<char>(p.size()));
            wire += p;
        }
        SSL_set_alpn_protos(s->ssl, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
    }
    for (;;) {
        ERR_clear_error();
        int r = SSL_do_handshake(s->ssl);
        int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(s->ssl, r);
        unsigned long detail = err == SSL_ERROR_SSL ? ERR_peek_last_error() : 0;
        auto wec = co_await s->flush();  // handshake messages, or the alert explaining a failure
        if (err == SSL_ERROR_NONE) {
            if (wec)
                throw_error(wec, "upstream TLS handshake: " + wec.message());
            break;
        }
        if (err == SSL_ERROR_WANT_READ) {
            if (auto rec = co_await s->fill())
                throw_error(rec, "upstream TLS handshake: the upstream closed the connection");
            continue;
        }
        long verify = SSL_get_verify_result(s->ssl);
        if (verify != X509_V_OK)
            throw_error(error::certificate_verify_failed,
                        std::string("upstream TLS certificate verification failed: ") +
                            X509_verify_cert_error_string(verify));
        ERR_clear_error();
        if (detail != 0) {
            if (ERR_GET_REASON(detail) == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL ||
                ERR_GET_REASON(detail) == SSL_R_NO_APPLICATION_PROTOCOL)
                throw_error(error::alpn_mismatch, "upstream TLS handshake: no common application protocol (ALPN)");
            throw_error(boost::system::error_code(static_cast<int>(detail), asio::error::get_ssl_category()),
                        "upstream TLS handshake failed: " + upstream_ssl_error(detail));
        }
        throw_error(asio::ssl::error::stream_truncated,
                    "upstream TLS handshake: the upstream closed the connection (does it speak TLS?)");
    }
    if (selected_alpn) {
        const unsigned char* data = nullptr;
        unsigned int len = 0;
        SSL_get0_alpn_selected(s->ssl, &data, &len);
        *selected_alpn = data ? std::string(reinterpret_cast<const char*>(data), len) : std::string();
    }
    co_return upstream_stream(std::make_unique<upstream_tls_impl>(std::move(s)));
}

} // namespace rstream::edge
