// ensure_state: the engine's state directory for embedded defaults (declared in pki.hpp).
#pragma once

#include <rstream/edge/impl/pki.ipp>

namespace rstream::edge {
namespace pki_detail {

inline void make_state_dir(std::string dir) {
    if (dir.empty())
        throw_error(error::invalid_configuration, "engine state directory is not set; set engine.state_dir");
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    const std::filesystem::path path(dir);
    // Parents get the usual mode; only the last component holds secrets and is made 0700.
    std::error_code ignored;
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ignored);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        const boost::system::error_code ec(errno, boost::system::system_category());
        throw_error(ec, "cannot create state directory " + dir + ": " + ec.message()
                            + "; make its parent writable or set engine.state_dir to another directory");
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw_error(error::invalid_configuration,
                    "state directory " + dir + " is not a directory; set engine.state_dir to another path");
}

/// True if the server certificate in `files` can be kept: it parses, matches its key, is
/// signed by the CA, covers the engine host and its tunnels, and does not expire soon.
inline bool server_certificate_fits(const state_files& files, X509* ca, const std::string& engine_host) {
    if (!file_exists(files.server_cert) || !file_exists(files.server_key)) return false;
    constexpr std::string_view hint = "delete server.pem and server.key to have them generated again";
    const x509_ptr cert = load_certificate(files.server_cert, hint);
    const pkey_ptr key = load_private_key(files.server_key, hint);
    EVP_PKEY* ca_public_key = X509_get0_pubkey(ca);
    const bool fits = X509_check_private_key(cert.get(), key.get()) == 1
        && ca_public_key != nullptr && X509_verify(cert.get(), ca_public_key) == 1
        && covers(cert.get(), engine_host) && covers(cert.get(), "tunnel.t." + engine_host);
    ERR_clear_error();
    if (!fits) return false;
    std::time_t renew_at = std::time(nullptr) + renew_before_seconds;
    return X509_cmp_time(X509_get0_notAfter(cert.get()), &renew_at) == 1;
}

/// A CA name unique to this installation, so two engines' CAs trusted on one machine stay
/// distinguishable in certificate stores.
inline std::string local_ca_name() {
    unsigned char id[4];
    if (RAND_bytes(id, sizeof id) != 1) fail_openssl("cannot draw random bytes");
    static constexpr char hex[] = "0123456789abcdef";
    std::string name = "rstream-engine local CA ";
    for (const unsigned char b : id) {
        name += hex[b >> 4];
        name += hex[b & 0x0f];
    }
    return name;
}

} // namespace pki_detail

RSTREAM_DECL state_files ensure_state(
    const std::string& dir,
    const std::string& engine_host,
    const std::function<std::string()>& make_secret,
    const std::function<std::string(const std::string& secret)>& make_admin_token) {
    using namespace pki_detail;
    if (!is_dns_name(engine_host) || engine_host.starts_with("*."))
        throw_error(error::invalid_configuration, "engine.host: '" + engine_host + "' is not a valid host name");
    make_state_dir(dir);

    state_files files;
    files.dir = dir;
    const auto in_dir = [&](const char* name) { return (std::filesystem::path(dir) / name).string(); };
    files.ca_cert = in_dir("ca.pem");
    files.ca_key = in_dir("ca.key");
    files.server_cert = in_dir("server.pem");
    files.server_key = in_dir("server.key");
    files.jwt_secret = in_dir("jwt.secret");
    files.admin_token = in_dir("admin.token");

    // The CA is what users trust: never replace an existing one behind their back. A new
    // CA invalidates the server certificate it did not sign.
    bool new_server_certificate = true;
    if (!file_exists(files.ca_cert)) {
        generate_ca(files.ca_cert, files.ca_key, local_ca_name());
        files.created = true;
    } else {
        const std::string hint =
            "restore ca.pem and ca.key from a backup, or delete both to generate a new CA "
            "(agents and browsers will then have to trust the new one)";
        if (!file_exists(files.ca_key))
            throw_error(error::invalid_configuration, files.ca_key + ": missing while ca.pem exists; " + hint);
        const x509_ptr ca = load_certificate(files.ca_cert, hint);
        const pkey_ptr ca_key = load_private_key(files.ca_key, hint);
        if (X509_check_private_key(ca.get(), ca_key.get()) != 1) {
            ERR_clear_error();
            throw_error(error::invalid_configuration, files.ca_key + ": does not belong to ca.pem; " + hint);
        }
        new_server_certificate = !server_certificate_fits(files, ca.get(), engine_host);
    }
    if (new_server_certificate) {
        std::vector<std::string> dns{"*.t." + engine_host};
        std::vector<std::string> ips{"127.0.0.1", "::1"};
        // An IP literal host must be an IP entry: clients never match it against DNS names.
        if (!is_ip_literal(engine_host)) dns.insert(dns.begin(), engine_host);
        else if (engine_host != "127.0.0.1" && engine_host != "::1") ips.push_back(engine_host);
        if (engine_host != "localhost") dns.emplace_back("localhost");
        generate_server_certificate(files.ca_cert, files.ca_key, files.server_cert, files.server_key, dns, ips);
        files.created = true;
    }

    bool new_secret = false;
    if (!file_exists(files.jwt_secret)) {
        const std::string secret = make_secret();
        if (secret.empty()) throw_error(error::internal, "the secret generator returned an empty secret");
        write_file(files.jwt_secret, secret + "\n", 0600);
        new_secret = true;
    }
    // A token signed with a secret that no longer exists would be useless: reissue it.
    if (new_secret || !file_exists(files.admin_token)) {
        const std::string token = make_admin_token(read_secret_file(files.jwt_secret));
        if (token.empty()) throw_error(error::internal, "the admin token generator returned an empty token");
        write_file(files.admin_token, token + "\n", 0600);
        files.created = true;
    }
    files.created = files.created || new_secret;
    return files;
}

} // namespace rstream::edge
