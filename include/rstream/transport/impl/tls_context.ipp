#pragma once

#include <rstream/transport/tls_context.hpp>

#include <boost/asio/connect.hpp>
#include <rstream/core/async.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/err.h>

namespace rstream::transport {

namespace {
std::string last_openssl_error() {
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}
} // namespace

ssl_ctx_ptr make_client_context(const client_config& config) {
    ssl_ctx_ptr ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
    if (!ctx)
        throw_error(error::internal, "cannot create a TLS context: " + last_openssl_error());
    // docs/protocol.md, transport: TLS 1.3 only on the agent transport.
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    SSL_CTX_set_ciphersuites(ctx.get(), tls13_ciphersuites);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
    if (config.tls.insecure_skip_verify) {
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    } else {
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
        if (!config.tls.ca_file.empty()) {
            if (SSL_CTX_load_verify_locations(ctx.get(), config.tls.ca_file.c_str(), nullptr) != 1)
                throw_error(error::invalid_configuration,
                            "cannot load the CA file '" + config.tls.ca_file + "' (" + last_openssl_error() +
                                "); check --tls-cacert-file / RSTREAM_TLS_CACERT_FILE");
        } else {
            SSL_CTX_set_default_verify_paths(ctx.get());
        }
    }
    if (!config.mtls_cert_file.empty()) {
        if (SSL_CTX_use_certificate_chain_file(ctx.get(), config.mtls_cert_file.c_str()) != 1)
            throw_error(error::invalid_configuration,
                        "cannot load the client certificate '" + config.mtls_cert_file + "' (" +
                            last_openssl_error() + ")");
        if (SSL_CTX_use_PrivateKey_file(ctx.get(), config.mtls_key_file.c_str(), SSL_FILETYPE_PEM) != 1)
            throw_error(error::invalid_configuration,
                        "cannot load the client key '" + config.mtls_key_file + "' (" + last_openssl_error() + ")");
        if (SSL_CTX_check_private_key(ctx.get()) != 1)
            throw_error(error::invalid_configuration,
                        "the client key '" + config.mtls_key_file + "' does not match the certificate '" +
                            config.mtls_cert_file + "'");
    }
    return ctx;
}

namespace {

asio::awaitable<std::optional<tls_stream>> connect_and_handshake(const client_config& config, const ssl_ctx_ptr& ctx) {
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::resolver resolver(ex);
    const auto& host = config.engine.host;
    boost::system::error_code ec;
    auto endpoints = co_await resolver.async_resolve(host, std::to_string(config.engine.port),
                                                     asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
        throw_error(ec, "cannot resolve the engine host '" + host + "': " + ec.message());
    asio::ip::tcp::socket socket(ex);
    co_await asio::async_connect(socket, endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
        throw_error(ec, "cannot connect to the engine at " + to_string(config.engine) + ": " + ec.message());
    socket.set_option(asio::ip::tcp::no_delay(true), ec);

    tls_stream stream(std::move(socket), ctx.get(), tls_role::client);
    const std::string& name = config.tls.server_name.empty() ? host : config.tls.server_name;
    stream.set_server_name(name, !config.tls.insecure_skip_verify);
    stream.set_alpn({agent_alpn});
    try {
        co_await stream.async_handshake();
    } catch (const error_with_message& e) {
        if (e.code() == error::certificate_verify_failed)
            throw_error(e.code(), std::string(e.what()) + " (engine " + to_string(config.engine) +
                                      "); pass the engine's CA with --tls-cacert-file or RSTREAM_TLS_CACERT_FILE "
                                      "(the embedded engine writes it to its state directory as ca.pem)");
        throw;
    }
    if (stream.selected_alpn() != agent_alpn)
        throw_error(error::alpn_mismatch, "the server at " + to_string(config.engine) +
                                              " did not accept ALPN rstrm/1: is it an rstream engine?");
    co_return std::optional<tls_stream>(std::move(stream));
}

} // namespace

asio::awaitable<tls_stream> async_connect_engine(const client_config& config, const ssl_ctx_ptr& ctx,
                                                 std::chrono::milliseconds timeout) {
    auto stream = co_await with_timeout(connect_and_handshake(config, ctx), timeout, error::handshake_timeout,
                                        "connecting to the engine at " + to_string(config.engine) + " timed out");
    co_return std::move(*stream);
}

} // namespace rstream::transport
