#pragma once

// The engine's listener, SNI/ALPN demultiplexer, authentication, private dials and inbound
// stream attachment (docs/protocol.md: transport, flows).

#include <rstream/core/async.hpp>
#include <rstream/core/log.hpp>
#include <rstream/core/relay.hpp>
#include <rstream/edge/client_hello.hpp>
#include <rstream/edge/impl/engine_state.hpp>
#include <rstream/framing/message_io.hpp>
#include <rstream/framing/messages.hpp>
#include <rstream/transport/tls_context.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace rstream::edge {

using namespace std::chrono_literals;

namespace detail {
/// What the accept phase (hello, handshake, first frame) produced.
struct accepted {
    agent_stream conn;
    protocol::Message first;
    client_certificate cert;
};
} // namespace detail
using detail::accepted;

namespace {

// Select rstrm/1 when offered; refuse the handshake otherwise (docs/protocol.md, transport).
int select_agent_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                      unsigned int inlen, void*) {
    static const unsigned char proto[] = "rstrm/1";
    for (unsigned i = 0; i < inlen;) {
        unsigned len = in[i];
        if (i + 1 + len > inlen)
            break;
        if (len == sizeof proto - 1 && std::memcmp(in + i + 1, proto, len) == 0) {
            *out = in + i + 1;
            *outlen = static_cast<unsigned char>(len);
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// Client certificates are checked after the handshake, so a bad one gets UNAUTHORIZED
// with a reason instead of a bare TLS alert.
int accept_any_client_certificate(int, X509_STORE_CTX*) { return 1; }

std::string openssl_error() {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

// Published endpoints choose their ALPN per connection: the server's list (in preference
// order) is stored with the connection, see published_alpn.
int select_published_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                          unsigned int inlen, void*) {
    auto* prefs = static_cast<const std::vector<std::string>*>(SSL_get_app_data(ssl));
    if (!prefs || prefs->empty())
        return SSL_TLSEXT_ERR_NOACK;
    for (const auto& want : *prefs) {
        for (unsigned i = 0; i < inlen;) {
            unsigned len = in[i];
            if (i + 1 + len > inlen)
                break;
            if (len == want.size() && std::memcmp(in + i + 1, want.data(), len) == 0) {
                *out = in + i + 1;
                *outlen = static_cast<unsigned char>(len);
                return SSL_TLSEXT_ERR_OK;
            }
            i += 1 + len;
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

std::shared_ptr<SSL_CTX> make_published_context(const engine_credentials& creds) {
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_num_tickets(ctx.get(), 0);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
    // TLS 1.3: the engine's order decides (clients such as curl put AES-256 first).
    SSL_CTX_set_ciphersuites(ctx.get(), transport::tls13_ciphersuites);
    SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), creds.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), creds.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        throw_error(error::invalid_configuration, "cannot load the engine certificate '" + creds.cert_file +
                                                      "' for published tunnels: " + openssl_error());
    SSL_CTX_set_alpn_select_cb(ctx.get(), select_published_alpn, nullptr);
    return ctx;
}

std::shared_ptr<SSL_CTX> make_agent_context(const engine_credentials& creds) {
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(ctx.get(), 0);  // no resumption: nothing for the read path to write
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_ciphersuites(ctx.get(), transport::tls13_ciphersuites);
    SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), creds.cert_file.c_str()) != 1)
        throw_error(error::invalid_configuration,
                    "cannot load the engine certificate '" + creds.cert_file + "': " + openssl_error());
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), creds.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        throw_error(error::invalid_configuration,
                    "cannot load the engine key '" + creds.key_file + "': " + openssl_error());
    if (SSL_CTX_check_private_key(ctx.get()) != 1)
        throw_error(error::invalid_configuration, "the engine key '" + creds.key_file +
                                                      "' does not match its certificate '" + creds.cert_file + "'");
    SSL_CTX_set_alpn_select_cb(ctx.get(), select_agent_alpn, nullptr);
    if (!creds.mtls_ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(ctx.get(), creds.mtls_ca_file.c_str(), nullptr) != 1)
            throw_error(error::invalid_configuration,
                        "cannot load the agent CA '" + creds.mtls_ca_file + "': " + openssl_error());
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, accept_any_client_certificate);
        SSL_CTX_set_client_CA_list(ctx.get(), SSL_load_client_CA_file(creds.mtls_ca_file.c_str()));
    }
    return ctx;
}

bool constant_time_equal(const std::string& a, const std::string& b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool parse_version(const std::string& v, int& major) {
    int parts[3] = {-1, -1, -1};
    if (std::sscanf(v.c_str(), "%d.%d.%d", &parts[0], &parts[1], &parts[2]) < 2)
        return false;
    if (parts[0] < 0 || parts[1] < 0)
        return false;
    major = parts[0];
    return true;
}

std::string peer_text(const asio::ip::address& a) { return a.is_unspecified() ? std::string("?") : a.to_string(); }

} // namespace

// --- engine ---

engine::engine(asio::any_io_executor ex, engine_config config, engine_credentials credentials, edge_features features)
    : state_(std::make_shared<state>(std::move(ex), std::move(config), std::move(credentials), features)) {
    // Host names compare case-insensitively with the (lowercased) SNI.
    state_->cfg.host = lowercase(state_->cfg.host);
}

engine::~engine() {
    if (state_->acceptor) {
        boost::system::error_code ignored;
        state_->acceptor->close(ignored);
    }
}

void engine::start() {
    auto& s = *state_;
    s.agent_ctx = make_agent_context(s.creds);
    s.published_ctx = make_published_context(s.creds);
    auto addr = parse_listen_address(s.cfg.listen_addr);
    if (!addr)
        throw_error(error::invalid_configuration, "tls.listen_addr: cannot parse '" + s.cfg.listen_addr + "'");
    boost::system::error_code ec;
    asio::ip::tcp::endpoint ep;
    auto ip = asio::ip::make_address(addr->host.empty() ? std::string("::") : addr->host, ec);
    if (!ec) {
        ep = {ip, addr->port};
    } else {
        // A host name (e.g. localhost): bind its first address.
        asio::ip::tcp::resolver resolver(s.ex);
        auto found = resolver.resolve(addr->host, std::to_string(addr->port), ec);
        if (ec || found.empty())
            throw_error(error::invalid_configuration,
                        "tls.listen_addr: cannot resolve '" + addr->host + "': " + ec.message());
        ep = found.begin()->endpoint();
    }
    s.acceptor.emplace(s.ex);
    s.acceptor->open(ep.protocol());
    s.acceptor->set_option(asio::socket_base::reuse_address(true));
    s.acceptor->bind(ep, ec);
    if (ec)
        throw_error(ec, "cannot listen on " + s.cfg.listen_addr + ": " + ec.message() +
                            (ec == asio::error::address_in_use
                                 ? " (another engine running? stop it or set --listen / tls.listen_addr)"
                                 : ""));
    s.acceptor->listen(asio::socket_base::max_listen_connections);
    asio::co_spawn(s.ex, s.accept_loop(), asio::detached);
    if (!s.cfg.http_redirect_listen_addr.empty())
        s.start_redirect_listener();
}

void engine::serve_agent_stream(upstream_stream stream, asio::ip::address peer) {
    auto s = state_;
    asio::co_spawn(s->ex, s->serve_agent_stream(std::move(stream), peer), asio::detached);
}

asio::ip::tcp::endpoint engine::local_endpoint() const { return state_->acceptor->local_endpoint(); }
std::size_t engine::tunnel_count() const { return state_->tunnels.size(); }
std::size_t engine::channel_count() const { return state_->sessions.size(); }
std::size_t engine::stream_count() const { return state_->relays.size(); }

asio::awaitable<void> engine::async_shutdown() {
    auto s = state_;
    if (s->stopping)
        co_return;
    s->stopping = true;
    log::info("engine shutting down", {{"channels", std::to_string(s->sessions.size())},
                                       {"streams", std::to_string(s->relays.size())}});
    if (s->acceptor) {
        boost::system::error_code ignored;
        s->acceptor->close(ignored);
    }
    for (auto& [id, listener] : s->tcp_listeners) {
        boost::system::error_code ignored;
        listener->close(ignored);
    }
    if (s->redirect_listener) {
        boost::system::error_code ignored;
        s->redirect_listener->close(ignored);
    }
    for (auto& [id, session] : s->sessions)
        session->close_with_message("engine shutting down: reconnect later");
    for (auto& [id, p] : s->pending) {
        p->why = "engine shutting down";
        p->ready.set();
    }
    auto grace = s->cfg.shutdown_grace;
    if (!s->sessions.empty()) {
        // Multiplexed streams end with their control connection: such a connection is kept
        // (and its session) while they drain.
        bool streams_ride = std::any_of(s->sessions.begin(), s->sessions.end(),
                                        [](const auto& kv) { return kv.second->carries_streams(); });
        s->sessions_gone.reset();
        try {
            co_await with_timeout(s->sessions_gone.async_wait(),
                                  streams_ride ? grace : std::min<std::chrono::milliseconds>(grace, 5s),
                                  error::service_unavailable, "");
        } catch (const std::exception&) {
        }
        for (auto& [id, session] : s->sessions)
            session->conn.close();
    }
    if (!s->relays.empty()) {
        s->relays_gone.reset();
        try {
            co_await with_timeout(s->relays_gone.async_wait(), grace, error::service_unavailable, "");
        } catch (const std::exception&) {
        }
        for (auto& [id, close] : s->relays)
            close();
    }
    log::info("engine stopped");
}

// --- connections ---

asio::awaitable<void> engine::state::accept_loop() {
    auto self = shared_from_this();
    while (!stopping) {
        boost::system::error_code ec;
        asio::ip::tcp::socket socket(ex);
        co_await acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            if (stopping || ec == asio::error::operation_aborted)
                co_return;
            // Out of descriptors or a transient error: do not spin.
            log::warn("accept failed", {{"error", ec.message()}});
            asio::steady_timer t(ex, 100ms);
            co_await t.async_wait(asio::use_awaitable);
            continue;
        }
        asio::co_spawn(ex, handle_connection(std::move(socket)), asio::detached);
    }
}

namespace detail {

/// The ClientHello bytes read so far (fed to OpenSSL afterwards) and what they say.
struct peeked_hello {
    std::vector<std::uint8_t> bytes;
    client_hello_info info;
};

/// Reads until a whole ClientHello is there. nullopt (logged) when it is not TLS.
inline asio::awaitable<std::optional<peeked_hello>> read_hello(asio::ip::tcp::socket& socket, const std::string& peer) {
    peeked_hello hello;
    hello.bytes.reserve(1024);
    hello_result parsed;
    for (;;) {
        std::uint8_t chunk[4096];
        boost::system::error_code ec;
        std::size_t n =
            co_await socket.async_read_some(asio::buffer(chunk), asio::redirect_error(asio::use_awaitable, ec));
        if (ec)
            co_return std::nullopt;
        hello.bytes.insert(hello.bytes.end(), chunk, chunk + n);
        parsed = parse_client_hello(hello.bytes);
        if (parsed.status != hello_status::need_more)
            break;
    }
    if (parsed.status != hello_status::complete) {
        log::info("connection refused: not a TLS ClientHello",
                  {{"peer", peer}, {"reason", parsed.status == hello_status::not_tls     ? "not TLS"
                                              : parsed.status == hello_status::too_large ? "ClientHello too large"
                                                                                         : "malformed ClientHello"}});
        co_return std::nullopt;
    }
    hello.info = std::move(parsed.info);
    co_return hello;
}

/// Agent connections: TLS handshake (ALPN rstrm/1) and the first frame.
inline asio::awaitable<std::optional<accepted>> agent_handshake(std::shared_ptr<SSL_CTX> ctx,
                                                                asio::ip::tcp::socket& socket,
                                                                std::vector<std::uint8_t> hello) {
    transport::tls_stream conn(std::move(socket), ctx.get(), transport::tls_role::server);
    conn.prefeed(hello);
    co_await conn.async_handshake();
    protocol::Message first;
    co_await framing::async_read_message(conn, first);
    auto cert = client_certificate::of(conn.native_handle());
    co_return accepted{make_agent_stream(std::move(conn)), std::move(first), std::move(cert)};
}

} // namespace detail

asio::awaitable<void> engine::state::handle_connection(asio::ip::tcp::socket socket) {
    auto self = shared_from_this();
    auto deadline = clock::now() + cfg.handshake_timeout;
    boost::system::error_code ec;
    auto remote = socket.remote_endpoint(ec);
    asio::ip::address peer = ec ? asio::ip::address() : remote.address();
    socket.set_option(asio::ip::tcp::no_delay(true), ec);
    std::optional<accepted> a;
    try {
        auto hello = co_await with_timeout(detail::read_hello(socket, peer_text(peer)), cfg.handshake_timeout,
                                           error::handshake_timeout, "");
        if (!hello)
            co_return;
        const auto& sni = hello->info.server_name;
        const std::string tunnel_suffix = ".t." + cfg.host;
        if (sni.size() > tunnel_suffix.size() && sni.ends_with(tunnel_suffix)) {
            co_await handle_published(std::move(socket), std::move(hello->bytes), sni, hello->info.alpn, peer,
                                      deadline);
            co_return;
        }
        bool engine_name = sni.empty() || sni == cfg.host;
        bool wants_agent = std::find(hello->info.alpn.begin(), hello->info.alpn.end(), transport::agent_alpn) !=
                           hello->info.alpn.end();
        if (!engine_name || !wants_agent) {
            // The engine's own HTTP API is not served yet; unknown names get nothing.
            log::info("connection refused: no route", {{"peer", peer_text(peer)},
                                                       {"sni", sni},
                                                       {"alpn", hello->info.alpn.empty() ? "" : hello->info.alpn.front()}});
            co_return;
        }
        auto left = std::max<clock::duration>(deadline - clock::now(), clock::duration::zero());
        a = co_await with_timeout(detail::agent_handshake(agent_ctx, socket, std::move(hello->bytes)), left,
                                  error::handshake_timeout, "");
    } catch (const error_with_message& e) {
        log::info("connection closed before its first frame",
                  {{"peer", peer_text(peer)},
                   {"reason", e.code() == error::handshake_timeout ? std::string("deadline passed") : describe(e)}});
        co_return;
    } catch (const std::exception& e) {
        log::info("connection closed before its first frame", {{"peer", peer_text(peer)}, {"reason", describe(e)}});
        co_return;
    }
    if (!a)
        co_return;
    co_await handle_agent(std::move(a->conn), std::move(a->first), peer, std::move(a->cert));
}

asio::awaitable<void> engine::state::serve_agent_stream(agent_stream conn, asio::ip::address peer) {
    auto self = shared_from_this();
    protocol::Message first;
    try {
        co_await with_timeout(framing::async_read_message(conn, first), cfg.handshake_timeout,
                              error::handshake_timeout, "");
    } catch (const error_with_message& e) {
        log::info("connection closed before its first frame",
                  {{"peer", peer_text(peer)},
                   {"reason", e.code() == error::handshake_timeout ? std::string("deadline passed") : describe(e)}});
        co_return;
    } catch (const std::exception& e) {
        log::info("connection closed before its first frame", {{"peer", peer_text(peer)}, {"reason", describe(e)}});
        co_return;
    }
    co_await handle_agent(std::move(conn), std::move(first), peer, client_certificate{});
}

asio::awaitable<void> engine::state::handle_agent(agent_stream conn, protocol::Message m, asio::ip::address peer,
                                                  client_certificate cert) {
    auto self = shared_from_this();
    switch (m.payload_case()) {
    case protocol::Message::kOpenControlChannelReq: {
        identity who;
        std::string why;
        auto aec = authenticate(m.open_control_channel_req().client_details(), cert, who, why);
        if (!aec && stopping) {
            aec = error::service_unavailable;
            why = "engine shutting down";
        }
        if (aec) {
            log::info("control channel refused", {{"peer", peer_text(peer)}, {"reason", why}});
            protocol::Message rsp;
            *rsp.mutable_open_control_channel_rsp()->mutable_error() =
                framing::make_error(static_cast<error>(aec.value()), why);
            try {
                co_await framing::async_write_message(conn, rsp);
                co_await conn.async_shutdown_send();
            } catch (const std::exception&) {
            }
            co_return;
        }
        auto id = next_id++;
        auto session = std::make_shared<agent_session>(self, id, std::move(conn), std::move(who), peer);
        sessions[id] = session;
        co_await session->run(m.open_control_channel_req());
        co_return;
    }
    case protocol::Message::kProxyReq:
        co_await handle_proxy_req(std::move(conn), m.proxy_req());
        co_return;
    case protocol::Message::kStreamReq:
        co_await handle_stream_req(std::move(conn), m.stream_req(), peer, cert);
        co_return;
    default:
        log::info("connection refused: bad first frame",
                  {{"peer", peer_text(peer)}, {"frame", std::string(framing::payload_name(m))}});
        co_return;
    }
}

boost::system::error_code engine::state::authenticate(const protocol::ClientDetails& details,
                                                      const client_certificate& peer_cert, identity& who,
                                                      std::string& why) {
    if (!details.has_protocol_version() || details.protocol_version().value().empty()) {
        why = "the client did not send its protocol version (client_details.protocol_version)";
        return error::protocol_version_missing;
    }
    int major = 0;
    if (!parse_version(details.protocol_version().value(), major)) {
        why = "protocol version '" + details.protocol_version().value() + "' is not MAJOR.MINOR.PATCH";
        return error::protocol_version_invalid;
    }
    if (major != 1) {
        why = "protocol version " + details.protocol_version().value() + " is not served; this engine speaks " +
              RSTREAM_PROTOCOL_VERSION;
        return error::protocol_version_incompatible;
    }
    X509* cert = peer_cert.cert.get();
    bool has_token = details.has_token() && !details.token().value().empty();
    if (has_token && cert) {
        why = "authentication conflict: both a token and a client certificate were presented; use one";
        return error::unauthorized;
    }
    if (cert) {
        long v = peer_cert.verify_result;
        if (v != X509_V_OK) {
            why = std::string("client certificate refused: ") + X509_verify_cert_error_string(v);
            return error::unauthorized;
        }
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        X509_digest(cert, EVP_sha256(), md, &len);
        std::string hex;
        for (unsigned i = 0; i < len; ++i) {
            char b[3];
            std::snprintf(b, sizeof b, "%02x", md[i]);
            hex += b;
        }
        char cn[256] = {0};
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        who.subject = cn;
        who.credential = "cert:" + hex;
        who.scopes = admin_claims(who.subject).tunnels;
        return {};
    }
    if (!has_token) {
        why = "no credentials: send a token (--token / RSTREAM_AUTHENTICATION_TOKEN) or a client certificate";
        return error::unauthorized;
    }
    std::string reason;
    auto claims = verify_token(details.token().value(), creds.jwt_secret, std::chrono::system_clock::now(), &reason);
    if (!claims) {
        why = "token refused: " + reason;
        return error::unauthorized;
    }
    who.subject = claims->subject;
    who.credential = "token:" + (claims->id.empty() ? claims->subject : claims->id);
    who.scopes = claims->tunnels;
    return {};
}

asio::awaitable<void> engine::state::handle_proxy_req(agent_stream conn, protocol::ProxyReq req) {
    bool zero_rtt = !req.has_zero_rtt() || req.zero_rtt().value();
    auto it = pending.find(req.stream_id());
    std::string secret = req.client_details().has_token() ? req.client_details().token().value() : "";
    if (it == pending.end() || !constant_time_equal(it->second->secret, secret) || it->second->agent_side) {
        log::warn("stream connection refused: unknown stream or wrong secret", {{"stream", req.stream_id()}});
        if (!zero_rtt) {
            protocol::Message rsp;
            *rsp.mutable_proxy_rsp()->mutable_error() =
                framing::make_error(error::invalid_stream, "unknown stream id or wrong secret");
            try {
                co_await framing::async_write_message(conn, rsp);
            } catch (const std::exception&) {
            }
        }
        co_return;
    }
    if (!zero_rtt) {
        protocol::Message rsp;
        rsp.mutable_proxy_rsp();
        try {
            co_await framing::async_write_message(conn, rsp);
        } catch (const std::exception&) {
            co_return;
        }
    }
    auto p = it->second;
    p->agent_side.emplace(std::move(conn));
    p->ready.set();
}

namespace detail {
/// Answers a refused dial: StreamRsp{error} without zero_rtt; a plain close with it.
inline asio::awaitable<void> refuse_dial(agent_stream& conn, bool zero_rtt, asio::ip::address peer,
                                         std::string target, error code, std::string why) {
    log::info("dial refused", {{"peer", peer_text(peer)}, {"tunnel", target}, {"reason", why}});
    if (!zero_rtt) {
        protocol::Message rsp;
        *rsp.mutable_stream_rsp()->mutable_error() = framing::make_error(code, why);
        try {
            co_await framing::async_write_message(conn, rsp);
            co_await conn.async_shutdown_send();
        } catch (const std::exception&) {
        }
    }
}
} // namespace detail

asio::awaitable<void> engine::state::handle_stream_req(agent_stream conn, protocol::StreamReq req,
                                                       asio::ip::address peer, const client_certificate& cert) {
    auto self = shared_from_this();
    bool zero_rtt = !req.has_zero_rtt() || req.zero_rtt().value();
    const std::string& target = req.tunnel_id_name();
    identity who;
    std::string why;
    if (auto ec = authenticate(req.client_details(), cert, who, why)) {
        co_await detail::refuse_dial(conn, zero_rtt, peer, target, static_cast<error>(ec.value()), why);
        co_return;
    }
    if (req.has_datagram_channel() && req.datagram_channel().value()) {
        co_await detail::refuse_dial(conn, zero_rtt, peer, target, error::feature_not_available, "datagram channels are not available on this engine yet");
        co_return;
    }
    const tunnel_entry* entry = tunnels.find(target);
    std::string scope_name = entry && !entry->name.empty() ? entry->name : lowercase(target);
    if (!who.scopes.may_connect(scope_name)) {
        co_await detail::refuse_dial(conn, zero_rtt, peer, target, error::unauthorized, "not allowed to connect to '" + target + "'");
        co_return;
    }
    if (!entry) {
        co_await detail::refuse_dial(conn, zero_rtt, peer, target, error::tunnel_not_found, "tunnel '" + target + "' not found");
        co_return;
    }
    std::optional<agent_stream> agent;
    error refusal = error::service_unavailable;
    std::string stream_id;
    try {
        agent.emplace(co_await open_agent_stream(entry->id, peer, &stream_id));
    } catch (const error_with_message& e) {
        refusal = e.code().category() == rstream_category() ? static_cast<error>(e.code().value())
                                                             : error::service_unavailable;
        why = e.what();
    }
    if (!agent) {
        co_await detail::refuse_dial(conn, zero_rtt, peer, target, refusal, "tunnel '" + target + "': " + why);
        co_return;
    }
    if (!zero_rtt) {
        protocol::Message rsp;
        rsp.mutable_stream_rsp()->set_stream_id(stream_id);
        try {
            co_await framing::async_write_message(conn, rsp);
        } catch (const std::exception&) {
            co_return;
        }
    }
    splice(std::move(conn), std::move(*agent), "dial", target);
}

asio::awaitable<agent_stream> engine::state::open_agent_stream(std::string tunnel_id,
                                                                         asio::ip::address source,
                                                                         std::string* stream_id_out) {
    auto self = shared_from_this();
    const tunnel_entry* entry = tunnels.find_by_id(tunnel_id);
    auto owner = entry ? sessions.find(entry->session) : sessions.end();
    if (!entry || owner == sessions.end())
        throw_error(error::tunnel_not_found, "the tunnel is offline: no agent is connected");
    if (stopping)
        throw_error(error::capacity_exhausted, "the engine is shutting down; retry later");
    std::string stream_id = random_hex(16);
    if (auto& session = owner->second; session->mux) {
        // mux/1: the stream is opened on the agent's connection, no round trip; an agent that
        // cannot take it resets it, which its user reads as a reset.
        protocol::ProxyConnReq pc;
        pc.set_tunnel_id(tunnel_id);
        pc.set_stream_id(stream_id);
        framing::to_protocol(source.is_unspecified() ? asio::ip::address(asio::ip::address_v4::loopback()) : source,
                             *pc.mutable_source_ip());
        if (stream_id_out)
            *stream_id_out = stream_id;
        co_return session->mux->open(pc.SerializeAsString());
    }
    if (pending.size() >= cfg.max_pending_streams)
        throw_error(error::capacity_exhausted, "too many streams being opened; retry later");
    auto p = std::make_shared<pending_stream>(ex);
    p->secret = random_hex(32);
    p->tunnel_id = tunnel_id;
    p->session = entry->session;
    pending[stream_id] = p;
    if (stream_id_out)
        *stream_id_out = stream_id;
    protocol::Message ask;
    auto* pc = ask.mutable_proxy_conn_req();
    pc->set_tunnel_id(tunnel_id);
    pc->set_stream_id(stream_id);
    pc->mutable_secret()->set_value(p->secret);
    framing::to_protocol(source.is_unspecified() ? asio::ip::address(asio::ip::address_v4::loopback()) : source,
                         *pc->mutable_source_ip());
    owner->second->send(ask);
    try {
        co_await with_timeout(p->ready.async_wait(), cfg.stream_connect_timeout, error::service_unavailable, "");
    } catch (const std::exception&) {
        if (p->why.empty())
            p->why = "the agent did not open the stream in time";
    }
    pending.erase(stream_id);
    if (!p->agent_side)
        throw_error(error::service_unavailable, p->why.empty() ? std::string("the agent went away") : p->why);
    co_return std::move(*p->agent_side);
}

template <class A, class B>
void engine::state::splice(A a, B b, std::string what, std::string tunnel) {
    // The streams and their entry in `relays` live as long as the relay's completion handler:
    // if the relay never completes (the io_context goes first), its entry goes with it.
    struct spliced {
        std::shared_ptr<state> owner;
        std::uint64_t id;
        A a;
        B b;
        std::string what;
        std::string tunnel;
        ~spliced() {
            owner->relays.erase(id);
            if (owner->relays.empty())
                owner->relays_gone.set();
        }
    };
    auto s = std::unique_ptr<spliced>(
        new spliced{shared_from_this(), next_id++, std::move(a), std::move(b), std::move(what), std::move(tunnel)});
    auto* p = s.get();
    relays[p->id] = [p] {
        rstream::detail::close_stream(p->a);
        rstream::detail::close_stream(p->b);
    };
    async_relay(p->a, p->b, rstream::detail::pooled_relay_buffer, {}, {}, [s = std::move(s)](relay_result moved) {
        log::info("stream closed", {{"kind", s->what},
                                    {"tunnel", s->tunnel},
                                    {"bytes_in", std::to_string(moved.a_to_b)},
                                    {"bytes_out", std::to_string(moved.b_to_a)}});
    });
}

void engine::state::fail_pending_of(std::uint64_t session, const std::string& why) {
    for (auto& [id, p] : pending) {
        if (p->session == session && !p->agent_side) {
            p->why = why;
            p->ready.set();
        }
    }
}

void engine::state::session_ended(std::uint64_t id) {
    sessions.erase(id);
    fail_pending_of(id, "the agent went away");
    if (sessions.empty())
        sessions_gone.set();
}

} // namespace rstream::edge
