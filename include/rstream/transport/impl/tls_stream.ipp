#pragma once

#include <rstream/transport/tls_stream.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace rstream::transport {

namespace {
std::string openssl_error_text(unsigned long e) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}
} // namespace

namespace detail {

// The BIO under every tls_stream. Its data is the stream's state.
//
// Reading: bytes handed over before the stream existed (prefeed) first, then the socket, read
// without blocking straight into OpenSSL's buffer, but only while the state allows it
// (`socket_reads`, set around SSL_read by read_available): a read that would only find the
// socket empty costs a system call, so it is made when the socket was reported readable or
// the last read filled all that was asked. Empty, closed and failed all report "retry", which
// SSL_read turns into SSL_ERROR_WANT_READ; the state says which it was (read_eof, read_error).
//
// Writing: records are appended to `out`, which the stream's write sends, or to `later`
// while that write is in flight (a read can produce an alert or a key update meanwhile).
namespace {

int bio_write(BIO* bio, const char* data, std::size_t size, std::size_t* written) {
    auto* s = static_cast<tls_stream::state*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    auto& to = s->writing ? s->later : s->out;
    // resize() leaves the new bytes as they are (byte_vector), and memcpy copies at full
    // speed: insert() constructs byte by byte through the allocator.
    const std::size_t at = to.size();
    to.resize(at + size);
    std::memcpy(to.data() + at, data, size);
    *written = size;
    return 1;
}

int bio_read(BIO* bio, char* data, std::size_t size, std::size_t* read) {
    auto* s = static_cast<tls_stream::state*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    *read = 0;
    if (s->in_used < s->in.size()) {
        std::size_t n = std::min(size, s->in.size() - s->in_used);
        std::memcpy(data, s->in.data() + s->in_used, n);
        s->in_used += n;
        *read = n;
        return 1;
    }
    if (s->read_eof || s->read_error || !s->socket_reads || size == 0) {
        BIO_set_retry_read(bio);
        return 0;
    }
    for (;;) {
        ssize_t n = ::recv(s->socket.native_handle(), data, size, 0);
        if (n > 0) {
            // All that was asked: the socket most likely holds more, so the next read tries it
            // before it waits (a bulk transfer then needs no readiness wait per read).
            s->more_on_socket = static_cast<std::size_t>(n) == size;
            s->socket_reads = s->more_on_socket;
            *read = static_cast<std::size_t>(n);
            return 1;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            s->read_eof = true;
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
            s->read_error = boost::system::error_code(errno, asio::error::get_system_category());
        s->more_on_socket = false;
        s->socket_reads = false;
        BIO_set_retry_read(bio);
        return 0;
    }
}

long bio_ctrl(BIO* bio, int cmd, long, void*) {
    auto* s = static_cast<tls_stream::state*>(BIO_get_data(bio));
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;  // `out` is written by the stream
    case BIO_CTRL_PENDING:
        return s ? static_cast<long>(s->in.size() - s->in_used) : 0;
    case BIO_CTRL_WPENDING:
        return s ? static_cast<long>(s->out.size() + s->later.size()) : 0;
    case BIO_CTRL_EOF:
        return s && s->read_eof ? 1 : 0;
    default:
        return 0;
    }
}

int bio_create(BIO* bio) {
    BIO_set_init(bio, 1);
    return 1;
}

BIO_METHOD* stream_bio_method() {
    // Created once and kept for the life of the program (BIOs refer to it).
    static BIO_METHOD* method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "rstream tls_stream");
        if (m) {
            BIO_meth_set_write_ex(m, bio_write);
            BIO_meth_set_read_ex(m, bio_read);
            BIO_meth_set_ctrl(m, bio_ctrl);
            BIO_meth_set_create(m, bio_create);
        }
        return m;
    }();
    return method;
}

} // namespace
} // namespace detail

tls_stream::tls_stream(asio::ip::tcp::socket socket, SSL_CTX* ctx, tls_role role)
    : state_(std::make_unique<state>(std::move(socket))) {
    // Reads wait for readiness and then read without blocking (impl/tls_stream.hpp).
    boost::system::error_code ignored;
    state_->socket.non_blocking(true, ignored);
    state_->ssl = SSL_new(ctx);
    BIO* bio = detail::stream_bio_method() ? BIO_new(detail::stream_bio_method()) : nullptr;
    if (!state_->ssl || !bio) {
        BIO_free(bio);
        SSL_free(state_->ssl);  // the destructor does not run for a throwing constructor
        throw_error(error::internal, "cannot create a TLS session: " + openssl_error_text(ERR_get_error()));
    }
    BIO_set_data(bio, state_.get());  // the state stays where it is when the stream moves
    SSL_set_bio(state_->ssl, bio, bio);  // one reference, freed with the session
    // OpenSSL reads as much ciphertext as there is room for, up to tls_read_chunk (about two
    // records), in one system call, and decrypts it where it landed.
    SSL_set_read_ahead(state_->ssl, 1);
    SSL_set_default_read_buffer_len(state_->ssl, detail::tls_read_chunk);
    if (role == tls_role::client)
        SSL_set_connect_state(state_->ssl);
    else
        SSL_set_accept_state(state_->ssl);
}

tls_stream::~tls_stream() {
    if (state_ && state_->ssl)
        SSL_free(state_->ssl);  // frees the BIO
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
    auto& s = *state_;
    s.in.erase(s.in.begin(), s.in.begin() + static_cast<std::ptrdiff_t>(s.in_used));
    s.in_used = 0;
    s.in.insert(s.in.end(), bytes.begin(), bytes.end());
}

std::string tls_stream::selected_alpn() const {
    const unsigned char* data = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(state_->ssl, &data, &len);
    return data ? std::string(reinterpret_cast<const char*>(data), len) : std::string();
}

void tls_stream::state::written() {
    writing = false;
    out.clear();
    if (!later.empty()) {
        out.insert(out.end(), later.begin(), later.end());
        byte_vector().swap(later);
    }
    if (out.empty() && out.capacity() > detail::kept_write_buffer)
        byte_vector().swap(out);
}

void tls_stream::state::release_handshake_buffers() {
    if (out.empty())
        byte_vector().swap(out);
    if (in_used == in.size())
        std::vector<std::uint8_t>().swap(in), in_used = 0;
}

boost::system::error_code tls_stream::state::ssl_failure(int ret) {
    int err = SSL_get_error(ssl, ret);
    boost::system::error_code why;
    if (err == SSL_ERROR_ZERO_RETURN) {
        why = asio::error::eof;
    } else {
        unsigned long e = err == SSL_ERROR_SSL ? ERR_peek_last_error() : 0;
        ERR_clear_error();
        // A session that already failed says nothing new when used again (and an error
        // with an empty queue is no success): the first failure stands.
        if (e != 0)
            why = {static_cast<int>(e), asio::error::get_ssl_category()};
        else
            why = ended ? ended : boost::system::error_code(asio::ssl::error::stream_truncated);
    }
    if (!ended)
        ended = why;
    return why;
}

asio::awaitable<void> tls_stream::async_handshake() {
    auto& s = *state_;
    bool readable = false;  // the socket was reported readable (the first step has no need of it)
    for (;;) {
        ERR_clear_error();
        s.socket_reads = readable;
        int r = SSL_do_handshake(s.ssl);
        s.socket_reads = false;
        int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(s.ssl, r);
        unsigned long detail = err == SSL_ERROR_SSL ? ERR_peek_last_error() : 0;
        // Send what OpenSSL produced: handshake messages, or an alert explaining a failure.
        if (!s.out.empty()) {
            boost::system::error_code wec;
            s.writing = true;
            co_await asio::async_write(s.socket, asio::buffer(s.out),
                                       asio::redirect_error(asio::use_awaitable, wec));
            s.written();
            if (wec && err == SSL_ERROR_NONE)
                throw_error(wec, "TLS handshake: " + wec.message());
        }
        if (err == SSL_ERROR_NONE) {
            s.release_handshake_buffers();
            co_return;
        }
        if (err == SSL_ERROR_WANT_READ) {
            if (s.read_error)
                throw boost::system::system_error(s.read_error);
            if (s.read_eof)
                throw_error(asio::error::eof, "TLS handshake: the peer closed the connection");
            // OpenSSL took all it had (prefed bytes, what it read ahead): the socket is next.
            co_await s.socket.async_wait(asio::socket_base::wait_read, asio::use_awaitable);
            readable = true;
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
    if (!s.out.empty()) {
        // A read of the other direction may run meanwhile: what it produces waits in `later`.
        boost::system::error_code ec;
        s.writing = true;
        co_await asio::async_write(s.socket, asio::buffer(s.out), asio::redirect_error(asio::use_awaitable, ec));
        s.written();
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
    if (s.socket.is_open() && !s.writing && SSL_is_init_finished(s.ssl)) {
        ERR_clear_error();
        SSL_shutdown(s.ssl);  // queues close_notify (nothing new if one was sent already)
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
