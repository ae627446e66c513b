// The engine's embedded-defaults PKI: generated CA, server and client certificates, and the
// state directory reused across restarts.
#include <rstream/core/error.hpp>
#include <rstream/edge/pki.hpp>

#include <catch2/catch.hpp>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

namespace {

namespace fs = std::filesystem;
using namespace rstream::edge;

/// A directory unique to one test, removed at the end.
struct temp_dir {
    fs::path path;
    temp_dir() {
        std::random_device rd;
        path = fs::temp_directory_path() / ("rstream-pki-test-" + std::to_string(rd()) + std::to_string(rd()));
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    std::string operator/(const char* name) const { return (path / name).string(); }
};

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

unsigned mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 0777;
}

std::string make_secret() { return "c2VjcmV0LXNlY3JldC1zZWNyZXQ"; }
std::string make_admin_token(const std::string& secret) { return "admin-token-for-" + secret; }

struct x509_deleter {
    void operator()(X509* x) const { X509_free(x); }
};
using x509_ptr = std::unique_ptr<X509, x509_deleter>;

x509_ptr load(const std::string& path) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "r"), &std::fclose);
    REQUIRE(f);
    x509_ptr cert(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
    REQUIRE(cert);
    return cert;
}

/// X509_verify_cert of `leaf` against a store holding only `ca`, for `purpose`: "ok" or
/// OpenSSL's reason.
std::string verify(const std::string& ca_path, const std::string& leaf_path, int purpose) {
    const x509_ptr ca = load(ca_path);
    const x509_ptr leaf = load(leaf_path);
    std::unique_ptr<X509_STORE, void (*)(X509_STORE*)> store(X509_STORE_new(), &X509_STORE_free);
    std::unique_ptr<X509_STORE_CTX, void (*)(X509_STORE_CTX*)> ctx(X509_STORE_CTX_new(), &X509_STORE_CTX_free);
    REQUIRE(X509_STORE_add_cert(store.get(), ca.get()) == 1);
    REQUIRE(X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr) == 1);
    X509_STORE_CTX_set_purpose(ctx.get(), purpose);
    X509_verify_cert(ctx.get());
    return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

} // namespace

TEST_CASE("first engine start creates the state directory with private keys and secrets") {
    temp_dir tmp;
    const std::string dir = tmp / "state";
    const state_files files = ensure_state(dir, "localhost", make_secret, make_admin_token);

    CHECK(files.created);
    CHECK(mode_of(dir) == 0700);
    for (const std::string& path : {files.ca_key, files.server_key, files.jwt_secret, files.admin_token}) {
        INFO(path);
        CHECK(mode_of(path) == 0600);
    }
    for (const std::string& path : {files.ca_cert, files.server_cert}) {
        INFO(path);
        CHECK((mode_of(path) & 0022) == 0); // nobody else may replace a certificate
    }
    CHECK(files.ca_cert == tmp / "state/ca.pem");
    CHECK(read_secret_file(files.jwt_secret) == make_secret());
    CHECK(read_secret_file(files.admin_token) == make_admin_token(make_secret()));
    CHECK_FALSE(fs::exists(dir + "/server.key.tmp"));
}

TEST_CASE("engine restart reuses the CA, certificate and secrets byte for byte") {
    temp_dir tmp;
    const std::string dir = tmp / "state";
    const state_files first = ensure_state(dir, "localhost", make_secret, make_admin_token);
    std::vector<std::string> before;
    for (const auto& p : {first.ca_cert, first.ca_key, first.server_cert, first.server_key, first.jwt_secret, first.admin_token})
        before.push_back(read_all(p));

    int secrets_made = 0;
    const state_files second = ensure_state(
        dir, "localhost", [&] { ++secrets_made; return std::string("other"); }, make_admin_token);

    CHECK_FALSE(second.created);
    CHECK(secrets_made == 0);
    std::vector<std::string> after;
    for (const auto& p : {second.ca_cert, second.ca_key, second.server_cert, second.server_key, second.jwt_secret, second.admin_token})
        after.push_back(read_all(p));
    CHECK(before == after);
}

TEST_CASE("generated server certificate verifies against the local CA and covers the engine names") {
    temp_dir tmp;
    const state_files files = ensure_state(tmp / "state", "localhost", make_secret, make_admin_token);

    CHECK(verify(files.ca_cert, files.server_cert, X509_PURPOSE_SSL_SERVER) == "ok");
    CHECK(certificate_covers(files.server_cert, "localhost"));
    CHECK(certificate_covers(files.server_cert, "api.t.localhost"));
    CHECK(certificate_covers(files.server_cert, "127.0.0.1"));
    CHECK(certificate_covers(files.server_cert, "::1"));
    CHECK_FALSE(certificate_covers(files.server_cert, "a.b.t.localhost")); // a wildcard is one label
    CHECK_FALSE(certificate_covers(files.server_cert, "example.com"));
}

TEST_CASE("changing the engine host regenerates only the server certificate") {
    temp_dir tmp;
    const std::string dir = tmp / "state";
    const state_files first = ensure_state(dir, "localhost", make_secret, make_admin_token);
    const std::string ca = read_all(first.ca_cert);
    const std::string token = read_all(first.admin_token);

    const state_files second = ensure_state(dir, "tunnels.example.com", make_secret, make_admin_token);

    CHECK(second.created);
    CHECK(read_all(second.ca_cert) == ca);
    CHECK(read_all(second.admin_token) == token);
    CHECK(certificate_covers(second.server_cert, "tunnels.example.com"));
    CHECK(certificate_covers(second.server_cert, "web.t.tunnels.example.com"));
    CHECK(certificate_covers(second.server_cert, "localhost"));
    CHECK(verify(second.ca_cert, second.server_cert, X509_PURPOSE_SSL_SERVER) == "ok");
}

TEST_CASE("a missing secret is regenerated together with the admin token it signs") {
    temp_dir tmp;
    const std::string dir = tmp / "state";
    const state_files first = ensure_state(dir, "localhost", make_secret, make_admin_token);
    const std::string server_cert = read_all(first.server_cert);
    fs::remove(first.jwt_secret);

    const state_files second = ensure_state(dir, "localhost", [] { return std::string("fresh"); }, make_admin_token);

    CHECK(second.created);
    CHECK(read_secret_file(second.jwt_secret) == "fresh");
    CHECK(read_secret_file(second.admin_token) == make_admin_token("fresh"));
    CHECK(read_all(second.server_cert) == server_cert);
}

TEST_CASE("a corrupt CA certificate is reported with the file and what to do") {
    temp_dir tmp;
    const std::string dir = tmp / "state";
    const state_files files = ensure_state(dir, "localhost", make_secret, make_admin_token);
    std::ofstream(files.ca_cert) << "not a certificate\n";

    try {
        ensure_state(dir, "localhost", make_secret, make_admin_token);
        FAIL("ensure_state accepted a corrupt ca.pem");
    } catch (const rstream::error_with_message& e) {
        CHECK(e.code() == rstream::error::invalid_configuration);
        CHECK_THAT(e.what(), Catch::Contains("ca.pem") && Catch::Contains("delete both"));
    }
}

TEST_CASE("a state directory that cannot be created is reported with its path") {
    temp_dir tmp;
    std::ofstream(tmp / "file") << "a file, not a directory\n";
    const std::string dir = tmp / "file/state";

    try {
        ensure_state(dir, "localhost", make_secret, make_admin_token);
        FAIL("ensure_state created a directory under a file");
    } catch (const rstream::error_with_message& e) {
        CHECK_THAT(e.what(), Catch::Contains(dir) && Catch::Contains("engine.state_dir"));
    }
}

TEST_CASE("client certificate for mTLS agent auth verifies for client authentication only") {
    temp_dir tmp;
    generate_ca(tmp / "ca.pem", tmp / "ca.key", "test CA");
    generate_client_certificate(tmp / "ca.pem", tmp / "ca.key", tmp / "agent.pem", tmp / "agent.key", "agent-7");

    CHECK(mode_of(tmp / "agent.key") == 0600);
    CHECK(verify(tmp / "ca.pem", tmp / "agent.pem", X509_PURPOSE_SSL_CLIENT) == "ok");
    CHECK(verify(tmp / "ca.pem", tmp / "agent.pem", X509_PURPOSE_SSL_SERVER) != "ok");
    const x509_ptr cert = load(tmp / "agent.pem");
    char cn[64] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn);
    CHECK(std::string(cn) == "agent-7");
}

TEST_CASE("server certificate with a name that is not a DNS name is refused") {
    temp_dir tmp;
    generate_ca(tmp / "ca.pem", tmp / "ca.key", "test CA");
    CHECK_THROWS_AS(generate_server_certificate(tmp / "ca.pem", tmp / "ca.key", tmp / "s.pem", tmp / "s.key",
                                                {"good.example,DNS:evil.example"}, {}),
                    rstream::error_with_message);
    CHECK_THROWS_AS(generate_server_certificate(tmp / "ca.pem", tmp / "ca.key", tmp / "s.pem", tmp / "s.key",
                                                {"ok.example"}, {"not-an-ip"}),
                    rstream::error_with_message);
}
