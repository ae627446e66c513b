#pragma once

// Reading and writing the agent config file (declared in client_config.hpp). yaml-cpp stays
// private to the compiled library: no public header includes it.

#include <rstream/core/error.hpp>
#include <rstream/transport/client_config.hpp>

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rstream::transport {
namespace detail {

// Walks the YAML tree and reports a misplaced key with its file, line and what was expected.
class config_reader {
public:
    explicit config_reader(const std::string& path) : path_(path) {}

    [[noreturn]] void fail(const YAML::Node& at, const std::string& what) const {
        auto mark = at.Mark();
        std::string where = mark.is_null() ? "" : ", line " + std::to_string(mark.line + 1);
        throw_error(error::invalid_configuration, "config file " + path_ + where + ": " + what);
    }

    // A map child that may be absent (returns a null node) but must be a map when present.
    YAML::Node map(const YAML::Node& parent, const char* key, const std::string& where) const {
        YAML::Node child = parent[key];
        if (child && !child.IsNull() && !child.IsMap())
            fail(child, "'" + where + key + "' must be a map");
        return child;
    }

    std::string scalar(const YAML::Node& parent, const char* key, const std::string& where) const {
        YAML::Node child = parent[key];
        if (!child || child.IsNull())
            return {};
        if (!child.IsScalar())
            fail(child, "'" + where + key + "' must be a string");
        return child.Scalar();
    }

    bool boolean(const YAML::Node& parent, const char* key, const std::string& where) const {
        YAML::Node child = parent[key];
        bool value = false;
        if (child && !child.IsNull() && !YAML::convert<bool>::decode(child, value))
            fail(child, "'" + where + key + "' must be true or false");
        return value;
    }

    context_entry context(const YAML::Node& node, const std::string& where) const {
        if (!node.IsMap())
            fail(node, "'" + where + "' must be a map with name and engine");
        context_entry c;
        c.name = scalar(node, "name", where + ".");
        if (c.name.empty())
            fail(node, "'" + where + "' has no name");
        const std::string at = "contexts[" + c.name + "].";
        c.engine = scalar(node, "engine", at);
        if (const auto auth = map(node, "auth", at); auth && auth.IsMap()) {
            // `token: {storage: {value: ...}}` is the public layout; a plain `token: ...` is accepted too.
            if (const YAML::Node token = auth["token"]; token && token.IsScalar()) {
                c.token = token.Scalar();
            } else if (const auto t = map(auth, "token", at + "auth."); t && t.IsMap()) {
                if (const auto storage = map(t, "storage", at + "auth.token."); storage && storage.IsMap())
                    c.token = scalar(storage, "value", at + "auth.token.storage.");
            }
            if (const auto mtls = map(auth, "mtls", at + "auth."); mtls && mtls.IsMap()) {
                c.mtls_cert_file = scalar(mtls, "certificateFile", at + "auth.mtls.");
                c.mtls_key_file = scalar(mtls, "keyFile", at + "auth.mtls.");
            }
        }
        if (const auto transport = map(node, "transport", at); transport && transport.IsMap()) {
            if (const auto tls = map(transport, "tls", at + "transport."); tls && tls.IsMap()) {
                c.tls.ca_file = scalar(tls, "caFile", at + "transport.tls.");
                c.tls.server_name = scalar(tls, "serverName", at + "transport.tls.");
                c.tls.insecure_skip_verify = boolean(tls, "insecureSkipVerify", at + "transport.tls.");
            }
        }
        return c;
    }

    config_file file(const YAML::Node& root) const {
        config_file out;
        if (!root || root.IsNull())
            return out;
        if (!root.IsMap())
            fail(root, "expected a map with currentContext and contexts");
        out.current_context = scalar(root, "currentContext", "");
        const YAML::Node contexts = root["contexts"];
        if (!contexts || contexts.IsNull())
            return out;
        if (!contexts.IsSequence())
            fail(contexts, "'contexts' must be a list");
        for (std::size_t i = 0; i < contexts.size(); ++i) {
            auto c = context(contexts[i], "contexts[" + std::to_string(i) + "]");
            if (out.find(c.name))
                fail(contexts[i], "context '" + c.name + "' is defined twice");
            out.contexts.push_back(std::move(c));
        }
        return out;
    }

private:
    const std::string& path_;
};

inline std::string read_whole_file(const std::string& path, bool& exists) {
    std::error_code ec;
    auto status = std::filesystem::status(path, ec);
    exists = status.type() != std::filesystem::file_type::not_found;
    if (!exists)
        return {};
    if (std::filesystem::is_directory(status))
        throw_error(error::invalid_configuration, "config file " + path + " is a directory");
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw_error(error::invalid_configuration,
                    "cannot read config file " + path + ": " + std::strerror(errno));
    std::ostringstream content;
    content << in.rdbuf();
    return content.str();
}

inline std::string emit(const config_file& config) {
    YAML::Emitter out;
    out << YAML::BeginMap;
    if (!config.current_context.empty())
        out << YAML::Key << "currentContext" << YAML::Value << config.current_context;
    out << YAML::Key << "contexts" << YAML::Value << YAML::BeginSeq;
    for (const auto& c : config.contexts) {
        out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << c.name;
        if (!c.engine.empty())
            out << YAML::Key << "engine" << YAML::Value << c.engine;
        if (!c.token.empty() || !c.mtls_cert_file.empty() || !c.mtls_key_file.empty()) {
            out << YAML::Key << "auth" << YAML::Value << YAML::BeginMap;
            if (!c.token.empty())
                out << YAML::Key << "token" << YAML::Value << YAML::BeginMap << YAML::Key << "storage"
                    << YAML::Value << YAML::BeginMap << YAML::Key << "value" << YAML::Value << c.token
                    << YAML::EndMap << YAML::EndMap;
            if (!c.mtls_cert_file.empty() || !c.mtls_key_file.empty())
                out << YAML::Key << "mtls" << YAML::Value << YAML::BeginMap << YAML::Key << "certificateFile"
                    << YAML::Value << c.mtls_cert_file << YAML::Key << "keyFile" << YAML::Value
                    << c.mtls_key_file << YAML::EndMap;
            out << YAML::EndMap;
        }
        if (!c.tls.ca_file.empty() || !c.tls.server_name.empty() || c.tls.insecure_skip_verify) {
            out << YAML::Key << "transport" << YAML::Value << YAML::BeginMap << YAML::Key << "tls"
                << YAML::Value << YAML::BeginMap;
            if (!c.tls.ca_file.empty())
                out << YAML::Key << "caFile" << YAML::Value << c.tls.ca_file;
            if (!c.tls.server_name.empty())
                out << YAML::Key << "serverName" << YAML::Value << c.tls.server_name;
            if (c.tls.insecure_skip_verify)
                out << YAML::Key << "insecureSkipVerify" << YAML::Value << true;
            out << YAML::EndMap << YAML::EndMap;
        }
        out << YAML::EndMap;
    }
    out << YAML::EndSeq << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
}

[[noreturn]] inline void fail_write(const std::string& path, const std::string& what, int err) {
    throw_error(error::invalid_configuration,
                "cannot write config file " + path + ": " + what + ": " + std::strerror(err));
}

// Missing directories get 0700: the file inside holds tokens.
inline void create_private_directories(const std::filesystem::path& dir, const std::string& path) {
    std::error_code ec;
    if (dir.empty() || std::filesystem::exists(dir, ec))
        return;
    create_private_directories(dir.parent_path(), path);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        fail_write(path, "cannot create directory " + dir.string(), errno);
}

} // namespace detail

RSTREAM_DECL config_file load_config_file(const std::string& path) {
    bool exists = false;
    auto content = detail::read_whole_file(path, exists);
    if (!exists)
        return {};
    return parse_config_file(content, path);
}

RSTREAM_DECL config_file parse_config_file(const std::string& content, const std::string& path) {
    YAML::Node root;
    try {
        root = YAML::Load(content);
    } catch (const YAML::ParserException& e) {
        throw_error(error::invalid_configuration, "config file " + path + " is not valid YAML: line " +
                                                      std::to_string(e.mark.line + 1) + ", column " +
                                                      std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
    return detail::config_reader(path).file(root);
}

RSTREAM_DECL void save_config_file(const std::string& path, const config_file& config) {
    namespace fs = std::filesystem;
    fs::path target(path);
    std::error_code ec;
    // Write through a symlink (a dotfiles checkout) instead of replacing it with a file.
    if (fs::is_symlink(target, ec))
        target = fs::weakly_canonical(target, ec);
    detail::create_private_directories(target.parent_path(), path);

    const std::string content = detail::emit(config);
    std::string temp = target.string() + ".tmp-XXXXXX";
    int fd = ::mkstemp(temp.data()); // mode 0600
    if (fd < 0)
        detail::fail_write(path, "cannot create a temporary file", errno);
    auto give_up = [&](const char* what) {
        int err = errno;
        ::close(fd);
        ::unlink(temp.c_str());
        detail::fail_write(path, what, err);
    };
    for (std::size_t done = 0; done < content.size();) {
        auto n = ::write(fd, content.data() + done, content.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            give_up("write failed");
        done += static_cast<std::size_t>(n);
    }
    // fchmod in case the file system ignores mkstemp's mode; fsync so a crash leaves old or new.
    if (::fchmod(fd, 0600) != 0 || ::fsync(fd) != 0)
        give_up("cannot flush");
    if (::close(fd) != 0) {
        int err = errno;
        ::unlink(temp.c_str());
        detail::fail_write(path, "cannot flush", err);
    }
    if (::rename(temp.c_str(), target.c_str()) != 0) {
        int err = errno;
        ::unlink(temp.c_str());
        detail::fail_write(path, "cannot replace the file", err);
    }
}

} // namespace rstream::transport
