// A TLS stream over a TCP socket, driven by OpenSSL through a BIO of our own.
//
// Why not asio::ssl::stream: rstrm/1 carries a stream half-close as a TLS close_notify
// while the other direction keeps flowing (docs/protocol.md, inbound stream), which
// asio::ssl::stream cannot do; the engine also feeds the ClientHello bytes it peeked for
// SNI/ALPN routing back into the handshake.
#pragma once

#include <rstream/config.hpp>
#include <rstream/core/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <boost/asio/ssl/error.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace rstream::transport {

namespace asio = boost::asio;

/// Which end of the TLS handshake this stream plays.
enum class tls_role { client, server };

/// TLS over TCP. Satisfies Asio's AsyncReadStream and AsyncWriteStream.
///
/// Like asio::ssl::stream it allows one outstanding read and one outstanding write at a
/// time, on one thread (or strand). Unlike it, async_shutdown_send() ends only the
/// sending direction (close_notify, then TCP FIN) and reading goes on.
class tls_stream {
public:
    using executor_type = asio::any_io_executor;
    using lowest_layer_type = asio::ip::tcp::socket;

    /// Takes the connected socket; ctx must outlive the stream's handshake.
    RSTREAM_DECL tls_stream(asio::ip::tcp::socket socket, SSL_CTX* ctx, tls_role role);
    RSTREAM_DECL ~tls_stream();
    tls_stream(tls_stream&&) noexcept;
    tls_stream& operator=(tls_stream&&) noexcept;
    tls_stream(const tls_stream&) = delete;
    tls_stream& operator=(const tls_stream&) = delete;

    executor_type get_executor() noexcept;
    asio::ip::tcp::socket& socket() noexcept;
    lowest_layer_type& lowest_layer() noexcept { return socket(); }
    SSL* native_handle() noexcept;

    /// Client: SNI (skipped for IP literals) and the name the certificate must match.
    RSTREAM_DECL void set_server_name(const std::string& name, bool verify_name);
    /// Client: the ALPN protocols to offer.
    RSTREAM_DECL void set_alpn(const std::vector<std::string>& protocols);
    /// Server: bytes already read from the socket (the peeked ClientHello).
    RSTREAM_DECL void prefeed(std::span<const std::uint8_t> bytes);

    /// Runs the handshake. Throws error_with_message on failure (certificate, ALPN, ...),
    /// after sending any alert OpenSSL produced. Cancel it to enforce a deadline.
    RSTREAM_DECL asio::awaitable<void> async_handshake();

    /// The ALPN protocol both sides agreed on, or empty.
    RSTREAM_DECL std::string selected_alpn() const;

    /// Half-close: sends close_notify and a TCP FIN; reads keep working.
    RSTREAM_DECL asio::awaitable<void> async_shutdown_send();

    /// Closes the socket at once (outstanding operations complete with operation_aborted).
    /// No close_notify: the peer reads a truncation (stream_truncated), which relays pass on
    /// as a reset (core/relay.hpp).
    RSTREAM_DECL void close() noexcept;

    /// Closes at once as an orderly end: a close_notify goes first (when no write is in flight
    /// and it fits in the socket's send buffer), so the peer reads end of data, not a
    /// truncation. For deliberate closes (an idle stream dropped); close() for failures.
    RSTREAM_DECL void close_gracefully() noexcept;

    /// Completes once a read would find something (plaintext or ciphertext held here, bytes
    /// or an end on the socket); operation_aborted when closed meanwhile. A relay waits with
    /// this before it takes a buffer, so idle streams hold none.
    RSTREAM_DECL asio::awaitable<boost::system::error_code> async_wait_readable();

    /// True when a read would find something without the socket: plaintext or ciphertext
    /// held here, or the end already read. Otherwise readiness is the socket's.
    bool has_buffered_input() const noexcept;

    /// Reads some decrypted bytes. Completion: void(error_code, std::size_t).
    /// asio::error::eof after the peer's close_notify; asio::ssl::error::stream_truncated
    /// when the TCP connection ended without one.
    template <class MutableBufferSequence, class Token>
    auto async_read_some(const MutableBufferSequence& buffers, Token&& token);

    /// Reads what is there without waiting: plaintext already decrypted or still buffered,
    /// and what the socket holds. Returns 0 with would_block when a read would have to wait;
    /// otherwise as async_read_some. Relays use it to skip the readiness wait while a
    /// transfer is in full flow.
    RSTREAM_DECL std::size_t try_read_some(asio::mutable_buffer buffer, boost::system::error_code& ec);

    /// Encrypts and writes some bytes (up to a bounded batch). Completion:
    /// void(error_code, std::size_t) with the plaintext bytes consumed.
    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token);

    struct state;  // shared with the composed operations

private:
    std::unique_ptr<state> state_;
};

namespace detail {
/// Leaves new elements uninitialized: a ciphertext buffer is resized and then written over
/// at once, so zeroing it first would only cost time.
template <class T>
struct uninitialized_allocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = uninitialized_allocator<U>;
    };
    using std::allocator<T>::allocator;
    template <class U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};
} // namespace detail

struct tls_stream::state {
    using byte_vector = std::vector<std::uint8_t, detail::uninitialized_allocator<std::uint8_t>>;

    asio::ip::tcp::socket socket;
    SSL* ssl = nullptr;
    // OpenSSL's BIO is this state (impl/tls_stream.ipp): it reads the socket straight into
    // OpenSSL's read buffer and appends the records OpenSSL writes to `out`, so a byte is
    // copied once on each side of the cipher.
    byte_vector out;    // ciphertext waiting to be written
    byte_vector later;  // ciphertext produced (by a read: an alert, a key update) while `out` is written
    bool writing = false;  // a write of `out` is in flight
    std::vector<std::uint8_t> in;  // bytes read before the stream existed (a peeked ClientHello)
    std::size_t in_used = 0;
    bool socket_reads = false;     // the BIO may read the socket now (else it reports "retry")
    bool read_eof = false;
    bool more_on_socket = false;  // the last read of the socket filled what was asked
    boost::system::error_code read_error;  // the socket's read failure, reported by the next read
    // How the session ended (eof for close_notify, or its failure); every later read reports
    // it, including after a read that returned the bytes that came before it.
    boost::system::error_code ended;

    explicit state(asio::ip::tcp::socket s) : socket(std::move(s)) {}
    /// Called when the write of `out` is done: what came meanwhile is next.
    RSTREAM_DECL void written();
    /// After the handshake: gives back the memory its largest flight (certificates) and a
    /// prefed ClientHello left, which an idle connection would otherwise keep.
    RSTREAM_DECL void release_handshake_buffers();
    /// Maps the last OpenSSL failure to an error code and records it in `ended`.
    RSTREAM_DECL boost::system::error_code ssl_failure(int ret);
};

inline tls_stream::executor_type tls_stream::get_executor() noexcept { return state_->socket.get_executor(); }
inline asio::ip::tcp::socket& tls_stream::socket() noexcept { return state_->socket; }
inline SSL* tls_stream::native_handle() noexcept { return state_->ssl; }
inline bool tls_stream::has_buffered_input() const noexcept {
    return state_->read_eof || state_->read_error || state_->ended || SSL_has_pending(state_->ssl) ||
           state_->in_used < state_->in.size();
}

} // namespace rstream::transport

#include <rstream/transport/impl/tls_stream.hpp>
