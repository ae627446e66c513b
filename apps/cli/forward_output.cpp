#include "forward_output.hpp"

#include <nlohmann/json.hpp>

#include <boost/asio/post.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>

namespace rstream::apps {

namespace {

using json = nlohmann::json;

std::string clock_text() {
    auto t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[16];
    std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
    return buf;
}

std::string iso_now() {
    auto t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string human_bytes(std::uint64_t n) {
    char buf[32];
    if (n < 1024)
        std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
    else if (n < 1024 * 1024)
        std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
    else if (n < 1024ull * 1024 * 1024)
        std::snprintf(buf, sizeof buf, "%.1f MiB", n / (1024.0 * 1024));
    else
        std::snprintf(buf, sizeof buf, "%.2f GiB", n / (1024.0 * 1024 * 1024));
    return buf;
}

/// Prints what happens, as text lines or one JSON object per event.
class line_output final : public forward_output {
public:
    explicit line_output(bool json_output) : json_(json_output) {}

    void attach(boost::asio::any_io_executor ex) override { ex_ = std::move(ex); }
    void finish() override { std::fflush(stdout); }

    /// Stream events (`batched`) are flushed once the current burst of events has run;
    /// anything else at once.
    void emit(const std::string& event, json fields, const std::string& text, bool batched = false) {
        if (json_) {
            fields["event"] = event;
            fields["time"] = iso_now();
            std::printf("%s\n", fields.dump().c_str());
        } else {
            std::printf("%s\n", text.c_str());
        }
        if (!batched || !ex_) {
            std::fflush(stdout);
            return;
        }
        if (flush_posted_)
            return;
        flush_posted_ = true;
        boost::asio::post(ex_, [this] {
            flush_posted_ = false;
            std::fflush(stdout);
        });
    }

    void online(const tunnel_properties& p, const std::string& target, const std::string& engine,
                const std::string& streams, bool again) override {
        auto fwd = forwarding_address(p);
        if (json_) {
            emit("tunnel.online",
                 {{"tunnel_id", p.id}, {"name", p.name}, {"forwarding", fwd}, {"target", target}, {"engine", engine},
                  {"streams", streams}, {"reconnected", again}},
                 "");
            return;
        }
        std::printf("%s\n", again ? "rstream forward: back online" : "rstream forward");
        std::printf("  status       online\n");
        std::printf("  tunnel id    %s\n", p.id.c_str());
        std::printf("  forwarding   %s -> %s\n", fwd.c_str(), target.c_str());
        std::printf("  engine       %s\n", engine.c_str());
        std::printf("  streams      %s\n\n", streams.c_str());
        std::fflush(stdout);
    }

    void stream_event(const forward_event& e) override {
        using k = forward_event::kind;
        std::string id = e.stream_id.substr(0, 8);
        switch (e.what) {
        case k::opened:
            emit("stream.opened", {{"stream_id", e.stream_id}, {"source_ip", e.source_ip}},
                 clock_text() + "  stream " + id + "  from " + (e.source_ip.empty() ? "?" : e.source_ip) + "  opened",
                 true);
            break;
        case k::closed:
            emit("stream.closed",
                 {{"stream_id", e.stream_id},
                  {"source_ip", e.source_ip},
                  {"bytes_in", e.bytes_in},
                  {"bytes_out", e.bytes_out},
                  {"duration_ms", e.duration.count()}},
                 clock_text() + "  stream " + id + "  closed  in " + human_bytes(e.bytes_in) + "  out " +
                     human_bytes(e.bytes_out) + "  " + std::to_string(e.duration.count()) + " ms",
                 true);
            break;
        case k::target_unreachable:
            emit("stream.error", {{"stream_id", e.stream_id}, {"source_ip", e.source_ip}, {"error", e.error}},
                 clock_text() + "  stream " + id + "  closed: " + e.error + " (the tunnel stays up)");
            break;
        case k::http_request:
            emit("http.request",
                 {{"stream_id", e.stream_id},
                  {"source_ip", e.source_ip},
                  {"method", e.http.method},
                  {"path", e.http.target},
                  {"status", e.http.status},
                  {"duration_ms", e.http.duration.count()}},
                 clock_text() + "  " + e.http.method + " " + e.http.target + "  " + std::to_string(e.http.status) +
                     "  " + std::to_string(e.http.duration.count()) + " ms",
                 true);
            break;
        }
    }

    void status(const status_event& e) override {
        using s = channel_status;
        switch (e.status) {
        case s::disconnected:
            emit("channel.disconnected", {{"message", e.message}}, clock_text() + "  " + e.message);
            break;
        case s::reconnecting:
            emit("channel.reconnecting", {{"retry_in_ms", e.retry_in.count()}},
                 clock_text() + "  reconnecting in " + std::to_string(e.retry_in.count()) + " ms");
            break;
        case s::tunnel_lost:
            emit("tunnel.lost", {{"message", e.message}}, clock_text() + "  " + e.message);
            break;
        case s::server_message:
            emit("engine.message", {{"message", e.message}}, clock_text() + "  engine: " + e.message);
            break;
        default:
            break;
        }
    }

    void error(const std::string& message) override {
        if (json_)
            emit("error", {{"message", message}}, "");
        std::fprintf(stderr, "rstream forward: error: %s\n", message.c_str());
    }

private:
    bool json_;
    boost::asio::any_io_executor ex_;
    bool flush_posted_ = false;
};


/// The live view: the whole screen is redrawn after each event (events are rare next to
/// the bytes they describe; a burst redraws once per event, which terminals handle).
class live_view final : public forward_output {
public:
    void online(const tunnel_properties& p, const std::string& target, const std::string& engine,
                const std::string& streams, bool again) override {
        props_ = p;
        target_ = target;
        engine_ = engine;
        streams_ = streams;
        status_ = again ? "online (reconnected)" : "online";
        render();
    }

    void stream_event(const forward_event& e) override {
        using k = forward_event::kind;
        std::string who = e.source_ip.empty() ? "?" : e.source_ip;
        switch (e.what) {
        case k::opened:
            ++open_;
            ++total_;
            break;
        case k::closed:
            if (open_ > 0)
                --open_;
            bytes_in_ += e.bytes_in;
            bytes_out_ += e.bytes_out;
            push(clock_text() + "  " + pad(who, 16) + "  in " + pad(human_bytes(e.bytes_in), 10) + " out " +
                 pad(human_bytes(e.bytes_out), 10) + " " + std::to_string(e.duration.count()) + " ms");
            break;
        case k::target_unreachable:
            ++total_;
            push(clock_text() + "  " + pad(who, 16) + "  " + e.error);
            break;
        case k::http_request:
            ++requests_;
            push(clock_text() + "  " + pad(e.http.method, 7) + " " + pad(e.http.target, 32) + " " +
                 std::to_string(e.http.status) + "  " + std::to_string(e.http.duration.count()) + " ms");
            break;
        }
        render();
    }

    void status(const status_event& e) override {
        using s = channel_status;
        if (e.status == s::disconnected)
            status_ = "reconnecting: " + e.message;
        else if (e.status == s::reconnecting)
            status_ = "reconnecting in " + std::to_string(e.retry_in.count()) + " ms";
        else if (e.status == s::tunnel_lost || e.status == s::server_message)
            push(clock_text() + "  " + e.message);
        else
            return;
        render();
    }

    void error(const std::string& message) override {
        status_ = "failed";
        render();
        std::fprintf(stderr, "rstream forward: error: %s\n", message.c_str());
    }

    void finish() override { std::printf("\n"); std::fflush(stdout); }

private:
    static std::string pad(std::string s, std::size_t n) {
        if (s.size() < n)
            s.append(n - s.size(), ' ');
        return s;
    }

    void push(std::string line) {
        recent_.push_front(std::move(line));
        if (recent_.size() > 10)
            recent_.pop_back();
    }

    void render() {
        std::string out = "\x1b[H\x1b[2J";  // home, clear screen
        out += "rstream forward                                        (Ctrl-C to quit)\n\n";
        out += "Status        " + status_ + "\n";
        out += "Tunnel id     " + props_.id + "\n";
        out += "Forwarding    " + forwarding_address(props_) + " -> " + target_ + "\n";
        out += "Engine        " + engine_ + "\n";
        out += "Streams       " + streams_ + "\n";
        out += "Connections   open " + std::to_string(open_) + "   total " + std::to_string(total_) + "   in " +
               human_bytes(bytes_in_) + "   out " + human_bytes(bytes_out_) + "\n";
        if (requests_ > 0)
            out += "HTTP requests " + std::to_string(requests_) + "\n";
        out += "\nRecent\n";
        for (const auto& l : recent_)
            out += "  " + l + "\n";
        std::fwrite(out.data(), 1, out.size(), stdout);
        std::fflush(stdout);
    }

    tunnel_properties props_;
    std::string target_, engine_, streams_, status_ = "connecting";
    std::uint64_t open_ = 0, total_ = 0, bytes_in_ = 0, bytes_out_ = 0, requests_ = 0;
    std::deque<std::string> recent_;
};

} // namespace

std::unique_ptr<forward_output> make_line_output(bool json) { return std::make_unique<line_output>(json); }
std::unique_ptr<forward_output> make_live_view() { return std::make_unique<live_view>(); }

} // namespace rstream::apps
