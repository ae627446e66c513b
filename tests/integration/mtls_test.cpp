// Agents authenticated by a client certificate instead of a token.
#include "fixture.hpp"

using namespace rstream;
using namespace rstream::test;

namespace {
/// A client certificate signed by the CA of `files`, written next to it.
std::pair<std::string, std::string> client_certificate(const engine_files& files, const std::string& cn) {
    auto cert = (files.dir / (cn + ".pem")).string();
    auto key = (files.dir / (cn + ".key")).string();
    edge::generate_client_certificate(files.files.ca_cert, files.files.ca_key, cert, key, cn);
    return {cert, key};
}
} // namespace

TEST_CASE("an agent with a client certificate signed by the configured CA is accepted") {
    engine_files files;
    engine_files stranger;  // another CA
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        auto creds = files.credentials();
        creds.mtls_ca_file = files.files.ca_cert;
        edge::engine engine(ioc.get_executor(), engine_config_on(port), creds);
        engine.start();

        auto [cert, key] = client_certificate(files, "box-1");
        auto cfg = files.client(port);
        cfg.token.clear();
        cfg.mtls_cert_file = cert;
        cfg.mtls_key_file = key;
        client agent(ioc.get_executor(), {.config = cfg});
        auto ctrl = co_await agent.async_connect();
        auto t = co_await ctrl.async_create_tunnel(named("mtls-box"));
        CHECK(t.properties().name == "mtls-box");
        co_await ctrl.async_close();

        // A certificate from a CA the engine does not trust gets UNAUTHORIZED with a reason.
        auto [bad_cert, bad_key] = client_certificate(stranger, "intruder");
        auto bad = cfg;
        bad.mtls_cert_file = bad_cert;
        bad.mtls_key_file = bad_key;
        client intruder(ioc.get_executor(), {.config = bad});
        bool refused = false;
        try {
            co_await intruder.async_connect();
        } catch (const error_with_message& e) {
            refused = e.code() == error::unauthorized &&
                      std::string(e.what()).find("client certificate refused") != std::string::npos;
            INFO(e.what());
        }
        CHECK(refused);

        // A token and a certificate at once are refused (never both).
        auto both = cfg;
        both.token = files.admin_token;
        client confused(ioc.get_executor(), {.config = both});
        bool conflict = false;
        try {
            co_await confused.async_connect();
        } catch (const error_with_message& e) {
            conflict = e.code() == error::unauthorized &&
                       std::string(e.what()).find("authentication conflict") != std::string::npos;
            INFO(e.what());
        }
        CHECK(conflict);
        co_await engine.async_shutdown();
    });
}

TEST_CASE("an engine without an agent CA refuses client certificates it did not ask for") {
    engine_files files;
    run_scenario([&](asio::io_context& ioc) -> asio::awaitable<void> {
        auto port = free_port();
        edge::engine engine(ioc.get_executor(), engine_config_on(port), files.credentials());
        engine.start();
        auto [cert, key] = client_certificate(files, "box-2");
        auto cfg = files.client(port);
        cfg.token.clear();
        cfg.mtls_cert_file = cert;
        cfg.mtls_key_file = key;
        client agent(ioc.get_executor(), {.config = cfg});
        bool refused = false;
        try {
            co_await agent.async_connect();
        } catch (const error_with_message& e) {
            refused = e.code() == error::unauthorized;
            INFO(e.what());
        }
        CHECK(refused);
        co_await engine.async_shutdown();
    });
}
