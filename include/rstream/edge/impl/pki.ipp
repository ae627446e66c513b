#pragma once

#include <rstream/core/error.hpp>
#include <rstream/edge/pki.hpp>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string_view>

namespace rstream::edge {
namespace pki_detail {

template <auto Free>
struct openssl_deleter {
    template <class T>
    void operator()(T* p) const noexcept { Free(p); }
};
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO_free_all>>;
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY_free>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BN_free>>;
using extension_ptr = std::unique_ptr<X509_EXTENSION, openssl_deleter<X509_EXTENSION_free>>;
using general_name_ptr = std::unique_ptr<GENERAL_NAME, openssl_deleter<GENERAL_NAME_free>>;
using general_names_ptr = std::unique_ptr<GENERAL_NAMES, openssl_deleter<GENERAL_NAMES_free>>;

constexpr int ca_days = 3650;
// The longest lifetime browsers accept for a server certificate (CA/B Forum, 2018).
constexpr int leaf_days = 825;
constexpr std::time_t renew_before_seconds = 30 * 24 * 3600;

/// Drains OpenSSL's error queue into one line.
inline std::string openssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        out += out.empty() ? "" : "; ";
        out += buf;
    }
    return out;
}

[[noreturn]] inline void fail_openssl(const std::string& what) {
    const std::string detail = openssl_errors();
    throw_error(error::internal, detail.empty() ? what : what + " (" + detail + ")");
}

[[noreturn]] inline void fail_system(int err, const std::string& what) {
    const boost::system::error_code ec(err, boost::system::system_category());
    throw_error(ec, what + ": " + ec.message());
}

inline bool file_exists(const std::string& path) {
    std::error_code ec;
    const bool exists = std::filesystem::exists(path, ec);
    if (ec) fail_system(ec.value(), "cannot access " + path);
    return exists;
}

inline std::string read_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail_system(errno, "cannot read " + path);
    std::string out;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            fail_system(err, "cannot read " + path);
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

/// Writes through a temporary file renamed into place, so a crash never leaves half a key;
/// the file is created with `mode` (never chmod-ed later, so a key is never readable by others).
inline void write_file(const std::string& path, std::string_view content, mode_t mode) {
    const std::string tmp = path + ".tmp";
    ::unlink(tmp.c_str()); // left over by an interrupted write
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) fail_system(errno, "cannot create " + path);
    auto fail = [&](int err) {
        ::close(fd);
        ::unlink(tmp.c_str());
        fail_system(err, "cannot write " + path);
    };
    while (!content.empty()) {
        const ssize_t n = ::write(fd, content.data(), content.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(errno);
        content.remove_prefix(static_cast<std::size_t>(n));
    }
    if (::fsync(fd) != 0) fail(errno);
    if (::close(fd) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        fail_system(err, "cannot write " + path);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        fail_system(err, "cannot write " + path);
    }
}

inline bio_ptr memory_bio(const std::string& data) {
    bio_ptr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    if (!bio) fail_openssl("out of memory");
    return bio;
}

inline std::string bio_contents(BIO* bio) {
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(size));
}

[[noreturn]] inline void fail_corrupt(const std::string& path, const char* what, std::string_view hint) {
    std::string message = path + ": " + what;
    if (const std::string detail = openssl_errors(); !detail.empty()) message += " (" + detail + ")";
    if (!hint.empty()) message += "; " + std::string(hint);
    throw_error(error::invalid_configuration, std::move(message));
}

inline x509_ptr load_certificate(const std::string& path, std::string_view hint = {}) {
    const std::string pem = read_file(path);
    const bio_ptr bio = memory_bio(pem);
    x509_ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) fail_corrupt(path, "not a PEM certificate", hint);
    return cert;
}

inline pkey_ptr load_private_key(const std::string& path, std::string_view hint = {}) {
    const std::string pem = read_file(path);
    const bio_ptr bio = memory_bio(pem);
    pkey_ptr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) fail_corrupt(path, "not an unencrypted PEM private key", hint);
    return key;
}

inline pkey_ptr new_p256_key() {
    pkey_ptr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (!key) fail_openssl("cannot generate a P-256 key");
    return key;
}

inline bool is_ip_literal(const std::string& text) {
    unsigned char buf[sizeof(struct in6_addr)];
    return ::inet_pton(AF_INET, text.c_str(), buf) == 1 || ::inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

// Letters, digits, '-' and '.', optionally behind one leading "*." (RFC 1123, RFC 6125 §6.4.3).
inline bool is_dns_name(std::string_view name) {
    if (name.starts_with("*.")) name.remove_prefix(2);
    if (name.empty() || name.size() > 253 || name.front() == '.' || name.back() == '.') return false;
    for (const char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
            || c == '-' || c == '.';
        if (!ok) return false;
    }
    return name.find("..") == std::string_view::npos;
}

inline bool covers(X509* cert, const std::string& name) {
    const int r = is_ip_literal(name)
        ? X509_check_ip_asc(cert, name.c_str(), 0)
        : X509_check_host(cert, name.data(), name.size(), X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr);
    ERR_clear_error();
    return r == 1;
}

/// A version 3 certificate for `key` with a random positive 16-byte serial, valid from an
/// hour ago (clocks of other machines run a little behind) for `days`.
inline x509_ptr new_certificate(EVP_PKEY* key, const std::string& common_name, int days) {
    x509_ptr cert(X509_new());
    if (!cert) fail_openssl("out of memory");
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1) fail_openssl("cannot draw a certificate serial");
    serial[0] = static_cast<unsigned char>((serial[0] & 0x7f) | 0x01);
    const bignum_ptr bn(BN_bin2bn(serial, sizeof serial, nullptr));
    X509_NAME* subject = X509_get_subject_name(cert.get());
    const auto* cn = reinterpret_cast<const unsigned char*>(common_name.c_str());
    if (X509_set_version(cert.get(), X509_VERSION_3) != 1 || !bn
        || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()))
        || !X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600)
        || !X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr)
        || X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8,
               reinterpret_cast<const unsigned char*>("rstream"), -1, -1, 0) != 1
        || X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, cn, -1, -1, 0) != 1
        || X509_set_pubkey(cert.get(), key) != 1)
        fail_openssl("cannot build a certificate for '" + common_name + "'");
    return cert;
}

/// Adds an extension in openssl.cnf syntax; `issuer` supplies authorityKeyIdentifier.
inline void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx{};
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    const extension_ptr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
        fail_openssl(std::string("cannot add certificate extension ") + OBJ_nid2sn(nid));
}

// Built from GENERAL_NAME objects rather than a "DNS:a,IP:b" string, so a name can never
// smuggle in another entry.
inline void add_subject_alt_names(
    X509* cert, const std::vector<std::string>& dns_names, const std::vector<std::string>& ips) {
    const general_names_ptr names(sk_GENERAL_NAME_new_null());
    if (!names) fail_openssl("out of memory");
    auto push = [&](int type, ASN1_STRING* value) {
        general_name_ptr name(GENERAL_NAME_new());
        if (!name) {
            ASN1_STRING_free(value);
            fail_openssl("out of memory");
        }
        GENERAL_NAME_set0_value(name.get(), type, value);
        if (sk_GENERAL_NAME_push(names.get(), name.get()) == 0) fail_openssl("out of memory");
        name.release();
    };
    for (const std::string& dns : dns_names) {
        if (!is_dns_name(dns))
            throw_error(error::invalid_configuration, "'" + dns + "' is not a valid DNS name for a certificate");
        ASN1_IA5STRING* value = ASN1_IA5STRING_new();
        if (!value || ASN1_STRING_set(value, dns.data(), static_cast<int>(dns.size())) != 1) {
            ASN1_STRING_free(value);
            fail_openssl("out of memory");
        }
        push(GEN_DNS, value);
    }
    for (const std::string& ip : ips) {
        ASN1_OCTET_STRING* value = is_ip_literal(ip) ? a2i_IPADDRESS(ip.c_str()) : nullptr;
        if (!value)
            throw_error(error::invalid_configuration, "'" + ip + "' is not an IP address for a certificate");
        push(GEN_IPADD, value);
    }
    if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1)
        fail_openssl("cannot add subjectAltName");
}

inline std::string private_key_pem(EVP_PKEY* key) {
    const bio_ptr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        fail_openssl("cannot encode a private key");
    return bio_contents(bio.get());
}

inline std::string certificate_pem(X509* cert) {
    const bio_ptr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) fail_openssl("cannot encode a certificate");
    return bio_contents(bio.get());
}

/// Signs `cert` with the CA and writes the key (0600) then the certificate (0644): a crash
/// in between leaves a certificate missing, which the next start regenerates.
inline void sign_and_write(X509* cert, EVP_PKEY* key, EVP_PKEY* ca_key,
                           const std::string& cert_path, const std::string& key_path) {
    if (X509_sign(cert, ca_key, EVP_sha256()) <= 0) fail_openssl("cannot sign the certificate for " + cert_path);
    write_file(key_path, private_key_pem(key), 0600);
    write_file(cert_path, certificate_pem(cert), 0644);
}

/// Issues a leaf certificate signed by the CA; `usage` is its extendedKeyUsage.
inline void issue_leaf(const std::string& ca_cert_path, const std::string& ca_key_path,
                       const std::string& cert_path, const std::string& key_path,
                       const std::string& common_name, const char* usage,
                       const std::vector<std::string>& dns_names, const std::vector<std::string>& ips) {
    const x509_ptr ca = load_certificate(ca_cert_path);
    const pkey_ptr ca_key = load_private_key(ca_key_path);
    if (X509_check_private_key(ca.get(), ca_key.get()) != 1) {
        ERR_clear_error();
        throw_error(error::invalid_configuration, ca_key_path + ": key does not belong to " + ca_cert_path);
    }
    const pkey_ptr key = new_p256_key();
    const x509_ptr cert = new_certificate(key.get(), common_name, leaf_days);
    if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get())) != 1)
        fail_openssl("cannot set the certificate issuer");
    add_extension(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature");
    add_extension(cert.get(), ca.get(), NID_ext_key_usage, usage);
    add_extension(cert.get(), ca.get(), NID_subject_key_identifier, "hash");
    add_extension(cert.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
    if (!dns_names.empty() || !ips.empty()) add_subject_alt_names(cert.get(), dns_names, ips);
    sign_and_write(cert.get(), key.get(), ca_key.get(), cert_path, key_path);
}

} // namespace pki_detail

RSTREAM_DECL void generate_ca(
    const std::string& cert_path, const std::string& key_path, const std::string& common_name) {
    using namespace pki_detail;
    const pkey_ptr key = new_p256_key();
    const x509_ptr cert = new_certificate(key.get(), common_name, ca_days);
    if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1)
        fail_openssl("cannot set the certificate issuer");
    add_extension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    add_extension(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
    sign_and_write(cert.get(), key.get(), key.get(), cert_path, key_path);
}

RSTREAM_DECL void generate_server_certificate(
    const std::string& ca_cert_path, const std::string& ca_key_path,
    const std::string& cert_path, const std::string& key_path,
    const std::vector<std::string>& dns_names, const std::vector<std::string>& ip_addresses) {
    if (dns_names.empty() && ip_addresses.empty())
        throw_error(error::invalid_configuration, cert_path + ": a server certificate needs a DNS name or an IP address");
    // A CN is at most 64 characters (RFC 5280 ub-common-name); clients only read the SANs.
    std::string common_name = dns_names.empty() ? ip_addresses.front() : dns_names.front();
    if (common_name.size() > 64) common_name = "rstream-engine";
    pki_detail::issue_leaf(ca_cert_path, ca_key_path, cert_path, key_path, common_name, "serverAuth",
                           dns_names, ip_addresses);
}

RSTREAM_DECL void generate_client_certificate(
    const std::string& ca_cert_path, const std::string& ca_key_path,
    const std::string& cert_path, const std::string& key_path, const std::string& common_name) {
    pki_detail::issue_leaf(ca_cert_path, ca_key_path, cert_path, key_path, common_name, "clientAuth", {}, {});
}

RSTREAM_DECL bool certificate_covers(const std::string& cert_path, const std::string& dns_name) {
    const pki_detail::x509_ptr cert = pki_detail::load_certificate(cert_path);
    return pki_detail::covers(cert.get(), dns_name);
}

RSTREAM_DECL std::string read_secret_file(const std::string& path) {
    std::string text = pki_detail::read_file(path);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' || text.back() == '\t'))
        text.pop_back();
    if (text.empty())
        throw_error(error::invalid_configuration, path + ": file is empty; write a secret into it or delete it");
    return text;
}

} // namespace rstream::edge
